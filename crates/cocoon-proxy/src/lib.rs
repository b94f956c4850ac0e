//! The Cocoon proxy: attests workers and clients, routes each client request to a worker, relays
//! the answer and meters it.
//!
//! The request path reads in three files: [`link`] (the two listening ports and each link's life),
//! [`routing`] (which worker serves a request, [`queue`] while all are busy) and [`forward`] (one request, end to end). Money is
//! [`billing`] (reservations, charges, settlement with the ledger) over [`store`] (the proxy's own
//! durable database) and [`charge_writer`] (the thread that writes charges, and refuses requests
//! while it cannot).

#![forbid(unsafe_code)]

pub mod admission;
pub mod billing;
pub mod charge_writer;
pub mod coalesced_body;
pub mod config;
pub mod forward;
pub mod http;
pub mod link;
pub mod queue;
pub mod receipt;
mod relay;
mod request_check;
pub mod routing;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_money::{AccountId, ImageRole, SettlementBackend};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::registry::RegistryWatch;
use cocoon_node::stats::{self, NodeStats};
use ed25519_dalek::SigningKey;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::ProxyConfig;

/// The role clients claim in their certificates (the only one the client port accepts).
pub const CLIENT_ROLE: &str = "client";
use forward::Forwarding;
use routing::Routing;

/// A started proxy.
pub struct RunningProxy {
    /// Where workers dial.
    pub worker_addr: SocketAddr,
    /// Where clients dial.
    pub client_addr: SocketAddr,
    /// Where `/healthz`, `/stats`, `/jsonstats` and `/metrics` are served.
    pub stats_addr: SocketAddr,
    /// This proxy's image hash.
    pub image_hash: cocoon_tee::ImageHash,
    tasks: JoinSet<()>,
}

impl RunningProxy {
    /// Waits until every task has stopped (after shutdown).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(result) = self.tasks.join_next().await {
            result.context("a proxy task failed")?;
        }
        Ok(())
    }
}

/// Starts a proxy: attests, binds its three ports, accepts workers and clients; its registry
/// and contract are on the settlement `backend`.
pub async fn start(
    config: ProxyConfig,
    backend: &dyn SettlementBackend,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningProxy> {
    let registry_trust = config.registry_trust(&backend.registry_authority())?;
    let operator = config.operator()?;
    // This start's voucher key: made now, kept in memory only, named in the attested claims so
    // workers can check what they are paid with; the operator authorizes it on the ledger.
    let voucher_key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut attributes = cocoon_node::wallet::with_wallet(Default::default(), operator.account());
    attributes.insert(
        cocoon_node::wallet::VOUCHER_KEY_ATTRIBUTE.to_owned(),
        AccountId::from(&voucher_key).to_string(),
    );
    let registry = RegistryWatch::start(backend, registry_trust, shutdown.clone())
        .await
        .context("reading the registry")?;
    if config.test_only_overcharge {
        tracing::warn!(
            "TESTS ONLY: --test-only-overcharge is set; this proxy overcharges every client"
        );
    }
    if let Some(fee) = config.test_only_worker_fee {
        tracing::warn!(
            fee,
            "TESTS ONLY: --test-only-worker-fee is set; this proxy underpays every worker"
        );
    }
    let trust = NodeTrust::new(&config.attestation, "proxy", attributes)
        .await
        .context("attesting the proxy")?;
    trust.spawn_renewal(shutdown.clone());
    // The operator checks this before authorizing the key: it proves the key is this attested
    // image's, not one the host made up.
    let certificate = config.data_dir.join(billing::CERTIFICATE_FILE);
    std::fs::create_dir_all(&config.data_dir)
        .and_then(|()| std::fs::write(&certificate, trust.identity().certificate_der()))
        .with_context(|| format!("writing {}", certificate.display()))?;
    let billing =
        billing::Billing::open(config.billing(), operator, voucher_key, &registry, backend)
            .await
            .context("opening the proxy's billing")?;
    // Each port has its own minimum and list: accepting weaker clients never admits weaker workers.
    let worker_policy = trust.peer_policy(
        &config.allow_worker_image,
        &registry,
        ImageRole::Worker,
        config.min_worker_tee,
    )?;
    let handshake_timeout = Duration::from_secs(config.handshake_timeout_secs.max(1));
    let port = |acceptor: cocoon_ratls::Acceptor| link::Port {
        acceptor: Arc::new(acceptor.with_handshake_timeout(handshake_timeout)),
        max_handshakes: config.max_handshakes,
    };
    let worker_port = port(trust.acceptor(&worker_policy)?);
    let client_policy = trust.fixed_peer_policy(
        CLIENT_ROLE,
        &config.allow_client_image,
        config.min_client_tee,
    )?;
    let client_port = port(trust.acceptor(&client_policy)?);
    let models = if config.allow_model.is_empty() {
        registry.derive(|document| admission::AllowedModels::from_registry(&document.models))
    } else {
        let fixed =
            admission::AllowedModels::parse(&config.allow_model).context("--allow-model")?;
        cocoon_node::registry::fixed(fixed)
    };
    let routing = Arc::new(Routing::new(config.queue()));
    let stats = NodeStats::with_metrics("proxy", |registry| routing.register_metrics(registry));
    let forwarding = Forwarding {
        routing: routing.clone(),
        stats: stats.clone(),
        max_body_bytes: config.max_body_bytes,
        max_request: Duration::from_secs(config.max_request_secs.max(1)),
        billing: billing.clone(),
        receipts: Arc::new(receipt::Countersigner::new(
            trust.clone(),
            worker_policy.clone(),
        )),
    };
    let bind = |address: String, what: &'static str| async move {
        cocoon_node::serve::listen(&address)
            .await
            .with_context(|| format!("binding the {what} address {address}"))
    };
    let workers = bind(config.worker_listen.clone(), "worker").await?;
    let clients = bind(config.client_listen.clone(), "client").await?;
    let surface = bind(config.stats_listen.clone(), "stats").await?;
    let (worker_addr, client_addr, stats_addr) = (
        workers.local_addr()?,
        clients.local_addr()?,
        surface.local_addr()?,
    );
    // Shutdown in two steps: at `shutdown` no new links, and client links drain; once the last
    // has ended, `drained` stops what their requests needed (worker links, settlement — whose
    // last round settles them — and the stats surface).
    let drained = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(link::accept_workers(
        workers,
        worker_port,
        link::WorkerAdmission {
            policy: worker_policy,
            models,
            accept_remote_engines: config.accept_remote_engines,
        },
        routing.clone(),
        stats.clone(),
        shutdown.clone(),
        drained.clone(),
    ));
    let clients_drained = drained.clone();
    let client_links = link::accept_clients(
        clients,
        client_port,
        http::client_router(forwarding),
        stats.clone(),
        shutdown.clone(),
        Duration::from_secs(config.drain_secs),
    );
    tasks.spawn(async move {
        client_links.await;
        clients_drained.cancel();
    });
    let settlement = billing.spawn(routing.clone(), drained.clone());
    tasks.spawn(async move {
        if let Err(error) = settlement.await {
            tracing::error!(%error, "the settlement task failed");
        }
    });
    let image_hash = trust.image_hash();
    let health = billing.clone();
    let details_trust = trust.clone();
    let details: stats::Details = Arc::new(move || {
        json!({
            "image_hash": image_hash.to_string(),
            "attestation": details_trust.stats(),
            "registry_version": registry.current().version,
            "registry": registry.status(),
            "workers": routing.snapshot(),
            "queues": routing.queue_snapshot(),
            "wallet": billing.snapshot(),
        })
    });
    let readiness: stats::Readiness = Arc::new(move || {
        let verdict = health.unhealthy().map_or(Ok(()), Err);
        Box::pin(std::future::ready(verdict))
    });
    let router = stats::router_with_readiness(stats, details, readiness);
    tasks.spawn(cocoon_node::serve::serve_http(
        surface,
        router,
        config.http.clone(),
        "stats",
        drained.clone().cancelled_owned(),
    ));
    tracing::info!(workers = %worker_addr, clients = %client_addr, stats = %stats_addr, %image_hash, "proxy started");
    Ok(RunningProxy {
        worker_addr,
        client_addr,
        stats_addr,
        image_hash,
        tasks,
    })
}

/// Runs a proxy on the settlement `backend` until `shutdown`.
pub async fn run(
    config: ProxyConfig,
    backend: &dyn SettlementBackend,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(config, backend, shutdown).await?.wait().await
}
