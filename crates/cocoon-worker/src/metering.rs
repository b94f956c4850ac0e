//! Counting the tokens of an engine's answer while passing it through unchanged, and ending the
//! answer with the `x-cocoon-usage` trailer and the worker's signed `x-cocoon-receipt` (or
//! `x-cocoon-error` when the engine failed midway).
//!
//! Whatever the engine does, an answer never goes past the completion tokens the proxy reserved:
//! a stream is cut (cleanly, with `[DONE]`) after that many content chunks, and the usage reported
//! is capped at it. An engine event larger than
//! [`MAX_SSE_EVENT_BYTES`](cocoon_proto::limits::MAX_SSE_EVENT_BYTES) ends the answer with an
//! error instead of being buffered.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use cocoon_node::stats::NodeStats;
use cocoon_node::trailers::{error_trailers, usage_trailers};
use cocoon_node::Body;
use cocoon_proto::limits::SseEventLimit;
use cocoon_proto::{may_carry_usage, ErrorKind, OpenAiError, OpenAiUsage, TokenUsage};
use cocoon_receipt::AnswerText;
use futures::stream::{self, StreamExt};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyDataStream, StreamBody};
use serde::Deserialize;
use sse_stream::{Sse, SseByteStream};

use crate::ready_batch::next_batch;
use crate::receipt::ReceiptDraft;

/// The one field of an engine's answer (or stream chunk) the worker reads.
#[derive(Deserialize)]
struct UsageField {
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

/// Token usage in a JSON answer or chunk, if it carries a non-null `usage`.
pub fn usage_in(json: &[u8]) -> Option<TokenUsage> {
    let field: UsageField = serde_json::from_slice(json).ok()?;
    field.usage.as_ref().map(TokenUsage::from)
}

/// What of a stream chunk's choices the worker reads to tell a token from bookkeeping.
#[derive(Deserialize)]
struct ChunkChoices<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

/// Whether a stream chunk carries generated output (text, reasoning or a tool call), as opposed to
/// the role-only first chunk or the empty last one with `finish_reason` that engines also send.
/// A chunk that is not JSON of that shape counts as output: an engine cannot slip tokens past the
/// limit by malforming them.
fn carries_output(data: &str) -> bool {
    let Ok(chunk) = serde_json::from_str::<ChunkChoices>(data) else {
        return true;
    };
    chunk.choices.iter().any(|choice| {
        let non_empty =
            |text: &Option<std::borrow::Cow<str>>| text.as_ref().is_some_and(|t| !t.is_empty());
        non_empty(&choice.text)
            || choice.delta.as_ref().is_some_and(|delta| {
                non_empty(&delta.content)
                    || non_empty(&delta.reasoning_content)
                    || delta.tool_calls.is_some()
            })
    })
}

/// The trailers ending a successful answer: its usage, and its receipt when there is a draft.
async fn final_trailers(
    usage: &TokenUsage,
    draft: Option<ReceiptDraft>,
    answer: &AnswerText,
) -> HeaderMap {
    let mut trailers = usage_trailers(usage);
    if let Some(draft) = draft {
        draft.finish(usage, answer, &mut trailers).await;
    }
    trailers
}

/// `usage` with its completion (and the reasoning within it) capped at `limit`: what the worker
/// reports never exceeds what the proxy reserved.
fn capped(mut usage: TokenUsage, limit: Option<u64>) -> TokenUsage {
    if let Some(limit) = limit {
        usage.completion_tokens = usage.completion_tokens.min(limit);
        usage.reasoning_tokens = usage.reasoning_tokens.min(usage.completion_tokens);
    }
    usage
}

/// A complete (non-streamed) answer followed by its usage and receipt trailers; the usage is
/// capped at `limit` completion tokens.
pub async fn metered_answer(
    bytes: Bytes,
    stats: &NodeStats,
    receipt: Option<ReceiptDraft>,
    limit: Option<u64>,
) -> Body {
    let usage = capped(usage_in(&bytes).unwrap_or_default(), limit);
    stats.record_tokens(&usage);
    let mut answer = AnswerText::new();
    if receipt.is_some() {
        answer.add_json(&bytes);
    }
    let trailers = final_trailers(&usage, receipt, &answer).await;
    let frames = [
        Ok::<_, Infallible>(Frame::data(bytes)),
        Ok(Frame::trailers(trailers)),
    ];
    Body::new(StreamBody::new(stream::iter(frames)))
}

struct Meter {
    usage: Option<TokenUsage>,
    content_chunks: u64,
    /// The most content chunks relayed (the completion tokens reserved), if known.
    limit: Option<u64>,
    failure: Option<String>,
    /// The answer reached its limit: what follows from the engine is not relayed.
    cut: bool,
    finished: bool,
    /// The receipt to sign at the end.
    receipt: Option<ReceiptDraft>,
    /// The answer's text, gathered for the receipt (when there is one).
    answer: Option<AnswerText>,
}

impl Meter {
    /// A meter for an answer of at most `limit` content chunks, gathering its text for `receipt`.
    fn new(receipt: Option<ReceiptDraft>, limit: Option<u64>) -> Self {
        Meter {
            usage: None,
            content_chunks: 0,
            limit,
            failure: None,
            cut: false,
            finished: false,
            answer: receipt.is_some().then(AnswerText::new),
            receipt,
        }
    }

    /// Notes one event: the engine's usage, or one more content chunk (and its text). Returns
    /// whether the event is relayed: not a content chunk past the limit, which cuts the answer.
    fn observe(&mut self, data: &str) -> bool {
        if may_carry_usage(data) {
            if let Some(usage) = usage_in(data.as_bytes()) {
                self.usage = Some(usage);
                return true;
            }
        }
        if data == "[DONE]" {
            return true;
        }
        // Counted even after a usage chunk: an engine that sends its usage first must not stream
        // on past the limit.
        let at_limit = self.limit.is_some_and(|limit| self.content_chunks >= limit);
        // A chunk is parsed once: the receipt's reading of it tells output too; only a chunk it
        // finds no output in (bookkeeping, reasoning, a malformed one) is read again by the
        // meter's own rule, which counts anything malformed as output.
        let added = match &mut self.answer {
            Some(answer) if !at_limit => answer.add_json(data.as_bytes()),
            _ => false,
        };
        if !(added || carries_output(data)) {
            if let (true, Some(answer)) = (at_limit, &mut self.answer) {
                // Relayed, so part of the transcript the receipt is checked against.
                answer.add_json(data.as_bytes());
            }
            return true;
        }
        if at_limit {
            self.cut = true;
            return false;
        }
        self.content_chunks = self.content_chunks.saturating_add(1);
        true
    }

    /// The trailers ending a finished answer: the engine's usage (or, without one, a token per
    /// content chunk), capped at the limit.
    async fn finish(&mut self, stats: &NodeStats) -> HeaderMap {
        self.finished = true;
        let usage = self.usage.unwrap_or_else(|| {
            if !self.cut {
                tracing::warn!("engine sent no usage; counting one token per chunk");
            }
            TokenUsage {
                completion_tokens: self.content_chunks,
                ..TokenUsage::default()
            }
        });
        let usage = capped(usage, self.limit);
        stats.record_tokens(&usage);
        let answer = self.answer.take().unwrap_or_default();
        final_trailers(&usage, self.receipt.take(), &answer).await
    }
}

/// An SSE answer passed through unchanged, ending with the usage trailer.
///
/// Events the engine has already produced are sent together in one frame: a fast engine's burst
/// then costs one frame per hop instead of one per token, while a slow engine's tokens still
/// leave the moment they arrive.
///
/// Engines that ignore `stream_options.include_usage` send no usage; the completion is then counted
/// as one token per content chunk (how every known engine streams) and the prompt as unknown (0),
/// which never overcharges the client. So is an answer cut at its `limit` of content chunks: the
/// engine's usage never arrives, and the worker forgoes the prompt rather than guess it.
pub fn metered_stream(
    body: Body,
    stats: Arc<NodeStats>,
    receipt: Option<ReceiptDraft>,
    limit: Option<u64>,
) -> Body {
    let mut event_limit = SseEventLimit::default();
    let bytes = BodyDataStream::new(body).map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        event_limit.check(&chunk).map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(chunk)
    });
    let batches = Box::pin(SseByteStream::new(bytes));
    let meter = Meter::new(receipt, limit);
    let frames = stream::unfold(
        (batches, meter, stats),
        |(mut batches, mut meter, stats)| async move {
            if meter.finished {
                return None;
            }
            let frame = if meter.cut {
                Frame::trailers(meter.finish(&stats).await)
            } else if let Some(error) = meter.failure.take() {
                meter.finished = true;
                stats.record_error(ErrorKind::BadGateway);
                Frame::trailers(error_trailers(&OpenAiError::new(
                    ErrorKind::BadGateway,
                    format!("the engine's stream failed: {error}"),
                )))
            } else {
                match next_batch(&mut batches).await {
                    Some(batch) => {
                        let mut data = BytesMut::new();
                        for item in batch {
                            match item {
                                // Blocks without data (comments, retry hints) carry nothing
                                // for the app.
                                Ok(Sse {
                                    data: Some(event), ..
                                }) => {
                                    if !meter.observe(&event) {
                                        // Cut: the answer ends here, as a complete one.
                                        put_sse_event(&mut data, "[DONE]");
                                        break;
                                    }
                                    put_sse_event(&mut data, &event);
                                }
                                Ok(_) => {}
                                Err(error) => {
                                    // What arrived before the failure is delivered first; the error
                                    // trailer follows on the next poll.
                                    meter.failure = Some(error.to_string());
                                    break;
                                }
                            }
                        }
                        Frame::data(data.freeze())
                    }
                    None => Frame::trailers(meter.finish(&stats).await),
                }
            };
            Some((Ok::<_, Infallible>(frame), (batches, meter, stats)))
        },
    );
    Body::new(StreamBody::new(frames))
}

/// Appends one SSE event carrying `data` (each line of it prefixed, as the format requires).
fn put_sse_event(out: &mut BytesMut, data: &str) {
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_node::trailers::{read_error, read_usage};
    use http_body_util::BodyExt;

    async fn frames(body: Body) -> (String, Option<http::HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (
            String::from_utf8(collected.to_bytes().to_vec()).unwrap(),
            trailers,
        )
    }

    #[tokio::test]
    async fn passes_events_through_and_reports_the_engines_usage() {
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                   data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n\
                   data: [DONE]\n\n";
        let stats = NodeStats::new("worker");
        let (text, trailers) =
            frames(metered_stream(Body::from(sse), stats.clone(), None, None)).await;
        assert_eq!(text, sse);
        let usage = read_usage(&trailers.unwrap()).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 1));
        assert_eq!(stats.snapshot()["tokens"]["completion"], 1);
    }

    #[tokio::test]
    async fn counts_chunks_when_the_engine_sends_no_usage() {
        let sse = "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\"}]}\n\ndata: [DONE]\n\n";
        let (_, trailers) = frames(metered_stream(
            Body::from(sse),
            NodeStats::new("worker"),
            None,
            None,
        ))
        .await;
        assert_eq!(read_usage(&trailers.unwrap()).unwrap().completion_tokens, 2);
    }

    #[tokio::test]
    async fn an_engine_failure_midway_ends_with_an_error_trailer() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"data: {\"choices\":[]}\n\n")),
            Err(std::io::Error::other("engine crashed")),
        ];
        let body = Body::from_stream(stream::iter(chunks));
        let (text, trailers) =
            frames(metered_stream(body, NodeStats::new("worker"), None, None)).await;
        assert!(text.starts_with("data: {\"choices\":[]}"));
        let error = read_error(&trailers.unwrap()).unwrap();
        assert_eq!(error.kind(), Some(ErrorKind::BadGateway));
        assert!(error.error.message.contains("engine crashed"));
    }

    #[tokio::test]
    async fn a_complete_answer_carries_its_usage_trailer() {
        let json = Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#,
        );
        let (text, trailers) =
            frames(metered_answer(json.clone(), &NodeStats::new("worker"), None, None).await).await;
        assert_eq!(text.as_bytes(), &json[..]);
        assert_eq!(read_usage(&trailers.unwrap()).unwrap().completion_tokens, 3);
    }

    /// An engine that ignores the limit it was asked for: `chunks` content chunks, then its usage.
    fn runaway_engine(chunks: usize, reported_completion: u64) -> String {
        let mut sse = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n".repeat(chunks);
        sse.push_str(&format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{reported_completion}}}}}\n\ndata: [DONE]\n\n"
        ));
        sse
    }

    #[tokio::test]
    async fn a_stream_past_the_reserved_tokens_is_cut_and_ends_cleanly() {
        let stats = NodeStats::new("worker");
        let body = Body::from(runaway_engine(50, 50));
        let (text, trailers) = frames(metered_stream(body, stats.clone(), None, Some(3))).await;
        assert_eq!(text.matches("\"content\":\"x\"").count(), 3, "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let usage = read_usage(&trailers.unwrap()).unwrap();
        assert_eq!(usage.completion_tokens, 3);
        assert_eq!(stats.snapshot()["tokens"]["completion"], 3);
    }

    #[tokio::test]
    async fn an_answer_of_exactly_the_reserved_tokens_keeps_its_role_finish_and_usage_chunks() {
        // How vLLM and OpenAI stream: a role-only chunk, the tokens, an empty chunk with the
        // finish reason, the usage.
        let mut sse = String::from(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        );
        sse.push_str(
            &"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n".repeat(3),
        );
        sse.push_str(
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        );
        sse.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n");
        let (text, trailers) = frames(metered_stream(
            Body::from(sse),
            NodeStats::new("worker"),
            None,
            Some(3),
        ))
        .await;
        assert!(text.contains("finish_reason"), "{text}");
        let usage = read_usage(&trailers.unwrap()).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 3));
    }

    #[tokio::test]
    async fn usage_above_the_reserved_tokens_is_capped() {
        // Few chunks (an engine may pack many tokens into one), but a usage claiming more.
        let (_, trailers) = frames(metered_stream(
            Body::from(runaway_engine(2, 1_000_000)),
            NodeStats::new("worker"),
            None,
            Some(10),
        ))
        .await;
        let usage = read_usage(&trailers.unwrap()).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (5, 10));
        let json = Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":999,"completion_tokens_details":{"reasoning_tokens":999}}}"#,
        );
        let (_, trailers) =
            frames(metered_answer(json, &NodeStats::new("worker"), None, Some(4)).await).await;
        let usage = read_usage(&trailers.unwrap()).unwrap();
        assert_eq!((usage.completion_tokens, usage.reasoning_tokens), (4, 4));
    }

    /// A meter that gathers the answer's text (as it does when the answer gets a receipt).
    fn gathering_meter(limit: Option<u64>) -> Meter {
        Meter {
            answer: Some(AnswerText::new()),
            ..Meter::new(None, limit)
        }
    }

    /// The SSE transcript of `events` as relayed, and the meter after observing them.
    fn observe_all(meter: &mut Meter, events: &[&str]) -> String {
        let mut relayed = BytesMut::new();
        for event in events {
            if meter.observe(event) {
                put_sse_event(&mut relayed, event);
            }
        }
        String::from_utf8(relayed.to_vec()).unwrap()
    }

    #[test]
    fn the_text_the_receipt_hashes_is_the_relayed_transcripts() {
        // Two choices, the second of which only ever announces its role: the transcript the app
        // keeps (and `cocoon receipt` checks) has it, so the receipt's digest must too.
        let events = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            "[DONE]",
        ];
        let mut meter = gathering_meter(None);
        let transcript = observe_all(&mut meter, &events);
        assert_eq!(meter.content_chunks, 2);
        let gathered = meter.answer.as_ref().unwrap();
        assert_eq!(gathered.text(), "Hello");
        assert_eq!(
            gathered.sha256(),
            AnswerText::from_transcript(transcript.as_bytes()).sha256()
        );
    }

    #[test]
    fn hostile_chunks_count_as_output_and_cannot_pass_the_limit() {
        let deep = format!(
            r#"{{"choices":[{{"delta":{{"content":"x","n":{}1{}}}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let huge = format!(
            r#"{{"choices":[{{"delta":{{"content":"{}"}}}}]}}"#,
            "y".repeat(1 << 20)
        );
        let hostile = [
            // Nested past the parser's depth limit.
            deep.as_str(),
            // The same key twice: the empty one must not hide the token.
            r#"{"choices":[{"delta":{"content":"","content":"x"}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"}},{"delta":{"content":"x"}}],"choices":[]}"#,
            // Cut off, or not JSON at all.
            r#"{"choices":[{"delta":{"content":"x""#,
            "\u{0}\u{ff}garbage",
            // Text where a list belongs.
            r#"{"choices":[{"delta":{"content":"x","tool_calls":"oops"}}]}"#,
            huge.as_str(),
        ];
        for gathered in [false, true] {
            let mut meter = gathering_meter(Some(hostile.len() as u64 - 1));
            if !gathered {
                meter.answer = None;
            }
            let relayed: Vec<bool> = hostile.iter().map(|chunk| meter.observe(chunk)).collect();
            let mut expected = vec![true; hostile.len() - 1];
            expected.push(false);
            assert_eq!(relayed, expected, "gathering: {gathered}");
            assert!(meter.cut);
            assert_eq!(meter.content_chunks, hostile.len() as u64 - 1);
        }
    }

    #[tokio::test]
    async fn an_engine_event_without_an_end_ends_the_answer_with_an_error() {
        // The bytes of one event keep coming and never reach a newline.
        let endless = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"data: "))]).chain(
            stream::repeat_with(|| Ok(Bytes::from(vec![b'x'; 64 * 1024]))),
        );
        let (text, trailers) = frames(metered_stream(
            Body::from_stream(endless),
            NodeStats::new("worker"),
            None,
            None,
        ))
        .await;
        assert!(text.is_empty(), "nothing of the oversized event is relayed");
        let error = read_error(&trailers.unwrap()).unwrap();
        assert!(error.error.message.contains("larger than"), "{error:?}");
    }
}
