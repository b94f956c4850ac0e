//! Messages of the control endpoints under `/cocoon/v1/` and the paths that links serve.

use serde::{Deserialize, Serialize};

use crate::capabilities::{EngineKind, Honours};

/// OpenAI chat completions, served by every hop.
pub const PATH_CHAT: &str = "/v1/chat/completions";
/// OpenAI plain completions, served by every hop.
pub const PATH_COMPLETIONS: &str = "/v1/completions";
/// Worker link: the proxy asks the worker what it serves ([`WorkerInfo`]).
pub const PATH_WORKER_INFO: &str = "/cocoon/v1/worker";
/// Client link: the client asks the proxy which models it can route to ([`ModelList`]).
pub const PATH_MODELS: &str = "/cocoon/v1/models";
/// Client link: the client asks the proxy for its billing statement (what it was charged, and
/// the latest payment voucher of the client's that the proxy holds).
pub const PATH_BILLING: &str = "/cocoon/v1/billing";
/// Client link: the client sends a payment voucher while it has no request to carry it (body:
/// the `SignedVoucher` JSON; `x-cocoon-wallet-proof` as on requests).
pub const PATH_PAYMENT: &str = "/cocoon/v1/payment";
/// Client → proxy: the proxy's release, its final statement with which the client closes its
/// channel at once; the client is served no more.
pub const PATH_RELEASE: &str = "/cocoon/v1/release";
/// Worker link: the proxy sends the worker its earnings statement (with a signed voucher the
/// worker can claim on the ledger).
pub const PATH_EARNINGS: &str = "/cocoon/v1/earnings";

/// What a worker announces to the proxy on its link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub protocol_version: u32,
    /// The model name requests must carry to be routed here.
    pub model: String,
    /// Hex SHA-256 of the model weights, when the engine knows it.
    #[serde(default)]
    pub model_hash: Option<String>,
    /// Price coefficient, 1000 = 1.0×.
    pub coefficient: u32,
    /// How many requests the worker serves at once; more are refused.
    pub max_active: u32,
    /// What kind of engine serves the model (absent from older workers).
    #[serde(default)]
    pub engine: Option<EngineKind>,
    /// The engine parameters it honours (see [`crate::capabilities`]); absent: none.
    #[serde(default)]
    pub honours: Honours,
    /// Tokens of context per request (prompt plus completion), when the engine says.
    #[serde(default)]
    pub context_length: Option<u32>,
    /// When the worker started serving the model, in Unix seconds (0: unknown).
    #[serde(default)]
    pub started_at: u64,
}

/// One model the proxy can route to, as seen from a client link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Model name.
    pub id: String,
    /// Connected workers serving it.
    pub workers: u32,
    /// Lowest coefficient among them.
    pub min_coefficient: u32,
    /// Highest coefficient among them.
    pub max_coefficient: u32,
    /// Free request slots across them now.
    pub free_slots: u32,
    /// When the model became available here: the earliest start (Unix seconds) among the
    /// workers serving it now (0: unknown).
    #[serde(default)]
    pub created: u64,
    /// The longest context (prompt plus completion tokens) among its workers, when every one of
    /// them states it.
    #[serde(default)]
    pub context_length: Option<u32>,
}

/// The proxy's answer on [`PATH_MODELS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Every model with at least one connected worker.
    pub models: Vec<ModelEntry>,
}
