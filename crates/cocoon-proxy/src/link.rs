//! The proxy's two listening ports. Workers dial one: the proxy then drives each worker link as
//! the HTTP/2 client, asks the worker what it serves, and routes to it while the link lives.
//! Clients dial the other: the proxy serves them HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use cocoon_node::engine_claim::{self, ENGINE_ATTRIBUTE};
use cocoon_node::link::{self, get_json};
use cocoon_node::registry::{until_refused, LivePolicy};
use cocoon_node::serve::{Accepting, Admission, LogThrottle, Slots};
use cocoon_node::stats::NodeStats;
use cocoon_proto::link::PATH_WORKER_INFO;
use cocoon_proto::{WorkerInfo, PROTOCOL_VERSION};
use cocoon_ratls::{Acceptor, PeerIdentity, PeerWatch};
use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::AllowedModels;
use crate::routing::Routing;

/// An RA-TLS port: who may join, and how many may be joining at once.
pub struct Port {
    /// Handshakes peers (with its handshake deadline).
    pub acceptor: Arc<Acceptor>,
    /// Handshakes under way at once; beyond, the oldest unfinished one is dropped for the
    /// newcomer if it has had [`HANDSHAKE_GRACE`], else the newcomer is refused.
    pub max_handshakes: usize,
}

/// How long a handshake is safe from being dropped for a newcomer: enough for a real peer across
/// the world, while half-open connections soon make way. A crowd of real peers arriving at once
/// (a proxy restarting under 1 000 workers) is then refused at the door and retries, instead of
/// cutting each other's handshakes short.
pub const HANDSHAKE_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections on `port` until `shutdown`; each runs the RA-TLS handshake (at most
/// `port.max_handshakes` at once) and then `serve` on its own task. Refused and failed links are
/// logged as `peer` links at most once per second, with the number of lines held back, so a flood
/// of refused handshakes cannot flood the log. Returns once every link has ended by itself or
/// been `cut`.
async fn accept_links<F, Fut>(
    listener: TcpListener,
    port: Port,
    peer: &'static str,
    shutdown: CancellationToken,
    cut: CancellationToken,
    serve: F,
) where
    F: Fn(server::TlsStream<TcpStream>, PeerIdentity) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let links = TaskTracker::new();
    let handshakes = Slots::sparing(port.max_handshakes, HANDSHAKE_GRACE);
    let mut accepting = Accepting::new(listener, peer);
    let failures = Arc::new(LogThrottle::per_second());
    let serve = Arc::new(serve);
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => break,
            tcp = accepting.accept(&handshakes) => tcp,
        };
        // At the cap the oldest handshake past its grace makes way, or the newcomer is refused.
        let handshake = match handshakes.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Evicted(slot) => {
                if let Some(suppressed) = failures.admit() {
                    tracing::warn!(
                        peer,
                        suppressed,
                        max_handshakes = handshakes.cap(),
                        "too many handshakes under way; dropped the oldest"
                    );
                }
                slot
            }
            Admission::Full => {
                if let Some(suppressed) = failures.admit() {
                    tracing::warn!(
                        peer,
                        suppressed,
                        max_handshakes = handshakes.cap(),
                        "too many handshakes under way; refused a new connection"
                    );
                }
                continue;
            }
        };
        let address = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let (acceptor, serve, failures, cut) = (
            port.acceptor.clone(),
            serve.clone(),
            failures.clone(),
            cut.clone(),
        );
        links.spawn(async move {
            let link = async {
                let (stream, identity) = tokio::select! {
                    _ = handshake.evicted() => anyhow::bail!("dropped to make room for newer handshakes"),
                    accepted = acceptor.accept(tcp) => accepted?,
                };
                drop(handshake);
                serve(stream, identity).await
            };
            tokio::select! {
                _ = cut.cancelled() => {}
                result = link => match result {
                    Ok(()) => tracing::info!(%address, peer, "link closed"),
                    Err(error) => {
                        if let Some(suppressed) = failures.admit() {
                            tracing::warn!(%address, peer, suppressed, error = %format!("{error:#}"), "link refused or lost");
                        }
                    }
                }
            }
        });
    }
    // No new links (the listener closes here); wait for the live ones to end or be cut.
    drop(accepting);
    links.close();
    links.wait().await;
}

/// What a worker must pass to join, now and for as long as its link lives: the RA-TLS handshake
/// under `policy`, then its model and weights under `models`. Both follow the registry; a worker
/// that a new version refuses is disconnected.
pub struct WorkerAdmission {
    /// Which worker images are allowed.
    pub policy: LivePolicy,
    /// Which models and weights are allowed.
    pub models: watch::Receiver<Arc<AllowedModels>>,
    /// Admit workers whose attested engine runs outside their TEE (`--accept-remote-engines`).
    pub accept_remote_engines: bool,
}

/// Accepts worker links until `shutdown`; keeps them (requests in flight need them) until `cut`.
pub async fn accept_workers(
    listener: TcpListener,
    port: Port,
    admission: WorkerAdmission,
    routing: Arc<Routing>,
    stats: Arc<NodeStats>,
    shutdown: CancellationToken,
    cut: CancellationToken,
) {
    let admission = Arc::new(admission);
    let acceptor = port.acceptor.clone();
    accept_links(
        listener,
        port,
        "worker",
        shutdown,
        cut,
        move |stream, peer| {
            let (admission, routing, stats) = (admission.clone(), routing.clone(), stats.clone());
            let watch = acceptor.watch(&stream);
            async move { serve_worker(stream, peer, watch?, &admission, &routing, &stats).await }
        },
    )
    .await
}

async fn serve_worker(
    stream: server::TlsStream<TcpStream>,
    peer: PeerIdentity,
    watch: PeerWatch,
    admission: &WorkerAdmission,
    routing: &Arc<Routing>,
    stats: &Arc<NodeStats>,
) -> anyhow::Result<()> {
    let (sender, driver) = link::client_handshake(stream).await?;
    let mut driver = tokio::spawn(driver);
    // The first exchange proves the worker accepted our certificate too.
    let info: WorkerInfo = get_json(&sender, PATH_WORKER_INFO).await?;
    if info.protocol_version != PROTOCOL_VERSION {
        anyhow::bail!(
            "worker speaks protocol {}, this proxy {}",
            info.protocol_version,
            PROTOCOL_VERSION
        );
    }
    // The model a worker announces must be the one its attested certificate names.
    let attested_model = peer.claims.attributes.get("model");
    if attested_model != Some(&info.model) {
        anyhow::bail!(
            "worker announces model `{}` but its certificate claims {:?}",
            info.model,
            attested_model
        );
    }
    // Prompts reach the engine in clear: one outside the worker's TEE needs the operator's consent.
    let engine = peer
        .claims
        .attributes
        .get(ENGINE_ATTRIBUTE)
        .map_or("", String::as_str);
    if !admission.accept_remote_engines && !engine_claim::locate(engine).is_inside_tee() {
        anyhow::bail!(
            "the worker's certificate claims engine {engine:?}, outside its TEE (prompts would leave it \
             in clear); start the proxy with --accept-remote-engines to admit such workers"
        );
    }
    // So must the weights: the attested hash, announced unchanged and allowed for the model.
    let attested_hash = peer.claims.attributes.get("model_hash").cloned();
    if attested_hash != info.model_hash {
        anyhow::bail!(
            "worker announces model hash {:?} but its certificate claims {:?}",
            info.model_hash,
            attested_hash
        );
    }
    let model = info.model.clone();
    let model_refused = until_refused(admission.models.clone(), move |models| {
        models.check(&model, attested_hash.as_deref())
    });
    tokio::pin!(model_refused);
    // Refused now: the join ends here (a refusal already pending resolves at once).
    if let Some(reason) = (&mut model_refused).now_or_never() {
        return Err(reason.into());
    }
    // Earnings are paid to the wallet the worker's attestation names; without one it cannot be paid.
    if crate::billing::wallet_of(&peer).is_none() {
        anyhow::bail!("the worker's certificate names no valid wallet");
    }
    let _linked = stats.peer_connected();
    let worker = routing.add(info, peer, sender);
    tracing::info!(
        id = worker.id,
        model = %worker.info.model,
        coefficient = worker.info.coefficient,
        max_active = worker.info.max_active,
        image = %worker.peer.image_hash,
        "worker linked"
    );
    // The link lives until the worker goes or the registry stops allowing it.
    let refused: Option<anyhow::Error> = tokio::select! {
        _ = &mut driver => None,
        reason = admission.policy.until_refused(&worker.peer) => Some(reason.into()),
        reason = watch.until_refused() => Some(anyhow::anyhow!("no longer passes attestation: {reason}")),
        reason = model_refused => Some(reason.into()),
    };
    routing.remove(worker.id);
    match refused {
        Some(reason) => {
            driver.abort();
            tracing::warn!(id = worker.id, model = %worker.info.model, %reason, "worker no longer allowed; disconnected");
        }
        None => tracing::info!(id = worker.id, model = %worker.info.model, "worker link closed"),
    }
    Ok(())
}

/// Accepts client links until `shutdown`, serving `router` on each; then drains them: clients are
/// told to send no more, and each link ends when its requests in flight have (at most `grace`
/// later). Returns when every client link has ended.
pub async fn accept_clients(
    listener: TcpListener,
    port: Port,
    router: Router,
    stats: Arc<NodeStats>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let drain = shutdown.clone();
    // Client links end by themselves within `grace` of shutdown; nothing cuts them sooner.
    let never_cut = CancellationToken::new();
    accept_links(
        listener,
        port,
        "client",
        shutdown,
        never_cut,
        move |stream, peer| {
            let (router, stats) = (router.clone(), stats.clone());
            let drain = drain.clone();
            async move {
                tracing::info!(image = %peer.image_hash, "client linked");
                let _linked = stats.peer_connected();
                let router = router.layer(Extension(Arc::new(peer)));
                link::serve(stream, router, &drain, grace).await?;
                Ok(())
            }
        },
    )
    .await
}
