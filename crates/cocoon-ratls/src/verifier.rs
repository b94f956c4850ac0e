//! rustls glue: certificate verifiers that run [`verify_certificate`](crate::verify_certificate)
//! with a verification cache, and resolvers that serve the current [`SharedIdentity`].

use std::collections::HashMap;
use std::fmt;
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

/// Verifies peer certificates against a live policy, caching quote verification by
/// certificate fingerprint until the certificate expires.
pub(crate) struct PeerCheck {
    verifier: Arc<Verifier>,
    policy: SharedPolicy,
    algorithms: WebPkiSupportedAlgorithms,
    cache: Mutex<HashMap<[u8; 32], (PeerIdentity, VerifiedQuote)>>,
    /// `"server"` or `"client"`: which side's verifier this is, for logs.
    side: &'static str,
}

impl PeerCheck {
    pub(crate) fn new(
        verifier: Arc<Verifier>,
        policy: SharedPolicy,
        algorithms: WebPkiSupportedAlgorithms,
        side: &'static str,
    ) -> Self {
        PeerCheck {
            verifier,
            policy,
            algorithms,
            cache: Mutex::new(HashMap::new()),
            side,
        }
    }

    /// Verifies `der` at `now`. A rejection is only traced here: it reaches the caller of
    /// `connect`/`accept` as the handshake's error, and the caller logs it once (rate-limited
    /// where a port can be flooded).
    pub(crate) fn check(&self, der: &[u8], now: SystemTime) -> Result<PeerIdentity, RatlsError> {
        let result = self.check_inner(der, now);
        if let Err(e) = &result {
            tracing::debug!(side = self.side, error = %e, "rejected RA-TLS peer certificate");
        }
        result
    }

    fn check_inner(&self, der: &[u8], now: SystemTime) -> Result<PeerIdentity, RatlsError> {
        let fingerprint: [u8; 32] = Sha256::digest(der).into();
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&fingerprint).cloned())
            .filter(|(peer, _)| now < peer.not_after);
        let (peer, quote) = match cached {
            Some(hit) => hit,
            None => {
                let fresh = verify_attested(der, &self.verifier, now)?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_LIMIT {
                        cache.retain(|_, (p, _)| now < p.not_after);
                        if cache.len() >= CACHE_LIMIT {
                            cache.clear();
                        }
                    }
                    cache.insert(fingerprint, fresh.clone());
                }
                fresh
            }
        };
        // The policy is applied on every use: it may have changed since the entry was cached.
        self.policy
            .load()
            .check(&quote)
            .map_err(RatlsError::Policy)?;
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
