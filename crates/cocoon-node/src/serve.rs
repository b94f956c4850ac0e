//! Serving a node's plain-HTTP surfaces (the client API, `/stats` and friends) on loopback.

use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown`, then finishes the requests in flight.
///
/// Every accepted connection gets `TCP_NODELAY`: answers are streamed as many small writes (one
/// per SSE event), which Nagle's algorithm would otherwise hold back until the peer's delayed ACK
/// — tens of milliseconds per event.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
