//! Messages of the control endpoints under `/cocoon/v1/` and the paths that links serve.

use serde::{Deserialize, Serialize};

/// OpenAI chat completions, served by every hop.
pub const PATH_CHAT: &str = "/v1/chat/completions";
/// OpenAI plain completions, served by every hop.
pub const PATH_COMPLETIONS: &str = "/v1/completions";
/// Worker link: the proxy asks the worker what it serves ([`WorkerInfo`]).
pub const PATH_WORKER_INFO: &str = "/cocoon/v1/worker";
/// Client link: the client asks the proxy which models it can route to ([`ModelList`]).
pub const PATH_MODELS: &str = "/cocoon/v1/models";
/// Client link: the client asks the proxy for its billing statement (what it was charged, with
/// the proxy's signed voucher for it).
pub const PATH_BILLING: &str = "/cocoon/v1/billing";
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
}

/// The proxy's answer on [`PATH_MODELS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Every model with at least one connected worker.
    pub models: Vec<ModelEntry>,
}
