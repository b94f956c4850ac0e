//! A model's identity: the SHA-256 of the weights a worker serves.
//!
//! A worker puts this digest in its attested claims and the registry maps each model name to the
//! digest it allows, so it must be of the exact bytes served, and anyone must be able to compute
//! it again:
//!
//! - a **file** (a GGUF model) hashes to the SHA-256 of its bytes (`sha256sum FILE`);
//! - a **directory** (a Hugging Face snapshot served by vLLM or SGLang: safetensors, config,
//!   tokenizer) hashes to the SHA-256 of its manifest: one `sha256sum` line (`DIGEST  PATH`) per
//!   regular file under it, symbolic links followed, paths relative with `/`, sorted bytewise;
//!   names starting with `.` and this module's `*.sha256` sidecars are left out. From a shell:
//!   `find -L . -type f ! -path '*/.*' ! -name '*.sha256' -printf '%P\n' | LC_ALL=C sort |
//!   xargs -d '\n' sha256sum | sha256sum`.
//!
//! Hashing 100 MB–100 GB on every start is wasteful, so each file's digest is cached in a sidecar
//! `<file>.sha256` together with the file's size and modification time; a changed file is hashed
//! again. Inside a TD the host could plant such a sidecar, so there ([`Sidecars::Ignored`]) every
//! byte is hashed at every start and no sidecar is read or written.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// Why the weights at a path could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The directory holds no file to hash.
    #[error("{0}: no weight files in this directory")]
    Empty(PathBuf),
    /// A name in the directory is not UTF-8, so the manifest could not name it unambiguously.
    #[error("{0}: file name is not UTF-8")]
    NonUtf8Name(PathBuf),
}

fn io_error(path: &Path, source: io::Error) -> WeightsError {
    WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the sidecar caches of file digests may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sidecars {
    /// Read and refresh them (outside a TEE: whoever can write the sidecar can write the weights).
    Trusted,
    /// Hash every byte, and neither read nor write them: inside a TD the host can write files, so a
    /// planted sidecar could make the TD attest weights it does not serve.
    Ignored,
}

/// SHA-256 (lower-case hex) of the weights at `path`, a file or a directory (see the module
/// documentation), using and refreshing the sidecar caches.
pub fn weights_sha256(path: &Path) -> Result<String, WeightsError> {
    weights_sha256_with(path, Sidecars::Trusted)
}

/// [`weights_sha256`], with the sidecar caches used or not.
pub fn weights_sha256_with(path: &Path, sidecars: Sidecars) -> Result<String, WeightsError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    if !meta.is_dir() {
        return file_sha256(path, sidecars);
    }
    let mut files = Vec::new();
    list_files(path, "", &mut files)?;
    if files.is_empty() {
        return Err(WeightsError::Empty(path.to_path_buf()));
    }
    files.sort();
    let mut manifest = Sha256::new();
    for relative in &files {
        let digest = file_sha256(&path.join(relative), sidecars)?;
        manifest.update(format!("{digest}  {relative}\n"));
    }
    Ok(hex::encode(manifest.finalize()))
}

/// Appends to `files` the paths, relative to the walk's root and prefixed with `prefix`, of every
/// file the manifest covers under `dir`.
fn list_files(dir: &Path, prefix: &str, files: &mut Vec<String>) -> Result<(), WeightsError> {
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| WeightsError::NonUtf8Name(path.clone()))?;
        if name.starts_with('.') || name.ends_with(".sha256") {
            continue;
        }
        // `metadata` follows symbolic links: a Hugging Face cache's snapshot links to its blobs.
        let meta = fs::metadata(&path).map_err(|e| io_error(&path, e))?;
        let relative = format!("{prefix}{name}");
        if meta.is_dir() {
            list_files(&path, &format!("{relative}/"), files)?;
        } else if meta.is_file() {
            files.push(relative);
        }
    }
    Ok(())
}

/// The sidecar file that caches `path`'s digest.
pub fn cache_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// What the cache is keyed by: the file's size and modification time (nanoseconds).
fn file_key(path: &Path) -> Result<String, WeightsError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{} {}", meta.len(), mtime))
}

/// SHA-256 of the file at `path`, read from or written to its sidecar cache.
///
/// A sidecar that cannot be written (a read-only model directory) is not an error: the digest is
/// then computed again next time.
fn file_sha256(path: &Path, sidecars: Sidecars) -> Result<String, WeightsError> {
    let key = file_key(path)?;
    let cache = cache_path(path);
    let cached = match sidecars {
        Sidecars::Trusted => fs::read_to_string(&cache).ok(),
        Sidecars::Ignored => None,
    };
    if let Some(cached) = cached {
        if let Some((digest, cached_key)) = cached.trim().split_once(' ') {
            if cached_key == key
                && digest.len() == 64
                && digest.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Ok(digest.to_ascii_lowercase());
            }
        }
    }
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    // Large weights take minutes to read; say why the start is slow, once.
    let bytes = file.metadata().map_or(0, |m| m.len());
    if bytes >= 1 << 30 {
        tracing::info!(path = %path.display(), bytes, "hashing weights (cached afterwards)");
    }
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|e| io_error(path, e))?;
    let digest = hex::encode(hasher.finalize());
    if sidecars == Sidecars::Trusted {
        if let Err(e) = fs::write(&cache, format!("{digest} {key}\n")) {
            tracing::debug!(path = %cache.display(), error = %e, "cannot cache the weights' hash");
        }
    }
    Ok(digest)
}

/// A copy of a weights file in a directory only this node can write, holding exactly the bytes
/// its digest was computed from. Removed when dropped; a loader that mapped or read it keeps
/// what it loaded.
#[derive(Debug)]
pub struct PrivateCopy {
    file: tempfile::TempPath,
    sha256: String,
}

impl PrivateCopy {
    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// SHA-256 (lower-case hex) of the copy's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// Copies the file at `source` into a new file in `dir`, hashing each byte as it is written, so the
/// digest is of the copy's bytes whatever happens to `source` meanwhile, and never from a sidecar.
///
/// Inside a TD, `dir` must be TD-private memory (a tmpfs such as `/dev/shm`): the host can rewrite
/// its own disks between a hash and a load, but not the TD's memory. Loading the copy then serves
/// the bytes that were attested.
pub fn private_copy(source: &Path, dir: &Path) -> Result<PrivateCopy, WeightsError> {
    let mut input = File::open(source).map_err(|e| io_error(source, e))?;
    let copy = tempfile::Builder::new()
        .prefix(".weights-")
        .tempfile_in(dir)
        .map_err(|e| io_error(dir, e))?;
    let (file, path) = copy.into_parts();
    let mut output = HashingWriter {
        file,
        hasher: Sha256::new(),
    };
    io::copy(&mut input, &mut output).map_err(|e| io_error(&path, e))?;
    output.file.sync_all().map_err(|e| io_error(&path, e))?;
    Ok(PrivateCopy {
        file: path,
        sha256: hex::encode(output.hasher.finalize()),
    })
}

/// Writes to a file and hashes what it wrote, in one pass.
struct HashingWriter {
    file: File,
    hasher: Sha256,
}

impl io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABCD_SHA256: &str = "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589";

    #[test]
    fn a_private_copy_holds_the_bytes_it_hashed_and_believes_no_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        fs::write(&path, b"abc").unwrap();
        // A host planting a digest for the same size and time would fool the sidecar cache.
        fs::write(
            cache_path(&path),
            format!("{ABCD_SHA256} {}\n", file_key(&path).unwrap()),
        )
        .unwrap();
        let private = tempfile::tempdir().unwrap();
        let copy = private_copy(&path, private.path()).unwrap();
        assert_eq!(copy.sha256(), ABC_SHA256);
        assert_eq!(fs::read(copy.path()).unwrap(), b"abc");
        assert!(copy.path().starts_with(private.path()));
        // The source changing after the copy changes neither the copy nor its digest.
        fs::write(&path, b"abcd").unwrap();
        assert_eq!(fs::read(copy.path()).unwrap(), b"abc");
        let copied = copy.path().to_path_buf();
        drop(copy);
        assert!(!copied.exists(), "the copy is removed when dropped");

        let missing = private_copy(&dir.path().join("none"), private.path()).unwrap_err();
        assert!(missing.to_string().contains("none"), "{missing}");
        let no_dir = private_copy(&path, &dir.path().join("no-dir")).unwrap_err();
        assert!(no_dir.to_string().contains("no-dir"), "{no_dir}");
    }

    #[test]
    fn a_file_hashes_to_its_bytes_then_from_the_cache_and_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(weights_sha256(&path).unwrap(), ABC_SHA256);
        let sidecar = fs::read_to_string(cache_path(&path)).unwrap();
        assert!(sidecar.starts_with(ABC_SHA256), "{sidecar}");

        // A sidecar with the right key is trusted (proves the cache is read, not recomputed).
        let key = file_key(&path).unwrap();
        let planted = "0".repeat(64);
        fs::write(cache_path(&path), format!("{planted} {key}\n")).unwrap();
        assert_eq!(weights_sha256(&path).unwrap(), planted);

        // A different size invalidates it.
        fs::write(&path, b"abcd").unwrap();
        assert_eq!(weights_sha256(&path).unwrap(), ABCD_SHA256);
    }

    #[test]
    fn a_planted_sidecar_is_not_trusted_when_sidecars_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        fs::write(&path, b"abc").unwrap();
        // The host plants a sidecar naming other weights, keyed to this file's size and mtime.
        let planted = format!("{ABCD_SHA256} {}\n", file_key(&path).unwrap());
        fs::write(cache_path(&path), &planted).unwrap();
        assert_eq!(
            weights_sha256(&path).unwrap(),
            ABCD_SHA256,
            "trusted, it is believed"
        );
        assert_eq!(
            weights_sha256_with(&path, Sidecars::Ignored).unwrap(),
            ABC_SHA256,
            "ignored, the bytes decide"
        );
        assert_eq!(
            fs::read_to_string(cache_path(&path)).unwrap(),
            planted,
            "nor rewritten"
        );
        assert_eq!(
            weights_sha256_with(dir.path(), Sidecars::Ignored).unwrap(),
            {
                let mut manifest = Sha256::new();
                manifest.update(format!("{ABC_SHA256}  m.gguf\n"));
                hex::encode(manifest.finalize())
            },
            "directories too"
        );
    }

    #[test]
    fn a_garbage_sidecar_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        fs::write(&path, b"abc").unwrap();
        fs::write(cache_path(&path), "not a digest").unwrap();
        assert_eq!(weights_sha256(&path).unwrap(), ABC_SHA256);
    }

    /// A snapshot directory as vLLM serves it, with a nested file, a hidden directory and a
    /// symbolic link into a blob store.
    fn snapshot() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("blobs")).unwrap();
        fs::create_dir_all(root.join("snap/tokenizer")).unwrap();
        fs::create_dir_all(root.join("snap/.cache")).unwrap();
        fs::write(root.join("blobs/weights"), b"abc").unwrap();
        std::os::unix::fs::symlink(
            root.join("blobs/weights"),
            root.join("snap/model.safetensors"),
        )
        .unwrap();
        fs::write(root.join("snap/config.json"), b"abcd").unwrap();
        fs::write(root.join("snap/tokenizer/vocab.json"), b"abc").unwrap();
        fs::write(root.join("snap/.cache/lock"), b"ignored").unwrap();
        dir
    }

    #[test]
    fn a_directory_hashes_to_its_sorted_sha256sum_manifest() {
        let dir = snapshot();
        let snap = dir.path().join("snap");
        let manifest = format!(
            "{ABCD_SHA256}  config.json\n{ABC_SHA256}  model.safetensors\n{ABC_SHA256}  tokenizer/vocab.json\n"
        );
        let expected = hex::encode(Sha256::digest(manifest.as_bytes()));
        assert_eq!(weights_sha256(&snap).unwrap(), expected);
        // Hashing wrote sidecars; they are not weights, and the digest stays the same.
        assert!(cache_path(&snap.join("config.json")).exists());
        assert_eq!(weights_sha256(&snap).unwrap(), expected);
    }

    #[test]
    fn any_change_to_a_covered_file_name_or_content_changes_the_digest() {
        let dir = snapshot();
        let snap = dir.path().join("snap");
        let original = weights_sha256(&snap).unwrap();
        fs::write(snap.join(".cache/lock"), b"still ignored").unwrap();
        assert_eq!(weights_sha256(&snap).unwrap(), original);

        fs::write(dir.path().join("blobs/weights"), b"abd").unwrap();
        let changed = weights_sha256(&snap).unwrap();
        assert_ne!(changed, original);

        fs::rename(snap.join("config.json"), snap.join("config2.json")).unwrap();
        assert_ne!(weights_sha256(&snap).unwrap(), changed);
    }

    #[test]
    fn an_empty_or_missing_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".only-hidden")).unwrap();
        let message = weights_sha256(dir.path()).unwrap_err().to_string();
        assert!(message.contains("no weight files"), "{message}");
        let missing = dir.path().join("nowhere");
        let message = weights_sha256(&missing).unwrap_err().to_string();
        assert!(message.contains("nowhere"), "{message}");
    }
}
