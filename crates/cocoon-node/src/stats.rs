//! Counters every node keeps, and the surfaces that show them: `/healthz`, `/stats` (for people),
//! `/jsonstats` (for tools) and `/metrics` (Prometheus text).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cocoon_proto::{ErrorKind, TokenUsage};
use http::{header, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// A role-specific section of `/jsonstats` and `/stats` (balances, workers, links…).
pub type Details = Arc<dyn Fn() -> Value + Send + Sync>;

/// Whether a node can serve a request now; `Err` says why not (`/healthz` answers 503 with it).
pub type Readiness =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The counters of one node. Cheap to update from any task.
pub struct NodeStats {
    role: &'static str,
    started: Instant,
    registry: Registry,
    requests: Counter,
    errors: Family<KindLabel, Counter>,
    active: Gauge,
    tokens: Family<KindLabel, Counter>,
    latency: Histogram,
    first_byte: Histogram,
    peers: Gauge,
    latency_micros: AtomicU64,
    latency_count: AtomicU64,
}

impl NodeStats {
    /// Fresh counters for a node of `role` ("proxy", "worker", "client").
    pub fn new(role: &'static str) -> Arc<Self> {
        Self::with_metrics(role, |_| {})
    }

    /// Fresh counters, with the role's own metrics that `register` adds to `/metrics`.
    pub fn with_metrics(role: &'static str, register: impl FnOnce(&mut Registry)) -> Arc<Self> {
        let mut registry = Registry::with_prefix("cocoon");
        register(&mut registry);
        let requests = Counter::default();
        let errors = Family::<KindLabel, Counter>::default();
        let active = Gauge::default();
        let tokens = Family::<KindLabel, Counter>::default();
        // 100 µs … ~100 s: loopback hops up to whole generations.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 21));
        let first_byte = Histogram::new(exponential_buckets(0.0001, 2.0, 21));
        let peers = Gauge::default();
        registry.register("requests", "Requests received", requests.clone());
        registry.register("errors", "Requests failed, by kind", errors.clone());
        registry.register("active_streams", "Requests in flight", active.clone());
        registry.register("tokens", "Tokens served, by kind", tokens.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of its answer",
            latency.clone(),
        );
        registry.register(
            "first_byte_seconds",
            "Time from request to the answer's headers",
            first_byte.clone(),
        );
        registry.register("connected_peers", "Attested links up", peers.clone());
        Arc::new(NodeStats {
            role,
            started: Instant::now(),
            registry,
            requests,
            errors,
            active,
            tokens,
            latency,
            first_byte,
            peers,
            latency_micros: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
        })
    }

    /// Counts a request in and marks it active until the guard drops.
    pub fn request_started(self: &Arc<Self>) -> ActiveRequest {
        self.requests.inc();
        self.active.inc();
        ActiveRequest {
            stats: self.clone(),
            started: Instant::now(),
        }
    }

    /// Requests in flight now (started, their answer not yet ended).
    pub fn active_requests(&self) -> i64 {
        self.active.get()
    }

    /// Counts a failure of `kind`.
    pub fn record_error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&KindLabel { kind: kind.code() })
            .inc();
    }

    /// Adds a finished request's tokens.
    pub fn record_tokens(&self, usage: &TokenUsage) {
        self.tokens
            .get_or_create(&KindLabel { kind: "prompt" })
            .inc_by(usage.prompt_tokens);
        self.tokens
            .get_or_create(&KindLabel { kind: "completion" })
            .inc_by(usage.completion_tokens);
    }

    /// Records the time until an answer's headers.
    pub fn record_first_byte(&self, elapsed: Duration) {
        self.first_byte.observe(elapsed.as_secs_f64());
    }

    /// Marks one more attested link up until the guard drops.
    pub fn peer_connected(self: &Arc<Self>) -> ConnectedPeer {
        self.peers.inc();
        ConnectedPeer {
            stats: self.clone(),
        }
    }

    /// Attested links up now.
    pub fn connected_peers(&self) -> i64 {
        self.peers.get()
    }

    /// Everything counted, as JSON.
    pub fn snapshot(&self) -> Value {
        let errors: serde_json::Map<String, Value> = ErrorKind::ALL
            .iter()
            .filter_map(|kind| {
                let count = self
                    .errors
                    .get_or_create(&KindLabel { kind: kind.code() })
                    .get();
                (count > 0).then(|| (kind.code().to_owned(), json!(count)))
            })
            .collect();
        let count = self.latency_count.load(Ordering::Relaxed);
        let mean_ms = if count == 0 {
            0.0
        } else {
            self.latency_micros.load(Ordering::Relaxed) as f64 / count as f64 / 1000.0
        };
        json!({
            "role": self.role,
            "uptime_seconds": self.started.elapsed().as_secs(),
            "requests": self.requests.get(),
            "active_streams": self.active.get(),
            "errors": errors,
            "tokens": {
                "prompt": self.tokens.get_or_create(&KindLabel { kind: "prompt" }).get(),
                "completion": self.tokens.get_or_create(&KindLabel { kind: "completion" }).get(),
            },
            "completed": count,
            "mean_duration_ms": mean_ms,
            "connected_peers": self.peers.get(),
        })
    }

    /// Everything counted, as Prometheus text.
    pub fn prometheus_text(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }
}

/// An in-flight request; dropping it ends it (successful or not).
pub struct ActiveRequest {
    stats: Arc<NodeStats>,
    started: Instant,
}

impl ActiveRequest {
    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.stats.active.dec();
        self.stats.latency.observe(elapsed.as_secs_f64());
        self.stats
            .latency_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.stats.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connected peer; dropping it counts the link down.
pub struct ConnectedPeer {
    stats: Arc<NodeStats>,
}

impl Drop for ConnectedPeer {
    fn drop(&mut self) {
        self.stats.peers.dec();
    }
}

#[derive(Clone)]
struct Surface {
    stats: Arc<NodeStats>,
    details: Details,
    readiness: Option<Readiness>,
}

impl Surface {
    fn full(&self) -> Value {
        let mut value = self.stats.snapshot();
        value["details"] = (self.details)();
        value
    }
}

/// The `/healthz`, `/stats`, `/jsonstats` and `/metrics` routes of a node; `/healthz` answers 200
/// while the node runs.
pub fn router(stats: Arc<NodeStats>, details: Details) -> Router {
    surfaces(Surface {
        stats,
        details,
        readiness: None,
    })
}

/// As [`router`], with a `/healthz` that answers 200 only while `readiness` says the node can
/// serve a request, and 503 with the reason otherwise.
pub fn router_with_readiness(
    stats: Arc<NodeStats>,
    details: Details,
    readiness: Readiness,
) -> Router {
    surfaces(Surface {
        stats,
        details,
        readiness: Some(readiness),
    })
}

fn surfaces(surface: Surface) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/stats", get(human))
        .route("/jsonstats", get(machine))
        .route("/metrics", get(metrics))
        .with_state(surface)
}

async fn healthz(State(surface): State<Surface>) -> Response {
    let role = surface.stats.role;
    let verdict = match &surface.readiness {
        Some(readiness) => readiness().await,
        None => Ok(()),
    };
    match verdict {
        Ok(()) => (StatusCode::OK, format!("ok {role}\n")).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy {role}: {reason}\n"),
        )
            .into_response(),
    }
}

async fn machine(State(surface): State<Surface>) -> Response {
    axum::Json(surface.full()).into_response()
}

async fn human(State(surface): State<Surface>) -> Response {
    let mut text = String::new();
    render_human(&surface.full(), "", &mut text);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn metrics(State(surface): State<Surface>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        surface.stats.prometheus_text(),
    )
        .into_response()
}

/// Indented `key: value` lines, nested objects as sections.
fn render_human(value: &Value, indent: &str, out: &mut String) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if value.is_object() || value.is_array() {
                    out.push_str(&format!("{indent}{key}:\n"));
                    render_human(value, &format!("{indent}  "), out);
                } else {
                    out.push_str(&format!("{indent}{key}: {value}\n"));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&format!("{indent}-\n"));
                render_human(item, &format!("{indent}  "), out);
            }
        }
        other => out.push_str(&format!("{indent}{other}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_errors_tokens_and_peers() {
        let stats = NodeStats::new("proxy");
        {
            let _request = stats.request_started();
            assert_eq!(stats.snapshot()["active_streams"], 1);
            stats.record_error(ErrorKind::Timeout);
            stats.record_tokens(&TokenUsage {
                prompt_tokens: 3,
                completion_tokens: 5,
                ..TokenUsage::default()
            });
        }
        let peer = stats.peer_connected();
        let snapshot = stats.snapshot();
        assert_eq!(snapshot["requests"], 1);
        assert_eq!(snapshot["active_streams"], 0);
        assert_eq!(snapshot["errors"]["timeout"], 1);
        assert_eq!(snapshot["tokens"]["completion"], 5);
        assert_eq!(snapshot["connected_peers"], 1);
        drop(peer);
        assert_eq!(stats.connected_peers(), 0);
        let text = stats.prometheus_text();
        assert!(text.contains("cocoon_requests_total 1"), "{text}");
        assert!(
            text.contains("cocoon_errors_total{kind=\"timeout\"} 1"),
            "{text}"
        );
    }
}
