//! A node's own RA-TLS identity: a fresh Ed25519 key and an attested self-signed certificate.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use cocoon_tee::{Attester, Policy, Quote};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair, PKCS_ED25519};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::claims::report_data_for;
use crate::{Claims, RatlsError, CLAIMS_OID, QUOTE_OID};

/// A node's identity shared with its TLS configs; store a new one to rotate the certificate
/// (new handshakes pick it up, established links are unaffected).
pub type SharedIdentity = Arc<ArcSwap<Identity>>;

/// The policy applied to peers; store a new one to apply registry changes to new handshakes.
pub type SharedPolicy = Arc<ArcSwap<Policy>>;

/// Default certificate lifetime.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest certificate lifetime a peer accepts (plus [`CLOCK_SKEW_ALLOWANCE`]): a verdict on a
/// certificate is reused while it is valid, so a longer one would keep a peer judged once, with
/// collateral and a registry long out of date.
pub const MAX_VALIDITY: Duration = Duration::from_secs(2 * 24 * 60 * 60);

/// How far in the past `notBefore` is set, to tolerate peers whose clocks run behind.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// An Ed25519 key with its attested self-signed certificate.
pub struct Identity {
    signing_key: SigningKey,
    certificate: CertificateDer<'static>,
    claims: Claims,
    quote: Quote,
    fingerprint: [u8; 32],
    not_after: SystemTime,
    certified_key: Arc<CertifiedKey>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the signing key.
        f.debug_struct("Identity")
            .field("claims", &self.claims)
            .field("kind", &self.quote.kind)
            .field("fingerprint", &hex::encode(self.fingerprint))
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh key, has `attester` quote `SHA-512(claims)`, and self-signs a
    /// certificate valid from a little before now ([`CLOCK_SKEW_ALLOWANCE`]) until
    /// now + `validity` (use [`DEFAULT_VALIDITY`] unless there is a reason not to).
    pub fn generate(
        attester: &dyn Attester,
        role: &str,
        attributes: BTreeMap<String, String>,
        validity: Duration,
    ) -> Result<Identity, RatlsError> {
        let signing_key = SigningKey::generate(&mut rand::rngs::OsRng);
        let claims = Claims {
            public_key: signing_key.verifying_key().to_bytes(),
            role: role.to_owned(),
            attributes,
        };
        let claims_json = claims.to_json();
        let quote = attester
            .quote(&report_data_for(&claims_json))
            .map_err(RatlsError::Attestation)?;

        if validity > MAX_VALIDITY {
            return Err(RatlsError::Identity(format!(
                "validity {validity:?} is longer than peers accept ({MAX_VALIDITY:?})"
            )));
        }
        let now = SystemTime::now();
        let not_before = now
            .checked_sub(CLOCK_SKEW_ALLOWANCE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let not_after = now
            .checked_add(validity)
            .ok_or_else(|| RatlsError::Identity(format!("validity {validity:?} is too long")))?;
        let params =
            certificate_params(role, &quote.to_bytes(), &claims_json, not_before, not_after)?;

        let pkcs8 = signing_key
            .to_pkcs8_der()
            .map_err(|e| RatlsError::Identity(format!("cannot encode key: {e}")))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &PKCS_ED25519)
            .map_err(|e| RatlsError::Identity(format!("cannot load key: {e}")))?;
        let certificate = params
            .self_signed(&key_pair)
            .map_err(|e| RatlsError::Identity(format!("cannot sign certificate: {e}")))?
            .der()
            .clone();

        let tls_key = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8))?;
        // CertifiedKey::from_der would re-parse the certificate with webpki, which refuses our
        // critical extensions; the key is ours, so no consistency check is needed.
        let certified_key = Arc::new(CertifiedKey::new(vec![certificate.clone()], tls_key));

        Ok(Identity {
            fingerprint: Sha256::digest(&certificate).into(),
            // X.509 stores whole seconds; report what the certificate says.
            not_after: truncate_to_seconds(not_after),
            signing_key,
            certificate,
            claims,
            quote,
            certified_key,
        })
    }

    /// Wraps this identity for sharing with [`crate::Connector`]/[`crate::Acceptor`].
    pub fn into_shared(self) -> SharedIdentity {
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// The certificate, DER-encoded.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// The node key (also usable to sign application messages the peer can tie to this link).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// SHA-256 of the certificate DER.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The claims in the certificate.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The quote in the certificate.
    pub fn quote(&self) -> &Quote {
        &self.quote
    }

    /// End of the certificate's validity; rotate before it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The certificate and key in the form rustls serves.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified_key.clone()
    }

    /// This identity's certificate served with another identity's TLS key: a thief holding
    /// a certificate but not its key.
    #[cfg(test)]
    pub(crate) fn with_stolen_certificate(self, victim: &Identity) -> Identity {
        let key = self.certified_key.key.clone();
        Identity {
            certified_key: Arc::new(CertifiedKey::new(vec![victim.certificate.clone()], key)),
            ..self
        }
    }
}

/// Certificate parameters for an RA-TLS certificate: subject `CN=cocoon <role>`, no SANs
/// (peers are named by attestation, not DNS), and the two critical extensions.
pub(crate) fn certificate_params(
    role: &str,
    quote_bytes: &[u8],
    claims_json: &[u8],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, RatlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| RatlsError::Identity(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("cocoon {role}"));
    params.not_before = time::OffsetDateTime::from(truncate_to_seconds(not_before));
    params.not_after = time::OffsetDateTime::from(truncate_to_seconds(not_after));
    let mut serial = [0u8; 16];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut serial[..]);
    serial[0] &= 0x7f; // keep the DER INTEGER positive
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    for (oid, value) in [(QUOTE_OID, quote_bytes), (CLAIMS_OID, claims_json)] {
        let mut ext = CustomExtension::from_oid_content(oid, value.to_vec());
        ext.set_criticality(true);
        params.custom_extensions.push(ext);
    }
    Ok(params)
}

fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}
