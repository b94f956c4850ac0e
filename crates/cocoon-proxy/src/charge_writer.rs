//! The one thread that writes charges to the proxy's database, as many per transaction (and
//! fsync) as are waiting: requests finishing together share one disk flush, and no async task
//! ever blocks on the disk. It owns its own connection, so readers (reservations, statements)
//! never wait behind a flush (WAL readers do not block on the writer).
//!
//! Clients' payment vouchers go through it too, in the same transactions as the charges queued
//! with them, so keeping a voucher durable costs the request path no wait and no fsync of its own.
//! A voucher waits beside the queue, each client's newest only (`PendingPayments`): a client
//! that sends vouchers faster than they are written costs one entry, never a growing queue. Every
//! group the writer takes from the queue writes the vouchers waiting then, so a voucher recorded
//! before a charge is queued is on disk once that charge is.
//!
//! It also keeps each client's committed total in memory (`ClientTotals`), updated after each
//! commit and before any of its charges is reported written, so reservations on the request path
//! read a map, never the database (and never wait behind its lock or the disk).
//!
//! It is also the proxy's circuit breaker for the disk: when a write fails (a full disk, an I/O
//! error) it reports the database unwritable, and [`crate::billing::Billing`] refuses new requests
//! rather than serve answers it cannot charge; while unwritable it probes every
//! [`PROBE_INTERVAL`] with a throw-away write larger than a charge, and the first write that
//! succeeds (a probe or a charge) clears the report.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cocoon_money::{AccountId, Amount, SignedVoucher};
use tokio::sync::{oneshot, watch};

use crate::store::{BillingStore, ChargeRecord, StoreError};

/// Most charges written in one transaction.
const MAX_GROUP: usize = 1024;
/// Pause between probes while the database does not take writes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Why the database does not take writes now (`None`: it does).
pub type WriteFailure = Option<Arc<str>>;

/// One write waiting for the thread.
enum Pending {
    /// A charge, and who waits for its seqno.
    Charge(ChargeRecord, oneshot::Sender<Result<u64, StoreError>>),
    /// Payments wait in [`PendingPayments`]: the writer has some to write.
    Payments,
    /// A client the proxy releases (serves no more); waited for with a barrier.
    Release(AccountId),
    /// Someone waiting until everything queued before is on disk.
    Barrier(oneshot::Sender<Result<(), StoreError>>),
}

/// The payments waiting for the writer: each client's newest voucher only.
#[derive(Default)]
struct PendingPayments(Mutex<HashMap<AccountId, SignedVoucher>>);

impl PendingPayments {
    /// Keeps `voucher` as `client`'s unless a newer one waits; true when none waited before (the
    /// writer then needs a wake).
    fn put(&self, client: AccountId, voucher: SignedVoucher) -> bool {
        let mut waiting = self.lock();
        let woken = waiting.is_empty();
        let newer = waiting
            .get(&client)
            .is_none_or(|held| held.voucher.seqno < voucher.voucher.seqno);
        if newer {
            waiting.insert(client, voucher);
        }
        woken
    }

    /// Everything waiting, for one write.
    fn take(&self) -> Vec<(AccountId, SignedVoucher)> {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, SignedVoucher>> {
        // Whole vouchers, inserted or taken at once: a panic elsewhere leaves them whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What each client has been charged in total, as committed to the database.
#[derive(Default)]
struct ClientTotals(Mutex<HashMap<AccountId, Amount>>);

impl ClientTotals {
    fn get(&self, client: &AccountId) -> Amount {
        self.lock().get(client).copied().unwrap_or(0)
    }

    /// Counts committed charges. The database refused any whose total would overflow, so the
    /// sums here do not either (saturating only to stay total).
    fn add(&self, charges: impl Iterator<Item = (AccountId, Amount)>) {
        let mut totals = self.lock();
        for (client, amount) in charges {
            let total = totals.entry(client).or_insert(0);
            *total = total.saturating_add(amount);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Amount>> {
        // Plain numbers: a panic elsewhere while holding the lock leaves them whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Handle of the writer thread.
pub struct ChargeWriter {
    queue: mpsc::Sender<Pending>,
    payments: Arc<PendingPayments>,
    failure: watch::Receiver<WriteFailure>,
    totals: Arc<ClientTotals>,
}

impl ChargeWriter {
    /// Opens a connection of its own to the database at `path` and starts the writer thread on it;
    /// the thread stops when the writer is dropped.
    pub fn spawn(path: &Path) -> Result<ChargeWriter, StoreError> {
        let store = BillingStore::open(path)?;
        let totals = Arc::new(ClientTotals::default());
        totals.add(
            store
                .clients()?
                .into_iter()
                .map(|(client, totals)| (client, totals.amount)),
        );
        let (queue, pending) = mpsc::channel::<Pending>();
        let (report, failure) = watch::channel(None);
        let committed = totals.clone();
        let payments = Arc::new(PendingPayments::default());
        let waiting = payments.clone();
        std::thread::Builder::new()
            .name("charge-writer".into())
            .spawn(move || write_charges(store, pending, &waiting, report, &committed))
            .map_err(|error| {
                StoreError::Batch(format!(
                    "proxy database: starting the writer thread: {error}"
                ))
            })?;
        Ok(ChargeWriter {
            queue,
            payments,
            failure,
            totals,
        })
    }

    /// What `client` has been charged in total: every charge [`ChargeWriter::record`] reported
    /// written, and possibly some committed a moment ago whose report is on its way.
    pub fn charged(&self, client: &AccountId) -> Amount {
        self.totals.get(client)
    }

    /// Records `charge`: queued for writing at once, when called (not when first polled), so the
    /// caller can work while the disk does; the future resolves once the charge is on disk.
    pub fn record(
        &self,
        charge: ChargeRecord,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let (done, written) = oneshot::channel();
        let queued = self
            .queue
            .send(Pending::Charge(charge, done))
            .map_err(|_| StoreError::WriterStopped);
        async move {
            queued?;
            written.await.map_err(|_| StoreError::WriterStopped)?
        }
    }

    /// Queues `client`'s verified payment voucher, to be kept if it is that client's newest; it is
    /// on disk once anything queued after it is (see [`ChargeWriter::written`]).
    pub fn record_payment(&self, client: AccountId, voucher: SignedVoucher) {
        if self.payments.put(client, voucher) {
            // A stopped writer means a stopping proxy; the voucher stays in memory until then.
            let _ = self.queue.send(Pending::Payments);
        }
    }

    /// Queues `client` as released; it is on disk once anything queued after it is.
    pub fn record_release(&self, client: AccountId) {
        let _ = self.queue.send(Pending::Release(client));
    }

    /// Resolves once everything queued before this call is on disk.
    pub async fn written(&self) -> Result<(), StoreError> {
        let (done, written) = oneshot::channel();
        self.queue
            .send(Pending::Barrier(done))
            .map_err(|_| StoreError::WriterStopped)?;
        written.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Why the database does not take writes now, if it does not.
    pub fn failure(&self) -> WriteFailure {
        self.failure.borrow().clone()
    }
}

fn write_charges(
    mut store: BillingStore,
    pending: mpsc::Receiver<Pending>,
    waiting_payments: &PendingPayments,
    report: watch::Sender<WriteFailure>,
    totals: &ClientTotals,
) {
    loop {
        let failing = report.borrow().is_some();
        let first = if failing {
            match pending.recv_timeout(PROBE_INTERVAL) {
                Ok(first) => Some(first),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match pending.recv() {
                Ok(first) => Some(first),
                Err(_) => return,
            }
        };
        let Some(first) = first else {
            report_outcome(&report, store.probe_write());
            continue;
        };
        let mut group = vec![first];
        group.extend(pending.try_iter().take(MAX_GROUP - 1));
        let mut charges = Vec::new();
        let mut waiting = Vec::new();
        // Taken after the group: every voucher recorded before one of its charges was queued.
        let payments = waiting_payments.take();
        let mut releases = Vec::new();
        let mut barriers = Vec::new();
        for write in group {
            match write {
                Pending::Charge(charge, done) => {
                    charges.push(charge);
                    waiting.push(done);
                }
                Pending::Payments => {}
                Pending::Release(client) => releases.push(client),
                Pending::Barrier(done) => barriers.push(done),
            }
        }
        if charges.is_empty() && payments.is_empty() && releases.is_empty() {
            // Only barriers: everything before them was in earlier groups, which wrote it unless
            // the database is failing now (then a payment among them may be lost).
            let failure = report.borrow().clone();
            for done in barriers {
                let _ = done.send(match &failure {
                    None => Ok(()),
                    Some(failure) => Err(StoreError::Batch(failure.to_string())),
                });
            }
            continue;
        }
        let written = store.record(&charges, &payments);
        // Releases after the charges, in a transaction of their own: a charge's outcome never
        // depends on them; whoever waits for a release waits on a barrier.
        let released = match (&written, releases.is_empty()) {
            (Ok(_), false) => store.record_releases(&releases),
            _ => Ok(()),
        };
        match written {
            Ok(results) => {
                report_outcome(
                    &report,
                    released
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| StoreError::Batch(e.to_string())),
                );
                totals.add(
                    charges
                        .iter()
                        .zip(&results)
                        .filter(|(_, result)| result.is_ok())
                        .map(|(charge, _)| (charge.client, charge.client_price)),
                );
                for (done, result) in waiting.into_iter().zip(results) {
                    let _ = done.send(result);
                }
                for done in barriers {
                    let _ = done.send(match &released {
                        Ok(()) => Ok(()),
                        Err(error) => Err(StoreError::Batch(error.to_string())),
                    });
                }
            }
            Err(error) => {
                let message = error.to_string();
                report_outcome(&report, Err(error));
                for done in waiting {
                    let _ = done.send(Err(StoreError::Batch(message.clone())));
                }
                for done in barriers {
                    let _ = done.send(Err(StoreError::Batch(message.clone())));
                }
            }
        }
    }
}

/// Publishes whether the last write succeeded; logs each change once.
fn report_outcome(report: &watch::Sender<WriteFailure>, outcome: Result<(), StoreError>) {
    report.send_if_modified(|failure| match (&outcome, failure.is_some()) {
        (Ok(()), true) => {
            tracing::warn!("the proxy database takes writes again; accepting requests");
            *failure = None;
            true
        }
        (Err(error), false) => {
            tracing::error!(%error, "the proxy database does not take writes; refusing requests until it does");
            *failure = Some(error.to_string().into());
            true
        }
        _ => false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::charge;

    #[tokio::test]
    async fn a_charge_is_queued_when_recorded_not_when_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ChargeWriter::spawn(&dir.path().join("proxy.sqlite3")).unwrap();
        // Never polled: the charge is written all the same, and before what is queued after it.
        drop(writer.record(charge(4, 9, 20)));
        writer.written().await.unwrap();
        assert_eq!(writer.charged(&AccountId([4; 32])), 20);
        // Awaited, it resolves only once the charge is counted (on disk).
        let written = writer.record(charge(4, 9, 5));
        written.await.unwrap();
        assert_eq!(writer.charged(&AccountId([4; 32])), 25);
    }

    #[tokio::test]
    async fn a_payment_is_on_disk_once_a_later_write_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sqlite3");
        let writer = ChargeWriter::spawn(&path).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let client = AccountId::from(&key);
        let pay = |total, seqno| {
            cocoon_money::Voucher::client_pay(
                &key,
                cocoon_money::VoucherIds::accounts(AccountId([7; 32]), AccountId::from(&key)),
                total,
                seqno,
            )
        };
        let stored = || {
            let store = BillingStore::open(&path).unwrap();
            let rows = store.payments().unwrap();
            rows.into_iter()
                .map(|(c, v)| (c, v.unwrap()))
                .collect::<Vec<_>>()
        };
        writer.record_payment(client, pay(10, 1));
        writer.written().await.unwrap();
        assert_eq!(stored(), vec![(client, pay(10, 1))]);
        // Batched with the charge queued after it.
        writer.record_payment(client, pay(30, 2));
        writer.record(charge(4, 9, 20)).await.unwrap();
        assert_eq!(stored(), vec![(client, pay(30, 2))]);
    }

    #[tokio::test]
    async fn a_flood_of_vouchers_waits_as_one_per_client_and_the_newest_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sqlite3");
        let writer = ChargeWriter::spawn(&path).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let client = AccountId::from(&key);
        let ids = cocoon_money::VoucherIds::accounts(AccountId([7; 32]), client);
        let pay = |seqno| cocoon_money::Voucher::client_pay(&key, ids, 10 * seqno, seqno);
        let newest = pay(10_000);
        for seqno in 1..=10_000 {
            writer.record_payment(client, pay(seqno));
            // However fast they come, one voucher per client waits.
            assert!(writer.payments.len() <= 1);
        }
        // An older one arriving late never replaces a newer one waiting or written.
        writer.record_payment(client, pay(3));
        writer.written().await.unwrap();
        let stored = BillingStore::open(&path).unwrap().payments().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].1.as_ref().unwrap(), &newest);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_charges_share_commits_and_each_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sqlite3");
        let writer = Arc::new(ChargeWriter::spawn(&path).unwrap());
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(
                    async move { writer.record(charge((i % 3) as u8, 9, 10)).await.unwrap() },
                )
            })
            .collect();
        let mut seqnos = Vec::new();
        for task in tasks {
            seqnos.push(task.await.unwrap());
        }
        seqnos.sort_unstable();
        assert_eq!(seqnos, (1..=200).collect::<Vec<_>>());
        assert_eq!(writer.failure(), None);
        // Each client's total in memory is what was committed.
        let in_memory: Vec<Amount> = (0..3u8)
            .map(|client| writer.charged(&AccountId([client; 32])))
            .collect();
        drop(writer);
        let store = BillingStore::open(&path).unwrap();
        assert_eq!(store.position().unwrap().0, 200);
        assert_eq!(store.worker(&AccountId([9; 32])).unwrap().amount, 200 * 8);
        let committed: Vec<Amount> = store
            .clients()
            .unwrap()
            .iter()
            .map(|(_, t)| t.amount)
            .collect();
        assert_eq!(committed.iter().sum::<Amount>(), 2000);
        assert_eq!(in_memory, committed);
        // A writer started on the database again knows every total.
        let reopened = ChargeWriter::spawn(&path).unwrap();
        assert_eq!(reopened.charged(&AccountId([1; 32])), committed[1]);
    }
}
