//! User claims carried in an RA-TLS certificate and bound into its quote.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use crate::RatlsError;

/// What a node states about itself; serialised as JSON into the claims extension.
/// The quote's report data is `SHA-512` of exactly those bytes, and `public_key` is the
/// certificate's key, so a quote cannot be moved to another certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The certificate's Ed25519 public key (hex in JSON).
    #[serde(with = "hex_key")]
    pub public_key: [u8; 32],
    /// The node's role, e.g. `"proxy"`, `"worker"`, `"client"`.
    pub role: String,
    /// Free-form attributes (e.g. model name, node address).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Claims {
    /// The JSON bytes placed in the certificate extension.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and a string map cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the claims extension.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RatlsError> {
        serde_json::from_slice(bytes).map_err(|e| RatlsError::InvalidClaims(e.to_string()))
    }
}

/// The report data a quote must carry for claims serialised as `claims_bytes`.
pub fn report_data_for(claims_bytes: &[u8]) -> [u8; 64] {
    Sha512::digest(claims_bytes).into()
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(|e| {
            serde::de::Error::custom(format_args!("public_key: expected 64 hex digits: {e}"))
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_with_hex_key() {
        let c = Claims {
            public_key: [0xab; 32],
            role: "worker".into(),
            attributes: BTreeMap::from([("model".into(), "qwen".into())]),
        };
        let json = c.to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["public_key"], hex::encode([0xab; 32]));
        assert_eq!(Claims::from_json(&json).unwrap(), c);
        assert!(matches!(
            Claims::from_json(br#"{"public_key":"00","role":"x"}"#),
            Err(RatlsError::InvalidClaims(_))
        ));
    }

    #[test]
    fn report_data_depends_on_exact_bytes() {
        assert_ne!(
            report_data_for(b"{\"a\":1}"),
            report_data_for(b"{\"a\": 1}")
        );
        assert_eq!(report_data_for(b"x"), report_data_for(b"x"));
    }
}
