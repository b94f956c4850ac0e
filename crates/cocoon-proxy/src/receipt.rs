//! Countersigning answers' receipts: the worker's signed half arrives in its last trailer; the
//! proxy checks that it is the worker's and says what the proxy saw (usage, charge, prices,
//! model, image), then adds its own signature, and the client gets the full receipt.
//!
//! A worker's receipt that fails these checks is not passed on (and logged): the answer and its
//! charge stand on the usage trailer, as before receipts existed.

use std::sync::Arc;
use std::time::SystemTime;

use cocoon_ledger::{Amount, Prices};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::registry::LivePolicy;
use cocoon_proto::TokenUsage;
use cocoon_receipt::{Receipt, ReceiptError, WorkerReceipt};
use http::HeaderValue;

use crate::routing::WorkerLink;

/// Checks and countersigns workers' receipts with this proxy's attested key.
pub struct Countersigner {
    /// This proxy's identity (its current key signs).
    pub trust: Arc<NodeTrust>,
    /// The worker policy, for a receipt signed with a certificate newer than its link's.
    pub worker_policy: LivePolicy,
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
    /// The usage trailer.
    pub usage: &'a TokenUsage,
    /// What the client was charged.
    pub charge: Amount,
    /// The prices it was billed at.
    pub prices: &'a Prices,
}

impl Countersigner {
    /// Checks the worker's receipt (trailer value) against `seen`; the full receipt's trailer value.
    pub fn countersign(
        &self,
        trailer: &HeaderValue,
        seen: &Seen<'_>,
    ) -> Result<HeaderValue, ReceiptRefused> {
        let text = trailer
            .to_str()
            .map_err(|_| ReceiptError::Malformed("the trailer is not ASCII".into()))?;
        let worker_receipt = WorkerReceipt::from_header(text)?;
        let signer = worker_receipt.signer()?;
        let peer = &seen.worker.peer;
        if signer != peer.public_key {
            // The worker renewed its certificate since this link came up: the new one must
            // verify under today's policy and attest the same image.
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
        }
        let answer = &worker_receipt.answer;
        let info = &seen.worker.info;
        let checks = [
            ("usage", json(&answer.usage), json(seen.usage)),
            ("charge", answer.charge.to_string(), seen.charge.to_string()),
            ("prices", json(&answer.prices), json(seen.prices)),
            (
                "coefficient",
                answer.coefficient.to_string(),
                info.coefficient.to_string(),
            ),
            ("model", answer.model.clone(), info.model.clone()),
            (
                "model hash",
                json(&answer.model_hash),
                json(&info.model_hash),
            ),
            (
                "worker image",
                answer.worker_image_hash.to_string(),
                peer.image_hash.to_string(),
            ),
        ];
        for (field, receipt, seen) in checks {
            if receipt != seen {
                return Err(ReceiptRefused::Disagrees {
                    field,
                    receipt,
                    seen,
                });
            }
        }
        let receipt = Receipt::countersign(worker_receipt, &self.trust.identity());
        HeaderValue::from_str(&receipt.to_header())
            .map_err(|_| ReceiptError::Malformed("not a header value".into()).into())
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
