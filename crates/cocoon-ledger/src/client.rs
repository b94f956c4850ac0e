//! [`LedgerClient`]: the HTTP client of the local ledger service, and its [`Settlement`] backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ed25519_dalek::SigningKey;
use serde::de::DeserializeOwned;

use crate::api::{ApiError, LedgerStats, LogQuery, MAX_RESPONSE_BYTES, TRANSACTIONS_PATH};
use crate::store::LogEntry;
use cocoon_money::ids::AccountId;
use cocoon_money::registry::Registry;
use cocoon_money::rules::{Account, ClientContract, ProxyContract, RuleError, WorkerContract};
use cocoon_money::settlement::{Settlement, SettlementBackend, SettlementError};
use cocoon_money::signed_registry::RegistryAnswer;
use cocoon_money::transaction::{SignedTransaction, TransactionBody, TransactionError};
use cocoon_money::Receipt;

/// How long an idle pooled connection to the ledger is kept (below the server's 10 s).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one HTTP request to the ledger may take, body included (a registry long poll gets
/// its wait on top).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a ledger request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The ledger answered with an API error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The request did not complete (connection, timeout, unreadable body).
    #[error("ledger request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The answer is longer than any the ledger API gives; it was not read to the end.
    #[error("ledger answer exceeds {limit} bytes")]
    TooLarge {
        /// The cap, [`MAX_RESPONSE_BYTES`].
        limit: usize,
    },
    /// The ledger answered with something that is not its API.
    #[error("unexpected ledger response {status}: {body}")]
    UnexpectedResponse {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A signing operation on a read-only client.
    #[error("this ledger client has no signing key")]
    NoSigningKey,
    /// The transaction could not be encoded.
    #[error(transparent)]
    Transaction(#[from] TransactionError),
}

impl ClientError {
    /// The rule that refused the transaction, if that is what happened.
    pub fn rule(&self) -> Option<&RuleError> {
        match self {
            ClientError::Api(ApiError::Rejected { rule }) => Some(rule),
            _ => None,
        }
    }
}

impl From<ClientError> for SettlementError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api(ApiError::Rejected { rule }) => SettlementError::Rejected(rule),
            ClientError::Http(e) => SettlementError::Unavailable(e.to_string()),
            e @ ClientError::TooLarge { .. } => SettlementError::Unavailable(e.to_string()),
            ClientError::NoSigningKey => SettlementError::NoSigningKey,
            other => SettlementError::Backend(other.to_string()),
        }
    }
}

/// The local ledger as a [`SettlementBackend`]: opens a [`LedgerClient`] on `url` per account.
#[derive(Debug, Clone)]
pub struct LocalLedger {
    url: String,
}

impl LocalLedger {
    /// The ledger service at `url` (e.g. `http://127.0.0.1:13000`).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
        }
    }
}

impl SettlementBackend for LocalLedger {
    fn connect(&self, key: Option<SigningKey>) -> Result<Arc<dyn Settlement>, SettlementError> {
        Ok(Arc::new(LedgerClient::build(&self.url, key)?))
    }

    fn location(&self) -> &str {
        &self.url
    }
}

/// Client of a `cocoon ledger` service, acting for one account when given its key.
///
/// Transactions from one client are signed and sent one at a time with consecutive nonces, so
/// concurrent callers never race each other's nonces.
#[derive(Debug)]
pub struct LedgerClient {
    http: reqwest::Client,
    timeout: Duration,
    base: String,
    key: Option<SigningKey>,
    /// Last nonce known used by this account; `None` until fetched or after an unknown outcome.
    nonce: tokio::sync::Mutex<Option<u64>>,
}

impl LedgerClient {
    /// A client for the ledger at `base_url` (e.g. `http://127.0.0.1:13000`) signing with `key`.
    pub fn new(base_url: &str, key: SigningKey) -> Result<Self, ClientError> {
        Self::build(base_url, Some(key))
    }

    /// A client that can only read.
    pub fn read_only(base_url: &str) -> Result<Self, ClientError> {
        Self::build(base_url, None)
    }

    fn build(base_url: &str, key: Option<SigningKey>) -> Result<Self, ClientError> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                // Servers close keep-alive connections idle for 10 s (header-read timeout);
                // dropping ours sooner means no request is sent on a connection being closed.
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .build()?,
            timeout: REQUEST_TIMEOUT,
            base: base_url.trim_end_matches('/').to_owned(),
            key,
            nonce: tokio::sync::Mutex::new(None),
        })
    }

    /// The same client with another deadline per request (default [`REQUEST_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ClientError> {
        self.http = reqwest::Client::builder().timeout(timeout).build()?;
        self.timeout = timeout;
        Ok(self)
    }

    /// Reads the whole body, refusing one over [`MAX_RESPONSE_BYTES`] before allocating it.
    /// The client's deadline covers the body too, so a stalled body ends as a timeout.
    async fn body(mut response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let too_large = ClientError::TooLarge {
            limit: MAX_RESPONSE_BYTES,
        };
        let declared = response.content_length().unwrap_or(0);
        if declared > MAX_RESPONSE_BYTES as u64 {
            return Err(too_large);
        }
        // `declared` is within the cap here, so it sizes nothing unbounded.
        let mut body = Vec::with_capacity(declared as usize);
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, ClientError> {
        let status = response.status();
        let bytes = Self::body(response).await?;
        if status.is_success() {
            if let Ok(value) = serde_json::from_slice(&bytes) {
                return Ok(value);
            }
        } else if let Ok(error) = serde_json::from_slice::<ApiError>(&bytes) {
            return Err(error.into());
        }
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
        Err(ClientError::UnexpectedResponse {
            status: status.as_u16(),
            body,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        Self::decode(response).await
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        match self.get(path).await {
            Ok(value) => Ok(Some(value)),
            Err(ClientError::Api(ApiError::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ledger-wide figures.
    pub async fn stats(&self) -> Result<LedgerStats, ClientError> {
        self.get("/v1/stats").await
    }

    /// Log entries after `query.after`.
    pub async fn log(&self, query: LogQuery) -> Result<Vec<LogEntry>, ClientError> {
        let mut path = format!("/v1/log?after={}", query.after);
        if let Some(limit) = query.limit {
            path.push_str(&format!("&limit={limit}"));
        }
        self.get(&path).await
    }

    /// Sends an already signed transaction (e.g. signed offline).
    pub async fn submit_signed(&self, tx: &SignedTransaction) -> Result<Receipt, ClientError> {
        let response = self
            .http
            .post(format!("{}{TRANSACTIONS_PATH}", self.base))
            .json(tx)
            .send()
            .await?;
        Self::decode(response).await
    }

    /// Signs `body` with the next nonce and sends it. A stale cached nonce (another process
    /// used this account) is refreshed and the transaction retried once.
    pub async fn submit(&self, body: TransactionBody) -> Result<Receipt, ClientError> {
        let key = self.key.as_ref().ok_or(ClientError::NoSigningKey)?;
        let mut nonce = self.nonce.lock().await;
        let mut retried = false;
        loop {
            let last = match *nonce {
                Some(n) => n,
                None => {
                    let id = AccountId::from(key);
                    self.get::<Account>(&format!("/v1/accounts/{id}"))
                        .await?
                        .nonce
                }
            };
            let next = last.saturating_add(1);
            let tx = SignedTransaction::sign(key, next, body.clone())?;
            match self.submit_signed(&tx).await {
                Ok(receipt) => {
                    *nonce = Some(next);
                    return Ok(receipt);
                }
                Err(ClientError::Api(ApiError::Rejected {
                    rule: RuleError::NonceReplayed { last, .. },
                })) if !retried => {
                    *nonce = Some(last);
                    retried = true;
                }
                // A refusal leaves the nonce unused.
                Err(e @ ClientError::Api(_)) => {
                    *nonce = Some(last);
                    return Err(e);
                }
                Err(e) => {
                    // Unknown whether it was applied: fetch the nonce afresh next time.
                    *nonce = None;
                    return Err(e);
                }
            }
        }
    }
}

#[async_trait]
impl Settlement for LedgerClient {
    fn account_id(&self) -> Option<AccountId> {
        self.key.as_ref().map(AccountId::from)
    }

    async fn execute(&self, body: TransactionBody) -> Result<Receipt, SettlementError> {
        Ok(self.submit(body).await?)
    }

    async fn registry(&self) -> Result<Registry, SettlementError> {
        Ok(self.registry_answer().await?.registry)
    }

    async fn registry_answer(&self) -> Result<RegistryAnswer, SettlementError> {
        // The answer carries the owner's signed update beside the document.
        Ok(self.get("/v1/registry").await?)
    }

    /// The ledger holds the request open until a newer version or `wait` (see
    /// [`crate::api::RegistryQuery`]): a new version arrives within a round trip, unpolled.
    async fn registry_answer_newer_than(
        &self,
        version: u64,
        wait: Duration,
    ) -> Result<RegistryAnswer, SettlementError> {
        let path = format!(
            "/v1/registry?newer_than={version}&wait_secs={}",
            wait.as_secs()
        );
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            // The ledger answers after `wait` at the latest; allow for the trip.
            .timeout(wait.saturating_add(self.timeout))
            .send()
            .await
            .map_err(ClientError::from)?;
        Ok(Self::decode(response).await?)
    }

    async fn account(&self, id: AccountId) -> Result<Account, SettlementError> {
        Ok(self.get(&format!("/v1/accounts/{id}")).await?)
    }

    async fn proxy_contract(
        &self,
        proxy: AccountId,
    ) -> Result<Option<ProxyContract>, SettlementError> {
        Ok(self.get_optional(&format!("/v1/proxies/{proxy}")).await?)
    }

    async fn client_contract(
        &self,
        proxy: AccountId,
        client: AccountId,
    ) -> Result<Option<ClientContract>, SettlementError> {
        Ok(self
            .get_optional(&format!("/v1/proxies/{proxy}/clients/{client}"))
            .await?)
    }

    async fn worker_contract(
        &self,
        proxy: AccountId,
        worker: AccountId,
    ) -> Result<Option<WorkerContract>, SettlementError> {
        Ok(self
            .get_optional(&format!("/v1/proxies/{proxy}/workers/{worker}"))
            .await?)
    }
}
