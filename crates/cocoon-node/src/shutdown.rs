//! Turning Ctrl-C (SIGINT) and SIGTERM into a cancellation every task of a node listens to.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGINT or SIGTERM. A second one exits the process at once, for
/// an operator who will not wait for requests in flight to drain.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; stopping (again to stop at once)");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second shutdown signal; exiting now");
        std::process::exit(130);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
