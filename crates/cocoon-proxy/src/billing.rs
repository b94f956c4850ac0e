//! Money on the request path: reserve a request's worst-case cost against the client's balance
//! before any worker sees it, charge the actual usage durably when the answer ends, and settle
//! with the ledger in the background (commit the database position, apply client charges, send
//! workers their claimable earnings, withdraw the commission).
//!
//! A client's *available* balance is its contract balance on the ledger, minus what this proxy
//! charged but the ledger has not collected yet, minus the reservations of its requests in
//! flight. Everything this proxy charged is in its own database ([`crate::store`]) before the
//! answer's last frame is released, and every voucher states a cumulative total from that
//! database, so a crash can neither lose a charge nor apply one twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cocoon_ledger::pricing::COEFFICIENT_ONE;
use cocoon_ledger::{
    price, worst_case_cost, AccountId, Amount, ClientContract, ClientStatement, ContractStatus,
    Cost, LedgerClient, Prices, PricingError, Settlement, SettlementError, VoucherSigner,
    WorkerStatement,
};
use cocoon_node::registry::RegistryWatch;
use cocoon_node::Body;
use cocoon_proto::link::PATH_EARNINGS;
use cocoon_proto::{ErrorKind, TokenUsage};
use ed25519_dalek::SigningKey;
use http::{header, Request};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::routing::Routing;
use crate::store::{BillingStore, ChargeRecord, ChargeWriter, StoreError};

/// File of the proxy's money database inside its data directory.
pub const DATABASE_FILE: &str = "proxy-billing.sqlite3";
/// A cached client contract older than this is fetched again before it is relied on.
const CONTRACT_FRESHNESS: Duration = Duration::from_secs(2);
/// How long a push of earnings to a worker may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Billing settings (part of [`crate::ProxyConfig`]).
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Base URL of the ledger service.
    pub ledger: String,
    /// Directory of the wallet key and the money database.
    pub data_dir: PathBuf,
    /// Stake to open the proxy contract with (0: the registry's minimum).
    pub stake: Amount,
    /// Development: mint this much from the ledger's faucet when the wallet cannot pay the stake.
    pub faucet: Amount,
    /// Pause between settlement rounds.
    pub settle_interval: Duration,
    /// Withdraw the commission once this much is withdrawable (0: never).
    pub withdraw_threshold: Amount,
    /// Completion tokens reserved for a request that does not set `max_tokens`.
    pub reserve_max_tokens: u64,
}

/// Why billing refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The client's available balance cannot cover the request's worst case.
    #[error("insufficient quota: {available} available, {needed} needed for this request's worst case (max_tokens, prompt, max_coefficient); top up the client contract")]
    Insufficient {
        /// Available balance.
        available: Amount,
        /// The request's worst-case cost.
        needed: Amount,
    },
    /// The client has no open contract with this proxy.
    #[error("no open client contract of {client} with this proxy ({proxy}); deposit first")]
    NoContract {
        /// This proxy's wallet.
        proxy: AccountId,
        /// The client's wallet.
        client: AccountId,
    },
    /// The peer's attestation names no (valid) wallet to bill or pay.
    #[error("the peer's attestation names no valid wallet")]
    NoWallet,
    /// The request's worst case cannot even be priced.
    #[error("pricing: {0}")]
    Pricing(#[from] PricingError),
    /// The ledger failed or refused.
    #[error("ledger: {0}")]
    Ledger(#[from] SettlementError),
    /// The proxy's database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet key could not be opened.
    #[error(transparent)]
    Wallet(#[from] cocoon_node::wallet::WalletError),
    /// The proxy's wallet cannot pay the stake its contract needs.
    #[error("the proxy wallet {account} holds {balance}, but its contract needs a stake of {stake}: fund it (`cocoon wallet`) or set --faucet on a development ledger")]
    CannotStake {
        /// The proxy's wallet.
        account: AccountId,
        /// Its balance.
        balance: Amount,
        /// The stake needed.
        stake: Amount,
    },
    /// The ledger's proxy contract signs vouchers with another key than this proxy's.
    #[error("the ledger's contract of {0} expects vouchers from another key")]
    ForeignVoucherKey(AccountId),
}

impl BillingError {
    /// The error kind a client sees.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BillingError::Insufficient { .. }
            | BillingError::NoContract { .. }
            | BillingError::NoWallet
            | BillingError::Pricing(_) => ErrorKind::InsufficientQuota,
            BillingError::Ledger(SettlementError::Unavailable(_)) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// A client contract as last read from the ledger.
#[derive(Clone)]
struct KnownContract {
    contract: Option<ClientContract>,
    fetched: Instant,
}

/// What the last settlement round learned, for `/jsonstats`.
#[derive(Debug, Clone, Default, Serialize)]
struct LedgerView {
    balance: Amount,
    stake: Amount,
    pool: Amount,
    paid_to_workers: Amount,
    withdrawn: Amount,
    committed_seqno: u64,
    last_error: Option<String>,
}

/// The proxy's billing: its wallet, its database and its view of the ledger.
pub struct Billing {
    account: AccountId,
    signer: VoucherSigner,
    ledger: LedgerClient,
    store: Arc<Mutex<BillingStore>>,
    writer: ChargeWriter,
    /// The registry's prices, replaced live when a new version changes them.
    prices: watch::Receiver<Arc<Prices>>,
    reserved: Mutex<HashMap<AccountId, Amount>>,
    contracts: Mutex<HashMap<AccountId, KnownContract>>,
    /// Earnings last sent on each worker link (by link id): a relinked worker hears them again.
    pushed: Mutex<HashMap<u64, Amount>>,
    view: Mutex<LedgerView>,
    config: BillingConfig,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The wallet an attested peer named, as an account.
pub fn wallet_of(peer: &cocoon_ratls::PeerIdentity) -> Option<AccountId> {
    cocoon_node::wallet::peer_wallet(peer)?.parse().ok()
}

/// Completion tokens a request may produce, from its `max_tokens` / `max_completion_tokens`.
pub fn requested_max_tokens(body: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("max_completion_tokens")
        .or_else(|| value.get("max_tokens"))
        .and_then(Value::as_u64)
}

/// Upper bound of a request's prompt tokens from its body size. A token is at least one byte of
/// text in practice, and the JSON around the text (keys, quotes, escapes, the message list) more
/// than doubles it, so half the body's bytes bounds the prompt without running a tokenizer.
pub fn prompt_tokens_bound(body_bytes: usize) -> u64 {
    (body_bytes as u64).div_ceil(2)
}

/// What one answer cost the client, split as in the app's `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AnswerCost {
    /// The prompt's part (nano-units).
    pub prompt_total_cost: Amount,
    /// The completion's part.
    pub completion_total_cost: Amount,
    /// Both.
    pub total_cost: Amount,
}

impl Billing {
    /// Opens the proxy's billing: wallet key, database, ledger contract. Refuses to start when the
    /// database is older than (or diverged from) the last position committed to the ledger.
    pub async fn open(
        config: BillingConfig,
        key: SigningKey,
        registry: &RegistryWatch,
    ) -> Result<Arc<Self>, BillingError> {
        let account = AccountId::from(&key);
        let ledger = LedgerClient::new(&config.ledger, key.clone())
            .map_err(|e| BillingError::Ledger(e.into()))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| {
            cocoon_node::wallet::WalletError::DataDir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        let store = BillingStore::open(&config.data_dir.join(DATABASE_FILE))?;
        let (seqno, hash) = store.position()?;
        let store = Arc::new(Mutex::new(store));
        let min_proxy_stake = registry.current().min_proxy_stake;
        ledger.check_proxy_state(account, seqno, hash).await?;
        let contract = ledger.proxy_contract(account).await?;
        let open = contract
            .as_ref()
            .is_some_and(|c| c.status == ContractStatus::Open);
        if !open {
            let stake = config.stake.max(min_proxy_stake);
            let mut balance = ledger.account(account).await?.balance;
            if balance < stake && config.faucet > 0 {
                ledger.faucet(config.faucet.max(stake - balance)).await?;
                balance = ledger.account(account).await?.balance;
            }
            if balance < stake {
                return Err(BillingError::CannotStake {
                    account,
                    balance,
                    stake,
                });
            }
            ledger.open_proxy(stake, account).await?;
            tracing::info!(%account, stake, "proxy contract opened");
        } else if contract.as_ref().is_some_and(|c| c.voucher_key != account) {
            return Err(BillingError::ForeignVoucherKey(account));
        }
        let committed_seqno = contract
            .and_then(|c| c.commit)
            .map_or(0, |commit| commit.seqno);
        Ok(Arc::new(Billing {
            account,
            signer: VoucherSigner::new(key, account),
            ledger,
            writer: ChargeWriter::spawn(store.clone()).map_err(|error| {
                StoreError::Batch(format!("starting the writer thread: {error}"))
            })?,
            store,
            prices: registry.derive(|document| document.prices.clone()),
            reserved: Mutex::new(HashMap::new()),
            contracts: Mutex::new(HashMap::new()),
            pushed: Mutex::new(HashMap::new()),
            view: Mutex::new(LedgerView {
                committed_seqno,
                ..LedgerView::default()
            }),
            config,
        }))
    }

    /// The prices in force now.
    pub fn prices(&self) -> Arc<Prices> {
        self.prices.borrow().clone()
    }

    /// This proxy's wallet (its proxy contract on the ledger).
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Completion tokens reserved when a request sets no `max_tokens`.
    pub fn default_max_tokens(&self) -> u64 {
        self.config.reserve_max_tokens
    }

    async fn fetch_contract(&self, client: AccountId) -> Result<KnownContract, BillingError> {
        let contract = self.ledger.client_contract(self.account, client).await?;
        let known = KnownContract {
            contract,
            fetched: Instant::now(),
        };
        lock(&self.contracts).insert(client, known.clone());
        Ok(known)
    }

    /// Reserves the worst case of a request (`prompt_tokens` + `max_tokens` at `coefficient`)
    /// against `client`'s available balance. Dropping the reservation releases it.
    pub async fn reserve(
        self: &Arc<Self>,
        client: AccountId,
        prompt_tokens: u64,
        max_tokens: u64,
        coefficient: u32,
    ) -> Result<Reservation, BillingError> {
        let prices = self.prices();
        let needed = worst_case_cost(prompt_tokens, max_tokens, coefficient, &prices)?.client_price;
        let cached = lock(&self.contracts).get(&client).cloned();
        let (mut known, mut fresh) = match cached {
            Some(known) if known.fetched.elapsed() < CONTRACT_FRESHNESS => (known, false),
            _ => (self.fetch_contract(client).await?, true),
        };
        loop {
            match self.try_reserve(client, &known, needed)? {
                Ok(()) => {
                    return Ok(Reservation {
                        billing: self.clone(),
                        client,
                        amount: needed,
                        prices,
                    })
                }
                // A top-up may have happened since the contract was read: read it once more.
                Err(_) if !fresh => {
                    known = self.fetch_contract(client).await?;
                    fresh = true;
                }
                Err(refusal) => return Err(refusal),
            }
        }
    }

    fn try_reserve(
        &self,
        client: AccountId,
        known: &KnownContract,
        needed: Amount,
    ) -> Result<Result<(), BillingError>, BillingError> {
        let Some(contract) = known
            .contract
            .as_ref()
            .filter(|c| c.status == ContractStatus::Open)
        else {
            return Ok(Err(BillingError::NoContract {
                proxy: self.account,
                client,
            }));
        };
        let charged = lock(&self.store).client(&client)?.amount;
        let mut reserved = lock(&self.reserved);
        let held = reserved.get(&client).copied().unwrap_or(0);
        let available = available_balance(contract, charged, held);
        if available < needed {
            return Ok(Err(BillingError::Insufficient { available, needed }));
        }
        *reserved.entry(client).or_insert(0) += needed;
        Ok(Ok(()))
    }

    fn release(&self, client: AccountId, amount: Amount) {
        let mut reserved = lock(&self.reserved);
        if let Some(held) = reserved.get_mut(&client) {
            *held = held.saturating_sub(amount);
            if *held == 0 {
                reserved.remove(&client);
            }
        }
    }

    /// Prices `usage` at `coefficient` and records the charge durably (client pays, worker
    /// earns), then releases the reservation. Returns the cost split for the app's `usage`.
    pub async fn charge(
        &self,
        reservation: Reservation,
        worker: AccountId,
        usage: &TokenUsage,
        coefficient: u32,
    ) -> Result<AnswerCost, BillingError> {
        let (cost, answer) = answer_cost(usage, coefficient, &reservation.prices)?;
        self.writer
            .record(ChargeRecord {
                client: reservation.client,
                worker,
                adjusted_tokens: cost.adjusted_tokens,
                client_price: cost.client_price,
                worker_pay: cost.worker_pay,
            })
            .await?;
        drop(reservation);
        Ok(answer)
    }

    /// `client`'s bill: its total charge with a voucher for it.
    pub fn client_statement(&self, client: AccountId) -> Result<ClientStatement, BillingError> {
        let (charged, seqno) = {
            let store = lock(&self.store);
            (store.client(&client)?.amount, store.position()?.0)
        };
        let reserved = lock(&self.reserved).get(&client).copied().unwrap_or(0);
        // The database's seqno grows with every charge, so vouchers signed later never carry a
        // smaller seqno than earlier ones, and the same seqno always states the same total.
        let voucher =
            (charged > 0).then(|| self.signer.client_charge(client, charged, seqno, false));
        Ok(ClientStatement {
            proxy: self.account,
            client,
            charged,
            reserved,
            voucher,
        })
    }

    fn worker_statements(&self) -> Result<Vec<WorkerStatement>, BillingError> {
        let store = lock(&self.store);
        let seqno = store.position()?.0;
        Ok(store
            .workers()?
            .into_iter()
            .map(|(worker, totals)| WorkerStatement {
                proxy: self.account,
                worker,
                earned: totals.amount,
                voucher: self.signer.worker_pay(worker, totals.amount, seqno),
            })
            .collect())
    }

    /// One settlement round; errors are logged and retried next round.
    pub async fn settle(&self, routing: &Routing) {
        if let Err(error) = self.try_settle(routing).await {
            tracing::warn!(%error, "settlement round failed");
            lock(&self.view).last_error = Some(error.to_string());
        }
    }

    async fn try_settle(&self, routing: &Routing) -> Result<(), BillingError> {
        // 1. Commit the database position, so a rollback is detectable.
        let (seqno, hash) = lock(&self.store).position()?;
        if seqno > lock(&self.view).committed_seqno {
            self.ledger.commit_proxy_state(seqno, hash).await?;
            lock(&self.view).committed_seqno = seqno;
        }
        // 2. Apply what clients owe (clients may also apply the same vouchers: harmless).
        let clients = lock(&self.store).clients()?;
        for (client, totals) in clients {
            let known = self.fetch_contract(client).await?;
            let on_ledger = known.contract.as_ref().map_or(0, |c| c.charged);
            if totals.amount > on_ledger {
                let statement = self.client_statement(client)?;
                if let Some(voucher) = statement.voucher {
                    match self.ledger.submit_charge(voucher).await {
                        Ok(_) => {
                            self.fetch_contract(client).await?;
                        }
                        Err(e) if e.is_stale_voucher() => {}
                        Err(e) => {
                            tracing::warn!(%client, error = %e, "applying a client charge failed")
                        }
                    }
                }
            }
        }
        // 3. Tell linked workers what they can claim.
        let statements = self.worker_statements()?;
        let links = routing.links();
        lock(&self.pushed).retain(|id, _| links.iter().any(|link| link.id == *id));
        for link in links {
            let Some(statement) = statements
                .iter()
                .find(|s| wallet_of(&link.peer) == Some(s.worker))
            else {
                continue;
            };
            if lock(&self.pushed).get(&link.id) == Some(&statement.earned) {
                continue;
            }
            match push_statement(&link.sender, statement).await {
                Ok(()) => {
                    lock(&self.pushed).insert(link.id, statement.earned);
                }
                Err(error) => {
                    tracing::warn!(worker = %statement.worker, %error, "sending earnings failed")
                }
            }
        }
        // 4. Withdraw the commission: what the pool holds beyond the workers' unclaimed earnings.
        let contract =
            self.ledger
                .proxy_contract(self.account)
                .await?
                .ok_or(BillingError::Ledger(SettlementError::Backend(
                    "the proxy contract disappeared".into(),
                )))?;
        let earned: Amount = lock(&self.store)
            .workers()?
            .iter()
            .map(|(_, t)| t.amount)
            .fold(0, Amount::saturating_add);
        let withdrawable = withdrawable_commission(contract.pool, earned, contract.paid_to_workers);
        let threshold = self.config.withdraw_threshold;
        let (mut pool, mut withdrawn) = (contract.pool, contract.withdrawn);
        if threshold > 0 && withdrawable >= threshold {
            self.ledger.withdraw_commission(withdrawable).await?;
            pool -= withdrawable;
            withdrawn = withdrawn.saturating_add(withdrawable);
            tracing::info!(amount = withdrawable, "commission withdrawn");
        }
        let balance = self.ledger.account(self.account).await?.balance;
        let mut view = lock(&self.view);
        view.balance = balance;
        view.stake = contract.stake;
        view.pool = pool;
        view.paid_to_workers = contract.paid_to_workers;
        view.withdrawn = withdrawn;
        view.last_error = None;
        Ok(())
    }

    /// Settles every `settle_interval` until `shutdown`, and once more at shutdown.
    pub fn spawn(
        self: &Arc<Self>,
        routing: Arc<Routing>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let billing = self.clone();
        tokio::spawn(async move {
            loop {
                billing.settle(&routing).await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(billing.config.settle_interval) => {}
                }
            }
            billing.settle(&routing).await;
        })
    }

    /// Billing figures for `/jsonstats`.
    pub fn snapshot(&self) -> Value {
        let (charged, earned, seqno) = {
            let store = lock(&self.store);
            let sum = |rows: Result<Vec<(AccountId, crate::store::Totals)>, StoreError>| {
                rows.map(|rows| {
                    rows.iter()
                        .map(|(_, t)| t.amount)
                        .fold(0, Amount::saturating_add)
                })
                .unwrap_or(0)
            };
            (
                sum(store.clients()),
                sum(store.workers()),
                store.position().map_or(0, |p| p.0),
            )
        };
        let view = lock(&self.view).clone();
        let reserved: Amount = lock(&self.reserved)
            .values()
            .copied()
            .fold(0, Amount::saturating_add);
        json!({
            "account": self.account.to_string(),
            "balance": view.balance,
            "stake": view.stake,
            "pool": view.pool,
            "charged": charged,
            "earned": earned,
            "commission": charged.saturating_sub(earned),
            "claimable": earned.saturating_sub(view.paid_to_workers),
            "withdrawn": view.withdrawn,
            "reserved": reserved,
            "seqno": seqno,
            "committed_seqno": view.committed_seqno,
            "last_error": view.last_error,
        })
    }
}

/// The price of an answer, and the client's part of it split into prompt and completion. The
/// prompt part is the prompt priced alone (rounded down as every price), the completion part the
/// rest, so the two always add up to the total charged.
pub fn answer_cost(
    usage: &TokenUsage,
    coefficient: u32,
    prices: &Prices,
) -> Result<(Cost, AnswerCost), PricingError> {
    let cost = price(usage, coefficient, prices)?;
    let prompt_only = TokenUsage {
        completion_tokens: 0,
        reasoning_tokens: 0,
        ..*usage
    };
    let prompt = price(&prompt_only, coefficient, prices)?
        .client_price
        .min(cost.client_price);
    Ok((
        cost,
        AnswerCost {
            prompt_total_cost: prompt,
            completion_total_cost: cost.client_price - prompt,
            total_cost: cost.client_price,
        },
    ))
}

/// Balance a client can still spend: its contract balance, less what was charged but not yet
/// collected on the ledger, less what its requests in flight hold.
fn available_balance(contract: &ClientContract, charged_here: Amount, reserved: Amount) -> Amount {
    let uncollected = charged_here.saturating_sub(contract.collected);
    contract
        .balance
        .saturating_sub(uncollected)
        .saturating_sub(reserved)
}

/// Commission that can leave the pool: the pool less what workers earned but have not claimed.
fn withdrawable_commission(pool: Amount, earned: Amount, paid_to_workers: Amount) -> Amount {
    pool.saturating_sub(earned.saturating_sub(paid_to_workers))
}

/// The coefficient a reservation assumes: the request's limit, capped by the dearest worker that
/// serves the model now (the router never picks above either); 1.0× if none is linked yet.
pub fn reservation_coefficient(max_coefficient: u32, dearest_worker: Option<u32>) -> u32 {
    max_coefficient.min(dearest_worker.unwrap_or(COEFFICIENT_ONE))
}

async fn push_statement(
    sender: &cocoon_node::link::LinkSender,
    statement: &WorkerStatement,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(statement)?;
    let request = Request::post(PATH_EARNINGS)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(Bytes::from(body)))?;
    let mut sender = sender.clone();
    let exchange = async move {
        sender.ready().await?;
        sender.send_request(request).await
    };
    let response = tokio::time::timeout(PUSH_TIMEOUT, exchange).await??;
    anyhow::ensure!(
        response.status().is_success(),
        "worker answered {}",
        response.status()
    );
    Ok(())
}

/// A held worst-case amount of a client's balance; released when dropped (a failed or cancelled
/// answer costs nothing), consumed by [`Billing::charge`].
pub struct Reservation {
    billing: Arc<Billing>,
    client: AccountId,
    amount: Amount,
    /// The prices of this request, fixed when it was reserved: the worker is told them, its
    /// receipt states them, and the charge uses them even if the registry changes meanwhile.
    prices: Arc<Prices>,
}

impl Reservation {
    /// The paying client.
    pub fn client(&self) -> AccountId {
        self.client
    }

    /// The amount held.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// The prices the request is billed at.
    pub fn prices(&self) -> &Arc<Prices> {
        &self.prices
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.billing.release(self.client, self.amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(balance: Amount, charged: Amount, collected: Amount) -> ClientContract {
        ClientContract {
            proxy: AccountId([1; 32]),
            client: AccountId([2; 32]),
            balance,
            stake: 10,
            charged,
            collected,
            voucher_seqno: 0,
            status: ContractStatus::Open,
        }
    }

    #[test]
    fn available_balance_subtracts_uncollected_charges_and_reservations() {
        // 100 on the ledger, 30 charged here of which 20 already collected (balance is after
        // collection), 15 held by requests in flight.
        assert_eq!(available_balance(&contract(100, 20, 20), 30, 15), 75);
        // A shortfall on the ledger (charged 40, collected 25) still counts as owed.
        assert_eq!(available_balance(&contract(0, 40, 25), 40, 0), 0);
        assert_eq!(available_balance(&contract(10, 0, 0), 50, 5), 0);
    }

    #[test]
    fn commission_never_touches_unclaimed_worker_earnings() {
        assert_eq!(withdrawable_commission(1_000, 800, 300), 500);
        assert_eq!(withdrawable_commission(100, 800, 0), 0);
    }

    #[test]
    fn reservation_inputs_come_from_the_body_and_the_routing() {
        assert_eq!(requested_max_tokens(br#"{"max_tokens":64}"#), Some(64));
        assert_eq!(
            requested_max_tokens(br#"{"max_tokens":64,"max_completion_tokens":9}"#),
            Some(9)
        );
        assert_eq!(requested_max_tokens(br#"{"model":"m"}"#), None);
        assert_eq!(requested_max_tokens(b"not json"), None);
        assert_eq!(prompt_tokens_bound(101), 51);
        assert_eq!(reservation_coefficient(u32::MAX, Some(1_500)), 1_500);
        assert_eq!(reservation_coefficient(800, Some(1_500)), 800);
        assert_eq!(reservation_coefficient(u32::MAX, None), COEFFICIENT_ONE);
    }

    #[test]
    fn answer_cost_splits_the_charged_price_exactly() {
        let prices = Prices::default();
        let usage = TokenUsage {
            prompt_tokens: 7,
            cached_tokens: 3,
            completion_tokens: 5,
            reasoning_tokens: 0,
        };
        let (cost, answer) = answer_cost(&usage, 1_500, &prices).unwrap();
        assert_eq!(answer.total_cost, cost.client_price);
        assert_eq!(
            answer.prompt_total_cost + answer.completion_total_cost,
            answer.total_cost
        );
        // 4 prompt tokens at 1.0 plus 3 cached at 0.1, all × 1.5 = 6.45 → 6 adjusted tokens.
        assert_eq!(answer.prompt_total_cost, 6 * prices.price_per_token);
        let json = serde_json::to_value(answer).unwrap();
        assert_eq!(json["total_cost"], cost.client_price);
        assert!(json.get("completion_total_cost").is_some());
    }

    /// A ledger (faucet on) in this process, and the billing of a proxy on it.
    async fn ledger_and_billing(
        dir: &std::path::Path,
        proxy_key: SigningKey,
    ) -> (cocoon_ledger::LedgerHandle, Arc<Billing>) {
        let config = cocoon_ledger::LedgerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: dir.join("ledger.sqlite3"),
            faucet: true,
            owner: Some(AccountId([0x11; 32])),
            ..cocoon_ledger::LedgerConfig::default()
        };
        let ledger = cocoon_ledger::spawn(&config, Arc::new(cocoon_ledger::SystemClock))
            .await
            .unwrap();
        let registry = registry_of(&ledger).await;
        let billing = Billing::open(
            billing_config(&ledger.url(), &dir.join("proxy")),
            proxy_key,
            &registry,
        )
        .await
        .unwrap();
        (ledger, billing)
    }

    async fn registry_of(ledger: &cocoon_ledger::LedgerHandle) -> RegistryWatch {
        RegistryWatch::start(&ledger.url(), CancellationToken::new())
            .await
            .unwrap()
    }

    fn billing_config(ledger: &str, data_dir: &std::path::Path) -> BillingConfig {
        BillingConfig {
            ledger: ledger.to_owned(),
            data_dir: data_dir.to_owned(),
            stake: 0,
            faucet: 100_000_000_000,
            settle_interval: Duration::from_millis(100),
            withdraw_threshold: 0,
            reserve_max_tokens: 16,
        }
    }

    #[tokio::test]
    async fn reserves_refuses_charges_and_releases_against_the_ledger_balance() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, billing) =
            ledger_and_billing(dir.path(), SigningKey::from_bytes(&[7; 32])).await;
        let client_key = SigningKey::from_bytes(&[8; 32]);
        let client = AccountId::from(&client_key);
        // No contract yet: refused.
        let refused = billing.reserve(client, 10, 10, 1_000).await.err().unwrap();
        assert!(
            matches!(refused, BillingError::NoContract { .. }),
            "{refused}"
        );
        let wallet = LedgerClient::new(&ledger.url(), client_key).unwrap();
        wallet.faucet(2_000_000_000).await.unwrap();
        // 1.0 units = 1_000_000 tokens at the default 1000 nano-units per token.
        wallet
            .open_client(billing.account(), 1_000_000_000, 1_000_000_000)
            .await
            .unwrap();

        let too_much = billing
            .reserve(client, 0, 1_000_001, 1_000)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                too_much,
                BillingError::Insufficient {
                    available: 1_000_000_000,
                    ..
                }
            ),
            "{too_much}"
        );
        let held = billing.reserve(client, 0, 600_000, 1_000).await.unwrap();
        assert_eq!(held.amount(), 600_000_000);
        // The hold counts against the next request, until it is released.
        assert!(billing.reserve(client, 0, 600_000, 1_000).await.is_err());
        drop(held);
        let held = billing.reserve(client, 0, 600_000, 1_000).await.unwrap();
        let usage = TokenUsage {
            prompt_tokens: 100,
            completion_tokens: 400_000,
            ..TokenUsage::default()
        };
        let worker = AccountId([9; 32]);
        let cost = billing.charge(held, worker, &usage, 1_000).await.unwrap();
        assert_eq!(cost.total_cost, 400_100_000);
        assert_eq!(cost.prompt_total_cost, 100_000);
        // Charged but not collected yet: still owed out of the balance.
        assert!(billing.reserve(client, 0, 600_000, 1_000).await.is_err());
        let statement = billing.client_statement(client).unwrap();
        assert_eq!(statement.charged, 400_100_000);
        assert_eq!(statement.reserved, 0);

        // A settlement round applies the charge and commits the database position.
        billing.settle(&Routing::default()).await;
        let contract = wallet
            .client_contract(billing.account(), client)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(contract.charged, 400_100_000);
        assert_eq!(contract.balance, 1_000_000_000 - 400_100_000);
        let snapshot = billing.snapshot();
        assert_eq!(snapshot["committed_seqno"], 1, "{snapshot}");
        assert_eq!(snapshot["earned"], 400_100 * 800, "{snapshot}");
        ledger.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn an_empty_or_older_database_is_refused_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let (ledger, billing) = ledger_and_billing(dir.path(), key.clone()).await;
        let client_key = SigningKey::from_bytes(&[8; 32]);
        let wallet = LedgerClient::new(&ledger.url(), client_key.clone()).unwrap();
        wallet.faucet(2_000_000_000).await.unwrap();
        wallet
            .open_client(billing.account(), 2_000_000_000, 1_000_000_000)
            .await
            .unwrap();
        let held = billing
            .reserve(AccountId::from(&client_key), 0, 10, 1_000)
            .await
            .unwrap();
        let usage = TokenUsage {
            prompt_tokens: 1,
            completion_tokens: 1,
            ..TokenUsage::default()
        };
        billing
            .charge(held, AccountId([9; 32]), &usage, 1_000)
            .await
            .unwrap();
        billing.settle(&Routing::default()).await;
        drop(billing);

        // The same wallet on a fresh database (seqno 0) is behind the ledger's commit (1).
        let error = Billing::open(
            billing_config(&ledger.url(), &dir.path().join("elsewhere")),
            key.clone(),
            &registry_of(&ledger).await,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(error, BillingError::Ledger(SettlementError::RolledBack(_))),
            "{error}"
        );
        // Its own database is accepted again.
        Billing::open(
            billing_config(&ledger.url(), &dir.path().join("proxy")),
            key,
            &registry_of(&ledger).await,
        )
        .await
        .unwrap();
        ledger.shutdown().await.unwrap();
    }

    #[test]
    fn refusals_are_payment_errors_and_outages_are_not() {
        let refused = BillingError::Insufficient {
            available: 1,
            needed: 2,
        };
        assert_eq!(refused.kind(), ErrorKind::InsufficientQuota);
        assert_eq!(refused.kind().http_status(), 402);
        assert_eq!(BillingError::NoWallet.kind(), ErrorKind::InsufficientQuota);
        let outage = BillingError::Ledger(SettlementError::Unavailable("down".into()));
        assert_eq!(outage.kind(), ErrorKind::Unavailable);
    }
}
