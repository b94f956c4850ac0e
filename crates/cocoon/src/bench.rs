//! `cocoon bench`: throughput and latency of the whole network against the same engine called
//! directly, measured in one run on one machine, so the ratios hold however noisy the machine is.
//!
//! Every node runs as its own process (as in production), the engine is the synthetic one served
//! over HTTP, and the load generator opens a new connection per request — the harness the C++
//! Cocoon was measured with (50 streamed chunks of 128 bytes).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Options of `cocoon bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Concurrency levels to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,30,256")]
    pub concurrency: Vec<usize>,
    /// Seconds each measurement runs (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Streamed chunks per request.
    #[arg(long, default_value_t = 50)]
    pub chunks: u32,
    /// Bytes of text per chunk.
    #[arg(long, default_value_t = 128)]
    pub chunk_bytes: usize,
    /// Microseconds the synthetic engine waits between chunks (0: as fast as it can).
    #[arg(long, default_value_t = 0)]
    pub interval_us: u64,
    /// Runtime threads of each node process (0: one per core). All nodes share this machine's
    /// cores with the engine and the load generator, so one thread each is the default.
    #[arg(long = "node-threads", default_value_t = 1)]
    pub node_threads: usize,
    /// First port of the ports the benchmark's nodes use (it takes 8 from here).
    #[arg(long, default_value_t = 19000)]
    pub base_port: u16,
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[String], threads: usize) -> anyhow::Result<Process> {
    let exe = std::env::current_exe().context("locating the cocoon binary")?;
    let child = Command::new(exe)
        .arg("--threads")
        .arg(threads.to_string())
        .args(args)
        .env("COCOON_LOG", std::env::var("COCOON_LOG").unwrap_or_else(|_| "error".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting a node")?;
    Ok(Process(child))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Runs the benchmark and prints its table.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let port = |offset: u16| format!("127.0.0.1:{}", args.base_port + offset);
    let (engine, api) = (port(0), port(1));
    let _engine = spawn(&strings(&[
        "synthetic-engine",
        "--listen",
        &engine,
        "--chunk-bytes",
        &args.chunk_bytes.to_string(),
        "--interval-us",
        &args.interval_us.to_string(),
    ]), args.node_threads)?;
    let _proxy = spawn(&strings(&[
        "proxy",
        "--worker-listen",
        &port(2),
        "--client-listen",
        &port(3),
        "--stats-listen",
        &port(4),
    ]), args.node_threads)?;
    let _worker = spawn(&strings(&[
        "worker",
        "--proxy",
        &port(2),
        "--engine",
        &format!("http://{engine}"),
        "--model",
        "synthetic",
        "--max-active",
        "4096",
        "--stats-listen",
        &port(5),
    ]), args.node_threads)?;
    let _client = spawn(&strings(&[
        "client",
        "--listen",
        &api,
        "--proxy",
        &port(3),
        "--max-coefficient",
        "1000",
    ]), args.node_threads)?;
    wait_ready(&api).await?;

    println!(
        "cocoon bench: {} chunks x {} B per streamed request, a new connection per request, {} s per cell",
        args.chunks, args.chunk_bytes, args.seconds
    );
    println!(
        "direct = the synthetic engine over HTTP; network = app -> client -> proxy -> worker -> engine; {} runtime thread(s) per process\n",
        args.node_threads
    );
    let workloads = [
        ("stream", format!(
            r#"{{"model":"synthetic","stream":true,"max_tokens":{},"messages":[{{"role":"user","content":"hi"}}]}}"#,
            args.chunks
        )),
        ("json", r#"{"model":"synthetic","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#.to_owned()),
    ];
    println!(
        "{:<7} {:>5} | {:>9} {:>9} {:>7} | {:>9} {:>9} | {:>9} {:>9} | {:>9}",
        "load", "conc", "direct/s", "net/s", "ratio", "d p50 ms", "d p99 ms", "n p50 ms", "n p99 ms", "+p50 ms"
    );
    for (name, body) in &workloads {
        for &concurrency in &args.concurrency {
            let duration = Duration::from_secs_f64(args.seconds);
            let direct = measure(&engine, body, concurrency, duration).await?;
            let network = measure(&api, body, concurrency, duration).await?;
            println!(
                "{:<7} {:>5} | {:>9.0} {:>9.0} {:>6.1}% | {:>9.3} {:>9.3} | {:>9.3} {:>9.3} | {:>9.3}",
                name,
                concurrency,
                direct.throughput(),
                network.throughput(),
                100.0 * network.throughput() / direct.throughput(),
                direct.percentile(50.0),
                direct.percentile(99.0),
                network.percentile(50.0),
                network.percentile(99.0),
                network.percentile(50.0) - direct.percentile(50.0),
            );
            if direct.failures + network.failures > 0 {
                println!("        failures: direct {}, network {}", direct.failures, network.failures);
            }
        }
    }
    Ok(())
}

/// Latencies of the requests completed in one cell.
struct Sample {
    latencies_ms: Vec<f64>,
    failures: u64,
    elapsed: Duration,
}

impl Sample {
    fn throughput(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let index = ((p / 100.0) * (self.latencies_ms.len() - 1) as f64).round() as usize;
        self.latencies_ms[index]
    }
}

/// Runs `concurrency` request loops against `address` for `duration` (after a warm-up).
async fn measure(address: &str, body: &str, concurrency: usize, duration: Duration) -> anyhow::Result<Sample> {
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
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let begun = Instant::now();
                match request(&address, body.clone()).await {
                    Ok(()) => latencies.push(begun.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut sample = Sample {
        latencies_ms: Vec::new(),
        failures: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, failures) = task.await?;
        sample.latencies_ms.extend(latencies);
        sample.failures += failures;
    }
    sample.elapsed = started.elapsed();
    sample.latencies_ms.sort_by(f64::total_cmp);
    Ok(sample)
}

/// One request on a new connection, read to its end.
async fn request(address: &str, body: Bytes) -> anyhow::Result<()> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::post("/v1/chat/completions")
        .header("host", address)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("status {}", response.status());
    }
    response.into_body().collect().await?;
    Ok(())
}

async fn wait_ready(api: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = Bytes::from_static(br#"{"model":"synthetic","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#);
    while request(api, probe.clone()).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the benchmark network did not come up within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
