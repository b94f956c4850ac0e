//! The network benchmark: the nodes as deployed, in front of the synthetic engine, against that
//! engine called directly.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::load::{measure, wait_ready};
use super::{ensure_ports_free, spawn, strings, CpuMeter, EngineMode, NetworkBenchArgs, Process};

/// A benchmark's ledger and proxy, with their state in a temporary directory removed when dropped
/// (after the nodes are stopped).
pub(super) struct Core {
    /// The ledger and proxy first, then whatever the benchmark adds.
    pub(super) nodes: Vec<Process>,
    /// The ledger's base URL.
    pub(super) ledger: String,
    /// The registry owner every node pins.
    pub(super) owner: String,
    pub(super) data: PathBuf,
    base_port: u16,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Core {
    /// `127.0.0.1:` the port `offset` from the benchmark's base port.
    pub(super) fn port(&self, offset: u16) -> String {
        format!("127.0.0.1:{}", self.base_port + offset)
    }

    /// The data directory of a node named `role`.
    pub(super) fn dir(&self, role: &str) -> String {
        self.data.join(role).display().to_string()
    }

    /// Where workers dial the proxy.
    pub(super) fn proxy_workers(&self) -> String {
        self.port(2)
    }

    /// The proxy's stats surface.
    pub(super) fn proxy_stats(&self) -> String {
        self.port(4)
    }

    /// Starts a client named `role` listening on `listen`, funded and linked to the proxy.
    pub(super) fn spawn_client(
        &mut self,
        role: &str,
        listen: &str,
        threads: usize,
    ) -> anyhow::Result<()> {
        let args = strings(&[
            "client",
            "--listen",
            listen,
            "--proxy",
            &self.port(3),
            "--max-coefficient",
            "1000",
            "--ledger",
            &self.ledger,
            "--data-dir",
            &self.dir(role),
            "--registry-owner",
            &self.owner,
            "--min-peer-tee",
            "fake",
            "--faucet",
            BENCH_FUNDS,
            "--deposit",
            BENCH_DEPOSIT,
        ]);
        self.nodes.push(spawn(&args, threads)?);
        Ok(())
    }
}

/// Starts a ledger (port 6 from `base_port`, registry published) and a proxy (ports 2, 3, 4)
/// with `proxy_flags`.
pub(super) async fn start_core(
    base_port: u16,
    threads: usize,
    proxy_flags: &[String],
) -> anyhow::Result<Core> {
    let data =
        std::env::temp_dir().join(format!("cocoon-bench-{}-{base_port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).context("creating the benchmark's data directory")?;
    let owner_key = crate::dev::owner_key();
    let mut core = Core {
        nodes: Vec::new(),
        ledger: format!("http://127.0.0.1:{}", base_port + 6),
        owner: cocoon_money::AccountId::from(&owner_key).to_string(),
        data,
        base_port,
    };
    core.nodes.push(spawn(
        &strings(&[
            "ledger",
            "--listen",
            &core.port(6),
            "--database",
            &core.data.join("ledger.sqlite3").display().to_string(),
            "--faucet",
            "--owner",
            &core.owner,
        ]),
        threads,
    )?);
    crate::registry::publish_when_up(&core.ledger, &owner_key).await?;
    let mut proxy = strings(&[
        "proxy",
        "--worker-listen",
        &core.port(2),
        "--client-listen",
        &core.port(3),
        "--stats-listen",
        &core.port(4),
        "--ledger",
        &core.ledger,
        "--data-dir",
        &core.dir("proxy"),
        "--registry-owner",
        &core.owner,
        "--min-worker-tee",
        "fake",
        "--min-client-tee",
        "fake",
        "--faucet",
        BENCH_FUNDS,
        // Development: the proxy holds its operator's key (the benchmark's own network).
        "--operator-key-file",
        &format!("{}/operator.key", core.dir("proxy")),
    ]);
    proxy.extend_from_slice(proxy_flags);
    core.nodes.push(spawn(&proxy, threads)?);
    Ok(core)
}

/// The nodes of a benchmark network (ledger, proxy, worker and client), stopped when dropped.
pub(super) struct Network {
    pub(super) core: Core,
    /// The client's API.
    pub(super) api: String,
}

/// What the faucet gives the benchmark's proxy and client (nano-units), enough for any run.
const BENCH_FUNDS: &str = "1000000000000";
/// What the benchmark's client deposits with the proxy: within the faucet's largest grant.
const BENCH_DEPOSIT: &str = "500000000000";

/// Starts a ledger, proxy, worker (forwarding to `engine_url` for `model`, with `worker_flags` too)
/// and client on ports from `base_port`, with their state in a temporary directory removed
/// afterwards.
pub(super) async fn start_network(
    engine_url: &str,
    model: &str,
    max_active: usize,
    base_port: u16,
    threads: usize,
    worker_flags: &[String],
) -> anyhow::Result<Network> {
    let mut core = start_core(base_port, threads, &[]).await?;
    let mut worker = strings(&[
        "worker",
        "--proxy",
        &core.proxy_workers(),
        "--engine",
        engine_url,
        "--model",
        model,
        "--max-active",
        &max_active.to_string(),
        "--stats-listen",
        &core.port(5),
        "--ledger",
        &core.ledger,
        "--data-dir",
        &core.dir("worker"),
        "--registry-owner",
        &core.owner,
        "--min-peer-tee",
        "fake",
    ]);
    worker.extend_from_slice(worker_flags);
    core.nodes.push(spawn(&worker, threads)?);
    let api = core.port(1);
    core.spawn_client("client", &api, threads)?;
    let network = Network { core, api };
    wait_ready(&network.api, &probe(model)).await?;
    Ok(network)
}

/// A one-token request for `model`, to tell when a network answers.
pub(super) fn probe(model: &str) -> String {
    format!(r#"{{"model":"{model}","max_tokens":1,"messages":[{{"role":"user","content":"hi"}}]}}"#)
}

/// Ports each engine mode's engine and network take, from `--base-port` on.
const PORTS_PER_MODE: u16 = 10;

/// `cocoon bench`: for each engine mode, a fresh engine and network, measured against that engine
/// called directly.
pub async fn network(args: NetworkBenchArgs) -> anyhow::Result<()> {
    println!(
        "cocoon bench: {} chunks x {} B per streamed request, a new connection per request, {} s per cell",
        args.chunks, args.chunk_bytes, args.seconds
    );
    println!(
        "direct = the synthetic engine over HTTP; network = app -> client -> proxy -> worker -> engine; {} runtime thread(s) per process",
        args.node_threads
    );
    for (index, &mode) in args.modes.iter().enumerate() {
        let offset = u16::try_from(index)
            .ok()
            .and_then(|index| index.checked_mul(PORTS_PER_MODE))
            .and_then(|offset| args.base_port.checked_add(offset))
            .context("too many modes for --base-port")?;
        // The non-streamed workload does not depend on how the stream is sent: measured once.
        measure_mode(&args, mode, offset, index == 0).await?;
    }
    Ok(())
}

/// The synthetic engine's flags for `mode`, and a line that says what it does.
fn engine_mode(args: &NetworkBenchArgs, mode: EngineMode) -> (Vec<String>, String) {
    match mode {
        EngineMode::Batched => (
            Vec::new(),
            "batched: chunks ready at once are written together (a few writes per answer)".into(),
        ),
        EngineMode::Flushed => (
            strings(&["--flush-each-chunk"]),
            "flushed: each chunk written and flushed on its own, as vLLM and llama.cpp do".into(),
        ),
        EngineMode::Paced => (
            strings(&["--interval-us", &args.paced_interval_us.to_string()]),
            format!(
                "paced: a chunk every {} ms, like an engine generating tokens",
                args.paced_interval_us as f64 / 1000.0
            ),
        ),
    }
}

async fn measure_mode(
    args: &NetworkBenchArgs,
    mode: EngineMode,
    base_port: u16,
    with_json: bool,
) -> anyhow::Result<()> {
    ensure_ports_free(base_port, if args.floor { 10 } else { 7 })?;
    let engine = format!("127.0.0.1:{base_port}");
    let (mode_flags, description) = engine_mode(args, mode);
    let mut engine_args = strings(&[
        "synthetic-engine",
        "--listen",
        &engine,
        "--chunk-bytes",
        &args.chunk_bytes.to_string(),
    ]);
    engine_args.extend(mode_flags);
    let engine_process = spawn(&engine_args, args.node_threads)?;
    let nodes = start_network(
        &format!("http://{engine}"),
        "synthetic",
        4096,
        base_port,
        args.node_threads,
        &strings(&["--receipt-batch-ms", &args.receipt_batch_ms.to_string()]),
    )
    .await?;
    let api = nodes.api.clone();
    let floor = if args.floor {
        Some(start_floor(&nodes.core, &engine, args.node_threads).await?)
    } else {
        None
    };
    println!("\nengine mode {description}");
    let mut workloads = vec![(
        "stream",
        format!(
            r#"{{"model":"synthetic","stream":true,"max_tokens":{},"messages":[{{"role":"user","content":"hi"}}]}}"#,
            args.chunks
        ),
    )];
    if with_json {
        workloads.push((
            "json",
            r#"{"model":"synthetic","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#
                .to_owned(),
        ));
    }
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
                .zip(&nodes.core.nodes)
            {
                processes.push((name, node.0.id()));
            }
            processes.push(("load", std::process::id()));
            let floor_sample = match &floor {
                Some(floor) => {
                    let cpu = CpuMeter::start(floor.processes());
                    let sample = measure(&floor.api, body, concurrency, duration).await?;
                    let cpu = cpu.per_request(sample.latencies_ms.len());
                    Some((sample, cpu))
                }
                None => None,
            };
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
            let network_cpu = network_cpu.per_request(network.latencies_ms.len());
            println!("        CPU µs per request: direct [{direct_cpu}]; network [{network_cpu}]");
            if let Some((floor, floor_cpu)) = &floor_sample {
                println!(
                    "        floor (relays, no nodes' work): {:.0}/s = {:.1}% of direct, p50 {:.3} ms (+{:.3}); CPU µs per request [{floor_cpu}]{}",
                    floor.throughput(),
                    100.0 * floor.throughput() / direct.throughput(),
                    floor.percentile(50.0),
                    floor.percentile(50.0) - direct.percentile(50.0),
                    match floor.failures {
                        0 => String::new(),
                        failures => format!("; failures {failures}"),
                    }
                );
                println!(
                    "        the nodes' work above the floor: {:+.0} µs CPU per request, {:+.3} ms p50",
                    network_cpu.total_of(&NODES) - floor_cpu.total_of(&NODES),
                    network.percentile(50.0) - floor.percentile(50.0),
                );
            }
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

/// The processes whose CPU the floor's relays stand in for.
const NODES: [&str; 3] = ["proxy", "worker", "client"];

/// The relays of `--floor` (ports 7, 8 and 9 from the mode's base port), stopped when dropped.
struct Floor {
    /// Proxy, worker and client relays, in that order.
    relays: Vec<Process>,
    /// The client relay's API.
    api: String,
}

impl Floor {
    fn processes(&self) -> Vec<(&'static str, u32)> {
        NODES
            .into_iter()
            .zip(self.relays.iter().map(|relay| relay.0.id()))
            .collect()
    }
}

/// Starts the floor's relays in front of `engine`, with their certificate in `core`'s directory.
async fn start_floor(core: &Core, engine: &str, threads: usize) -> anyhow::Result<Floor> {
    let tls_dir = core.dir("floor");
    super::floor::write_tls_material(std::path::Path::new(&tls_dir))?;
    let (api, for_clients, for_workers) = (core.port(7), core.port(8), core.port(9));
    let relay = |role: &[&str]| {
        let mut args = strings(&["bench", "relay", "--tls-dir", &tls_dir]);
        args.extend(strings(role));
        spawn(&args, threads)
    };
    let relays = vec![
        relay(&[
            "proxy",
            "--client-listen",
            &for_clients,
            "--worker-listen",
            &for_workers,
        ])?,
        relay(&[
            "worker",
            "--proxy",
            &for_workers,
            "--engine",
            &format!("http://{engine}"),
        ])?,
        relay(&["client", "--listen", &api, "--proxy", &for_clients])?,
    ];
    let floor = Floor { relays, api };
    wait_ready(&floor.api, &probe("synthetic")).await?;
    Ok(floor)
}
