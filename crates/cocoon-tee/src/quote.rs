//! Quotes, their self-describing encoding, the [`Attester`] trait and the `none` attester.

use serde::{Deserialize, Serialize};

use crate::{AttestationKind, TeeError};

/// The 64 bytes an attester binds into a quote (Cocoon puts `SHA-512(claims)` here).
pub type ReportData = [u8; 64];

/// Version byte of the [`Quote::to_bytes`] encoding.
pub const QUOTE_ENCODING_VERSION: u8 = 1;

/// A quote of some attestation kind, as produced by an [`Attester`].
///
/// `bytes` is the kind's own body: for `none` the 64 report-data bytes, for `fake`
/// the layout in [`crate::fake`], for `tdx` the raw quote from the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Which kind of attestation produced `bytes`.
    pub kind: AttestationKind,
    /// The kind-specific quote body.
    pub bytes: Vec<u8>,
}

impl Quote {
    /// Encodes as `version (1 byte, = 1) ‖ kind tag (1 byte: 0 none, 1 fake, 2 tdx) ‖ body`,
    /// suitable as an X.509 extension value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.bytes.len());
        out.push(QUOTE_ENCODING_VERSION);
        out.push(kind_tag(self.kind));
        out.extend_from_slice(&self.bytes);
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes). Checks only the header; the body is checked by
    /// [`crate::Verifier::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TeeError> {
        let [version, tag, body @ ..] = bytes else {
            return Err(TeeError::TruncatedQuote(bytes.len()));
        };
        if *version != QUOTE_ENCODING_VERSION {
            return Err(TeeError::UnsupportedQuoteVersion(*version));
        }
        let kind = match tag {
            0 => AttestationKind::None,
            1 => AttestationKind::Fake,
            2 => AttestationKind::Tdx,
            other => return Err(TeeError::UnknownQuoteTag(*other)),
        };
        Ok(Quote {
            kind,
            bytes: body.to_vec(),
        })
    }
}

fn kind_tag(kind: AttestationKind) -> u8 {
    match kind {
        AttestationKind::None => 0,
        AttestationKind::Fake => 1,
        AttestationKind::Tdx => 2,
    }
}

/// Something that can produce quotes binding 64 bytes of report data to this machine's image.
pub trait Attester: Send + Sync {
    /// The kind of quote this attester produces.
    fn kind(&self) -> AttestationKind;
    /// Produces a quote whose report data is `report_data`.
    fn quote(&self, report_data: &ReportData) -> Result<Quote, TeeError>;
}

/// The `none` attester: its quote is just the report data, proves nothing, and verifies
/// as all-zero measurements (image hash = [`crate::Measurements::ZERO`]`.image_hash(None)`).
/// Development only; any policy with a minimum above `none` refuses it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoneAttester;

impl Attester for NoneAttester {
    fn kind(&self) -> AttestationKind {
        AttestationKind::None
    }

    fn quote(&self, report_data: &ReportData) -> Result<Quote, TeeError> {
        Ok(Quote {
            kind: AttestationKind::None,
            bytes: report_data.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trip_for_every_kind() {
        for kind in AttestationKind::ALL {
            let q = Quote {
                kind,
                bytes: vec![1, 2, 3],
            };
            let enc = q.to_bytes();
            assert_eq!(enc[0], QUOTE_ENCODING_VERSION);
            assert_eq!(Quote::from_bytes(&enc).unwrap(), q);
        }
    }

    #[test]
    fn decoding_rejects_bad_headers() {
        assert!(matches!(
            Quote::from_bytes(&[1]),
            Err(TeeError::TruncatedQuote(1))
        ));
        assert!(matches!(
            Quote::from_bytes(&[2, 0, 0]),
            Err(TeeError::UnsupportedQuoteVersion(2))
        ));
        assert!(matches!(
            Quote::from_bytes(&[1, 9]),
            Err(TeeError::UnknownQuoteTag(9))
        ));
    }

    #[test]
    fn none_quote_carries_report_data() {
        let q = NoneAttester.quote(&[5; 64]).unwrap();
        assert_eq!(q.kind, AttestationKind::None);
        assert_eq!(q.bytes, vec![5; 64]);
    }
}
