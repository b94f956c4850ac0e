//! Requests waiting for a worker slot: one bounded queue per model, served round-robin between
//! clients, so one client's burst cannot make another client's request wait behind all of it.
//!
//! A queued request holds no slot; a slot that frees (or a worker that links) is handed straight to
//! the next waiter in turn (`Routing::dispatch`), so newcomers never overtake
//! the queue. Each client has a queue of its own (first come, first served) and a place in the
//! model's turn order; a client served goes to the back of the order. A request is refused — 503
//! when the model's queue is full, 429 when its client's share is, 503 when its wait runs out — with
//! `Retry-After`. A waiter whose request is dropped (the app hung up) leaves the queue at once.
//!
//! The state is one `Mutex` around plain collections; waiting is a `tokio::sync::oneshot` per
//! waiter that the slot arrives on.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocoon_money::AccountId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::routing::{Needs, RouteError, Routing, Slot};

/// How requests wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Requests that may wait per model (0: none; a busy model refuses at once).
    pub depth: usize,
    /// Requests one client may have waiting per model.
    pub per_client: usize,
    /// The longest a request waits (never beyond its own timeout).
    pub wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            depth: 256,
            per_client: 64,
            wait: Duration::from_secs(5),
        }
    }
}

impl QueueConfig {
    /// The `Retry-After` of a refusal: the queue's wait, in whole seconds, at least one.
    pub fn retry_after_secs(&self) -> u64 {
        let whole = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        whole.max(1)
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The model's queue is full.
    QueueFull,
    /// This client already has its share of the queue waiting.
    ClientShare,
}

/// How a waiter left the queue without a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Its wait ran out.
    TimedOut,
    /// Its request was dropped (the app hung up).
    Abandoned,
}

/// One request waiting.
struct Waiter {
    id: u64,
    max_coefficient: u32,
    needs: Needs,
    since: Instant,
    hand: oneshot::Sender<Slot>,
}

/// Most recent waits kept per model for `/jsonstats`' percentiles.
const RECENT_WAITS: usize = 1024;

/// One model's queue.
#[derive(Default)]
struct ModelQueue {
    /// Clients with requests waiting, in the order they are served.
    turns: VecDeque<AccountId>,
    waiting: HashMap<AccountId, VecDeque<Waiter>>,
    len: usize,
    served: u64,
    refused_full: u64,
    refused_share: u64,
    timed_out: u64,
    abandoned: u64,
    /// The latest waits of served requests, in microseconds.
    recent_waits_us: VecDeque<u64>,
}

impl ModelQueue {
    /// Takes `client`'s first waiter, moving the client to the back of the turns (or out of them).
    fn take_first_of(&mut self, turn: usize) -> Option<Waiter> {
        let client = self.turns.remove(turn)?;
        let queue = self.waiting.get_mut(&client)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&client);
        } else {
            self.turns.push_back(client);
        }
        self.len = self.len.saturating_sub(usize::from(waiter.is_some()));
        waiter
    }

    /// Removes waiter `id` wherever it is; whether it was there.
    fn remove(&mut self, id: u64) -> bool {
        let Some((client, at)) = self.waiting.iter().find_map(|(client, queue)| {
            queue
                .iter()
                .position(|waiter| waiter.id == id)
                .map(|at| (*client, at))
        }) else {
            return false;
        };
        let queue = self.waiting.get_mut(&client).expect("found above");
        queue.remove(at);
        if queue.is_empty() {
            self.waiting.remove(&client);
            self.turns.retain(|turn| *turn != client);
        }
        self.len = self.len.saturating_sub(1);
        true
    }

    fn record_wait(&mut self, waited: Duration) {
        if self.recent_waits_us.len() == RECENT_WAITS {
            self.recent_waits_us.pop_front();
        }
        self.recent_waits_us
            .push_back(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
        self.served = self.served.saturating_add(1);
    }

    fn percentile_ms(&self, p: usize) -> f64 {
        let mut waits: Vec<u64> = self.recent_waits_us.iter().copied().collect();
        if waits.is_empty() {
            return 0.0;
        }
        waits.sort_unstable();
        let at = (waits.len() - 1) * p / 100;
        waits[at] as f64 / 1000.0
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    model: String,
    reason: &'static str,
}

fn wait_histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The queue's Prometheus metrics, registered on the node's registry.
#[derive(Clone)]
struct QueueMetrics {
    depth: Family<ModelLabel, Gauge>,
    waits: Family<ModelLabel, Histogram, fn() -> Histogram>,
    refused: Family<RefusalLabel, Counter>,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics {
            depth: Family::default(),
            waits: Family::new_with_constructor(wait_histogram),
            refused: Family::default(),
        }
    }
}

/// Every model's queue.
#[derive(Default)]
pub struct WaitQueues {
    config: QueueConfig,
    models: HashMap<String, ModelQueue>,
    next_id: u64,
    metrics: QueueMetrics,
}

impl WaitQueues {
    /// Empty queues that wait as `config` says.
    pub fn new(config: QueueConfig) -> Self {
        WaitQueues {
            config,
            ..WaitQueues::default()
        }
    }

    /// How requests wait.
    pub fn config(&self) -> QueueConfig {
        self.config
    }

    /// Adds the queues' metrics to a node's Prometheus registry.
    pub fn register(&self, registry: &mut Registry) {
        let metrics = self.metrics.clone();
        registry.register(
            "queue_depth",
            "Requests waiting for a worker slot, by model",
            metrics.depth,
        );
        registry.register(
            "queue_wait_seconds",
            "Time a served request waited for a worker slot, by model",
            metrics.waits,
        );
        registry.register(
            "queue_refused",
            "Requests refused by the queue, by model and reason (queue_full, client_share, timed_out)",
            metrics.refused,
        );
    }

    /// Whether requests for `model` are waiting (a newcomer then queues behind them).
    pub fn has_waiters(&self, model: &str) -> bool {
        self.models.get(model).is_some_and(|queue| queue.len > 0)
    }

    /// Queues a request of `client` for `model`; its slot will arrive on the receiver.
    pub fn enqueue(
        &mut self,
        model: &str,
        client: AccountId,
        max_coefficient: u32,
        needs: &Needs,
    ) -> Result<(u64, oneshot::Receiver<Slot>), Refusal> {
        let config = self.config;
        let queue = self.models.entry(model.to_owned()).or_default();
        let mine = queue.waiting.get(&client).map_or(0, VecDeque::len);
        let refusal = if queue.len >= config.depth {
            Some((Refusal::QueueFull, "queue_full"))
        } else if mine >= config.per_client {
            Some((Refusal::ClientShare, "client_share"))
        } else {
            None
        };
        if let Some((refusal, reason)) = refusal {
            match refusal {
                Refusal::QueueFull => queue.refused_full = queue.refused_full.saturating_add(1),
                Refusal::ClientShare => queue.refused_share = queue.refused_share.saturating_add(1),
            }
            self.metrics
                .refused
                .get_or_create(&RefusalLabel {
                    model: model.to_owned(),
                    reason,
                })
                .inc();
            return Err(refusal);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let (hand, receiver) = oneshot::channel();
        if mine == 0 {
            queue.turns.push_back(client);
        }
        queue.waiting.entry(client).or_default().push_back(Waiter {
            id,
            max_coefficient,
            needs: needs.clone(),
            since: Instant::now(),
            hand,
        });
        queue.len += 1;
        self.set_depth(model);
        Ok((id, receiver))
    }

    /// Hands slots to waiters of `model` in turn while `take_slot` finds one for a waiter's price
    /// limit and needs. A waiter that cannot be served now keeps its turn for the next slot, and
    /// the next client's first waiter is tried. Returns the slots whose waiter had gone, to be
    /// dropped once the caller holds no lock (dropping a slot dispatches again).
    pub fn dispatch(
        &mut self,
        model: &str,
        mut take_slot: impl FnMut(u32, &Needs) -> Option<Slot>,
    ) -> Vec<Slot> {
        let mut undelivered = Vec::new();
        let Some(queue) = self.models.get_mut(model) else {
            return undelivered;
        };
        let mut turn = 0;
        while turn < queue.turns.len() {
            let client = queue.turns[turn];
            let Some(first) = queue.waiting.get(&client).and_then(VecDeque::front) else {
                turn += 1;
                continue;
            };
            match take_slot(first.max_coefficient, &first.needs) {
                Some(slot) => {
                    let waiter = queue.take_first_of(turn).expect("present above");
                    let waited = waiter.since.elapsed();
                    queue.record_wait(waited);
                    self.metrics
                        .waits
                        .get_or_create(&ModelLabel {
                            model: model.to_owned(),
                        })
                        .observe(waited.as_secs_f64());
                    if let Err(slot) = waiter.hand.send(slot) {
                        undelivered.push(slot);
                    }
                    turn = 0;
                }
                None => turn += 1,
            }
        }
        self.set_depth(model);
        undelivered
    }

    /// Removes waiter `id` of `model` that leaves without a slot; whether it was still waiting
    /// (if not, its slot is already on its way).
    pub fn leave(&mut self, model: &str, id: u64, how: Left) -> bool {
        let Some(queue) = self.models.get_mut(model) else {
            return false;
        };
        if !queue.remove(id) {
            return false;
        }
        match how {
            Left::TimedOut => {
                queue.timed_out = queue.timed_out.saturating_add(1);
                self.metrics
                    .refused
                    .get_or_create(&RefusalLabel {
                        model: model.to_owned(),
                        reason: "timed_out",
                    })
                    .inc();
            }
            Left::Abandoned => queue.abandoned = queue.abandoned.saturating_add(1),
        }
        self.set_depth(model);
        true
    }

    /// Sends every waiter of `model` away (its last worker left): their receivers see the
    /// channel closed.
    pub fn close(&mut self, model: &str) {
        if let Some(queue) = self.models.get_mut(model) {
            queue.turns.clear();
            queue.waiting.clear();
            queue.len = 0;
        }
        self.set_depth(model);
    }

    fn set_depth(&self, model: &str) {
        let len = self.models.get(model).map_or(0, |queue| queue.len);
        self.metrics
            .depth
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Each model's queue, for `/jsonstats`.
    pub fn snapshot(&self) -> Value {
        let models: serde_json::Map<String, Value> = self
            .models
            .iter()
            .map(|(model, queue)| {
                (
                    model.clone(),
                    json!({
                        "waiting": queue.len,
                        "clients_waiting": queue.turns.len(),
                        "served": queue.served,
                        "wait_p50_ms": queue.percentile_ms(50),
                        "wait_p99_ms": queue.percentile_ms(99),
                        "refused": {
                            "queue_full": queue.refused_full,
                            "client_share": queue.refused_share,
                            "timed_out": queue.timed_out,
                        },
                        "abandoned": queue.abandoned,
                    }),
                )
            })
            .collect();
        json!({
            "depth": self.config.depth,
            "per_client": self.config.per_client,
            "wait_ms": u64::try_from(self.config.wait.as_millis()).unwrap_or(u64::MAX),
            "models": models,
        })
    }
}

impl Routing {
    /// A slot for a request of `client`: at once if a worker is free and nobody waits, else after
    /// waiting in the model's queue for the queue's wait or until the request's `deadline`,
    /// whichever comes first (see [`crate::queue`]).
    pub async fn acquire(
        self: &Arc<Self>,
        model: &str,
        max_coefficient: u32,
        needs: &Needs,
        client: AccountId,
        deadline: tokio::time::Instant,
    ) -> Result<Slot, RouteError> {
        let config;
        let (id, mut receiver) = {
            let mut queues = self.queues();
            config = queues.config();
            if queues.has_waiters(model) {
                // No overtaking the queue; but a request no worker could ever take is told now.
                self.within_price(model, max_coefficient, needs)?;
            } else {
                match self.choose(model, max_coefficient, needs, None) {
                    Err(RouteError::Busy { .. }) => {}
                    chosen => return chosen,
                }
            }
            let retry_after = config.retry_after_secs();
            queues
                .enqueue(model, client, max_coefficient, needs)
                .map_err(|refusal| match refusal {
                    Refusal::QueueFull => RouteError::QueueFull {
                        model: model.to_owned(),
                        depth: config.depth,
                        retry_after,
                    },
                    Refusal::ClientShare => RouteError::ClientShareFull {
                        model: model.to_owned(),
                        share: config.per_client,
                        retry_after,
                    },
                })?
        };
        let since = Instant::now();
        let wait_until = deadline.min(tokio::time::Instant::now() + config.wait);
        // Leaves the queue if this future is dropped while waiting (the app hung up).
        let queued = Queued {
            routing: self,
            model,
            id,
        };
        match tokio::time::timeout_at(wait_until, &mut receiver).await {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_)) => Err(RouteError::UnknownModel(model.to_owned())),
            Err(_) if queued.leave(Left::TimedOut) => Err(RouteError::QueueTimeout {
                model: model.to_owned(),
                waited_ms: since.elapsed().as_millis(),
                retry_after: config.retry_after_secs(),
            }),
            // Served just as the wait ran out: the slot is in the channel.
            Err(_) => receiver
                .try_recv()
                .map_err(|_| RouteError::UnknownModel(model.to_owned())),
        }
    }

    /// Hands free slots of `model`'s workers to the requests waiting for them, in turn.
    pub(crate) fn dispatch(self: &Arc<Self>, model: &str) {
        let undelivered = {
            let mut queues = self.queues();
            if !queues.has_waiters(model) {
                return;
            }
            queues.dispatch(model, |max_coefficient, needs| {
                self.choose(model, max_coefficient, needs, None).ok()
            })
        };
        // Their requests were dropped after being served: the slots go back (and on, in turn).
        drop(undelivered);
    }
}

/// A request waiting in a queue; dropping it takes it out (if no slot was handed to it yet).
struct Queued<'a> {
    routing: &'a Routing,
    model: &'a str,
    id: u64,
}

impl Queued<'_> {
    /// Takes the request out of the queue; whether it was still there.
    fn leave(&self, how: Left) -> bool {
        self.routing.queues().leave(self.model, self.id, how)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.leave(Left::Abandoned);
    }
}
