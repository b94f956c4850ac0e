//! The live set of workers per model, and the choice of a worker for each request: model matches,
//! coefficient within the request's `max_coefficient`, a free slot; cheapest coefficient first,
//! then least loaded.
//!
//! Failure accrual: a worker that fails [`FAILURES_TO_SET_ASIDE`] requests in a row (link errors,
//! 5xx answers, answers broken off) is set aside — chosen only when no healthy worker can take the
//! request — for [`FIRST_SET_ASIDE`], doubling up to [`LONGEST_SET_ASIDE`] while it keeps failing;
//! one success restores it. A cheap worker whose engine is broken would otherwise draw every
//! request first.
//!
//! When every eligible worker is busy, the request waits in its model's queue ([`crate::queue`]):
//! a slot that frees, or a worker that links, goes to the next waiter in turn.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use cocoon_node::link::LinkSender;
use cocoon_proto::link::{ModelEntry, ModelList};
use cocoon_proto::{ErrorKind, OpenAiError, WorkerInfo};
use cocoon_ratls::PeerIdentity;
use http::HeaderValue;
use serde_json::{json, Value};

use crate::queue::{QueueConfig, WaitQueues};

/// A connected, attested worker.
pub struct WorkerLink {
    /// Unique for the proxy's lifetime.
    pub id: u64,
    /// What the worker announced.
    pub info: WorkerInfo,
    /// Its verified attestation.
    pub peer: PeerIdentity,
    /// Sends requests on its link.
    pub sender: LinkSender,
    active: AtomicU32,
    receipts: AtomicU64,
    /// The receipt certificate trailer last found to be `peer`'s certificate, compared byte for
    /// byte with the next ones instead of decoding and hashing each (`receipt.rs`).
    link_certificate: Mutex<Option<HeaderValue>>,
    health: Mutex<Health>,
}

/// Consecutive failures that set a worker aside.
pub const FAILURES_TO_SET_ASIDE: u32 = 5;
/// How long a worker is first set aside.
pub const FIRST_SET_ASIDE: Duration = Duration::from_secs(2);
/// The longest a worker is set aside at once.
pub const LONGEST_SET_ASIDE: Duration = Duration::from_secs(60);

/// A worker's recent record.
#[derive(Debug, Default)]
struct Health {
    /// Requests failed in a row.
    consecutive_failures: u32,
    /// Times set aside since its last success.
    set_asides: u32,
    /// Until when it is set aside.
    aside_until: Option<Instant>,
}

impl WorkerLink {
    /// Records a request this worker answered in full.
    pub fn record_success(&self) {
        *self.health() = Health::default();
    }

    /// Records a request this worker failed; sets it aside after too many in a row.
    pub fn record_failure(&self) {
        self.record_failure_at(Instant::now());
    }

    fn record_failure_at(&self, now: Instant) {
        let mut health = self.health();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        if health.consecutive_failures >= FAILURES_TO_SET_ASIDE {
            let period = Self::set_aside(&mut health, now);
            tracing::warn!(
                worker = self.id,
                failures = health.consecutive_failures,
                ?period,
                "worker keeps failing; set aside"
            );
        }
    }

    /// Sets the worker aside at once: it reported more usage than its request reserved, which
    /// an honest worker never does (it caps its engine at the reservation).
    pub fn set_aside_for_overcharge(&self, reported: u64, reserved: u64) {
        let mut health = self.health();
        health.consecutive_failures = health.consecutive_failures.max(FAILURES_TO_SET_ASIDE);
        let period = Self::set_aside(&mut health, Instant::now());
        tracing::warn!(
            worker = self.id,
            reported,
            reserved,
            ?period,
            "worker reported usage costing more than the request reserved; charge capped at the reservation, worker set aside"
        );
    }

    /// Starts a set-aside period (doubling with each one since the last success); returns it.
    fn set_aside(health: &mut Health, now: Instant) -> Duration {
        let period = FIRST_SET_ASIDE
            .saturating_mul(1 << health.set_asides.min(16))
            .min(LONGEST_SET_ASIDE);
        health.set_asides = health.set_asides.saturating_add(1);
        health.aside_until = Some(now + period);
        period
    }

    /// Whether the worker is set aside at `now`.
    fn is_aside(&self, now: Instant) -> bool {
        self.health().aside_until.is_some_and(|until| now < until)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Requests in flight on this worker.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one more receipt from this worker; the count before it (0 for the first).
    pub fn count_receipt(&self) -> u64 {
        self.receipts.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `certificate` (a receipt's trailer) is the text last found to be this link's
    /// certificate.
    pub fn is_link_certificate(&self, certificate: &HeaderValue) -> bool {
        self.link_certificate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            == Some(certificate)
    }

    /// This link's certificate as receipts carry it, once one did (then the worker is told it need
    /// not send it again: `headers::HELD_CERTIFICATE`).
    pub fn held_certificate(&self) -> Option<HeaderValue> {
        self.link_certificate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Remembers `certificate`, found to be this link's certificate.
    pub fn remember_link_certificate(&self, certificate: &HeaderValue) {
        *self
            .link_certificate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(certificate.clone());
    }

    /// Whether this worker's engine can serve a request with `needs`.
    fn serves(&self, needs: &Needs) -> bool {
        self.info.honours.first_missing(&needs.params).is_none()
            && fits_context(self.info.context_length, needs.max_tokens)
    }

    fn try_reserve(&self) -> bool {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                (active < self.info.max_active).then_some(active + 1)
            })
            .is_ok()
    }
}

/// What a request needs of a worker besides its model and price.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The engine parameters it uses (see [`cocoon_proto::capabilities`]).
    pub params: Vec<String>,
    /// The completion tokens it asks for, when it sets a limit itself.
    pub max_tokens: Option<u64>,
}

/// Whether `max_tokens` completion tokens fit a context of `context` tokens next to a prompt
/// of at least one token. An unknown context or limit fits (the engine judges).
fn fits_context(context: Option<u32>, max_tokens: Option<u64>) -> bool {
    match (context, max_tokens) {
        (Some(context), Some(max_tokens)) => max_tokens < u64::from(context),
        _ => true,
    }
}

/// A reserved slot on a worker; dropping it frees the slot, for the next request waiting.
pub struct Slot {
    /// The chosen worker.
    pub worker: Arc<WorkerLink>,
    routing: Arc<Routing>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.worker.active.fetch_sub(1, Ordering::AcqRel);
        self.routing.dispatch(&self.worker.info.model);
    }
}

/// Why no worker was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No connected worker serves the model.
    #[error("no worker serves model `{0}`")]
    UnknownModel(String),
    /// Workers serve the model, but all above the client's price limit.
    #[error("no worker for model `{model}` at coefficient ≤ {max} (cheapest is {cheapest})")]
    TooExpensive {
        /// The model.
        model: String,
        /// The client's limit.
        max: u32,
        /// The cheapest connected worker's coefficient.
        cheapest: u32,
    },
    /// No worker for the model honours an engine parameter the request uses.
    #[error("`{param}` is not supported by the engine of any worker serving model `{model}`")]
    Unsupported {
        /// The model.
        model: String,
        /// The first parameter no worker honours.
        param: String,
    },
    /// The request's completion-token limit does not fit any worker's context.
    #[error("this model's maximum context length is {context} tokens, but {max_tokens} completion tokens were requested (plus the prompt)")]
    ContextTooShort {
        /// The request's limit.
        max_tokens: u64,
        /// The longest context among the model's workers.
        context: u32,
    },
    /// Every eligible worker is at capacity.
    #[error("all {workers} workers for model `{model}` at coefficient ≤ {max} are at capacity")]
    Busy {
        /// The model.
        model: String,
        /// The client's limit.
        max: u32,
        /// How many eligible workers there are.
        workers: usize,
    },
    /// Every worker is busy and the model's queue is full.
    #[error("every worker for model `{model}` is busy and its queue of {depth} is full; retry after {retry_after} s")]
    QueueFull {
        /// The model.
        model: String,
        /// The queue's depth.
        depth: usize,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// Every worker is busy and this client already has its share of the model's queue waiting.
    #[error("every worker for model `{model}` is busy and {share} of your requests already wait; retry after {retry_after} s")]
    ClientShareFull {
        /// The model.
        model: String,
        /// Requests one client may have waiting.
        share: usize,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// The request waited in the queue as long as it may.
    #[error("no worker for model `{model}` became free within {waited_ms} ms; retry after {retry_after} s")]
    QueueTimeout {
        /// The model.
        model: String,
        /// How long it waited.
        waited_ms: u128,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
}

impl RouteError {
    /// The error kind reported to the client.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RouteError::UnknownModel(_) => ErrorKind::ModelNotFound,
            RouteError::Unsupported { .. } => ErrorKind::InvalidRequest,
            RouteError::ContextTooShort { .. } => ErrorKind::ContextLength,
            RouteError::ClientShareFull { .. } => ErrorKind::RateLimited,
            RouteError::TooExpensive { .. }
            | RouteError::Busy { .. }
            | RouteError::QueueFull { .. }
            | RouteError::QueueTimeout { .. } => ErrorKind::Unavailable,
        }
    }

    /// The `Retry-After` (seconds) the client is told, for refusals that a later try may pass.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            RouteError::QueueFull { retry_after, .. }
            | RouteError::ClientShareFull { retry_after, .. }
            | RouteError::QueueTimeout { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The error the client sees, naming the request parameter at fault when there is one.
    pub fn to_openai(&self) -> OpenAiError {
        let error = OpenAiError::new(self.kind(), self.to_string());
        match self {
            RouteError::Unsupported { param, .. } => error.with_param(param.clone()),
            RouteError::ContextTooShort { .. } => error.with_param("max_tokens"),
            _ => error,
        }
    }
}

/// Workers by model, and the requests waiting for them.
#[derive(Default)]
pub struct Routing {
    workers: RwLock<BTreeMap<String, Vec<Arc<WorkerLink>>>>,
    next_id: AtomicU64,
    /// Taken before `workers` wherever both are held.
    queues: Mutex<WaitQueues>,
}

impl Routing {
    /// No workers yet; busy requests wait as `queue` says.
    pub fn new(queue: QueueConfig) -> Self {
        Routing {
            queues: Mutex::new(WaitQueues::new(queue)),
            ..Routing::default()
        }
    }

    /// Adds the queues' metrics to a node's Prometheus registry.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.queues().register(registry);
    }

    /// Adds a worker whose link is up and proven; its slots go to requests waiting first.
    pub fn add(
        self: &Arc<Self>,
        info: WorkerInfo,
        peer: PeerIdentity,
        sender: LinkSender,
    ) -> Arc<WorkerLink> {
        let link = Arc::new(WorkerLink {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            info,
            peer,
            sender,
            active: AtomicU32::new(0),
            receipts: AtomicU64::new(0),
            link_certificate: Mutex::new(None),
            health: Mutex::new(Health::default()),
        });
        self.write()
            .entry(link.info.model.clone())
            .or_default()
            .push(link.clone());
        self.dispatch(&link.info.model);
        link
    }

    /// Every linked worker.
    pub fn links(&self) -> Vec<Arc<WorkerLink>> {
        self.read().values().flatten().cloned().collect()
    }

    /// The highest coefficient among the workers serving `model`, if any is linked.
    pub fn dearest(&self, model: &str) -> Option<u32> {
        self.read()
            .get(model)?
            .iter()
            .map(|link| link.info.coefficient)
            .max()
    }

    /// Whether some worker for `model` can serve a request with `needs`, whatever its price and
    /// load: checked before anything is reserved, so a request no engine can serve is the
    /// request's fault (400), not a shortage of funds or capacity.
    pub fn check(&self, model: &str, needs: &Needs) -> Result<(), RouteError> {
        let workers = self.read();
        let Some(links) = workers.get(model) else {
            return Err(RouteError::UnknownModel(model.to_owned()));
        };
        let honouring: Vec<&Arc<WorkerLink>> = links
            .iter()
            .filter(|link| link.info.honours.first_missing(&needs.params).is_none())
            .collect();
        if honouring.is_empty() {
            let param = links
                .iter()
                .find_map(|link| link.info.honours.first_missing(&needs.params))
                .unwrap_or_default();
            return Err(RouteError::Unsupported {
                model: model.to_owned(),
                param: param.to_owned(),
            });
        }
        if honouring.iter().any(|link| link.serves(needs)) {
            return Ok(());
        }
        Err(RouteError::ContextTooShort {
            max_tokens: needs.max_tokens.unwrap_or(0),
            context: honouring
                .iter()
                .filter_map(|link| link.info.context_length)
                .max()
                .unwrap_or(0),
        })
    }

    /// Removes a worker (its link ended). Requests in flight keep their own handle; requests
    /// waiting for a model nobody serves any more are sent away.
    pub fn remove(&self, id: u64) {
        let mut gone = Vec::new();
        self.write().retain(|model, links| {
            links.retain(|link| link.id != id);
            if links.is_empty() {
                gone.push(model.clone());
            }
            !links.is_empty()
        });
        let mut queues = self.queues();
        for model in gone {
            queues.close(&model);
        }
    }

    /// An error when every worker of `model` that could serve `needs` costs more than
    /// `max_coefficient` (or none serves the model).
    pub(crate) fn within_price(
        &self,
        model: &str,
        max_coefficient: u32,
        needs: &Needs,
    ) -> Result<(), RouteError> {
        let workers = self.read();
        let Some(links) = workers.get(model) else {
            return Err(RouteError::UnknownModel(model.to_owned()));
        };
        too_expensive(model, links, max_coefficient, needs)
    }

    /// Every model's queue, for `/jsonstats`.
    pub fn queue_snapshot(&self) -> Value {
        self.queues().snapshot()
    }

    pub(crate) fn queues(&self) -> MutexGuard<'_, WaitQueues> {
        // Every update of the queues is one call that leaves them consistent.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves a slot on the best worker for `model` within `max_coefficient` that can serve
    /// `needs`, skipping `exclude` (a worker that just failed this request).
    pub fn choose(
        self: &Arc<Self>,
        model: &str,
        max_coefficient: u32,
        needs: &Needs,
        exclude: Option<u64>,
    ) -> Result<Slot, RouteError> {
        let workers = self.read();
        let Some(links) = workers.get(model) else {
            return Err(RouteError::UnknownModel(model.to_owned()));
        };
        let mut eligible: Vec<&Arc<WorkerLink>> = links
            .iter()
            .filter(|link| {
                link.info.coefficient <= max_coefficient
                    && Some(link.id) != exclude
                    && link.serves(needs)
            })
            .collect();
        if eligible.is_empty() {
            too_expensive(model, links, max_coefficient, needs)?;
        }
        let now = Instant::now();
        // Keys read once per worker: `is_aside` takes a lock, and this runs on every request.
        eligible
            .sort_by_cached_key(|link| (link.is_aside(now), link.info.coefficient, link.active()));
        eligible
            .iter()
            .find(|link| link.try_reserve())
            .map(|link| Slot {
                worker: Arc::clone(link),
                routing: Arc::clone(self),
            })
            .ok_or_else(|| RouteError::Busy {
                model: model.to_owned(),
                max: max_coefficient,
                workers: eligible.len(),
            })
    }

    /// The models clients can ask for, with capacity.
    pub fn models(&self) -> ModelList {
        let workers = self.read();
        ModelList {
            models: workers
                .iter()
                .map(|(model, links)| ModelEntry {
                    id: model.clone(),
                    workers: u32::try_from(links.len()).unwrap_or(u32::MAX),
                    min_coefficient: links.iter().map(|l| l.info.coefficient).min().unwrap_or(0),
                    max_coefficient: links.iter().map(|l| l.info.coefficient).max().unwrap_or(0),
                    // Each worker announces its own capacity: the sum saturates, never wraps.
                    free_slots: links
                        .iter()
                        .map(|l| l.info.max_active.saturating_sub(l.active()))
                        .fold(0u32, u32::saturating_add),
                    created: links
                        .iter()
                        .map(|l| l.info.started_at)
                        .filter(|&started| started > 0)
                        .min()
                        .unwrap_or(0),
                    context_length: links
                        .iter()
                        .map(|l| l.info.context_length)
                        .collect::<Option<Vec<u32>>>()
                        .and_then(|contexts| contexts.into_iter().max()),
                })
                .collect(),
        }
    }

    /// Every worker, for `/jsonstats`.
    pub fn snapshot(&self) -> Value {
        let workers = self.read();
        let now = Instant::now();
        Value::Array(
            workers
                .values()
                .flatten()
                .map(|link| {
                    let health = link.health();
                    let aside_ms = health
                        .aside_until
                        .map_or(0, |until| until.saturating_duration_since(now).as_millis());
                    json!({
                        "id": link.id,
                        "model": link.info.model,
                        "model_hash": link.info.model_hash,
                        "coefficient": link.info.coefficient,
                        "active": link.active(),
                        "max_active": link.info.max_active,
                        "engine": link.info.engine,
                        "honours": link.info.honours,
                        "context_length": link.info.context_length,
                        "image_hash": link.peer.image_hash.to_string(),
                        "consecutive_failures": health.consecutive_failures,
                        "set_aside_ms": aside_ms,
                    })
                })
                .collect(),
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Vec<Arc<WorkerLink>>>> {
        // A panic while holding the lock leaves the map consistent (every update is one call), so
        // a poisoned lock is still usable.
        self.workers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Vec<Arc<WorkerLink>>>> {
        self.workers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An error when the cheapest of `links` that serves `needs` costs more than `max_coefficient`.
fn too_expensive(
    model: &str,
    links: &[Arc<WorkerLink>],
    max_coefficient: u32,
    needs: &Needs,
) -> Result<(), RouteError> {
    let cheapest = links
        .iter()
        .filter(|link| link.serves(needs))
        .map(|link| link.info.coefficient)
        .min()
        .unwrap_or(0);
    if cheapest > max_coefficient {
        return Err(RouteError::TooExpensive {
            model: model.to_owned(),
            max: max_coefficient,
            cheapest,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
