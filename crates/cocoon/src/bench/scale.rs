//! `cocoon bench scale`: one proxy under many worker links and many concurrent paced streams.
//!
//! One child process (`cocoon bench scale-workers`, hidden) runs every worker, each a full worker
//! with its own key and RA-TLS certificate and its own link, in front of the in-process synthetic
//! engine paced like a real one. A few client processes carry the streams, which this process
//! opens (one connection each) and reads to their end. The proxy's RSS is read from `/proc` before
//! the links, after them and during the streams; its CPU from `/proc/PID/stat`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use cocoon_node::attestation::AttestationArgs;
use cocoon_node::serve::HttpLimits;
use cocoon_tee::AttestationKind;
use cocoon_worker::WorkerConfig;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::load::{completion_tokens, post_chat, wait_ready};
use super::network::{probe, start_core};
use super::{cpu_time, ensure_ports_free, spawn, strings};

/// Options of `cocoon bench scale`.
#[derive(Debug, Args)]
pub struct ScaleBenchArgs {
    /// Worker links, all from one worker-simulating process (each its own certificate).
    #[arg(long, default_value_t = 100)]
    pub links: usize,
    /// Concurrent client streams.
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Client processes the streams are spread over (an HTTP/2 link carries at most 8192).
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Tokens per stream.
    #[arg(long, default_value_t = 200)]
    pub tokens: u64,
    /// Milliseconds between tokens (50: 20 tokens/s).
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Streams opened per millisecond while ramping up.
    #[arg(long, default_value_t = 2)]
    pub ramp_per_ms: usize,
    /// First port the benchmark uses (it takes 7 plus one per client from here).
    #[arg(long, default_value_t = 19500)]
    pub base_port: u16,
}

/// Options of `cocoon bench scale-workers` (started by `cocoon bench scale`).
#[derive(Debug, Args)]
pub struct ScaleWorkersArgs {
    /// Workers to run in this process.
    #[arg(long)]
    pub count: usize,
    /// The proxy's worker address.
    #[arg(long)]
    pub proxy: String,
    /// The ledger's base URL.
    #[arg(long)]
    pub ledger: String,
    /// The registry owner.
    #[arg(long)]
    pub registry_owner: String,
    /// Where each worker keeps its wallet (a directory per worker below it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Slots per worker.
    #[arg(long)]
    pub max_active: u32,
    /// Microseconds between the synthetic engine's tokens.
    #[arg(long)]
    pub interval_us: u64,
}

/// Workers started at once while the process comes up.
const STARTING_AT_ONCE: usize = 32;

/// Runs `count` workers in this process until Ctrl-C or SIGTERM.
pub async fn scale_workers(args: ScaleWorkersArgs) -> anyhow::Result<()> {
    let shutdown = cocoon_node::shutdown::on_signal();
    let backend = crate::settlement::local(&args.ledger);
    let started = futures::stream::iter(0..args.count)
        .map(|index| {
            let config = WorkerConfig {
                proxy: vec![args.proxy.clone()],
                allow_proxy_image: Vec::new(),
                min_peer_tee: AttestationKind::Fake,
                engine: "synthetic".into(),
                allow_remote_engine: false,
                weights_copy_dir: String::new(),
                model: String::new(),
                model_path: String::new(),
                context_length: 4096,
                coefficient: 1000,
                max_active: args.max_active,
                stats_listen: "127.0.0.1:0".into(),
                max_body_bytes: 1 << 20,
                synthetic_chunk_bytes: 8,
                synthetic_interval_us: args.interval_us,
                ledger: args.ledger.clone(),
                registry_owner: args.registry_owner.clone(),
                data_dir: args.data_dir.join(format!("worker-{index}")),
                payout_account: String::new(),
                drain_secs: 0,
                claim_threshold: u64::MAX,
                claim_interval_ms: 3_600_000,
                faucet: 0,
                // The benchmark's own proxy: its pay is not what is measured.
                max_unvouched: u64::MAX,
                receipt_batch_ms: 2,
                http: HttpLimits::default(),
                attestation: AttestationArgs {
                    tee: AttestationKind::Fake,
                    image_label: "cocoon-bench-worker".into(),
                    cert_lifetime_secs: 86_400,
                    pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
                },
            };
            cocoon_worker::start(config, &*backend, shutdown.clone())
        })
        .buffer_unordered(STARTING_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    let mut workers = Vec::with_capacity(started.len());
    for worker in started {
        workers.push(worker.context("starting a worker")?);
    }
    shutdown.cancelled().await;
    Ok(())
}

/// A process's resident memory in bytes, from `/proc/PID/status` (Linux; `None` elsewhere).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A `/jsonstats` value of the proxy.
async fn proxy_stats(address: &str) -> anyhow::Result<serde_json::Value> {
    let stream = TcpStream::connect(address).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get("/jsonstats")
        .header("host", address)
        .body(Full::new(Bytes::new()))?;
    let body = sender.send_request(request).await?.collect().await?;
    Ok(serde_json::from_slice(&body.to_bytes())?)
}

/// What one stream saw.
struct Streamed {
    first_token: Duration,
    tokens: u64,
}

/// One paced stream on a new connection: the time to its first body bytes, and its tokens.
async fn stream_once(address: &str, body: Bytes) -> anyhow::Result<Streamed> {
    let begun = Instant::now();
    let mut body = post_chat(address, body).await?;
    let mut answer = Vec::new();
    let mut first_token = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            first_token.get_or_insert_with(|| begun.elapsed());
            answer.extend_from_slice(&data);
        }
    }
    let tokens = completion_tokens(&Bytes::from(answer)).await;
    Ok(Streamed {
        first_token: first_token.context("an empty answer")?,
        tokens,
    })
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `cocoon bench scale`.
pub async fn scale(args: ScaleBenchArgs) -> anyhow::Result<()> {
    let clients = args.clients.max(1);
    let ports = u16::try_from(7 + clients).context("too many clients")?;
    ensure_ports_free(args.base_port, ports)?;
    let mut core = start_core(args.base_port, 1, &[]).await?;
    let proxy_pid = core.nodes[1].0.id();
    let stats = core.proxy_stats();
    let started = Instant::now();
    while proxy_stats(&stats).await.is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the proxy did not come up within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_alone = rss_bytes(proxy_pid).unwrap_or(0);
    println!(
        "cocoon bench scale: {} worker links (one process), {} streams over {} client processes, {} tokens each every {} ms",
        args.links, args.streams, clients, args.tokens, args.interval_ms
    );

    // The links.
    let max_active =
        u32::try_from(args.streams.div_ceil(args.links.max(1)) + 1).unwrap_or(u32::MAX);
    let workers = strings(&[
        "bench",
        "scale-workers",
        "--count",
        &args.links.to_string(),
        "--proxy",
        &core.proxy_workers(),
        "--ledger",
        &core.ledger,
        "--registry-owner",
        &core.owner,
        "--data-dir",
        &core.dir("workers"),
        "--max-active",
        &max_active.to_string(),
        "--interval-us",
        &(args.interval_ms * 1000).to_string(),
    ]);
    core.nodes.push(spawn(&workers, 1)?);
    let linking = Instant::now();
    let mut linked = 0;
    while linked < args.links {
        let stats = proxy_stats(&stats).await?;
        linked = stats["details"]["workers"].as_array().map_or(0, Vec::len);
        if linking.elapsed() > Duration::from_secs(600) {
            println!("links: only {linked} of {} linked within 600 s", args.links);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss_linked = rss_bytes(proxy_pid).unwrap_or(0);
    println!(
        "links: {linked} up in {:.1} s; proxy RSS {:.1} MiB alone, {:.1} MiB linked: {:.1} KiB per link",
        linking.elapsed().as_secs_f64(),
        mib(rss_alone),
        mib(rss_linked),
        rss_linked.saturating_sub(rss_alone) as f64 / 1024.0 / linked.max(1) as f64
    );

    // The clients.
    let mut apis = Vec::new();
    for index in 0..clients {
        let api = core.port(7 + index as u16);
        core.spawn_client(&format!("client-{index}"), &api, 1)?;
        apis.push(api);
    }
    for api in &apis {
        wait_ready(api, &probe("synthetic")).await?;
    }

    // The streams.
    let body = Bytes::from(format!(
        r#"{{"model":"synthetic","stream":true,"stream_options":{{"include_usage":true}},"max_tokens":{},"messages":[{{"role":"user","content":"hi"}}]}}"#,
        args.tokens
    ));
    let peak_rss = Arc::new(AtomicU64::new(rss_linked));
    let peak_active = Arc::new(AtomicU64::new(0));
    let sampling = tokio::spawn({
        let (peak_rss, peak_active, stats) = (peak_rss.clone(), peak_active.clone(), stats.clone());
        async move {
            loop {
                if let Some(rss) = rss_bytes(proxy_pid) {
                    peak_rss.fetch_max(rss, Ordering::Relaxed);
                }
                if let Ok(stats) = proxy_stats(&stats).await {
                    let active = stats["active_streams"].as_u64().unwrap_or(0);
                    peak_active.fetch_max(active, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let cpu_before = cpu_time(proxy_pid);
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(args.streams);
    for index in 0..args.streams {
        let (api, body) = (apis[index % apis.len()].clone(), body.clone());
        tasks.push(tokio::spawn(async move { stream_once(&api, body).await }));
        if (index + 1) % args.ramp_per_ms.max(1) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut first_tokens = Vec::new();
    let (mut tokens, mut failures) = (0u64, 0usize);
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        match task.await? {
            Ok(streamed) => {
                first_tokens.push(streamed.first_token);
                tokens += streamed.tokens;
            }
            Err(error) => {
                failures += 1;
                *reasons.entry(error.to_string()).or_default() += 1;
            }
        }
    }
    let elapsed = began.elapsed();
    sampling.abort();
    let cpu_used = cpu_time(proxy_pid)
        .zip(cpu_before)
        .and_then(|(after, before)| after.checked_sub(before));
    first_tokens.sort();
    let engine_first_token_ms = args.interval_ms as f64;
    let peak_rss = peak_rss.load(Ordering::Relaxed);
    println!(
        "streams: {} answered, {failures} failed, in {:.1} s; at most {} at once at the proxy",
        first_tokens.len(),
        elapsed.as_secs_f64(),
        peak_active.load(Ordering::Relaxed)
    );
    for (reason, count) in &reasons {
        println!("  {count} × {reason}");
    }
    println!(
        "first token: p50 {:.1} ms, p99 {:.1} ms; added to the engine's own {engine_first_token_ms} ms: p50 {:.1} ms, p99 {:.1} ms",
        percentile_ms(&first_tokens, 50.0),
        percentile_ms(&first_tokens, 99.0),
        percentile_ms(&first_tokens, 50.0) - engine_first_token_ms,
        percentile_ms(&first_tokens, 99.0) - engine_first_token_ms,
    );
    println!(
        "proxy: peak RSS {:.1} MiB: {:.1} KiB per stream above the linked proxy; CPU {} per token ({tokens} tokens)",
        mib(peak_rss),
        peak_rss.saturating_sub(rss_linked) as f64 / 1024.0 / args.streams.max(1) as f64,
        cpu_used.map_or("unknown".into(), |used| format!(
            "{:.1} µs",
            used.as_secs_f64() * 1e6 / tokens.max(1) as f64
        )),
    );
    Ok(())
}
