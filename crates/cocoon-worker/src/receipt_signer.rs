//! Signing receipts in batches: one Ed25519 signature over the Merkle root of the answers that end
//! together, instead of one per answer (`cocoon_receipt::merkle`); every receipt carries its
//! inclusion proof, so each is still checked alone.
//!
//! Answers that end at the same moment (queued while the signer was busy or not yet scheduled)
//! are always signed together. Beyond that, an answer that ends while no other is running is
//! signed at once, so a lone request waits for nothing; one that ends while others run waits up
//! to the batch window for them to end too, trading at most the window of latency at the end of
//! an answer for the signatures of the worker, the proxy (which countersigns the root once) and
//! the client (which checks it once). Answers are batched per proxy, so a proxy's countersignature covers only
//! answers it relayed, and no proxy learns how many answers another one got.

use std::sync::Arc;
use std::time::Duration;

use cocoon_money::AccountId;
use cocoon_node::attestation::NodeTrust;
use cocoon_node::stats::NodeStats;
use cocoon_receipt::{AnswerRecord, WorkerReceipt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};

/// Most answers signed as one batch.
const MAX_BATCH: usize = 256;

/// Which answers may share a batch: those relayed by one proxy (its voucher key), or those no
/// proxy pays for.
pub type BatchKey = Option<AccountId>;

/// Signs the receipts handed to it, batching those that end together.
pub struct ReceiptSigner {
    queue: mpsc::UnboundedSender<Waiting>,
}

/// An answer waiting for its signature.
struct Waiting {
    key: BatchKey,
    answer: AnswerRecord,
    signed: oneshot::Sender<SignedAnswer>,
}

/// A signed receipt, and the SHA-256 of the certificate it names (its signing key's).
pub struct SignedAnswer {
    /// The receipt.
    pub receipt: WorkerReceipt,
    /// SHA-256 of the DER of `receipt`'s certificate.
    pub certificate_fingerprint: [u8; 32],
}

impl ReceiptSigner {
    /// Starts the signer with `trust`'s current key, batching for up to `window` while `stats`
    /// counts other requests in flight.
    pub fn start(trust: Arc<NodeTrust>, stats: Arc<NodeStats>, window: Duration) -> Arc<Self> {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(sign_batches(waiting, trust, stats, window));
        Arc::new(ReceiptSigner { queue })
    }

    /// The signed receipt of `answer`, in a batch of `key`'s; `None` if the signer has stopped
    /// (the runtime is shutting down).
    pub async fn sign(&self, key: BatchKey, answer: AnswerRecord) -> Option<SignedAnswer> {
        let (signed, receipt) = oneshot::channel();
        self.queue
            .send(Waiting {
                key,
                answer,
                signed,
            })
            .ok()?;
        receipt.await.ok()
    }
}

async fn sign_batches(
    mut queue: mpsc::UnboundedReceiver<Waiting>,
    trust: Arc<NodeTrust>,
    stats: Arc<NodeStats>,
    window: Duration,
) {
    while let Some(first) = queue.recv().await {
        let deadline = Instant::now() + window;
        let mut batch = vec![first];
        loop {
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(waiting) => batch.push(waiting),
                    Err(_) => break,
                }
            }
            // Every request in flight is here (each holds its slot until its answer is signed):
            // nothing else can join.
            let others = usize::try_from(stats.active_requests()).unwrap_or(0);
            if batch.len() >= MAX_BATCH || others <= batch.len() {
                break;
            }
            match timeout_at(deadline, queue.recv()).await {
                Ok(Some(waiting)) => batch.push(waiting),
                Ok(None) | Err(_) => break,
            }
        }
        sign(batch, &trust);
    }
}

/// Signs `batch`, one tree per proxy, and hands each answer its receipt.
fn sign(mut batch: Vec<Waiting>, trust: &NodeTrust) {
    let identity = trust.identity();
    while let Some(key) = batch.first().map(|waiting| waiting.key) {
        let (same, rest): (Vec<Waiting>, Vec<Waiting>) =
            batch.into_iter().partition(|waiting| waiting.key == key);
        batch = rest;
        let (answers, replies): (Vec<AnswerRecord>, Vec<oneshot::Sender<SignedAnswer>>) = same
            .into_iter()
            .map(|waiting| (waiting.answer, waiting.signed))
            .unzip();
        let receipts = WorkerReceipt::sign_batch(answers, &identity);
        for (reply, receipt) in replies.into_iter().zip(receipts) {
            // An answer cut meanwhile no longer wants its receipt.
            let _ = reply.send(SignedAnswer {
                receipt,
                certificate_fingerprint: identity.fingerprint(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cocoon_money::{Hash32, Prices};
    use cocoon_node::attestation::AttestationArgs;
    use cocoon_proto::TokenUsage;
    use cocoon_tee::AttestationKind;

    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    async fn signer(window: Duration) -> (Arc<ReceiptSigner>, Arc<NodeStats>) {
        let args = AttestationArgs {
            tee: AttestationKind::Fake,
            image_label: "test-worker".into(),
            cert_lifetime_secs: 3600,
            pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
        };
        let trust = NodeTrust::new(&args, "worker", BTreeMap::new())
            .await
            .unwrap();
        let stats = NodeStats::new("worker");
        (ReceiptSigner::start(trust, stats.clone(), window), stats)
    }

    fn answer(id: &str) -> AnswerRecord {
        AnswerRecord {
            request_id: id.into(),
            issued_at: 0,
            model: "m".into(),
            model_hash: None,
            worker_image_hash: cocoon_tee::ImageHash([0; 32]),
            request_sha256: Hash32([1; 32]),
            response_sha256: Hash32([2; 32]),
            usage: TokenUsage::default(),
            coefficient: 1000,
            prices: Prices::default(),
            charge: 0,
        }
    }

    /// Fails instead of hanging if the signer waits out its (long) window.
    async fn soon<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), future)
            .await
            .expect("the signer waited for answers that were not running")
    }

    #[tokio::test]
    async fn an_answer_that_ends_alone_is_signed_at_once() {
        let (signer, stats) = signer(LONG).await;
        let _running = stats.request_started();
        let receipt = soon(signer.sign(None, answer("a"))).await.unwrap().receipt;
        let batch = receipt.batch.unwrap();
        assert_eq!((batch.index, batch.size), (0, 1));
    }

    #[tokio::test]
    async fn answers_ending_together_share_one_signature_per_proxy() {
        let (signer, stats) = signer(LONG).await;
        let _running: Vec<_> = (0..4).map(|_| stats.request_started()).collect();
        let proxy = |byte| Some(AccountId([byte; 32]));
        // The window is long, but the batch is signed as soon as every answer in flight is in it.
        let receipts = soon(futures::future::join_all([
            signer.sign(proxy(1), answer("a")),
            signer.sign(proxy(2), answer("b")),
            signer.sign(proxy(1), answer("c")),
            signer.sign(proxy(1), answer("d")),
        ]))
        .await;
        let receipts: Vec<WorkerReceipt> = receipts
            .into_iter()
            .map(|signed| signed.unwrap().receipt)
            .collect();
        let of_proxy_1 = [&receipts[0], &receipts[2], &receipts[3]];
        for (index, receipt) in of_proxy_1.iter().enumerate() {
            let batch = receipt.batch.as_ref().unwrap();
            assert_eq!((batch.index, batch.size), (index as u32, 3));
            assert_eq!(receipt.worker_signature, receipts[0].worker_signature);
        }
        // The other proxy's answer is a batch of its own.
        assert_eq!(receipts[1].batch.as_ref().unwrap().size, 1);
        assert_ne!(receipts[1].worker_signature, receipts[0].worker_signature);
        for receipt in &receipts {
            receipt.signer().unwrap();
        }
    }

    #[tokio::test]
    async fn an_answer_waits_at_most_the_window_for_others() {
        let (signer, stats) = signer(Duration::from_millis(5)).await;
        // Another request runs on and never ends.
        let _running: Vec<_> = (0..2).map(|_| stats.request_started()).collect();
        let receipt = soon(signer.sign(None, answer("a"))).await.unwrap().receipt;
        assert_eq!(receipt.batch.unwrap().size, 1);
    }
}
