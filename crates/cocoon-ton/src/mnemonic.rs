//! Keys from a TON 24-word mnemonic, with TON's standard derivation (tonlib-core: HMAC-SHA512 of
//! the words, PBKDF2 "TON default seed"): the key a TON wallet app shows those words for. Its
//! Ed25519 key is then a Cocoon account id like any other.

use ed25519_dalek::SigningKey;
use tonlib_core::wallet::error::MnemonicError;
use tonlib_core::wallet::mnemonic::Mnemonic;

/// Why a mnemonic gives no key. The words themselves never appear in it.
#[derive(Debug, thiserror::Error)]
pub enum MnemonicKeyError {
    /// Not 24 words of TON's list, or words that are no TON mnemonic (its check byte).
    #[error("not a TON mnemonic: {0}")]
    Invalid(String),
    /// The derivation gave a key pair that does not hold together (cannot happen with
    /// tonlib-core's derivation; checked rather than trusted).
    #[error("the mnemonic's key pair is inconsistent")]
    Inconsistent,
}

/// The Ed25519 key of the 24 words in `text` (separated by any whitespace; no password).
pub fn key_from_mnemonic(text: &str) -> Result<SigningKey, MnemonicKeyError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let pair = Mnemonic::new(words, &None)
        .and_then(|mnemonic| mnemonic.to_key_pair())
        .map_err(invalid)?;
    // tonlib-core's secret key is the 32-byte seed followed by the public key.
    let seed: [u8; 32] = pair
        .secret_key
        .get(..32)
        .and_then(|seed| seed.try_into().ok())
        .ok_or(MnemonicKeyError::Inconsistent)?;
    let key = SigningKey::from_bytes(&seed);
    if key.verifying_key().as_bytes().as_slice() != pair.public_key.as_slice() {
        return Err(MnemonicKeyError::Inconsistent);
    }
    Ok(key)
}

/// tonlib-core's reason, except that a word not in the list is not repeated (it is part of a
/// secret, and errors end up in logs).
fn invalid(error: MnemonicError) -> MnemonicKeyError {
    MnemonicKeyError::Invalid(match error {
        MnemonicError::InvalidWord(_) => "a word not in TON's word list".to_owned(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tonlib-core's own vector: these words give this public key.
    const WORDS: &str = "dose ice enrich trigger test dove century still betray gas diet dune \
        use other base gym mad law immense village world example praise game";

    #[test]
    fn the_standard_derivation_gives_the_known_key() {
        let key = key_from_mnemonic(&format!("  {}\n", WORDS.replace(' ', "\n"))).unwrap();
        assert_eq!(
            hex::encode(key.verifying_key().as_bytes()),
            "c04ad1885c127fe863abb00752fa844e6439bb04f264d70de7cea580b32637ab"
        );
    }

    #[test]
    fn wrong_words_are_refused_without_echoing_them() {
        let twelve = WORDS.split(' ').take(12).collect::<Vec<_>>().join(" ");
        assert!(key_from_mnemonic(&twelve).is_err());
        let swapped = WORDS.replacen("dose", "game", 1);
        let error = key_from_mnemonic(&swapped).unwrap_err().to_string();
        assert!(error.starts_with("not a TON mnemonic"), "{error}");
        let typo = WORDS.replacen("enrich", "enrichx", 1);
        let error = key_from_mnemonic(&typo).unwrap_err().to_string();
        assert!(!error.contains("enrich"), "{error}");
        assert!(key_from_mnemonic("").is_err());
    }
}
