//! The load generator: request loops on a new connection per request, and what they measured.

use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What the requests completed in one cell measured.
pub(super) struct Sample {
    pub(super) latencies_ms: Vec<f64>,
    /// Completion tokens per request divided by its duration, per request.
    pub(super) stream_rates: Vec<f64>,
    pub(super) tokens: u64,
    pub(super) failures: u64,
    pub(super) elapsed: Duration,
}

impl Sample {
    pub(super) fn throughput(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    #[cfg_attr(not(feature = "embedded"), allow(dead_code))]
    pub(super) fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.elapsed.as_secs_f64()
    }

    #[cfg_attr(not(feature = "embedded"), allow(dead_code))]
    pub(super) fn mean_stream_rate(&self) -> f64 {
        self.stream_rates.iter().sum::<f64>() / self.stream_rates.len().max(1) as f64
    }

    pub(super) fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let index = ((p / 100.0) * (self.latencies_ms.len() - 1) as f64).round() as usize;
        self.latencies_ms[index]
    }
}

/// Runs `concurrency` request loops against `address` for `duration` (after a warm-up).
pub(super) async fn measure(
    address: &str,
    body: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let body = Bytes::from(body.to_owned());
    // Warm-up: connections, caches, the worker link's windows.
    for _ in 0..concurrency.min(8) {
        let _ = request(address, body.clone()).await;
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (address, body) = (address.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let begun = Instant::now();
                match request(&address, body.clone()).await {
                    Ok(answer) => done.push((begun.elapsed(), completion_tokens(&answer).await)),
                    Err(_) => failures += 1,
                }
            }
            (done, failures)
        }));
    }
    let mut sample = Sample {
        latencies_ms: Vec::new(),
        stream_rates: Vec::new(),
        tokens: 0,
        failures: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (done, failures) = task.await?;
        for (took, tokens) in done {
            sample.latencies_ms.push(took.as_secs_f64() * 1000.0);
            sample.stream_rates.push(tokens as f64 / took.as_secs_f64());
            sample.tokens += tokens;
        }
        sample.failures += failures;
    }
    sample.elapsed = started.elapsed();
    sample.latencies_ms.sort_by(f64::total_cmp);
    Ok(sample)
}

/// One request on a new connection, read to its end.
async fn request(address: &str, body: Bytes) -> anyhow::Result<Bytes> {
    Ok(post_chat(address, body).await?.collect().await?.to_bytes())
}

/// POSTs a chat completion request on a new connection; the answer's body, once its status says
/// success.
pub(super) async fn post_chat(address: &str, body: Bytes) -> anyhow::Result<hyper::body::Incoming> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::post("/v1/chat/completions")
        .header("host", address)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("status {}", response.status());
    }
    Ok(response.into_body())
}

/// Completion tokens reported in an answer's usage (streamed or not); 0 when it has none.
pub(super) async fn completion_tokens(answer: &Bytes) -> u64 {
    use futures::StreamExt;
    let usage_of = |json: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|value| value["usage"]["completion_tokens"].as_u64())
    };
    if let Some(tokens) = usage_of(answer) {
        return tokens;
    }
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(answer.clone())]);
    sse_stream::SseByteStream::new(chunks)
        .filter_map(|event| {
            let data = event.ok().and_then(|event| event.data);
            futures::future::ready(data.and_then(|data| usage_of(data.as_bytes())))
        })
        .next()
        .await
        .unwrap_or(0)
}

pub(super) async fn wait_ready(api: &str, probe: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = Bytes::from(probe.to_owned());
    while request(api, probe.clone()).await.is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the benchmark network did not come up within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
