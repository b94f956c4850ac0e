//! Attestation policy: which images and how strong an attestation a node accepts from peers.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{AttestationKind, ImageHash, TeeError, VerifiedQuote};

/// Which verified quotes a node accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Allowed image hashes; empty means any image.
    #[serde(default)]
    pub allowed_image_hashes: BTreeSet<ImageHash>,
    /// The weakest attestation kind accepted.
    pub min_kind: AttestationKind,
}

impl Policy {
    /// A policy accepting any image attested at least as strongly as `min_kind`.
    pub fn any_image(min_kind: AttestationKind) -> Self {
        Policy {
            allowed_image_hashes: BTreeSet::new(),
            min_kind,
        }
    }

    /// Accepts `quote` or says why not. The kind is checked first, so a `none` quote
    /// is reported as too weak rather than as an unknown image.
    pub fn check(&self, quote: &VerifiedQuote) -> Result<(), TeeError> {
        self.check_image(quote.kind, quote.image_hash)
    }

    /// Accepts an image attested as `kind` with `image_hash` (what a verified peer proved), or says
    /// why not; used to re-judge live links when the policy changes.
    pub fn check_image(
        &self,
        kind: AttestationKind,
        image_hash: ImageHash,
    ) -> Result<(), TeeError> {
        if kind < self.min_kind {
            return Err(TeeError::KindBelowMinimum {
                actual: kind,
                minimum: self.min_kind,
            });
        }
        if !self.allowed_image_hashes.is_empty() && !self.allowed_image_hashes.contains(&image_hash)
        {
            return Err(TeeError::ImageHashNotAllowed(image_hash));
        }
        Ok(())
    }
}

impl Default for Policy {
    /// The production default: any image, but only real TDX attestation.
    fn default() -> Self {
        Self::any_image(AttestationKind::Tdx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attester, FakeAttester, NoneAttester, Verifier};

    fn verified(a: &dyn Attester) -> VerifiedQuote {
        Verifier::new().verify(&a.quote(&[0; 64]).unwrap()).unwrap()
    }

    #[test]
    fn kind_minimum() {
        let none = verified(&NoneAttester);
        let fake = verified(&FakeAttester::from_label("w"));
        let p = Policy::any_image(AttestationKind::Fake);
        assert!(p.check(&fake).is_ok());
        let err = p.check(&none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "attestation kind none is below the policy's minimum fake"
        );
        assert!(Policy::any_image(AttestationKind::None)
            .check(&none)
            .is_ok());
        assert!(Policy::default().check(&fake).is_err());
    }

    #[test]
    fn image_allow_list() {
        let w = verified(&FakeAttester::from_label("worker"));
        let p = verified(&FakeAttester::from_label("proxy"));
        let mut policy = Policy::any_image(AttestationKind::Fake);
        policy.allowed_image_hashes.insert(w.image_hash);
        assert!(policy.check(&w).is_ok());
        let err = policy.check(&p).unwrap_err();
        assert!(matches!(err, TeeError::ImageHashNotAllowed(h) if h == p.image_hash));
        assert_eq!(
            err.to_string(),
            format!("image hash {} is not in the allowed list", p.image_hash)
        );
    }

    #[test]
    fn a_fake_quote_with_a_tdx_images_measurements_matches_no_tdx_entry() {
        // The fake platform key is public: anyone can sign a `fake` quote over the
        // measurements of an allowed production (TDX) image.
        let forger = FakeAttester::from_label("production");
        let production_tdx_image = forger.measurements().image_hash(AttestationKind::Tdx);
        let forged = verified(&forger);
        let mut policy = Policy::any_image(AttestationKind::Fake);
        policy.allowed_image_hashes.insert(production_tdx_image);
        assert!(matches!(
            policy.check(&forged),
            Err(TeeError::ImageHashNotAllowed(h)) if h == forged.image_hash
        ));
        // Nor does a `none` quote match the TDX entry for all-zero measurements.
        let mut zero = Policy::any_image(AttestationKind::None);
        zero.allowed_image_hashes
            .insert(crate::Measurements::ZERO.image_hash(AttestationKind::Tdx));
        assert!(zero.check(&verified(&NoneAttester)).is_err());
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let mut policy = Policy::any_image(AttestationKind::Fake);
        policy
            .allowed_image_hashes
            .insert(crate::Measurements::ZERO.image_hash(AttestationKind::None));
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
        let minimal: Policy = serde_json::from_str(r#"{"min_kind":"tdx"}"#).unwrap();
        assert_eq!(minimal, Policy::default());
    }
}
