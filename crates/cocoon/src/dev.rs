//! `cocoon dev`: a whole network on loopback in one process — proxy, worker(s) and client, each
//! with a fresh `fake`-attested identity and every check on (the dev registry allows exactly the
//! dev images and model, and lists the proxy the others find), ready for `curl`. A local ledger
//! with the development faucet on settles the money — or, with `--settlement ton-devnet`, the
//! Cocoon contracts on a local TON devnet (a child Node process running the real TVM): the proxy
//! stakes from the faucet, the client deposits from it, and every answer shows its cost.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use cocoon_client::ClientConfig;
use cocoon_ledger::LedgerConfig;
use cocoon_money::{
    AccountId, Hash32, ImageRole, Registry, RegistryEdit, Settlement, SettlementBackend,
};
use cocoon_node::attestation::AttestationArgs;
use cocoon_node::serve::HttpLimits;
use cocoon_proto::clock::SystemClock;
use cocoon_proxy::ProxyConfig;
use cocoon_tee::{AttestationKind, FakeAttester};
use cocoon_worker::WorkerConfig;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const PROXY_IMAGE: &str = "cocoon-proxy-dev";
const WORKER_IMAGE: &str = "cocoon-worker-dev";
const CLIENT_IMAGE: &str = "cocoon-client-dev";
/// What the dev faucet gives each node that needs money (nano-units: 1000 units).
const DEV_FAUCET: u64 = 1_000_000_000_000;
/// The registry owner of a dev ledger: a well-known key, as befits a ledger anyone may mint on.
const DEV_OWNER_SEED: [u8; 32] = *b"cocoon-dev-registry-owner-key!!!";

/// The registry owner's key of every dev (and benchmark) network.
pub(crate) fn owner_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&DEV_OWNER_SEED)
}

/// Options of `cocoon dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the network's state. Default: the user's data directory (e.g.
    /// ~/.local/share/cocoon/dev).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The workers' engine: `embedded` (the built-in llama.cpp engine with `--model-path`, or the
    /// default SmolLM2-135M-Instruct fetched once), `synthetic` (a fixed-rate token stream for
    /// benchmarks, not a model), or the URL of an OpenAI-compatible server.
    #[arg(long, value_name = "ENGINE", default_value = DEFAULT_ENGINE)]
    pub engine: String,
    /// Model name, required with an engine URL.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub model: String,
    /// The weights: the GGUF file for the `embedded` engine (default: SmolLM2-135M-Instruct,
    /// fetched once), or the file or directory an engine URL serves (then attested by hash).
    #[arg(long, value_name = "PATH", default_value = "")]
    pub model_path: String,
    /// How many workers to start.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub workers: u32,
    /// Requests each worker serves at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_active: u32,
    /// Instance number: every port moves by 10 × N, so several networks can run side by side.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub instance: u16,
    /// Where the network settles: `local` (a local ledger in this process) or `ton-devnet` (the
    /// Cocoon contracts on a local TON devnet, started from `contracts/`; needs Node and
    /// `scripts/setup.sh`). Both start afresh with every run on TON (the devnet keeps no state).
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "local")]
    pub settlement: DevSettlement,
}

/// Where a dev network settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DevSettlement {
    /// A local ledger with its faucet on.
    Local,
    /// The Cocoon contracts on a local TON devnet, with its faucet.
    TonDevnet,
}

/// What settles a running dev network's money, stopped with it.
enum Settler {
    Ledger(cocoon_ledger::LedgerHandle),
    /// The devnet (stopped when dropped), and the root's address.
    Devnet {
        _process: Box<crate::devnet::Devnet>,
        root: String,
    },
}

#[cfg(feature = "embedded")]
const DEFAULT_ENGINE: &str = "embedded";
#[cfg(not(feature = "embedded"))]
const DEFAULT_ENGINE: &str = "synthetic";

fn image_hash(label: &str) -> String {
    FakeAttester::from_label(label).image_hash().to_string()
}

fn attestation(label: &str) -> AttestationArgs {
    AttestationArgs {
        tee: AttestationKind::Fake,
        image_label: label.to_owned(),
        cert_lifetime_secs: 86_400,
        pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
    }
}

/// Runs the local network until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => dirs::data_dir()
            .context("no user data directory; pass --data-dir")?
            .join("cocoon")
            .join("dev"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let shift = 10 * args.instance;
    let port = |base: u16| format!("127.0.0.1:{}", base + shift);
    let shutdown = cocoon_node::shutdown::on_signal();

    let owner_key = owner_key();
    let owner = AccountId::from(&owner_key);
    let (settler, backend, ledger_url) = match args.settlement {
        DevSettlement::Local => {
            let ledger = cocoon_ledger::spawn(
                &LedgerConfig {
                    listen: port(13000).parse().context("the ledger address")?,
                    database: data_dir.join("ledger.sqlite3"),
                    faucet: true,
                    owner: Some(owner),
                    registry: None,
                    genesis: Vec::new(),
                    http: HttpLimits::default(),
                },
                Arc::new(SystemClock),
            )
            .await
            .context("starting the dev ledger")?;
            let url = ledger.url();
            (Settler::Ledger(ledger), crate::settlement::local(&url), url)
        }
        DevSettlement::TonDevnet => {
            let devnet = crate::devnet::start(&port(13000)).await?;
            // A root owned by the dev owner's wallet, with the terms of a new local ledger.
            let root = cocoon_ton::devnet::deploy_root(&devnet.base, &Registry::new(owner))
                .await
                .context("deploying the Cocoon root on the devnet")?
                .to_hex();
            let backend: Arc<dyn SettlementBackend> =
                Arc::new(crate::settlement::devnet_backend(&devnet.base, &root).await?);
            let api = devnet.api();
            (
                Settler::Devnet {
                    _process: Box::new(devnet),
                    root,
                },
                backend,
                api,
            )
        }
    };
    let on_ton = args.settlement == DevSettlement::TonDevnet;
    // On TON the root contract is the registry's authority: nodes pin no owner key.
    let registry_owner = if on_ton {
        String::new()
    } else {
        owner.to_string()
    };
    // The registry owner's handle, for the dev registry's edits below.
    let owner_ledger = backend.connect(Some(owner_key.clone()))?;
    if on_ton {
        // Its wallet pays for the registry's updates.
        owner_ledger
            .faucet(DEV_FAUCET)
            .await
            .context("funding the registry owner's wallet")?;
    }
    let owner_key_file = data_dir.join("registry-owner.key");
    if !owner_key_file.exists() {
        crate::registry::write_key(&owner_key_file, &owner_key)?;
    }
    // The dev registry lists this network's proxy and images, as a production registry would; the
    // nodes below find each other and judge each other from it.
    register_dev_network(&*owner_ledger, &port(11001), &port(11002), !on_ton).await?;

    let proxy = cocoon_proxy::start(
        ProxyConfig {
            worker_listen: port(11001),
            client_listen: port(11002),
            stats_listen: port(11000),
            allow_worker_image: Vec::new(),
            min_worker_tee: AttestationKind::Fake,
            accept_remote_engines: false,
            allow_client_image: vec![image_hash(CLIENT_IMAGE)],
            min_client_tee: AttestationKind::Fake,
            allow_model: Vec::new(),
            max_body_bytes: 4 << 20,
            max_request_secs: 600,
            drain_secs: 30,
            ledger: ledger_url.clone(),
            registry_owner: registry_owner.clone(),
            data_dir: data_dir.join("proxy"),
            // Development: the proxy holds its operator's key (it says so loudly at start).
            operator_account: String::new(),
            operator_key_file: Some(data_dir.join("proxy-operator.key")),
            test_only_bad_worker_vouchers: None,
            stake: 0,
            faucet: DEV_FAUCET,
            settle_interval_ms: 2_000,
            withdraw_threshold: 10_000_000_000,
            reserve_max_tokens: 4096,
            queue_depth: cocoon_proxy::queue::QueueConfig::default().depth,
            queue_per_client: cocoon_proxy::queue::QueueConfig::default().per_client,
            queue_wait_ms: 5_000,
            max_unpaid: 0,
            test_only_overcharge: false,
            test_only_worker_fee: None,
            handshake_timeout_secs: 5,
            max_handshakes: 64,
            http: HttpLimits::default(),
            attestation: attestation(PROXY_IMAGE),
        },
        &*backend,
        shutdown.clone(),
    )
    .await?;

    let mut workers = Vec::new();
    for index in 0..args.workers as u16 {
        let worker = cocoon_worker::start(
            WorkerConfig {
                proxy: Vec::new(),
                allow_proxy_image: Vec::new(),
                min_peer_tee: AttestationKind::Fake,
                engine: args.engine.clone(),
                allow_remote_engine: false,
                model: args.model.clone(),
                model_path: args.model_path.clone(),
                weights_copy_dir: String::new(),
                context_length: 4096,
                coefficient: 1000,
                max_active: args.max_active,
                stats_listen: port(12000 + 100 * index),
                max_body_bytes: 4 << 20,
                synthetic_chunk_bytes: 128,
                synthetic_interval_us: 0,
                ledger: ledger_url.clone(),
                registry_owner: registry_owner.clone(),
                data_dir: data_dir.join(format!("worker-{index}")),
                payout_account: String::new(),
                drain_secs: 30,
                claim_threshold: 1_000_000,
                claim_interval_ms: 5_000,
                faucet: if on_ton { DEV_FAUCET } else { 0 },
                max_unvouched: 10_000_000_000,
                receipt_batch_ms: 2,
                http: HttpLimits::default(),
                attestation: attestation(WORKER_IMAGE),
            },
            &*backend,
            shutdown.clone(),
        )
        .await?;
        workers.push(worker);
    }
    let model = workers[0].info.model.clone();
    allow_dev_model(
        &*owner_ledger,
        &model,
        workers[0].info.model_hash.as_deref(),
    )
    .await?;

    let client = cocoon_client::start(
        ClientConfig {
            listen: port(10000),
            proxy: Vec::new(),
            allow_proxy_image: Vec::new(),
            min_peer_tee: AttestationKind::Fake,
            api_key: Vec::new(),
            cors_origin: Vec::new(),
            max_body_bytes: 4 << 20,
            max_coefficient: 4000,
            timeout_secs: 300,
            ledger: ledger_url.clone(),
            registry_owner: registry_owner.clone(),
            data_dir: data_dir.join("client"),
            deposit: 10_000_000_000,
            stake: 0,
            faucet: DEV_FAUCET,
            settle_interval_ms: 1_000,
            no_receipt_header: false,
            test_only_withhold_payments: false,
            test_only_claim_wallet: None,
            http: HttpLimits::default(),
            attestation: attestation(CLIENT_IMAGE),
        },
        &*backend,
        shutdown.clone(),
    )
    .await?;
    let api = format!("http://{}", client.local_addr);
    wait_until_ready(&api).await?;

    println!(
        "Cocoon dev network is up (fake attestation, every check on). Data: {}",
        data_dir.display()
    );
    println!("  client API (OpenAI-compatible): {api}/v1");
    match &settler {
        Settler::Ledger(_) => {
            println!("  ledger:       {ledger_url}/v1/stats (faucet on)");
            println!(
                "  registry:     cocoon registry --ledger {ledger_url} show  (owner {owner}, key: {})",
                owner_key_file.display()
            );
        }
        Settler::Devnet { root, .. } => {
            println!("  TON devnet:   {ledger_url} (faucet on), root {root}");
            println!(
                "  registry:     cocoon registry --settlement ton-devnet --ton-api {ledger_url} \\\n                  --ton-root {root} show  (owner key: {})",
                owner_key_file.display()
            );
        }
    }
    println!("  proxy stats:  http://{}/stats", proxy.stats_addr);
    for worker in &workers {
        println!("  worker stats: http://{}/stats", worker.stats_addr);
    }
    println!("  model: {model}");
    println!();
    println!("Try:");
    println!(
        "  curl {api}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"What is the capital of France?\"}}],\"max_tokens\":64}}'"
    );
    println!();
    println!("Ctrl-C stops the network.");

    let (proxy_done, client_done) = tokio::join!(proxy.wait(), client.wait());
    for worker in workers {
        worker.wait().await?;
    }
    proxy_done?;
    client_done?;
    if let Settler::Ledger(ledger) = settler {
        ledger.shutdown().await.context("stopping the dev ledger")?;
    }
    println!("Cocoon dev network stopped.");
    Ok(())
}

/// Lists the dev proxy's endpoints and the dev images in the registry, unless a previous run did,
/// and (where nodes check the owner's signature, `signed`) makes sure its version is signed.
async fn register_dev_network(
    ledger: &dyn Settlement,
    worker_endpoint: &str,
    client_endpoint: &str,
    signed: bool,
) -> anyhow::Result<()> {
    update_dev_registry(ledger, signed, |current| {
        let mut edits = Vec::new();
        for (role, label) in [
            (ImageRole::Proxy, PROXY_IMAGE),
            (ImageRole::Worker, WORKER_IMAGE),
        ] {
            let hash: Hash32 = image_hash(label).parse()?;
            if !current.images(role).contains(&hash) {
                edits.push(RegistryEdit::AllowImage { role, hash });
            }
        }
        let listed = current.proxies.iter().any(|proxy| {
            proxy.worker_endpoint == worker_endpoint && proxy.client_endpoint == client_endpoint
        });
        if !listed {
            edits.push(RegistryEdit::AddProxy {
                worker_endpoint: worker_endpoint.to_owned(),
                client_endpoint: client_endpoint.to_owned(),
            });
        }
        Ok(edits)
    })
    .await
}

/// Makes the dev workers' model the only one the dev registry allows (once the first worker has
/// hashed its weights), so an earlier run's model in the same data directory does not keep this
/// run's workers out. An engine that reports no weights hash (synthetic, an engine URL) can only be
/// admitted by a registry that lists no models.
async fn allow_dev_model(
    ledger: &dyn Settlement,
    model: &str,
    hash: Option<&str>,
) -> anyhow::Result<()> {
    let wanted = match hash {
        Some(hash) => BTreeMap::from([(model.to_owned(), hash.parse::<Hash32>()?)]),
        None => BTreeMap::new(),
    };
    let current = crate::registry::read(ledger, "the dev ledger").await?;
    if current.models != wanted {
        let mut next = current.clone();
        next.models = wanted;
        next.version = current.version + 1;
        ledger
            .update_registry(next)
            .await
            .context("updating the dev registry's models")?;
    }
    Ok(())
}

/// Applies the edits `wanted` finds missing from the current dev registry, as its owner.
async fn update_dev_registry(
    ledger: &dyn Settlement,
    signed: bool,
    wanted: impl FnOnce(&cocoon_money::Registry) -> anyhow::Result<Vec<RegistryEdit>>,
) -> anyhow::Result<()> {
    let answer = ledger
        .registry_answer()
        .await
        .context("reading the dev registry")?;
    let edits = wanted(&answer.registry)?;
    // The nodes read only versions the owner signed: a new ledger's first one is not.
    if !edits.is_empty() || (signed && answer.signed_update.is_none()) {
        crate::registry::apply(ledger, &answer.registry, &edits).await?;
    }
    Ok(())
}

/// Waits until the client's `/healthz` says a request can be served at once: links up, the model
/// routable, the contract with the proxy open and funded.
async fn wait_until_ready(api: &str) -> anyhow::Result<()> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("{api}/healthz").parse()?;
    let started = Instant::now();
    let mut last = String::from("no answer");
    loop {
        if let Ok(response) = client.get(uri.clone()).await {
            let ready = response.status().is_success();
            if let Ok(body) = response.into_body().collect().await {
                last = String::from_utf8_lossy(&body.to_bytes()).trim().to_owned();
            }
            if ready {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the network did not come up within 60 s (the client's /healthz: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
