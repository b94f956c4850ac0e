//! Receipts: for every answer, the worker signs what it served — the SHA-256 of the request body
//! and of the answer's text, the model's name and weights hash, its image hash, the token usage
//! and the charge — with the key of its attested RA-TLS certificate, and the proxy countersigns
//! with its own. Both certificates travel inside the receipt, so anyone can check it offline:
//! the quotes inside the certificates say what code held the keys, the signatures say those keys
//! vouched for this answer and this price ([`Receipt::verify`]).
//!
//! Signed bytes are a domain-separation prefix followed by the JSON of [`AnswerRecord`] (its
//! fields in declaration order, as `serde_json` writes them); the proxy's signature also covers
//! the worker's, so neither can be swapped.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
mod signatures;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use cocoon_money::{price, Amount, Hash32, Prices, PricingError, Registry};
use cocoon_proto::TokenUsage;
use cocoon_ratls::{inspect_certificate, verify_certificate, Identity, PeerIdentity, RatlsError};
use cocoon_tee::{AttestationKind, ImageHash, Policy, Verifier};
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};

pub use answer::AnswerText;
pub use signatures::{verify_batch, ReceiptSignatures};

/// The receipt format this crate writes and reads.
pub const RECEIPT_VERSION: u32 = 1;

const WORKER_DOMAIN: &[u8] = b"cocoon-receipt/v1/worker\n";
const PROXY_DOMAIN: &[u8] = b"cocoon-receipt/v1/proxy\n";

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
    /// The worker's RA-TLS certificate (DER, base64).
    pub worker_certificate: String,
    /// The worker's Ed25519 signature (hex) over the record.
    pub worker_signature: String,
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
    /// The worker's RA-TLS certificate (DER, base64).
    pub worker_certificate: String,
    /// The worker's Ed25519 signature (hex) over the record.
    pub worker_signature: String,
    /// The proxy's RA-TLS certificate (DER, base64).
    pub proxy_certificate: String,
    /// The proxy's Ed25519 signature (hex) over the record and the worker's signature.
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

fn sign(identity: &Identity, domain: &[u8], parts: &[&[u8]]) -> String {
    let message = [&[domain][..], parts].concat().concat();
    hex::encode(identity.signing_key().sign(&message).to_bytes())
}

fn check_signature(
    key: &[u8; 32],
    signature_hex: &str,
    domain: &[u8],
    parts: &[&[u8]],
    which: &'static str,
) -> Result<(), ReceiptError> {
    let bad = || ReceiptError::BadSignature(which);
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut bytes).map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(key).map_err(|_| bad())?;
    let message = [&[domain][..], parts].concat().concat();
    key.verify_strict(&message, &Signature::from_bytes(&bytes))
        .map_err(|_| bad())
}

fn record_bytes(answer: &AnswerRecord) -> Vec<u8> {
    // A struct of plain fields always serialises.
    serde_json::to_vec(answer).unwrap_or_default()
}

fn decode_certificate(text: &str, which: &'static str) -> Result<Vec<u8>, ReceiptError> {
    STANDARD
        .decode(text)
        .map_err(|e| ReceiptError::Malformed(format!("{which} certificate is not base64: {e}")))
}

impl WorkerReceipt {
    /// The worker signs `answer` with `identity` (its current RA-TLS key and certificate).
    pub fn sign(answer: AnswerRecord, identity: &Identity) -> Self {
        let worker_signature = sign(identity, WORKER_DOMAIN, &[&record_bytes(&answer)]);
        WorkerReceipt {
            version: RECEIPT_VERSION,
            answer,
            worker_certificate: STANDARD.encode(identity.certificate_der()),
            worker_signature,
        }
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
        check_version(self.version)?;
        check_signature(
            key,
            &self.worker_signature,
            WORKER_DOMAIN,
            &[&record_bytes(&self.answer)],
            "worker",
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
            worker_signature: &self.worker_signature,
            proxy_signature: None,
        };
        (to_header(&record), &self.worker_certificate)
    }

    /// Reads [`WorkerReceipt::to_wire`]'s form.
    pub fn from_wire(record: &str, worker_certificate: &str) -> Result<Self, ReceiptError> {
        let record: Record = from_header(record)?;
        Ok(WorkerReceipt {
            version: record.version,
            answer: record.answer,
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
    worker_signature: String,
    #[serde(default)]
    proxy_signature: Option<String>,
}

fn check_version(version: u32) -> Result<(), ReceiptError> {
    if version == RECEIPT_VERSION {
        Ok(())
    } else {
        Err(ReceiptError::Malformed(format!(
            "version {version} (this build reads {RECEIPT_VERSION})"
        )))
    }
}

impl Receipt {
    /// The proxy countersigns a worker's receipt (whose signature it has checked) with `identity`.
    pub fn countersign(worker: WorkerReceipt, identity: &Identity) -> Self {
        let proxy_signature = sign(
            identity,
            PROXY_DOMAIN,
            &[
                &record_bytes(&worker.answer),
                worker.worker_signature.as_bytes(),
            ],
        );
        Receipt {
            version: worker.version,
            answer: worker.answer,
            worker_certificate: worker.worker_certificate,
            worker_signature: worker.worker_signature,
            proxy_certificate: STANDARD.encode(identity.certificate_der()),
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
        check_version(self.version)?;
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
        check_version(self.version)?;
        let record = record_bytes(&self.answer);
        let worker_message = [WORKER_DOMAIN, &record].concat();
        let proxy_message = [PROXY_DOMAIN, &record, self.worker_signature.as_bytes()].concat();
        ReceiptSignatures::new(
            (worker, worker_message, &self.worker_signature),
            (proxy, proxy_message, &self.proxy_signature),
        )
    }

    /// The checks of [`Receipt::verify_with`] other than the signatures: the record against the
    /// worker's (verified) certificate, and the charge against the usage and the stated prices.
    pub fn check_record(&self, worker: &PeerIdentity) -> Result<(), ReceiptError> {
        check_version(self.version)?;
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
