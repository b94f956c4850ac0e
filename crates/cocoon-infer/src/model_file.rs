//! The model file on disk: a quick GGUF sanity check. (Its SHA-256 identity is
//! [`cocoon_tee::weights`]'s, as for every engine's weights.)

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

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
