//! Paying the proxy: the client signs for what it can check, and only for that.
//!
//! For every answer the client checks the receipt the proxy relays: it names the request the
//! client sent (its `x-cocoon-request-id` and the SHA-256 of its body), both certificates verify
//! (cached per certificate), the proxy's names the wallet of the proxy being paid, the record
//! agrees with the worker's certificate, the coefficient is within the request's limit, the charge
//! is the price of the usage, and the cost the proxy reports is at most that charge (less when the
//! proxy capped it at the request's reservation) and, at prices the registry does not state, at
//! most what the registry's prices make of the same usage. The
//! receipt's two signatures wait with that cost in the channel's queue: when the next payment is
//! signed (at most every 25 ms per proxy, `channel.rs`), the queued receipts' signatures are
//! checked in one batch, and the voucher — the previous total plus the cost of each answer whose
//! signatures verified — is signed with the wallet key and sent with the next request on that
//! link (`x-cocoon-payment`), or within a settlement interval with `POST /cocoon/v1/payment` when
//! no request goes. No voucher covers an answer whose receipt is not verified yet.
//!
//! An answer whose charge it cannot check is not paid: the client stops paying that proxy and
//! sends it nothing more (it fails over to the next proxy), logs why, and shows it under
//! `/jsonstats` `details.payments.stopped`. The other answers of its batch whose receipts verify
//! are paid.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use cocoon_money::{
    AccountId, ClientStatement, Hash32, Prices, Settlement, SettlementError, SignedVoucher,
    VoucherKind,
};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::prices::KnownPrices;
use cocoon_node::serve::LogThrottle;
use cocoon_node::Body;
use cocoon_proto::headers::{COST, PAYMENT, WALLET_PROOF};
use cocoon_proto::link::{PATH_BILLING, PATH_PAYMENT};
use cocoon_ratls::{verify_certificate, PeerIdentity};
use cocoon_receipt::Receipt;
use cocoon_tee::{AttestationKind, Policy};
use ed25519_dalek::{SigningKey, VerifyingKey};
use http::{header, HeaderMap, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::link::{LiveLink, ProxyLinks};

mod certificate_cache;
mod channel;
mod closing;

use certificate_cache::CertificateCache;
use channel::{now, when_due, Channel, Unverified};

/// Verified certificates kept ([`CertificateCache`]).
const MAX_CERTIFICATES: usize = 256;
/// Longest a control exchange (statement, payment) may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest statement read.
const MAX_STATEMENT_BYTES: usize = 64 << 10;

/// Why a charge could not be paid.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The answer's charge does not check out.
    #[error("{0}")]
    Unverifiable(String),
    /// The statement exchange with the proxy failed.
    #[error("reading the billing statement: {0}")]
    Statement(String),
    /// The ledger could not be read.
    #[error("ledger: {0}")]
    Ledger(String),
    /// The client stopped paying this proxy (why): send it nothing.
    #[error("this client stopped paying the proxy: {0}")]
    Stopped(String),
}

impl PaymentError {
    /// What the app is told: the ledger being away is an outage (503), the rest the proxy's fault.
    pub fn kind(&self) -> cocoon_proto::ErrorKind {
        match self {
            PaymentError::Ledger(_) => cocoon_proto::ErrorKind::Unavailable,
            _ => cocoon_proto::ErrorKind::BadGateway,
        }
    }
}

/// What the client sent a proxy, which an answer's receipt must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// Its `x-cocoon-request-id`.
    pub id: String,
    /// The SHA-256 of its body, byte for byte what the worker hashes into the receipt: a
    /// receipt of this request whose digest differs shows the request changed on the way.
    pub body_sha256: Hash32,
}

impl SentRequest {
    /// The request sent as `id` with `body`.
    pub fn new(id: &HeaderValue, body: &[u8]) -> Self {
        Self {
            id: id.to_str().unwrap_or_default().to_owned(),
            body_sha256: Hash32(Sha256::digest(body).into()),
        }
    }
}

/// The client's paying side.
pub struct Payer {
    wallet: SigningKey,
    account: AccountId,
    trust: Arc<NodeTrust>,
    policy: Policy,
    /// The registry's prices (now, and just before its last change) a receipt may state.
    prices: KnownPrices,
    /// Receipts at unknown prices, logged at most once a second.
    unknown_prices_log: LogThrottle,
    ledger: Arc<dyn Settlement>,
    channels: Mutex<HashMap<AccountId, Channel>>,
    /// Serializes opening channels, so two first requests do not start from two bases.
    opening: tokio::sync::Mutex<()>,
    stopped: Mutex<BTreeMap<AccountId, String>>,
    /// Receipt certificates verified, by their base64 text.
    certificates: Mutex<CertificateCache<KnownCertificate>>,
    withhold: bool,
}

/// A receipt certificate the client verified, with its key ready for signature checks.
struct KnownCertificate {
    peer: PeerIdentity,
    key: VerifyingKey,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The proxy account a link's proxy names in its attestation.
pub fn proxy_account(link: &LiveLink) -> Option<AccountId> {
    cocoon_node::wallet::peer_wallet(&link.peer)?.parse().ok()
}

impl Payer {
    /// The payer for `wallet`, checking certificates with `trust`'s verifier at least as strong
    /// as `min_kind`, at the registry's `prices`. `withhold` (tests only) never pays.
    pub fn new(
        wallet: SigningKey,
        trust: Arc<NodeTrust>,
        min_kind: AttestationKind,
        prices: watch::Receiver<Arc<Prices>>,
        ledger: Arc<dyn Settlement>,
        withhold: bool,
    ) -> Arc<Self> {
        Arc::new(Payer {
            account: AccountId::from(&wallet),
            wallet,
            trust,
            policy: Policy::any_image(min_kind),
            prices: KnownPrices::new(prices),
            unknown_prices_log: LogThrottle::per_second(),
            ledger,
            channels: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            stopped: Mutex::new(BTreeMap::new()),
            certificates: Mutex::new(CertificateCache::new(MAX_CERTIFICATES)),
            withhold,
        })
    }

    /// The wallet proof for a link made with the certificate key `certificate_key`.
    pub fn proof(&self, certificate_key: &[u8; 32]) -> String {
        cocoon_node::wallet::wallet_proof(&self.wallet, certificate_key)
    }

    /// Why the client stopped paying `proxy`, if it did.
    pub fn stopped(&self, proxy: &AccountId) -> Option<String> {
        lock(&self.stopped).get(proxy).cloned()
    }

    /// Whether requests may go to `link`: its proxy names a wallet and is still paid.
    pub fn usable(&self, link: &LiveLink) -> bool {
        proxy_account(link).is_some_and(|proxy| self.stopped(&proxy).is_none())
    }

    /// The newest voucher for `proxy`, signing first for every answer checked so far.
    pub fn latest(&self, proxy: &AccountId) -> Option<SignedVoucher> {
        self.sign_pending(*proxy, now, |channel| channel.latest)
            .flatten()
    }

    /// Runs [`Channel::sign_pending`] on `proxy`'s channel, then `then` on it; stops paying the
    /// proxy if an answer was refused. `None` when there is no channel.
    fn sign_pending<T>(
        &self,
        proxy: AccountId,
        due: impl Fn(Option<Instant>) -> bool,
        then: impl FnOnce(&mut Channel) -> T,
    ) -> Option<T> {
        let (refused, result) = {
            let mut channels = lock(&self.channels);
            let channel = channels.get_mut(&proxy)?;
            let refused = channel.sign_pending(&self.wallet, due);
            (refused, then(channel))
        };
        if let Some(why) = refused {
            self.stop(proxy, why);
        }
        Some(result)
    }

    /// The headers that authenticate and pay on a request to `link`: the wallet proof, and the
    /// newest payment. Opens the channel with the link's proxy first if needed.
    pub async fn request_headers(
        &self,
        link: &LiveLink,
    ) -> Result<Vec<(&'static str, HeaderValue)>, PaymentError> {
        let proxy = proxy_account(link)
            .ok_or_else(|| PaymentError::Unverifiable("the proxy names no wallet".into()))?;
        let mut headers = vec![(WALLET_PROOF, link.wallet_proof.clone())];
        if self.withhold {
            return Ok(headers);
        }
        self.open_channel(link, proxy).await?;
        if let Some(value) = self.payment_for(proxy)? {
            headers.push((PAYMENT, value));
        }
        Ok(headers)
    }

    /// The newest payment to send with a request to `proxy` (its header value), signed first if
    /// one is due;
    /// [`PaymentError::Stopped`] when the proxy is not paid any more. Checking the queued
    /// receipts may find one that fails: then the request goes to another proxy, and the payment
    /// for the rest of the window stays unsent, for the next flush.
    fn payment_for(&self, proxy: AccountId) -> Result<Option<HeaderValue>, PaymentError> {
        self.sign_pending(proxy, when_due, |_| ());
        if let Some(why) = self.stopped(&proxy) {
            return Err(PaymentError::Stopped(why));
        }
        Ok(lock(&self.channels).get_mut(&proxy).and_then(|channel| {
            channel.unsent = false;
            channel.latest_header()
        }))
    }

    /// Starts the channel with `proxy` where the client's payments left off: the newest of what
    /// the ledger applied and what the proxy holds signed by this wallet.
    async fn open_channel(&self, link: &LiveLink, proxy: AccountId) -> Result<(), PaymentError> {
        if lock(&self.channels).contains_key(&proxy) {
            return Ok(());
        }
        let _opening = self.opening.lock().await;
        if lock(&self.channels).contains_key(&proxy) {
            return Ok(());
        }
        let statement = self.statement(link).await?;
        let ledger_error = |e: SettlementError| PaymentError::Ledger(e.to_string());
        let ids = self
            .ledger
            .voucher_ids(VoucherKind::ClientPay, proxy, self.account)
            .map_err(ledger_error)?;
        let contract = self
            .ledger
            .client_contract(proxy, self.account)
            .await
            .map_err(ledger_error)?;
        let mut channel = Channel::from(
            ids,
            contract.as_ref().map_or(0, |c| c.charged),
            contract.as_ref().map_or(0, |c| c.voucher_seqno),
            None,
        );
        let own = statement.voucher.filter(|v| {
            v.voucher.kind == VoucherKind::ClientPay
                && v.voucher.ids() == ids
                && v.verify(&self.account).is_ok()
        });
        if let Some(voucher) = own.filter(|v| v.voucher.seqno > channel.seqno) {
            channel.cumulative = voucher.voucher.cumulative;
            channel.seqno = voucher.voucher.seqno;
            channel.latest = Some(voucher);
        }
        tracing::info!(%proxy, paid = channel.cumulative, seqno = channel.seqno, "payment channel opened");
        lock(&self.channels).insert(proxy, channel);
        Ok(())
    }

    /// The proxy's statement for this client (wallet proof attached).
    pub async fn statement(&self, link: &LiveLink) -> Result<ClientStatement, PaymentError> {
        let bytes = self
            .exchange(link, Method::GET, PATH_BILLING, Bytes::new())
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| PaymentError::Statement(e.to_string()))
    }

    async fn exchange(
        &self,
        link: &LiveLink,
        method: Method,
        path: &'static str,
        body: Bytes,
    ) -> Result<Bytes, PaymentError> {
        let fail = |e: String| PaymentError::Statement(e);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(WALLET_PROOF, link.wallet_proof.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| fail(e.to_string()))?;
        let mut sender = link.sender.clone();
        let exchange = async move {
            sender.ready().await.map_err(|e| fail(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let status = response.status();
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_STATEMENT_BYTES)
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(fail(format!(
                    "{path} answered {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                )));
            }
            Ok(bytes)
        };
        tokio::time::timeout(CONTROL_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {CONTROL_TIMEOUT:?}")))?
    }

    /// Queues one answer from `proxy` to the request `sent` that ended with `trailers` (carrying
    /// `receipt`, read from them once by the caller) for payment, if its charge checks out;
    /// otherwise stops paying that proxy. Its receipt's signatures are checked with the next
    /// payment, before it covers the answer. `max_coefficient` is the request's limit.
    pub fn settle_answer(
        &self,
        proxy: AccountId,
        sent: &SentRequest,
        trailers: Option<&HeaderMap>,
        receipt: Option<&Receipt>,
        max_coefficient: u32,
    ) {
        if self.withhold || self.stopped(&proxy).is_some() {
            return;
        }
        let checked = trailers
            .ok_or_else(|| PaymentError::Unverifiable("the answer has no trailers".into()))
            .and_then(|trailers| self.check(proxy, sent, trailers, receipt, max_coefficient));
        let answer = match checked {
            Ok(answer) => answer,
            Err(error) => return self.stop(proxy, error.to_string()),
        };
        let mut channels = lock(&self.channels);
        let Some(channel) = channels.get_mut(&proxy) else {
            drop(channels);
            return self.stop(proxy, "an answer came before the channel was opened".into());
        };
        // Verified and signed for with the next request or flush (see `SIGN_EVERY`).
        channel.unverified.push(answer);
    }

    fn stop(&self, proxy: AccountId, why: String) {
        tracing::error!(%proxy, reason = %why, "stopped paying this proxy: a charge could not be verified; its links are no longer used");
        lock(&self.stopped).entry(proxy).or_insert(why);
    }

    /// The cost of an answer once everything that proves it checks out, but for its receipt's
    /// signatures, which come with it to be checked in a batch.
    fn check(
        &self,
        proxy: AccountId,
        sent: &SentRequest,
        trailers: &HeaderMap,
        receipt: Option<&Receipt>,
        max_coefficient: u32,
    ) -> Result<Unverified, PaymentError> {
        let bad = |why: String| PaymentError::Unverifiable(why);
        let receipt =
            receipt.ok_or_else(|| bad("the answer carries no readable receipt".into()))?;
        let answer = &receipt.answer;
        // A receipt proves what some answer cost; only this request's is this answer's.
        if answer.request_id != sent.id {
            return Err(bad(format!(
                "the receipt is for request {:?}, not this answer's {:?}",
                answer.request_id, sent.id
            )));
        }
        if answer.request_sha256 != sent.body_sha256 {
            return Err(bad(format!(
                "the worker received a request other than the one this client sent (SHA-256 {}, \
                 sent {})",
                answer.request_sha256, sent.body_sha256
            )));
        }
        let worker = self.certificate(&receipt.worker_certificate, "worker", answer.issued_at)?;
        let proxy_peer = self.certificate(&receipt.proxy_certificate, "proxy", answer.issued_at)?;
        let named = cocoon_node::wallet::peer_wallet(&proxy_peer.peer)
            .and_then(|w| w.parse::<AccountId>().ok());
        if named != Some(proxy) {
            return Err(bad(format!(
                "the receipt is countersigned by another proxy than {proxy}"
            )));
        }
        let receipt_error = |e: cocoon_receipt::ReceiptError| bad(format!("receipt: {e}"));
        receipt.check_record(&worker.peer).map_err(receipt_error)?;
        let signatures = receipt
            .signatures(&worker.key, &proxy_peer.key)
            .map_err(receipt_error)?;
        if answer.coefficient > max_coefficient {
            return Err(bad(format!(
                "the receipt's coefficient {} is above the request's limit {max_coefficient}",
                answer.coefficient
            )));
        }
        let reported = trailers
            .get(COST)
            .and_then(|cost| serde_json::from_slice::<Value>(cost.as_bytes()).ok())
            .and_then(|cost| cost["total_cost"].as_u64());
        // Less than the receipt proves is the proxy's cap at the request's reservation.
        let cost = match reported {
            Some(cost) if cost <= answer.charge => cost,
            _ => {
                return Err(bad(format!(
                    "the proxy reports a cost of {reported:?} but the receipt proves {}",
                    answer.charge
                )))
            }
        };
        // Prices this client does not know: the proxy saw a newer registry version first (on a
        // chain, nodes poll seconds apart), or states prices of its own. Either way the answer
        // is paid no more than the registry's known prices make of its signed usage: nobody
        // gains by stating other prices, and a price change does not stop payment.
        let cost = if self.prices.knows(&answer.prices) {
            cost
        } else {
            let bound = self.prices.most_for(&answer.usage, answer.coefficient);
            if let Some(held_back) = self.unknown_prices_log.admit() {
                tracing::warn!(
                    %proxy, reported = cost, paid = cost.min(bound), held_back,
                    "a receipt states prices this client's registry does not know; paid at most \
                     what the known prices make of its usage"
                );
            }
            cost.min(bound)
        };
        Ok(Unverified { signatures, cost })
    }

    /// A receipt's certificate, verified (once per certificate: later ones are found by their
    /// text, not decoded) and of `role`, valid at `at`.
    fn certificate(
        &self,
        base64: &str,
        role: &str,
        at: u64,
    ) -> Result<Arc<KnownCertificate>, PaymentError> {
        let bad = |why: String| PaymentError::Unverifiable(format!("{role} certificate: {why}"));
        let at = UNIX_EPOCH + Duration::from_secs(at.min(u64::from(u32::MAX)));
        let cached = lock(&self.certificates).get(base64);
        let known = match cached {
            Some(known) => known,
            None => {
                let der = Receipt::decode_certificate(base64).map_err(|e| bad(e.to_string()))?;
                let peer = verify_certificate(&der, self.trust.verifier(), &self.policy, at)
                    .map_err(|e| bad(e.to_string()))?;
                let key = VerifyingKey::from_bytes(&peer.public_key)
                    .map_err(|_| bad("its key is not an Ed25519 point".into()))?;
                let known = Arc::new(KnownCertificate { peer, key });
                lock(&self.certificates).insert(base64, known.clone());
                known
            }
        };
        if known.peer.claims.role != role {
            return Err(bad(format!("it attests a `{}`", known.peer.claims.role)));
        }
        if at > known.peer.not_after {
            return Err(bad("expired before the answer".into()));
        }
        Ok(known)
    }

    /// Sends each link's proxy the newest payment no request carried yet.
    pub async fn flush(&self, links: &ProxyLinks) {
        for link in links.live_links() {
            let Some(proxy) = proxy_account(&link) else {
                continue;
            };
            let unsent = self
                .sign_pending(proxy, now, |channel| {
                    channel.unsent.then(|| {
                        channel.unsent = false;
                        channel.latest
                    })
                })
                .flatten()
                .flatten();
            let Some(voucher) = unsent else { continue };
            let body = Bytes::from(serde_json::to_vec(&voucher).unwrap_or_default());
            if let Err(error) = self.exchange(&link, Method::POST, PATH_PAYMENT, body).await {
                tracing::warn!(%proxy, %error, "sending a payment failed; it goes with the next request");
                if let Some(channel) = lock(&self.channels).get_mut(&proxy) {
                    channel.unsent = channel.latest == Some(voucher) || channel.unsent;
                }
            }
        }
    }

    /// Payment figures for `/jsonstats`.
    pub fn snapshot(&self) -> Value {
        let paid: BTreeMap<String, Value> = lock(&self.channels)
            .iter()
            .map(|(proxy, c)| {
                (
                    proxy.to_string(),
                    json!({
                        "signed": c.cumulative,
                        "seqno": c.seqno,
                        "unsent": c.unsent,
                        "unverified": c.unverified.len(),
                    }),
                )
            })
            .collect();
        let stopped: BTreeMap<String, String> = lock(&self.stopped)
            .iter()
            .map(|(proxy, why)| (proxy.to_string(), why.clone()))
            .collect();
        json!({ "channels": paid, "stopped": stopped })
    }
}

#[cfg(test)]
mod tests;
