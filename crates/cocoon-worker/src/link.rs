//! The worker's links: it dials each proxy, then serves HTTP/2 on the connection (the proxy is the
//! HTTP/2 client — a reverse tunnel, so workers behind NAT need no open port). A lost link is
//! redialled with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use cocoon_node::backoff::Backoff;
use cocoon_node::link;
use cocoon_node::registry::LivePolicy;
use cocoon_node::stats::NodeStats;
use cocoon_ratls::Connector;
use tokio_util::sync::CancellationToken;

use crate::settlement::{PaidLink, WorkerSettlement};
use crate::voucher_check::LinkedProxy;

/// A link that stayed up this long resets the backoff.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// What every link of this worker shares.
#[derive(Clone)]
pub struct Linking {
    /// Dials proxies under `policy`.
    pub connector: Arc<Connector>,
    /// Which proxy images are allowed; a linked proxy it stops allowing is disconnected.
    pub policy: LivePolicy,
    /// What the worker serves on each link.
    pub router: Router,
    /// Where each link's pay is checked and counted.
    pub settlement: Arc<WorkerSettlement>,
    /// Counts linked peers.
    pub stats: Arc<NodeStats>,
    /// How long a link's requests in flight may finish after `stop`.
    pub drain: Duration,
}

/// Keeps a link to `proxy` up until `stop`, then drains it: the proxy is told to send no more
/// requests, and the link closes when those in flight have ended (at most `linking.drain`).
pub async fn keep_linked(proxy: String, linking: Linking, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return Ok(None),
                connected = linking.connector.connect(&proxy) => connected?,
            };
            let watch = linking.connector.watch(&stream)?;
            // A proxy that names no contract or voucher key in its attested claims cannot pay.
            let linked = LinkedProxy::of(&peer).ok_or_else(|| {
                anyhow::anyhow!("the proxy's attested claims name no valid wallet and voucher_key")
            })?;
            tracing::info!(
                %proxy,
                image = %peer.image_hash,
                contract = %linked.contract,
                voucher_key = %linked.voucher_key,
                "linked to proxy; serving it"
            );
            let _linked = linking.stats.peer_connected();
            let since = Instant::now();
            let router = linking.router.clone().layer(axum::Extension(PaidLink {
                proxy: linked,
                settlement: linking.settlement.clone(),
            }));
            let serving = link::serve(stream, router, &stop, linking.drain);
            let result = tokio::select! {
                result = serving => result.map_err(anyhow::Error::from),
                reason = linking.policy.until_refused(&peer) => {
                    Err(anyhow::anyhow!("the proxy is no longer allowed: {reason}"))
                }
                reason = watch.until_refused() => {
                    Err(anyhow::anyhow!("the proxy no longer passes attestation: {reason}"))
                }
            };
            Ok::<_, anyhow::Error>(Some((since.elapsed(), result)))
        };
        match attempt.await {
            _ if stop.is_cancelled() => {
                tracing::info!(%proxy, "link drained and closed");
                return;
            }
            Ok(Some((lasted, result))) => {
                if lasted >= STABLE_LINK {
                    backoff.reset();
                }
                match result {
                    Ok(()) => tracing::warn!(%proxy, "proxy closed the link"),
                    Err(error) => tracing::warn!(%proxy, %error, "link to proxy lost"),
                }
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%proxy, error = %format!("{error:#}"), "cannot link to proxy")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
