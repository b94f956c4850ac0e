//! Passing a proxy's SSE answer through to the app, lazily.
//!
//! The app's response body is a stream that pulls from the proxy's HTTP/2 response body only when
//! the app reads: dropping it (the app went away) drops the upstream body, which resets the HTTP/2
//! stream and cancels the work at the proxy and the worker.
//!
//! On the way, events are re-encoded as they come, except:
//! - the final usage chunk (`"usage": {...}` with empty `choices`), which workers always request,
//!   reaches the app only if the app itself asked for `stream_options.include_usage`;
//! - `data: [DONE]` is held until the upstream body has ended, so that an `x-cocoon-error`
//!   trailer, a broken body or the deadline can still end the stream with an error event
//!   (`data: {"error": {...}}`) instead of a success marker;
//! - after `[DONE]` comes the answer's receipt, as one `event: cocoon.receipt` whose data is the
//!   receipt's JSON. It follows `[DONE]` so that OpenAI SDKs, which stop reading there, never see
//!   it; an app that wants receipts reads on to the end of the stream.

use std::convert::Infallible;
use std::fmt::Display;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cocoon_node::stats::{ActiveRequest, NodeStats};
use cocoon_node::trailers::read_usage;
use cocoon_proto::headers::{
    COST, ERROR, RECEIPT_PROXY_CERTIFICATE, RECEIPT_RECORD, RECEIPT_WORKER_CERTIFICATE,
};
use cocoon_proto::limits::SseEventLimit;
use cocoon_proto::{ErrorKind, OpenAiError};
use cocoon_receipt::Receipt;
use futures::stream::{BoxStream, Stream, StreamExt};
use futures::FutureExt;
use http::HeaderMap;
use http_body_util::BodyStream;
use sse_stream::{Error as SseError, Sse, SseByteStream};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::held_certificate::HeldCertificate;

/// The SSE marker that ends an OpenAI stream.
const DONE: &str = "[DONE]";

/// What the rewrite needs besides the upstream body.
pub struct SseOptions {
    /// Whether the app asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// When the request's time is up; the stream then ends with a timeout error event.
    pub deadline: Instant,
    /// Where the outcome (tokens or error kind) is counted.
    pub stats: Arc<NodeStats>,
    /// The request, counted active until the stream ends or is dropped.
    pub active: ActiveRequest,
    /// The largest event accepted from the proxy; a larger one ends the stream with an error.
    pub max_event_bytes: usize,
    /// What the client holds of the proxy's certificate, to complete the receipt's trailers.
    pub held_certificate: Option<Arc<HeldCertificate>>,
    /// Called once with the trailers of an answer that ended well and the receipt read from them
    /// (to pay for it).
    pub on_success: Option<OnSuccess>,
}

/// What to do with the trailers of an answer that ended well, and the receipt they carry.
pub type OnSuccess = Box<dyn FnOnce(Option<&HeaderMap>, Option<&Receipt>) + Send>;

/// Turns a proxy's SSE response body into the app's SSE body (see the module docs).
pub fn rewrite_sse<B>(
    body: B,
    options: SseOptions,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Display,
{
    let (trailers_tx, trailers_rx) = oneshot::channel();
    let mut trailers_tx = Some(trailers_tx);
    // Trailers are not SSE bytes: set them aside for the end, and turn body errors (and an event
    // past its size limit, which the parser would otherwise buffer without end) into I/O errors so
    // the event parser reports them as transport errors.
    let mut event_limit = SseEventLimit::new(options.max_event_bytes);
    let held_certificate = options.held_certificate;
    let bytes = BodyStream::new(body).filter_map(move |frame| {
        let item = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => Some(
                    event_limit
                        .check(&data)
                        .map(|()| data)
                        .map_err(std::io::Error::other),
                ),
                Err(frame) => {
                    if let (Ok(mut trailers), Some(tx)) =
                        (frame.into_trailers(), trailers_tx.take())
                    {
                        if let Some(held) = &held_certificate {
                            held.complete(&mut trailers);
                        }
                        // The receiver lives in the same stream state; it cannot be gone yet.
                        let _ = tx.send(trailers);
                    }
                    None
                }
            },
            Err(error) => Some(Err(std::io::Error::other(error.to_string()))),
        };
        futures::future::ready(item)
    });
    let state = Rewrite {
        events: SseByteStream::new(bytes).boxed(),
        trailers: trailers_rx,
        deadline: Box::pin(tokio::time::sleep_until(options.deadline)),
        include_usage: options.include_usage,
        saw_done: false,
        usage_chunk: None,
        finished: false,
        stats: options.stats,
        on_success: options.on_success,
        _active: options.active,
    };
    futures::stream::unfold(state, |mut state| async move {
        let write = state.next_write().await?;
        Some((Ok(write), state))
    })
}

/// Most events written to the app at once.
const MAX_EVENTS_PER_WRITE: usize = 64;

/// The state of one rewrite; dropping it drops the upstream body.
struct Rewrite {
    events: BoxStream<'static, Result<Sse, SseError>>,
    trailers: oneshot::Receiver<HeaderMap>,
    deadline: Pin<Box<Sleep>>,
    include_usage: bool,
    saw_done: bool,
    /// The final usage chunk, held until the trailers bring its cost.
    usage_chunk: Option<String>,
    finished: bool,
    stats: Arc<NodeStats>,
    on_success: Option<OnSuccess>,
    _active: ActiveRequest,
}

impl Rewrite {
    /// The next write to the app, or `None` when the stream is over: the next event and every
    /// event already here after it, encoded into one buffer, so a burst costs one write (one
    /// system call), not one per token, and no event waits for one that has not arrived.
    async fn next_write(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        if !self.next_event(&mut out).await {
            return None;
        }
        for _ in 1..MAX_EVENTS_PER_WRITE {
            if self.next_event(&mut out).now_or_never() != Some(true) {
                break;
            }
        }
        Some(out.freeze())
    }

    /// Appends the next event for the app to `out` (the end of the stream being its last event);
    /// `false`, with nothing appended, when the stream is over.
    async fn next_event(&mut self, out: &mut BytesMut) -> bool {
        loop {
            if self.finished {
                return false;
            }
            let item = tokio::select! {
                item = self.events.next() => item,
                _ = &mut self.deadline => {
                    self.fail(out, OpenAiError::new(
                        ErrorKind::Timeout,
                        "the request did not finish within its timeout",
                    ));
                    return true;
                }
            };
            match item {
                Some(Ok(event)) => {
                    // Blocks without data (comments, retry hints) carry nothing for the app.
                    let Some(data) = &event.data else { continue };
                    if data.trim() == DONE {
                        self.saw_done = true;
                        continue;
                    }
                    if is_usage_chunk(data) {
                        // Held until the trailers bring its cost; shown only if the app asked.
                        if self.include_usage {
                            self.usage_chunk = event.data;
                        }
                        continue;
                    }
                    put_event(out, &event);
                }
                Some(Err(SseError::Body(error))) => self.fail(
                    out,
                    OpenAiError::new(
                        ErrorKind::BadGateway,
                        format!("the answer broke off mid-stream: {error}"),
                    ),
                ),
                Some(Err(error)) => self.fail(
                    out,
                    OpenAiError::new(
                        ErrorKind::BadGateway,
                        format!("the answer is not a valid event stream: {error}"),
                    ),
                ),
                None => self.end(out),
            }
            return true;
        }
    }

    /// The upstream body ended: appends its trailers' verdict to `out`.
    fn end(&mut self, out: &mut BytesMut) {
        let trailers = self.trailers.try_recv().ok();
        if let Some(error) = trailers.as_ref().and_then(|t| t.get(ERROR)) {
            let error =
                serde_json::from_slice::<OpenAiError>(error.as_bytes()).unwrap_or_else(|_| {
                    OpenAiError::new(
                        ErrorKind::BadGateway,
                        format!(
                            "the answer failed upstream: {}",
                            String::from_utf8_lossy(error.as_bytes())
                        ),
                    )
                });
            return self.fail(out, error);
        }
        if !self.saw_done {
            return self.fail(
                out,
                OpenAiError::new(
                    ErrorKind::BadGateway,
                    "the answer ended before its [DONE] marker",
                ),
            );
        }
        if let Some(usage) = trailers.as_ref().and_then(read_usage) {
            self.stats.record_tokens(&usage);
        }
        let receipt = trailers.as_ref().and_then(receipt_of);
        if let Some(on_success) = self.on_success.take() {
            on_success(trailers.as_ref(), receipt.as_ref());
        }
        self.finished = true;
        if let Some(usage_chunk) = self.usage_chunk.take() {
            let priced = trailers
                .as_ref()
                .and_then(|trailers| with_cost(usage_chunk.as_bytes(), trailers))
                .unwrap_or_else(|| Bytes::from(usage_chunk));
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&priced);
            out.extend_from_slice(b"\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        // Compact JSON is one line, as an SSE data line needs.
        if let Some(receipt) = receipt.and_then(|receipt| serde_json::to_vec(&receipt).ok()) {
            out.extend_from_slice(RECEIPT_EVENT.as_bytes());
            out.extend_from_slice(b"\ndata: ");
            out.extend_from_slice(&receipt);
            out.extend_from_slice(b"\n\n");
        }
    }

    /// Ends the stream with `error` as its last event, appended to `out`.
    fn fail(&mut self, out: &mut BytesMut, error: OpenAiError) {
        self.finished = true;
        self.stats
            .record_error(error.kind().unwrap_or(ErrorKind::BadGateway));
        out.extend_from_slice(&error_event(&error));
    }
}

/// The line naming the event that carries a stream's receipt, after `[DONE]`.
pub const RECEIPT_EVENT: &str = "event: cocoon.receipt";

/// The receipt in the proxy's trailers, if it sent one.
pub fn receipt_of(trailers: &HeaderMap) -> Option<Receipt> {
    let text = |name: &str| trailers.get(name)?.to_str().ok();
    let receipt = Receipt::from_wire(
        text(RECEIPT_RECORD)?,
        text(RECEIPT_WORKER_CERTIFICATE)?,
        text(RECEIPT_PROXY_CERTIFICATE)?,
    );
    receipt
        .inspect_err(
            |error| tracing::warn!(%error, "the proxy's receipt is unreadable; not passed on"),
        )
        .ok()
}

/// An SSE event carrying an OpenAI error, as OpenAI ends failed streams.
pub fn error_event(error: &OpenAiError) -> Bytes {
    let json = serde_json::to_string(error).unwrap_or_else(|_| {
        // Serialising plain strings cannot fail; keep a well-formed event regardless.
        r#"{"error":{"message":"internal error","type":"server_error"}}"#.to_owned()
    });
    Bytes::from(format!("data: {json}\n\n"))
}

/// `answer` (a JSON answer or usage chunk) with the cost from the proxy's `x-cocoon-cost` trailer
/// added to its `usage`: `prompt_total_cost`, `completion_total_cost`, `total_cost` (nano-units).
/// `None` when there is no cost or no usage object to add it to.
pub fn with_cost(answer: &[u8], trailers: &HeaderMap) -> Option<Bytes> {
    let cost: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(trailers.get(COST)?.as_bytes()).ok()?;
    let mut value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let usage = value.get_mut("usage")?.as_object_mut()?;
    usage.extend(cost);
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

/// Whether `data` is the final usage chunk: a `usage` object with no choices.
fn is_usage_chunk(data: &str) -> bool {
    // Most chunks are tokens (often with `"usage": null`): skip parsing them.
    if !cocoon_proto::may_carry_usage(data) {
        return false;
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else {
        return false;
    };
    value.get("usage").is_some_and(|usage| usage.is_object())
        && value
            .get("choices")
            .and_then(|choices| choices.as_array())
            .is_none_or(|choices| choices.is_empty())
}

/// Re-encodes an event into `out`: its type when not the default, and its data line by line. Ids
/// and retry hints are dropped: OpenAI streams do not use them and the app cannot resume through
/// us.
fn put_event(out: &mut BytesMut, event: &Sse) {
    let data = event.data.as_deref().unwrap_or_default();
    if let Some(kind) = event.event.as_deref().filter(|kind| *kind != "message") {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\n");
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
