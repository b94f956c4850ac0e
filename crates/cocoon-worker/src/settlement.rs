//! The worker's pay: proxies send their earnings statements over the link (a signed cumulative
//! voucher each), and the worker claims on the ledger whenever what it can claim from a proxy
//! passes a threshold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use cocoon_ledger::{AccountId, Amount, LedgerClient, Settlement, WorkerStatement};
use cocoon_node::reply::{error_response, json_response};
use cocoon_proto::link::PATH_EARNINGS;
use cocoon_proto::ErrorKind;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Per proxy: its latest statement and what the ledger says was paid.
#[derive(Debug, Clone, Serialize)]
struct Earnings {
    statement: WorkerStatement,
    paid: Amount,
}

/// The worker's account and the earnings proxies reported.
pub struct WorkerSettlement {
    /// The account earnings are paid to (named in the proxies' vouchers).
    account: AccountId,
    ledger: LedgerClient,
    threshold: Amount,
    interval: Duration,
    earnings: Mutex<BTreeMap<AccountId, Earnings>>,
    balance: Mutex<Option<Amount>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Claimable now: earned minus already paid.
fn claimable(earnings: &Earnings) -> Amount {
    earnings.statement.earned.saturating_sub(earnings.paid)
}

impl WorkerSettlement {
    /// Settlement of the earnings paid to `payee` against the ledger at `ledger_url`, claiming
    /// (transactions signed with `key`, which need not be `payee`'s) once at least `threshold` is
    /// claimable from one proxy (checked every `interval`).
    pub fn new(
        ledger_url: &str,
        key: SigningKey,
        payee: AccountId,
        threshold: Amount,
        interval: Duration,
    ) -> Result<Arc<Self>, cocoon_ledger::ClientError> {
        Ok(Arc::new(Self {
            account: payee,
            ledger: LedgerClient::new(ledger_url, key)?,
            threshold,
            interval,
            earnings: Mutex::new(BTreeMap::new()),
            balance: Mutex::new(None),
        }))
    }

    /// The account this worker's earnings are paid to.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Takes a proxy's statement if it is for this worker and newer than the one held.
    pub fn accept(&self, statement: WorkerStatement) -> Result<(), String> {
        let voucher = &statement.voucher.voucher;
        if statement.worker != self.account || voucher.counterparty != self.account {
            return Err(format!(
                "statement is for {}, not this worker",
                statement.worker
            ));
        }
        if voucher.proxy != statement.proxy || voucher.cumulative != statement.earned {
            return Err("the voucher does not match the statement".into());
        }
        let mut earnings = lock(&self.earnings);
        let entry = earnings.entry(statement.proxy).or_insert(Earnings {
            statement: statement.clone(),
            paid: 0,
        });
        if voucher.seqno >= entry.statement.voucher.voucher.seqno {
            entry.statement = statement;
        }
        Ok(())
    }

    /// The route proxies send statements to, merged into the link router.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(PATH_EARNINGS, post(receive))
            .with_state(self.clone())
    }

    /// One round: refresh what was paid, claim where the threshold is passed.
    pub async fn settle(&self) {
        let held: Vec<Earnings> = lock(&self.earnings).values().cloned().collect();
        for earnings in held {
            let proxy = earnings.statement.proxy;
            let paid = match self.ledger.worker_contract(proxy, self.account).await {
                Ok(contract) => contract.map_or(0, |c| c.paid),
                Err(error) => {
                    tracing::warn!(%proxy, %error, "reading the worker contract failed");
                    continue;
                }
            };
            let mut current = earnings.clone();
            current.paid = paid;
            if claimable(&current) > 0 && claimable(&current) >= self.threshold {
                match self.ledger.claim(current.statement.voucher).await {
                    Ok(_) => {
                        tracing::info!(%proxy, amount = claimable(&current), "earnings claimed");
                        current.paid = current.statement.earned;
                    }
                    Err(error) if error.is_stale_voucher() => {}
                    Err(error) => tracing::warn!(%proxy, %error, "claiming earnings failed"),
                }
            }
            if let Some(entry) = lock(&self.earnings).get_mut(&proxy) {
                entry.paid = current.paid;
            }
        }
        if let Ok(account) = self.ledger.account(self.account).await {
            *lock(&self.balance) = Some(account.balance);
        }
    }

    /// Settles every interval until `shutdown`.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let settlement = self.clone();
        tokio::spawn(async move {
            loop {
                settlement.settle().await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(settlement.interval) => {}
                }
            }
        })
    }

    /// Wallet figures for `/jsonstats`.
    pub fn snapshot(&self) -> Value {
        let earnings = lock(&self.earnings);
        // Each proxy states its own figures: the totals saturate rather than wrap or panic.
        let earned = earnings
            .values()
            .map(|e| e.statement.earned)
            .fold(0, Amount::saturating_add);
        let paid = earnings
            .values()
            .map(|e| e.paid)
            .fold(0, Amount::saturating_add);
        let proxies: Vec<Value> = earnings
            .values()
            .map(|e| {
                json!({
                    "proxy": e.statement.proxy.to_string(),
                    "earned": e.statement.earned,
                    "paid": e.paid,
                    // What `cocoon wallet claim --voucher` takes, should the worker not claim itself.
                    "voucher": e.statement.voucher,
                })
            })
            .collect();
        json!({
            "account": self.account.to_string(),
            "balance": *lock(&self.balance),
            "earned": earned,
            "claimed": paid,
            "claimable": earned.saturating_sub(paid),
            "claim_threshold": self.threshold,
            "proxies": proxies,
        })
    }
}

async fn receive(
    State(settlement): State<Arc<WorkerSettlement>>,
    Json(statement): Json<WorkerStatement>,
) -> Response {
    match settlement.accept(statement) {
        Ok(()) => json_response(http::StatusCode::OK, &json!({"accepted": true})),
        Err(message) => error_response(ErrorKind::InvalidRequest, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_ledger::VoucherSigner;

    fn settlement() -> Arc<WorkerSettlement> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let payee = AccountId::from(&key);
        WorkerSettlement::new(
            "http://127.0.0.1:9",
            key,
            payee,
            100,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    fn statement(worker: AccountId, earned: Amount, seqno: u64) -> WorkerStatement {
        statement_from(AccountId([1; 32]), worker, earned, seqno)
    }

    fn statement_from(
        proxy: AccountId,
        worker: AccountId,
        earned: Amount,
        seqno: u64,
    ) -> WorkerStatement {
        let signer = VoucherSigner::new(SigningKey::from_bytes(&[9; 32]), proxy);
        WorkerStatement {
            proxy,
            worker,
            earned,
            voucher: signer.worker_pay(worker, earned, seqno),
        }
    }

    #[test]
    fn keeps_the_newest_statement_for_itself_only() {
        let settlement = settlement();
        let me = settlement.account();
        settlement.accept(statement(me, 50, 2)).unwrap();
        settlement.accept(statement(me, 30, 1)).unwrap();
        assert_eq!(settlement.snapshot()["earned"], 50);
        settlement.accept(statement(me, 70, 3)).unwrap();
        assert_eq!(settlement.snapshot()["claimable"], 70);
        assert!(settlement
            .accept(statement(AccountId([8; 32]), 10, 4))
            .is_err());
        let mut forged = statement(me, 10, 5);
        forged.earned = 1_000;
        assert!(settlement.accept(forged).is_err());
        assert_eq!(settlement.snapshot()["earned"], 70);
    }

    #[test]
    fn statements_are_for_the_payee_not_the_claim_key() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let payee = AccountId([5; 32]);
        let settlement = WorkerSettlement::new(
            "http://127.0.0.1:9",
            key.clone(),
            payee,
            1,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(settlement.account(), payee);
        settlement.accept(statement(payee, 40, 1)).unwrap();
        assert!(settlement
            .accept(statement(AccountId::from(&key), 10, 2))
            .is_err());
        assert_eq!(settlement.snapshot()["account"], payee.to_string());
        assert_eq!(settlement.snapshot()["claimable"], 40);
    }

    #[test]
    fn totals_over_proxies_saturate_instead_of_overflowing() {
        let settlement = settlement();
        let me = settlement.account();
        for proxy in [1, 2] {
            settlement
                .accept(statement_from(AccountId([proxy; 32]), me, Amount::MAX, 1))
                .unwrap();
        }
        assert_eq!(settlement.snapshot()["earned"], Amount::MAX);
    }
}
