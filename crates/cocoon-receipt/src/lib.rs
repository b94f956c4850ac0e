//! Receipts: for every answer, the worker signs what it served — the SHA-256 of the request body
//! and of the answer's text, the model's name and weights hash, its image hash, the token usage
//! and the charge — with the key of its attested RA-TLS certificate, and the proxy countersigns
//! with its own. Both certificates travel inside the receipt, so anyone can check it offline:
//! the quotes inside the certificates say what code held the keys, the signatures say those keys
//! vouched for this answer and this price ([`Receipt::verify`]).
//!
//! A worker signs answers in batches: the answers it finishes together are the leaves of a
//! Merkle tree ([`merkle`]; a leaf is the JSON of an [`AnswerRecord`], its fields in declaration
//! order as `serde_json` writes them), and both signatures cover the tree's root after a
//! domain-separation prefix; each receipt carries its answer's inclusion proof, so it is checked
//! alone, offline, like one signed by itself. The proxy's signature also covers the worker's, so
//! neither can be swapped. (Version 1 receipts, still read, signed each record itself.)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
mod covered;
pub mod merkle;
mod signatures;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use cocoon_money::{price, Amount, Hash32, Prices, PricingError, Registry};
use cocoon_proto::TokenUsage;
use cocoon_ratls::{inspect_certificate, verify_certificate, Identity, PeerIdentity, RatlsError};
use cocoon_tee::{AttestationKind, ImageHash, Policy, Verifier};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

pub use answer::AnswerText;
use covered::{check_signature, record_bytes, sign, unreadable_version, Covered};
pub use merkle::Inclusion;
pub use signatures::{verify_batch, ReceiptSignatures};

/// The receipt format this crate writes: 2, batches signed by their Merkle root. It also reads
/// and verifies version 1, whose signatures cover the record itself.
pub const RECEIPT_VERSION: u32 = 2;

/// What a receipt says about one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRecord {
    /// The request's id (`x-cocoon-request-id`), as the worker saw it.
    pub request_id: String,
    /// When the worker finished the answer (Unix seconds); certificates are checked at this time.
    pub issued_at: u64,
    /// The model name served.
    pub model: String,
    /// SHA-256 of the model's weights (hex), when the engine knows it.
    pub model_hash: Option<String>,
    /// The worker's image hash.
    pub worker_image_hash: ImageHash,
    /// SHA-256 of the request body the worker received (the app's body, less the Cocoon-only
    /// fields `max_coefficient` and `timeout` if it had them).
    pub request_sha256: Hash32,
    /// SHA-256 of the answer's text (see [`AnswerText`]).
    pub response_sha256: Hash32,
    /// Tokens counted by the engine.
    pub usage: TokenUsage,
    /// The worker's price coefficient (1000 = 1.0×).
    pub coefficient: u32,
    /// The prices the proxy billed at.
    pub prices: Prices,
    /// What the client was charged (nano-units): [`price`] of `usage` at `coefficient`.
    pub charge: Amount,
}

/// The worker's half: the record, its certificate and its signature. Travels from worker to proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerReceipt {
    /// Format version ([`RECEIPT_VERSION`]).
    pub version: u32,
    /// What is vouched for.
    pub answer: AnswerRecord,
    /// Where the answer sits in the batch whose root the signatures cover (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Inclusion>,
    /// The worker's RA-TLS certificate (DER, base64).
    pub worker_certificate: String,
    /// The worker's Ed25519 signature (hex) over the batch's root (version 1: the record).
    pub worker_signature: String,
}

/// A proxy's signature over a batch's [`WorkerReceipt::countersigned_message`], made once for
/// all the batch's answers.
#[derive(Debug, Clone)]
pub struct Countersignature {
    /// The signing proxy's RA-TLS certificate (DER, base64).
    pub certificate: String,
    /// The signature (hex).
    pub signature: String,
}

impl Countersignature {
    /// Signs `message` with `identity` (the proxy's current key and certificate).
    pub fn make(message: &[u8], identity: &Identity) -> Self {
        Countersignature {
            certificate: STANDARD.encode(identity.certificate_der()),
            signature: sign(identity, message),
        }
    }
}

/// A full receipt: the worker's half countersigned by the proxy. Travels from proxy to client and
/// app (`x-cocoon-receipt`, or the `cocoon.receipt` event ending a stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Format version ([`RECEIPT_VERSION`]).
    pub version: u32,
    /// What is vouched for.
    pub answer: AnswerRecord,
    /// Where the answer sits in the batch whose root the signatures cover (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Inclusion>,
    /// The worker's RA-TLS certificate (DER, base64).
    pub worker_certificate: String,
    /// The worker's Ed25519 signature (hex) over the batch's root (version 1: the record).
    pub worker_signature: String,
    /// The proxy's RA-TLS certificate (DER, base64).
    pub proxy_certificate: String,
    /// The proxy's Ed25519 signature (hex) over the root (version 1: the record) and the
    /// worker's signature.
    pub proxy_signature: String,
}

/// Why a receipt could not be made, read, or believed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// Not a receipt (bad JSON, base64 or hex, another version).
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// A certificate does not verify (structure, signature, validity at `issued_at`, quote,
    /// policy).
    #[error("{which} certificate: {source}")]
    Certificate {
        /// `worker` or `proxy`.
        which: &'static str,
        /// Why.
        source: RatlsError,
    },
    /// `issued_at` is not a time this system can represent.
    #[error("the receipt's issued_at ({0}) is out of range")]
    IssuedAtOutOfRange(u64),
    /// A certificate belongs to a node of another role.
    #[error("the {which} certificate attests a `{role}`")]
    WrongRole {
        /// `worker` or `proxy`.
        which: &'static str,
        /// The role it names.
        role: String,
    },
    /// A signature does not verify with its certificate's key.
    #[error("the {0} signature does not match the receipt")]
    BadSignature(&'static str),
    /// The record says something the worker's certificate contradicts.
    #[error("the receipt's {field} is {receipt} but the worker's certificate says {certificate}")]
    ContradictsCertificate {
        /// Which field.
        field: &'static str,
        /// What the record says.
        receipt: String,
        /// What the certificate says.
        certificate: String,
    },
    /// The charge is not what the usage costs at the stated prices.
    #[error("the receipt charges {receipt} but its usage costs {computed}")]
    WrongCharge {
        /// The stated charge.
        receipt: Amount,
        /// The recomputed one.
        computed: Amount,
    },
    /// The prices cannot price the usage.
    #[error("pricing: {0}")]
    Pricing(#[from] PricingError),
    /// The answer or request given does not hash to what the receipt says.
    #[error("the {what} hashes to {actual}, the receipt says {receipt}")]
    DigestMismatch {
        /// `response` or `request`.
        what: &'static str,
        /// The receipt's digest.
        receipt: Hash32,
        /// The given data's digest.
        actual: Hash32,
    },
    /// The registry given does not allow what served the answer.
    #[error("not allowed by the registry: {0}")]
    NotAllowed(String),
}

fn decode_certificate(text: &str, which: &'static str) -> Result<Vec<u8>, ReceiptError> {
    STANDARD
        .decode(text)
        .map_err(|e| ReceiptError::Malformed(format!("{which} certificate is not base64: {e}")))
}

impl WorkerReceipt {
    /// The worker signs `answer` alone (a batch of one) with `identity` (its current RA-TLS key
    /// and certificate).
    pub fn sign(answer: AnswerRecord, identity: &Identity) -> Self {
        let mut signed = Self::sign_batch(vec![answer], identity);
        signed.swap_remove(0)
    }

    /// The worker signs `answers` with `identity`: one signature over the root of their Merkle
    /// tree per [`merkle::MAX_BATCH`] answers, each receipt with its inclusion proof, in
    /// `answers`' order.
    pub fn sign_batch(answers: Vec<AnswerRecord>, identity: &Identity) -> Vec<Self> {
        let worker_certificate = STANDARD.encode(identity.certificate_der());
        let mut signed = Vec::with_capacity(answers.len());
        let mut answers = answers.into_iter().peekable();
        while answers.peek().is_some() {
            let batch: Vec<AnswerRecord> =
                answers.by_ref().take(merkle::MAX_BATCH as usize).collect();
            let leaves: Vec<[u8; 32]> = batch
                .iter()
                .map(|answer| merkle::leaf_hash(&record_bytes(answer)))
                .collect();
            let (root, proofs) = merkle::tree(&leaves);
            let size = leaves.len() as u32;
            let worker_signature = sign(identity, &Covered::batch(size, &root).worker_message());
            signed.extend(
                batch
                    .into_iter()
                    .zip(proofs)
                    .map(|(answer, proof)| WorkerReceipt {
                        version: RECEIPT_VERSION,
                        answer,
                        batch: Some(proof),
                        worker_certificate: worker_certificate.clone(),
                        worker_signature: worker_signature.clone(),
                    }),
            );
        }
        signed
    }

    /// The embedded certificate's key, once the signature is checked with it. The caller decides
    /// whether that key is the worker's (the proxy compares it with its link's peer).
    pub fn signer(&self) -> Result<[u8; 32], ReceiptError> {
        let der = decode_certificate(&self.worker_certificate, "worker")?;
        let contents = inspect_certificate(&der).map_err(|source| ReceiptError::Certificate {
            which: "worker",
            source,
        })?;
        self.check_signature(&contents.public_key)?;
        Ok(contents.public_key)
    }

    /// Checks the worker's signature with `key` (one the caller already trusts as the worker's,
    /// such as its link's verified key).
    pub fn check_signature(&self, key: &[u8; 32]) -> Result<(), ReceiptError> {
        let covered = Covered::of(self.version, &self.answer, self.batch.as_ref())?;
        check_signature(
            key,
            &self.worker_signature,
            &covered.worker_message(),
            "worker",
        )
    }

    /// The bytes the proxy signs to countersign this receipt: its domain, what the worker's
    /// signature covers (the batch's root), and the worker's signature. The same for every
    /// answer of a batch, so a proxy signs them once.
    pub fn countersigned_message(&self) -> Result<Vec<u8>, ReceiptError> {
        Ok(
            Covered::of(self.version, &self.answer, self.batch.as_ref())?
                .proxy_message(&self.worker_signature),
        )
    }

    /// The worker's certificate (DER).
    pub fn certificate_der(&self) -> Result<Vec<u8>, ReceiptError> {
        decode_certificate(&self.worker_certificate, "worker")
    }

    /// The wire form between nodes: the signed record (base64url JSON, for
    /// `x-cocoon-receipt-record`) and the certificate (base64, for
    /// `x-cocoon-receipt-worker-certificate`). The certificate rides apart because it is the same
    /// on every answer of a link, so HTTP/2 header compression sends it once.
    pub fn to_wire(&self) -> (String, &str) {
        let record = RecordRef {
            version: self.version,
            answer: &self.answer,
            batch: self.batch.as_ref(),
            worker_signature: &self.worker_signature,
            proxy_signature: None,
        };
        (to_header(&record), &self.worker_certificate)
    }

    /// The record trailer ([`Receipt::to_wire`]'s first part) of this receipt countersigned
    /// with `proxy_signature`, made without building the [`Receipt`].
    pub fn countersigned_record(&self, proxy_signature: &str) -> String {
        to_header(&RecordRef {
            version: self.version,
            answer: &self.answer,
            batch: self.batch.as_ref(),
            worker_signature: &self.worker_signature,
            proxy_signature: Some(proxy_signature),
        })
    }

    /// Reads [`WorkerReceipt::to_wire`]'s form.
    pub fn from_wire(record: &str, worker_certificate: &str) -> Result<Self, ReceiptError> {
        let record: Record = from_header(record)?;
        Ok(WorkerReceipt {
            version: record.version,
            answer: record.answer,
            batch: record.batch,
            worker_certificate: worker_certificate.to_owned(),
            worker_signature: record.worker_signature,
        })
    }
}

/// A receipt's signed record as it travels between nodes, certificates apart.
#[derive(Serialize)]
struct RecordRef<'a> {
    version: u32,
    answer: &'a AnswerRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<&'a Inclusion>,
    worker_signature: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_signature: Option<&'a str>,
}

/// [`RecordRef`], read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    version: u32,
    answer: AnswerRecord,
    #[serde(default)]
    batch: Option<Inclusion>,
    worker_signature: String,
    #[serde(default)]
    proxy_signature: Option<String>,
}

impl Receipt {
    /// The proxy countersigns a worker's receipt (whose signature it has checked) with `identity`;
    /// fails when the receipt's batch proof does not reach a root.
    pub fn countersign(worker: WorkerReceipt, identity: &Identity) -> Result<Self, ReceiptError> {
        let made = Countersignature::make(&worker.countersigned_message()?, identity);
        Ok(Self::countersigned(
            worker,
            made.certificate,
            made.signature,
        ))
    }

    /// A worker's receipt with the proxy's certificate (base64 DER) and its signature (hex) over
    /// [`WorkerReceipt::countersigned_message`], made earlier for another answer of the batch.
    pub fn countersigned(
        worker: WorkerReceipt,
        proxy_certificate: String,
        proxy_signature: String,
    ) -> Self {
        Receipt {
            version: worker.version,
            answer: worker.answer,
            batch: worker.batch,
            worker_certificate: worker.worker_certificate,
            worker_signature: worker.worker_signature,
            proxy_certificate,
            proxy_signature,
        }
    }

    /// Encodes for a header value: base64url (no padding) of the JSON (what apps get in
    /// `x-cocoon-receipt`).
    pub fn to_header(&self) -> String {
        to_header(self)
    }

    /// The wire form between nodes: the signed record (base64url JSON) and the two certificates
    /// (base64), for `x-cocoon-receipt-record`, `-worker-certificate` and `-proxy-certificate`.
    pub fn to_wire(&self) -> (String, &str, &str) {
        let record = RecordRef {
            version: self.version,
            answer: &self.answer,
            batch: self.batch.as_ref(),
            worker_signature: &self.worker_signature,
            proxy_signature: Some(&self.proxy_signature),
        };
        (
            to_header(&record),
            &self.worker_certificate,
            &self.proxy_certificate,
        )
    }

    /// Reads [`Receipt::to_wire`]'s form.
    pub fn from_wire(
        record: &str,
        worker_certificate: &str,
        proxy_certificate: &str,
    ) -> Result<Self, ReceiptError> {
        let record: Record = from_header(record)?;
        let proxy_signature = record
            .proxy_signature
            .ok_or_else(|| ReceiptError::Malformed("the record has no proxy signature".into()))?;
        Ok(Receipt {
            version: record.version,
            answer: record.answer,
            batch: record.batch,
            worker_certificate: worker_certificate.to_owned(),
            worker_signature: record.worker_signature,
            proxy_certificate: proxy_certificate.to_owned(),
            proxy_signature,
        })
    }

    /// A receipt certificate's DER from its base64 text.
    pub fn decode_certificate(text: &str) -> Result<Vec<u8>, ReceiptError> {
        decode_certificate(text, "receipt")
    }

    /// Reads a receipt given as JSON or as a header value.
    pub fn parse(text: &str) -> Result<Self, ReceiptError> {
        let text = text.trim();
        if text.starts_with('{') {
            serde_json::from_str(text).map_err(|e| ReceiptError::Malformed(e.to_string()))
        } else {
            from_header(text)
        }
    }

    /// Checks everything a receipt claims, offline:
    /// both certificates verify (structure, self-signature, validity at `issued_at`, the quote,
    /// `expect.min_kind`), name the roles `worker` and `proxy`, and their keys made the two
    /// signatures; the worker's certificate agrees with the record's model, model hash and image
    /// hash; the charge is the price of the usage; and, when given, the answer's and request's
    /// digests and the registry's allow-lists.
    pub fn verify(&self, expect: &Expectations<'_>) -> Result<VerifiedReceipt, ReceiptError> {
        Covered::of(self.version, &self.answer, self.batch.as_ref())?;
        let at = UNIX_EPOCH
            .checked_add(Duration::from_secs(self.answer.issued_at))
            .ok_or(ReceiptError::IssuedAtOutOfRange(self.answer.issued_at))?;
        let policy = Policy::any_image(expect.min_kind);
        let certificate = |text: &str, which: &'static str, role: &str| {
            let der = decode_certificate(text, which)?;
            let peer = verify_certificate(&der, expect.verifier, &policy, at)
                .map_err(|source| ReceiptError::Certificate { which, source })?;
            if peer.claims.role != role {
                return Err(ReceiptError::WrongRole {
                    which,
                    role: peer.claims.role.clone(),
                });
            }
            Ok(peer)
        };
        let worker = certificate(&self.worker_certificate, "worker", "worker")?;
        let proxy = certificate(&self.proxy_certificate, "proxy", "proxy")?;
        self.verify_with(&worker, &proxy)?;
        let digests = [
            (
                "response",
                expect.response_sha256,
                self.answer.response_sha256,
            ),
            ("request", expect.request_sha256, self.answer.request_sha256),
        ];
        for (what, actual, receipt) in digests {
            if let Some(actual) = actual.map(Hash32) {
                if actual != receipt {
                    return Err(ReceiptError::DigestMismatch {
                        what,
                        receipt,
                        actual,
                    });
                }
            }
        }
        if let Some(registry) = expect.registry {
            check_registry(registry, &self.answer, &worker, &proxy)?;
        }
        Ok(VerifiedReceipt { worker, proxy })
    }

    /// The checks of [`Receipt::verify`] that follow from the two certificates once they are
    /// verified (`worker` and `proxy`, e.g. from a cache of verified certificates): the two
    /// signatures, the record against the worker's certificate, and the charge against the usage
    /// and the stated prices.
    pub fn verify_with(
        &self,
        worker: &PeerIdentity,
        proxy: &PeerIdentity,
    ) -> Result<(), ReceiptError> {
        let key = |peer: &PeerIdentity, which| {
            VerifyingKey::from_bytes(&peer.public_key)
                .map_err(|_| ReceiptError::BadSignature(which))
        };
        self.signatures(&key(worker, "worker")?, &key(proxy, "proxy")?)?
            .verify()?;
        self.check_record(worker)
    }

    /// The receipt's two signatures with the bytes they cover, to be checked with `worker`'s and
    /// `proxy`'s keys (those of its two certificates): alone ([`ReceiptSignatures::verify`]) or
    /// with other receipts' ([`verify_batch`]).
    pub fn signatures(
        &self,
        worker: &VerifyingKey,
        proxy: &VerifyingKey,
    ) -> Result<ReceiptSignatures, ReceiptError> {
        let covered = Covered::of(self.version, &self.answer, self.batch.as_ref())?;
        ReceiptSignatures::new(
            (worker, covered.worker_message(), &self.worker_signature),
            (
                proxy,
                covered.proxy_message(&self.worker_signature),
                &self.proxy_signature,
            ),
        )
    }

    /// The checks of [`Receipt::verify_with`] other than the signatures: the record against the
    /// worker's (verified) certificate, and the charge against the usage and the stated prices.
    pub fn check_record(&self, worker: &PeerIdentity) -> Result<(), ReceiptError> {
        if !matches!(self.version, 1 | RECEIPT_VERSION) {
            return Err(unreadable_version(self.version));
        }
        self.check_against_certificate(worker)?;
        let computed = price(
            &self.answer.usage,
            self.answer.coefficient,
            &self.answer.prices,
        )?
        .client_price;
        if computed != self.answer.charge {
            return Err(ReceiptError::WrongCharge {
                receipt: self.answer.charge,
                computed,
            });
        }
        Ok(())
    }

    fn check_against_certificate(&self, worker: &PeerIdentity) -> Result<(), ReceiptError> {
        let attribute = |name: &str| worker.claims.attributes.get(name).cloned();
        let checks = [
            ("model", Some(self.answer.model.clone()), attribute("model")),
            (
                "model hash",
                self.answer.model_hash.clone(),
                attribute("model_hash"),
            ),
            (
                "image hash",
                Some(self.answer.worker_image_hash.to_string()),
                Some(worker.image_hash.to_string()),
            ),
        ];
        for (field, receipt, certificate) in checks {
            if receipt != certificate {
                let show = |v: Option<String>| v.unwrap_or_else(|| "nothing".into());
                return Err(ReceiptError::ContradictsCertificate {
                    field,
                    receipt: show(receipt),
                    certificate: show(certificate),
                });
            }
        }
        Ok(())
    }
}

/// What [`Receipt::verify`] checks beyond the receipt itself.
pub struct Expectations<'a> {
    /// Verifies the quotes inside the certificates (with TDX collateral for `tdx` quotes).
    pub verifier: &'a Verifier,
    /// The weakest attestation accepted (`tdx` for production receipts).
    pub min_kind: AttestationKind,
    /// The registry whose allow-lists the worker image, proxy image and model must be on.
    pub registry: Option<&'a Registry>,
    /// SHA-256 of the answer's text, when the auditor has the answer.
    pub response_sha256: Option<[u8; 32]>,
    /// SHA-256 of the request body, when the auditor has it.
    pub request_sha256: Option<[u8; 32]>,
}

/// What a verified receipt proved about the two nodes.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// The worker, as its certificate attests it.
    pub worker: PeerIdentity,
    /// The proxy, as its certificate attests it.
    pub proxy: PeerIdentity,
}

fn check_registry(
    registry: &Registry,
    answer: &AnswerRecord,
    worker: &PeerIdentity,
    proxy: &PeerIdentity,
) -> Result<(), ReceiptError> {
    let listed =
        |list: &[Hash32], image: ImageHash| list.is_empty() || list.contains(&Hash32(image.0));
    if !listed(&registry.worker_image_hashes, worker.image_hash) {
        return Err(ReceiptError::NotAllowed(format!(
            "worker image {}",
            worker.image_hash
        )));
    }
    if !listed(&registry.proxy_image_hashes, proxy.image_hash) {
        return Err(ReceiptError::NotAllowed(format!(
            "proxy image {}",
            proxy.image_hash
        )));
    }
    if !registry.models.is_empty() {
        let allowed = registry.models.get(&answer.model).map(Hash32::to_string);
        if allowed.is_none() || allowed != answer.model_hash {
            return Err(ReceiptError::NotAllowed(format!(
                "model `{}` with weights {}",
                answer.model,
                answer.model_hash.as_deref().unwrap_or("unknown")
            )));
        }
    }
    Ok(())
}

fn to_header<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn from_header<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ReceiptError> {
    let json = URL_SAFE_NO_PAD
        .decode(text.trim())
        .map_err(|e| ReceiptError::Malformed(format!("not base64url: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| ReceiptError::Malformed(e.to_string()))
}

/// Now as Unix seconds, for [`AnswerRecord::issued_at`].
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
