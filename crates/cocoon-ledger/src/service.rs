//! The `cocoon ledger` service: the durable store behind an axum HTTP/JSON API (see [`crate::api`]).
//!
//! One writer applies transactions under a lock; every read is served from committed SQLite
//! snapshots on read-only connections ([`crate::reader`]), so reads never wait for the writer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, State};
use axum::http::{request::Parts, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::Connection;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::api::{
    ApiError, LedgerStats, LogQuery, RegistryQuery, MAX_LOG_PAGE, MAX_LOG_PAGE_BYTES,
    MAX_REGISTRY_WAIT_SECS, MAX_TRANSACTION_BYTES, TRANSACTIONS_PATH,
};
use crate::config::{ConfigError, LedgerConfig};
use crate::reader::{self, LedgerReader};
use crate::store::{LedgerStore, StoreError, SubmitError};
use cocoon_money::ids::AccountId;
use cocoon_money::rules::{Account, Context, EntityKey};
use cocoon_money::signed_registry::RegistryAnswer;
use cocoon_money::transaction::SignedTransaction;
use cocoon_proto::clock::{Clock, SystemClock};

/// Reads running at once; more wait their turn, so a flood of reads cannot occupy every
/// blocking thread.
const MAX_CONCURRENT_READS: usize = 16;

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

/// The ledger behind the HTTP API: one store (single writer), its readers, a clock and the
/// faucet switch.
pub struct Ledger {
    store: Mutex<LedgerStore>,
    reader: LedgerReader,
    reads: Semaphore,
    clock: Arc<dyn Clock>,
    faucet_enabled: bool,
    /// The registry version, so watchers can wait for the next one (`GET /v1/registry?newer_than=`).
    registry_version: watch::Sender<u64>,
    /// Cancelled when the service stops: ends registry long polls at once.
    stopping: CancellationToken,
    /// The current registry and the owner's transaction that set it (`None` for a genesis
    /// document); replaced while the store is locked, so the two always match, and read without
    /// touching the store, so registry reads never wait for the writer.
    registry_answer: Mutex<RegistryAnswer>,
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
        let registry_answer = Mutex::new(RegistryAnswer {
            registry: store.state().registry().clone(),
            signed_update: store.current_registry_update()?,
        });
        Ok(Self {
            store: Mutex::new(store),
            reader: LedgerReader::new(&config.database),
            reads: Semaphore::new(MAX_CONCURRENT_READS),
            clock,
            faucet_enabled: config.faucet,
            registry_version,
            stopping: CancellationToken::new(),
            registry_answer,
        })
    }

    /// Runs `read` on a committed snapshot, off the async workers and never behind the writer.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .reads
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable {
                message: "the ledger is stopping".into(),
            })?;
        let ledger = self.clone();
        tokio::task::spawn_blocking(move || ledger.reader.read(read))
            .await
            .map_err(|e| ApiError::Storage {
                message: format!("ledger read task failed: {e}"),
            })?
            .map_err(|e| ApiError::Storage {
                message: e.to_string(),
            })
    }

    /// Locks the store. A panic while holding the lock cannot leave it half-written (the rules
    /// check before they mutate and SQLite commits atomically), so a poisoned lock is reused.
    fn store(&self) -> MutexGuard<'_, LedgerStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a signed transaction at the clock's current time.
    pub fn submit(&self, tx: &SignedTransaction) -> Result<cocoon_money::Receipt, SubmitError> {
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
                *lock(&self.registry_answer) = RegistryAnswer {
                    registry: store.state().registry().clone(),
                    signed_update: Some(tx.clone()),
                };
            }
            *current = version;
            changed
        });
        Ok(receipt)
    }

    /// The registry and the owner's update that set it.
    pub fn registry(&self) -> RegistryAnswer {
        lock(&self.registry_answer).clone()
    }

    /// The registry once its version is above `version`, or the current one after `wait` or
    /// when the service stops, whichever comes first.
    pub async fn registry_newer_than(&self, version: u64, wait: Duration) -> RegistryAnswer {
        let mut versions = self.registry_version.subscribe();
        // Any outcome ends the wait; the document is read afterwards in every case.
        tokio::select! {
            _ = tokio::time::timeout(wait, versions.wait_for(|current| *current > version)) => {}
            () = self.stopping.cancelled() => {}
        }
        self.registry()
    }

    /// Current ledger-wide figures.
    pub async fn stats(self: &Arc<Self>) -> Result<LedgerStats, ApiError> {
        let figures = self.read(reader::figures).await?;
        let (accounts, proxies, clients, workers) = figures.counts;
        Ok(LedgerStats {
            last_seq: figures.last_seq,
            supply: figures.supply,
            holdings_total: figures.holdings_total,
            accounts,
            proxy_contracts: proxies,
            client_contracts: clients,
            worker_contracts: workers,
            registry_version: figures.registry_version,
            registry_watchers: self.registry_version.receiver_count(),
            faucet_enabled: self.faucet_enabled,
            now: self.clock.now(),
        })
    }

    /// One stored entity, if it exists.
    async fn entity<T>(self: &Arc<Self>, key: EntityKey) -> Result<Option<T>, ApiError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        self.read(move |conn| reader::entity(conn, &key)).await
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

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest {
            message: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest {
            message: rejection.body_text(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge {
                message: format!("at most {MAX_TRANSACTION_BYTES} bytes ({message})"),
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType { message },
            _ => ApiError::BadRequest { message },
        }
    }
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
        let Query(query) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(query))
    }
}

/// Path parameters, refused as an [`ApiError`].
struct ApiPath<T>(T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(path) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(path))
    }
}

/// A JSON body, refused (too large, not JSON, wrong content type) as an [`ApiError`].
struct ApiJson<T>(T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let Json(body) = Json::<T>::from_request(request, state).await?;
        Ok(ApiJson(body))
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
        .route(
            TRANSACTIONS_PATH,
            post(submit).layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES)),
        )
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
    Ok(Json(ledger.stats().await?))
}

async fn human_stats(State(ledger): State<Arc<Ledger>>) -> Result<String, ApiError> {
    Ok(crate::stats::stats_text(&ledger.stats().await?))
}

async fn metrics(State(ledger): State<Arc<Ledger>>) -> Result<Response, ApiError> {
    let text =
        crate::stats::metrics_text(&ledger.stats().await?).map_err(|e| ApiError::Storage {
            message: format!("encoding metrics: {e}"),
        })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn account(
    State(ledger): State<Arc<Ledger>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Account> {
    let id = account_param(&id)?;
    let found = ledger.entity(EntityKey::Account(id)).await?;
    Ok(Json(found.unwrap_or_default()))
}

async fn proxy(
    State(ledger): State<Arc<Ledger>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<cocoon_money::ProxyContract> {
    let id = account_param(&id)?;
    let found = ledger.entity(EntityKey::Proxy(id)).await?;
    found
        .map(Json)
        .ok_or_else(|| not_found(format!("proxy contract {id}")))
}

async fn client_contract(
    State(ledger): State<Arc<Ledger>>,
    ApiPath((proxy, client)): ApiPath<(String, String)>,
) -> ApiResult<cocoon_money::ClientContract> {
    let (proxy, client) = (account_param(&proxy)?, account_param(&client)?);
    let found = ledger.entity(EntityKey::Client(proxy, client)).await?;
    found
        .map(Json)
        .ok_or_else(|| not_found(format!("client contract of {client} with {proxy}")))
}

async fn worker_contract(
    State(ledger): State<Arc<Ledger>>,
    ApiPath((proxy, worker)): ApiPath<(String, String)>,
) -> ApiResult<cocoon_money::WorkerContract> {
    let (proxy, worker) = (account_param(&proxy)?, account_param(&worker)?);
    let found = ledger.entity(EntityKey::Worker(proxy, worker)).await?;
    found
        .map(Json)
        .ok_or_else(|| not_found(format!("worker contract of {worker} with {proxy}")))
}

async fn log(
    State(ledger): State<Arc<Ledger>>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Vec<crate::store::LogEntry>> {
    let limit = query.limit.unwrap_or(MAX_LOG_PAGE).min(MAX_LOG_PAGE);
    let after = query.after;
    let page = ledger
        .read(move |conn| reader::log_since(conn, after, limit, MAX_LOG_PAGE_BYTES))
        .await?;
    Ok(Json(page))
}

async fn submit(
    State(ledger): State<Arc<Ledger>>,
    ApiJson(tx): ApiJson<SignedTransaction>,
) -> ApiResult<cocoon_money::Receipt> {
    // SQLite's fsync blocks; keep it off the async workers.
    let receipt = tokio::task::spawn_blocking(move || ledger.submit(&tx))
        .await
        .map_err(|e| ApiError::Storage {
            message: format!("ledger task failed: {e}"),
        })??;
    Ok(Json(receipt))
}

/// A running ledger server (see [`spawn`]); dropping it stops the server too.
#[derive(Debug)]
pub struct LedgerHandle {
    addr: SocketAddr,
    /// Cancels the service's token when dropped.
    stop: DropGuard,
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

    /// Stops accepting, ends registry long polls at once, finishes the other in-flight requests
    /// and waits for the server to end.
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        let Self { stop, task, .. } = self;
        drop(stop);
        Ok(task.await?)
    }
}

/// Opens the ledger and serves it in a background task; returns once the socket is bound.
pub async fn spawn(
    config: &LedgerConfig,
    clock: Arc<dyn Clock>,
) -> Result<LedgerHandle, ServiceError> {
    let ledger = Arc::new(Ledger::open(config, clock)?);
    let listener = cocoon_serve::listen(config.listen).await?;
    let addr = listener.local_addr()?;
    let stopping = ledger.stopping.clone();
    let app = router(ledger);
    let task = tokio::spawn({
        let stopping = stopping.clone();
        let limits = config.http.clone();
        async move {
            cocoon_serve::serve_http(listener, app, limits, "ledger", async move {
                stopping.cancelled().await
            })
            .await
        }
    });
    tracing::info!(%addr, database = %config.database.display(), faucet = config.faucet, "ledger listening");
    Ok(LedgerHandle {
        addr,
        stop: stopping.drop_guard(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_proto::clock::ManualClock;

    #[tokio::test]
    async fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let config = LedgerConfig {
            database: dir.path().join("ledger.sqlite3"),
            owner: Some(AccountId::from(&ed25519_dalek::SigningKey::from_bytes(
                &[1; 32],
            ))),
            ..LedgerConfig::default()
        };
        let ledger = Arc::new(Ledger::open(&config, Arc::new(ManualClock::new(5))).unwrap());
        // The writer is busy (as during a commit's fsync) until `release` is sent.
        let (locked, is_locked) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn({
            let ledger = ledger.clone();
            move || {
                let _store = ledger.store();
                locked.send(()).unwrap();
                let _ = released.recv();
            }
        });
        is_locked.recv().unwrap();
        let reads = async {
            ledger.stats().await.unwrap();
            ledger.read(reader::registry).await.unwrap();
            ledger
                .read(|conn| reader::log_since(conn, 0, MAX_LOG_PAGE, MAX_LOG_PAGE_BYTES))
                .await
                .unwrap();
        };
        tokio::time::timeout(Duration::from_secs(10), reads)
            .await
            .expect("a read waited for the writer");
        release.send(()).unwrap();
        writer.join().unwrap();
    }
}
