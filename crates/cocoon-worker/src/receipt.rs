//! The worker's half of an answer's receipt: what it knew when the request came (request digest,
//! model, prices) is kept in a [`ReceiptDraft`]; when the answer ends, the usage, the answer's text
//! digest and the charge complete it, and the worker signs it with its current attested key, in a
//! batch with the answers that end with it ([`ReceiptSigner`]).

use std::sync::Arc;

use cocoon_money::{price, Hash32, Prices};
use cocoon_node::attestation::NodeTrust;
use cocoon_node::link::per_request;
use cocoon_proto::{headers, TokenUsage, WorkerInfo};
use cocoon_receipt::{AnswerRecord, AnswerText};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use crate::receipt_signer::ReceiptSigner;
use crate::settlement::PaidLink;
use crate::stated_prices::StatedPrices;

/// A receipt waiting for its answer to end.
pub struct ReceiptDraft {
    trust: Arc<NodeTrust>,
    signer: Arc<ReceiptSigner>,
    info: Arc<WorkerInfo>,
    request_id: String,
    request_sha256: Hash32,
    prices: Prices,
    /// What the answer earns at `prices`, taken against the registry's.
    stated_prices: Arc<StatedPrices>,
    /// The link whose proxy owes this answer's pay, counted when it ends.
    pay: Option<PaidLink>,
    /// SHA-256 of the certificate the proxy already holds ([`headers::HELD_CERTIFICATE`]).
    held_certificate: Option<[u8; 32]>,
}

impl ReceiptDraft {
    /// A draft for a request with `headers` and `body`, whose pay is counted by `stated_prices`
    /// and whose receipt `signer` signs; `None` when the proxy sent no prices (a caller that bills
    /// nothing gets no receipt).
    pub fn new(
        trust: Arc<NodeTrust>,
        signer: Arc<ReceiptSigner>,
        info: Arc<WorkerInfo>,
        stated_prices: Arc<StatedPrices>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Self> {
        let prices = serde_json::from_slice(headers.get(headers::PRICES)?.as_bytes())
            .inspect_err(
                |error| tracing::warn!(%error, "the proxy's prices are unreadable; no receipt"),
            )
            .ok()?;
        let request_id = headers
            .get(headers::REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let held_certificate = headers
            .get(headers::HELD_CERTIFICATE)
            .and_then(|value| value.to_str().ok()?.parse::<Hash32>().ok())
            .map(|hash| hash.0);
        Some(ReceiptDraft {
            held_certificate,
            trust,
            signer,
            info,
            request_id,
            request_sha256: Hash32(Sha256::digest(body).into()),
            prices,
            stated_prices,
            pay: None,
        })
    }

    /// Counts this answer's pay as owed by `link`'s proxy when it ends.
    pub fn paid_on(mut self, link: PaidLink) -> Self {
        self.pay = Some(link);
        self
    }

    /// Signs the receipt of an answer that used `usage` and said `answer`; adds it to `trailers`,
    /// its certificate only if the proxy does not hold that one already.
    pub async fn finish(self, usage: &TokenUsage, answer: &AnswerText, trailers: &mut HeaderMap) {
        if let Some((record, certificate)) = self.sign(usage, answer).await {
            trailers.insert(headers::RECEIPT_RECORD, record);
            if let Some(certificate) = certificate {
                trailers.insert(headers::RECEIPT_WORKER_CERTIFICATE, certificate);
            }
        }
    }

    async fn sign(
        self,
        usage: &TokenUsage,
        answer: &AnswerText,
    ) -> Option<(HeaderValue, Option<HeaderValue>)> {
        let cost = price(usage, self.info.coefficient, &self.prices)
            .inspect_err(|error| tracing::warn!(%error, "cannot price the answer; no receipt"))
            .ok()?;
        if let Some(link) = &self.pay {
            let earned = self.stated_prices.earned(
                &link.proxy.contract,
                &self.prices,
                usage,
                self.info.coefficient,
                &cost,
            );
            link.settlement.earn(&link.proxy, earned);
        }
        let charge = cost.client_price;
        let record = AnswerRecord {
            request_id: self.request_id,
            issued_at: cocoon_receipt::unix_now(),
            model: self.info.model.clone(),
            model_hash: self.info.model_hash.clone(),
            worker_image_hash: self.trust.image_hash(),
            request_sha256: self.request_sha256,
            response_sha256: Hash32(answer.sha256()),
            usage: *usage,
            coefficient: self.info.coefficient,
            prices: self.prices,
            charge,
        };
        let batch = self.pay.as_ref().map(|link| link.proxy.voucher_key);
        let signed = self.signer.sign(batch, record).await?;
        let (record, certificate) = signed.receipt.to_wire();
        let certificate = if self.held_certificate == Some(signed.certificate_fingerprint) {
            None
        } else {
            Some(HeaderValue::from_str(certificate).ok()?)
        };
        Some((
            per_request(HeaderValue::from_str(&record).ok()?),
            certificate,
        ))
    }
}
