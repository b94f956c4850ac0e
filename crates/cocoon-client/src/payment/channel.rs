//! The client's payment channel with one proxy: what it has checked, verified and signed for.

use std::time::{Duration, Instant};

use cocoon_money::{Amount, SignatureBytes, SignedVoucher, Voucher, VoucherIds};
use cocoon_receipt::ReceiptSignatures;
use ed25519_dalek::SigningKey;
use http::HeaderValue;

/// The longest a checked answer waits to be covered by a signed payment while requests keep
/// going to its proxy: one batch check of the window's receipt signatures and one voucher
/// signature (and one check at the proxy) cover every answer in that window, instead of one
/// each. The proxy's unpaid bound absorbs the window; a settlement flush and
/// [`super::Payer::latest`] sign at once.
const SIGN_EVERY: Duration = Duration::from_millis(25);

/// An answer whose receipt checked out but for its signatures, and what it costs.
#[derive(Debug)]
pub(super) struct Unverified {
    pub(super) signatures: ReceiptSignatures,
    pub(super) cost: Amount,
}

/// The client's payment channel with one proxy.
#[derive(Debug)]
pub(super) struct Channel {
    /// What its vouchers name (the settlement backend's ids of the proxy and this channel).
    pub(super) ids: VoucherIds,
    /// What the client has signed for, or will sign for next, in total: only answers whose
    /// receipts are fully verified count.
    pub(super) cumulative: Amount,
    /// The statement number of that voucher.
    pub(super) seqno: u64,
    /// The newest voucher, if the client signed one (or the proxy held one of its).
    pub(super) latest: Option<SignedVoucher>,
    /// `latest` as an `x-cocoon-payment` value, made once per voucher (which it is for: the
    /// voucher's signature), not once per request.
    header: Option<(SignatureBytes, HeaderValue)>,
    /// Whether `latest` has not been sent to the proxy yet.
    pub(super) unsent: bool,
    /// Whether `cumulative` covers answers `latest` does not (checked, not yet signed for).
    pub(super) pending: bool,
    /// When `latest` was signed here.
    pub(super) signed_at: Option<Instant>,
    /// Answers waiting for their receipts' signatures to be checked, in arrival order.
    pub(super) unverified: Vec<Unverified>,
}

impl Channel {
    /// A channel named `ids` whose payments start from `cumulative` at statement `seqno`.
    pub(super) fn from(
        ids: VoucherIds,
        cumulative: Amount,
        seqno: u64,
        latest: Option<SignedVoucher>,
    ) -> Self {
        Channel {
            ids,
            cumulative,
            seqno,
            latest,
            header: None,
            unsent: false,
            pending: false,
            signed_at: None,
            unverified: Vec::new(),
        }
    }

    /// If `due` says so, checks the queued receipts' signatures (in one batch), adds the cost of
    /// each answer that verified, and signs for the new total. Returns why an answer was refused,
    /// if one was: its cost is not added, and the caller stops paying this proxy.
    pub(super) fn sign_pending(
        &mut self,
        wallet: &SigningKey,
        due: impl Fn(Option<Instant>) -> bool,
    ) -> Option<String> {
        let waiting = self.pending || !self.unverified.is_empty();
        if !waiting || !due(self.signed_at) {
            return None;
        }
        let refused = self.verify_queued();
        if self.pending {
            self.latest = Some(Voucher::client_pay(
                wallet,
                self.ids,
                self.cumulative,
                self.seqno,
            ));
            self.pending = false;
            self.unsent = true;
            self.signed_at = Some(Instant::now());
        }
        refused
    }

    /// `latest` as the `x-cocoon-payment` header value.
    pub(super) fn latest_header(&mut self) -> Option<HeaderValue> {
        let latest = self.latest.as_ref()?;
        match &self.header {
            Some((signature, value)) if *signature == latest.signature => Some(value.clone()),
            _ => {
                let value = HeaderValue::from_str(&serde_json::to_string(latest).ok()?).ok()?;
                self.header = Some((latest.signature, value.clone()));
                Some(value)
            }
        }
    }

    /// Moves the queued answers whose receipt signatures verify into `cumulative`; the first
    /// reason an answer was refused, if one was.
    fn verify_queued(&mut self) -> Option<String> {
        let queued = std::mem::take(&mut self.unverified);
        let signatures: Vec<&ReceiptSignatures> = queued.iter().map(|q| &q.signatures).collect();
        let verdicts = cocoon_receipt::verify_batch(&signatures);
        let mut refused = None;
        for (answer, verdict) in queued.iter().zip(verdicts) {
            let added = verdict
                .map_err(|error| format!("receipt: {error}"))
                .and_then(|()| {
                    self.cumulative
                        .checked_add(answer.cost)
                        .zip(self.seqno.checked_add(1))
                        .ok_or_else(|| "the total paid would overflow".to_owned())
                });
            match added {
                Ok((cumulative, seqno)) => {
                    self.cumulative = cumulative;
                    self.seqno = seqno;
                    self.pending = true;
                }
                Err(why) => {
                    refused.get_or_insert(why);
                }
            }
        }
        refused
    }
}

/// Sign now, whenever the last signature was.
pub(super) fn now(_: Option<Instant>) -> bool {
    true
}

/// Sign if no signature was made in the last [`SIGN_EVERY`].
pub(super) fn when_due(signed_at: Option<Instant>) -> bool {
    signed_at.is_none_or(|at| at.elapsed() >= SIGN_EVERY)
}
