//! HTTP/2 over attested TLS, in both directions.
//!
//! The side that dials is not always the HTTP/2 client: a worker dials its proxy and then *serves*
//! HTTP/2 on that connection ([`serve`]), while the proxy drives it as a client
//! ([`client_handshake`]) — a reverse tunnel, so proxies reach workers behind NAT. Multiplexing,
//! flow control, backpressure and cancellation (stream resets) all come from HTTP/2 itself.
//! Keep-alive pings notice a dead peer within [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`].

use std::future::Future;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::Body;

mod deferred_flush;
pub use deferred_flush::DeferredFlush;

/// How often an idle link is pinged.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// How long a ping may go unanswered before the link is declared dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Per-stream flow-control window: large enough that one stream never waits on window updates at
/// loopback speed, small enough to bound memory per stream.
const STREAM_WINDOW: u32 = 1 << 20;
/// Per-connection flow-control window, shared by all of a link's streams.
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Concurrent requests one link carries; capacity is limited by routing, not by the transport.
const MAX_CONCURRENT_STREAMS: u32 = 8192;
/// Bytes of HTTP/2 frames gathered before they are written to TLS. HTTP/2 writes each frame
/// separately and flushes at the end of each write cycle; gathering them turns a cycle's frames
/// into one TLS record and one system call instead of one per frame, and [`DeferredFlush`] puts
/// each flush off by one scheduler turn so that frames queued by tasks woken in that cycle (a
/// request's body after its headers) join them.
const WRITE_BUFFER: usize = 64 << 10;
/// HPACK table size each side offers its peer: room for the values that repeat on every answer
/// of a link (two receipt certificates of ~1.5 KiB, hashes), which the default 4 KiB barely holds.
const HEADER_TABLE_SIZE: u32 = 64 << 10;
/// Largest header list (headers or trailers, decoded) each side accepts from its peer. HTTP/2's
/// usual 16 KiB is too small for a receipt of two `tdx`-attested certificates (~20 KB, each
/// carrying a ~5 KB quote); 64 KiB fits one with room to spare and still bounds what a peer can
/// make us hold per stream.
pub const MAX_HEADER_LIST: u32 = 64 << 10;
/// Deadline for small control exchanges on a link.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending half of an HTTP/2 client link; cheap to clone, each clone multiplexes on the link.
pub type LinkSender = http2::SendRequest<Body>;

/// What can go wrong on a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// HTTP/2 failed (handshake, stream, connection).
    #[error("http/2: {0}")]
    Http(#[from] hyper::Error),
    /// A control exchange took too long.
    #[error("peer did not answer {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// The peer answered a control call with an error status.
    #[error("peer answered {path} with {status}: {body}")]
    Status {
        /// The control path.
        path: &'static str,
        /// The status.
        status: StatusCode,
        /// The start of the body, for the log.
        body: String,
    },
    /// The peer's answer could not be decoded.
    #[error("peer's answer to {0} is malformed: {1}")]
    Decode(&'static str, serde_json::Error),
    /// The body failed while being read.
    #[error("reading the body: {0}")]
    Body(String),
}

/// Performs the HTTP/2 client handshake on an established (attested) stream.
///
/// Returns the sender and the connection future, which must be spawned: it drives the link and
/// resolves when the link ends.
pub async fn client_handshake<S>(
    io: S,
) -> Result<(LinkSender, impl Future<Output = ()> + Send + 'static), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_reset_streams(MAX_CONCURRENT_STREAMS as usize)
        .header_table_size(HEADER_TABLE_SIZE)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake(TokioIo::new(DeferredFlush::new(io, WRITE_BUFFER)))
        .await?;
    let driver = async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "link closed with an error");
        }
    };
    Ok((sender, driver))
}

/// Marks a header value that differs on every request (ids, usage, signatures) so that HPACK
/// sends it as a literal instead of adding it to the link's header table, where it would evict
/// the values that repeat on every answer (receipt certificates, image and model hashes).
pub fn per_request(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// Serves `router` as HTTP/2 on an established (attested) stream until the link ends.
///
/// Once `drain` is cancelled the peer is told (HTTP/2 GOAWAY) to open no more streams, and the
/// link ends when the streams in flight have finished, or `grace` later with them cut.
pub async fn serve<S>(
    io: S,
    router: Router,
    drain: &CancellationToken,
    grace: Duration,
) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .header_table_size(HEADER_TABLE_SIZE)
        .max_header_list_size(MAX_HEADER_LIST)
        .serve_connection(
            TokioIo::new(DeferredFlush::new(io, WRITE_BUFFER)),
            TowerToHyperService::new(router),
        );
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return Ok(result?),
        _ = drain.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    match tokio::time::timeout(grace, connection).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "streams still in flight after the drain period; link closed"
            );
            Ok(())
        }
    }
}

/// GETs a small JSON control document over a link (the first exchange that proves a link is trusted
/// by both sides, and later health probes).
pub async fn get_json<T: DeserializeOwned>(
    sender: &LinkSender,
    path: &'static str,
) -> Result<T, LinkError> {
    let exchange = async {
        let mut sender = sender.clone();
        sender.ready().await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(Body::empty())
            .expect("static control request is valid");
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = collect(response.into_body()).await?;
        if !status.is_success() {
            return Err(LinkError::Status {
                path,
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|error| LinkError::Decode(path, error))
    };
    tokio::time::timeout(CONTROL_TIMEOUT, exchange)
        .await
        .map_err(|_| LinkError::Timeout(path, CONTROL_TIMEOUT))?
}

/// Largest control answer read (a model list of thousands of models fits many times over).
const MAX_CONTROL_ANSWER: usize = 4 << 20;

async fn collect(body: hyper::body::Incoming) -> Result<Bytes, LinkError> {
    Ok(http_body_util::Limited::new(body, MAX_CONTROL_ANSWER)
        .collect()
        .await
        .map_err(|error| LinkError::Body(error.to_string()))?
        .to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[tokio::test]
    async fn the_dialer_can_serve_and_the_acceptor_can_drive_requests() {
        // The reverse tunnel in miniature: one end serves, the other sends, over any byte stream.
        let (dialer_end, acceptor_end) = tokio::io::duplex(64 * 1024);
        let router = Router::new().route("/cocoon/v1/worker", get(|| async { "{\"ok\":true}" }));
        let drain = CancellationToken::new();
        tokio::spawn(async move { serve(dialer_end, router, &drain, Duration::ZERO).await });
        let (sender, driver) = client_handshake(acceptor_end).await.unwrap();
        tokio::spawn(driver);
        let answer: serde_json::Value = get_json(&sender, "/cocoon/v1/worker").await.unwrap();
        assert_eq!(answer["ok"], true);
        let missing = get_json::<serde_json::Value>(&sender, "/cocoon/v1/models").await;
        assert!(
            matches!(missing, Err(LinkError::Status { status, .. }) if status == StatusCode::NOT_FOUND)
        );
    }

    /// Counts the writes that reach `io` (one system call each, on a socket).
    struct CountedWrites<S> {
        io: S,
        writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for CountedWrites<S> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for CountedWrites<S> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bytes: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let written = std::pin::Pin::new(&mut self.io).poll_write(cx, bytes);
            if written.is_ready() {
                self.writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            written
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_requests_headers_and_body_leave_in_one_write() {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let router = Router::new().route(
            "/echo",
            axum::routing::post(|body: Bytes| async move { body }),
        );
        let drain = CancellationToken::new();
        tokio::spawn(async move { serve(server_end, router, &drain, Duration::ZERO).await });
        let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (sender, driver) = client_handshake(CountedWrites {
            io: client_end,
            writes: writes.clone(),
        })
        .await
        .unwrap();
        tokio::spawn(driver);
        let echo = |text: &'static str| {
            let mut sender = sender.clone();
            async move {
                let request = Request::post("http://peer/echo")
                    .body(Body::from(text))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, text.as_bytes());
            }
        };
        // The first exchange also settles the connection's SETTINGS.
        echo("settle").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..3 {
            let before = writes.load(std::sync::atomic::Ordering::Relaxed);
            echo("hello").await;
            let after = writes.load(std::sync::atomic::Ordering::Relaxed);
            // HEADERS and DATA in one write (they took two before the flush was put off).
            assert_eq!(after - before, 1);
        }
    }

    #[tokio::test]
    async fn a_control_answer_past_its_size_limit_is_refused() {
        let (dialer_end, acceptor_end) = tokio::io::duplex(64 * 1024);
        // Valid JSON, but larger than any control answer has reason to be.
        let oversized = || async {
            let mut json = vec![b' '; MAX_CONTROL_ANSWER];
            json.extend_from_slice(b"{}");
            json
        };
        let router = Router::new().route("/cocoon/v1/worker", axum::routing::get(oversized));
        let drain = CancellationToken::new();
        tokio::spawn(async move { serve(dialer_end, router, &drain, Duration::ZERO).await });
        let (sender, driver) = client_handshake(acceptor_end).await.unwrap();
        tokio::spawn(driver);
        let answer = get_json::<serde_json::Value>(&sender, "/cocoon/v1/worker").await;
        assert!(matches!(answer, Err(LinkError::Body(_))), "{answer:?}");
    }

    /// The size of a receipt whose two certificates carry real TDX quotes: each certificate is the
    /// quote plus ~1 KiB (claims, key, X.509), base64 in the receipt's JSON, which travels
    /// base64url-encoded again.
    fn tdx_receipt_len() -> usize {
        let quote = include_bytes!("../../cocoon-tee/testdata/tdx/tdx_quote").len();
        let certificate = quote + 1024;
        2 * certificate * 4 / 3 * 4 / 3
    }

    #[tokio::test]
    async fn a_receipt_of_tdx_size_crosses_a_link_in_a_header_and_in_a_trailer() {
        let receipt = "r".repeat(tdx_receipt_len());
        assert!(receipt.len() > 16 << 10, "bigger than HTTP/2's usual limit");
        let (dialer_end, acceptor_end) = tokio::io::duplex(64 * 1024);
        let sent = receipt.clone();
        let router = Router::new().route(
            "/answer",
            get(move || {
                let receipt = HeaderValue::from_str(&sent).unwrap();
                async move {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("x-cocoon-receipt-record", receipt.clone());
                    let body = http_body_util::StreamBody::new(futures::stream::iter([
                        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                            Bytes::from_static(b"answer"),
                        )),
                        Ok(hyper::body::Frame::trailers(trailers)),
                    ]));
                    ([("x-cocoon-receipt", receipt)], axum::body::Body::new(body))
                }
            }),
        );
        let drain = CancellationToken::new();
        tokio::spawn(async move { serve(dialer_end, router, &drain, Duration::ZERO).await });
        let (mut sender, driver) = client_handshake(acceptor_end).await.unwrap();
        tokio::spawn(driver);
        let request = Request::get("/answer").body(Body::empty()).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.headers()["x-cocoon-receipt"], receipt.as_str());
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        assert_eq!(trailers["x-cocoon-receipt-record"], receipt.as_str());
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"answer"));
    }
}
