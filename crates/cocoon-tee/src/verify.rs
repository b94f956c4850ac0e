//! Quote verification: turns a [`Quote`] into trusted [`VerifiedQuote`] contents.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::measurements::hex_array;
use crate::{fake, AttestationKind, ImageHash, Measurements, Quote, ReportData, TeeError};

/// What a quote proves once its signature chain has been checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedQuote {
    /// Kind of the verified quote.
    pub kind: AttestationKind,
    /// The image's measurements.
    pub measurements: Measurements,
    /// `measurements.image_hash(kind)`, precomputed.
    pub image_hash: ImageHash,
    /// The 64 bytes the quote binds (Cocoon: `SHA-512(claims)`).
    #[serde(with = "hex_array")]
    pub report_data: ReportData,
    /// Until when (Unix seconds) this verdict holds: the earliest `nextUpdate` of the collateral it
    /// was judged with (`tdx`); `None` when nothing external was consulted (`none`, `fake`). A
    /// cache must not reuse the verdict past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<u64>,
}

/// A pluggable verifier for one quote kind's raw body (the TDX/DCAP verifier implements this).
pub trait QuoteVerifier: Send + Sync {
    /// Verifies a raw quote body and returns its contents; must reject anything unproven.
    fn verify(&self, quote_bytes: &[u8]) -> Result<VerifiedQuote, TeeError>;
}

/// Verifies quotes of every kind: `none` and `fake` built in, `tdx` when plugged in with
/// [`with_tdx`](Self::with_tdx).
#[derive(Clone, Default)]
pub struct Verifier {
    tdx: Option<Arc<dyn QuoteVerifier>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("tdx", &self.tdx.is_some())
            .finish()
    }
}

impl Verifier {
    /// A verifier for `none` and `fake` quotes; `tdx` quotes are refused until
    /// [`with_tdx`](Self::with_tdx) plugs in a TDX verifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `tdx` to verify `tdx` quotes.
    pub fn with_tdx(mut self, tdx: Arc<dyn QuoteVerifier>) -> Self {
        self.tdx = Some(tdx);
        self
    }

    /// Whether `tdx` quotes can be verified.
    pub fn supports_tdx(&self) -> bool {
        self.tdx.is_some()
    }

    /// Checks `quote`'s structure and signatures and returns what it proves.
    /// Does not apply any policy: see [`crate::Policy::check`].
    pub fn verify(&self, quote: &Quote) -> Result<VerifiedQuote, TeeError> {
        match quote.kind {
            AttestationKind::None => {
                let report_data: ReportData =
                    quote
                        .bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| TeeError::QuoteLength {
                            kind: AttestationKind::None,
                            expected: 64,
                            actual: quote.bytes.len(),
                        })?;
                Ok(VerifiedQuote {
                    kind: AttestationKind::None,
                    measurements: Measurements::ZERO,
                    image_hash: Measurements::ZERO.image_hash(AttestationKind::None),
                    report_data,
                    valid_until: None,
                })
            }
            AttestationKind::Fake => fake::verify_fake(&quote.bytes),
            AttestationKind::Tdx => {
                let tdx = self.tdx.as_ref().ok_or(TeeError::TdxVerifierMissing)?;
                let verified = tdx.verify(&quote.bytes)?;
                // A plugged-in verifier must not be able to upgrade or downgrade the kind,
                // nor report a hash that does not match its measurements.
                if verified.kind != AttestationKind::Tdx
                    || verified.image_hash != verified.measurements.image_hash(AttestationKind::Tdx)
                {
                    return Err(TeeError::QuoteRejected {
                        kind: AttestationKind::Tdx,
                        reason: "TDX verifier returned inconsistent contents".into(),
                    });
                }
                Ok(verified)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attester, FakeAttester, NoneAttester};

    struct StubTdx(AttestationKind);
    impl QuoteVerifier for StubTdx {
        fn verify(&self, quote_bytes: &[u8]) -> Result<VerifiedQuote, TeeError> {
            if quote_bytes != b"good" {
                return Err(TeeError::QuoteRejected {
                    kind: AttestationKind::Tdx,
                    reason: "bad".into(),
                });
            }
            Ok(VerifiedQuote {
                kind: self.0,
                measurements: Measurements::ZERO,
                image_hash: Measurements::ZERO.image_hash(self.0),
                report_data: [0; 64],
                valid_until: None,
            })
        }
    }

    #[test]
    fn none_quote_verifies_to_zero_measurements() {
        let q = NoneAttester.quote(&[4; 64]).unwrap();
        let v = Verifier::new().verify(&q).unwrap();
        assert_eq!(v.kind, AttestationKind::None);
        assert_eq!(v.report_data, [4; 64]);
        assert_eq!(
            v.image_hash,
            Measurements::ZERO.image_hash(AttestationKind::None)
        );
        let short = Quote {
            kind: AttestationKind::None,
            bytes: vec![0; 63],
        };
        assert!(matches!(
            Verifier::new().verify(&short),
            Err(TeeError::QuoteLength { .. })
        ));
    }

    #[test]
    fn fake_quote_survives_encoding_and_image_hash_ignores_report_data() {
        let a = FakeAttester::from_label("cocoon-proxy-dev");
        let v1 = Verifier::new()
            .verify(&Quote::from_bytes(&a.quote(&[1; 64]).unwrap().to_bytes()).unwrap())
            .unwrap();
        let v2 = Verifier::new().verify(&a.quote(&[2; 64]).unwrap()).unwrap();
        assert_eq!(v1.report_data, [1; 64]);
        assert_eq!(v2.report_data, [2; 64]);
        assert_eq!(v1.image_hash, v2.image_hash);
    }

    #[test]
    fn tdx_needs_a_plugged_verifier() {
        let q = Quote {
            kind: AttestationKind::Tdx,
            bytes: b"good".to_vec(),
        };
        let err = Verifier::new().verify(&q).unwrap_err();
        assert!(matches!(err, TeeError::TdxVerifierMissing));
        assert!(err.to_string().contains("no TDX verifier"));

        let v = Verifier::new().with_tdx(Arc::new(StubTdx(AttestationKind::Tdx)));
        assert!(v.supports_tdx());
        assert_eq!(v.verify(&q).unwrap().kind, AttestationKind::Tdx);
        let bad = Quote {
            kind: AttestationKind::Tdx,
            bytes: b"evil".to_vec(),
        };
        assert!(matches!(
            v.verify(&bad),
            Err(TeeError::QuoteRejected { .. })
        ));
    }

    #[test]
    fn plugged_verifier_cannot_change_the_kind() {
        let v = Verifier::new().with_tdx(Arc::new(StubTdx(AttestationKind::Fake)));
        let q = Quote {
            kind: AttestationKind::Tdx,
            bytes: b"good".to_vec(),
        };
        assert!(matches!(v.verify(&q), Err(TeeError::QuoteRejected { .. })));
    }
}
