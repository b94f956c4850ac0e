//! A client of the TON HTTP API v2 (toncenter's JSON API, also served by a self-hosted
//! `ton-http-api` and by Cocoon's devnet): account state, transactions, external messages and
//! get-methods.
//!
//! The API is a trusted view of the chain: an API that lies can report false balances and
//! transactions. Run your own (see docs/operators) or compare several. Its answers are still
//! hostile input here: size-capped before they are read, every field checked as it is decoded.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tonlib_core::cell::BagOfCells;
use tonlib_core::TonAddress;

/// The largest answer read (a page of transactions with their BOCs stays well below).
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The deadline of one call, body included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why an API call gave no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum TonApiError {
    /// The base URL is not an `http(s)` URL.
    #[error("TON API URL {0:?}: expected http(s)://host[:port][/path]")]
    BadUrl(String),
    /// The request could not be sent or its answer not received.
    #[error("TON API unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer is larger than [`MAX_ANSWER_BYTES`].
    #[error("TON API answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    /// The API answered `{ok: false}`.
    #[error("TON API error {code}: {message}")]
    Api {
        /// Its code (HTTP-like: 416 bad input, 500 not accepted, 429 rate limited …).
        code: i64,
        /// Its message.
        message: String,
    },
    /// The answer is not what the method answers.
    #[error("unexpected TON API answer to {method}: {reason}")]
    Decode {
        /// The method called.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl TonApiError {
    fn decode(method: &'static str, reason: impl ToString) -> Self {
        TonApiError::Decode {
            method,
            reason: reason.to_string(),
        }
    }

    /// Whether the chain refused an external message (as opposed to the API being unreachable).
    pub fn is_not_accepted(&self) -> bool {
        matches!(self, TonApiError::Api { message, .. } if message.contains("not accepted"))
    }
}

/// `{ok, result, error, code}`: every answer's envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    error: Option<String>,
    code: Option<i64>,
}

/// A transaction's identity: logical time and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxId {
    /// Logical time.
    pub lt: u64,
    /// SHA-256 of the transaction cell.
    pub hash: [u8; 32],
}

#[derive(Deserialize)]
struct RawTxId {
    lt: String,
    hash: String,
}

impl RawTxId {
    fn parse(&self, method: &'static str) -> Result<TxId, TonApiError> {
        let lt = self
            .lt
            .parse()
            .map_err(|_| TonApiError::decode(method, "transaction lt is not a u64"))?;
        let hash = BASE64
            .decode(&self.hash)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| TonApiError::decode(method, "transaction hash is not 32 bytes"))?;
        Ok(TxId { lt, hash })
    }
}

/// An account's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// Balance in nano-TON.
    pub balance: u128,
    /// `active`, `uninitialized` or `frozen`.
    pub status: String,
    /// The last transaction, if any.
    pub last_transaction: Option<TxId>,
    /// Chain time (unix seconds) of the state the API read: the clock messages' validity is
    /// judged by.
    pub sync_time: u32,
}

/// One transaction of an account, as much as settlement needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Its identity.
    pub id: TxId,
    /// Block time (unix seconds).
    pub utime: u64,
    /// Hash of the inbound message's body (base64 as the API gives it): how a sender finds the
    /// transaction its external message caused.
    pub in_body_hash: Option<String>,
    /// The compute phase's exit code, when the transaction had one (0 and 1 are success).
    pub exit_code: Option<i32>,
    /// Whether the transaction was aborted.
    pub aborted: bool,
    /// The inbound message's sender and logical time (`None` for an external message).
    pub in_from: Option<MessageRef>,
    /// The internal messages it sent (at most [`MAX_OUT_MESSAGES`] are read).
    pub out_messages: Vec<MessageRef>,
}

/// An internal message as a trace follows it: one end's address and its creation logical time
/// (unique per sender, so `(sender, created_lt)` names the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// The sender (of an inbound message) or the destination (of an outbound one).
    pub address: TonAddress,
    /// Logical time the message was created at.
    pub created_lt: u64,
    /// Whether it is a bounced message coming back.
    pub bounced: bool,
}

/// The most outbound messages of one transaction read (TON allows 255; ours send at most 1).
pub const MAX_OUT_MESSAGES: usize = 16;

#[derive(Deserialize)]
struct RawAccount {
    balance: Value,
    state: String,
    last_transaction_id: Option<RawTxId>,
    sync_utime: u32,
}

#[derive(Deserialize)]
struct RawMessage {
    body_hash: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    created_lt: Option<String>,
    #[serde(default)]
    bounced: Option<bool>,
}

impl RawMessage {
    /// The message's `end` (source or destination) and creation time; `None` when `end` is
    /// empty (an external message). A malformed one is an error.
    fn reference(&self, end: &Option<String>) -> Result<Option<MessageRef>, TonApiError> {
        const METHOD: &str = "getTransactions";
        let Some(text) = end.as_deref().filter(|text| !text.is_empty()) else {
            return Ok(None);
        };
        let address = TonAddress::from_str(text)
            .map_err(|_| TonApiError::decode(METHOD, "message address is not an address"))?;
        let created_lt = self
            .created_lt
            .as_deref()
            .and_then(|lt| lt.parse().ok())
            .ok_or_else(|| TonApiError::decode(METHOD, "message created_lt is not a u64"))?;
        Ok(Some(MessageRef {
            address,
            created_lt,
            bounced: self.bounced.unwrap_or(false),
        }))
    }
}

#[derive(Deserialize)]
struct RawTransaction {
    utime: u64,
    transaction_id: RawTxId,
    in_msg: Option<RawMessage>,
    #[serde(default)]
    out_msgs: Vec<RawMessage>,
    compute_exit_code: Option<i32>,
    aborted: Option<bool>,
}

/// A get-method's result: its exit code and stack.
#[derive(Debug, Clone, PartialEq)]
pub struct GetMethodResult {
    /// 0 and 1 are success.
    pub exit_code: i32,
    /// The stack, as the API gives it (`["num", "0x…"]`, `["cell", {"bytes": …}]` …).
    pub stack: Vec<Value>,
}

impl GetMethodResult {
    /// The integer at `index` of the stack.
    pub fn int(&self, index: usize) -> Result<i128, TonApiError> {
        let entry = self.stack.get(index).and_then(Value::as_array);
        let text = match entry.map(|e| (e.first().and_then(Value::as_str), e.get(1))) {
            Some((Some("num"), Some(Value::String(text)))) => text.as_str(),
            _ => {
                return Err(TonApiError::decode(
                    "runGetMethod",
                    format!("stack entry {index} is not a number"),
                ))
            }
        };
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        let value = i128::from_str_radix(digits, 16).map_err(|_| {
            TonApiError::decode(
                "runGetMethod",
                format!("stack entry {index} is out of range"),
            )
        })?;
        Ok(if negative { -value } else { value })
    }
}

/// A TON HTTP API v2 endpoint.
#[derive(Clone)]
pub struct TonApi {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

/// Never shows the API key (a `Debug` of a handle may end up in a log).
impl std::fmt::Debug for TonApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TonApi")
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TonApi {
    /// A client of the API at `base_url` (e.g. `https://toncenter.com/api/v2`), sending `api_key`
    /// as `X-API-Key` when given.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, TonApiError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TonApiError::BadUrl(base_url.to_owned()));
        }
        let http = reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?;
        Ok(Self {
            http,
            base,
            api_key,
        })
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, TonApiError> {
        let request = match &self.api_key {
            Some(key) => request.header("X-API-Key", key),
            None => request,
        };
        let response = request.send().await?;
        let body = Limited::new(reqwest::Body::from(response), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|error| match error.downcast::<reqwest::Error>() {
                Ok(error) => TonApiError::Transport(*error),
                Err(_) => TonApiError::TooLarge,
            })?
            .to_bytes();
        let envelope: Envelope<T> =
            serde_json::from_slice(&body).map_err(|e| TonApiError::decode(method, e))?;
        match (envelope.ok, envelope.result) {
            (true, Some(result)) => Ok(result),
            (true, None) => Err(TonApiError::decode(method, "ok without a result")),
            (false, _) => Err(TonApiError::Api {
                code: envelope.code.unwrap_or(0),
                message: envelope
                    .error
                    .unwrap_or_default()
                    .chars()
                    .take(512)
                    .collect(),
            }),
        }
    }

    /// POSTs `body` to `url`, a method of the devnet outside the API's base (its faucet), with the
    /// same caps and envelope as every call.
    pub async fn post_devnet(&self, url: &str, body: &Value) -> Result<Value, TonApiError> {
        self.call("devnet", self.http.post(url).json(body)).await
    }

    fn get(&self, method: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}/{method}", self.base))
    }

    fn post(&self, method: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/{method}", self.base)).json(body)
    }

    /// The state of the account at `address`.
    pub async fn account(&self, address: &TonAddress) -> Result<AccountState, TonApiError> {
        const METHOD: &str = "getAddressInformation";
        let raw: RawAccount = self
            .call(
                METHOD,
                self.get(METHOD)
                    .query(&[("address", address.to_base64_url())]),
            )
            .await?;
        // toncenter gives the balance as a string; some providers as a number.
        let balance = match &raw.balance {
            Value::String(text) => text.parse().ok(),
            Value::Number(number) => number.as_u64().map(u128::from),
            _ => None,
        }
        .ok_or_else(|| TonApiError::decode(METHOD, "balance is not a non-negative integer"))?;
        let last_transaction = match raw.last_transaction_id {
            Some(id) => Some(id.parse(METHOD)?).filter(|id| id.lt != 0),
            None => None,
        };
        Ok(AccountState {
            balance,
            status: raw.state,
            last_transaction,
            sync_time: raw.sync_utime,
        })
    }

    /// Up to `limit` (1–100) transactions of `address`, newest first, from `from` (inclusive)
    /// or from the newest.
    pub async fn transactions(
        &self,
        address: &TonAddress,
        limit: u8,
        from: Option<&TxId>,
    ) -> Result<Vec<Transaction>, TonApiError> {
        const METHOD: &str = "getTransactions";
        let mut query = vec![
            ("address", address.to_base64_url()),
            ("limit", limit.clamp(1, 100).to_string()),
        ];
        if let Some(from) = from {
            query.push(("lt", from.lt.to_string()));
            query.push(("hash", BASE64.encode(from.hash)));
        }
        let raw: Vec<RawTransaction> = self.call(METHOD, self.get(METHOD).query(&query)).await?;
        raw.into_iter()
            .map(|tx| {
                let in_from = match &tx.in_msg {
                    Some(message) => message.reference(&message.source)?,
                    None => None,
                };
                let out_messages = tx
                    .out_msgs
                    .iter()
                    .take(MAX_OUT_MESSAGES)
                    .filter_map(|m| m.reference(&m.destination).transpose())
                    .collect::<Result<_, _>>()?;
                Ok(Transaction {
                    id: tx.transaction_id.parse(METHOD)?,
                    utime: tx.utime,
                    in_body_hash: tx.in_msg.and_then(|m| m.body_hash),
                    exit_code: tx.compute_exit_code,
                    aborted: tx.aborted.unwrap_or(false),
                    in_from,
                    out_messages,
                })
            })
            .collect()
    }

    /// Sends an external message (a serialized bag of cells).
    pub async fn send_boc(&self, boc: &[u8]) -> Result<(), TonApiError> {
        const METHOD: &str = "sendBoc";
        let _: Value = self
            .call(
                METHOD,
                self.post(METHOD, &json!({ "boc": BASE64.encode(boc) })),
            )
            .await?;
        Ok(())
    }

    /// Runs get-method `method` of the contract at `address` with `stack`.
    pub async fn run_get_method(
        &self,
        address: &TonAddress,
        method: &str,
        stack: &[Value],
    ) -> Result<GetMethodResult, TonApiError> {
        const METHOD: &str = "runGetMethod";
        #[derive(Deserialize)]
        struct Raw {
            exit_code: i32,
            stack: Vec<Value>,
        }
        let raw: Raw = self
            .call(
                METHOD,
                self.post(
                    METHOD,
                    &json!({ "address": address.to_base64_url(), "method": method, "stack": stack }),
                ),
            )
            .await?;
        Ok(GetMethodResult {
            exit_code: raw.exit_code,
            stack: raw.stack,
        })
    }
}

/// Serializes `cell` as a bag of cells, as `sendBoc` takes it.
pub fn boc_of(cell: tonlib_core::cell::Cell) -> Result<Vec<u8>, tonlib_core::cell::TonCellError> {
    BagOfCells::from_root(cell).serialize(true)
}

#[cfg(test)]
mod tests {
    use axum::routing::{get, post};
    use axum::Router;

    use super::*;

    #[test]
    fn a_debug_print_never_shows_the_api_key() {
        let api = TonApi::new("https://toncenter.com/api/v2", Some("s3cret-key".into())).unwrap();
        let printed = format!("{api:?}");
        assert!(!printed.contains("s3cret-key"), "{printed}");
        assert!(printed.contains("toncenter.com"), "{printed}");
    }

    /// An API at a loopback port answering each method with `answer(method)`.
    async fn stub(answer: fn(&str) -> String) -> TonApi {
        let route = |method: &'static str| move || async move { answer(method) };
        let app = Router::new()
            .route(
                "/getAddressInformation",
                get(route("getAddressInformation")),
            )
            .route("/getTransactions", get(route("getTransactions")))
            .route("/sendBoc", post(route("sendBoc")))
            .route("/runGetMethod", post(route("runGetMethod")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TonApi::new(&url, Some("key".into())).unwrap()
    }

    fn address() -> TonAddress {
        TonAddress::from_hex_str(&format!("0:{}", "ab".repeat(32))).unwrap()
    }

    #[tokio::test]
    async fn toncenter_shaped_answers_decode() {
        let api = stub(|method| match method {
            // Recorded from toncenter's documented shapes (fields we do not read included).
            "getAddressInformation" => r#"{"ok":true,"result":{"@type":"raw.fullAccountState","balance":"1234","code":"","data":"","last_transaction_id":{"@type":"internal.transactionId","lt":"47000001","hash":"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="},"frozen_hash":"","sync_utime":1764600000,"state":"active"},"@extra":"1:2"}"#.into(),
            "getTransactions" => r#"{"ok":true,"result":[{"@type":"raw.transaction","utime":1764600000,"data":"","transaction_id":{"lt":"47000001","hash":"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="},"fee":"100","in_msg":{"@type":"raw.message","source":"EQCrq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq8Uk","destination":"","value":"5","created_lt":"46999999","body_hash":"Ym9keQ=="},"out_msgs":[{"@type":"raw.message","source":"","destination":"0:abababababababababababababababababababababababababababababababab","value":"1","created_lt":"47000002","bounced":false,"body_hash":"Ym9keQ=="}]}]}"#.into(),
            _ => r#"{"ok":true,"result":{"gas_used":10,"stack":[["num","-0x10"],["num","0xff"]],"exit_code":0}}"#.into(),
        })
        .await;
        let account = api.account(&address()).await.unwrap();
        assert_eq!(account.balance, 1234);
        assert_eq!(account.status, "active");
        assert_eq!(account.sync_time, 1_764_600_000);
        assert_eq!(account.last_transaction.unwrap().lt, 47_000_001);
        let history = api.transactions(&address(), 5, None).await.unwrap();
        assert_eq!(history[0].in_body_hash.as_deref(), Some("Ym9keQ=="));
        assert_eq!(history[0].exit_code, None, "toncenter leaves it in the BOC");
        let from = history[0].in_from.as_ref().unwrap();
        assert_eq!(
            (from.address.clone(), from.created_lt),
            (address(), 46_999_999)
        );
        assert_eq!(history[0].out_messages[0].address, address());
        assert_eq!(history[0].out_messages[0].created_lt, 47_000_002);
        let result = api.run_get_method(&address(), "seqno", &[]).await.unwrap();
        assert_eq!(result.int(0).unwrap(), -16);
        assert_eq!(result.int(1).unwrap(), 255);
        assert!(result.int(2).is_err());
    }

    #[tokio::test]
    async fn hostile_answers_are_refused_with_a_reason() {
        let too_large = stub(|_| {
            format!(
                r#"{{"ok":true,"result":"{}"}}"#,
                "a".repeat(MAX_ANSWER_BYTES)
            )
        })
        .await;
        assert!(matches!(
            too_large.account(&address()).await,
            Err(TonApiError::TooLarge)
        ));

        let refusing =
            stub(|_| r#"{"ok":false,"error":"Ratelimit exceed","code":429}"#.into()).await;
        match refusing.account(&address()).await {
            Err(TonApiError::Api { code, message }) => {
                assert_eq!(code, 429);
                assert_eq!(message, "Ratelimit exceed");
            }
            other => panic!("{other:?}"),
        }

        let lying = stub(|method| match method {
            "getAddressInformation" => r#"{"ok":true,"result":{"balance":"-5","state":"active","sync_utime":1}}"#.into(),
            "getTransactions" => r#"{"ok":true,"result":[{"utime":1,"transaction_id":{"lt":"1","hash":"c2hvcnQ="}}]}"#.into(),
            _ => r#"{"ok":true,"result":{"exit_code":0,"stack":[["num","0x1000000000000000000000000000000000"]]}}"#.into(),
        })
        .await;
        let error = lying.account(&address()).await.unwrap_err().to_string();
        assert!(error.contains("balance"), "{error}");
        let error = lying
            .transactions(&address(), 1, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("32 bytes"), "{error}");
        let result = lying.run_get_method(&address(), "x", &[]).await.unwrap();
        assert!(result.int(0).is_err(), "a number past 128 bits is refused");

        // Messages naming no address or no creation time cannot be followed: refused.
        const BAD_SOURCE: &str = r#"{"ok":true,"result":[{"utime":1,"transaction_id":{"lt":"1","hash":"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="},"in_msg":{"source":"0:zz","created_lt":"1"}}]}"#;
        const BAD_LT: &str = r#"{"ok":true,"result":[{"utime":1,"transaction_id":{"lt":"1","hash":"q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="},"out_msgs":[{"destination":"0:abababababababababababababababababababababababababababababababab","created_lt":"-1"}]}]}"#;
        for api in [
            stub(|_| BAD_SOURCE.into()).await,
            stub(|_| BAD_LT.into()).await,
        ] {
            let error = api.transactions(&address(), 1, None).await.unwrap_err();
            assert!(matches!(error, TonApiError::Decode { .. }), "{error}");
        }

        let garbage = stub(|_| "<html>".into()).await;
        assert!(matches!(
            garbage.account(&address()).await,
            Err(TonApiError::Decode { .. })
        ));
    }
}
