//! Parsing and verifying a peer's RA-TLS certificate.

use std::time::{Duration, SystemTime};

use cocoon_tee::{
    AttestationKind, ImageHash, Measurements, Policy, Quote, VerifiedQuote, Verifier,
};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;

use crate::claims::report_data_for;
use crate::{
    Claims, RatlsError, CLAIMS_OID_STR, CLOCK_SKEW_ALLOWANCE, MAX_VALIDITY, QUOTE_OID_STR,
};

const ED25519_OID: &str = "1.3.101.112";

/// What a verified peer certificate proves: who (key, claims) runs what (image, kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerIdentity {
    /// Attestation kind of the peer's quote.
    pub kind: AttestationKind,
    /// The peer's image hash.
    pub image_hash: ImageHash,
    /// The peer's measurements.
    pub measurements: Measurements,
    /// The peer's claims (role, attributes, key).
    pub claims: Claims,
    /// SHA-256 of the peer's certificate DER (hex in JSON).
    #[serde(serialize_with = "hex_32")]
    pub cert_fingerprint: [u8; 32],
    /// The peer's Ed25519 public key (hex in JSON).
    #[serde(serialize_with = "hex_32")]
    pub public_key: [u8; 32],
    /// End of the certificate's validity (unix seconds in JSON).
    #[serde(serialize_with = "unix_seconds")]
    pub not_after: SystemTime,
}

fn hex_32<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn unix_seconds<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// The raw contents of an RA-TLS certificate, read without any verification (for tooling).
#[derive(Debug, Clone)]
pub struct CertificateContents {
    /// The claims extension, parsed.
    pub claims: Claims,
    /// The claims extension bytes exactly as in the certificate.
    pub claims_json: Vec<u8>,
    /// The quote extension, decoded (not verified).
    pub quote: Quote,
    /// The certificate's Ed25519 public key.
    pub public_key: [u8; 32],
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// SHA-256 of the certificate DER.
    pub fingerprint: [u8; 32],
}

/// Reads an RA-TLS certificate's claims, quote, key and validity without verifying anything
/// but the structure (our two critical extensions, an Ed25519 key).
pub fn inspect_certificate(der: &[u8]) -> Result<CertificateContents, RatlsError> {
    let cert = parse(der)?;
    contents(der, &cert)
}

/// Verifies a peer's RA-TLS certificate at time `now` and applies `policy`.
///
/// Checks, in order: X.509 structure; exactly our two extensions are critical and present
/// once; Ed25519 key and signature; self-signed; validity window; the quote verifies;
/// its report data is `SHA-512(claims extension bytes)`; the claims' key is the certificate's
/// key; the policy accepts the quote.
pub fn verify_certificate(
    der: &[u8],
    verifier: &Verifier,
    policy: &Policy,
    now: SystemTime,
) -> Result<PeerIdentity, RatlsError> {
    let (peer, quote) = verify_attested(der, verifier, now)?;
    policy.check(&quote).map_err(RatlsError::Policy)?;
    Ok(peer)
}

/// Everything in [`verify_certificate`] except the policy; the verified quote is returned so
/// a cache can re-apply a policy that may change later.
pub(crate) fn verify_attested(
    der: &[u8],
    verifier: &Verifier,
    now: SystemTime,
) -> Result<(PeerIdentity, VerifiedQuote), RatlsError> {
    let cert = parse(der)?;
    let c = contents(der, &cert)?;

    // The algorithm appears twice (inside and outside the signed part); both must be Ed25519.
    for alg in [
        &cert.signature_algorithm.algorithm,
        &cert.tbs_certificate.signature.algorithm,
    ] {
        let oid = alg.to_id_string();
        if oid != ED25519_OID {
            return Err(RatlsError::NotEd25519 {
                what: "signature",
                oid,
            });
        }
    }
    let key = VerifyingKey::from_bytes(&c.public_key).map_err(|_| RatlsError::NotSelfSigned)?;
    let sig =
        Signature::from_slice(&cert.signature_value.data).map_err(|_| RatlsError::NotSelfSigned)?;
    key.verify_strict(cert.tbs_certificate.as_ref(), &sig)
        .map_err(|_| RatlsError::NotSelfSigned)?;

    let now_s = unix(now);
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if now_s < not_before {
        return Err(RatlsError::NotYetValid {
            not_before,
            now: now_s,
        });
    }
    if now_s >= not_after {
        return Err(RatlsError::Expired {
            not_after,
            now: now_s,
        });
    }
    let max = i64::try_from((MAX_VALIDITY + CLOCK_SKEW_ALLOWANCE).as_secs()).unwrap_or(i64::MAX);
    let seconds = not_after.saturating_sub(not_before);
    if seconds > max {
        return Err(RatlsError::LifetimeTooLong { seconds, max });
    }

    let verified = verifier.verify(&c.quote).map_err(RatlsError::Quote)?;
    if verified.report_data != report_data_for(&c.claims_json) {
        return Err(RatlsError::ReportDataMismatch);
    }
    if c.claims.public_key != c.public_key {
        return Err(RatlsError::PublicKeyMismatch {
            claimed: hex::encode(c.claims.public_key),
            actual: hex::encode(c.public_key),
        });
    }
    let peer = PeerIdentity {
        kind: verified.kind,
        image_hash: verified.image_hash,
        measurements: verified.measurements,
        claims: c.claims,
        cert_fingerprint: c.fingerprint,
        public_key: c.public_key,
        not_after: c.not_after,
    };
    Ok((peer, verified))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, RatlsError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| RatlsError::CertificateParse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RatlsError::CertificateParse(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(cert)
}

fn contents(der: &[u8], cert: &X509Certificate<'_>) -> Result<CertificateContents, RatlsError> {
    let mut quote_ext = None;
    let mut claims_ext = None;
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        let (slot, name) = match oid.as_str() {
            QUOTE_OID_STR => (&mut quote_ext, "quote"),
            CLAIMS_OID_STR => (&mut claims_ext, "claims"),
            _ if ext.critical => return Err(RatlsError::UnexpectedCriticalExtension(oid)),
            _ => continue,
        };
        if !ext.critical {
            return Err(RatlsError::ExtensionNotCritical(name));
        }
        if slot.replace(ext.value).is_some() {
            return Err(RatlsError::DuplicateExtension(name));
        }
    }
    let quote_bytes = quote_ext.ok_or(RatlsError::MissingExtension {
        name: "quote",
        oid: QUOTE_OID_STR,
    })?;
    let claims_json = claims_ext.ok_or(RatlsError::MissingExtension {
        name: "claims",
        oid: CLAIMS_OID_STR,
    })?;

    let spki = cert.public_key();
    let key_alg = spki.algorithm.algorithm.to_id_string();
    if key_alg != ED25519_OID {
        return Err(RatlsError::NotEd25519 {
            what: "key",
            oid: key_alg,
        });
    }
    let public_key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| RatlsError::CertificateParse("Ed25519 public key is not 32 bytes".into()))?;

    Ok(CertificateContents {
        claims: Claims::from_json(claims_json)?,
        claims_json: claims_json.to_vec(),
        quote: Quote::from_bytes(quote_bytes).map_err(RatlsError::Quote)?,
        public_key,
        not_before: from_unix(cert.validity().not_before.timestamp())?,
        not_after: from_unix(cert.validity().not_after.timestamp())?,
        fingerprint: Sha256::digest(der).into(),
    })
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn from_unix(secs: i64) -> Result<SystemTime, RatlsError> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    t.ok_or_else(|| RatlsError::CertificateParse(format!("time {secs} is out of range")))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use cocoon_tee::{Attester, FakeAttester, NoneAttester, TeeError};
    use rcgen::{
        CertificateParams, CustomExtension, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
    };

    use super::*;
    use crate::identity::certificate_params;
    use crate::{Identity, CLOCK_SKEW_ALLOWANCE, DEFAULT_VALIDITY};

    const HOUR: Duration = Duration::from_secs(3600);

    fn fake_policy() -> Policy {
        Policy::any_image(AttestationKind::Fake)
    }

    /// Claims for `key` and a quote from `attester` bound to them.
    fn attest(attester: &dyn Attester, key: &KeyPair) -> (Vec<u8>, Vec<u8>) {
        let claims = Claims {
            public_key: key.public_key_raw().try_into().unwrap(),
            role: "worker".into(),
            attributes: BTreeMap::new(),
        }
        .to_json();
        let quote = attester.quote(&report_data_for(&claims)).unwrap();
        (claims, quote.to_bytes())
    }

    fn params(claims: &[u8], quote: &[u8]) -> CertificateParams {
        let now = SystemTime::now();
        certificate_params("worker", quote, claims, now - HOUR, now + HOUR).unwrap()
    }

    fn ed25519() -> KeyPair {
        KeyPair::generate_for(&PKCS_ED25519).unwrap()
    }

    fn verify(der: &[u8]) -> Result<PeerIdentity, RatlsError> {
        verify_certificate(der, &Verifier::new(), &fake_policy(), SystemTime::now())
    }

    #[test]
    fn generated_identity_verifies() {
        let attester = FakeAttester::from_label("cocoon-worker-dev");
        let attrs = BTreeMap::from([("model".to_owned(), "tiny".to_owned())]);
        let id = Identity::generate(&attester, "worker", attrs, DEFAULT_VALIDITY).unwrap();
        let peer = verify(id.certificate_der()).unwrap();
        assert_eq!(peer.kind, AttestationKind::Fake);
        assert_eq!(peer.image_hash, attester.image_hash());
        assert_eq!(peer.claims, *id.claims());
        assert_eq!(peer.claims.attributes["model"], "tiny");
        assert_eq!(peer.public_key, id.signing_key().verifying_key().to_bytes());
        assert_eq!(peer.cert_fingerprint, id.fingerprint());
        assert_eq!(peer.not_after, id.not_after());

        let json = serde_json::to_value(&peer).unwrap();
        assert_eq!(json["kind"], "fake");
        assert_eq!(json["public_key"], hex::encode(peer.public_key));

        let seen = inspect_certificate(id.certificate_der()).unwrap();
        assert_eq!(seen.claims, *id.claims());
        assert_eq!(seen.quote, *id.quote());
        assert_eq!(seen.fingerprint, id.fingerprint());
        // notBefore is set back for clock skew.
        assert!(
            seen.not_before <= SystemTime::now() - CLOCK_SKEW_ALLOWANCE + Duration::from_secs(5)
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_rejected() {
        assert!(matches!(
            verify(b"not a certificate"),
            Err(RatlsError::CertificateParse(_))
        ));
        let id = Identity::generate(&NoneAttester, "x", BTreeMap::new(), HOUR).unwrap();
        let mut der = id.certificate_der().to_vec();
        der.push(0);
        assert!(matches!(verify(&der), Err(RatlsError::CertificateParse(_))));
    }

    #[test]
    fn certificate_without_extensions_is_rejected() {
        let key = ed25519();
        let der = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = verify(der.der()).unwrap_err();
        assert!(
            matches!(err, RatlsError::MissingExtension { name: "quote", .. }),
            "{err}"
        );
    }

    #[test]
    fn extra_critical_extension_is_rejected_but_non_critical_is_fine() {
        let key = ed25519();
        let (claims, quote) = attest(&FakeAttester::from_label("w"), &key);

        let mut p = params(&claims, &quote);
        let mut extra = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0]);
        extra.set_criticality(true);
        p.custom_extensions.push(extra);
        let err = verify(p.self_signed(&key).unwrap().der()).unwrap_err();
        assert!(
            matches!(&err, RatlsError::UnexpectedCriticalExtension(oid) if oid == "1.2.3.4"),
            "{err}"
        );

        let mut p = params(&claims, &quote);
        p.custom_extensions
            .push(CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0]));
        verify(p.self_signed(&key).unwrap().der()).unwrap();
    }

    #[test]
    fn non_critical_or_duplicate_ratls_extension_is_rejected() {
        let key = ed25519();
        let (claims, quote) = attest(&FakeAttester::from_label("w"), &key);

        let mut p = params(&claims, &quote);
        p.custom_extensions[1].set_criticality(false);
        let err = verify(p.self_signed(&key).unwrap().der()).unwrap_err();
        assert!(
            matches!(err, RatlsError::ExtensionNotCritical("claims")),
            "{err}"
        );

        let mut p = params(&claims, &quote);
        let dup = p.custom_extensions[0].clone();
        p.custom_extensions.push(dup);
        // x509-parser may already refuse duplicate extensions; either way it must fail.
        let err = verify(p.self_signed(&key).unwrap().der()).unwrap_err();
        assert!(
            matches!(
                err,
                RatlsError::DuplicateExtension("quote") | RatlsError::CertificateParse(_)
            ),
            "{err}"
        );
    }

    #[test]
    fn quote_bound_to_another_key_is_rejected() {
        let key_a = ed25519();
        let key_b = ed25519();
        let attester = FakeAttester::from_label("w");

        // A's claims and quote, presented in a certificate of key B.
        let (claims_a, quote_a) = attest(&attester, &key_a);
        let der = params(&claims_a, &quote_a).self_signed(&key_b).unwrap();
        let err = verify(der.der()).unwrap_err();
        assert!(matches!(err, RatlsError::PublicKeyMismatch { .. }), "{err}");

        // B's claims, but A's quote (bound to A's claims).
        let (claims_b, _) = attest(&attester, &key_b);
        let der = params(&claims_b, &quote_a).self_signed(&key_b).unwrap();
        let err = verify(der.der()).unwrap_err();
        assert!(matches!(err, RatlsError::ReportDataMismatch), "{err}");
    }

    #[test]
    fn tampered_quote_is_rejected() {
        let key = ed25519();
        let (claims, mut quote) = attest(&FakeAttester::from_label("w"), &key);
        quote[10] ^= 1; // inside the fake quote's measurements
        let der = params(&claims, &quote).self_signed(&key).unwrap();
        let err = verify(der.der()).unwrap_err();
        assert!(
            matches!(err, RatlsError::Quote(TeeError::BadFakeSignature)),
            "{err}"
        );
    }

    #[test]
    fn ecdsa_certificate_is_rejected() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let (claims, quote) = attest(&FakeAttester::from_label("w"), &ed25519());
        let der = params(&claims, &quote).self_signed(&key).unwrap();
        let err = verify(der.der()).unwrap_err();
        assert!(
            matches!(err, RatlsError::NotEd25519 { what: "key", .. }),
            "{err}"
        );
    }

    #[test]
    fn certificate_signed_by_another_key_is_rejected() {
        let key = ed25519();
        let (claims, quote) = attest(&FakeAttester::from_label("w"), &key);
        let other = ed25519();
        let issuer = Issuer::new(CertificateParams::new(Vec::<String>::new()).unwrap(), other);
        let der = params(&claims, &quote).signed_by(&key, &issuer).unwrap();
        let err = verify(der.der()).unwrap_err();
        assert!(matches!(err, RatlsError::NotSelfSigned), "{err}");
    }

    #[test]
    fn validity_window_is_enforced() {
        let id = Identity::generate(
            &FakeAttester::from_label("w"),
            "worker",
            BTreeMap::new(),
            HOUR,
        )
        .unwrap();
        let der = id.certificate_der();
        let (v, p) = (Verifier::new(), fake_policy());
        let err = verify_certificate(der, &v, &p, id.not_after()).unwrap_err();
        assert!(matches!(err, RatlsError::Expired { .. }), "{err}");
        let past = SystemTime::now() - CLOCK_SKEW_ALLOWANCE - Duration::from_secs(60);
        let err = verify_certificate(der, &v, &p, past).unwrap_err();
        assert!(matches!(err, RatlsError::NotYetValid { .. }), "{err}");
        verify_certificate(der, &v, &p, id.not_after() - Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_certificate_living_longer_than_peers_accept_is_refused() {
        // A peer choosing a year-long certificate would keep its verdict for a year.
        let key = ed25519();
        let (claims, quote) = attest(&FakeAttester::from_label("w"), &key);
        let now = SystemTime::now();
        let year = Duration::from_secs(365 * 24 * 3600);
        let der = certificate_params("worker", &quote, &claims, now - HOUR, now + year)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = verify(der.der()).unwrap_err();
        assert!(matches!(err, RatlsError::LifetimeTooLong { .. }), "{err}");
        // The longest a node makes, with its clock-skew allowance, still passes.
        let longest = Identity::generate(
            &FakeAttester::from_label("w"),
            "worker",
            BTreeMap::new(),
            crate::MAX_VALIDITY,
        )
        .unwrap();
        verify(longest.certificate_der()).unwrap();
        assert!(Identity::generate(
            &FakeAttester::from_label("w"),
            "worker",
            BTreeMap::new(),
            crate::MAX_VALIDITY + Duration::from_secs(1),
        )
        .is_err());
    }

    #[test]
    fn policy_is_applied() {
        let worker = FakeAttester::from_label("worker");
        let id = Identity::generate(&worker, "worker", BTreeMap::new(), HOUR).unwrap();
        let other = FakeAttester::from_label("other").image_hash();
        let policy = Policy {
            allowed_image_hashes: BTreeSet::from([other]),
            min_kind: AttestationKind::Fake,
        };
        let err = verify_certificate(
            id.certificate_der(),
            &Verifier::new(),
            &policy,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            matches!(err, RatlsError::Policy(TeeError::ImageHashNotAllowed(h)) if h == worker.image_hash()),
            "{err}"
        );
        assert!(err.to_string().contains("is not in the allowed list"));

        let none = Identity::generate(&NoneAttester, "client", BTreeMap::new(), HOUR).unwrap();
        let err = verify(none.certificate_der()).unwrap_err();
        assert!(
            matches!(err, RatlsError::Policy(TeeError::KindBelowMinimum { .. })),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("attestation kind none is below the policy's minimum fake"));
        // The same certificate passes a development policy.
        verify_certificate(
            none.certificate_der(),
            &Verifier::new(),
            &Policy::any_image(AttestationKind::None),
            SystemTime::now(),
        )
        .unwrap();
    }
}
