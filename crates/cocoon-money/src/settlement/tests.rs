//! The default registry watch, on a backend that can only be polled.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::rules::RuleError;

/// A backend whose registry is at version 1 until it has been read `changes_after` times, then
/// at version 2; it counts the reads.
struct PolledOnly {
    reads: AtomicU64,
    changes_after: u64,
    interval: Duration,
}

impl PolledOnly {
    fn new(changes_after: u64, interval: Duration) -> Self {
        Self {
            reads: AtomicU64::new(0),
            changes_after,
            interval,
        }
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Settlement for PolledOnly {
    fn account_id(&self) -> Option<AccountId> {
        None
    }

    async fn execute(&self, _: TransactionBody) -> Result<Receipt, SettlementError> {
        Err(SettlementError::NoSigningKey)
    }

    async fn registry(&self) -> Result<Registry, SettlementError> {
        let reads = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let mut registry = Registry::new(AccountId([1; 32]));
        registry.version = if reads > self.changes_after { 2 } else { 1 };
        Ok(registry)
    }

    fn registry_poll_interval(&self) -> Duration {
        self.interval
    }

    async fn account(&self, _: AccountId) -> Result<Account, SettlementError> {
        Err(SettlementError::Rejected(RuleError::NotRegistryOwner))
    }

    async fn proxy_contract(&self, _: AccountId) -> Result<Option<ProxyContract>, SettlementError> {
        Ok(None)
    }

    async fn client_contract(
        &self,
        _: AccountId,
        _: AccountId,
    ) -> Result<Option<ClientContract>, SettlementError> {
        Ok(None)
    }

    async fn worker_contract(
        &self,
        _: AccountId,
        _: AccountId,
    ) -> Result<Option<WorkerContract>, SettlementError> {
        Ok(None)
    }
}

#[tokio::test]
async fn the_polling_watch_sees_a_change() {
    let backend = PolledOnly::new(3, Duration::from_millis(10));
    // The wait is far longer than the change takes: it returns on the change, not the wait.
    let answer = backend
        .registry_answer_newer_than(1, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(answer.registry.version, 2);
    assert_eq!(backend.reads(), 4, "read until the change, then stopped");
    assert_eq!(
        answer.signed_update, None,
        "this backend keeps no signed update"
    );
}

#[tokio::test]
async fn the_polling_watch_answers_at_once_when_already_newer() {
    let backend = PolledOnly::new(0, Duration::from_secs(600));
    let answer = backend
        .registry_answer_newer_than(0, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(answer.registry.version, 2);
    assert_eq!(backend.reads(), 1);
}

#[tokio::test]
async fn the_polling_watch_reads_a_bounded_number_of_times_per_wait() {
    let wait = Duration::from_millis(200);
    let interval = Duration::from_millis(40);
    let backend = PolledOnly::new(u64::MAX, interval);
    let answer = backend.registry_answer_newer_than(1, wait).await.unwrap();
    assert_eq!(answer.registry.version, 1, "nothing newer: the current one");
    let bound = (wait.as_millis() / interval.as_millis()) as u64 + 2;
    assert!(
        (2..=bound).contains(&backend.reads()),
        "{} reads in one wait (at most {bound})",
        backend.reads()
    );
}

#[tokio::test]
async fn a_zero_poll_interval_does_not_spin() {
    let wait = Duration::from_millis(100);
    let backend = PolledOnly::new(u64::MAX, Duration::ZERO);
    backend.registry_answer_newer_than(1, wait).await.unwrap();
    let bound = (wait.as_millis() / MIN_REGISTRY_POLL_INTERVAL.as_millis()) as u64 + 2;
    assert!(
        backend.reads() <= bound,
        "{} reads in one wait (at most {bound})",
        backend.reads()
    );
}

#[tokio::test]
async fn a_zero_wait_reads_once() {
    let backend = PolledOnly::new(u64::MAX, Duration::from_millis(10));
    backend
        .registry_answer_newer_than(1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(backend.reads(), 1);
}

#[test]
fn vouchers_name_the_accounts_themselves_by_default() {
    let backend = PolledOnly::new(u64::MAX, Duration::from_millis(10));
    let (proxy, other) = (AccountId([1; 32]), AccountId([2; 32]));
    for kind in [
        VoucherKind::ClientPay,
        VoucherKind::ClientCharge,
        VoucherKind::WorkerPay,
    ] {
        assert_eq!(
            backend.voucher_ids(kind, proxy, other).unwrap(),
            VoucherIds::accounts(proxy, other)
        );
    }
}

#[test]
fn an_unsupported_operation_is_no_rule_refusal() {
    let error = SettlementError::Unsupported("CommitProxyState".into());
    assert_eq!(error.rule(), None);
    assert!(!error.is_stale_voucher());
    assert!(error.to_string().contains("not supported"), "{error}");
}
