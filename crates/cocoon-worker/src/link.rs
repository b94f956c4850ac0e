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
    /// Counts linked peers.
    pub stats: Arc<NodeStats>,
}

/// Keeps a link to `proxy` up until `stop`.
pub async fn keep_linked(proxy: String, linking: Linking, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            let (stream, peer) = linking.connector.connect(&proxy).await?;
            tracing::info!(
                %proxy,
                image = %peer.image_hash,
                "linked to proxy; serving it"
            );
            let _linked = linking.stats.peer_connected();
            let since = Instant::now();
            let result = tokio::select! {
                result = link::serve(stream, linking.router.clone()) => result.map_err(anyhow::Error::from),
                reason = linking.policy.until_refused(&peer) => {
                    Err(anyhow::anyhow!("the proxy is no longer allowed: {reason}"))
                }
            };
            Ok::<_, anyhow::Error>((since.elapsed(), result))
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            outcome = attempt => match outcome {
                Ok((lasted, result)) => {
                    if lasted >= STABLE_LINK {
                        backoff.reset();
                    }
                    match result {
                        Ok(()) => tracing::warn!(%proxy, "proxy closed the link"),
                        Err(error) => tracing::warn!(%proxy, %error, "link to proxy lost"),
                    }
                }
                Err(error) => tracing::warn!(%proxy, error = %format!("{error:#}"), "cannot link to proxy"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
