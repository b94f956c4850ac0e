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

use crate::rejudge::PeerWatch;
use crate::verifier::{IdentityResolver, PeerCheck, RatlsClientVerifier, RatlsServerVerifier};
use crate::{PeerIdentity, RatlsError, SharedIdentity, SharedPolicy};

/// The ALPN protocol spoken over every link.
pub const ALPN_H2: &[u8] = b"h2";

/// Default limit for TCP connect plus TLS handshake, when dialing.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for a handshake on an accepted connection: a peer that has connected needs no
/// more than a few round trips, and a half-open connection must not hold a port's resources long.
pub const DEFAULT_ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// A connector presenting `identity` and accepting servers whose claims name `peer_role` and
    /// that pass `policy` as checked by `verifier`. Both shared values are read at each
    /// handshake, so updates apply live.
    pub fn new(
        identity: SharedIdentity,
        policy: SharedPolicy,
        verifier: Arc<Verifier>,
        peer_role: &str,
    ) -> Result<Self, RatlsError> {
        let provider = provider();
        let check = Arc::new(PeerCheck::new(
            verifier,
            policy,
            peer_role,
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

    /// A watch that judges the peer of `stream` (one of this connector's links) again whenever its
    /// verdict lapses, for as long as the link lives (see [`PeerWatch`]).
    pub fn watch(&self, stream: &client::TlsStream<TcpStream>) -> Result<PeerWatch, RatlsError> {
        PeerWatch::new(self.check.clone(), stream.get_ref().1.peer_certificates())
    }

    /// Reuses verdicts, and leaves live links' peers unjudged, for at most `age` (default
    /// [`MAX_VERDICT_AGE`](crate::MAX_VERDICT_AGE)); shorter in tests.
    pub fn with_max_verdict_age(self, age: Duration) -> Self {
        self.check.set_max_verdict_age(age);
        self
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
    /// An acceptor presenting `identity` and requiring clients whose claims name `peer_role` and
    /// that pass `policy` as checked by `verifier`. Both shared values are read at each
    /// handshake, so updates apply live.
    pub fn new(
        identity: SharedIdentity,
        policy: SharedPolicy,
        verifier: Arc<Verifier>,
        peer_role: &str,
    ) -> Result<Self, RatlsError> {
        let provider = provider();
        let check = Arc::new(PeerCheck::new(
            verifier,
            policy,
            peer_role,
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
            handshake_timeout: DEFAULT_ACCEPT_TIMEOUT,
        })
    }

    /// A watch that judges the peer of `stream` (one of this acceptor's links) again whenever its
    /// verdict lapses, for as long as the link lives (see [`PeerWatch`]).
    pub fn watch(&self, stream: &server::TlsStream<TcpStream>) -> Result<PeerWatch, RatlsError> {
        PeerWatch::new(self.check.clone(), stream.get_ref().1.peer_certificates())
    }

    /// Reuses verdicts, and leaves live links' peers unjudged, for at most `age` (default
    /// [`MAX_VERDICT_AGE`](crate::MAX_VERDICT_AGE)); shorter in tests.
    pub fn with_max_verdict_age(self, age: Duration) -> Self {
        self.check.set_max_verdict_age(age);
        self
    }

    /// Sets the handshake time limit (default [`DEFAULT_ACCEPT_TIMEOUT`]).
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use arc_swap::ArcSwap;
    use cocoon_tee::{AttestationKind, Attester, FakeAttester, NoneAttester, Policy};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::Identity;

    fn identity(attester: &dyn Attester, role: &str) -> SharedIdentity {
        Identity::generate(attester, role, BTreeMap::new(), crate::DEFAULT_VALIDITY)
            .unwrap()
            .into_shared()
    }

    fn policy(p: Policy) -> SharedPolicy {
        Arc::new(ArcSwap::from_pointee(p))
    }

    fn verifier() -> Arc<Verifier> {
        Arc::new(Verifier::new())
    }

    fn fake() -> SharedPolicy {
        policy(Policy::any_image(AttestationKind::Fake))
    }

    /// Starts an acceptor that answers "ping" with "pong" and reports each accept's outcome.
    async fn serve(
        acceptor: Acceptor,
    ) -> (
        String,
        mpsc::UnboundedReceiver<Result<PeerIdentity, RatlsError>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                match acceptor.accept(tcp).await {
                    Ok((mut tls, peer)) => {
                        let _ = tx.send(Ok(peer));
                        let mut buf = [0u8; 4];
                        if tls.read_exact(&mut buf).await.is_ok() && &buf == b"ping" {
                            let _ = tls.write_all(b"pong").await;
                            let _ = tls.flush().await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            }
        });
        (addr, rx)
    }

    /// Whether a ping/pong exchange completes over the client stream.
    async fn exchange(tls: &mut client::TlsStream<TcpStream>) -> bool {
        let mut buf = [0u8; 4];
        tls.write_all(b"ping").await.is_ok()
            && tls.flush().await.is_ok()
            && tls.read_exact(&mut buf).await.is_ok()
            && &buf == b"pong"
    }

    #[tokio::test]
    async fn mutual_handshake_reveals_both_identities() {
        let proxy = FakeAttester::from_label("cocoon-proxy-dev");
        let worker = FakeAttester::from_label("cocoon-worker-dev");
        let server_id = identity(&proxy, "proxy");
        let client_id = identity(&worker, "worker");
        let acceptor = Acceptor::new(server_id.clone(), fake(), verifier(), "worker").unwrap();
        let connector = Connector::new(client_id.clone(), fake(), verifier(), "proxy").unwrap();
        let (addr, mut accepted) = serve(acceptor).await;

        let (mut tls, server_seen) = connector.connect(&addr).await.unwrap();
        assert_eq!(server_seen.cert_fingerprint, server_id.load().fingerprint());
        assert_eq!(server_seen.claims.role, "proxy");
        assert_eq!(server_seen.image_hash, proxy.image_hash());
        assert!(exchange(&mut tls).await);

        let conn = tls.get_ref().1;
        assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
        assert_eq!(
            conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let suite = conn.negotiated_cipher_suite().unwrap().suite();
        assert!(matches!(
            suite,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
                | rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        ));
        assert!(tls.get_ref().0.nodelay().unwrap());

        let client_seen = accepted.recv().await.unwrap().unwrap();
        assert_eq!(client_seen.cert_fingerprint, client_id.load().fingerprint());
        assert_eq!(client_seen.claims.role, "worker");
        assert_eq!(client_seen.image_hash, worker.image_hash());
    }

    #[tokio::test]
    async fn server_rejects_client_below_minimum_kind() {
        let acceptor = Acceptor::new(
            identity(&FakeAttester::from_label("p"), "proxy"),
            fake(),
            verifier(),
            "client",
        )
        .unwrap();
        let connector = Connector::new(
            identity(&NoneAttester, "client"),
            fake(),
            verifier(),
            "proxy",
        )
        .unwrap();
        let (addr, mut accepted) = serve(acceptor).await;

        // TLS 1.3: the client may finish before the server judges it, so the refusal may
        // only show on the first exchange.
        match connector.connect(&addr).await {
            Ok((mut tls, _)) => assert!(!exchange(&mut tls).await),
            Err(e) => assert!(matches!(e, RatlsError::Handshake(_)), "{e}"),
        }
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(
            matches!(&err, RatlsError::PeerRejected(m) if m.contains("below the policy's minimum fake")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_certificate_claiming_another_role_is_refused_on_both_sides() {
        // A client's certificate on a port for workers: the server refuses it.
        let acceptor = Acceptor::new(
            identity(&FakeAttester::from_label("p"), "proxy"),
            fake(),
            verifier(),
            "worker",
        )
        .unwrap();
        let connector = Connector::new(
            identity(&FakeAttester::from_label("c"), "client"),
            fake(),
            verifier(),
            "proxy",
        )
        .unwrap();
        let (addr, mut accepted) = serve(acceptor).await;
        if let Ok((mut tls, _)) = connector.connect(&addr).await {
            assert!(!exchange(&mut tls).await);
        }
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(
            matches!(&err, RatlsError::PeerRejected(m) if m.contains(r#"claims the role "client", but this link accepts only "worker""#)),
            "{err}"
        );

        // A server that is not a proxy, dialled as one: the client refuses it.
        let acceptor = Acceptor::new(
            identity(&FakeAttester::from_label("w"), "worker"),
            fake(),
            verifier(),
            "client",
        )
        .unwrap();
        let (addr, _accepted) = serve(acceptor).await;
        let err = connector.connect(&addr).await.unwrap_err();
        assert!(
            matches!(&err, RatlsError::PeerRejected(m) if m.contains(r#"claims the role "worker""#)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn client_rejects_server_with_unlisted_image() {
        let acceptor = Acceptor::new(
            identity(&FakeAttester::from_label("rogue"), "proxy"),
            fake(),
            verifier(),
            "worker",
        )
        .unwrap();
        let allowed = FakeAttester::from_label("good").image_hash();
        let connector = Connector::new(
            identity(&FakeAttester::from_label("w"), "worker"),
            policy(Policy {
                allowed_image_hashes: BTreeSet::from([allowed]),
                min_kind: AttestationKind::Fake,
            }),
            verifier(),
            "proxy",
        )
        .unwrap();
        let (addr, mut accepted) = serve(acceptor).await;

        let err = connector.connect(&addr).await.unwrap_err();
        assert!(
            matches!(&err, RatlsError::PeerRejected(m) if m.contains("is not in the allowed list")),
            "{err}"
        );
        let server_err = accepted.recv().await.unwrap().unwrap_err();
        assert!(
            matches!(server_err, RatlsError::Handshake(_)),
            "{server_err}"
        );
    }

    #[tokio::test]
    async fn policy_and_identity_updates_apply_to_new_handshakes() {
        let proxy = FakeAttester::from_label("proxy");
        let server_id = identity(&proxy, "proxy");
        let client_policy = fake();
        let acceptor = Acceptor::new(server_id.clone(), fake(), verifier(), "worker").unwrap();
        let connector = Connector::new(
            identity(&FakeAttester::from_label("w"), "worker"),
            client_policy.clone(),
            verifier(),
            "proxy",
        )
        .unwrap();
        let (addr, _accepted) = serve(acceptor).await;

        let (_, first) = connector.connect(&addr).await.unwrap();

        // Rotation: the next handshake presents the new certificate.
        let rotated =
            Identity::generate(&proxy, "proxy", BTreeMap::new(), crate::DEFAULT_VALIDITY).unwrap();
        let rotated_fp = rotated.fingerprint();
        server_id.store(Arc::new(rotated));
        let (_, second) = connector.connect(&addr).await.unwrap();
        assert_ne!(second.cert_fingerprint, first.cert_fingerprint);
        assert_eq!(second.cert_fingerprint, rotated_fp);

        // A policy change applies even though the certificate's verification is cached.
        let other = FakeAttester::from_label("other").image_hash();
        client_policy.store(Arc::new(Policy {
            allowed_image_hashes: BTreeSet::from([other]),
            min_kind: AttestationKind::Fake,
        }));
        let err = connector.connect(&addr).await.unwrap_err();
        assert!(matches!(err, RatlsError::PeerRejected(_)), "{err}");
    }

    #[tokio::test]
    async fn certificate_presented_without_its_key_is_rejected() {
        let attester = FakeAttester::from_label("p");
        let new_id = || {
            Identity::generate(&attester, "proxy", BTreeMap::new(), crate::DEFAULT_VALIDITY)
                .unwrap()
        };
        let victim = new_id();
        let thief = new_id().with_stolen_certificate(&victim);
        let acceptor = Acceptor::new(thief.into_shared(), fake(), verifier(), "worker").unwrap();
        let connector = Connector::new(
            identity(&FakeAttester::from_label("w"), "worker"),
            fake(),
            verifier(),
            "proxy",
        )
        .unwrap();
        let (addr, _accepted) = serve(acceptor).await;
        // The certificate itself verifies; the handshake signature by the wrong key does not.
        let err = connector.connect(&addr).await.unwrap_err();
        assert!(matches!(err, RatlsError::Handshake(_)), "{err}");
        assert!(err.to_string().contains("BadSignature"), "{err}");
    }

    #[tokio::test]
    async fn bad_addresses_are_reported() {
        let connector = Connector::new(
            identity(&NoneAttester, "client"),
            fake(),
            verifier(),
            "proxy",
        )
        .unwrap();
        for addr in ["no-port", "host:notaport"] {
            let err = connector.connect(addr).await.unwrap_err();
            assert!(
                matches!(err, RatlsError::InvalidAddress(_)),
                "{addr}: {err}"
            );
        }
        assert!(server_name("[::1]:443").is_ok());

        // Nothing listens on a port we just freed.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = connector
            .connect(&format!("127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(matches!(err, RatlsError::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connector = Connector::new(
            identity(&NoneAttester, "client"),
            fake(),
            verifier(),
            "proxy",
        )
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(200));
        let err = connector.connect(&addr).await.unwrap_err();
        assert!(matches!(err, RatlsError::HandshakeTimeout(_)), "{err}");
        drop(listener);
    }
}
