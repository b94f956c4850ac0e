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
                f.write_str(&hex::encode(self.0))
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
                serializer.serialize_str(&hex::encode(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
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

impl AccountId {
    /// The Ed25519 key this account id names; fails when the bytes are not a curve point.
    pub fn verifying_key(&self) -> Result<VerifyingKey, IdError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| IdError::BadPublicKey)
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
    fn account_id_names_its_signing_key() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        let id = AccountId::from(&key);
        assert_eq!(id.verifying_key().unwrap(), key.verifying_key());
    }
}
