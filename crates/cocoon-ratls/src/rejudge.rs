//! Judging a live link's peer again, for as long as the link lives.
//!
//! A handshake judges the peer once, but a link may live for days, and what was true then may stop
//! being true: Intel revokes a platform or moves its TCB status to out-of-date, a CRL lists a PCK
//! certificate, the policy stops allowing an image. A [`PeerWatch`] verifies the peer's certificate
//! again — quote, fresh collateral, policy, role — whenever the last verdict lapses: no later than
//! [`MAX_VERDICT_AGE`](crate::MAX_VERDICT_AGE) after it, nor than the collateral it was
//! judged with. The link's owner ends the link when the watch reports a refusal.
//!
//! The certificate's own end is not a reason to drop a live link (TLS judges validity at the
//! handshake, and the peer has renewed its certificate for its next links): the certificate is
//! judged as of just before its end, while the quote is judged with today's collateral.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use crate::verifier::PeerCheck;
use crate::{PeerIdentity, RatlsError};

/// The shortest pause between two judgments of one peer, so a verdict that lapses at once (the
/// collateral's next update already due) cannot make a link spin.
const MIN_PAUSE: Duration = Duration::from_secs(1);

/// Re-judges one live link's peer (see the module docs). Made by
/// [`Connector::watch`](crate::Connector::watch) or [`Acceptor::watch`](crate::Acceptor::watch).
pub struct PeerWatch {
    check: Arc<PeerCheck>,
    certificate: CertificateDer<'static>,
    not_after: SystemTime,
    next: SystemTime,
}

impl std::fmt::Debug for PeerWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerWatch")
            .field("not_after", &self.not_after)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl PeerWatch {
    /// A watch over the peer that presented `certificates` (the stream's, after the handshake).
    pub(crate) fn new(
        check: Arc<PeerCheck>,
        certificates: Option<&[CertificateDer<'static>]>,
    ) -> Result<Self, RatlsError> {
        let certificate = certificates
            .and_then(|c| c.first())
            .ok_or(RatlsError::NoPeerCertificate)?
            .clone();
        let now = SystemTime::now();
        // The handshake just judged it: this is a cache hit that says until when.
        let (peer, until) = check.check_with_expiry(&certificate, now)?;
        Ok(PeerWatch {
            check,
            certificate,
            not_after: peer.not_after,
            next: until.max(now + MIN_PAUSE),
        })
    }

    /// When the peer will next be judged.
    pub fn next_judgment(&self) -> SystemTime {
        self.next
    }

    /// Judges the peer again now, past its cached verdict; on success, returns the identity and
    /// schedules the next judgment.
    pub fn judge_now(&mut self) -> Result<PeerIdentity, RatlsError> {
        let now = SystemTime::now();
        let judged_at = now.min(
            self.not_after
                .checked_sub(Duration::from_secs(1))
                .unwrap_or(self.not_after),
        );
        let (peer, until) = self.check.rejudge(&self.certificate, judged_at, now)?;
        self.next = until.max(now + MIN_PAUSE);
        Ok(peer)
    }

    /// Resolves with the reason once a judgment refuses the peer; pending while every judgment
    /// passes.
    pub async fn until_refused(mut self) -> RatlsError {
        loop {
            let pause = self
                .next
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(pause).await;
            match self.judge_now() {
                Ok(_) => {}
                Err(error) => return error,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arc_swap::ArcSwap;
    use cocoon_tee::{AttestationKind, FakeAttester, Policy, Verifier};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::server;

    use super::*;
    use crate::{Acceptor, Connector, Identity, SharedPolicy};

    fn policy(min: AttestationKind) -> SharedPolicy {
        Arc::new(ArcSwap::from_pointee(Policy::any_image(min)))
    }

    /// A worker linked to a proxy whose worker port follows `worker_policy`; returns the proxy's
    /// side of the link and its watch over the worker.
    async fn linked_worker(
        worker_policy: SharedPolicy,
        worker_lifetime: Duration,
    ) -> (server::TlsStream<TcpStream>, PeerWatch) {
        let proxy_id = Identity::generate(
            &FakeAttester::from_label("proxy"),
            "proxy",
            BTreeMap::new(),
            crate::DEFAULT_VALIDITY,
        )
        .unwrap()
        .into_shared();
        let worker_id = Identity::generate(
            &FakeAttester::from_label("worker"),
            "worker",
            BTreeMap::new(),
            worker_lifetime,
        )
        .unwrap()
        .into_shared();
        let verifier = Arc::new(Verifier::new());
        let acceptor = Acceptor::new(proxy_id, worker_policy, verifier.clone(), "worker")
            .unwrap()
            .with_max_verdict_age(Duration::from_millis(200));
        let connector =
            Connector::new(worker_id, policy(AttestationKind::Fake), verifier, "proxy").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let proxy_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (tls, _) = acceptor.accept(tcp).await.unwrap();
            let watch = acceptor.watch(&tls).unwrap();
            (tls, watch)
        });
        let (worker_side, _) = connector.connect(&addr).await.unwrap();
        // Keep the worker's end open for the test's length.
        tokio::spawn(async move {
            let _held = worker_side;
            std::future::pending::<()>().await;
        });
        proxy_side.await.unwrap()
    }

    #[tokio::test]
    async fn a_live_peer_is_judged_again_and_refused_once_it_no_longer_passes() {
        let worker_policy = policy(AttestationKind::Fake);
        let (_link, mut watch) =
            linked_worker(worker_policy.clone(), crate::DEFAULT_VALIDITY).await;
        let before = SystemTime::now();
        watch.judge_now().unwrap();
        assert!(
            watch.next_judgment() > before,
            "the next judgment is scheduled"
        );

        // What the handshake accepted no longer passes (here the policy; in production also a
        // TCB status or CRL in refreshed collateral): the next judgment refuses the live peer.
        worker_policy.store(Arc::new(Policy::any_image(AttestationKind::Tdx)));
        let reason = tokio::time::timeout(Duration::from_secs(30), watch.until_refused())
            .await
            .expect("the watch refuses the peer at its next judgment");
        assert!(matches!(reason, RatlsError::Policy(_)), "{reason}");
    }

    #[tokio::test]
    async fn a_peer_whose_certificate_ended_during_the_link_is_still_judged_on_its_quote() {
        let (_link, mut watch) =
            linked_worker(policy(AttestationKind::Fake), Duration::from_secs(2)).await;
        // Wait for the certificate to end (a state, not a duration to assert).
        while SystemTime::now() <= watch.not_after {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watch
            .judge_now()
            .expect("a certificate's end is judged at the handshake, not on a live link");
    }
}
