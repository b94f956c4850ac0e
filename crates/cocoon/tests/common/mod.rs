//! Starting real `cocoon` processes on loopback for end-to-end tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cocoon_tee::FakeAttester;

/// A running `cocoon` process, killed when dropped.
pub struct Node {
    child: Child,
}

impl Node {
    /// Starts `cocoon ARGS…`.
    pub fn start(args: &[String]) -> Node {
        let child = Command::new(env!("CARGO_BIN_EXE_cocoon"))
            .args(args)
            .env("COCOON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("cocoon starts");
        Node { child }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `127.0.0.1:PORT` on a free port.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The image hash `fake` attestation gives a node with `label`.
pub fn image_hash(label: &str) -> String {
    FakeAttester::from_label(label).measurements().image_hash().to_string()
}

/// Addresses of a proxy.
pub struct ProxyAddrs {
    pub workers: String,
    pub clients: String,
    pub stats: String,
}

/// Starts a proxy with `extra` flags.
pub fn proxy(extra: &[&str]) -> (Node, ProxyAddrs) {
    let addrs = ProxyAddrs {
        workers: free_addr(),
        clients: free_addr(),
        stats: free_addr(),
    };
    let mut args = strings(&[
        "proxy",
        "--worker-listen",
        &addrs.workers,
        "--client-listen",
        &addrs.clients,
        "--stats-listen",
        &addrs.stats,
        "--image-label",
        "test-proxy",
    ]);
    args.extend(strings(extra));
    (Node::start(&args), addrs)
}

/// Starts a synthetic-engine worker for `proxy` with `extra` flags; returns it and its stats address.
pub fn worker(proxy: &ProxyAddrs, extra: &[&str]) -> (Node, String) {
    let stats = free_addr();
    let mut args = strings(&[
        "worker",
        "--proxy",
        &proxy.workers,
        "--stats-listen",
        &stats,
        "--image-label",
        "test-worker",
    ]);
    if !extra.contains(&"--engine") {
        args.extend(strings(&["--engine", "synthetic"]));
    }
    args.extend(strings(extra));
    (Node::start(&args), stats)
}

/// Starts a client for `proxy` with `extra` flags; returns it and its API base URL.
pub fn client(proxy: &ProxyAddrs, extra: &[&str]) -> (Node, String) {
    let listen = free_addr();
    let mut args = strings(&[
        "client",
        "--listen",
        &listen,
        "--proxy",
        &proxy.clients,
        "--image-label",
        "test-client",
    ]);
    args.extend(strings(extra));
    (Node::start(&args), format!("http://{listen}"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// An HTTP client that opens a new connection per request, like the benchmarks.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Waits until `api` lists `model` with at least `workers` workers.
pub async fn wait_for_model(api: &str, model: &str, workers: u64) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(format!("{api}/v1/models")).send().await {
            if let Ok(list) = response.json::<serde_json::Value>().await {
                let ready = list["data"].as_array().is_some_and(|models| {
                    models
                        .iter()
                        .any(|m| m["id"] == model && m["workers"].as_u64().unwrap_or(0) >= workers)
                });
                if ready {
                    return;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "model {model} with {workers} workers never became routable at {api}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `url` answers 200.
pub async fn wait_for_ok(url: &str) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(url).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `data` of each SSE event of a streamed answer, as they arrive (errors end the stream).
pub fn events(response: reqwest::Response) -> impl futures::Stream<Item = String> + Unpin {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    Box::pin(
        response
            .bytes_stream()
            .eventsource()
            .take_while(|event| futures::future::ready(event.is_ok()))
            .map(|event| event.expect("checked above").data),
    )
}

/// Every event of a streamed answer.
pub async fn all_events(response: reqwest::Response) -> Vec<String> {
    use futures::StreamExt;
    events(response).collect().await
}
