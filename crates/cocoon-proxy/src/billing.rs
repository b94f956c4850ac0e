//! Money on the request path: reserve a request's worst-case cost against the client's balance
//! before any worker sees it, charge the actual usage durably when the answer ends, and settle
//! with the ledger in the background (apply client charges, send workers their claimable
//! earnings, withdraw the commission).
//!
//! The proxy contract belongs to the operator's account; this process signs vouchers with a key
//! it made at start ([`Operator`] says whether it may also act for the operator). Vouchers state
//! totals from the database, so a restarted proxy goes on where the last one stopped with its
//! new key, and the ledger honours both keys' vouchers.
//!
//! A client's *available* balance is its contract balance on the ledger, minus what this proxy
//! charged but the ledger has not collected yet, minus the reservations of its requests in
//! flight. Everything this proxy charged is in its own database ([`crate::store`]) before the
//! answer's last frame is released, and every voucher states a cumulative total from that
//! database, so a crash can neither lose a charge nor apply one twice.
//!
//! Faults: while the ledger cannot be reached, clients whose contracts the proxy has read are
//! served within a bound (`reservation.rs`) and the charges settle once it is back
//! (`settlement_round.rs`); while charges cannot be written, no request is taken
//! ([`crate::charge_writer`]).

mod client_channel;
mod cost;
mod error;
mod operator;
mod release;
mod reservation;
mod settlement_round;

use operator::{open_and_authorize, wait_for_authorization};
pub use operator::{BadWorkerVouchers, Operator};

pub use cost::{
    answer_cost, cap_at_reservation, prompt_tokens_bound, reservation_coefficient, AnswerCost,
};
pub use error::BillingError;
pub use reservation::Reservation;
use reservation::{available_balance, outage_available};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cocoon_money::{
    worst_case_cost, AccountId, Amount, ClientContract, ClientStatement, ContractStatus, Prices,
    Settlement, SettlementBackend, SettlementError, VoucherKind, VoucherSigner, WorkerStatement,
};
use cocoon_node::registry::RegistryWatch;
use cocoon_proto::TokenUsage;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::charge_writer::ChargeWriter;
use crate::store::{BillingStore, ChargeRecord, StoreError};

/// File of the proxy's money database inside its data directory.
pub const DATABASE_FILE: &str = "proxy-billing.sqlite3";
/// File of the proxy's RA-TLS certificate (DER) inside its data directory, written at start: its
/// attested claims name this start's voucher key, which the operator checks before authorizing.
pub const CERTIFICATE_FILE: &str = "proxy-certificate.der";
/// A cached client contract older than this is fetched again before it is relied on.
const CONTRACT_FRESHNESS: Duration = Duration::from_secs(2);
/// Longest a request waits for the ledger to read its client's contract; beyond it the ledger
/// counts as unreachable.
const CONTRACT_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// After the ledger was found unreachable, requests rely on the contracts last read for this
/// long before one tries the ledger again (so an outage costs one failed read per interval).
const LEDGER_RETRY: Duration = Duration::from_secs(1);
/// How long a push of earnings to a worker may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Billing settings (part of [`crate::ProxyConfig`]).
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Base URL of the ledger service.
    pub ledger: String,
    /// Directory of the money database.
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
    /// Tests only: send workers vouchers they must refuse.
    pub bad_worker_vouchers: Option<BadWorkerVouchers>,
    /// The most a client may owe unpaid before it is refused (0: its contract's stake).
    pub max_unpaid: Amount,
    /// Tests only: charge and report twice the price (a dishonest proxy).
    pub test_only_overcharge: bool,
    /// Tests only: state (and vouch workers at) this worker fee instead of the registry's.
    pub test_only_worker_fee: Option<Amount>,
}

/// Where the contract a reservation relies on comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The cache, read less than [`CONTRACT_FRESHNESS`] ago.
    Cached,
    /// The ledger, just now.
    Fetched,
    /// The last reading before the ledger became unreachable.
    LastBeforeOutage,
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
    last_error: Option<String>,
}

/// The proxy's billing: its voucher key, its database and its view of the ledger.
pub struct Billing {
    /// The operator's account: the proxy contract.
    account: AccountId,
    signer: VoucherSigner,
    /// Tests only ([`BadWorkerVouchers`]): signs workers' vouchers instead of `signer`.
    bad_worker_signer: Option<VoucherSigner>,
    /// Signs with the operator's key when this process holds it, else with the voucher key (which
    /// may still submit vouchers: anyone may).
    ledger: Arc<dyn Settlement>,
    /// Whether `ledger` signs as the operator (then the proxy withdraws its own commission).
    acts_for_operator: bool,
    /// The database as read by settlement and statistics (requests read the writer's totals);
    /// the writer has a connection of its own.
    store: Mutex<BillingStore>,
    writer: ChargeWriter,
    /// The registry's prices, replaced live when a new version changes them.
    prices: watch::Receiver<Arc<Prices>>,
    /// The registry's `client_delay_before_close` (seconds): how long a client's stake stays on
    /// its contract after it starts closing, which bounds serving without the ledger.
    client_close_delay: watch::Receiver<Arc<u64>>,
    /// When a contract read last found the ledger unreachable (`None`: the last one succeeded).
    ledger_unreachable: Mutex<Option<Instant>>,
    reserved: Mutex<HashMap<AccountId, Amount>>,
    /// Clients given their release (see [`release`]): served no more; also in the database.
    released: Mutex<std::collections::HashSet<AccountId>>,
    /// Each client's newest payment voucher (signed by its wallet key); also in the database,
    /// written through `writer`, and loaded from it at start.
    payments: Mutex<HashMap<AccountId, cocoon_money::SignedVoucher>>,
    /// (certificate key, wallet) pairs whose wallet proof checked out.
    proven: Mutex<client_channel::Proven>,
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

impl Billing {
    /// Opens the proxy's billing: database, contract on the settlement `backend`, this start's
    /// `voucher_key`. With the operator's key, opens the contract if needed and authorizes
    /// `voucher_key`; without it, waits until the operator has.
    pub async fn open(
        config: BillingConfig,
        operator: Operator,
        voucher_key: SigningKey,
        registry: &RegistryWatch,
        backend: &dyn SettlementBackend,
    ) -> Result<Arc<Self>, BillingError> {
        let account = operator.account();
        let acts_for_operator = matches!(operator, Operator::Key(_));
        let ledger_key = match operator {
            Operator::Key(key) => key,
            Operator::Account(_) => voucher_key.clone(),
        };
        let ledger = backend.connect(Some(ledger_key))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| {
            cocoon_node::wallet::WalletError::DataDir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        let path = config.data_dir.join(DATABASE_FILE);
        let store = BillingStore::open(&path)?;
        let payments = client_channel::verified_payments(&*ledger, account, store.payments()?);
        let released = store.released()?.into_iter().collect();
        let key = AccountId::from(&voucher_key);
        // The contract id this proxy's vouchers name (the operator's account on the local
        // ledger, the proxy contract's own on TON).
        let contract = ledger
            .voucher_ids(VoucherKind::WorkerPay, account, account)?
            .proxy;
        if acts_for_operator {
            open_and_authorize(&*ledger, &config, registry, account, key).await?;
        } else {
            wait_for_authorization(&*ledger, &config, account, key).await;
        }
        let bad_worker_signer = config.bad_worker_vouchers.map(|how| {
            tracing::error!(
                ?how,
                "TESTS ONLY: this proxy sends workers bad vouchers; never run it for real"
            );
            let stray = || SigningKey::generate(&mut rand::rngs::OsRng);
            match how {
                BadWorkerVouchers::Forged => VoucherSigner::new(stray(), contract),
                BadWorkerVouchers::ForeignProxy => {
                    VoucherSigner::new(voucher_key.clone(), AccountId::from(&stray()))
                }
            }
        });
        Ok(Arc::new(Billing {
            account,
            bad_worker_signer,
            signer: VoucherSigner::new(voucher_key, contract),
            ledger,
            acts_for_operator,
            writer: ChargeWriter::spawn(&path)?,
            store: Mutex::new(store),
            prices: match config.test_only_worker_fee {
                None => registry.derive(|document| document.prices.clone()),
                Some(fee) => registry.derive(move |document| Prices {
                    worker_fee_per_token: fee,
                    ..document.prices.clone()
                }),
            },
            client_close_delay: registry.derive(|document| document.client_delay_before_close),
            ledger_unreachable: Mutex::new(None),
            reserved: Mutex::new(HashMap::new()),
            payments: Mutex::new(payments),
            released: Mutex::new(released),
            proven: Mutex::new(client_channel::Proven::new()),
            contracts: Mutex::new(HashMap::new()),
            pushed: Mutex::new(HashMap::new()),
            view: Mutex::new(LedgerView::default()),
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
        *lock(&self.ledger_unreachable) = None;
        let known = KnownContract {
            contract,
            fetched: Instant::now(),
        };
        lock(&self.contracts).insert(client, known.clone());
        Ok(known)
    }

    /// Reserves the worst case of a request (`prompt_tokens` + `max_tokens` at `coefficient`)
    /// against `client`'s available balance. Dropping the reservation releases it.
    ///
    /// Refused while the proxy cannot write charges. While the ledger cannot be reached, a client
    /// whose contract was read before is served from that reading, within `outage_available`.
    pub async fn reserve(
        self: &Arc<Self>,
        client: AccountId,
        prompt_tokens: u64,
        max_tokens: u64,
        coefficient: u32,
    ) -> Result<Reservation, BillingError> {
        if let Some(failure) = self.writer.failure() {
            return Err(BillingError::ChargesNotWritable(failure.to_string()));
        }
        let prices = self.prices();
        let needed = worst_case_cost(prompt_tokens, max_tokens, coefficient, &prices)?.client_price;
        let cached = lock(&self.contracts).get(&client).cloned();
        let (mut known, mut reading) = match cached {
            Some(known) if known.fetched.elapsed() < CONTRACT_FRESHNESS => (known, Reading::Cached),
            cached => self.read_contract(client, cached).await?,
        };
        loop {
            match self.try_reserve(client, &known, reading, needed)? {
                Ok(()) => return Ok(Reservation::new(self.clone(), client, needed, prices)),
                // A top-up may have happened since the contract was read: read it once more.
                Err(_) if reading == Reading::Cached => {
                    (known, reading) = self.read_contract(client, Some(known)).await?;
                }
                Err(refusal) => return Err(refusal),
            }
        }
    }

    /// Reads `client`'s contract from the ledger; when the ledger cannot be reached (or was not
    /// a moment ago), falls back to `last`, the reading the proxy already has.
    async fn read_contract(
        &self,
        client: AccountId,
        last: Option<KnownContract>,
    ) -> Result<(KnownContract, Reading), BillingError> {
        let recently_unreachable =
            lock(&self.ledger_unreachable).is_some_and(|at| at.elapsed() < LEDGER_RETRY);
        let unreachable = if recently_unreachable {
            SettlementError::Unavailable("the ledger was unreachable a moment ago".into())
        } else {
            let read = tokio::time::timeout(CONTRACT_READ_TIMEOUT, self.fetch_contract(client));
            match read.await {
                Ok(Ok(known)) => return Ok((known, Reading::Fetched)),
                Ok(Err(BillingError::Ledger(SettlementError::Unavailable(why)))) => {
                    SettlementError::Unavailable(why)
                }
                Ok(Err(refused)) => return Err(refused),
                Err(_) => SettlementError::Unavailable(format!(
                    "no answer within {} ms",
                    CONTRACT_READ_TIMEOUT.as_millis()
                )),
            }
        };
        if !recently_unreachable {
            *lock(&self.ledger_unreachable) = Some(Instant::now());
        }
        match last {
            Some(last) => Ok((last, Reading::LastBeforeOutage)),
            None => Err(BillingError::Ledger(unreachable)),
        }
    }

    fn try_reserve(
        &self,
        client: AccountId,
        known: &KnownContract,
        reading: Reading,
        needed: Amount,
    ) -> Result<Result<(), BillingError>, BillingError> {
        // Read under the reservations' lock: a charge is counted in `charged` before its
        // reservation is released, so no answer is missed from both. From memory: a request
        // never waits on the database. A release waits for no reservation under this lock.
        let mut reserved = lock(&self.reserved);
        if lock(&self.released).contains(&client) {
            return Ok(Err(BillingError::Released));
        }
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
        let charged = self.writer.charged(&client);
        if let Err(overdue) = self.check_unpaid(&client, contract, charged) {
            return Ok(Err(overdue));
        }
        let held = reserved.get(&client).copied().unwrap_or(0);
        if reading == Reading::LastBeforeOutage {
            let close_delay = Duration::from_secs(**self.client_close_delay.borrow());
            let age = known.fetched.elapsed();
            let available = outage_available(contract, charged, held, age, close_delay);
            if available < needed {
                return Ok(Err(BillingError::OutageBound { available, needed }));
            }
        } else {
            let available = available_balance(contract, charged, held);
            if available < needed {
                return Ok(Err(BillingError::Insufficient { available, needed }));
            }
        }
        *reserved.entry(client).or_insert(0) += needed;
        Ok(Ok(()))
    }

    fn unreserve(&self, client: AccountId, amount: Amount) {
        let mut reserved = lock(&self.reserved);
        if let Some(held) = reserved.get_mut(&client) {
            *held = held.saturating_sub(amount);
            if *held == 0 {
                reserved.remove(&client);
            }
        }
    }

    /// Prices `usage` at `coefficient` and records the charge durably (client pays, worker
    /// earns), then releases the reservation. The charge never exceeds the reservation: a worker
    /// reporting more usage is paid in proportion to the capped charge. `meanwhile` runs on the
    /// priced charge while the disk writes it. Returns the cost split for the app's `usage`, the
    /// uncapped price when the cap applied, and what `meanwhile` returned — once the charge is on
    /// disk.
    pub async fn charge<T>(
        &self,
        reservation: Reservation,
        worker: AccountId,
        usage: &TokenUsage,
        coefficient: u32,
        meanwhile: impl FnOnce(&AnswerCost, Option<Amount>) -> T,
    ) -> Result<(AnswerCost, Option<Amount>, T), BillingError> {
        let (mut cost, mut answer) = answer_cost(usage, coefficient, reservation.prices())?;
        let uncapped = cap_at_reservation(&mut cost, &mut answer, reservation.amount());
        if self.config.test_only_overcharge {
            cost.client_price = cost.client_price.saturating_mul(2);
            answer.completion_total_cost = cost.client_price - answer.prompt_total_cost;
            answer.total_cost = cost.client_price;
        }
        let written = self.writer.record(ChargeRecord {
            client: reservation.client(),
            worker,
            adjusted_tokens: cost.adjusted_tokens,
            client_price: cost.client_price,
            worker_pay: cost.worker_pay,
        });
        let done_meanwhile = meanwhile(&answer, uncapped);
        written.await?;
        // Only now: until the charge is on disk, the reservation is what counts the answer.
        drop(reservation);
        Ok((answer, uncapped, done_meanwhile))
    }

    /// `client`'s bill: its total charge, and the newest payment it signed that this proxy holds.
    pub fn client_statement(&self, client: AccountId) -> Result<ClientStatement, BillingError> {
        let charged = self.writer.charged(&client);
        let reserved = lock(&self.reserved).get(&client).copied().unwrap_or(0);
        Ok(ClientStatement {
            proxy: self.account,
            client,
            charged,
            reserved,
            voucher: self.payment_of(&client),
        })
    }

    /// What each worker earned, with its voucher: the statement names the accounts (this proxy's
    /// operator, the worker's payee), the voucher the ids the settlement backend checks.
    fn worker_statements(&self) -> Result<Vec<WorkerStatement>, BillingError> {
        let (workers, seqno) = lock(&self.store).workers_at_position()?;
        let signer = self.bad_worker_signer.as_ref().unwrap_or(&self.signer);
        workers
            .into_iter()
            .map(|(worker, totals)| {
                let payee = self
                    .ledger
                    .voucher_ids(VoucherKind::WorkerPay, self.account, worker)?
                    .counterparty;
                Ok(WorkerStatement {
                    proxy: self.account,
                    worker,
                    earned: totals.amount,
                    voucher: signer.worker_pay(payee, totals.amount, seqno),
                })
            })
            .collect()
    }

    /// Billing figures for `/jsonstats`.
    pub fn snapshot(&self) -> Value {
        let (charged, earned, paid, seqno) = {
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
                store.paid_in_total().unwrap_or(0),
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
            // What the clients' newest vouchers on disk pay in total (settled or not).
            "paid": paid,
            "earned": earned,
            "commission": charged.saturating_sub(earned),
            "claimable": earned.saturating_sub(view.paid_to_workers),
            "withdrawn": view.withdrawn,
            "reserved": reserved,
            "seqno": seqno,
            "voucher_key": self.signer.voucher_key().to_string(),
            "acts_for_operator": self.acts_for_operator,
            "last_error": view.last_error,
            "ledger_unreachable_for_ms": lock(&self.ledger_unreachable)
                .map(|since| since.elapsed().as_millis() as u64),
            "charges_not_writable": self.writer.failure().as_deref(),
        })
    }

    /// Why the proxy should not be sent requests now (`/healthz` turns red with it), if so.
    pub fn unhealthy(&self) -> Option<String> {
        let failure = self.writer.failure()?;
        Some(BillingError::ChargesNotWritable(failure.to_string()).to_string())
    }
}

#[cfg(test)]
mod tests;
