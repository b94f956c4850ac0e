//! `cocoon bench`: throughput and latency of the whole network against the same engine called
//! directly, measured in one run on one machine, so the ratios hold however noisy the machine is.
//!
//! Every node runs as its own process (as in production), the engine is the synthetic one served
//! over HTTP, and the load generator opens a new connection per request — the harness the C++
//! Cocoon was measured with (50 streamed chunks of 128 bytes).

use std::path::PathBuf;
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
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// What to measure instead of the network's overhead.
    #[command(subcommand)]
    pub target: Option<BenchTarget>,
    /// The network benchmark's options.
    #[command(flatten)]
    pub network: NetworkBenchArgs,
}

/// Other benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchTarget {
    /// The embedded model: tokens/s of one stream and of several at once, alone and through the
    /// network (the same engine process serves both).
    #[cfg(feature = "embedded")]
    Engine(EngineBenchArgs),
}

/// Options of `cocoon bench engine`.
#[cfg(feature = "embedded")]
#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Concurrent streams to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// GGUF model. Default: SmolLM2-135M-Instruct (fetched once).
    #[arg(long, value_name = "PATH")]
    pub model_path: Option<String>,
    /// CPU threads for llama.cpp (default: all cores but one).
    #[arg(long, value_name = "N")]
    pub engine_threads: Option<usize>,
    /// First port of the ports the benchmark's nodes use (it takes 7 from here).
    #[arg(long, default_value_t = 19100)]
    pub base_port: u16,
}

/// Options of the network benchmark (`cocoon bench`).
#[derive(Debug, Args)]
pub struct NetworkBenchArgs {
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
    /// First port of the ports the benchmark's nodes use (it takes 7 from here).
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

/// CPU time (user + system) a process has used, from `/proc/PID/stat` (Linux; `None` elsewhere).
/// Its fields 14 and 15 count ticks of 1/100 s (the kernel's fixed `USER_HZ`).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it follow its `)`.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split(' ').skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// CPU time of each benchmark process, to attribute a cell's cost per request.
struct CpuMeter {
    /// Name and pid of each process measured.
    processes: Vec<(&'static str, u32)>,
    before: Vec<Option<Duration>>,
}

impl CpuMeter {
    fn start(processes: Vec<(&'static str, u32)>) -> Self {
        let before = processes.iter().map(|(_, pid)| cpu_time(*pid)).collect();
        Self { processes, before }
    }

    /// `name µs` of CPU per request since `start`, for each process.
    fn per_request(&self, requests: usize) -> String {
        let requests = requests.max(1) as f64;
        self.processes
            .iter()
            .zip(&self.before)
            .filter_map(|((name, pid), before)| {
                let used = cpu_time(*pid)?.checked_sub((*before)?)?;
                Some(format!("{name} {:.0}", used.as_secs_f64() * 1e6 / requests))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn spawn(args: &[String], threads: usize) -> anyhow::Result<Process> {
    let exe = std::env::current_exe().context("locating the cocoon binary")?;
    let child = Command::new(exe)
        .arg("--threads")
        .arg(threads.to_string())
        .args(args)
        .env(
            "COCOON_LOG",
            std::env::var("COCOON_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting a node")?;
    Ok(Process(child))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Runs the chosen benchmark and prints its table.
///
/// Ctrl-C or SIGTERM stops it and the nodes it started (dropping the benchmark drops them).
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let interrupted = cocoon_node::shutdown::on_signal();
    let bench = async {
        match args.target {
            None => network(args.network).await,
            #[cfg(feature = "embedded")]
            Some(BenchTarget::Engine(engine)) => embedded_engine(engine).await,
        }
    };
    tokio::select! {
        result = bench => result,
        _ = interrupted.cancelled() => bail!("interrupted"),
    }
}

/// Fails unless the `count` ports from `base_port` are free: a benchmark must never measure nodes
/// left over from another run.
fn ensure_ports_free(base_port: u16, count: u16) -> anyhow::Result<()> {
    for port in base_port..base_port + count {
        std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
            format!("port {port} is in use (another benchmark still running?); pick --base-port")
        })?;
    }
    Ok(())
}

/// The nodes of a benchmark network, stopped when dropped.
struct Network {
    /// Ledger, proxy, worker and client, in that order.
    nodes: Vec<Process>,
    api: String,
    data: PathBuf,
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// What the faucet gives the benchmark's proxy and client (nano-units), enough for any run.
const BENCH_FUNDS: &str = "1000000000000";

/// Starts a ledger, proxy, worker (forwarding to `engine_url` for `model`) and client on ports from
/// `base_port`, with their state in a temporary directory removed afterwards.
async fn start_network(
    engine_url: &str,
    model: &str,
    max_active: usize,
    base_port: u16,
    threads: usize,
) -> anyhow::Result<Network> {
    let port = |offset: u16| format!("127.0.0.1:{}", base_port + offset);
    let api = port(1);
    let ledger = format!("http://{}", port(6));
    let data =
        std::env::temp_dir().join(format!("cocoon-bench-{}-{base_port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).context("creating the benchmark's data directory")?;
    let dir = |role: &str| data.join(role).display().to_string();
    let owner_key = crate::dev::owner_key();
    let owner = cocoon_ledger::AccountId::from(&owner_key).to_string();
    let mut nodes = vec![spawn(
        &strings(&[
            "ledger",
            "--listen",
            &port(6),
            "--database",
            &data.join("ledger.sqlite3").display().to_string(),
            "--faucet",
            "--owner",
            &owner,
        ]),
        threads,
    )?];
    crate::registry::publish_when_up(&ledger, &owner_key).await?;
    nodes.push(spawn(
        &strings(&[
            "proxy",
            "--worker-listen",
            &port(2),
            "--client-listen",
            &port(3),
            "--stats-listen",
            &port(4),
            "--ledger",
            &ledger,
            "--data-dir",
            &dir("proxy"),
            "--registry-owner",
            &owner,
            "--min-worker-tee",
            "fake",
            "--min-client-tee",
            "fake",
            "--faucet",
            BENCH_FUNDS,
            // Development: the proxy holds its operator's key (the benchmark's own network).
            "--operator-key-file",
            &format!("{}/operator.key", dir("proxy")),
        ]),
        threads,
    )?);
    nodes.push(spawn(
        &strings(&[
            "worker",
            "--proxy",
            &port(2),
            "--engine",
            engine_url,
            "--model",
            model,
            "--max-active",
            &max_active.to_string(),
            "--stats-listen",
            &port(5),
            "--ledger",
            &ledger,
            "--data-dir",
            &dir("worker"),
            "--registry-owner",
            &owner,
            "--min-peer-tee",
            "fake",
        ]),
        threads,
    )?);
    nodes.push(spawn(
        &strings(&[
            "client",
            "--listen",
            &api,
            "--proxy",
            &port(3),
            "--max-coefficient",
            "1000",
            "--ledger",
            &ledger,
            "--data-dir",
            &dir("client"),
            "--registry-owner",
            &owner,
            "--min-peer-tee",
            "fake",
            "--faucet",
            BENCH_FUNDS,
            "--deposit",
            "100000000000000",
        ]),
        threads,
    )?);
    let network = Network { nodes, api, data };
    let probe = format!(
        r#"{{"model":"{model}","max_tokens":1,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    wait_ready(&network.api, &probe).await?;
    Ok(network)
}

async fn network(args: NetworkBenchArgs) -> anyhow::Result<()> {
    ensure_ports_free(args.base_port, 7)?;
    let engine = format!("127.0.0.1:{}", args.base_port);
    let engine_process = spawn(
        &strings(&[
            "synthetic-engine",
            "--listen",
            &engine,
            "--chunk-bytes",
            &args.chunk_bytes.to_string(),
            "--interval-us",
            &args.interval_us.to_string(),
        ]),
        args.node_threads,
    )?;
    let nodes = start_network(
        &format!("http://{engine}"),
        "synthetic",
        4096,
        args.base_port,
        args.node_threads,
    )
    .await?;
    let api = nodes.api.clone();

    println!(
        "cocoon bench: {} chunks x {} B per streamed request, a new connection per request, {} s per cell",
        args.chunks, args.chunk_bytes, args.seconds
    );
    println!(
        "direct = the synthetic engine over HTTP; network = app -> client -> proxy -> worker -> engine; {} runtime thread(s) per process\n",
        args.node_threads
    );
    let workloads = [
        (
            "stream",
            format!(
                r#"{{"model":"synthetic","stream":true,"max_tokens":{},"messages":[{{"role":"user","content":"hi"}}]}}"#,
                args.chunks
            ),
        ),
        (
            "json",
            r#"{"model":"synthetic","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#
                .to_owned(),
        ),
    ];
    println!(
        "{:<7} {:>5} | {:>9} {:>9} {:>7} | {:>9} {:>9} | {:>9} {:>9} | {:>9}",
        "load",
        "conc",
        "direct/s",
        "net/s",
        "ratio",
        "d p50 ms",
        "d p99 ms",
        "n p50 ms",
        "n p99 ms",
        "+p50 ms"
    );
    for (name, body) in &workloads {
        for &concurrency in &args.concurrency {
            let duration = Duration::from_secs_f64(args.seconds);
            let engine_cpu = CpuMeter::start(vec![
                ("engine", engine_process.0.id()),
                ("load", std::process::id()),
            ]);
            let direct = measure(&engine, body, concurrency, duration).await?;
            let direct_cpu = engine_cpu.per_request(direct.latencies_ms.len());
            let mut processes = vec![("engine", engine_process.0.id())];
            for (name, node) in ["ledger", "proxy", "worker", "client"]
                .into_iter()
                .zip(&nodes.nodes)
            {
                processes.push((name, node.0.id()));
            }
            processes.push(("load", std::process::id()));
            let network_cpu = CpuMeter::start(processes);
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
            println!(
                "        CPU µs per request: direct [{direct_cpu}]; network [{}]",
                network_cpu.per_request(network.latencies_ms.len())
            );
            if direct.failures + network.failures > 0 {
                println!(
                    "        failures: direct {}, network {}",
                    direct.failures, network.failures
                );
            }
        }
    }
    Ok(())
}

/// What the requests completed in one cell measured.
struct Sample {
    latencies_ms: Vec<f64>,
    /// Completion tokens per request divided by its duration, per request.
    stream_rates: Vec<f64>,
    tokens: u64,
    failures: u64,
    elapsed: Duration,
}

impl Sample {
    fn throughput(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    #[cfg_attr(not(feature = "embedded"), allow(dead_code))]
    fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.elapsed.as_secs_f64()
    }

    #[cfg_attr(not(feature = "embedded"), allow(dead_code))]
    fn mean_stream_rate(&self) -> f64 {
        self.stream_rates.iter().sum::<f64>() / self.stream_rates.len().max(1) as f64
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
async fn measure(
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
    Ok(response.into_body().collect().await?.to_bytes())
}

/// Completion tokens reported in an answer's usage (streamed or not); 0 when it has none.
async fn completion_tokens(answer: &Bytes) -> u64 {
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

async fn wait_ready(api: &str, probe: &str) -> anyhow::Result<()> {
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

/// `cocoon bench engine`: the embedded engine alone and through the network.
#[cfg(feature = "embedded")]
async fn embedded_engine(args: EngineBenchArgs) -> anyhow::Result<()> {
    let max_concurrency = args.concurrency.iter().copied().max().unwrap_or(1);
    ensure_ports_free(args.base_port, 7)?;
    let engine = format!("127.0.0.1:{}", args.base_port);
    let mut engine_args = strings(&[
        "embedded-engine",
        "--listen",
        &engine,
        "--parallel",
        &max_concurrency.to_string(),
    ]);
    if let Some(path) = &args.model_path {
        engine_args.extend(strings(&["--model-path", path]));
    }
    if let Some(threads) = args.engine_threads {
        engine_args.extend(strings(&["--engine-threads", &threads.to_string()]));
    }
    let _engine = spawn(&engine_args, 1)?;
    let model = served_model(&engine).await?;
    let network = start_network(
        &format!("http://{engine}"),
        &model,
        max_concurrency,
        args.base_port,
        1,
    )
    .await?;
    let body = format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"max_tokens":{},"temperature":0.8,"messages":[{{"role":"user","content":"Tell me a long story about a cat who learns to sail."}}]}}"#,
        args.max_tokens
    );
    println!(
        "cocoon bench engine: {model}, {} tokens per streamed request, {} s per cell",
        args.max_tokens, args.seconds
    );
    println!("direct = the engine over HTTP; network = app -> client -> proxy -> worker -> the same engine\n");
    println!(
        "{:>5} | {:>12} {:>12} | {:>12} {:>12} | {:>7}",
        "conc", "direct tok/s", "per stream", "net tok/s", "per stream", "ratio"
    );
    for &concurrency in &args.concurrency {
        let duration = Duration::from_secs_f64(args.seconds);
        let direct = measure(&engine, &body, concurrency, duration).await?;
        let through = measure(&network.api, &body, concurrency, duration).await?;
        println!(
            "{:>5} | {:>12.1} {:>12.1} | {:>12.1} {:>12.1} | {:>6.1}%",
            concurrency,
            direct.tokens_per_second(),
            direct.mean_stream_rate(),
            through.tokens_per_second(),
            through.mean_stream_rate(),
            100.0 * through.tokens_per_second() / direct.tokens_per_second(),
        );
        if direct.failures + through.failures > 0 {
            println!(
                "      failures: direct {}, network {}",
                direct.failures, through.failures
            );
        }
    }
    Ok(())
}

/// The model name an engine serves (its `/v1/models`), once it is up.
#[cfg(feature = "embedded")]
async fn served_model(engine: &str) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        if let Ok(stream) = TcpStream::connect(engine).await {
            if let Ok((mut sender, connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            {
                tokio::spawn(connection);
                let request = http::Request::get("/v1/models")
                    .header("host", engine)
                    .body(Full::new(Bytes::new()))?;
                if let Ok(response) = sender.send_request(request).await {
                    let body = response.into_body().collect().await?.to_bytes();
                    let list: serde_json::Value = serde_json::from_slice(&body)?;
                    if let Some(id) = list["data"][0]["id"].as_str() {
                        return Ok(id.to_owned());
                    }
                }
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the engine did not come up within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
