//! One sender per wallet: external messages of a v5r1 wallet, sent one at a time, each until the
//! chain shows it processed.
//!
//! A wallet accepts an external message only with its current `seqno` and before the message's
//! `valid_until`, so a message is applied at most once, and once its `valid_until` has passed in
//! chain time it can never be. Sending is therefore: read the seqno, sign with a short validity,
//! send, watch the wallet's transactions for one whose inbound body is ours; if none appears before
//! the validity ends, nothing happened and the next attempt signs afresh. Calls to
//! [`WalletSender::send`] are serialized, so two never race for one seqno.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use tokio::sync::Mutex;
use tonlib_core::cell::{ArcCell, TonCellError};
use tonlib_core::wallet::mnemonic::KeyPair;
use tonlib_core::wallet::ton_wallet::TonWallet;
use tonlib_core::wallet::wallet_version::WalletVersion;
use tonlib_core::TonAddress;

use crate::api::{boc_of, TonApi, TonApiError, Transaction};

/// How long a signed message may be applied (chain time): long enough for a few blocks.
pub const VALIDITY: Duration = Duration::from_secs(60);
/// How often the wallet's transactions are read while a message is under way.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts (each with a fresh seqno and validity) before `send` gives up.
pub const MAX_ATTEMPTS: u32 = 4;
/// The longest (wall clock) one attempt watches for its message: chain time that does not reach
/// the message's validity in this long means the API is stuck (or lying), and a fresh attempt could
/// then apply twice, so `send` stops instead.
pub const MAX_WATCH: Duration = Duration::from_secs(5 * 60);

/// Why a message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The API failed.
    #[error(transparent)]
    Api(#[from] TonApiError),
    /// The message could not be built.
    #[error("cannot build the wallet message: {0}")]
    Build(String),
    /// The wallet's transaction for our message failed (e.g. not enough balance for the fees).
    #[error("the wallet's transaction failed (exit code {exit_code:?}, aborted {aborted})")]
    Failed {
        /// The compute phase's exit code.
        exit_code: Option<i32>,
        /// Whether it was aborted.
        aborted: bool,
    },
    /// Chain time, as the API reports it, did not pass an attempt's validity within
    /// [`MAX_WATCH`]: the message may still be applied, so nothing is signed afresh.
    #[error("the TON API's chain time stopped short of the message's validity for {0:?}; not re-sending")]
    Stalled(Duration),
    /// No attempt was seen applied.
    #[error("no attempt applied after {MAX_ATTEMPTS} tries (last: {last})")]
    GaveUp {
        /// The last attempt's failure.
        last: String,
    },
}

impl From<TonCellError> for SendError {
    fn from(error: TonCellError) -> Self {
        SendError::Build(error.to_string())
    }
}

/// Sends the external messages of one v5r1 wallet.
pub struct WalletSender {
    api: TonApi,
    wallet: TonWallet,
    one_at_a_time: Arc<Mutex<()>>,
    poll_interval: Duration,
    max_watch: Duration,
}

impl WalletSender {
    /// The sender of the v5r1 wallet (workchain 0, default wallet id) of `key`.
    pub fn new(api: TonApi, key: &SigningKey) -> Result<Self, SendError> {
        let key_pair = KeyPair {
            public_key: key.verifying_key().to_bytes().to_vec(),
            secret_key: key.to_keypair_bytes().to_vec(),
        };
        Ok(Self {
            api,
            wallet: TonWallet::new(WalletVersion::V5R1, key_pair)?,
            one_at_a_time: Arc::new(Mutex::new(())),
            poll_interval: POLL_INTERVAL,
            max_watch: MAX_WATCH,
        })
    }

    /// The same sender, reading transactions every `interval` (default [`POLL_INTERVAL`]).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The same sender, watching one attempt for at most `max_watch` (default [`MAX_WATCH`]).
    pub fn with_max_watch(mut self, max_watch: Duration) -> Self {
        self.max_watch = max_watch;
        self
    }

    /// The wallet's address.
    pub fn address(&self) -> &TonAddress {
        &self.wallet.address
    }

    /// Sends `messages` (internal messages, at most 255) from the wallet, deploying it with the
    /// first message if it is not yet, and returns the wallet's transaction that applied them.
    pub async fn send(&self, messages: &[ArcCell]) -> Result<Transaction, SendError> {
        let _turn = self.one_at_a_time.lock().await;
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(messages).await {
                Ok(Some(tx)) if tx.aborted || !matches!(tx.exit_code, None | Some(0) | Some(1)) => {
                    return Err(SendError::Failed {
                        exit_code: tx.exit_code,
                        aborted: tx.aborted,
                    })
                }
                Ok(Some(tx)) => return Ok(tx),
                Ok(None) => last = "not applied before it expired".to_owned(),
                Err(error @ SendError::Stalled(_)) => return Err(error),
                Err(error) => last = error.to_string(),
            }
            tracing::warn!(attempt, wallet = %self.wallet.address, reason = %last, "wallet message not applied; signing afresh");
            tokio::time::sleep(self.poll_interval).await;
        }
        Err(SendError::GaveUp { last })
    }

    /// One signed message: `Some(tx)` once applied, `None` once it can no longer be.
    async fn attempt(&self, messages: &[ArcCell]) -> Result<Option<Transaction>, SendError> {
        let state = self.api.account(&self.wallet.address).await?;
        let deployed = state.status == "active";
        let seqno = if deployed {
            let result = self
                .api
                .run_get_method(&self.wallet.address, "seqno", &[])
                .await?;
            u32::try_from(result.int(0)?)
                .map_err(|_| SendError::Build("the wallet's seqno is out of range".into()))?
        } else {
            0
        };
        let valid_until = state.sync_time.saturating_add(VALIDITY.as_secs() as u32);
        let body = self
            .wallet
            .create_external_body(valid_until, seqno, messages)?;
        let signed = self.wallet.sign_external_body(&body)?;
        let body_hash =
            base64::engine::general_purpose::STANDARD.encode(signed.cell_hash().as_slice());
        let external = self
            .wallet
            .wrap_signed_body(signed, !deployed)
            .map_err(|e| SendError::Build(e.to_string()))?;
        let boc = boc_of(external)?;
        // A refusal may mean the message already went through (an earlier send whose answer
        // was lost): the transactions below tell.
        if let Err(error) = self.api.send_boc(&boc).await {
            if !error.is_not_accepted() {
                tracing::debug!(%error, "sendBoc failed; watching for the message anyway");
            }
        }
        let watching = std::time::Instant::now();
        loop {
            let recent = self
                .api
                .transactions(&self.wallet.address, 16, None)
                .await?;
            if let Some(tx) = recent
                .into_iter()
                .find(|tx| tx.in_body_hash.as_deref() == Some(body_hash.as_str()))
            {
                return Ok(Some(tx));
            }
            if self.api.account(&self.wallet.address).await?.sync_time > valid_until {
                return Ok(None);
            }
            if watching.elapsed() > self.max_watch {
                return Err(SendError::Stalled(self.max_watch));
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::routing::{get, post};
    use axum::Router;

    use super::*;

    /// Chain time of the stub: each read of the account moves it 40 s on.
    static CHAIN_TIME: AtomicU32 = AtomicU32::new(1_000);
    static SENT: AtomicU32 = AtomicU32::new(0);

    #[tokio::test]
    async fn a_message_never_applied_is_signed_afresh_only_after_it_expired_then_given_up() {
        let app = Router::new()
            .route(
                "/getAddressInformation",
                get(|| async {
                    let now = CHAIN_TIME.fetch_add(40, Ordering::SeqCst);
                    format!(r#"{{"ok":true,"result":{{"balance":"5","state":"active","sync_utime":{now}}}}}"#)
                }),
            )
            .route(
                "/runGetMethod",
                post(|| async { r#"{"ok":true,"result":{"exit_code":0,"stack":[["num","0x3"]]}}"# }),
            )
            .route(
                "/sendBoc",
                post(|| async {
                    SENT.fetch_add(1, Ordering::SeqCst);
                    r#"{"ok":false,"error":"External message was not accepted","code":500}"#
                }),
            )
            .route("/getTransactions", get(|| async { r#"{"ok":true,"result":[]}"# }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let sender = WalletSender::new(
            TonApi::new(&url, None).unwrap(),
            &SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap()
        .with_poll_interval(Duration::from_millis(1));
        let error = sender.send(&[]).await.unwrap_err();
        assert!(matches!(error, SendError::GaveUp { .. }), "{error}");
        // Each attempt waited for chain time to pass its validity before signing the next.
        assert_eq!(SENT.load(Ordering::SeqCst), MAX_ATTEMPTS);
    }

    #[tokio::test]
    async fn an_api_whose_chain_time_stands_still_stops_the_sender_without_re_signing() {
        static SENT_STALLED: AtomicU32 = AtomicU32::new(0);
        let app = Router::new()
            .route(
                "/getAddressInformation",
                get(|| async {
                    r#"{"ok":true,"result":{"balance":"5","state":"active","sync_utime":1000}}"#
                }),
            )
            .route(
                "/runGetMethod",
                post(|| async {
                    r#"{"ok":true,"result":{"exit_code":0,"stack":[["num","0x3"]]}}"#
                }),
            )
            .route(
                "/sendBoc",
                post(|| async {
                    SENT_STALLED.fetch_add(1, Ordering::SeqCst);
                    r#"{"ok":true,"result":{}}"#
                }),
            )
            .route(
                "/getTransactions",
                get(|| async { r#"{"ok":true,"result":[]}"# }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let key = SigningKey::from_bytes(&[2; 32]);
        let sender = WalletSender::new(TonApi::new(&url, None).unwrap(), &key)
            .unwrap()
            .with_poll_interval(Duration::from_millis(1))
            .with_max_watch(Duration::from_millis(200));
        let error = sender.send(&[]).await.unwrap_err();
        assert!(matches!(error, SendError::Stalled(_)), "{error}");
        // The message may still apply: it was sent once and never signed afresh.
        assert_eq!(SENT_STALLED.load(Ordering::SeqCst), 1);
    }
}
