//! Serving a plain-HTTP surface (the client API, `/stats` and friends, the ledger, engines).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use crate::{file_limit, Accepting, Admission, Busy, HttpLimits, LogThrottle, Slot, Slots};

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then finishes the
/// requests in flight. `surface` names it in logs.
///
/// - At most [`HttpLimits::connection_cap`] connections: beyond, the connection idle the longest
///   is closed, or the newcomer refused when all are busy (a flood of idle or half-sent
///   connections cannot starve a real request, nor exhaust the process's file descriptors).
/// - A request's headers must arrive within the header timeout, a connection with no request in
///   flight is closed after the idle timeout, and a request body that sends nothing for the body
///   timeout is answered 408 and its connection closed.
/// - Hitting a limit, and failing to accept, are logged as warnings at most once per second.
///
/// Every accepted connection gets `TCP_NODELAY`: answers are streamed as many small writes (one
/// per SSE event), which Nagle's algorithm would otherwise hold back until the peer's delayed ACK
/// — tens of milliseconds per event.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    surface: &'static str,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Slots::new(limits.connection_cap(file_limit()));
    tracing::debug!(surface, max_connections = slots.cap(), "serving HTTP");
    let mut accepting = Accepting::new(listener, surface);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout());
    builder.http2().timer(TokioTimer::new());
    let surface_state = Arc::new(Surface {
        router,
        builder,
        limits,
        name: surface,
        max_connections: slots.cap(),
        full: LogThrottle::per_second(),
        stalled: LogThrottle::per_second(),
    });
    let connections = TaskTracker::new();
    let drain = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => break,
            tcp = accepting.accept(&slots) => tcp,
        };
        let slot = match slots.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Evicted(slot) => {
                surface_state.warn_limit("closed the longest-idle connection to make room");
                slot
            }
            Admission::Full => {
                surface_state.warn_limit("every connection is busy; refused a new one");
                continue;
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let surface = surface_state.clone();
        let drain = drain.clone();
        connections.spawn(async move { surface.serve(tcp, slot, drain).await });
    }
    // No new connections (the listener closes here); let the open ones finish their requests.
    drop(accepting);
    drain.cancel();
    connections.close();
    connections.wait().await;
}

/// What every connection of one surface shares.
struct Surface {
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: HttpLimits,
    name: &'static str,
    max_connections: usize,
    /// Warnings that the connection cap was hit.
    full: LogThrottle,
    /// Warnings that a request body stopped arriving.
    stalled: LogThrottle,
}

impl Surface {
    fn warn_limit(&self, what: &'static str) {
        if let Some(suppressed) = self.full.admit() {
            tracing::warn!(
                surface = self.name,
                suppressed,
                max_connections = self.max_connections,
                "connection limit reached: {what}"
            );
        }
    }

    /// Serves one connection until it ends, is evicted, or stays idle too long.
    async fn serve(self: Arc<Self>, tcp: TcpStream, slot: Slot, drain: CancellationToken) {
        let slot = Arc::new(slot);
        let service = {
            let (surface, slot) = (self.clone(), slot.clone());
            hyper::service::service_fn(move |request| surface.clone().answer(request, slot.busy()))
        };
        let connection = self.builder.serve_connection(TokioIo::new(tcp), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            // Until its first request a connection has the header timeout (hyper applies it to
            // HTTP/1 headers, but not while the protocol is still being detected); then the idle
            // timeout.
            let idle_timeout = if slot.used() {
                self.limits.idle_timeout()
            } else {
                self.limits.header_timeout()
            };
            let now = tokio::time::Instant::now();
            // While a request is in flight, look again one idle period later.
            let idle_until = slot.idle_since().map_or(now + idle_timeout, |since| {
                tokio::time::Instant::from_std(since) + idle_timeout
            });
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(surface = self.name, %error, "connection ended with an error");
                    }
                    return;
                }
                _ = slot.evicted() => return,
                _ = tokio::time::sleep_until(idle_until) => {
                    if slot.idle_since().is_some_and(|since| since.elapsed() >= idle_timeout) {
                        tracing::debug!(surface = self.name, "idle connection closed");
                        return;
                    }
                }
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// Answers one request: the body must keep arriving (else 408), and the connection counts as
    /// busy until the answer's body is done.
    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
        busy: Busy,
    ) -> Result<Response<Body>, Infallible> {
        let timed_out = Arc::new(AtomicBool::new(false));
        let noticed = timed_out.clone();
        let body_timeout = self.limits.body_timeout();
        let request = request.map(|body| {
            Body::new(TimeoutBody::new(body_timeout, body).map_err(move |error| {
                if error.is::<TimeoutError>() {
                    noticed.store(true, Ordering::Relaxed);
                }
                error
            }))
        });
        let mut response = self.router.clone().oneshot(request).await?;
        if timed_out.load(Ordering::Relaxed) {
            if let Some(suppressed) = self.stalled.admit() {
                tracing::warn!(surface = self.name, suppressed, timeout = ?body_timeout, "a request body stopped arriving; answered 408");
            }
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // The guard lives as long as the answer's body: a streamed answer keeps the connection busy.
        Ok(response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _ = &busy;
                frame
            }))
        }))
    }
}
