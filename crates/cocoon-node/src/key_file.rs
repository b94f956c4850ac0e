//! Secret keys kept in plain files outside any TEE: the registry owner's, and a proxy operator's
//! in development (`--operator-key-file`). 64 hex digits (the Ed25519 seed), mode 0600.

use std::path::Path;

use anyhow::Context;
use ed25519_dalek::SigningKey;

/// Reads a key file: 64 hex digits (the Ed25519 seed).
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key {}", path.display()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .with_context(|| format!("{} does not hold 64 hex digits", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to `path` (mode 0600 on Unix), refusing to replace an existing file.
pub fn write_key(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    write_secret(
        path,
        format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
    )
}

/// Writes secret `bytes` to a new file at `path` that only its owner may read (mode 0600 on
/// Unix), refusing to replace an existing file.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads the key at `path`, first writing a fresh one there (and its directory) if there is none.
pub fn read_or_create_key(path: &Path) -> anyhow::Result<SigningKey> {
    if !path.exists() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write_key(path, &SigningKey::generate(&mut rand::rngs::OsRng))?;
    }
    read_key(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_made_once_and_read_back_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-yet").join("operator.key");
        let made = read_or_create_key(&path).unwrap();
        assert_eq!(
            read_or_create_key(&path).unwrap().to_bytes(),
            made.to_bytes()
        );
        assert!(
            write_key(&path, &made).is_err(),
            "an existing key is never replaced"
        );
        std::fs::write(&path, "not hex").unwrap();
        let error = read_key(&path).unwrap_err();
        assert!(format!("{error:#}").contains("64 hex digits"), "{error:#}");
    }

    #[test]
    fn a_secret_is_readable_by_its_owner_only_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.der");
        write_secret(&path, b"first").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        assert!(write_secret(&path, b"second").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
    }
}
