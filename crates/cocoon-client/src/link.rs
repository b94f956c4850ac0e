//! Links to proxies: dial over RA-TLS, prove the link with a first exchange, keep it up (reconnect
//! with backoff), and hand requests the live link of the most preferred proxy.
//!
//! Preference ([`Preference`]): proxies given with `--proxy` in their listed order; the registry's
//! in an order of this client's own (rendezvous hashing of its account with each address), so
//! every client keeps a stable favourite while clients as a whole spread over the proxies.
//!
//! Every proxy (from `--proxy`, else from the registry, followed live) gets its own task that keeps
//! a link up, so that failing over to the next proxy costs nothing when the preferred one goes
//! away, and returning to it is automatic once its link is back. A proxy the registry drops, or
//! whose image it revokes, is disconnected.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use cocoon_money::AccountId;
use cocoon_node::backoff::Backoff;
use cocoon_node::link::{client_handshake, get_json, LinkError, LinkSender};
use cocoon_node::registry::{keep_each_endpoint, LivePolicy};
use cocoon_node::stats::{ConnectedPeer, NodeStats};
use cocoon_proto::link::{ModelList, PATH_MODELS};
use cocoon_ratls::{Connector, PeerIdentity, PeerWatch, RatlsError};
use http::HeaderValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::held_certificate::HeldCertificate;

/// The role a peer must attest as for the client to send it requests.
pub const PROXY_ROLE: &str = "proxy";

/// How long dialing (TCP, RA-TLS, HTTP/2 handshake) may take before the attempt is abandoned.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a link to a proxy could not be established.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP or the attested TLS handshake failed (includes a proxy refused by our policy).
    #[error("RA-TLS: {0}")]
    Ratls(#[from] RatlsError),
    /// The peer attested, but not as a proxy.
    #[error("the peer attests as `{0}`, not as `{PROXY_ROLE}`")]
    NotAProxy(String),
    /// HTTP/2 or the first exchange failed (e.g. the proxy refused our attestation).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// This client's certificate was renewed while dialing.
    #[error("this client's certificate was renewed while dialing")]
    CertificateRenewed,
    /// Dialing took too long.
    #[error("no link within {0:?}")]
    Timeout(Duration),
}

/// An established, proven link to one proxy.
pub struct LiveLink {
    /// The proxy's address as configured.
    pub proxy: String,
    /// The HTTP/2 sender; clone it per request.
    pub sender: LinkSender,
    /// What the proxy proved about itself during the handshake.
    pub peer: PeerIdentity,
    /// When the link came up.
    pub connected_at: SystemTime,
    /// This client's wallet proof for the certificate it presented on this link.
    pub wallet_proof: HeaderValue,
    /// The proxy's certificate, once a receipt on this link carried it.
    pub held_certificate: Arc<HeldCertificate>,
    /// Counts the link in `connected_peers` while it lives.
    _counted: ConnectedPeer,
}

/// How the client orders the proxies it links to; the first live one serves its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// In the order they are listed (`--proxy`).
    Listed,
    /// By SHA-256 of this account and the proxy's address: a stable order of this client's own,
    /// different for other clients (rendezvous hashing), so that clients spread over the proxies
    /// the registry lists and a proxy joining or leaving moves only the clients that prefer it.
    SpreadFor(AccountId),
}

impl Preference {
    /// Where `address` sorts (lower first); equal ranks keep the order they arrived in.
    fn rank(self, address: &str) -> [u8; 32] {
        match self {
            Preference::Listed => [0; 32],
            Preference::SpreadFor(account) => {
                let mut hasher = Sha256::new();
                hasher.update(account.0);
                hasher.update(address.as_bytes());
                hasher.finalize().into()
            }
        }
    }
}

/// One configured proxy and its link, if up.
struct ProxySlot {
    address: String,
    rank: [u8; 32],
    live: ArcSwapOption<LiveLink>,
    last_error: ArcSwapOption<String>,
}

/// Puts `slot` among `slots` (kept sorted by rank) after those of equal rank.
fn insert_by_rank(slots: &mut Vec<Arc<ProxySlot>>, slot: Arc<ProxySlot>) {
    let at = slots.partition_point(|other| other.rank <= slot.rank);
    slots.insert(at, slot);
}

/// The links to every proxy, in order of preference.
pub struct ProxyLinks {
    slots: RwLock<Vec<Arc<ProxySlot>>>,
}

/// This client's current certificate key and its wallet's proof for it.
pub type Prover = Arc<dyn Fn() -> ([u8; 32], String) + Send + Sync>;

/// What every proxy link shares.
struct Linking {
    connector: Arc<Connector>,
    prover: Prover,
    policy: LivePolicy,
    stats: Arc<NodeStats>,
}

impl ProxyLinks {
    /// Keeps a link up to every proxy in `proxies` (as the list changes) until `shutdown`, ordered
    /// by `preference`; returns the links and the task that manages them (it ends after
    /// `shutdown`).
    pub fn spawn(
        proxies: watch::Receiver<Arc<Vec<String>>>,
        preference: Preference,
        connector: Arc<Connector>,
        prover: Prover,
        policy: LivePolicy,
        stats: Arc<NodeStats>,
        shutdown: CancellationToken,
    ) -> (Arc<ProxyLinks>, JoinHandle<()>) {
        let links = Arc::new(ProxyLinks {
            slots: RwLock::new(Vec::new()),
        });
        let linking = Arc::new(Linking {
            connector,
            prover,
            policy,
            stats,
        });
        let managed = links.clone();
        let task = tokio::spawn(keep_each_endpoint(
            proxies,
            shutdown,
            move |address, stop| {
                let slot = Arc::new(ProxySlot {
                    rank: preference.rank(&address),
                    address,
                    live: ArcSwapOption::empty(),
                    last_error: ArcSwapOption::empty(),
                });
                insert_by_rank(&mut write(&managed.slots), slot.clone());
                let (links, linking) = (managed.clone(), linking.clone());
                tokio::spawn(async move {
                    maintain(&slot, &linking, stop).await;
                    write(&links.slots).retain(|other| !Arc::ptr_eq(other, &slot));
                })
            },
        ));
        (links, task)
    }

    fn slots(&self) -> Vec<Arc<ProxySlot>> {
        self.slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The live links, most preferred first.
    pub fn live_links(&self) -> Vec<Arc<LiveLink>> {
        self.slots()
            .iter()
            .filter_map(|slot| slot.live.load_full())
            .filter(|link| !link.sender.is_closed())
            .collect()
    }

    /// The link requests should use now: the most preferred one that is up.
    pub fn current(&self) -> Option<Arc<LiveLink>> {
        self.live_links().into_iter().next()
    }

    /// Every proxy's state, for `/jsonstats` and `/stats`.
    pub fn snapshot(&self) -> Value {
        let proxies: Vec<Value> = self
            .slots()
            .iter()
            .map(|slot| {
                let live = slot
                    .live
                    .load_full()
                    .filter(|link| !link.sender.is_closed());
                let last_error = slot.last_error.load_full().map(|error| (*error).clone());
                match live {
                    Some(link) => json!({
                        "address": slot.address,
                        "up": true,
                        "image_hash": link.peer.image_hash.to_string(),
                        "connected_at": unix_seconds(link.connected_at),
                    }),
                    None => json!({
                        "address": slot.address,
                        "up": false,
                        "last_error": last_error,
                    }),
                }
            })
            .collect();
        json!({ "proxies": proxies })
    }
}

/// The slot list for writing; a panic elsewhere cannot leave a `Vec` half-changed, so a poisoned
/// lock is reused.
fn write(
    slots: &RwLock<Vec<Arc<ProxySlot>>>,
) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<ProxySlot>>> {
    slots
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps one proxy's link up until `stop`: dial, prove, publish, wait for it to end (or for the
/// policy to refuse the proxy), back off, repeat.
async fn maintain(slot: &ProxySlot, linking: &Linking, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            attempt = dial(&slot.address, &linking.connector, &linking.prover) => attempt,
        };
        match attempt {
            Ok((sender, mut driver, peer, watch, wallet_proof)) => {
                backoff.reset();
                tracing::info!(
                    proxy = %slot.address,
                    image_hash = %peer.image_hash,
                    kind = %peer.kind,
                    "proxy link up"
                );
                slot.last_error.store(None);
                let live = Arc::new(LiveLink {
                    proxy: slot.address.clone(),
                    sender,
                    held_certificate: Arc::new(HeldCertificate::new(peer.cert_fingerprint)),
                    peer,
                    connected_at: SystemTime::now(),
                    wallet_proof,
                    _counted: linking.stats.peer_connected(),
                });
                slot.live.store(Some(live.clone()));
                // The driver is not cancelled on shutdown: in-flight requests hold senders and
                // finish on their own; the link closes once the last one is dropped.
                let lost = tokio::select! {
                    _ = stop.cancelled() => {
                        slot.live.store(None);
                        return;
                    }
                    _ = &mut driver => "link closed".to_owned(),
                    reason = linking.policy.until_refused(&live.peer) => {
                        driver.abort();
                        format!("the proxy is no longer allowed: {reason}")
                    }
                    reason = watch.until_refused() => {
                        driver.abort();
                        format!("the proxy no longer passes attestation: {reason}")
                    }
                };
                slot.live.store(None);
                tracing::warn!(proxy = %slot.address, reason = %lost, "proxy link lost; reconnecting");
                slot.last_error.store(Some(Arc::new(lost)));
            }
            Err(error) => {
                tracing::warn!(proxy = %slot.address, %error, "cannot link to proxy");
                slot.last_error.store(Some(Arc::new(error.to_string())));
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// A dialed link: its sender, the task driving it, the proxy's identity, the watch on its
/// verdict, and this client's wallet proof for the certificate it presented.
type Dialed = (
    LinkSender,
    JoinHandle<()>,
    PeerIdentity,
    PeerWatch,
    HeaderValue,
);

/// Dials `address`, checks that the peer is a proxy, starts HTTP/2 and proves the link with a first
/// exchange (our certificate may still be refused by the proxy after the TLS handshake returns).
async fn dial(address: &str, connector: &Connector, prover: &Prover) -> Result<Dialed, DialError> {
    let establish = async {
        let (key, proof) = prover();
        let (tls, peer) = connector.connect(address).await?;
        // The proof names the certificate presented; one renewed during the handshake means
        // another certificate may have been sent: dial again.
        if prover().0 != key {
            return Err(DialError::CertificateRenewed);
        }
        let proof = HeaderValue::from_str(&proof).map_err(|_| DialError::CertificateRenewed)?;
        if peer.claims.role != PROXY_ROLE {
            return Err(DialError::NotAProxy(peer.claims.role.clone()));
        }
        let watch = connector.watch(&tls)?;
        let (sender, driver) = client_handshake(tls).await?;
        let driver = tokio::spawn(driver);
        match get_json::<ModelList>(&sender, PATH_MODELS).await {
            Ok(_) => Ok((sender, driver, peer, watch, proof)),
            Err(error) => {
                driver.abort();
                Err(error.into())
            }
        }
    };
    tokio::time::timeout(DIAL_TIMEOUT, establish)
        .await
        .map_err(|_| DialError::Timeout(DIAL_TIMEOUT))?
}

/// Seconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The addresses in the order `preference` keeps them, inserted in `arrival` order.
    fn order(preference: Preference, arrival: &[&str]) -> Vec<String> {
        let mut slots = Vec::new();
        for address in arrival {
            let slot = Arc::new(ProxySlot {
                address: address.to_string(),
                rank: preference.rank(address),
                live: ArcSwapOption::empty(),
                last_error: ArcSwapOption::empty(),
            });
            insert_by_rank(&mut slots, slot);
        }
        slots.iter().map(|slot| slot.address.clone()).collect()
    }

    const PROXIES: [&str; 6] = [
        "p1.example:11002",
        "p2.example:11002",
        "p3.example:11002",
        "p4.example:11002",
        "p5.example:11002",
        "p6.example:11002",
    ];

    #[test]
    fn listed_proxies_keep_their_order() {
        assert_eq!(order(Preference::Listed, &PROXIES), PROXIES);
    }

    #[test]
    fn registry_proxies_get_an_order_of_each_clients_own_whatever_their_arrival() {
        let alice = Preference::SpreadFor(AccountId([1; 32]));
        let mut reversed = PROXIES;
        reversed.reverse();
        assert_eq!(order(alice, &PROXIES), order(alice, &reversed));
        // Other clients favour other proxies: over a few clients, more than one comes first.
        let favourites: std::collections::BTreeSet<String> = (2..10u8)
            .map(|n| order(Preference::SpreadFor(AccountId([n; 32])), &PROXIES)[0].clone())
            .collect();
        assert!(favourites.len() > 1, "{favourites:?}");
        // A proxy joining moves nobody else: the others keep their relative order.
        let without: Vec<String> = order(alice, &PROXIES[..5]);
        let with: Vec<String> = order(alice, &PROXIES)
            .into_iter()
            .filter(|address| address != PROXIES[5])
            .collect();
        assert_eq!(with, without);
    }
}
