//! Attested TLS links: [`Connector`] dials, [`Acceptor`] answers; both require and verify the
//! peer's RA-TLS certificate and return its [`PeerIdentity`].
//!
//! **Trust only after a first exchange.** In TLS 1.3 the client finishes its handshake before
//! the server has judged the client certificate. A client whose certificate the server refuses
//! sees `connect` succeed and then its first read fail. Callers (e.g. HTTP/2 over the link)
//! must treat the link as established only after a first application-level exchange.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cocoon_tee::Verifier;
use rustls::client::Resumption;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::ServerName;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::verifier::{IdentityResolver, PeerCheck, RatlsClientVerifier, RatlsServerVerifier};
use crate::{PeerIdentity, RatlsError, SharedIdentity, SharedPolicy};

/// The ALPN protocol spoken over every link.
pub const ALPN_H2: &[u8] = b"h2";

/// Default limit for TCP connect plus TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring provider restricted to the TLS 1.3 AES-GCM suites.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        ..ring::default_provider()
    })
}

/// Dials peers over attested TLS (the TLS client side).
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    check: Arc<PeerCheck>,
    handshake_timeout: Duration,
}

impl Connector {
    /// A connector presenting `identity` and accepting servers that pass `policy` as checked by
    /// `verifier`. Both shared values are read at each handshake, so updates apply live.
    pub fn new(
        identity: SharedIdentity,
        policy: SharedPolicy,
        verifier: Arc<Verifier>,
    ) -> Result<Self, RatlsError> {
        let provider = provider();
        let check = Arc::new(PeerCheck::new(
            verifier,
            policy,
            provider.signature_verification_algorithms,
            "client",
        ));
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RatlsServerVerifier(check.clone())))
            .with_client_cert_resolver(Arc::new(IdentityResolver(identity)));
        // Every connection is attested afresh.
        config.resumption = Resumption::disabled();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Connector {
            tls: TlsConnector::from(Arc::new(config)),
            check,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// Sets the limit for TCP connect plus handshake (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Dials `addr` (`host:port`), sets `TCP_NODELAY`, runs the attested handshake and returns
    /// the stream with the server's verified identity. See the module docs on when the link
    /// may be trusted.
    pub async fn connect(
        &self,
        addr: &str,
    ) -> Result<(client::TlsStream<TcpStream>, PeerIdentity), RatlsError> {
        let server_name = server_name(addr)?;
        let dial = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| RatlsError::Connect {
                    addr: addr.to_owned(),
                    source,
                })?;
            tcp.set_nodelay(true)
                .map_err(|source| RatlsError::Connect {
                    addr: addr.to_owned(),
                    source,
                })?;
            self.tls
                .connect(server_name, tcp)
                .await
                .map_err(handshake_error)
        };
        let tls = tokio::time::timeout(self.handshake_timeout, dial)
            .await
            .map_err(|_| RatlsError::HandshakeTimeout(self.handshake_timeout))??;
        let peer = peer_identity(&self.check, tls.get_ref().1.peer_certificates())?;
        Ok((tls, peer))
    }
}

/// Answers attested TLS connections (the TLS server side).
#[derive(Clone)]
pub struct Acceptor {
    tls: TlsAcceptor,
    check: Arc<PeerCheck>,
    handshake_timeout: Duration,
}

impl Acceptor {
    /// An acceptor presenting `identity` and requiring clients that pass `policy` as checked
    /// by `verifier`. Both shared values are read at each handshake, so updates apply live.
    pub fn new(
        identity: SharedIdentity,
        policy: SharedPolicy,
        verifier: Arc<Verifier>,
    ) -> Result<Self, RatlsError> {
        let provider = provider();
        let check = Arc::new(PeerCheck::new(
            verifier,
            policy,
            provider.signature_verification_algorithms,
            "server",
        ));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(RatlsClientVerifier(check.clone())))
            .with_cert_resolver(Arc::new(IdentityResolver(identity)));
        // No resumption: no tickets, no session cache.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Acceptor {
            tls: TlsAcceptor::from(Arc::new(config)),
            check,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// Sets the handshake time limit (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets `TCP_NODELAY` on `tcp`, runs the attested handshake and returns the stream with
    /// the client's verified identity.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<(server::TlsStream<TcpStream>, PeerIdentity), RatlsError> {
        // Best effort: a socket that refuses NODELAY still works, only slower.
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(self.handshake_timeout, self.tls.accept(tcp))
            .await
            .map_err(|_| RatlsError::HandshakeTimeout(self.handshake_timeout))?
            .map_err(handshake_error)?;
        let peer = peer_identity(&self.check, tls.get_ref().1.peer_certificates())?;
        Ok((tls, peer))
    }
}

/// The verified identity of the peer whose certificate chain is `certs` (a cache hit: the
/// verifier checked it during the handshake).
fn peer_identity(
    check: &PeerCheck,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<PeerIdentity, RatlsError> {
    let cert = certs
        .and_then(|c| c.first())
        .ok_or(RatlsError::NoPeerCertificate)?;
    check.check(cert, SystemTime::now())
}

/// Recovers our own rejection reason from a handshake error, if that is what it was.
fn handshake_error(e: std::io::Error) -> RatlsError {
    let ours = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<RatlsError>().map(|r| r.to_string())
            }
            _ => None,
        });
    match ours {
        Some(reason) => RatlsError::PeerRejected(reason),
        None => RatlsError::Handshake(e),
    }
}

/// The TLS server name for `host:port` (only used for SNI; never checked).
fn server_name(addr: &str) -> Result<ServerName<'static>, RatlsError> {
    let invalid = || RatlsError::InvalidAddress(addr.to_owned());
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    port.parse::<u16>().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| invalid())
}
