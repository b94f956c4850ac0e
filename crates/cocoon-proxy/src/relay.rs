//! A worker's answer on its way to the client ([`Relay`]): frames relayed as they come (chunks
//! that arrived together merged), the usage trailer charged durably before the answer's end is
//! released, the receipt countersigned, the deadline enforced; and an answer whose client hung up
//! just before its end still read to its usage trailer and charged ([`charge_abandoned_tail`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cocoon_money::Amount;
use cocoon_node::link::per_request;
use cocoon_node::stats::{ActiveRequest, NodeStats};
use cocoon_node::trailers::{error_trailers, read_error, read_usage};
use cocoon_proto::{headers, ErrorKind, OpenAiError};
use futures::FutureExt;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::billing::{AnswerCost, Billing, Reservation};
use crate::coalesced_body::Coalesced;
use crate::receipt::{Countersigned, Countersigner, Seen};
use crate::routing::{Slot, WorkerLink};

/// How much more of an answer the proxy reads after its client hung up, looking for the usage
/// trailer: room for the last events (a usage chunk, `[DONE]`) of an answer the worker has
/// finished, and little more, so a client is not charged for much it was never sent. An answer
/// with more left is cancelled upstream and not charged.
const ABANDONED_TAIL_BYTES: usize = 4096;

/// How long the proxy waits for that tail.
const ABANDONED_TAIL_WAIT: Duration = Duration::from_secs(2);

/// A worker's answer relayed to the client. It never fails: a worker failure or the deadline
/// ends the answer with an `x-cocoon-error` trailer, so the client can tell the app why.
pub(crate) struct Relay {
    /// The worker's answer, chunks that arrived together merged into one frame; taken by
    /// [`Relay`]'s drop when the client left before its end.
    inner: Option<Coalesced<Incoming>>,
    meter: Meter,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    finished: bool,
    charging: Option<Charging>,
    stats: Arc<NodeStats>,
    /// The worker's slot, held until the answer (or its abandoned tail) is done.
    slot: Option<Slot>,
    _active: ActiveRequest,
}

/// Charges a finished answer; holds the reservation until then (dropping it releases it).
pub(crate) struct Meter {
    pub(crate) billing: Arc<Billing>,
    pub(crate) reservation: Option<Reservation>,
    pub(crate) worker_wallet: cocoon_money::AccountId,
    pub(crate) worker: Arc<WorkerLink>,
    pub(crate) receipts: Arc<Countersigner>,
    /// The request id sent to the worker (`x-cocoon-request-id`; empty without one), which its
    /// receipt must name.
    pub(crate) request_id: Arc<str>,
    /// The certificates the client holds, left out of the receipt when they are its.
    pub(crate) client_holds: ClientHolds,
}

/// The certificates a client says it holds: this proxy's (`x-cocoon-held-certificate`) and
/// workers' (`x-cocoon-held-worker-certificates`), as SHA-256s.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientHolds {
    pub(crate) proxy: Option<[u8; 32]>,
    pub(crate) workers: Vec<[u8; 32]>,
}

impl ClientHolds {
    /// What the client's request `headers` say it holds; a list that is too long or malformed
    /// counts as none.
    pub(crate) fn of(request: &HeaderMap) -> Self {
        let digest = |text: &str| text.parse::<cocoon_money::Hash32>().ok().map(|hash| hash.0);
        let proxy = request
            .get(headers::HELD_CERTIFICATE)
            .and_then(|value| digest(value.to_str().ok()?));
        // Read no further than one item past the most allowed: the list's length is the client's.
        let workers = request
            .get(headers::HELD_WORKER_CERTIFICATES)
            .and_then(|value| value.to_str().ok())
            .and_then(|list| {
                let mut items = list.split(',');
                let workers = items
                    .by_ref()
                    .take(headers::MAX_HELD_WORKER_CERTIFICATES)
                    .map(digest)
                    .collect::<Option<Vec<_>>>()?;
                items.next().is_none().then_some(workers)
            })
            .unwrap_or_default();
        ClientHolds { proxy, workers }
    }
}

/// The trailers a charged answer gains: its cost, and its countersigned receipt.
struct Charged {
    cost: HeaderValue,
    receipt: Option<Countersigned>,
}

/// The worker's receipt trailers: its record and its certificate.
type WorkerReceiptTrailers = (HeaderValue, HeaderValue);

/// A charge being written, with the trailers it will complete.
type Charging = (
    Pin<Box<dyn Future<Output = Result<Charged, OpenAiError>> + Send>>,
    HeaderMap,
);

impl Meter {
    /// This meter's reservation and parties, for the task that finishes an abandoned answer.
    fn detach(&mut self) -> Meter {
        Meter {
            billing: self.billing.clone(),
            reservation: self.reservation.take(),
            worker_wallet: self.worker_wallet,
            worker: self.worker.clone(),
            receipts: self.receipts.clone(),
            request_id: self.request_id.clone(),
            client_holds: self.client_holds.clone(),
        }
    }

    /// Charges `usage` durably and countersigns the worker's receipt (if it sent one); resolves
    /// to the trailers stating the cost and carrying the receipt.
    fn charge(
        &mut self,
        usage: cocoon_proto::TokenUsage,
        worker_receipt: Option<WorkerReceiptTrailers>,
    ) -> Pin<Box<dyn Future<Output = Result<Charged, OpenAiError>> + Send>> {
        let reservation = self.reservation.take();
        let (billing, wallet, worker, receipts, request_id) = (
            self.billing.clone(),
            self.worker_wallet,
            self.worker.clone(),
            self.receipts.clone(),
            self.request_id.clone(),
        );
        Box::pin(async move {
            let Some(reservation) = reservation else {
                return Err(OpenAiError::new(
                    ErrorKind::Internal,
                    "the answer was already charged",
                ));
            };
            let prices = reservation.prices().clone();
            let reserved = reservation.amount();
            // The countersignature is made while the disk writes the charge; it goes out only
            // once the charge is on disk.
            let countersign = |cost: &AnswerCost, uncapped: Option<Amount>| {
                // The receipt proves the usage's full price; the client pays the capped cost.
                let seen = Seen {
                    worker: &worker,
                    request_id: &request_id,
                    usage: &usage,
                    charge: uncapped.unwrap_or(cost.total_cost),
                    prices: &prices,
                };
                worker_receipt.and_then(|(record, certificate)| {
                    receipts
                        .countersign(&record, &certificate, &seen)
                        .inspect_err(|error| tracing::warn!(worker = worker.id, %error, "worker's receipt refused; the answer goes without one"))
                        .ok()
                })
            };
            let (cost, uncapped, receipt) = billing
                .charge(
                    reservation,
                    wallet,
                    &usage,
                    worker.info.coefficient,
                    countersign,
                )
                .await
                .map_err(|error| {
                    tracing::error!(%error, "charging a finished answer failed");
                    OpenAiError::new(
                        ErrorKind::Internal,
                        format!("the proxy could not record the charge: {error}"),
                    )
                })?;
            if let Some(reported) = uncapped {
                worker.set_aside_for_overcharge(reported, reserved);
            }
            let text = serde_json::to_string(&cost).unwrap_or_default();
            let cost = HeaderValue::from_str(&text).map(per_request).map_err(|_| {
                OpenAiError::new(
                    ErrorKind::Internal,
                    "the cost trailer is not a header value",
                )
            })?;
            Ok(Charged { cost, receipt })
        })
    }
}

impl Relay {
    /// Relays the worker's answer `body`, charged by `meter`, until `deadline` (the request's
    /// `timeout` from its start), holding the worker's `slot` and the request's `active` count.
    pub(crate) fn new(
        body: Incoming,
        meter: Meter,
        (deadline, timeout): (Instant, Duration),
        stats: Arc<NodeStats>,
        slot: Slot,
        active: ActiveRequest,
    ) -> Self {
        Relay {
            meter,
            inner: Some(Coalesced::new(body)),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            finished: false,
            charging: None,
            stats,
            slot: Some(slot),
            _active: active,
        }
    }

    fn fail(&mut self, error: OpenAiError) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.finished = true;
        self.stats
            .record_error(error.kind().unwrap_or(ErrorKind::BadGateway));
        Poll::Ready(Some(Ok(Frame::trailers(error_trailers(&error)))))
    }
}

impl http_body::Body for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some((charging, _)) = &mut this.charging {
            // The charge is on disk before the client sees the end of its answer.
            let outcome = ready!(charging.as_mut().poll(cx));
            let (_, mut trailers) = this.charging.take().expect("checked above");
            return match outcome {
                Ok(Charged { cost, receipt }) => {
                    trailers.insert(headers::COST, cost);
                    if let Some(receipt) = receipt {
                        put_receipt(&mut trailers, receipt, &this.meter.client_holds);
                    }
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(error) => this.fail(error),
            };
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if this.deadline.poll_unpin(cx).is_ready() {
            let message = format!(
                "the answer did not finish within the request's timeout of {} ms",
                this.timeout.as_millis()
            );
            return this.fail(OpenAiError::new(ErrorKind::Timeout, message));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                let mut trailers = match frame.into_trailers() {
                    Ok(trailers) => trailers,
                    Err(data) => return Poll::Ready(Some(Ok(data))),
                };
                this.finished = true;
                // Only a receipt the proxy countersigns goes on to the client.
                let worker_receipt = take_worker_receipt(&mut trailers, &this.meter.worker);
                if let Some(usage) = read_usage(&trailers) {
                    this.meter.worker.record_success();
                    this.stats.record_tokens(&usage);
                    this.charging = Some((this.meter.charge(usage, worker_receipt), trailers));
                    return Pin::new(this).poll_frame(cx);
                } else if let Some(error) = read_error(&trailers) {
                    this.meter.worker.record_failure();
                    this.stats
                        .record_error(error.kind().unwrap_or(ErrorKind::BadGateway));
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Some(Err(error))) => {
                this.meter.worker.record_failure();
                this.fail(OpenAiError::new(
                    ErrorKind::BadGateway,
                    format!("the worker failed mid-answer: {error}"),
                ))
            }
            Poll::Ready(None) => {
                this.meter.worker.record_failure();
                this.fail(OpenAiError::new(
                    ErrorKind::BadGateway,
                    "the worker ended its answer without reporting usage",
                ))
            }
        }
    }
}

/// Puts `receipt` into the trailers for a client that holds the certificates `client_holds`
/// names: each is left out when it is the receipt's (the worker's named by its digest instead).
pub(crate) fn put_receipt(
    trailers: &mut HeaderMap,
    receipt: Countersigned,
    client_holds: &ClientHolds,
) {
    trailers.insert(headers::RECEIPT_RECORD, receipt.record);
    match receipt
        .worker_fingerprint
        .filter(|worker| client_holds.workers.contains(worker))
    {
        Some(worker) => {
            let digest = cocoon_money::Hash32(worker).to_string();
            trailers.insert(
                headers::RECEIPT_WORKER_CERTIFICATE_SHA256,
                HeaderValue::from_str(&digest).expect("hex is a header value"),
            );
        }
        None => {
            trailers.insert(
                headers::RECEIPT_WORKER_CERTIFICATE,
                receipt.worker_certificate,
            );
        }
    }
    if client_holds.proxy != Some(receipt.proxy_fingerprint) {
        trailers.insert(
            headers::RECEIPT_PROXY_CERTIFICATE,
            receipt.proxy_certificate,
        );
    }
}

/// Removes the worker's receipt from its trailers (only a countersigned one goes on). A record
/// without its certificate names `worker`'s link certificate, which the proxy told the worker it
/// holds (`headers::HELD_CERTIFICATE`); without one held, it is no receipt.
pub(crate) fn take_worker_receipt(
    trailers: &mut HeaderMap,
    worker: &WorkerLink,
) -> Option<WorkerReceiptTrailers> {
    let record = trailers.remove(headers::RECEIPT_RECORD)?;
    let certificate = trailers
        .remove(headers::RECEIPT_WORKER_CERTIFICATE)
        .or_else(|| worker.held_certificate())?;
    Some((record, certificate))
}

impl Drop for Relay {
    /// The client is gone. An answer the worker completed is charged all the same: a charge
    /// being written is finished, and an answer not read to its end yet has its tail read
    /// ([`charge_abandoned_tail`]). Both run on a task of their own.
    fn drop(&mut self) {
        let charging = self.charging.take();
        let unread = if self.finished {
            None
        } else {
            self.inner.take()
        };
        if charging.is_none() && unread.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let meter = self.meter.detach();
        let (slot, stats) = (self.slot.take(), self.stats.clone());
        let until = self
            .deadline
            .deadline()
            .min(Instant::now() + ABANDONED_TAIL_WAIT);
        runtime.spawn(async move {
            if let Some((charging, _)) = charging {
                let _ = charging.await;
            } else if let Some(unread) = unread {
                charge_abandoned_tail(unread, meter, stats, until).await;
            }
            drop(slot);
        });
    }
}

/// Reads the rest of an answer whose client hung up. If the worker's usage trailer comes within
/// [`ABANDONED_TAIL_BYTES`] more and before `until`, the worker had completed the answer, and it
/// is charged as if the client had stayed; otherwise dropping the rest cancels the work upstream
/// and nothing is charged.
async fn charge_abandoned_tail(
    mut answer: Coalesced<Incoming>,
    mut meter: Meter,
    stats: Arc<NodeStats>,
    until: Instant,
) {
    let mut allowance = ABANDONED_TAIL_BYTES;
    loop {
        let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, answer.frame()).await else {
            return;
        };
        let mut trailers = match frame.into_trailers() {
            Ok(trailers) => trailers,
            Err(data) => {
                let size = data.data_ref().map_or(0, Bytes::len);
                match allowance.checked_sub(size) {
                    Some(left) => allowance = left,
                    None => return,
                }
                continue;
            }
        };
        let worker_receipt = take_worker_receipt(&mut trailers, &meter.worker);
        if let Some(usage) = read_usage(&trailers) {
            meter.worker.record_success();
            stats.record_tokens(&usage);
            // The charge logs its own failure; there is nobody left to tell.
            let _ = meter.charge(usage, worker_receipt).await;
        }
        return;
    }
}
