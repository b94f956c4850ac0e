//! The worker's links: it dials each proxy, then serves HTTP/2 on the connection (the proxy is the
//! HTTP/2 client — a reverse tunnel, so workers behind NAT need no open port). A lost link is
//! redialled with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use cocoon_node::backoff::Backoff;
use cocoon_node::link;
use cocoon_node::stats::NodeStats;
use cocoon_ratls::Connector;
use tokio_util::sync::CancellationToken;

/// A link that stayed up this long resets the backoff.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// Keeps a link to `proxy` up until `shutdown`.
pub async fn keep_linked(
    proxy: String,
    connector: Arc<Connector>,
    router: Router,
    stats: Arc<NodeStats>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            let (stream, peer) = connector.connect(&proxy).await?;
            tracing::info!(
                %proxy,
                image = %peer.image_hash,
                "linked to proxy; serving it"
            );
            let _linked = stats.peer_connected();
            let since = Instant::now();
            let result = link::serve(stream, router.clone()).await;
            Ok::<_, anyhow::Error>((since.elapsed(), result))
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
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
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
