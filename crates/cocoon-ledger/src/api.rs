//! The ledger's HTTP/JSON vocabulary, shared by [`crate::service`] and [`crate::client`].
//!
//! Routes (all JSON):
//! - `GET  /healthz` → `"ok"` (text)
//! - `GET  /v1/registry` → [`cocoon_money::RegistryAnswer`]: the document, and the owner's signed update
//!   that set it (which nodes verify); with `?newer_than=V[&wait_secs=S]` the answer waits
//!   (at most [`MAX_REGISTRY_WAIT_SECS`]) until the version is above `V` — how nodes watch it
//! - `GET  /v1/stats` (also `/jsonstats`) → [`LedgerStats`]; `/stats` (text), `/metrics` (Prometheus)
//! - `GET  /v1/accounts/{account}` → [`cocoon_money::Account`] (zero balance and nonce if never seen)
//! - `GET  /v1/proxies/{proxy}` → [`cocoon_money::ProxyContract`]
//! - `GET  /v1/proxies/{proxy}/clients/{client}` → [`cocoon_money::ClientContract`]
//! - `GET  /v1/proxies/{proxy}/workers/{worker}` → [`cocoon_money::WorkerContract`]
//! - `GET  /v1/log?after=SEQ&limit=N` → `[`[`crate::store::LogEntry`]`]` (at most
//!   [`MAX_LOG_PAGE`] entries and, past the first, [`MAX_LOG_PAGE_BYTES`] of them)
//! - `POST /v1/transactions` with a [`cocoon_money::SignedTransaction`] (`application/json`, at most
//!   [`MAX_TRANSACTION_BYTES`]) → [`cocoon_money::Receipt`]
//!
//! Errors — including malformed queries, unknown routes, wrong methods, bodies that are too large
//! or not JSON — are an [`ApiError`] body with a matching status.

use serde::{Deserialize, Serialize};

use cocoon_money::registry::Amount;
use cocoon_money::rules::RuleError;

/// The longest a registry watch request is held open.
pub const MAX_REGISTRY_WAIT_SECS: u64 = 30;

/// Largest request body of `POST /v1/transactions`. Every transaction but a registry update is
/// well under 1 KiB; the limit fits a registry at every `MAX_*` limit of [`cocoon_money::registry`].
pub const MAX_TRANSACTION_BYTES: usize = 64 * 1024;

/// Query of `GET /v1/registry`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryQuery {
    /// Answer once the registry version is above this (or when the wait ends).
    pub newer_than: Option<u64>,
    /// How long to wait, in seconds (at most [`MAX_REGISTRY_WAIT_SECS`], which is the default).
    pub wait_secs: Option<u64>,
}

/// Path of the transaction endpoint.
pub const TRANSACTIONS_PATH: &str = "/v1/transactions";

/// An error answer of the ledger API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiError {
    /// The rules refused the transaction (HTTP 409); nothing changed.
    #[error("rejected: {rule}")]
    Rejected {
        /// Why.
        rule: RuleError,
    },
    /// The request is malformed or wrongly signed (HTTP 400).
    #[error("bad request: {message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// No such account, contract or route (HTTP 404).
    #[error("not found: {message}")]
    NotFound {
        /// What was looked for.
        message: String,
    },
    /// The route exists but not with this method (HTTP 405).
    #[error("method not allowed: {message}")]
    MethodNotAllowed {
        /// The method and the route.
        message: String,
    },
    /// The request body is larger than the route accepts (HTTP 413).
    #[error("request body too large: {message}")]
    TooLarge {
        /// The limit.
        message: String,
    },
    /// The request body is not `application/json` (HTTP 415).
    #[error("unsupported media type: {message}")]
    UnsupportedMediaType {
        /// What was expected.
        message: String,
    },
    /// The ledger is shutting down (HTTP 503); ask another time.
    #[error("ledger unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// The ledger could not read or write its database (HTTP 500); nothing changed.
    #[error("ledger storage failure: {message}")]
    Storage {
        /// The storage error.
        message: String,
    },
}

impl ApiError {
    /// The HTTP status this error is sent with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Rejected { .. } => 409,
            ApiError::BadRequest { .. } => 400,
            ApiError::NotFound { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::TooLarge { .. } => 413,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::Unavailable { .. } => 503,
            ApiError::Storage { .. } => 500,
        }
    }
}

/// Ledger-wide figures, for `/jsonstats` and `cocoon wallet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerStats {
    /// Sequence number of the last accepted transaction.
    pub last_seq: u64,
    /// Total money in existence.
    pub supply: Amount,
    /// Sum of all holdings; equals `supply` in a consistent ledger.
    pub holdings_total: u128,
    /// Number of accounts.
    pub accounts: usize,
    /// Number of proxy contracts.
    pub proxy_contracts: usize,
    /// Number of client contracts.
    pub client_contracts: usize,
    /// Number of worker contracts.
    pub worker_contracts: usize,
    /// Current registry version.
    pub registry_version: u64,
    /// Registry long polls (`GET /v1/registry?newer_than=`) waiting now: the nodes following it.
    pub registry_watchers: usize,
    /// Whether the faucet is on.
    pub faucet_enabled: bool,
    /// The ledger's clock (unix seconds).
    pub now: u64,
}

/// Query of `GET /v1/log`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Return entries with a sequence number above this.
    #[serde(default)]
    pub after: u64,
    /// At most this many (capped by the server at [`MAX_LOG_PAGE`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Largest log page the server returns.
pub const MAX_LOG_PAGE: u32 = 1_000;

/// Most stored bytes of log entries one page carries (a page always has its first entry). With
/// [`MAX_TRANSACTION_BYTES`] per entry, a page stays under [`MAX_RESPONSE_BYTES`].
pub const MAX_LOG_PAGE_BYTES: usize = 1024 * 1024;

/// Largest answer [`crate::LedgerClient`] reads from a ledger; anything longer is an error, not
/// an allocation.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_round_trips_with_the_rule_inside() {
        let err = ApiError::Rejected {
            rule: RuleError::VoucherNotNewer { applied: 3, got: 2 },
        };
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["error"], "rejected");
        assert_eq!(json["rule"]["code"], "voucher_not_newer");
        assert_eq!(serde_json::from_value::<ApiError>(json).unwrap(), err);
        assert_eq!(err.status(), 409);
    }
}
