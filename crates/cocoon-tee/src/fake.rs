//! The `fake` attestation kind: a software stand-in for TDX, for tests and local networks.
//!
//! A fake quote body is `measurements (400 bytes, canonical encoding) ‖ report data (64) ‖
//! Ed25519 signature (64)`, 528 bytes. The signature covers
//! `b"cocoon-fake-quote-v1" ‖ measurements ‖ report data` and is made with the *fake platform
//! key*, whose secret seed is `SHA-256("cocoon fake TDX platform key v1")`. That seed is
//! published right here, so anyone can forge a fake quote: the kind proves nothing in
//! production and exists so that `cocoon dev` and the tests run the same checking code as TDX.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256, Sha384};

use crate::measurements::{CANONICAL_LEN, MR_LEN};
use crate::{AttestationKind, Attester, Measurements, Quote, ReportData, TeeError, VerifiedQuote};

/// The published string whose SHA-256 is the fake platform key's secret seed.
pub const FAKE_PLATFORM_SEED: &str = "cocoon fake TDX platform key v1";

/// Length of a fake quote body.
pub const FAKE_QUOTE_LEN: usize = CANONICAL_LEN + 64 + 64;

/// Domain separator prefixed to what the fake platform key signs.
const SIGNING_CONTEXT: &[u8] = b"cocoon-fake-quote-v1";

/// The well-known fake platform signing key (see the module docs: it is public).
pub fn fake_platform_key() -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(FAKE_PLATFORM_SEED).into())
}

/// The fake platform's public key, against which fake quotes verify.
pub fn fake_platform_public_key() -> VerifyingKey {
    fake_platform_key().verifying_key()
}

fn signed_message(measurements: &[u8], report_data: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, measurements, report_data].concat()
}

/// Produces fake quotes for fixed measurements.
#[derive(Debug, Clone)]
pub struct FakeAttester {
    measurements: Measurements,
    key: SigningKey,
}

impl FakeAttester {
    /// A fake attester reporting `measurements`.
    pub fn new(measurements: Measurements) -> Self {
        FakeAttester {
            measurements,
            key: fake_platform_key(),
        }
    }

    /// A fake attester whose measurements are derived from `label` (e.g. `"cocoon-worker-dev"`),
    /// so each development role gets a distinct, reproducible image hash.
    /// See [`measurements_from_label`].
    pub fn from_label(label: &str) -> Self {
        Self::new(measurements_from_label(label))
    }

    /// The measurements this attester reports.
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }

    /// The image hash its quotes verify to (a `fake` one: never a TDX image's, see
    /// [`Measurements::image_hash`]).
    pub fn image_hash(&self) -> crate::ImageHash {
        self.measurements.image_hash(AttestationKind::Fake)
    }
}

/// Deterministic measurements for a label: MRTD and each RTMRi are
/// `SHA-384("cocoon-fake-measurement-v1/<register>/<label>")` with register names `mrtd`,
/// `rtmr0`..`rtmr3`; every other field is zero.
pub fn measurements_from_label(label: &str) -> Measurements {
    let reg = |name: &str| -> [u8; MR_LEN] {
        Sha384::digest(format!("cocoon-fake-measurement-v1/{name}/{label}")).into()
    };
    Measurements {
        mrtd: reg("mrtd"),
        rtmr: [reg("rtmr0"), reg("rtmr1"), reg("rtmr2"), reg("rtmr3")],
        ..Measurements::ZERO
    }
}

impl Attester for FakeAttester {
    fn kind(&self) -> AttestationKind {
        AttestationKind::Fake
    }

    fn quote(&self, report_data: &ReportData) -> Result<Quote, TeeError> {
        let m = self.measurements.canonical_bytes();
        let sig = self.key.sign(&signed_message(&m, report_data));
        let bytes = [&m[..], report_data, &sig.to_bytes()].concat();
        Ok(Quote {
            kind: AttestationKind::Fake,
            bytes,
        })
    }
}

/// Checks a fake quote body's length and fake platform signature, and extracts its contents.
pub(crate) fn verify_fake(body: &[u8]) -> Result<VerifiedQuote, TeeError> {
    if body.len() != FAKE_QUOTE_LEN {
        return Err(TeeError::QuoteLength {
            kind: AttestationKind::Fake,
            expected: FAKE_QUOTE_LEN,
            actual: body.len(),
        });
    }
    let (m, rest) = body.split_at(CANONICAL_LEN);
    let (rd, sig) = rest.split_at(64);
    let sig = Signature::from_slice(sig).map_err(|_| TeeError::BadFakeSignature)?;
    fake_platform_public_key()
        .verify(&signed_message(m, rd), &sig)
        .map_err(|_| TeeError::BadFakeSignature)?;
    // Lengths were checked above, so these conversions cannot fail.
    let m: &[u8; CANONICAL_LEN] = m.try_into().map_err(|_| TeeError::BadFakeSignature)?;
    let report_data: ReportData = rd.try_into().map_err(|_| TeeError::BadFakeSignature)?;
    let measurements = Measurements::from_canonical_bytes(m);
    Ok(VerifiedQuote {
        kind: AttestationKind::Fake,
        image_hash: measurements.image_hash(AttestationKind::Fake),
        measurements,
        report_data,
        valid_until: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_quote_verifies_and_binds_report_data() {
        let a = FakeAttester::from_label("cocoon-worker-dev");
        let q = a.quote(&[9; 64]).unwrap();
        assert_eq!(q.bytes.len(), FAKE_QUOTE_LEN);
        let v = verify_fake(&q.bytes).unwrap();
        assert_eq!(v.report_data, [9; 64]);
        assert_eq!(v.measurements, *a.measurements());
        assert_eq!(v.image_hash, a.image_hash());
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let q = FakeAttester::from_label("x").quote(&[1; 64]).unwrap();
        // Measurements, report data and signature are all covered.
        for at in [
            0,
            100,
            CANONICAL_LEN,
            CANONICAL_LEN + 63,
            FAKE_QUOTE_LEN - 1,
        ] {
            let mut bytes = q.bytes.clone();
            bytes[at] ^= 0x40;
            assert!(
                matches!(verify_fake(&bytes), Err(TeeError::BadFakeSignature)),
                "byte {at}"
            );
        }
    }

    #[test]
    fn wrong_length_is_rejected() {
        let q = FakeAttester::from_label("x").quote(&[1; 64]).unwrap();
        assert!(matches!(
            verify_fake(&q.bytes[1..]),
            Err(TeeError::QuoteLength { .. })
        ));
    }

    #[test]
    fn signature_from_another_key_is_rejected() {
        let mut a = FakeAttester::from_label("x");
        a.key = SigningKey::from_bytes(&[3; 32]);
        let q = a.quote(&[1; 64]).unwrap();
        assert!(matches!(
            verify_fake(&q.bytes),
            Err(TeeError::BadFakeSignature)
        ));
    }

    #[test]
    fn labels_give_distinct_reproducible_images() {
        let w = measurements_from_label("cocoon-worker-dev");
        assert_eq!(w, measurements_from_label("cocoon-worker-dev"));
        assert_ne!(
            w.image_hash(AttestationKind::Fake),
            measurements_from_label("cocoon-proxy-dev").image_hash(AttestationKind::Fake)
        );
        assert_eq!(w.mr_owner, [0; MR_LEN]);
        // Pinned: `cocoon dev` configurations and docs may quote this value.
        assert_eq!(
            w.image_hash(AttestationKind::Fake).to_string(),
            "d7646948ec053509c4605ee30710b8c4af271eb0b5afd0e12b4a02d922e92ba2"
        );
    }
}
