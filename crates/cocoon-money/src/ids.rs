//! Fixed-size identifiers (account keys, hashes, signatures), written as lowercase hex on the wire.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a hex identifier could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is not hex of the expected length.
    #[error("expected {expected} hex characters: {reason}")]
    BadHex {
        /// Number of hex characters expected.
        expected: usize,
        /// What was wrong.
        reason: String,
    },
    /// The bytes are not a valid Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    BadPublicKey,
    /// The key is a small-order ("weak") point: a signature made without any secret verifies
    /// under it, so it can never authorize anything.
    #[error("weak (small-order) Ed25519 public key")]
    WeakPublicKey,
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
}

/// Parses exactly `2 * N` lowercase hex digits: the one encoding the ledger writes, so that
/// every id has a single spelling on the wire.
fn canonical_hex<const N: usize>(text: &str) -> Result<[u8; N], IdError> {
    let bad = |reason: &str| IdError::BadHex {
        expected: 2 * N,
        reason: reason.to_owned(),
    };
    if text.len() != 2 * N {
        return Err(bad("wrong length"));
    }
    if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad("only lowercase hex digits are accepted"));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|e| bad(&e.to_string()))?;
    Ok(out)
}

/// `bytes` as lowercase hex, written into `out` (twice their length) rather than a new `String`:
/// ids and hashes are written for every receipt and payment.
fn lowercase_hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    hex::encode_to_slice(bytes, out).expect("the buffer is twice the bytes' length");
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// Reads [`canonical_hex`] text in place (without copying it into a `String` first).
struct CanonicalHex<const N: usize>;

impl<const N: usize> serde::de::Visitor<'_> for CanonicalHex<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lowercase hex digits", 2 * N)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<[u8; N], E> {
        canonical_hex::<N>(text).map_err(E::custom)
    }
}

/// Defines a byte-array newtype with hex `Display`/`FromStr`/serde, so every id reads the same in
/// JSON, logs and CLI flags.
macro_rules! hex_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(lowercase_hex(&self.0, &mut [0; 2 * $len]))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|e| IdError::BadHex {
                    expected: 2 * $len,
                    reason: e.to_string(),
                })?;
                Ok(Self(out))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(lowercase_hex(&self.0, &mut [0; 2 * $len]))
            }
        }

        /// Strict: exactly the lowercase hex [`fmt::Display`] writes (text input via
        /// [`FromStr`] is more forgiving).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(CanonicalHex::<$len>).map(Self)
            }
        }
    };
}

hex_newtype!(
    /// An account: the 32-byte Ed25519 public key that signs its transactions.
    AccountId,
    32
);

hex_newtype!(
    /// A 32-byte hash (SHA-256 of a proxy's state, an image hash, a model hash).
    Hash32,
    32
);

hex_newtype!(
    /// A 64-byte Ed25519 signature.
    SignatureBytes,
    64
);

/// The identity point's encoding: a small-order ("weak") key under which the signature
/// [`FORGED_SIGNATURE`] (R = identity, s = 0) verifies for every message with non-strict
/// Ed25519. For the tests that attack the strict checks.
#[cfg(test)]
pub(crate) const WEAK_KEY: AccountId = AccountId({
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
});

/// See [`WEAK_KEY`].
#[cfg(test)]
pub(crate) const FORGED_SIGNATURE: SignatureBytes = SignatureBytes({
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    bytes
});

impl AccountId {
    /// The Ed25519 key this account id names; fails when the bytes are not a curve point or
    /// are a weak (small-order) point, under which signatures prove nothing.
    pub fn verifying_key(&self) -> Result<VerifyingKey, IdError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| IdError::BadPublicKey)?;
        if key.is_weak() {
            return Err(IdError::WeakPublicKey);
        }
        Ok(key)
    }

    /// Checks `signature` over `message` strictly (no weak keys, no non-canonical signatures),
    /// so one signature cannot be reshaped into another valid one and no key signs for anyone.
    /// Fails with [`IdError::BadSignature`] when the key is usable but the signature is not.
    pub fn verify_strict(&self, message: &[u8], signature: &SignatureBytes) -> Result<(), IdError> {
        self.verifying_key()?
            .verify_strict(message, &signature.to_signature())
            .map_err(|_| IdError::BadSignature)
    }
}

impl From<VerifyingKey> for AccountId {
    fn from(key: VerifyingKey) -> Self {
        Self(key.to_bytes())
    }
}

impl From<&ed25519_dalek::SigningKey> for AccountId {
    fn from(key: &ed25519_dalek::SigningKey) -> Self {
        Self(key.verifying_key().to_bytes())
    }
}

impl From<Signature> for SignatureBytes {
    fn from(sig: Signature) -> Self {
        Self(sig.to_bytes())
    }
}

impl SignatureBytes {
    /// The signature in `ed25519-dalek` form.
    pub fn to_signature(&self) -> Signature {
        Signature::from_bytes(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_through_json_and_text() {
        let id = AccountId([7u8; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "07".repeat(32)));
        assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), id);
        assert_eq!(id.to_string().parse::<AccountId>().unwrap(), id);
    }

    #[test]
    fn wrong_length_or_bad_hex_is_rejected() {
        assert!("abcd".parse::<AccountId>().is_err());
        assert!("zz".repeat(32).parse::<Hash32>().is_err());
        assert!(serde_json::from_str::<SignatureBytes>("\"00\"").is_err());
    }

    #[test]
    fn json_holds_exactly_the_lowercase_spelling() {
        let hash = Hash32(std::array::from_fn(|i| (i * 37) as u8));
        let text = hash.to_string();
        assert_eq!(text, hex::encode(hash.0));
        assert_eq!(serde_json::to_string(&hash).unwrap(), format!("\"{text}\""));
        // The same digits, escaped in JSON, are still that text.
        let escaped = format!("\"\\u00{:x}{}\"", text.as_bytes()[0], &text[1..]);
        assert_eq!(serde_json::from_str::<Hash32>(&escaped).unwrap(), hash);
        // Another spelling of the same bytes, or not a string, is refused.
        let upper = format!("\"{}\"", text.to_uppercase());
        let error = serde_json::from_str::<Hash32>(&upper).unwrap_err();
        assert!(error.to_string().contains("lowercase"), "{error}");
        let error = serde_json::from_str::<Hash32>("7").unwrap_err();
        assert!(
            error.to_string().contains("64 lowercase hex digits"),
            "{error}"
        );
    }

    #[test]
    fn account_id_names_its_signing_key() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        let id = AccountId::from(&key);
        assert_eq!(id.verifying_key().unwrap(), key.verifying_key());
    }
}
