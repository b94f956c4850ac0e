//! The Cocoon client role: a local daemon that speaks the OpenAI HTTP API to applications and
//! forwards each request into the network over an attested (RA-TLS) HTTP/2 link to a proxy.
//!
//! - [`config`]: [`ClientConfig`], every option a flag and a config-file key;
//! - [`link`]: links to the configured proxies, kept up and proven, the most preferred one used;
//! - [`http`]: the API (`/v1/chat/completions`, `/v1/completions`, `/v1/attestation`), API keys,
//!   and the node surfaces (`/healthz`, `/stats`, `/jsonstats`, `/metrics`); [`models`]:
//!   `/v1/models` and `/v1/models/{id}`; [`edge`]: `x-request-id` and CORS on every answer;
//! - [`request`], [`request_fields`], [`request_messages`]: every OpenAI field checked once,
//!   and the engine parameters a request uses;
//! - [`stream`]: streaming answers passed through lazily, so an app that goes away cancels the
//!   work upstream;
//! - [`settlement`]: the contract with the proxy: deposit, automatic top-ups, applied charges;
//! - [`readiness`]: `/healthz` is 200 only when a request can be served at once.
//!
//! [`start`] binds and spawns everything and returns a [`RunningClient`]; [`run`] also waits for
//! shutdown.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api_key;
pub mod config;
pub mod edge;
pub mod held_certificate;
pub mod http;
pub mod link;
pub mod models;
pub mod payment;
pub mod readiness;
pub mod request;
pub mod request_fields;
pub mod request_messages;
pub mod settlement;
pub mod stream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cocoon_money::{AccountId, ImageRole, SettlementBackend};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::registry::{ProxyPort, RegistryWatch};
use cocoon_node::stats::{self, NodeStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ClientConfig, ConfigError};

use crate::http::Api;
use crate::link::ProxyLinks;
use crate::request::Defaults;

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A started client: its API is being served and its proxy links are being kept up.
pub struct RunningClient {
    /// The address the API actually listens on (useful with port 0).
    pub local_addr: SocketAddr,
    server: JoinHandle<()>,
    links: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    /// Stops the link tasks; a child of `shutdown`, also cancelled if the server stops by itself.
    links_shutdown: CancellationToken,
}

impl RunningClient {
    /// Waits until `shutdown` is cancelled and the server has stopped: in-flight requests get 10 s
    /// to finish; after that `wait` returns without them (they end with the process).
    pub async fn wait(self) -> anyhow::Result<()> {
        let RunningClient {
            mut server,
            links,
            shutdown,
            links_shutdown,
            ..
        } = self;
        let served = tokio::select! {
            served = &mut server => served,
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("requests still running {SHUTDOWN_GRACE:?} after shutdown; not waiting for them");
                server.abort();
                server.await
            }
        };
        links_shutdown.cancel();
        for task in links {
            // The link tasks end on the same cancellation; a panic in one is a bug worth reporting.
            task.await.context("a proxy link task failed")?;
        }
        match served {
            Ok(()) => Ok(()),
            Err(error) if error.is_cancelled() => Ok(()),
            Err(error) => Err(error).context("the HTTP server task failed"),
        }
    }
}

/// Starts the client: attests this node, binds the API (failing clearly if the address is taken),
/// and spawns the proxy links and the HTTP server; its registry and contracts are on the
/// settlement `backend`. Everything stops when `shutdown` is cancelled.
pub async fn start(
    config: ClientConfig,
    backend: &dyn SettlementBackend,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningClient> {
    config.validate()?;
    let cors = edge::cors(&config.cors_origin)?;
    let registry_trust = config.registry_trust(&backend.registry_authority())?;
    let wallet = cocoon_node::wallet::open_wallet(&config.data_dir, &config.attestation)
        .context("cannot open this client's wallet key")?;
    let named_wallet = match &config.test_only_claim_wallet {
        Some(account) => {
            tracing::warn!(%account, "TESTS ONLY: --test-only-claim-wallet names a wallet this client cannot sign for");
            account.parse().context("bad --test-only-claim-wallet")?
        }
        None => AccountId::from(&wallet),
    };
    let attributes = cocoon_node::wallet::with_wallet(BTreeMap::new(), named_wallet);
    // One handle for the wallet: funding and payments sign with consecutive nonces.
    let ledger = backend
        .connect(Some(wallet.clone()))
        .context("bad --ledger")?;
    let settlement = settlement::ClientSettlement::new(
        ledger.clone(),
        AccountId::from(&wallet),
        settlement::Funding {
            deposit: config.deposit,
            stake: config.stake,
            faucet: config.faucet,
        },
        Duration::from_millis(config.settle_interval_ms.max(10)),
    );
    let trust = NodeTrust::new(&config.attestation, "client", attributes)
        .await
        .context("cannot set up this client's attestation")?;
    trust.spawn_renewal(shutdown.clone());
    let listener = cocoon_node::serve::listen(&config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another node using it?)",
                config.listen
            )
        })?;
    let local_addr = listener
        .local_addr()
        .context("cannot read the listening address")?;

    let registry = RegistryWatch::start(backend, registry_trust, shutdown.clone())
        .await
        .context("cannot read the registry")?;
    let policy = trust
        .peer_policy(
            &config.allow_proxy_image,
            &registry,
            ImageRole::Proxy,
            config.min_peer_tee,
        )
        .context("bad --allow-proxy-image")?;
    let connector = Arc::new(
        trust
            .connector(&policy)
            .context("cannot build the RA-TLS connector")?,
    );
    let proxies = registry.proxy_endpoints(&config.proxy, ProxyPort::Clients);
    if config.test_only_withhold_payments {
        tracing::warn!("TESTS ONLY: --test-only-withhold-payments is set; this client never pays");
    }
    let payer = payment::Payer::new(
        wallet,
        trust.clone(),
        config.min_peer_tee,
        registry.derive(|document| document.prices.clone()),
        ledger,
        config.test_only_withhold_payments,
    );
    let prover: link::Prover = {
        let (trust, payer) = (trust.clone(), payer.clone());
        Arc::new(move || {
            let key = trust.identity().claims().public_key;
            (key, payer.proof(&key))
        })
    };

    let stats = NodeStats::new("client");
    let links_shutdown = shutdown.child_token();
    let preference = if config.proxy.is_empty() {
        link::Preference::SpreadFor(settlement.account())
    } else {
        link::Preference::Listed
    };
    let (links, links_task) = ProxyLinks::spawn(
        proxies,
        preference,
        connector,
        prover,
        policy,
        stats.clone(),
        links_shutdown.clone(),
    );
    let link_tasks = vec![
        links_task,
        settlement.spawn(
            links.clone(),
            payer.clone(),
            registry.derive(|registry| registry.min_client_stake),
            links_shutdown.clone(),
        ),
    ];
    let details_links = links.clone();
    let readiness = readiness::readiness(links.clone(), settlement.clone());
    let details_trust = trust.clone();
    let details_payer = payer.clone();
    let stats_routes = stats::router_with_readiness(
        stats.clone(),
        Arc::new(move || {
            let mut details = details_links.snapshot();
            details["attestation"] = details_trust.stats();
            details["wallet"] = settlement.snapshot();
            details["payments"] = details_payer.snapshot();
            details["registry_version"] = registry.current().version.into();
            details["registry"] = registry.status();
            details
        }),
        readiness,
    );
    let api = Arc::new(Api {
        links,
        stats,
        api_keys: config.api_key.clone(),
        max_body_bytes: config.max_body_bytes,
        defaults: Defaults {
            max_coefficient: config.max_coefficient,
            timeout: config.default_timeout(),
        },
        receipt_header: !config.no_receipt_header,
        payer,
    });
    let app = http::router(api, stats_routes, cors);
    let graceful = shutdown.clone().cancelled_owned();
    let limits = config.http.clone();
    let server = tokio::spawn(cocoon_node::serve::serve_http(
        listener, app, limits, "api", graceful,
    ));
    tracing::info!(%local_addr, proxies = ?config.proxy, "client API listening");
    Ok(RunningClient {
        local_addr,
        server,
        links: link_tasks,
        shutdown,
        links_shutdown,
    })
}

/// Runs the client until `shutdown` is cancelled: [`start`], then [`RunningClient::wait`].
pub async fn run(
    config: ClientConfig,
    backend: &dyn SettlementBackend,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    start(config, backend, shutdown).await?.wait().await
}
