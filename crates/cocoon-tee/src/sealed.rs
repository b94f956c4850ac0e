//! Sealed keys: a node's long-lived wallet seed, encrypted under a key bound to its image hash.
//!
//! The seed must survive restarts, yet only the same image may read it back: a different
//! image (other code) derives a different sealing key and cannot open the file.
//!
//! File layout (101 bytes, all fixed-size so truncation is detected before decryption):
//! `magic "COCOONSK" (8) ‖ format version (1, = 1) ‖ image hash (32) ‖ nonce (12) ‖
//! ChaCha20-Poly1305 ciphertext of the 32-byte seed + tag (48)`. The header (magic, version,
//! image hash) is the AEAD's associated data, so editing it breaks the tag. The image hash is
//! stored in clear only to give a precise error ("sealed for image X, this node runs Y").

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{ImageHash, TeeError};

const MAGIC: &[u8; 8] = b"COCOONSK";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1 + 32;
const NONCE_LEN: usize = 12;
const SEED_LEN: usize = 32;
const TAG_LEN: usize = 16;
const FILE_LEN: usize = HEADER_LEN + NONCE_LEN + SEED_LEN + TAG_LEN;
/// HKDF `info` for the fake sealing key; versioned so a future scheme derives other keys.
const HKDF_INFO: &[u8] = b"cocoon sealed key v1";
/// Length of the fake TEE's host secret.
const HOST_SECRET_LEN: usize = 32;

/// A 32-byte symmetric key that seals (encrypts) a node's secrets; wiped on drop.
pub type SealingKey = Zeroizing<[u8; 32]>;

/// Where sealing keys come from. A sealing key must be derivable again after a restart,
/// but only by a node running the same image.
pub trait SealingKeySource: Send + Sync {
    /// The image hash the key is bound to (the running node's own image).
    fn image_hash(&self) -> ImageHash;
    /// Derives the sealing key for [`image_hash`](Self::image_hash).
    fn sealing_key(&self) -> Result<SealingKey, TeeError>;
}

/// Sealing for the `fake` TEE: `HKDF-SHA256(ikm = host secret, salt = image hash)`.
///
/// The host secret lives in a file on the host (created with mode 0600 when missing). This
/// binds keys to the image hash but, unlike real TDX, not to hardware: anyone who can read
/// the host secret can derive every image's key. For tests and local networks only.
pub struct FakeSealingKeySource {
    host_secret: Zeroizing<[u8; HOST_SECRET_LEN]>,
    image_hash: ImageHash,
}

impl FakeSealingKeySource {
    /// Reads the host secret at `secret_path`, creating it (32 random bytes, mode 0600)
    /// if it does not exist, and binds sealing to `image_hash`.
    pub fn open(secret_path: impl AsRef<Path>, image_hash: ImageHash) -> Result<Self, TeeError> {
        let path = secret_path.as_ref();
        let host_secret = match read_host_secret(path) {
            Ok(secret) => secret,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_host_secret(path)?,
            Err(e) => {
                return Err(io_error(
                    format!("reading host secret {}", path.display()),
                    e,
                ))
            }
        };
        Ok(Self {
            host_secret,
            image_hash,
        })
    }

    /// Builds a source from an in-memory host secret (tests, or a secret from elsewhere).
    pub fn from_secret(host_secret: [u8; 32], image_hash: ImageHash) -> Self {
        Self {
            host_secret: Zeroizing::new(host_secret),
            image_hash,
        }
    }
}

impl SealingKeySource for FakeSealingKeySource {
    fn image_hash(&self) -> ImageHash {
        self.image_hash
    }

    fn sealing_key(&self) -> Result<SealingKey, TeeError> {
        let hk = Hkdf::<Sha256>::new(Some(self.image_hash.as_bytes()), &self.host_secret[..]);
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(HKDF_INFO, &mut key[..])
            .map_err(|_| TeeError::SealingUnavailable("HKDF output length rejected".into()))?;
        Ok(key)
    }
}

/// Sealing through the TDX host seal service: the real-TDX counterpart of
/// [`FakeSealingKeySource`].
///
/// **Not implemented in this build.** A TD has no hardware sealing instruction; the key must
/// come from a host-side seal service that releases it only to a TD whose quote carries the
/// expected image hash. Until that service and its protocol exist, [`sealing_key`] returns
/// [`TeeError::SealingUnavailable`] so a TDX node fails loudly instead of sealing with a
/// key the host could derive.
///
/// [`sealing_key`]: SealingKeySource::sealing_key
pub struct TdxHostSealingKeySource {
    image_hash: ImageHash,
}

impl TdxHostSealingKeySource {
    /// A source for a TD running `image_hash`.
    pub fn new(image_hash: ImageHash) -> Self {
        Self { image_hash }
    }
}

impl SealingKeySource for TdxHostSealingKeySource {
    fn image_hash(&self) -> ImageHash {
        self.image_hash
    }

    fn sealing_key(&self) -> Result<SealingKey, TeeError> {
        Err(TeeError::SealingUnavailable(
            "sealing through the TDX host seal service is not implemented in this build".into(),
        ))
    }
}

/// A node's long-lived Ed25519 wallet key, stored sealed in one file.
pub struct SealedKeyStore {
    path: PathBuf,
    sealing: Arc<dyn SealingKeySource>,
}

impl SealedKeyStore {
    /// A store for the sealed key at `path`, sealed with keys from `sealing`.
    pub fn new(path: impl Into<PathBuf>, sealing: Arc<dyn SealingKeySource>) -> Self {
        Self {
            path: path.into(),
            sealing,
        }
    }

    /// The sealed file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unseals the stored key, or creates, seals and stores a fresh one when no file exists.
    ///
    /// An existing file that cannot be unsealed (another image, corruption) is an error and
    /// is left untouched: silently replacing it would lose the wallet.
    pub fn load_or_create(&self) -> Result<SigningKey, TeeError> {
        match fs::read(&self.path) {
            Ok(bytes) => self.unseal(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = SigningKey::generate(&mut OsRng);
                let sealed = self.seal(&key)?;
                write_atomically(&self.path, &sealed)?;
                Ok(key)
            }
            Err(e) => Err(io_error(
                format!("reading sealed key {}", self.path.display()),
                e,
            )),
        }
    }

    fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, TeeError> {
        let header = header(&self.sealing.image_hash());
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealing_key = self.sealing.sealing_key()?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&sealing_key[..]));
        let seed = Zeroizing::new(key.to_bytes());
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &seed[..],
                    aad: &header,
                },
            )
            .map_err(|_| self.corrupt("encryption failed"))?;
        let mut out = Vec::with_capacity(FILE_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn unseal(&self, bytes: &[u8]) -> Result<SigningKey, TeeError> {
        if bytes.len() != FILE_LEN {
            return Err(self.corrupt(&format!(
                "file is corrupted: {} bytes, expected {FILE_LEN}",
                bytes.len()
            )));
        }
        let (header_bytes, rest) = bytes.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let (magic, rest) = header_bytes.split_at(MAGIC.len());
        let (version, stored_hash) = rest.split_at(1);
        if magic != MAGIC {
            return Err(self.corrupt("file is corrupted: not a Cocoon sealed key"));
        }
        if version != [FORMAT_VERSION] {
            return Err(self.corrupt(&format!(
                "unsupported sealed key format version {}",
                version.first().copied().unwrap_or_default()
            )));
        }
        let own_hash = self.sealing.image_hash();
        if stored_hash != own_hash.as_bytes() {
            return Err(self.corrupt(&format!(
                "sealed for image {}, but this node runs image {own_hash}; only that image can unseal it",
                hex::encode(stored_hash)
            )));
        }
        let sealing_key = self.sealing.sealing_key()?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&sealing_key[..]));
        let seed = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: header_bytes,
                    },
                )
                .map_err(|_| {
                    self.corrupt(
                        "cannot decrypt: the file is corrupted or was sealed under another sealing key (host secret)",
                    )
                })?,
        );
        let seed: [u8; SEED_LEN] = seed[..]
            .try_into()
            .map_err(|_| self.corrupt("decrypted seed has the wrong length"))?;
        let seed = Zeroizing::new(seed);
        Ok(SigningKey::from_bytes(&seed))
    }

    fn corrupt(&self, reason: &str) -> TeeError {
        TeeError::SealedKey {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }
}

fn header(image_hash: &ImageHash) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    let (magic, rest) = out.split_at_mut(MAGIC.len());
    magic.copy_from_slice(MAGIC);
    let (version, hash) = rest.split_at_mut(1);
    version.copy_from_slice(&[FORMAT_VERSION]);
    hash.copy_from_slice(image_hash.as_bytes());
    out
}

fn io_error(context: String, source: io::Error) -> TeeError {
    TeeError::Io { context, source }
}

fn read_host_secret(path: &Path) -> io::Result<Zeroizing<[u8; HOST_SECRET_LEN]>> {
    let mut file = File::open(path)?;
    let mut buf = Zeroizing::new(Vec::new());
    file.read_to_end(&mut buf)?;
    let secret: [u8; HOST_SECRET_LEN] = buf[..].try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected {HOST_SECRET_LEN} bytes, found {}", buf.len()),
        )
    })?;
    Ok(Zeroizing::new(secret))
}

fn create_host_secret(path: &Path) -> Result<Zeroizing<[u8; HOST_SECRET_LEN]>, TeeError> {
    let mut secret = Zeroizing::new([0u8; HOST_SECRET_LEN]);
    OsRng.fill_bytes(&mut secret[..]);
    write_atomically(path, &secret[..])?;
    Ok(secret)
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the complete new
/// one: write a private temporary file beside it, fsync, rename over, fsync the directory.
/// The file is created with mode 0600 (owner read/write only).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TeeError> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| io_error(ctx("creating the directory of"), e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sealed".into());
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{:016x}",
        std::process::id(),
        OsRng.next_u64()
    ));
    let result = (|| {
        let mut file = private_file_options()
            .open(&tmp)
            .map_err(|e| io_error(ctx("creating a temporary file for"), e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(ctx("writing"), e))?;
        fs::rename(&tmp, path).map_err(|e| io_error(ctx("renaming into place"), e))?;
        // The rename is durable only once the directory entry is on disk.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(ctx("syncing the directory of"), e))
    })();
    if result.is_err() {
        // Best effort: the temporary file is garbage once the write failed.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn private_file_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(b: u8) -> ImageHash {
        ImageHash([b; 32])
    }

    fn store(dir: &Path, secret: [u8; 32], image: ImageHash) -> SealedKeyStore {
        SealedKeyStore::new(
            dir.join("wallet.sealed"),
            Arc::new(FakeSealingKeySource::from_secret(secret, image)),
        )
    }

    #[test]
    fn reopens_with_the_same_image_hash() {
        let dir = tempfile::tempdir().unwrap();
        let first = store(dir.path(), [9; 32], hash(1))
            .load_or_create()
            .unwrap();
        let again = store(dir.path(), [9; 32], hash(1))
            .load_or_create()
            .unwrap();
        assert_eq!(first.to_bytes(), again.to_bytes());
        let bytes = fs::read(dir.path().join("wallet.sealed")).unwrap();
        assert_eq!(bytes.len(), FILE_LEN);
        // The seed is not stored in clear.
        assert!(!bytes.windows(32).any(|w| w == first.to_bytes()));
    }

    #[test]
    fn another_image_cannot_unseal_and_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), [9; 32], hash(1))
            .load_or_create()
            .unwrap();
        let path = dir.path().join("wallet.sealed");
        let before = fs::read(&path).unwrap();
        let err = store(dir.path(), [9; 32], hash(2))
            .load_or_create()
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TeeError::SealedKey { .. }), "{err:?}");
        assert!(msg.contains(&hash(1).to_string()), "{msg}");
        assert!(msg.contains(&hash(2).to_string()), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn another_host_secret_cannot_unseal() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), [9; 32], hash(1))
            .load_or_create()
            .unwrap();
        let err = store(dir.path(), [8; 32], hash(1))
            .load_or_create()
            .unwrap_err();
        assert!(err.to_string().contains("cannot decrypt"), "{err}");
    }

    #[test]
    fn corrupted_files_are_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), [9; 32], hash(1));
        s.load_or_create().unwrap();
        let good = fs::read(s.path()).unwrap();

        let mut flipped = good.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        fs::write(s.path(), &flipped).unwrap();
        let err = s.load_or_create().unwrap_err();
        assert!(err.to_string().contains("corrupted"), "{err}");
        assert_eq!(fs::read(s.path()).unwrap(), flipped);

        fs::write(s.path(), &good[..50]).unwrap();
        let err = s.load_or_create().unwrap_err();
        assert!(err.to_string().contains("50 bytes"), "{err}");

        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        fs::write(s.path(), &bad_magic).unwrap();
        let err = s.load_or_create().unwrap_err();
        assert!(err.to_string().contains("not a Cocoon sealed key"), "{err}");
    }

    #[test]
    fn fake_keys_depend_on_image_and_secret() {
        let a = FakeSealingKeySource::from_secret([1; 32], hash(1))
            .sealing_key()
            .unwrap();
        let b = FakeSealingKeySource::from_secret([1; 32], hash(2))
            .sealing_key()
            .unwrap();
        let c = FakeSealingKeySource::from_secret([2; 32], hash(1))
            .sealing_key()
            .unwrap();
        assert_ne!(*a, *b);
        assert_ne!(*a, *c);
        let again = FakeSealingKeySource::from_secret([1; 32], hash(1))
            .sealing_key()
            .unwrap();
        assert_eq!(*a, *again);
    }

    #[cfg(unix)]
    #[test]
    fn host_secret_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("sub").join("host.secret");
        let first = FakeSealingKeySource::open(&secret_path, hash(1)).unwrap();
        let mode = fs::metadata(&secret_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read(&secret_path).unwrap().len(), HOST_SECRET_LEN);
        let second = FakeSealingKeySource::open(&secret_path, hash(1)).unwrap();
        assert_eq!(
            *first.sealing_key().unwrap(),
            *second.sealing_key().unwrap()
        );

        let s = SealedKeyStore::new(dir.path().join("k"), Arc::new(first));
        s.load_or_create().unwrap();
        let mode = fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn short_host_secret_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("host.secret");
        fs::write(&p, b"short").unwrap();
        let err = FakeSealingKeySource::open(&p, hash(1)).err().unwrap();
        assert!(err.to_string().contains("expected 32 bytes"), "{err}");
    }

    #[test]
    fn tdx_host_sealing_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = SealedKeyStore::new(
            dir.path().join("k"),
            Arc::new(TdxHostSealingKeySource::new(hash(1))),
        );
        let err = s.load_or_create().unwrap_err();
        assert!(matches!(err, TeeError::SealingUnavailable(_)), "{err:?}");
        assert!(!s.path().exists());
    }
}
