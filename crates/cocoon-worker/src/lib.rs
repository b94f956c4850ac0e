//! The Cocoon worker: serves one model from an inference engine to proxies.
//!
//! A worker dials its proxies over RA-TLS and serves HTTP/2 on those links ([`link`]); each request
//! is forwarded to the engine ([`engine`]: an OpenAI-compatible server, the embedded llama.cpp
//! engine, or the [`synthetic`] one for benchmarks) and its answer is passed back with its token
//! usage counted ([`metering`]) and a signed [`receipt`]. Capacity is enforced per worker ([`http`]). Proxies send what the
//! worker earned, and it claims on the ledger ([`settlement`]).

#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod engine_request;
pub mod http;
pub mod link;
pub mod metering;
pub mod ready_batch;
pub mod receipt;
pub mod receipt_signer;
pub mod settlement;
pub mod stated_prices;
pub mod synthetic;
pub mod voucher_check;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cocoon_money::{AccountId, ImageRole, SettlementBackend};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::engine_claim::{self, ENGINE_ATTRIBUTE};
use cocoon_node::registry::{keep_each_endpoint, ProxyPort, RegistryWatch};
use cocoon_node::stats::{self, NodeStats};
use cocoon_proto::{EngineKind, WorkerInfo};
use ed25519_dalek::SigningKey;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::WorkerConfig;
use engine::Engine;
use synthetic::{SyntheticParams, SYNTHETIC_MODEL};

/// A started worker.
pub struct RunningWorker {
    /// Where `/healthz`, `/stats`, `/jsonstats` and `/metrics` are served.
    pub stats_addr: SocketAddr,
    /// What the worker announces to proxies.
    pub info: WorkerInfo,
    /// This worker's image hash.
    pub image_hash: cocoon_tee::ImageHash,
    tasks: JoinSet<()>,
}

impl RunningWorker {
    /// Waits until every task has stopped (after shutdown).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(result) = self.tasks.join_next().await {
            result.context("a worker task failed")?;
        }
        Ok(())
    }
}

/// Starts a worker: loads the engine, attests, links to the proxies, serves stats; its registry
/// and earnings are on the settlement `backend`.
pub async fn start(
    config: WorkerConfig,
    backend: &dyn SettlementBackend,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorker> {
    let registry_trust = config.registry_trust(&backend.registry_authority())?;
    let (engine, info) = open_engine(&config).await?;
    let mut claims = BTreeMap::from([
        ("model".to_owned(), info.model.clone()),
        (ENGINE_ATTRIBUTE.to_owned(), config.engine.clone()),
    ]);
    if let Some(hash) = &info.model_hash {
        claims.insert("model_hash".to_owned(), hash.clone());
    }
    let (claim_key, payee) = claim_key_and_payee(&config)?;
    let claims = cocoon_node::wallet::with_wallet(claims, payee);
    let claim_interval = Duration::from_millis(config.claim_interval_ms.max(10));
    let ledger = backend
        .connect(Some(claim_key))
        .context("connecting to the ledger")?;
    if config.faucet > 0 {
        ledger
            .top_up_from_faucet(config.faucet)
            .await
            .context("minting from the ledger's faucet (--faucet)")?;
    }
    let settlement = settlement::WorkerSettlement::new(
        ledger,
        payee,
        config.claim_threshold,
        claim_interval,
        config.max_unvouched,
    );
    let trust = NodeTrust::new(&config.attestation, "worker", claims)
        .await
        .context("attesting the worker")?;
    trust.spawn_renewal(shutdown.clone());
    let stats = NodeStats::new("worker");
    let registry = RegistryWatch::start(backend, registry_trust, shutdown.clone())
        .await
        .context("reading the registry")?;
    let serving = http::Serving {
        info: Arc::new(info.clone()),
        engine,
        slots: Arc::new(Semaphore::new(info.max_active as usize)),
        stats: stats.clone(),
        max_body_bytes: config.max_body_bytes,
        trust: trust.clone(),
        receipts: receipt_signer::ReceiptSigner::start(
            trust.clone(),
            stats.clone(),
            Duration::from_millis(config.receipt_batch_ms),
        ),
        stated_prices: Arc::new(stated_prices::StatedPrices::new(
            registry.derive(|document| document.prices.clone()),
        )),
    };
    let router = http::link_router(serving.clone()).merge(settlement.router());
    let proxy_policy = trust.peer_policy(
        &config.allow_proxy_image,
        &registry,
        ImageRole::Proxy,
        config.min_peer_tee,
    )?;
    let connector = Arc::new(trust.connector(&proxy_policy)?);
    let mut tasks = JoinSet::new();
    let claims_task = settlement.spawn(shutdown.clone());
    tasks.spawn(async move {
        if let Err(error) = claims_task.await {
            tracing::error!(%error, "the settlement task failed");
        }
    });
    let proxies = registry.proxy_endpoints(&config.proxy, ProxyPort::Workers);
    let linking = link::Linking {
        connector,
        policy: proxy_policy,
        router,
        settlement: settlement.clone(),
        stats: stats.clone(),
        drain: Duration::from_secs(config.drain_secs),
    };
    tasks.spawn(keep_each_endpoint(
        proxies,
        shutdown.clone(),
        move |proxy, stop| tokio::spawn(link::keep_linked(proxy, linking.clone(), stop)),
    ));
    let listener = cocoon_node::serve::listen(&config.stats_listen)
        .await
        .with_context(|| format!("binding the stats address {}", config.stats_listen))?;
    let stats_addr = listener.local_addr()?;
    let details_info = info.clone();
    let image_hash = trust.image_hash();
    let details_trust = trust.clone();
    let details: stats::Details = Arc::new(move || {
        json!({
            "attestation": details_trust.stats(),
            "model": details_info.model,
            "model_hash": details_info.model_hash,
            "coefficient": details_info.coefficient,
            "max_active": details_info.max_active,
            "free_slots": serving.slots.available_permits(),
            "image_hash": image_hash.to_string(),
            "registry_version": registry.current().version,
            "registry": registry.status(),
            "wallet": settlement.snapshot(),
        })
    });
    tasks.spawn(cocoon_node::serve::serve_http(
        listener,
        stats::router(stats, details),
        config.http.clone(),
        "stats",
        shutdown.clone().cancelled_owned(),
    ));
    tracing::info!(
        model = %info.model,
        coefficient = info.coefficient,
        max_active = info.max_active,
        %image_hash,
        stats = %stats_addr,
        "worker started"
    );
    Ok(RunningWorker {
        stats_addr,
        info,
        image_hash,
        tasks,
    })
}

/// Runs a worker on the settlement `backend` until `shutdown`.
pub async fn run(
    config: WorkerConfig,
    backend: &dyn SettlementBackend,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(config, backend, shutdown).await?.wait().await
}

/// The key that signs this worker's claims, and the account its earnings are paid to: a fresh
/// in-memory key and the `--payout-account`, or the sealed wallet for both.
fn claim_key_and_payee(config: &WorkerConfig) -> anyhow::Result<(SigningKey, AccountId)> {
    if !config.payout_account.is_empty() {
        let payee = config.payout_account.parse().map_err(|error| {
            anyhow::anyhow!("--payout-account {}: {error}", config.payout_account)
        })?;
        // Anyone may submit a proxy's voucher and it pays the account it names, so this key needs
        // no money and no future: it only signs the claim transactions.
        return Ok((SigningKey::generate(&mut rand::rngs::OsRng), payee));
    }
    if config.attestation.tee == cocoon_tee::AttestationKind::Tdx {
        bail!(
            "a `tdx` worker needs --payout-account ACCOUNT: keeping its own wallet needs the host seal \
             service, which this build does not implement"
        );
    }
    let wallet = cocoon_node::wallet::open_wallet(&config.data_dir, &config.attestation)
        .context("opening the worker's wallet key")?;
    let account = AccountId::from(&wallet);
    Ok((wallet, account))
}

/// What the worker tells each proxy: its model, price and capacity, and what its engine honours
/// (the table in [`cocoon_proto::capabilities`]).
fn announce(
    model: String,
    model_hash: Option<String>,
    config: &WorkerConfig,
    max_active: u32,
    engine: EngineKind,
    context_length: Option<u32>,
) -> WorkerInfo {
    WorkerInfo {
        protocol_version: cocoon_proto::PROTOCOL_VERSION,
        model,
        model_hash,
        coefficient: config.coefficient,
        max_active,
        engine: Some(engine),
        honours: engine.honours(),
        context_length,
        started_at: cocoon_receipt::unix_now(),
    }
}

async fn open_engine(config: &WorkerConfig) -> anyhow::Result<(Engine, WorkerInfo)> {
    match config.engine.as_str() {
        "synthetic" => {
            let model = if config.model.is_empty() {
                SYNTHETIC_MODEL.to_owned()
            } else {
                config.model.clone()
            };
            if !config.model_path.is_empty() {
                bail!("--model-path names the weights of the embedded engine or of an engine URL; the synthetic engine has none");
            }
            let engine = Engine::InProcess(synthetic::router(SyntheticParams {
                chunk_bytes: config.synthetic_chunk_bytes,
                interval: Duration::from_micros(config.synthetic_interval_us),
                flush_each_chunk: false,
            }));
            let info = announce(
                model,
                None,
                config,
                config.max_active,
                EngineKind::Synthetic,
                u32::try_from(synthetic::SYNTHETIC_CONTEXT_TOKENS).ok(),
            );
            Ok((engine, info))
        }
        "embedded" => open_embedded(config).await,
        url => {
            if config.model.is_empty() {
                bail!("--model NAME is required with an engine URL (the name the engine serves)");
            }
            if !config.allow_remote_engine && !engine_claim::locate(url).is_inside_tee() {
                bail!(
                    "--engine {url} is not a loopback http URL: prompts would leave this worker's TEE in \
                     clear. Run the engine beside the worker (127.0.0.1), or pass --allow-remote-engine \
                     (proxies then admit this worker only with --accept-remote-engines)"
                );
            }
            let engine = Engine::http(url)?;
            let model_hash = if config.model_path.is_empty() {
                None
            } else {
                let weights = std::path::PathBuf::from(&config.model_path);
                // Inside a TD the host can write files: its sidecar caches are not believed.
                let sidecars = if config.attestation.tee == cocoon_tee::AttestationKind::Tdx {
                    cocoon_tee::weights::Sidecars::Ignored
                } else {
                    cocoon_tee::weights::Sidecars::Trusted
                };
                let hash = tokio::task::spawn_blocking(move || {
                    cocoon_tee::weights::weights_sha256_with(&weights, sidecars)
                })
                .await?
                .context("hashing the weights named by --model-path")?;
                Some(hash)
            };
            Ok((
                engine,
                announce(
                    config.model.clone(),
                    model_hash,
                    config,
                    config.max_active,
                    EngineKind::Url,
                    None,
                ),
            ))
        }
    }
}

#[cfg(feature = "embedded")]
async fn open_embedded(config: &WorkerConfig) -> anyhow::Result<(Engine, WorkerInfo)> {
    let model_path = if config.model_path.is_empty() {
        let cache = cocoon_infer::default_cache_dir();
        tokio::task::spawn_blocking(move || cocoon_infer::fetch_default_model(&cache))
            .await?
            .context("fetching the default model")?
    } else {
        std::path::PathBuf::from(&config.model_path)
    };
    let mut engine_config = cocoon_infer::EngineConfig::new(model_path);
    if !config.model.is_empty() {
        engine_config.model_name = config.model.clone();
    }
    engine_config.context_length = config.context_length;
    engine_config.weights_copy_dir = config.weights_copy_dir();
    engine_config.parallel = config.max_active.max(1) as usize;
    let engine = tokio::task::spawn_blocking(move || cocoon_infer::Engine::load(engine_config))
        .await?
        .context("loading the embedded model")?;
    let info = announce(
        engine.model_name().to_owned(),
        Some(engine.model_hash().to_owned()),
        config,
        engine.max_active() as u32,
        EngineKind::Embedded,
        Some(engine.context_length()),
    );
    Ok((Engine::InProcess(cocoon_infer::router(engine)), info))
}

#[cfg(not(feature = "embedded"))]
async fn open_embedded(_config: &WorkerConfig) -> anyhow::Result<(Engine, WorkerInfo)> {
    bail!("this build has no embedded engine (cargo feature `embedded`): pass --engine URL or --engine synthetic")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerConfig,
    }

    fn config(args: &[&str]) -> WorkerConfig {
        Cli::parse_from(std::iter::once("worker").chain(args.iter().copied())).worker
    }

    #[tokio::test]
    async fn an_engine_url_with_weights_attests_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        let weights = dir.path().display().to_string();
        let expected = cocoon_tee::weights::weights_sha256(dir.path()).unwrap();
        let url = "http://127.0.0.1:9";
        let with = config(&["--engine", url, "--model", "m", "--model-path", &weights]);
        let (_, info) = open_engine(&with).await.unwrap();
        assert_eq!(info.model_hash.as_deref(), Some(expected.as_str()));

        let without = config(&["--engine", url, "--model", "m"]);
        let (_, info) = open_engine(&without).await.unwrap();
        assert_eq!(info.model_hash, None, "no weights named, none attested");
    }

    #[tokio::test]
    async fn an_engine_outside_the_tee_needs_explicit_consent() {
        let remote = config(&["--engine", "http://10.0.0.5:8000", "--model", "m"]);
        let error = format!("{:#}", open_engine(&remote).await.err().unwrap());
        assert!(error.contains("--allow-remote-engine"), "{error}");

        let allowed = config(&[
            "--engine",
            "http://10.0.0.5:8000",
            "--model",
            "m",
            "--allow-remote-engine",
        ]);
        assert!(open_engine(&allowed).await.is_ok());
    }

    #[tokio::test]
    async fn weights_that_cannot_be_hashed_or_do_not_apply_stop_the_start() {
        let missing = config(&[
            "--engine",
            "http://127.0.0.1:9",
            "--model",
            "m",
            "--model-path",
            "/nonexistent/weights",
        ]);
        let error = format!("{:#}", open_engine(&missing).await.err().unwrap());
        assert!(error.contains("/nonexistent/weights"), "{error}");

        let synthetic = config(&["--engine", "synthetic", "--model-path", "/tmp"]);
        let error = format!("{:#}", open_engine(&synthetic).await.err().unwrap());
        assert!(error.contains("synthetic engine has none"), "{error}");
    }

    #[test]
    fn a_payout_account_is_paid_and_no_key_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().display().to_string();
        let owner = AccountId([7; 32]).to_string();
        let with = config(&["--payout-account", &owner, "--data-dir", &data_dir]);
        let (key, payee) = claim_key_and_payee(&with).unwrap();
        assert_eq!(payee, AccountId([7; 32]));
        assert_ne!(
            AccountId::from(&key),
            payee,
            "claims are signed by a throwaway key"
        );
        let (again, _) = claim_key_and_payee(&with).unwrap();
        assert_ne!(again.to_bytes(), key.to_bytes(), "a new key at every start");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        // Without one, the worker's own sealed wallet is both.
        let own = config(&["--data-dir", &data_dir]);
        let (key, payee) = claim_key_and_payee(&own).unwrap();
        assert_eq!(AccountId::from(&key), payee);
        assert_eq!(claim_key_and_payee(&own).unwrap().1, payee);
    }

    #[test]
    fn a_bad_payout_account_or_a_tdx_worker_without_one_is_refused() {
        let bad = config(&["--payout-account", "not-hex"]);
        let error = format!("{:#}", claim_key_and_payee(&bad).err().unwrap());
        assert!(error.contains("--payout-account not-hex"), "{error}");
        let tdx = config(&["--tee", "tdx"]);
        let error = format!("{:#}", claim_key_and_payee(&tdx).err().unwrap());
        assert!(error.contains("needs --payout-account"), "{error}");
    }
}
