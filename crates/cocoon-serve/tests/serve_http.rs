//! `serve_http` under the attacks it exists for, on loopback with raw HTTP/1.1.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use axum::Router;
use cocoon_serve::{serve_http, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A bound on every wait, so that a server that holds a connection forever fails the test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        // An answer that never ends: its connection stays busy for as long as it is read.
        .route("/endless", get(|| async { Body::from_stream(endless()) }))
}

/// A chunk now and then, forever.
fn endless() -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok(Bytes::from_static(b"tick\n")), ()))
    })
}

/// Serves `router()` under `limits`; returns its address and the token that stops it.
async fn start(limits: HttpLimits) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(serve_http(
        listener,
        router(),
        limits,
        "test",
        stop.clone().cancelled_owned(),
    ));
    (addr, stop)
}

/// Sends `GET path` and reads the status line.
async fn get_status(tcp: &mut TcpStream, path: &str) -> String {
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    status_line(tcp).await
}

async fn status_line(tcp: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(PATIENCE, async {
        while !line.ends_with(b"\r\n") {
            if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            line.push(byte[0]);
        }
    })
    .await
    .expect("an answer within the patience");
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// Whether the server has closed `tcp` (reading what it sent first).
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut sink = vec![0u8; 64 << 10];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn capped(max_connections: usize) -> HttpLimits {
    HttpLimits {
        max_connections,
        // Long enough that only the cap can close the test's idle connections.
        header_timeout_secs: 600,
        idle_timeout_secs: 600,
        ..HttpLimits::default()
    }
}

#[tokio::test]
async fn idle_connections_at_the_cap_make_way_for_a_real_request() {
    let (addr, _stop) = start(capped(4)).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // A slow loris: half a request, never finished.
    idle[3].write_all(b"GET / HTTP/1.1\r\nHost").await.unwrap();
    let mut real = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(get_status(&mut real, "/").await, "HTTP/1.1 200 OK");
    // The longest-idle one made way.
    assert!(closed(&mut idle[0]).await);
}

#[tokio::test]
async fn busy_connections_are_kept_and_a_newcomer_is_refused_when_all_are_busy() {
    let (addr, _stop) = start(capped(2)).await;
    let mut first = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(get_status(&mut first, "/endless").await, "HTTP/1.1 200 OK");
    let mut second = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(get_status(&mut second, "/endless").await, "HTTP/1.1 200 OK");
    let mut third = TcpStream::connect(&addr).await.unwrap();
    assert!(closed(&mut third).await, "no room: the newcomer is refused");
    // Both answers still stream.
    let mut chunk = [0u8; 16];
    assert!(first.read(&mut chunk).await.unwrap() > 0);
    assert!(second.read(&mut chunk).await.unwrap() > 0);
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_answered_408_and_closed() {
    let (addr, _stop) = start(HttpLimits {
        body_timeout_secs: 1,
        ..HttpLimits::default()
    })
    .await;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    assert_eq!(status_line(&mut tcp).await, "HTTP/1.1 408 Request Timeout");
    assert!(closed(&mut tcp).await);
}

#[tokio::test]
async fn connections_that_send_nothing_are_closed_after_the_header_timeout() {
    let (addr, _stop) = start(HttpLimits {
        header_timeout_secs: 1,
        ..HttpLimits::default()
    })
    .await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert!(closed(&mut silent).await);
    let mut kept_alive = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(get_status(&mut kept_alive, "/").await, "HTTP/1.1 200 OK");
    assert!(
        closed(&mut kept_alive).await,
        "an idle keep-alive connection is closed too"
    );
}
