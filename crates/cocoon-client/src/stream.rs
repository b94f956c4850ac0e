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
                    if let (Ok(trailers), Some(tx)) = (frame.into_trailers(), trailers_tx.take()) {
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
mod tests {
    use super::*;
    use cocoon_proto::headers::USAGE;
    use http::HeaderValue;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::time::Duration;

    /// One frame of a fake proxy body, or its failure.
    type Part = Result<Frame<Bytes>, String>;

    /// Room for an event's `data: ` prefix and its end under the limit.
    const MAX_SSE_EVENT_BYTES_FOR_TEST: usize = cocoon_proto::limits::MAX_SSE_EVENT_BYTES - 64;
    const CHUNK: &str = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#;
    const USAGE_CHUNK: &str =
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

    fn data(text: &str) -> Part {
        Ok(Frame::data(Bytes::from(text.to_owned())))
    }

    fn trailer(name: &'static str, value: &str) -> Part {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).unwrap());
        Ok(Frame::trailers(map))
    }

    fn usage_trailer() -> Part {
        trailer(USAGE, r#"{"prompt_tokens":3,"completion_tokens":1}"#)
    }

    fn options(stats: &Arc<NodeStats>, include_usage: bool, timeout: Duration) -> SseOptions {
        SseOptions {
            include_usage,
            deadline: Instant::now() + timeout,
            stats: stats.clone(),
            active: stats.request_started(),
            max_event_bytes: cocoon_proto::limits::MAX_SSE_EVENT_BYTES,
            on_success: None,
        }
    }

    async fn run(
        parts: Vec<Part>,
        include_usage: bool,
        timeout: Duration,
    ) -> (String, Arc<NodeStats>) {
        run_stream(
            futures::stream::iter(parts),
            options_for(include_usage, timeout),
        )
        .await
    }

    fn options_for(include_usage: bool, timeout: Duration) -> SseOptions {
        options(&NodeStats::new("client"), include_usage, timeout)
    }

    async fn run_stream(
        parts: impl Stream<Item = Part> + Send + 'static,
        options: SseOptions,
    ) -> (String, Arc<NodeStats>) {
        let stats = options.stats.clone();
        let chunks: Vec<_> = rewrite_sse(StreamBody::new(parts), options).collect().await;
        let text = chunks
            .into_iter()
            .map(|chunk| String::from_utf8(chunk.unwrap().to_vec()).unwrap())
            .collect();
        (text, stats)
    }

    fn upstream(usage: bool) -> Vec<Part> {
        let mut parts = vec![data(&format!("data: {CHUNK}\n\n"))];
        if usage {
            parts.push(data(&format!("data: {USAGE_CHUNK}\n\n")));
        }
        // Split across frames on purpose: events do not align with HTTP/2 frames.
        parts.push(data("data: [DO"));
        parts.push(data("NE]\n\n"));
        parts.push(usage_trailer());
        parts
    }

    /// The app's writes for `parts`, every part ready at once.
    async fn writes_of(parts: Vec<Part>) -> Vec<String> {
        let options = options_for(false, Duration::from_secs(5));
        rewrite_sse(StreamBody::new(futures::stream::iter(parts)), options)
            .map(|write| String::from_utf8(write.unwrap().to_vec()).unwrap())
            .collect()
            .await
    }

    /// `text` cut into parts of `size` bytes (the last shorter), then the usage trailer.
    fn split_every(text: &str, size: usize) -> Vec<Part> {
        let mut parts: Vec<Part> = text.as_bytes().chunks(size).map(data_bytes).collect();
        parts.push(usage_trailer());
        parts
    }

    fn data_bytes(bytes: &[u8]) -> Part {
        Ok(Frame::data(Bytes::copy_from_slice(bytes)))
    }

    #[tokio::test]
    async fn events_split_anywhere_and_ready_together_leave_whole_in_few_writes() {
        let events = 200;
        let mut upstream = format!("data: {CHUNK}\n\n").repeat(events);
        upstream.push_str("data: [DONE]\n\n");
        let expected = upstream.clone();
        for size in [1, 2, 3, 7, 64, 1000, upstream.len()] {
            let writes = writes_of(split_every(&upstream, size)).await;
            assert_eq!(writes.concat(), expected, "parts of {size} bytes");
            // Whole events only, at most a write's worth each: 200 events and the end in four.
            assert!(writes.iter().all(|write| write.ends_with("\n\n")), "{size}");
            assert_eq!(
                writes.len(),
                events.div_ceil(MAX_EVENTS_PER_WRITE),
                "{size}"
            );
        }
    }

    #[tokio::test]
    async fn an_event_of_the_largest_size_passes_whole_between_small_ones() {
        let big = format!(
            r#"{{"choices":[{{"delta":{{"content":"{}"}}}}]}}"#,
            "y".repeat(MAX_SSE_EVENT_BYTES_FOR_TEST)
        );
        let upstream = format!("data: {CHUNK}\n\ndata: {big}\n\ndata: {CHUNK}\n\ndata: [DONE]\n\n");
        let writes = writes_of(split_every(&upstream, 4096)).await;
        assert_eq!(writes.concat(), upstream);
    }

    #[tokio::test]
    async fn usage_chunk_is_dropped_unless_the_app_asked_for_it() {
        let (text, stats) = run(upstream(true), false, Duration::from_secs(5)).await;
        assert_eq!(text, format!("data: {CHUNK}\n\ndata: [DONE]\n\n"));
        assert_eq!(stats.snapshot()["tokens"]["completion"], 1);
        assert_eq!(stats.snapshot()["active_streams"], 0);

        let (text, _) = run(upstream(true), true, Duration::from_secs(5)).await;
        assert_eq!(
            text,
            format!("data: {CHUNK}\n\ndata: {USAGE_CHUNK}\n\ndata: [DONE]\n\n")
        );
    }

    #[tokio::test]
    async fn a_stream_without_usage_chunk_passes_through() {
        let (text, stats) = run(upstream(false), true, Duration::from_secs(5)).await;
        assert_eq!(text, format!("data: {CHUNK}\n\ndata: [DONE]\n\n"));
        assert_eq!(stats.snapshot()["errors"], serde_json::json!({}));
    }

    #[tokio::test]
    async fn an_error_trailer_ends_the_stream_with_an_error_event() {
        let error = OpenAiError::new(ErrorKind::BadGateway, "worker died");
        let parts = vec![
            data(&format!("data: {CHUNK}\n\n")),
            trailer(ERROR, &serde_json::to_string(&error).unwrap()),
        ];
        let (text, stats) = run(parts, false, Duration::from_secs(5)).await;
        let (first, last) = text.split_once("\n\n").unwrap();
        assert_eq!(first, format!("data: {CHUNK}"));
        let last: OpenAiError =
            serde_json::from_str(last.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(last, error);
        assert!(!text.contains(DONE));
        assert_eq!(stats.snapshot()["errors"]["bad_gateway"], 1);
    }

    #[tokio::test]
    async fn an_error_trailer_wins_over_done() {
        let error = OpenAiError::new(ErrorKind::Timeout, "too slow");
        let parts = vec![
            data("data: [DONE]\n\n"),
            trailer(ERROR, &serde_json::to_string(&error).unwrap()),
        ];
        let (text, _) = run(parts, false, Duration::from_secs(5)).await;
        assert!(text.contains("too slow"), "{text}");
        assert!(!text.contains(DONE), "{text}");
    }

    #[tokio::test]
    async fn a_body_error_ends_the_stream_with_an_error_event() {
        let parts = vec![
            data(&format!("data: {CHUNK}\n\n")),
            Err("stream reset".to_owned()),
            data("data: never\n\n"),
        ];
        let (text, stats) = run(parts, false, Duration::from_secs(5)).await;
        assert!(text.starts_with(&format!("data: {CHUNK}\n\n")));
        assert!(text.contains("stream reset"), "{text}");
        assert!(text.contains("\"bad_gateway\""), "{text}");
        assert!(!text.contains("never"));
        assert_eq!(stats.snapshot()["errors"]["bad_gateway"], 1);
    }

    #[tokio::test]
    async fn an_event_that_never_ends_ends_the_stream_with_an_error_once_past_the_limit() {
        // An endless line without a newline: an unbounded parser would buffer it forever.
        let endless = futures::stream::iter([data(&format!("data: {CHUNK}\n\n")), data("data: ")])
            .chain(futures::stream::repeat_with(|| data("xxxxxxxxxxxxxxxx")));
        let mut options = options_for(false, Duration::from_secs(60));
        options.max_event_bytes = 1000;
        let (text, stats) = run_stream(endless, options).await;
        assert!(text.starts_with(&format!("data: {CHUNK}\n\n")), "{text}");
        assert!(text.contains("larger than 1000 bytes"), "{text}");
        assert!(!text.contains("xxxx") && !text.contains(DONE), "{text}");
        assert_eq!(stats.snapshot()["errors"]["bad_gateway"], 1);
    }

    #[tokio::test]
    async fn an_end_without_done_is_an_error() {
        let parts = vec![data(&format!("data: {CHUNK}\n\n")), usage_trailer()];
        let (text, _) = run(parts, false, Duration::from_secs(5)).await;
        assert!(text.contains("before its [DONE] marker"), "{text}");
    }

    #[tokio::test]
    async fn the_deadline_ends_a_stalled_stream_and_drops_upstream() {
        let stats = NodeStats::new("client");
        let (tx, rx) = futures::channel::mpsc::unbounded::<Part>();
        tx.unbounded_send(data(&format!("data: {CHUNK}\n\n")))
            .unwrap();
        let options = options(&stats, false, Duration::from_millis(50));
        let chunks: Vec<_> = rewrite_sse(StreamBody::new(rx), options).collect().await;
        assert_eq!(chunks.len(), 2);
        let last = String::from_utf8(chunks[1].as_ref().unwrap().to_vec()).unwrap();
        assert!(last.contains("\"timeout\""), "{last}");
        // The stream is over, so the upstream body (the channel's receiver) has been dropped.
        assert!(tx.is_closed());
        assert_eq!(stats.snapshot()["errors"]["timeout"], 1);
    }

    #[tokio::test]
    async fn dropping_the_app_side_drops_upstream() {
        let stats = NodeStats::new("client");
        let (tx, rx) = futures::channel::mpsc::unbounded::<Part>();
        tx.unbounded_send(data(&format!("data: {CHUNK}\n\n")))
            .unwrap();
        let options = options(&stats, false, Duration::from_secs(60));
        let mut stream = Box::pin(rewrite_sse(StreamBody::new(rx), options));
        assert!(stream.next().await.is_some());
        assert!(!tx.is_closed());
        assert_eq!(stats.snapshot()["active_streams"], 1);
        drop(stream);
        assert!(tx.is_closed());
        assert_eq!(stats.snapshot()["active_streams"], 0);
    }

    #[test]
    fn named_and_multi_line_events_are_re_encoded_faithfully() {
        let event = Sse::default().event("ping").data("a\nb");
        let mut out = BytesMut::new();
        put_event(&mut out, &event);
        assert_eq!(&out[..], b"event: ping\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn only_the_final_usage_chunk_counts_as_usage_chunk() {
        assert!(is_usage_chunk(USAGE_CHUNK));
        assert!(!is_usage_chunk(CHUNK));
        assert!(!is_usage_chunk(
            r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_chunk("not json \"usage\""));
    }

    #[test]
    fn cost_from_the_trailer_joins_the_usage() {
        let mut trailers = HeaderMap::new();
        trailers.insert(
            COST,
            HeaderValue::from_static(
                r#"{"prompt_total_cost":3,"completion_total_cost":4,"total_cost":7}"#,
            ),
        );
        let priced = with_cost(USAGE_CHUNK.as_bytes(), &trailers).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&priced).unwrap();
        assert_eq!(value["usage"]["total_cost"], 7);
        assert_eq!(value["usage"]["completion_tokens"], 1);
        assert!(
            with_cost(CHUNK.as_bytes(), &trailers).is_none(),
            "no usage object, nothing to price"
        );
        assert!(with_cost(USAGE_CHUNK.as_bytes(), &HeaderMap::new()).is_none());
    }
}
