//! The registry as a node sees it: read from the ledger at start, then watched (the ledger holds a
//! request open until the next version), so a new version takes effect within a round trip. Each
//! version is judged by the node's [`RegistryTrust`] (the owner's signature, never older than the
//! last one accepted) before anything uses it.
//!
//! Roles do not read the document directly; they [`RegistryWatch::derive`] what they need (a peer
//! policy, an allow-list of models, the proxies to dial), and what they derived changes only when
//! that part of the document does. Live links wait on [`LivePolicy::until_refused`] to drop a peer
//! whose image the registry has revoked.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use cocoon_money::{ImageRole, RegisteredProxy, Registry, SettlementBackend, SettlementError};
use cocoon_ratls::{PeerIdentity, SharedPolicy};
use cocoon_tee::{AttestationKind, ImageHash, Policy, TeeError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::registry_trust::{ReadError, Refusals, RegistryReader, RegistryTrust};

/// How long one watch request waits for a new version before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(25);

/// Why the registry could not be read at start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The settlement backend could not be opened (an unusable ledger URL).
    #[error("settlement backend: {0}")]
    Client(#[from] SettlementError),
    /// The node was stopped before the ledger answered.
    #[error("stopped before the registry could be read")]
    Stopped,
}

/// The latest registry document, kept current by a background task until shutdown.
#[derive(Clone)]
pub struct RegistryWatch {
    current: watch::Receiver<Arc<Registry>>,
    refusals: Arc<Refusals>,
}

impl RegistryWatch {
    /// Reads the registry from the settlement `backend` (retrying while it is not up, as after a
    /// host restart, or serves nothing `trust` accepts) and keeps it current until `shutdown`
    /// (with the backend's watch: the local ledger's long poll, or polling). When the backend's
    /// version is refused but the data directory keeps a good one, the node starts on that.
    pub async fn start(
        backend: &dyn SettlementBackend,
        trust: RegistryTrust,
        shutdown: CancellationToken,
    ) -> Result<Self, RegistryError> {
        let ledger_url = backend.location();
        let mut reader = RegistryReader::new(backend, trust)?;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = loop {
            let read = tokio::select! {
                _ = shutdown.cancelled() => return Err(RegistryError::Stopped),
                read = reader.read(0, Duration::ZERO) => read,
            };
            match read {
                Ok(registry) => break registry,
                // Logged by the reader. Without a good version kept, wait for one to come.
                Err(ReadError::Refused(_)) => match reader.stored() {
                    Some(stored) => break stored,
                    None => tokio::time::sleep(backoff.next_delay()).await,
                },
                Err(ReadError::Ledger(error)) => {
                    tracing::warn!(ledger = ledger_url, %error, "cannot read the registry yet; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        tracing::info!(version = first.version, "registry read");
        let refusals = reader.refusals.clone();
        let (publish, current) = watch::channel(Arc::new(first));
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = follow(reader, publish) => {}
            }
        });
        Ok(Self { current, refusals })
    }

    /// How many versions the ledger served were refused, and the latest reason.
    pub fn refusals(&self) -> (u64, Option<String>) {
        self.refusals.snapshot()
    }

    /// The registry's part of a node's `/jsonstats`: the version in use and the refusals.
    pub fn status(&self) -> serde_json::Value {
        let (refused, latest) = self.refusals();
        serde_json::json!({
            "version": self.current().version,
            "refused": refused,
            "last_refusal": latest,
        })
    }

    /// The document now.
    pub fn current(&self) -> Arc<Registry> {
        self.current.borrow().clone()
    }

    /// The proxy endpoints to link to: `flags` when given (fixed, for development), else the
    /// `port` of every proxy the registry lists, followed live.
    pub fn proxy_endpoints(
        &self,
        flags: &[String],
        port: ProxyPort,
    ) -> watch::Receiver<Arc<Vec<String>>> {
        if !flags.is_empty() {
            return fixed(flags.to_vec());
        }
        self.derive(move |document| {
            let endpoint = |proxy: &RegisteredProxy| match port {
                ProxyPort::Workers => proxy.worker_endpoint.clone(),
                ProxyPort::Clients => proxy.client_endpoint.clone(),
            };
            document.proxies.iter().map(endpoint).collect::<Vec<_>>()
        })
    }

    /// A value computed from every version by `derive`, published only when it changes. The
    /// first value is computed before this returns.
    pub fn derive<T, F>(&self, derive: F) -> watch::Receiver<Arc<T>>
    where
        T: PartialEq + Send + Sync + 'static,
        F: Fn(&Registry) -> T + Send + 'static,
    {
        let mut source = self.current.clone();
        let (publish, derived) = watch::channel(Arc::new(derive(&source.borrow_and_update())));
        tokio::spawn(async move {
            while source.changed().await.is_ok() {
                let next = derive(&source.borrow_and_update());
                publish.send_if_modified(|value| {
                    let changed = **value != next;
                    if changed {
                        *value = Arc::new(next);
                    }
                    changed
                });
                if publish.is_closed() {
                    return;
                }
            }
        });
        derived
    }
}

/// Which of a proxy's two ports a node dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPort {
    /// The port workers dial.
    Workers,
    /// The port clients dial.
    Clients,
}

/// Long-polls the ledger for newer versions and publishes those the reader accepts.
async fn follow(mut reader: RegistryReader, publish: watch::Sender<Arc<Registry>>) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let version = publish.borrow().version;
        let asked = std::time::Instant::now();
        match reader.read(version, WATCH_WAIT).await {
            Ok(registry) if registry.version > version => {
                tracing::info!(version = registry.version, "registry updated");
                backoff.reset();
                publish.send_replace(Arc::new(registry));
            }
            // Nothing newer: normal after a full wait; a ledger that answers at once (one that
            // does not hold watches) must not be asked in a tight loop.
            Ok(_) if asked.elapsed() < WATCH_WAIT / 2 => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Ok(_) => backoff.reset(),
            // Logged by the reader; the last good version stays.
            Err(ReadError::Refused(_)) => tokio::time::sleep(backoff.next_delay()).await,
            Err(ReadError::Ledger(error)) => {
                tracing::warn!(ledger = %reader.url(), %error, "watching the registry failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// A peer policy that may change while links are up: handshakes read [`LivePolicy::shared`], and
/// each live link waits on [`LivePolicy::until_refused`].
#[derive(Clone)]
pub struct LivePolicy {
    shared: SharedPolicy,
    changes: watch::Receiver<Arc<Policy>>,
    /// The role peers under this policy must claim.
    peer_role: String,
}

impl LivePolicy {
    /// A policy for peers in `role` (who must claim that role): the images given on the command
    /// line when there are any (fixed, for development), else the registry's list for `role`,
    /// followed live.
    pub fn new(
        flag_images: BTreeSet<ImageHash>,
        registry: &RegistryWatch,
        role: ImageRole,
        min_kind: AttestationKind,
    ) -> Self {
        let shared: SharedPolicy = Arc::new(ArcSwap::from_pointee(Policy::any_image(min_kind)));
        let store = shared.clone();
        let changes = registry.derive(move |document| {
            let allowed_image_hashes = if flag_images.is_empty() {
                document
                    .images(role)
                    .iter()
                    .map(|hash| ImageHash(hash.0))
                    .collect()
            } else {
                flag_images.clone()
            };
            let policy = Policy {
                allowed_image_hashes,
                min_kind,
            };
            // Handshakes see the new policy no later than live links do.
            store.store(Arc::new(policy.clone()));
            policy
        });
        Self {
            shared,
            changes,
            peer_role: role.to_string(),
        }
    }

    /// A policy that never changes for peers claiming `peer_role` (lists no registry covers, such
    /// as the proxy's client images).
    pub fn fixed(peer_role: &str, policy: Policy) -> Self {
        Self {
            shared: Arc::new(ArcSwap::from_pointee(policy.clone())),
            changes: fixed(policy),
            peer_role: peer_role.to_owned(),
        }
    }

    /// The role peers under this policy must claim in their certificates.
    pub fn peer_role(&self) -> &str {
        &self.peer_role
    }

    /// The policy the RA-TLS verifiers apply to new handshakes.
    pub fn shared(&self) -> SharedPolicy {
        self.shared.clone()
    }

    /// The policy now.
    pub fn current(&self) -> Arc<Policy> {
        self.changes.borrow().clone()
    }

    /// Resolves once the policy (as it is now or after a change) refuses `peer`; pending while the
    /// peer stays allowed.
    pub async fn until_refused(&self, peer: &PeerIdentity) -> TeeError {
        until_refused(self.changes.clone(), |policy| {
            policy.check_image(peer.kind, peer.image_hash)
        })
        .await
    }
}

/// Runs one task per endpoint of a watched list until `shutdown`: `start(endpoint, stop)` spawns
/// the task for each endpoint that appears, and its `stop` token is cancelled when the endpoint
/// leaves the list (a proxy removed from the registry). After `shutdown` it waits for the tasks
/// still running, so that links which drain on `stop` can finish.
pub async fn keep_each_endpoint<F>(
    mut endpoints: watch::Receiver<Arc<Vec<String>>>,
    shutdown: CancellationToken,
    mut start: F,
) where
    F: FnMut(String, CancellationToken) -> JoinHandle<()>,
{
    let mut running: Vec<(String, CancellationToken, JoinHandle<()>)> = Vec::new();
    loop {
        let wanted = endpoints.borrow_and_update().clone();
        running.retain(|(endpoint, stop, _)| {
            let keep = wanted.contains(endpoint);
            if !keep {
                tracing::info!(%endpoint, "no longer listed; dropping its link");
                stop.cancel();
            }
            keep
        });
        for endpoint in wanted.iter() {
            if !running.iter().any(|(known, _, _)| known == endpoint) {
                let stop = shutdown.child_token();
                let task = start(endpoint.clone(), stop.clone());
                running.push((endpoint.clone(), stop, task));
            }
        }
        if wanted.is_empty() {
            tracing::warn!("no proxy to link to yet (the registry lists none); waiting for one");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = endpoints.changed() => if changed.is_err() {
                shutdown.cancelled().await;
                break;
            }
        }
    }
    for (endpoint, _, task) in running {
        if let Err(error) = task.await {
            tracing::warn!(%endpoint, %error, "an endpoint's task failed");
        }
    }
}

/// A watched value that never changes (a command-line list that overrides the registry's).
pub fn fixed<T>(value: T) -> watch::Receiver<Arc<T>> {
    // With the sender gone, readers keep the value and `changed()` reports that none will come.
    watch::channel(Arc::new(value)).1
}

/// Resolves with the first error `check` finds in the watched value, as it is now or after any
/// later change; pending while every version passes (forever once no more changes can come).
pub async fn until_refused<T, E>(
    mut changes: watch::Receiver<Arc<T>>,
    check: impl Fn(&T) -> Result<(), E>,
) -> E {
    loop {
        let verdict = check(&changes.borrow_and_update());
        if let Err(reason) = verdict {
            return reason;
        }
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_ledger::{LedgerClient, LedgerConfig, LocalLedger};
    use cocoon_money::{AccountId, Hash32, RegistryEdit, Settlement};
    use cocoon_tee::{Attester, FakeAttester, Verifier};

    fn image(label: &str) -> ImageHash {
        let quote = FakeAttester::from_label(label).quote(&[0; 64]).unwrap();
        Verifier::new().verify(&quote).unwrap().image_hash
    }

    async fn ledger(
        dir: &tempfile::TempDir,
        owner: &ed25519_dalek::SigningKey,
    ) -> cocoon_ledger::LedgerHandle {
        let config = LedgerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: dir.path().join("ledger.sqlite3"),
            owner: Some(AccountId::from(owner)),
            ..LedgerConfig::default()
        };
        cocoon_ledger::spawn(&config, Arc::new(cocoon_proto::clock::SystemClock))
            .await
            .unwrap()
    }

    async fn edit(url: &str, owner: &ed25519_dalek::SigningKey, edit: RegistryEdit) {
        let client = LedgerClient::new(url, owner.clone()).unwrap();
        let current = client.registry().await.unwrap();
        let registry = current.edited(&edit).unwrap();
        client
            .submit(cocoon_money::TransactionBody::UpdateRegistry { registry })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_revoked_image_refuses_live_peers_and_new_handshakes() {
        let dir = tempfile::tempdir().unwrap();
        let owner = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let ledger = ledger(&dir, &owner).await;
        let (worker, other) = (image("worker"), image("other"));
        for hash in [worker, other] {
            let edit_allow = RegistryEdit::AllowImage {
                role: ImageRole::Worker,
                hash: Hash32(hash.0),
            };
            edit(&ledger.url(), &owner, edit_allow).await;
        }
        let shutdown = CancellationToken::new();
        let trust = RegistryTrust::Pinned {
            owner: AccountId::from(&owner),
            data_dir: None,
        };
        let watch = RegistryWatch::start(&LocalLedger::new(&ledger.url()), trust, shutdown.clone())
            .await
            .unwrap();
        assert_eq!(watch.current().version, 3);
        let policy = LivePolicy::new(
            BTreeSet::new(),
            &watch,
            ImageRole::Worker,
            AttestationKind::Fake,
        );
        assert!(policy
            .shared()
            .load()
            .allowed_image_hashes
            .contains(&worker));

        let identity = cocoon_ratls::Identity::generate(
            &FakeAttester::from_label("worker"),
            "worker",
            Default::default(),
            Duration::from_secs(600),
        )
        .unwrap();
        let peer = cocoon_ratls::verify_certificate(
            identity.certificate_der(),
            &Verifier::new(),
            &policy.current(),
            std::time::SystemTime::now(),
        )
        .unwrap();
        let refused = tokio::spawn({
            let policy = policy.clone();
            async move { policy.until_refused(&peer).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!refused.is_finished(), "an allowed peer stays");

        let revoke = RegistryEdit::RevokeImage {
            role: ImageRole::Worker,
            hash: Hash32(worker.0),
        };
        edit(&ledger.url(), &owner, revoke).await;
        let reason = tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("the revocation reaches the link within seconds")
            .unwrap();
        assert!(matches!(reason, TeeError::ImageHashNotAllowed(h) if h == worker));
        assert!(!policy
            .shared()
            .load()
            .allowed_image_hashes
            .contains(&worker));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn one_task_per_listed_endpoint_and_removed_ones_are_stopped() {
        let (publish, endpoints) =
            watch::channel(Arc::new(vec!["a:1".to_owned(), "b:2".to_owned()]));
        let started = Arc::new(std::sync::Mutex::new(
            Vec::<(String, CancellationToken)>::new(),
        ));
        let shutdown = CancellationToken::new();
        let record = started.clone();
        let task = tokio::spawn(keep_each_endpoint(
            endpoints,
            shutdown.clone(),
            move |endpoint, stop| {
                record.lock().unwrap().push((endpoint, stop.clone()));
                tokio::spawn(async move { stop.cancelled().await })
            },
        ));
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        settle().await;
        let names = |started: &[(String, CancellationToken)]| {
            started.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&started.lock().unwrap()), ["a:1", "b:2"]);

        // b leaves, c joins; a keeps its task.
        publish.send_replace(Arc::new(vec!["a:1".to_owned(), "c:3".to_owned()]));
        settle().await;
        {
            let started = started.lock().unwrap();
            assert_eq!(names(&started), ["a:1", "b:2", "c:3"]);
            let stopped: Vec<bool> = started
                .iter()
                .map(|(_, stop)| stop.is_cancelled())
                .collect();
            assert_eq!(stopped, [false, true, false]);
        }
        shutdown.cancel();
        task.await.unwrap();
        assert!(started
            .lock()
            .unwrap()
            .iter()
            .all(|(_, stop)| stop.is_cancelled()));
    }

    #[tokio::test]
    async fn command_line_images_override_the_registry() {
        let mut registry = Registry::new(AccountId([1; 32]));
        registry.worker_image_hashes.push(Hash32(image("a").0));
        // The sender stays alive for the test, as the ledger follower would.
        let (_publish, current) = watch::channel(Arc::new(registry));
        let watch = RegistryWatch {
            current,
            refusals: Arc::default(),
        };
        let flags = BTreeSet::from([image("b")]);
        let policy = LivePolicy::new(
            flags.clone(),
            &watch,
            ImageRole::Worker,
            AttestationKind::Fake,
        );
        assert_eq!(policy.current().allowed_image_hashes, flags);
        let follows = LivePolicy::new(
            BTreeSet::new(),
            &watch,
            ImageRole::Proxy,
            AttestationKind::Fake,
        );
        assert!(
            follows.current().allowed_image_hashes.is_empty(),
            "no proxy list: any image"
        );
    }
}
