//! The ledger's HTTP/JSON vocabulary, shared by [`crate::service`] and [`crate::client`].
//!
//! Routes (all JSON):
//! - `GET  /healthz` → `"ok"` (text)
//! - `GET  /v1/registry` → [`crate::RegistryAnswer`]: the document, and the owner's signed update
//!   that set it (which nodes verify); with `?newer_than=V[&wait_secs=S]` the answer waits
//!   (at most [`MAX_REGISTRY_WAIT_SECS`]) until the version is above `V` — how nodes watch it
//! - `GET  /v1/stats` (also `/jsonstats`) → [`LedgerStats`]; `/stats` (text), `/metrics` (Prometheus)
//! - `GET  /v1/accounts/{account}` → [`crate::Account`] (zero balance and nonce if never seen)
//! - `GET  /v1/proxies/{proxy}` → [`crate::ProxyContract`]
//! - `GET  /v1/proxies/{proxy}/clients/{client}` → [`crate::ClientContract`]
//! - `GET  /v1/proxies/{proxy}/workers/{worker}` → [`crate::WorkerContract`]
//! - `GET  /v1/log?after=SEQ&limit=N` → `[`[`crate::store::LogEntry`]`]`
//! - `POST /v1/transactions` with a [`crate::SignedTransaction`] → [`crate::store::Receipt`]
//!
//! Errors — including malformed queries, unknown routes and wrong methods — are an [`ApiError`]
//! body with a matching status.

use serde::{Deserialize, Serialize};

use crate::registry::Amount;
use crate::rules::RuleError;

/// The longest a registry watch request is held open.
pub const MAX_REGISTRY_WAIT_SECS: u64 = 30;

/// Query of `GET /v1/registry`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
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
#[serde(tag = "error", rename_all = "snake_case")]
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
            ApiError::Storage { .. } => 500,
        }
    }
}

/// Ledger-wide figures, for `/jsonstats` and `cocoon wallet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Whether the faucet is on.
    pub faucet_enabled: bool,
    /// The ledger's clock (unix seconds).
    pub now: u64,
}

/// Query of `GET /v1/log`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
