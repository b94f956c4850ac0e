//! rustls glue: certificate verifiers that run [`verify_certificate`](crate::verify_certificate)
//! with a verification cache, and resolvers that serve the current [`SharedIdentity`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cocoon_tee::{VerifiedQuote, Verifier};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};
use sha2::{Digest, Sha256};

use crate::certificate::verify_attested;
use crate::{PeerIdentity, RatlsError, SharedIdentity, SharedPolicy};

/// Cached verifications beyond this count trigger eviction of expired entries, and if that
/// is not enough, of everything (a re-verification is only a cost, never a risk).
const CACHE_LIMIT: usize = 4096;

/// The longest a quote's verdict is reused: refreshed TCB status and CRLs reach a peer whose
/// certificate is still valid no later than this.
pub const MAX_VERDICT_AGE: Duration = Duration::from_secs(5 * 60);

/// A cached verification and until when it may be reused.
type Verdict = (PeerIdentity, VerifiedQuote, SystemTime);

/// Until when a verification made at `now` may be reused: never past the certificate's end, the
/// collateral it was judged with ([`VerifiedQuote::valid_until`]) or `max_age`.
fn reuse_until(
    peer: &PeerIdentity,
    quote: &VerifiedQuote,
    now: SystemTime,
    max_age: Duration,
) -> SystemTime {
    peer.not_after.min(judged_until(quote, now, max_age))
}

/// Until when a judgment made at `now` holds, the certificate's end aside: no later than `max_age`
/// after it, nor than the collateral it was made with.
fn judged_until(quote: &VerifiedQuote, now: SystemTime, max_age: Duration) -> SystemTime {
    // `now` may be any time a caller checks at (a receipt's date): no unchecked time arithmetic.
    let mut until = now.checked_add(max_age).unwrap_or(now);
    if let Some(collateral) = quote.valid_until {
        let collateral = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(collateral))
            .unwrap_or(now);
        until = until.min(collateral);
    }
    until
}

/// Verifies peer certificates against a live policy and the one role the link is for, caching
/// quote verification by certificate fingerprint (see [`reuse_until`]).
pub(crate) struct PeerCheck {
    verifier: Arc<Verifier>,
    policy: SharedPolicy,
    /// The role a peer's claims must name (`"worker"` on a proxy's worker port, …).
    role: String,
    algorithms: WebPkiSupportedAlgorithms,
    cache: Mutex<HashMap<[u8; 32], Verdict>>,
    /// `"server"` or `"client"`: which side's verifier this is, for logs.
    side: &'static str,
    /// The longest a verdict is reused, or a live link's peer goes without being judged again, in
    /// milliseconds (atomic: the TLS verifiers share this check).
    max_verdict_age_ms: AtomicU64,
}

impl PeerCheck {
    pub(crate) fn new(
        verifier: Arc<Verifier>,
        policy: SharedPolicy,
        role: &str,
        algorithms: WebPkiSupportedAlgorithms,
        side: &'static str,
    ) -> Self {
        PeerCheck {
            verifier,
            policy,
            role: role.to_owned(),
            algorithms,
            cache: Mutex::new(HashMap::new()),
            side,
            max_verdict_age_ms: AtomicU64::new(MAX_VERDICT_AGE.as_millis() as u64),
        }
    }

    /// Reuses verdicts, and leaves live links' peers unjudged, for at most `age` (default
    /// [`MAX_VERDICT_AGE`]).
    pub(crate) fn set_max_verdict_age(&self, age: Duration) {
        let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self.max_verdict_age_ms.store(ms, Ordering::Relaxed);
    }

    fn max_verdict_age(&self) -> Duration {
        Duration::from_millis(self.max_verdict_age_ms.load(Ordering::Relaxed))
    }

    /// Verifies `der` at `now`. A rejection is only traced here: it reaches the caller of
    /// `connect`/`accept` as the handshake's error, and the caller logs it once (rate-limited
    /// where a port can be flooded).
    pub(crate) fn check(&self, der: &[u8], now: SystemTime) -> Result<PeerIdentity, RatlsError> {
        self.check_with_expiry(der, now).map(|(peer, _)| peer)
    }

    /// [`check`](Self::check), also saying until when the verdict may be reused.
    pub(crate) fn check_with_expiry(
        &self,
        der: &[u8],
        now: SystemTime,
    ) -> Result<(PeerIdentity, SystemTime), RatlsError> {
        let result = self.check_inner(der, now);
        if let Err(e) = &result {
            tracing::debug!(side = self.side, error = %e, "rejected RA-TLS peer certificate");
        }
        result
    }

    fn check_inner(
        &self,
        der: &[u8],
        now: SystemTime,
    ) -> Result<(PeerIdentity, SystemTime), RatlsError> {
        let fingerprint: [u8; 32] = Sha256::digest(der).into();
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&fingerprint).cloned())
            .filter(|(_, _, until)| now < *until);
        let (peer, quote, until) = match cached {
            Some(hit) => hit,
            None => {
                let (peer, quote) = verify_attested(der, &self.verifier, now)?;
                let until = reuse_until(&peer, &quote, now, self.max_verdict_age());
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_LIMIT {
                        cache.retain(|_, (_, _, until)| now < *until);
                        if cache.len() >= CACHE_LIMIT {
                            cache.clear();
                        }
                    }
                    cache.insert(fingerprint, (peer.clone(), quote.clone(), until));
                }
                (peer, quote, until)
            }
        };
        self.admit(peer, &quote).map(|peer| (peer, until))
    }

    /// Judges a live link's peer again, whatever is cached: its certificate as of `judged_at`, its
    /// quote with the collateral held now, the policy and role as they are now. Returns the
    /// identity and until when this judgment holds (see [`crate::rejudge`]).
    pub(crate) fn rejudge(
        &self,
        der: &[u8],
        judged_at: SystemTime,
        now: SystemTime,
    ) -> Result<(PeerIdentity, SystemTime), RatlsError> {
        let (peer, quote) = verify_attested(der, &self.verifier, judged_at)?;
        let until = judged_until(&quote, now, self.max_verdict_age());
        self.admit(peer, &quote).map(|peer| (peer, until))
    }

    /// Applies what may change after a quote was verified: the policy and the link's role.
    fn admit(&self, peer: PeerIdentity, quote: &VerifiedQuote) -> Result<PeerIdentity, RatlsError> {
        // The policy is applied on every use: it may have changed since the entry was cached.
        self.policy
            .load()
            .check(quote)
            .map_err(RatlsError::Policy)?;
        // The role is attested (claims are bound into the quote), so a peer cannot join a port
        // meant for another role by saying so.
        if peer.claims.role != self.role {
            return Err(RatlsError::WrongRole {
                expected: self.role.clone(),
                claimed: peer.claims.role,
            });
        }
        Ok(peer)
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(Error::PeerIncompatible(
                rustls::PeerIncompatible::NoSignatureSchemesInCommon,
            ));
        }
        // webpki refuses our critical extensions, so check against the raw key instead.
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let spki = SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
    }
}

/// Wraps a rejection so rustls aborts the handshake and our caller can recover the reason.
fn rejection(e: RatlsError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn to_system_time(now: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(now.as_secs()))
        .unwrap_or_else(SystemTime::now)
}

fn tls12_refused() -> Result<HandshakeSignatureValid, Error> {
    // Both configs are TLS 1.3 only; reaching this would be a rustls bug.
    Err(Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// Client-side verifier of the server's RA-TLS certificate. Server names are ignored:
/// peers are identified by attestation and claims, not DNS.
pub(crate) struct RatlsServerVerifier(pub(crate) Arc<PeerCheck>);

impl fmt::Debug for RatlsServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RatlsServerVerifier")
    }
}

impl ServerCertVerifier for RatlsServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.0
            .check(end_entity, to_system_time(now))
            .map(|_| ServerCertVerified::assertion())
            .map_err(rejection)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server-side verifier of the client's RA-TLS certificate; client certificates are mandatory.
pub(crate) struct RatlsClientVerifier(pub(crate) Arc<PeerCheck>);

impl fmt::Debug for RatlsClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RatlsClientVerifier")
    }
}

impl ClientCertVerifier for RatlsClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Self-signed certificates have no CA to hint at.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.0
            .check(end_entity, to_system_time(now))
            .map(|_| ClientCertVerified::assertion())
            .map_err(rejection)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Serves the current identity's certificate, on either side.
pub(crate) struct IdentityResolver(pub(crate) SharedIdentity);

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityResolver")
    }
}

impl ResolvesServerCert for IdentityResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().certified_key())
    }
}

impl ResolvesClientCert for IdentityResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        sigschemes
            .contains(&SignatureScheme::ED25519)
            .then(|| self.0.load().certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arc_swap::ArcSwap;
    use cocoon_tee::{AttestationKind, FakeAttester, Policy};

    use super::*;
    use crate::Identity;

    fn check() -> PeerCheck {
        PeerCheck::new(
            Arc::new(Verifier::new()),
            Arc::new(ArcSwap::from_pointee(Policy::any_image(
                AttestationKind::Fake,
            ))),
            "worker",
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
            "server",
        )
    }

    #[test]
    fn a_verdict_is_reused_no_longer_than_its_collateral_or_the_maximum_age() {
        let id = Identity::generate(
            &FakeAttester::from_label("w"),
            "worker",
            BTreeMap::new(),
            crate::DEFAULT_VALIDITY,
        )
        .unwrap();
        let now = SystemTime::now();
        let check = check();
        let peer = check.check(id.certificate_der(), now).unwrap();
        let cached_until =
            |check: &PeerCheck| check.cache.lock().unwrap()[&peer.cert_fingerprint].2;
        // The certificate lives a day; its verdict, at most `MAX_VERDICT_AGE`.
        assert_eq!(cached_until(&check), now + MAX_VERDICT_AGE);
        // A verdict judged with collateral that expires sooner ends with it.
        let (_, mut quote) = verify_attested(id.certificate_der(), &Verifier::new(), now).unwrap();
        let soon = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        quote.valid_until = Some(soon);
        assert_eq!(
            reuse_until(&peer, &quote, now, MAX_VERDICT_AGE),
            SystemTime::UNIX_EPOCH + Duration::from_secs(soon)
        );
        // Checked at the end of time (a peer-chosen date): no overflow, no reuse beyond it.
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        quote.valid_until = Some(u64::MAX);
        assert!(reuse_until(&peer, &quote, end, MAX_VERDICT_AGE) <= end);
        // Past its reuse time, the certificate is verified afresh (and a fresh verdict cached).
        let later = now + MAX_VERDICT_AGE + Duration::from_secs(1);
        check.check(id.certificate_der(), later).unwrap();
        assert_eq!(cached_until(&check), later + MAX_VERDICT_AGE);
    }
}
