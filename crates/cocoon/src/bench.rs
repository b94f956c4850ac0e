//! `cocoon bench`: throughput and latency of the whole network against the same engine called
//! directly, measured in one run on one machine, so the ratios hold however noisy the machine is.
//!
//! Every node runs as its own process (as in production), the engine is the synthetic one served
//! over HTTP, and the load generator opens a new connection per request — the harness the C++
//! Cocoon was measured with (50 streamed chunks of 128 bytes).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

#[cfg(feature = "embedded")]
mod embedded;
mod floor;
mod load;
mod network;
mod scale;

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
    /// One proxy under many worker links (from one process) and many concurrent paced streams:
    /// its memory per link and per stream, CPU per token, added time to first token, failures.
    Scale(scale::ScaleBenchArgs),
    /// The workers of `cocoon bench scale`, all in this process.
    #[command(hide = true)]
    ScaleWorkers(scale::ScaleWorkersArgs),
    /// One of the relays of `cocoon bench --floor`.
    #[command(hide = true)]
    Relay(floor::RelayArgs),
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
    /// How the synthetic engine sends its stream, each mode measured against its own direct
    /// baseline (comma-separated): `batched` (chunks ready at once go out together: the stream
    /// this benchmark measured before), `flushed` (each chunk written and flushed on its own, as
    /// vLLM and llama.cpp do), `paced` (a chunk every `--paced-interval-us`, like an engine
    /// generating tokens).
    #[arg(long, value_delimiter = ',', default_value = "batched,flushed,paced")]
    pub modes: Vec<EngineMode>,
    /// Microseconds between chunks in the `paced` mode.
    #[arg(long, default_value_t = 20_000)]
    pub paced_interval_us: u64,
    /// The worker's `--receipt-batch-ms`: how long an answer may wait for the others running to
    /// end, so that their receipts are signed as one batch (0: no answer waits; those that end
    /// at the same moment are still signed together).
    #[arg(long, value_name = "MS", default_value_t = 2)]
    pub receipt_batch_ms: u64,
    /// Runtime threads of each node process (0: one per core). All nodes share this machine's
    /// cores with the engine and the load generator, so one thread each is the default.
    #[arg(long = "node-threads", default_value_t = 1)]
    pub node_threads: usize,
    /// Also measure the floor: three relays in place of the client, proxy and worker, on the same
    /// transport (HTTP surface, HTTP/2 links over TLS 1.3, the engine client) doing none of the
    /// nodes' work — what the transport alone costs, against which the nodes' own work is seen.
    #[arg(long)]
    pub floor: bool,
    /// First port of the ports the benchmark's nodes use (it takes 10 per mode from here).
    #[arg(long, default_value_t = 19000)]
    pub base_port: u16,
}

/// How the synthetic engine streams (see [`NetworkBenchArgs::modes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineMode {
    /// Ready chunks go out together.
    Batched,
    /// Each chunk written and flushed on its own.
    Flushed,
    /// A chunk every `--paced-interval-us`.
    Paced,
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

    /// CPU per request since `start`, for each process that could be read.
    fn per_request(&self, requests: usize) -> CpuPerRequest {
        let requests = requests.max(1) as f64;
        let used = self
            .processes
            .iter()
            .zip(&self.before)
            .filter_map(|((name, pid), before)| {
                let used = cpu_time(*pid)?.checked_sub((*before)?)?;
                Some((*name, used.as_secs_f64() * 1e6 / requests))
            })
            .collect();
        CpuPerRequest(used)
    }
}

/// Microseconds of CPU per request, by process name; shown as `name µs, …`.
struct CpuPerRequest(Vec<(&'static str, f64)>);

impl CpuPerRequest {
    /// The total of the processes named `names`.
    fn total_of(&self, names: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(_, micros)| micros)
            .sum()
    }
}

impl std::fmt::Display for CpuPerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, (name, micros)) in self.0.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            write!(f, "{separator}{name} {micros:.0}")?;
        }
        Ok(())
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
            None => network::network(args.network).await,
            #[cfg(feature = "embedded")]
            Some(BenchTarget::Engine(engine)) => embedded::embedded_engine(engine).await,
            Some(BenchTarget::Scale(scale)) => scale::scale(scale).await,
            Some(BenchTarget::ScaleWorkers(workers)) => scale::scale_workers(workers).await,
            Some(BenchTarget::Relay(relay)) => floor::relay(relay).await,
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
