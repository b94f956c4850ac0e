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
        held_certificate: None,
        on_success: None,
    }
}

async fn run(parts: Vec<Part>, include_usage: bool, timeout: Duration) -> (String, Arc<NodeStats>) {
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
