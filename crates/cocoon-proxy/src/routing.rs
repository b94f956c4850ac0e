//! The live set of workers per model, and the choice of a worker for each request: model matches,
//! coefficient within the request's `max_coefficient`, a free slot; cheapest coefficient first,
//! then least loaded.
//!
//! Failure accrual: a worker that fails [`FAILURES_TO_SET_ASIDE`] requests in a row (link errors,
//! 5xx answers, answers broken off) is set aside — chosen only when no healthy worker can take the
//! request — for [`FIRST_SET_ASIDE`], doubling up to [`LONGEST_SET_ASIDE`] while it keeps failing;
//! one success restores it. A cheap worker whose engine is broken would otherwise draw every
//! request first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cocoon_node::link::LinkSender;
use cocoon_proto::link::{ModelEntry, ModelList};
use cocoon_proto::{ErrorKind, WorkerInfo};
use cocoon_ratls::PeerIdentity;
use serde_json::{json, Value};

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
            let period = FIRST_SET_ASIDE
                .saturating_mul(1 << health.set_asides.min(16))
                .min(LONGEST_SET_ASIDE);
            health.set_asides = health.set_asides.saturating_add(1);
            health.aside_until = Some(now + period);
            tracing::warn!(
                worker = self.id,
                failures = health.consecutive_failures,
                ?period,
                "worker keeps failing; set aside"
            );
        }
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

    fn try_reserve(&self) -> bool {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |active| {
                (active < self.info.max_active).then_some(active + 1)
            })
            .is_ok()
    }
}

/// A reserved slot on a worker; dropping it frees the slot.
pub struct Slot {
    /// The chosen worker.
    pub worker: Arc<WorkerLink>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.worker.active.fetch_sub(1, Ordering::AcqRel);
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
}

impl RouteError {
    /// The error kind reported to the client.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RouteError::UnknownModel(_) => ErrorKind::ModelNotFound,
            RouteError::TooExpensive { .. } | RouteError::Busy { .. } => ErrorKind::Unavailable,
        }
    }
}

/// Workers by model.
#[derive(Default)]
pub struct Routing {
    workers: RwLock<BTreeMap<String, Vec<Arc<WorkerLink>>>>,
    next_id: AtomicU64,
}

impl Routing {
    /// Adds a worker whose link is up and proven.
    pub fn add(&self, info: WorkerInfo, peer: PeerIdentity, sender: LinkSender) -> Arc<WorkerLink> {
        let link = Arc::new(WorkerLink {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            info,
            peer,
            sender,
            active: AtomicU32::new(0),
            receipts: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
        });
        self.write()
            .entry(link.info.model.clone())
            .or_default()
            .push(link.clone());
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

    /// Removes a worker (its link ended). Requests in flight keep their own handle.
    pub fn remove(&self, id: u64) {
        let mut workers = self.write();
        workers.retain(|_, links| {
            links.retain(|link| link.id != id);
            !links.is_empty()
        });
    }

    /// Reserves a slot on the best worker for `model` within `max_coefficient`, skipping `exclude`
    /// (a worker that just failed this request).
    pub fn choose(
        &self,
        model: &str,
        max_coefficient: u32,
        exclude: Option<u64>,
    ) -> Result<Slot, RouteError> {
        let workers = self.read();
        let Some(links) = workers.get(model) else {
            return Err(RouteError::UnknownModel(model.to_owned()));
        };
        let mut eligible: Vec<&Arc<WorkerLink>> = links
            .iter()
            .filter(|link| link.info.coefficient <= max_coefficient && Some(link.id) != exclude)
            .collect();
        if eligible.is_empty() {
            let cheapest = links
                .iter()
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

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_ratls::Claims;
    use cocoon_tee::{AttestationKind, FakeAttester};
    use std::time::{Duration, SystemTime};

    async fn sender() -> LinkSender {
        let (ours, theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let never = tokio_util::sync::CancellationToken::new();
            cocoon_node::link::serve(theirs, axum::Router::new(), &never, Duration::ZERO).await
        });
        let (sender, driver) = cocoon_node::link::client_handshake(ours).await.unwrap();
        tokio::spawn(driver);
        sender
    }

    fn peer() -> PeerIdentity {
        let measurements = *FakeAttester::from_label("w").measurements();
        PeerIdentity {
            kind: AttestationKind::Fake,
            image_hash: measurements.image_hash(AttestationKind::Fake),
            measurements,
            claims: Claims {
                public_key: [0; 32],
                role: "worker".into(),
                attributes: Default::default(),
            },
            cert_fingerprint: [0; 32],
            public_key: [0; 32],
            not_after: SystemTime::now(),
        }
    }

    async fn add(routing: &Routing, model: &str, coefficient: u32, max_active: u32) -> u64 {
        let info = WorkerInfo {
            protocol_version: 1,
            model: model.into(),
            model_hash: None,
            coefficient,
            max_active,
        };
        routing.add(info, peer(), sender().await).id
    }

    #[tokio::test]
    async fn cheapest_first_until_full_then_the_next() {
        let routing = Routing::default();
        let cheap = add(&routing, "m", 1000, 1).await;
        let dear = add(&routing, "m", 2000, 1).await;
        let first = routing.choose("m", 5000, None).unwrap();
        assert_eq!(first.worker.id, cheap);
        let second = routing.choose("m", 5000, None).unwrap();
        assert_eq!(second.worker.id, dear);
        assert!(matches!(
            routing.choose("m", 5000, None),
            Err(RouteError::Busy { workers: 2, .. })
        ));
        drop(first);
        assert_eq!(routing.choose("m", 5000, None).unwrap().worker.id, cheap);
    }

    #[tokio::test]
    async fn a_worker_failing_in_a_row_is_set_aside_until_healthy_ones_are_full() {
        let routing = Routing::default();
        let cheap = add(&routing, "m", 1000, 4).await;
        let dear = add(&routing, "m", 2000, 1).await;
        let worker = |id: u64| routing.links().into_iter().find(|l| l.id == id).unwrap();
        for _ in 1..FAILURES_TO_SET_ASIDE {
            worker(cheap).record_failure();
        }
        assert_eq!(routing.choose("m", 5000, None).unwrap().worker.id, cheap);
        worker(cheap).record_failure();
        // Set aside: the dearer healthy worker goes first…
        let taken = routing.choose("m", 5000, None).unwrap();
        assert_eq!(taken.worker.id, dear);
        // …and the one set aside only takes what nobody else can.
        assert_eq!(routing.choose("m", 5000, None).unwrap().worker.id, cheap);
        drop(taken);
        assert_eq!(routing.snapshot()[0]["consecutive_failures"], 5);
        assert!(routing.snapshot()[0]["set_aside_ms"].as_u64() > Some(0));
        // One success restores it.
        worker(cheap).record_success();
        assert_eq!(routing.choose("m", 5000, None).unwrap().worker.id, cheap);
    }

    #[tokio::test]
    async fn set_aside_periods_double_while_failing_and_expire() {
        let routing = Routing::default();
        let id = add(&routing, "m", 1000, 1).await;
        let worker = routing.links().into_iter().find(|l| l.id == id).unwrap();
        let start = Instant::now();
        for _ in 0..FAILURES_TO_SET_ASIDE {
            worker.record_failure_at(start);
        }
        assert!(worker.is_aside(start + FIRST_SET_ASIDE - Duration::from_millis(1)));
        assert!(!worker.is_aside(start + FIRST_SET_ASIDE));
        // Failing again once it is back: twice as long, then capped.
        let back = start + FIRST_SET_ASIDE;
        worker.record_failure_at(back);
        assert!(worker.is_aside(back + FIRST_SET_ASIDE * 2 - Duration::from_millis(1)));
        assert!(!worker.is_aside(back + FIRST_SET_ASIDE * 2));
        for _ in 0..20 {
            worker.record_failure_at(back);
        }
        assert!(!worker.is_aside(back + LONGEST_SET_ASIDE));
    }

    #[tokio::test]
    async fn equal_prices_go_to_the_least_loaded() {
        let routing = Routing::default();
        let a = add(&routing, "m", 1000, 4).await;
        let b = add(&routing, "m", 1000, 4).await;
        let first = routing.choose("m", 1000, None).unwrap();
        let second = routing.choose("m", 1000, None).unwrap();
        assert_ne!(first.worker.id, second.worker.id);
        assert!([a, b].contains(&first.worker.id) && [a, b].contains(&second.worker.id));
    }

    #[tokio::test]
    async fn explains_unknown_models_and_price_limits() {
        let routing = Routing::default();
        let only = add(&routing, "m", 1000, 1).await;
        assert_eq!(
            routing.choose("other", 5000, None).err(),
            Some(RouteError::UnknownModel("other".into()))
        );
        let too_cheap = routing.choose("m", 500, None).err().unwrap();
        assert_eq!(
            too_cheap.to_string(),
            "no worker for model `m` at coefficient ≤ 500 (cheapest is 1000)"
        );
        assert_eq!(too_cheap.kind(), ErrorKind::Unavailable);
        // The failed worker is skipped on retry.
        assert!(matches!(
            routing.choose("m", 5000, Some(only)),
            Err(RouteError::Busy { workers: 0, .. })
        ));
        routing.remove(only);
        assert!(matches!(
            routing.choose("m", 5000, None),
            Err(RouteError::UnknownModel(_))
        ));
        assert!(routing.models().models.is_empty());
    }

    #[tokio::test]
    async fn lists_models_with_capacity() {
        let routing = Routing::default();
        add(&routing, "m", 1000, 2).await;
        add(&routing, "m", 3000, 1).await;
        let _slot = routing.choose("m", 5000, None).unwrap();
        let list = routing.models();
        assert_eq!(
            list.models,
            vec![ModelEntry {
                id: "m".into(),
                workers: 2,
                min_coefficient: 1000,
                max_coefficient: 3000,
                free_slots: 2,
            }]
        );
    }

    #[tokio::test]
    async fn capacities_announced_by_workers_add_up_without_overflow() {
        let routing = Routing::default();
        add(&routing, "m", 1000, u32::MAX).await;
        add(&routing, "m", 1000, u32::MAX).await;
        assert_eq!(routing.models().models[0].free_slots, u32::MAX);
    }
}
