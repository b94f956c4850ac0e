//! The worker's pay: proxies send their earnings statements over the link (a signed cumulative
//! voucher each), the worker checks each ([`crate::voucher_check`]) and keeps the best, and
//! claims on the ledger whenever what it can claim from a proxy passes a threshold. It counts
//! what it earns on each proxy's links and stops serving a proxy whose vouchers fall more than
//! `--max-unvouched` behind, until they catch up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Extension;
use axum::{Json, Router};
use cocoon_money::{AccountId, Amount, Settlement, VoucherKind, WorkerStatement};
use cocoon_node::reply::{error_response, json_response};
use cocoon_node::serve::LogThrottle;
use cocoon_proto::link::PATH_EARNINGS;
use cocoon_proto::ErrorKind;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::voucher_check::{self, LinkedProxy, Tally, VoucherRefusal};

/// What every request and statement on a proxy's link carries (an extension of that link's
/// router): who the proxy is, and where its pay is counted.
#[derive(Clone)]
pub struct PaidLink {
    /// The proxy as its attested claims name it.
    pub proxy: LinkedProxy,
    /// This worker's pay.
    pub settlement: Arc<WorkerSettlement>,
}

/// Per proxy: its latest statement and what the ledger says was paid.
#[derive(Debug, Clone, Serialize)]
struct Earnings {
    statement: WorkerStatement,
    paid: Amount,
    /// The key that signed the voucher (the link's attested voucher key).
    signed_by: AccountId,
    /// Whether the ledger's proxy contract honours that key (`None`: not checked yet). An
    /// operator can evict or revoke a running proxy's key, which makes its vouchers worthless.
    key_authorized: Option<bool>,
}

/// The worker's account and the earnings proxies reported.
pub struct WorkerSettlement {
    /// The account earnings are paid to (named in the proxies' vouchers).
    account: AccountId,
    ledger: Arc<dyn Settlement>,
    threshold: Amount,
    interval: Duration,
    earnings: Mutex<BTreeMap<AccountId, Earnings>>,
    balance: Mutex<Option<Amount>>,
    /// Per proxy contract: earned in this run against what was vouched.
    tallies: Mutex<BTreeMap<AccountId, Tally>>,
    /// A proxy whose vouchers fall further behind is not served until they catch up.
    max_unvouched: Amount,
    /// Vouchers refused, and the last reason (for `/jsonstats`).
    refused: Mutex<(u64, Option<String>)>,
    refusal_log: LogThrottle,
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
    /// Settlement of the earnings paid to `payee` on `ledger`, claiming (with `ledger`'s key,
    /// which need not be `payee`'s) once at least `threshold` is claimable from one proxy
    /// (checked every `interval`), and serving no proxy whose vouchers fall more than
    /// `max_unvouched` behind.
    pub fn new(
        ledger: Arc<dyn Settlement>,
        payee: AccountId,
        threshold: Amount,
        interval: Duration,
        max_unvouched: Amount,
    ) -> Arc<Self> {
        Arc::new(Self {
            account: payee,
            ledger,
            threshold,
            interval,
            earnings: Mutex::new(BTreeMap::new()),
            balance: Mutex::new(None),
            tallies: Mutex::new(BTreeMap::new()),
            max_unvouched,
            refused: Mutex::new((0, None)),
            refusal_log: LogThrottle::per_second(),
        })
    }

    /// An answer served on `proxy`'s link earned `amount`.
    pub fn earn(&self, proxy: &LinkedProxy, amount: Amount) {
        lock(&self.tallies)
            .entry(proxy.contract)
            .or_default()
            .earn(amount);
    }

    /// Why `proxy` is not served now, if it is not: the ledger does not honour the key of its
    /// best voucher, or its vouchers are too far behind.
    pub fn refusal(&self, proxy: &LinkedProxy) -> Option<String> {
        let unauthorized = lock(&self.earnings)
            .get(&proxy.contract)
            .filter(|held| held.key_authorized == Some(false))
            .map(|held| held.signed_by);
        if let Some(key) = unauthorized {
            return Some(format!(
                "proxy {}'s contract no longer honours the key {key} its vouchers to this worker \
                 are signed with; it serves the proxy again once a voucher under an authorized key \
                 comes",
                proxy.contract
            ));
        }
        let unvouched = lock(&self.tallies)
            .get(&proxy.contract)
            .map_or(0, Tally::unvouched);
        (unvouched > self.max_unvouched).then(|| {
            format!(
                "this worker is owed {unvouched} by proxy {} without a voucher, more than its \
                 --max-unvouched {}; it serves the proxy again once vouchers catch up",
                proxy.contract, self.max_unvouched
            )
        })
    }

    /// The account this worker's earnings are paid to.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Takes a statement that came on `link`'s connection if its voucher checks out
    /// ([`voucher_check::check`]) and is newer than the one held; a refused one is logged.
    pub fn accept(
        &self,
        statement: WorkerStatement,
        link: &LinkedProxy,
    ) -> Result<(), VoucherRefusal> {
        self.take(statement, link).inspect_err(|refusal| {
            let mut refused = lock(&self.refused);
            refused.0 += 1;
            refused.1 = Some(refusal.to_string());
            if let Some(held_back) = self.refusal_log.admit() {
                tracing::warn!(proxy = %link.contract, %refusal, held_back, "voucher refused");
            }
        })
    }

    fn take(&self, statement: WorkerStatement, link: &LinkedProxy) -> Result<(), VoucherRefusal> {
        let expected = self
            .ledger
            .voucher_ids(VoucherKind::WorkerPay, link.contract, self.account)
            .map_err(|error| VoucherRefusal::NoIds(error.to_string()))?;
        voucher_check::check(&statement, self.account, link, expected)?;
        let voucher = statement.voucher.voucher;
        let mut earnings = lock(&self.earnings);
        if let Some(held) = earnings.get(&statement.proxy) {
            let best = held.statement.voucher.voucher;
            if voucher.seqno <= best.seqno {
                return Ok(());
            }
            if voucher.cumulative < best.cumulative {
                return Err(VoucherRefusal::Decreases {
                    held: best.cumulative,
                    got: voucher.cumulative,
                    seqno: voucher.seqno,
                });
            }
        }
        let held = earnings.get(&statement.proxy);
        let paid = held.map_or(0, |held| held.paid);
        let key_authorized = held
            .filter(|held| held.signed_by == link.voucher_key)
            .and_then(|held| held.key_authorized);
        earnings.insert(
            statement.proxy,
            Earnings {
                statement,
                paid,
                signed_by: link.voucher_key,
                key_authorized,
            },
        );
        lock(&self.tallies)
            .entry(link.contract)
            .or_default()
            .vouched(voucher.cumulative);
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
            match self.ledger.proxy_contract(proxy).await {
                Ok(contract) => {
                    let honoured = contract.is_some_and(|c| c.authorizes(&earnings.signed_by));
                    self.note_key(proxy, earnings.signed_by, honoured);
                }
                Err(error) => tracing::warn!(%proxy, %error, "reading the proxy contract failed"),
            }
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

    /// Records whether `proxy`'s contract honours `key` (if the best voucher held is still `key`'s).
    fn note_key(&self, proxy: AccountId, key: AccountId, honoured: bool) {
        let mut earnings = lock(&self.earnings);
        let Some(held) = earnings
            .get_mut(&proxy)
            .filter(|held| held.signed_by == key)
        else {
            return;
        };
        if !honoured && held.key_authorized != Some(false) {
            tracing::warn!(%proxy, %key, "the proxy's contract does not honour the key of its vouchers to this worker; not serving it");
        }
        held.key_authorized = Some(honoured);
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
        let (refused, last_refusal) = lock(&self.refused).clone();
        let unvouched: Vec<Value> = lock(&self.tallies)
            .iter()
            .map(|(proxy, tally)| json!({"proxy": proxy.to_string(), "unvouched": tally.unvouched()}))
            .collect();
        json!({
            "account": self.account.to_string(),
            "max_unvouched": self.max_unvouched,
            "unvouched": unvouched,
            "vouchers_refused": refused,
            "last_voucher_refusal": last_refusal,
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
    link: Option<Extension<PaidLink>>,
    Json(statement): Json<WorkerStatement>,
) -> Response {
    let Some(Extension(link)) = link else {
        return error_response(
            ErrorKind::InvalidRequest,
            "earnings statements are taken only on a proxy's attested link",
        );
    };
    match settlement.accept(statement, &link.proxy) {
        Ok(()) => json_response(http::StatusCode::OK, &json!({"accepted": true})),
        Err(refusal) => error_response(ErrorKind::InvalidRequest, refusal.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_money::VoucherSigner;
    use ed25519_dalek::SigningKey;

    fn settlement() -> Arc<WorkerSettlement> {
        settlement_with(1_000)
    }

    /// A settlement of its own wallet that lets a proxy owe it `max_unvouched`.
    pub(super) fn settlement_with(max_unvouched: Amount) -> Arc<WorkerSettlement> {
        let key = SigningKey::from_bytes(&[3; 32]);
        let payee = AccountId::from(&key);
        WorkerSettlement::new(
            unreachable_ledger(key),
            payee,
            100,
            Duration::from_secs(1),
            max_unvouched,
        )
    }

    /// A ledger handle signing with `key`, on a port nothing listens on.
    fn unreachable_ledger(key: SigningKey) -> Arc<dyn Settlement> {
        Arc::new(cocoon_ledger::LedgerClient::new("http://127.0.0.1:9", key).unwrap())
    }

    /// The link of the proxy with contract `proxy` whose key signs [`statement_from`]'s vouchers.
    fn link(proxy: AccountId) -> LinkedProxy {
        LinkedProxy {
            contract: proxy,
            voucher_key: AccountId::from(&SigningKey::from_bytes(&[9; 32])),
        }
    }

    fn proxy_link() -> LinkedProxy {
        link(AccountId([1; 32]))
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
        settlement
            .accept(statement(me, 50, 2), &proxy_link())
            .unwrap();
        settlement
            .accept(statement(me, 30, 1), &proxy_link())
            .unwrap();
        assert_eq!(settlement.snapshot()["earned"], 50);
        settlement
            .accept(statement(me, 70, 3), &proxy_link())
            .unwrap();
        assert_eq!(settlement.snapshot()["claimable"], 70);
        assert!(settlement
            .accept(statement(AccountId([8; 32]), 10, 4), &proxy_link())
            .is_err());
        let mut forged = statement(me, 10, 5);
        forged.earned = 1_000;
        assert!(settlement.accept(forged, &proxy_link()).is_err());
        assert_eq!(settlement.snapshot()["earned"], 70);
    }

    #[test]
    fn statements_are_for_the_payee_not_the_claim_key() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let payee = AccountId([5; 32]);
        let settlement = WorkerSettlement::new(
            unreachable_ledger(key.clone()),
            payee,
            1,
            Duration::from_secs(1),
            1_000,
        );
        assert_eq!(settlement.account(), payee);
        settlement
            .accept(statement(payee, 40, 1), &proxy_link())
            .unwrap();
        assert!(settlement
            .accept(statement(AccountId::from(&key), 10, 2), &proxy_link())
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
                .accept(
                    statement_from(AccountId([proxy; 32]), me, Amount::MAX, 1),
                    &link(AccountId([proxy; 32])),
                )
                .unwrap();
        }
        assert_eq!(settlement.snapshot()["earned"], Amount::MAX);
    }
}

#[cfg(test)]
mod pay_checks {
    use super::*;
    use cocoon_money::VoucherSigner;
    use ed25519_dalek::SigningKey;

    use super::tests::settlement_with as settlement;

    const PROXY: AccountId = AccountId([1; 32]);

    fn signer(seed: u8) -> VoucherSigner {
        VoucherSigner::new(SigningKey::from_bytes(&[seed; 32]), PROXY)
    }

    fn link(seed: u8) -> LinkedProxy {
        LinkedProxy {
            contract: PROXY,
            voucher_key: signer(seed).voucher_key(),
        }
    }

    fn pay(settlement: &WorkerSettlement, by: u8, earned: Amount, seqno: u64) -> WorkerStatement {
        WorkerStatement {
            proxy: PROXY,
            worker: settlement.account(),
            earned,
            voucher: signer(by).worker_pay(settlement.account(), earned, seqno),
        }
    }

    #[test]
    fn a_forged_voucher_is_refused_counted_and_changes_nothing() {
        let settlement = settlement(1_000);
        settlement
            .accept(pay(&settlement, 9, 40, 1), &link(9))
            .unwrap();
        // Another key than the one this link's proxy attested: a forger, or another proxy.
        let forged = pay(&settlement, 8, 4_000, 2);
        assert_eq!(
            settlement.accept(forged, &link(9)),
            Err(VoucherRefusal::BadSignature)
        );
        let stats = settlement.snapshot();
        assert_eq!(stats["claimable"], 40, "{stats}");
        assert_eq!(stats["vouchers_refused"], 1, "{stats}");
    }

    #[test]
    fn a_restarted_proxys_new_key_continues_and_a_decreasing_voucher_is_refused() {
        let settlement = settlement(1_000);
        settlement
            .accept(pay(&settlement, 9, 40, 5), &link(9))
            .unwrap();
        // After a restart the proxy attests a new key and goes on from its database.
        settlement
            .accept(pay(&settlement, 10, 60, 7), &link(10))
            .unwrap();
        assert_eq!(settlement.snapshot()["claimable"], 60);
        // A rolled-back database vouches less under a newer statement number: refused.
        assert!(matches!(
            settlement.accept(pay(&settlement, 10, 50, 9), &link(10)),
            Err(VoucherRefusal::Decreases {
                held: 60,
                got: 50,
                seqno: 9
            })
        ));
        assert_eq!(settlement.snapshot()["claimable"], 60);
    }

    #[test]
    fn a_proxy_whose_key_the_ledger_stopped_honouring_is_refused_until_a_new_keys_voucher() {
        let settlement = settlement(1_000);
        settlement
            .accept(pay(&settlement, 9, 40, 1), &link(9))
            .unwrap();
        settlement.note_key(PROXY, link(9).voucher_key, true);
        assert_eq!(settlement.refusal(&link(9)), None);
        // The operator evicted or revoked the key: its vouchers can no longer be claimed.
        settlement.note_key(PROXY, link(9).voucher_key, false);
        let refusal = settlement.refusal(&link(9)).expect("refused");
        assert!(refusal.contains("no longer honours"), "{refusal}");
        // The restarted proxy's voucher under its new key replaces it.
        settlement
            .accept(pay(&settlement, 10, 60, 2), &link(10))
            .unwrap();
        assert_eq!(settlement.refusal(&link(10)), None);
        // A late answer about the old key changes nothing.
        settlement.note_key(PROXY, link(9).voucher_key, false);
        assert_eq!(settlement.refusal(&link(10)), None);
    }

    #[test]
    fn a_proxy_whose_vouchers_fall_behind_is_refused_until_they_catch_up() {
        let settlement = settlement(100);
        let proxy = link(9);
        settlement.earn(&proxy, 100);
        assert_eq!(settlement.refusal(&proxy), None);
        settlement.earn(&proxy, 1);
        let refusal = settlement.refusal(&proxy).expect("beyond the bound");
        assert!(refusal.contains("--max-unvouched 100"), "{refusal}");
        settlement
            .accept(pay(&settlement, 9, 101, 1), &proxy)
            .unwrap();
        assert_eq!(settlement.refusal(&proxy), None);
        settlement.earn(&proxy, 150);
        assert!(settlement.refusal(&proxy).is_some());
        settlement
            .accept(pay(&settlement, 9, 200, 2), &proxy)
            .unwrap();
        assert_eq!(
            settlement.refusal(&proxy),
            None,
            "50 unvouched is within the bound"
        );
    }
}
