//! The kinds of attestation, ordered from weakest to strongest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TeeError;

/// How a node proves what code it runs. Ordered by strength: `None < Fake < Tdx`,
/// so a policy can state a minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttestationKind {
    /// No proof at all; development only.
    None,
    /// A software TDX stand-in signed by a well-known key; proves nothing, but runs every check.
    Fake,
    /// A real Intel TDX quote.
    Tdx,
}

impl AttestationKind {
    /// All kinds, weakest first.
    pub const ALL: [AttestationKind; 3] = [Self::None, Self::Fake, Self::Tdx];

    /// The lowercase name used in configuration, JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Fake => "fake",
            Self::Tdx => "tdx",
        }
    }
}

impl fmt::Display for AttestationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttestationKind {
    type Err = TeeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| TeeError::UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_weakest_first() {
        assert!(AttestationKind::None < AttestationKind::Fake);
        assert!(AttestationKind::Fake < AttestationKind::Tdx);
    }

    #[test]
    fn text_round_trip() {
        for k in AttestationKind::ALL {
            assert_eq!(k.to_string().parse::<AttestationKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<AttestationKind>(&json).unwrap(), k);
        }
        assert!(matches!(
            "TDX".parse::<AttestationKind>(),
            Err(TeeError::UnknownKind(_))
        ));
    }
}
