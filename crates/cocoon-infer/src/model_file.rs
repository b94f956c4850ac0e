//! The model file on disk: a quick GGUF sanity check and its SHA-256 identity.
//!
//! The hash names the model across the network (the registry maps model names to hashes), so it
//! must be of the exact bytes served. Hashing ~100 MB–100 GB on every start is wasteful, so the
//! digest is cached in `<file>.sha256` together with the file's size and modification time; a
//! changed file gets a fresh digest.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::InferError;

/// The first four bytes of every GGUF file.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Fails with a message naming `path` unless it is a readable file that starts like a GGUF model.
///
/// llama.cpp reports unusable files only as a null pointer, so the common mistakes (wrong path,
/// no permission, not a GGUF) are caught here with a clear reason.
pub(crate) fn check_gguf(path: &Path) -> Result<(), InferError> {
    let mut file = File::open(path).map_err(|e| load_error(path, e.to_string()))?;
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == GGUF_MAGIC => Ok(()),
        Ok(()) => Err(load_error(path, "not a GGUF file (bad magic)")),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(load_error(path, "not a GGUF file (too short)"))
        }
        Err(e) => Err(load_error(path, e.to_string())),
    }
}

fn load_error(path: &Path, reason: impl Into<String>) -> InferError {
    InferError::ModelLoad {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The sidecar file that caches `path`'s digest.
pub(crate) fn hash_cache_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// What the cache is keyed by: the file's size and modification time (nanoseconds).
fn file_key(path: &Path) -> Result<String, InferError> {
    let meta = fs::metadata(path).map_err(|e| InferError::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{} {}", meta.len(), mtime))
}

/// SHA-256 of the file at `path`, as lower-case hex, read from or written to the sidecar cache.
///
/// A sidecar that cannot be written (read-only model directory) is not an error: the digest is
/// then simply computed again next time.
pub fn model_sha256(path: &Path) -> Result<String, InferError> {
    let key = file_key(path)?;
    let cache = hash_cache_path(path);
    if let Ok(cached) = fs::read_to_string(&cache) {
        if let Some((digest, cached_key)) = cached.trim().split_once(' ') {
            if cached_key == key
                && digest.len() == 64
                && digest.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Ok(digest.to_ascii_lowercase());
            }
        }
    }
    let digest = sha256_file(path)?;
    if let Err(e) = fs::write(&cache, format!("{digest} {key}\n")) {
        tracing::debug!(path = %cache.display(), error = %e, "cannot cache the model hash");
    }
    Ok(digest)
}

/// SHA-256 of the file at `path` as lower-case hex, always computed from the bytes.
pub(crate) fn sha256_file(path: &Path) -> Result<String, InferError> {
    let mut file = File::open(path).map_err(|e| InferError::io(path, e))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|e| InferError::io(path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn hash_is_computed_then_cached_and_refreshed_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(model_sha256(&path).unwrap(), ABC_SHA256);
        let sidecar = fs::read_to_string(hash_cache_path(&path)).unwrap();
        assert!(sidecar.starts_with(ABC_SHA256), "{sidecar}");

        // A sidecar with the right key is trusted (proves the cache is read, not recomputed).
        let key = file_key(&path).unwrap();
        let fake = "0".repeat(64);
        fs::write(hash_cache_path(&path), format!("{fake} {key}\n")).unwrap();
        assert_eq!(model_sha256(&path).unwrap(), fake);

        // A different size invalidates it.
        fs::write(&path, b"abcd").unwrap();
        assert_eq!(
            model_sha256(&path).unwrap(),
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
    }

    #[test]
    fn garbage_sidecar_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        fs::write(&path, b"abc").unwrap();
        fs::write(hash_cache_path(&path), "not a digest").unwrap();
        assert_eq!(model_sha256(&path).unwrap(), ABC_SHA256);
    }

    #[test]
    fn gguf_check_names_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        fs::write(&text, b"hello world").unwrap();
        let msg = check_gguf(&text).unwrap_err().to_string();
        assert!(
            msg.contains("notes.txt") && msg.contains("not a GGUF"),
            "{msg}"
        );

        let short = dir.path().join("short.gguf");
        fs::write(&short, b"GG").unwrap();
        let msg = check_gguf(&short).unwrap_err().to_string();
        assert!(
            msg.contains("short.gguf") && msg.contains("too short"),
            "{msg}"
        );

        let missing = dir.path().join("missing.gguf");
        let msg = check_gguf(&missing).unwrap_err().to_string();
        assert!(msg.contains("missing.gguf"), "{msg}");

        let good = dir.path().join("ok.gguf");
        fs::write(&good, b"GGUF\x03\x00\x00\x00").unwrap();
        check_gguf(&good).unwrap();
    }
}
