//! Countersigning answers' receipts: the worker's signed half arrives in its last trailers; the
//! proxy checks that it is the worker's and says what the proxy saw (usage, charge, prices,
//! model, image), then adds its own signature, and the client gets the full receipt.
//!
//! A worker's receipt that fails these checks is not passed on (and logged): the answer and its
//! charge stand on the usage trailer, as before receipts existed.
//!
//! A worker signs the answers it finishes together as one batch (the root of their Merkle tree),
//! so the proxy's countersignature, which covers that root and the worker's signature, is the same
//! for every answer of the batch: it is made once and kept for the batch's other answers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use cocoon_money::{Amount, Prices};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::link::per_request;
use cocoon_node::registry::LivePolicy;
use cocoon_proto::TokenUsage;
use cocoon_receipt::{AnswerRecord, Countersignature, ReceiptError, WorkerReceipt};
use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::routing::WorkerLink;

/// One batch in this many (the first of each link included) has its worker signature checked.
const SIGNATURE_SPOT_CHECK: u64 = 64;
/// Countersignatures kept for the other answers of their batches: more than the batches a
/// proxy's workers finish at once.
const RECENT_COUNTERSIGNATURES: usize = 64;

/// Checks and countersigns workers' receipts with this proxy's attested key.
pub struct Countersigner {
    /// This proxy's identity (its current key signs).
    trust: Arc<NodeTrust>,
    /// The worker policy, for a receipt signed with a certificate newer than its link's.
    worker_policy: LivePolicy,
    /// The latest countersignatures, newest last.
    recent: Mutex<VecDeque<Recent>>,
}

/// A countersignature made for one answer of a batch, for its other answers.
#[derive(Clone)]
struct Recent {
    /// What it covers ([`WorkerReceipt::countersigned_message`]).
    message: Vec<u8>,
    /// The proxy's signature (hex).
    signature: String,
    /// The certificate of the key that made it, as a trailer value.
    certificate: HeaderValue,
    /// SHA-256 of that certificate's DER.
    fingerprint: [u8; 32],
}

/// Why a worker's receipt is not countersigned.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptRefused {
    /// The receipt does not decode or its signature does not verify.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// Signed by a key that is not the worker's.
    #[error("signed by a key that is not the worker's: {0}")]
    NotTheWorker(String),
    /// The receipt says something other than what the proxy saw.
    #[error("the receipt's {field} is {receipt}, the proxy saw {seen}")]
    Disagrees {
        /// Which field.
        field: &'static str,
        /// What the receipt says.
        receipt: String,
        /// What the proxy saw.
        seen: String,
    },
}

/// What the proxy saw of one answer, for comparing with its receipt.
pub struct Seen<'a> {
    /// The worker that served it.
    pub worker: &'a WorkerLink,
    /// The request id the proxy sent it (empty without one).
    pub request_id: &'a str,
    /// The usage trailer.
    pub usage: &'a TokenUsage,
    /// What the client was charged.
    pub charge: Amount,
    /// The prices it was billed at.
    pub prices: &'a Prices,
}

/// The trailers carrying a countersigned receipt to the client.
pub struct Countersigned {
    /// `x-cocoon-receipt-record`.
    pub record: HeaderValue,
    /// `x-cocoon-receipt-worker-certificate`, passed on as the worker sent it.
    pub worker_certificate: HeaderValue,
    /// `x-cocoon-receipt-proxy-certificate`.
    pub proxy_certificate: HeaderValue,
    /// SHA-256 of the proxy certificate's DER, which a client that holds it names
    /// (`x-cocoon-held-certificate`).
    pub proxy_fingerprint: [u8; 32],
    /// SHA-256 of the worker certificate's DER when it is the worker's link certificate (the
    /// one a client may hold: `x-cocoon-held-worker-certificates`).
    pub worker_fingerprint: Option<[u8; 32]>,
}

impl Countersigner {
    /// A countersigner signing with `trust`'s key, taking renewed worker certificates under
    /// `worker_policy`.
    pub fn new(trust: Arc<NodeTrust>, worker_policy: LivePolicy) -> Self {
        Countersigner {
            trust,
            worker_policy,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_COUNTERSIGNATURES)),
        }
    }

    /// The countersignature already made over `message`, if it is recent.
    fn recent(&self, message: &[u8]) -> Option<Recent> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().find(|c| c.message == message).cloned()
    }

    /// Signs `message` with this proxy's current key, and keeps the result for the batch.
    fn sign(&self, message: Vec<u8>) -> Result<Recent, ReceiptError> {
        let identity = self.trust.identity();
        let made = Countersignature::make(&message, &identity);
        let made = Recent {
            message,
            certificate: HeaderValue::from_str(&made.certificate)
                .map_err(|_| ReceiptError::Malformed("not a header value".into()))?,
            signature: made.signature,
            fingerprint: identity.fingerprint(),
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_COUNTERSIGNATURES {
            recent.pop_front();
        }
        recent.push_back(made.clone());
        Ok(made)
    }

    /// Checks the worker's receipt (its record and certificate trailers) against `seen`, and
    /// countersigns it.
    pub fn countersign(
        &self,
        record: &HeaderValue,
        worker_certificate: &HeaderValue,
        seen: &Seen<'_>,
    ) -> Result<Countersigned, ReceiptRefused> {
        let worker_receipt = WorkerReceipt::from_wire(ascii(record)?, ascii(worker_certificate)?)?;
        let message = worker_receipt.countersigned_message()?;
        let known = self.recent(&message);
        let peer = &seen.worker.peer;
        // The certificate text is the same answer after answer: compared with the last text found
        // to be the link's, it needs no decoding and hashing (a real TDX certificate is ~7.5 KB).
        let is_link_certificate = seen.worker.is_link_certificate(worker_certificate) || {
            let der = worker_receipt.certificate_der()?;
            let fingerprint: [u8; 32] = Sha256::digest(&der).into();
            let same = fingerprint == peer.cert_fingerprint;
            if same {
                seen.worker.remember_link_certificate(worker_certificate);
            }
            same
        };
        if is_link_certificate {
            // The receipt came over the link that this certificate's key authenticates, so it is
            // the worker's; its signature (which auditors check) is spot-checked, not checked on
            // every batch: a worker whose signatures fail is caught on its first receipt. A batch
            // already countersigned was checked, or not, on its first answer.
            if known.is_none() && seen.worker.count_receipt() % SIGNATURE_SPOT_CHECK == 0 {
                worker_receipt.check_signature(&peer.public_key)?;
            }
        } else {
            // The worker renewed its certificate since this link came up: the new one must
            // verify under today's policy and attest the same image, role and claims.
            let renewed = cocoon_ratls::verify_certificate(
                &worker_receipt.certificate_der()?,
                self.trust.verifier(),
                &self.worker_policy.current(),
                SystemTime::now(),
            )
            .map_err(|error| ReceiptRefused::NotTheWorker(error.to_string()))?;
            if renewed.image_hash != peer.image_hash || renewed.claims.role != peer.claims.role {
                return Err(ReceiptRefused::NotTheWorker(format!(
                    "its certificate attests image {} as `{}`",
                    renewed.image_hash, renewed.claims.role
                )));
            }
            // A renewal keeps the worker's claims (its wallet, model, engine); another worker's
            // certificate of the same image does not.
            if renewed.claims.attributes != peer.claims.attributes {
                return Err(ReceiptRefused::NotTheWorker(
                    "its certificate claims other attributes than the link's".into(),
                ));
            }
            // Always checked: a batch countersigned before may have come with another certificate.
            worker_receipt.check_signature(&renewed.public_key)?;
        }
        agree(&worker_receipt.answer, seen)?;
        let countersignature = match known {
            Some(known) => known,
            None => self.sign(message)?,
        };
        let record = worker_receipt.countersigned_record(&countersignature.signature);
        Ok(Countersigned {
            record: per_request(
                HeaderValue::from_str(&record)
                    .map_err(|_| ReceiptError::Malformed("not a header value".into()))?,
            ),
            worker_certificate: worker_certificate.clone(),
            proxy_certificate: countersignature.certificate,
            proxy_fingerprint: countersignature.fingerprint,
            worker_fingerprint: is_link_certificate.then_some(peer.cert_fingerprint),
        })
    }
}

fn ascii(value: &HeaderValue) -> Result<&str, ReceiptError> {
    value
        .to_str()
        .map_err(|_| ReceiptError::Malformed("a receipt trailer is not ASCII".into()))
}

/// Whether the receipt says what the proxy saw; the first difference otherwise.
fn agree(answer: &AnswerRecord, seen: &Seen<'_>) -> Result<(), ReceiptRefused> {
    let info = &seen.worker.info;
    let differ = |field: &'static str, receipt: &dyn std::fmt::Debug, saw: &dyn std::fmt::Debug| {
        Err(ReceiptRefused::Disagrees {
            field,
            receipt: format!("{receipt:?}"),
            seen: format!("{saw:?}"),
        })
    };
    if answer.request_id != seen.request_id {
        return differ("request id", &answer.request_id, &seen.request_id);
    }
    if answer.usage != *seen.usage {
        return differ("usage", &answer.usage, seen.usage);
    }
    if answer.charge != seen.charge {
        return differ("charge", &answer.charge, &seen.charge);
    }
    if answer.prices != *seen.prices {
        return differ("prices", &answer.prices, seen.prices);
    }
    if answer.coefficient != info.coefficient {
        return differ("coefficient", &answer.coefficient, &info.coefficient);
    }
    if answer.model != info.model {
        return differ("model", &answer.model, &info.model);
    }
    if answer.model_hash != info.model_hash {
        return differ("model hash", &answer.model_hash, &info.model_hash);
    }
    if answer.worker_image_hash != seen.worker.peer.image_hash {
        return differ(
            "worker image",
            &answer.worker_image_hash,
            &seen.worker.peer.image_hash,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cocoon_money::Hash32;
    use cocoon_node::attestation::AttestationArgs;
    use cocoon_proto::{headers, WorkerInfo};
    use cocoon_tee::{AttestationKind, Policy};

    use super::*;
    use crate::queue::QueueConfig;
    use crate::routing::tests::sender;
    use crate::routing::Routing;
    use cocoon_receipt::Receipt;

    async fn trust(role: &str, wallet: &str) -> Arc<NodeTrust> {
        let args = AttestationArgs {
            tee: AttestationKind::Fake,
            image_label: format!("test-{role}"),
            cert_lifetime_secs: 3600,
            pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
        };
        let claims = BTreeMap::from([("wallet".to_owned(), wallet.to_owned())]);
        NodeTrust::new(&args, role, claims).await.unwrap()
    }

    /// A proxy's countersigner, and the link of a worker `worker` attested as.
    async fn linked(worker: &NodeTrust) -> (Countersigner, Arc<WorkerLink>) {
        let policy = Policy::any_image(AttestationKind::Fake);
        let peer = cocoon_ratls::verify_certificate(
            worker.identity().certificate_der(),
            worker.verifier(),
            &policy,
            SystemTime::now(),
        )
        .unwrap();
        let info = WorkerInfo {
            protocol_version: cocoon_proto::PROTOCOL_VERSION,
            model: "m".into(),
            model_hash: None,
            coefficient: 1000,
            max_active: 1,
            engine: Some(cocoon_proto::EngineKind::Url),
            honours: cocoon_proto::EngineKind::Url.honours(),
            context_length: None,
            started_at: 0,
        };
        let routing = Arc::new(Routing::new(QueueConfig::default()));
        let link = routing.add(info, peer, sender().await);
        let countersigner = Countersigner::new(
            trust("proxy", "0").await,
            LivePolicy::fixed("worker", policy),
        );
        (countersigner, link)
    }

    const USAGE: TokenUsage = TokenUsage {
        prompt_tokens: 3,
        completion_tokens: 5,
        cached_tokens: 0,
        reasoning_tokens: 0,
    };

    /// `signer`'s receipt trailers for request `request_id`, served by `link`'s worker.
    fn receipt(
        signer: &NodeTrust,
        link: &WorkerLink,
        request_id: &str,
    ) -> (HeaderValue, HeaderValue) {
        let signed = WorkerReceipt::sign(record(link, request_id), &signer.identity());
        trailers(&signed)
    }

    fn trailers(signed: &WorkerReceipt) -> (HeaderValue, HeaderValue) {
        let (record, certificate) = signed.to_wire();
        (
            HeaderValue::from_str(&record).unwrap(),
            HeaderValue::from_str(certificate).unwrap(),
        )
    }

    /// The record of request `request_id`, served by `link`'s worker.
    fn record(link: &WorkerLink, request_id: &str) -> AnswerRecord {
        let prices = Prices::default();
        AnswerRecord {
            request_id: request_id.into(),
            issued_at: cocoon_receipt::unix_now(),
            model: "m".into(),
            model_hash: None,
            worker_image_hash: link.peer.image_hash,
            request_sha256: Hash32([1; 32]),
            response_sha256: Hash32([2; 32]),
            usage: USAGE,
            coefficient: 1000,
            charge: cocoon_money::price(&USAGE, 1000, &prices)
                .unwrap()
                .client_price,
            prices,
        }
    }

    fn seen<'a>(link: &'a WorkerLink, prices: &'a Prices) -> Seen<'a> {
        Seen {
            worker: link,
            request_id: "r1",
            usage: &USAGE,
            charge: cocoon_money::price(&USAGE, 1000, prices)
                .unwrap()
                .client_price,
            prices,
        }
    }

    /// The full receipt a client reads from `countersigned`'s trailers.
    fn read_back(countersigned: &Countersigned) -> Receipt {
        Receipt::from_wire(
            countersigned.record.to_str().unwrap(),
            countersigned.worker_certificate.to_str().unwrap(),
            countersigned.proxy_certificate.to_str().unwrap(),
        )
        .unwrap()
    }

    /// Checks `receipt`'s two signatures with `worker`'s key and `countersigner`'s.
    fn verify_signatures(receipt: &Receipt, worker: &NodeTrust, countersigner: &Countersigner) {
        receipt
            .signatures(
                &worker.identity().signing_key().verifying_key(),
                &countersigner.trust.identity().signing_key().verifying_key(),
            )
            .unwrap()
            .verify()
            .unwrap();
    }

    #[tokio::test]
    async fn the_workers_receipt_is_countersigned_again_and_again() {
        let worker = trust("worker", "1").await;
        let (countersigner, link) = linked(&worker).await;
        let prices = Prices::default();
        for _ in 0..3 {
            let (record, certificate) = receipt(&worker, &link, "r1");
            let signed = countersigner
                .countersign(&record, &certificate, &seen(&link, &prices))
                .unwrap();
            let receipt = read_back(&signed);
            verify_signatures(&receipt, &worker, &countersigner);
        }
    }

    #[tokio::test]
    async fn the_answers_of_one_batch_share_one_countersignature() {
        let worker = trust("worker", "1").await;
        let (countersigner, link) = linked(&worker).await;
        let prices = Prices::default();
        let ids = ["a", "b", "c"];
        let records = ids.iter().map(|id| record(&link, id)).collect();
        let batch = WorkerReceipt::sign_batch(records, &worker.identity());
        let mut proxy_signatures = Vec::new();
        for (id, signed) in ids.iter().zip(&batch) {
            let (record, certificate) = trailers(signed);
            let seen = Seen {
                request_id: id,
                ..seen(&link, &prices)
            };
            let countersigned = countersigner
                .countersign(&record, &certificate, &seen)
                .unwrap();
            let receipt = read_back(&countersigned);
            verify_signatures(&receipt, &worker, &countersigner);
            proxy_signatures.push(receipt.proxy_signature);
        }
        assert!(proxy_signatures.iter().all(|s| *s == proxy_signatures[0]));
        // An answer whose proof does not lead to the batch's root is not countersigned with it.
        let mut moved = batch[1].clone();
        moved.batch.as_mut().unwrap().index = 2;
        let (record, certificate) = trailers(&moved);
        let seen = Seen {
            request_id: "b",
            ..seen(&link, &prices)
        };
        let countersigned = countersigner.countersign(&record, &certificate, &seen);
        if let Ok(countersigned) = countersigned {
            let receipt = read_back(&countersigned);
            assert_ne!(receipt.proxy_signature, proxy_signatures[0]);
        }
    }

    #[tokio::test]
    async fn a_receipt_for_another_request_is_refused() {
        let worker = trust("worker", "1").await;
        let (countersigner, link) = linked(&worker).await;
        let prices = Prices::default();
        let (record, certificate) = receipt(&worker, &link, "r2");
        let refused = countersigner
            .countersign(&record, &certificate, &seen(&link, &prices))
            .err()
            .unwrap();
        assert!(
            matches!(
                refused,
                ReceiptRefused::Disagrees {
                    field: "request id",
                    ..
                }
            ),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn another_workers_certificate_of_the_same_image_is_refused() {
        let worker = trust("worker", "1").await;
        let other = trust("worker", "2").await;
        let (countersigner, link) = linked(&worker).await;
        let prices = Prices::default();
        // The link's certificate is known first; then a receipt in another worker's name.
        let (record, certificate) = receipt(&worker, &link, "r1");
        countersigner
            .countersign(&record, &certificate, &seen(&link, &prices))
            .unwrap();
        let (record, certificate) = receipt(&other, &link, "r1");
        let refused = countersigner
            .countersign(&record, &certificate, &seen(&link, &prices))
            .err()
            .unwrap();
        assert!(
            matches!(refused, ReceiptRefused::NotTheWorker(_)),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_first_receipt_signed_by_another_key_under_the_links_certificate_is_refused() {
        let worker = trust("worker", "1").await;
        let other = trust("worker", "1").await;
        let (countersigner, link) = linked(&worker).await;
        let prices = Prices::default();
        let (record, _) = receipt(&other, &link, "r1");
        let (_, certificate) = receipt(&worker, &link, "r1");
        let refused = countersigner
            .countersign(&record, &certificate, &seen(&link, &prices))
            .err()
            .unwrap();
        assert!(matches!(refused, ReceiptRefused::Receipt(_)), "{refused}");
    }

    #[tokio::test]
    async fn a_record_without_its_certificate_names_the_links_once_a_receipt_showed_it() {
        use crate::relay::take_worker_receipt;
        let worker = trust("worker", "1").await;
        let (countersigner, link) = linked(&worker).await;
        let prices = Prices::default();
        let trailers = |with_certificate: bool| {
            let (record, certificate) = receipt(&worker, &link, "r1");
            let mut map = http::HeaderMap::new();
            map.insert(headers::RECEIPT_RECORD, record);
            if with_certificate {
                map.insert(headers::RECEIPT_WORKER_CERTIFICATE, certificate);
            }
            map
        };
        let asked = || {
            let mut request = http::HeaderMap::new();
            let prices = HeaderValue::from_static("{}");
            crate::forward::ask_for_receipt(&link, &prices, &mut request);
            request.get(headers::HELD_CERTIFICATE).cloned()
        };
        // Nothing held yet: the worker is not told so, and a record alone is no receipt.
        assert_eq!(asked(), None);
        assert!(take_worker_receipt(&mut trailers(false), &link).is_none());
        let (record, certificate) = take_worker_receipt(&mut trailers(true), &link).unwrap();
        countersigner
            .countersign(&record, &certificate, &seen(&link, &prices))
            .unwrap();
        // Now held: the worker is told which (the digest its own identity has), may leave it
        // out, and the client still gets it.
        let digest = Hash32(worker.identity().fingerprint()).to_string();
        assert_eq!(asked().unwrap(), digest.as_str());
        let (record, held) = take_worker_receipt(&mut trailers(false), &link).unwrap();
        assert_eq!(held, certificate);
        let countersigned = countersigner
            .countersign(&record, &held, &seen(&link, &prices))
            .unwrap();
        assert_eq!(countersigned.worker_certificate, certificate);
        verify_signatures(&read_back(&countersigned), &worker, &countersigner);
    }

    #[tokio::test]
    async fn certificates_the_client_holds_are_left_out_of_its_receipts() {
        use crate::relay::{put_receipt, ClientHolds};
        let worker = trust("worker", "1").await;
        let (countersigner, link) = linked(&worker).await;
        let prices = Prices::default();
        let proxy = countersigner.trust.identity().fingerprint();
        let linked_worker = link.peer.cert_fingerprint;
        let holds = |proxy, workers| ClientHolds { proxy, workers };
        let cases = [
            (holds(None, vec![]), true, true),
            (holds(Some([7; 32]), vec![[7; 32]]), true, true),
            (holds(Some(proxy), vec![]), false, true),
            (holds(None, vec![[7; 32], linked_worker]), true, false),
            (holds(Some(proxy), vec![linked_worker]), false, false),
        ];
        for (client_holds, proxy_sent, worker_sent) in cases {
            let (record, certificate) = receipt(&worker, &link, "r1");
            let countersigned = countersigner
                .countersign(&record, &certificate, &seen(&link, &prices))
                .unwrap();
            assert_eq!(countersigned.proxy_fingerprint, proxy);
            assert_eq!(countersigned.worker_fingerprint, Some(linked_worker));
            let mut trailers = http::HeaderMap::new();
            put_receipt(&mut trailers, countersigned, &client_holds);
            assert!(trailers.contains_key(headers::RECEIPT_RECORD));
            let has = |name| trailers.contains_key(name);
            assert_eq!(
                has(headers::RECEIPT_PROXY_CERTIFICATE),
                proxy_sent,
                "{client_holds:?}"
            );
            assert_eq!(
                has(headers::RECEIPT_WORKER_CERTIFICATE),
                worker_sent,
                "{client_holds:?}"
            );
            let digest = trailers.get(headers::RECEIPT_WORKER_CERTIFICATE_SHA256);
            let expected = Hash32(linked_worker).to_string();
            assert_eq!(
                digest.map(|d| d == expected.as_str()),
                (!worker_sent).then_some(true)
            );
        }
    }

    #[test]
    fn what_a_client_holds_is_read_strictly() {
        use crate::relay::ClientHolds;
        let mut request = http::HeaderMap::new();
        let digest = Hash32([1; 32]).to_string();
        request.insert(headers::HELD_CERTIFICATE, digest.parse().unwrap());
        let two = format!("{digest},{}", Hash32([2; 32]));
        request.insert(headers::HELD_WORKER_CERTIFICATES, two.parse().unwrap());
        let holds = ClientHolds::of(&request);
        assert_eq!(holds.proxy, Some([1; 32]));
        assert_eq!(holds.workers, vec![[1; 32], [2; 32]]);
        let most = vec![digest.as_str(); headers::MAX_HELD_WORKER_CERTIFICATES].join(",");
        request.insert(headers::HELD_WORKER_CERTIFICATES, most.parse().unwrap());
        let holds = ClientHolds::of(&request).workers;
        assert_eq!(holds.len(), headers::MAX_HELD_WORKER_CERTIFICATES);
        // One malformed digest, or one too many (however many more), and the list counts as none.
        for list in [
            vec![digest.as_str(); 10_000].join(","),
            format!("{digest},nothex"),
            vec![digest.as_str(); headers::MAX_HELD_WORKER_CERTIFICATES + 1].join(","),
        ] {
            request.insert(headers::HELD_WORKER_CERTIFICATES, list.parse().unwrap());
            assert!(ClientHolds::of(&request).workers.is_empty());
        }
    }
}
