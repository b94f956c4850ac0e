//! The `cocoon ledger` service: the durable store behind an axum HTTP/JSON API (see [`crate::api`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{request::Parts, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::{
    ApiError, LedgerStats, LogQuery, RegistryQuery, MAX_LOG_PAGE, MAX_REGISTRY_WAIT_SECS,
    TRANSACTIONS_PATH,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, LedgerConfig};
use crate::ids::AccountId;
use crate::rules::{Account, Context};
use crate::signed_registry::RegistryAnswer;
use crate::store::{LedgerStore, StoreError, SubmitError};
use crate::transaction::SignedTransaction;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration cannot produce a ledger.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding or serving failed.
    #[error("ledger server i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server task ended abnormally.
    #[error("ledger server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The ledger behind the HTTP API: one store (single writer), a clock and the faucet switch.
pub struct Ledger {
    store: Mutex<LedgerStore>,
    clock: Arc<dyn Clock>,
    faucet_enabled: bool,
    /// The registry version, so watchers can wait for the next one (`GET /v1/registry?newer_than=`).
    registry_version: watch::Sender<u64>,
    /// The owner's transaction that set the current registry (`None` for a genesis document);
    /// written while the store is locked, so it always matches the store's document.
    registry_update: Mutex<Option<SignedTransaction>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("faucet_enabled", &self.faucet_enabled)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates, from the config's genesis) the ledger database.
    pub fn open(config: &LedgerConfig, clock: Arc<dyn Clock>) -> Result<Self, ServiceError> {
        let store = LedgerStore::open(&config.database, || config.genesis_state())?;
        let (registry_version, _) = watch::channel(store.state().registry().version);
        let registry_update = Mutex::new(store.current_registry_update()?);
        Ok(Self {
            store: Mutex::new(store),
            clock,
            faucet_enabled: config.faucet,
            registry_version,
            registry_update,
        })
    }

    /// Locks the store. A panic while holding the lock cannot leave it half-written (the rules
    /// check before they mutate and SQLite commits atomically), so a poisoned lock is reused.
    fn store(&self) -> MutexGuard<'_, LedgerStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a signed transaction at the clock's current time.
    pub fn submit(&self, tx: &SignedTransaction) -> Result<crate::store::Receipt, SubmitError> {
        let ctx = Context {
            now: self.clock.now(),
            faucet_enabled: self.faucet_enabled,
        };
        let mut store = self.store();
        let receipt = store.submit(tx, &ctx)?;
        let version = store.state().registry().version;
        self.registry_version.send_if_modified(|current| {
            let changed = *current != version;
            if changed {
                // Only an owner's registry update changes the version: this transaction.
                *lock(&self.registry_update) = Some(tx.clone());
            }
            *current = version;
            changed
        });
        Ok(receipt)
    }

    /// The registry and the owner's update that set it.
    pub fn registry(&self) -> RegistryAnswer {
        let store = self.store();
        RegistryAnswer {
            registry: store.state().registry().clone(),
            signed_update: lock(&self.registry_update).clone(),
        }
    }

    /// The registry once its version is above `version`, or the current one after `wait`.
    pub async fn registry_newer_than(&self, version: u64, wait: Duration) -> RegistryAnswer {
        let mut versions = self.registry_version.subscribe();
        // Either outcome ends the wait; the document is read afterwards in both cases.
        let _ = tokio::time::timeout(wait, versions.wait_for(|current| *current > version)).await;
        self.registry()
    }

    /// Current ledger-wide figures.
    pub fn stats(&self) -> LedgerStats {
        let store = self.store();
        let state = store.state();
        let (accounts, proxies, clients, workers) = state.counts();
        LedgerStats {
            last_seq: store.last_seq(),
            supply: state.supply(),
            holdings_total: state.holdings_total(),
            accounts,
            proxy_contracts: proxies,
            client_contracts: clients,
            worker_contracts: workers,
            registry_version: state.registry().version,
            faucet_enabled: self.faucet_enabled,
            now: self.clock.now(),
        }
    }
}

/// Locks a mutex whose data a panic cannot leave half-written (one assignment), reusing it if poisoned.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Rejected(rule) => ApiError::Rejected { rule },
            SubmitError::Transaction(e) => ApiError::BadRequest {
                message: e.to_string(),
            },
            SubmitError::Store(e) => ApiError::Storage {
                message: e.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn account_param(text: &str) -> Result<AccountId, ApiError> {
    text.parse().map_err(|e| ApiError::BadRequest {
        message: format!("{text:?}: {e}"),
    })
}

fn not_found(what: String) -> ApiError {
    ApiError::NotFound { message: what }
}

/// A query string, refused as an [`ApiError`] (JSON, like every other ledger error) rather than
/// axum's plain-text rejection.
struct ApiQuery<T>(T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(query)) => Ok(ApiQuery(query)),
            Err(rejection) => Err(ApiError::BadRequest {
                message: rejection.body_text(),
            }),
        }
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        message: format!("{method} is not allowed on {}", uri.path()),
    }
}

/// The ledger's HTTP routes (see [`crate::api`]).
pub fn router(ledger: Arc<Ledger>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/registry", get(registry))
        .route("/v1/stats", get(stats))
        .route("/jsonstats", get(stats))
        .route("/stats", get(human_stats))
        .route("/metrics", get(metrics))
        .route("/v1/accounts/{account}", get(account))
        .route("/v1/proxies/{proxy}", get(proxy))
        .route("/v1/proxies/{proxy}/clients/{client}", get(client_contract))
        .route("/v1/proxies/{proxy}/workers/{worker}", get(worker_contract))
        .route("/v1/log", get(log))
        .route(TRANSACTIONS_PATH, post(submit))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ledger)
}

async fn registry(
    State(ledger): State<Arc<Ledger>>,
    ApiQuery(query): ApiQuery<RegistryQuery>,
) -> ApiResult<RegistryAnswer> {
    Ok(Json(match query.newer_than {
        Some(version) => {
            let wait = Duration::from_secs(query.wait_secs.unwrap_or(MAX_REGISTRY_WAIT_SECS))
                .min(Duration::from_secs(MAX_REGISTRY_WAIT_SECS));
            ledger.registry_newer_than(version, wait).await
        }
        None => ledger.registry(),
    }))
}

async fn stats(State(ledger): State<Arc<Ledger>>) -> ApiResult<LedgerStats> {
    Ok(Json(ledger.stats()))
}

async fn human_stats(State(ledger): State<Arc<Ledger>>) -> String {
    crate::stats::stats_text(&ledger.stats())
}

async fn metrics(State(ledger): State<Arc<Ledger>>) -> Response {
    match crate::stats::metrics_text(&ledger.stats()) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::Storage {
            message: format!("encoding metrics: {e}"),
        }
        .into_response(),
    }
}

async fn account(State(ledger): State<Arc<Ledger>>, Path(id): Path<String>) -> ApiResult<Account> {
    let id = account_param(&id)?;
    Ok(Json(
        ledger
            .store()
            .state()
            .account(&id)
            .copied()
            .unwrap_or_default(),
    ))
}

async fn proxy(
    State(ledger): State<Arc<Ledger>>,
    Path(id): Path<String>,
) -> ApiResult<crate::ProxyContract> {
    let id = account_param(&id)?;
    let found = ledger.store().state().proxy(&id).cloned();
    found
        .map(Json)
        .ok_or_else(|| not_found(format!("proxy contract {id}")))
}

async fn client_contract(
    State(ledger): State<Arc<Ledger>>,
    Path((proxy, client)): Path<(String, String)>,
) -> ApiResult<crate::ClientContract> {
    let (proxy, client) = (account_param(&proxy)?, account_param(&client)?);
    let found = ledger
        .store()
        .state()
        .client_contract(&proxy, &client)
        .cloned();
    found
        .map(Json)
        .ok_or_else(|| not_found(format!("client contract of {client} with {proxy}")))
}

async fn worker_contract(
    State(ledger): State<Arc<Ledger>>,
    Path((proxy, worker)): Path<(String, String)>,
) -> ApiResult<crate::WorkerContract> {
    let (proxy, worker) = (account_param(&proxy)?, account_param(&worker)?);
    let found = ledger
        .store()
        .state()
        .worker_contract(&proxy, &worker)
        .cloned();
    found
        .map(Json)
        .ok_or_else(|| not_found(format!("worker contract of {worker} with {proxy}")))
}

async fn log(
    State(ledger): State<Arc<Ledger>>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Vec<crate::store::LogEntry>> {
    let limit = query.limit.unwrap_or(MAX_LOG_PAGE).min(MAX_LOG_PAGE);
    ledger
        .store()
        .log_since(query.after, limit)
        .map(Json)
        .map_err(|e| ApiError::Storage {
            message: e.to_string(),
        })
}

async fn submit(
    State(ledger): State<Arc<Ledger>>,
    body: Bytes,
) -> ApiResult<crate::store::Receipt> {
    // Parsed here rather than by axum's `Json` extractor so malformed bodies get an `ApiError`.
    let tx: SignedTransaction =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
            message: format!("not a signed transaction: {e}"),
        })?;
    // SQLite's fsync blocks; keep it off the async workers.
    let receipt = tokio::task::spawn_blocking(move || ledger.submit(&tx))
        .await
        .map_err(|e| ApiError::Storage {
            message: format!("ledger task failed: {e}"),
        })??;
    Ok(Json(receipt))
}

/// A running ledger server (see [`spawn`]).
#[derive(Debug)]
pub struct LedgerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl LedgerHandle {
    /// The address the server listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for [`crate::LedgerClient::new`].
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<(), ServiceError> {
        if let Some(tx) = self.shutdown.take() {
            // The server may already have stopped; then there is no one to tell.
            let _ = tx.send(());
        }
        Ok((&mut self.task).await?)
    }
}

/// Opens the ledger and serves it in a background task; returns once the socket is bound.
pub async fn spawn(
    config: &LedgerConfig,
    clock: Arc<dyn Clock>,
) -> Result<LedgerHandle, ServiceError> {
    let ledger = Arc::new(Ledger::open(config, clock)?);
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let app = router(ledger);
    let stopped = async move {
        // A dropped sender also stops the server.
        let _ = rx.await;
    };
    let task = tokio::spawn(cocoon_serve::serve_http(
        listener,
        app,
        config.http.clone(),
        "ledger",
        stopped,
    ));
    tracing::info!(%addr, database = %config.database.display(), faucet = config.faucet, "ledger listening");
    Ok(LedgerHandle {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// Runs `cocoon ledger` with the system clock until Ctrl-C.
pub async fn serve(config: LedgerConfig) -> Result<(), ServiceError> {
    let handle = spawn(&config, Arc::new(SystemClock)).await?;
    tokio::signal::ctrl_c().await?;
    tracing::info!("ledger shutting down");
    handle.shutdown().await
}
