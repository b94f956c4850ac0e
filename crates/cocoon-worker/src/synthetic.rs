//! The synthetic engine: an OpenAI-compatible server that streams fixed text at a fixed rate.
//!
//! It exists for benchmarks and tests only (its model is literally named `synthetic`); it measures
//! the network, never a model. Each request yields `max_tokens` chunks (default 16) of
//! `chunk_bytes` bytes each, one "token" per chunk, with usage counted the same way. Like a real
//! model it has a context window ([`SYNTHETIC_CONTEXT_TOKENS`]): a request for more is refused
//! with `context_length_exceeded`, so no request sizes its memory.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cocoon_node::reply::error_response;
use cocoon_proto::limits::{MAX_ANSWER_BYTES, MAX_COMPLETION_TOKENS_FIELD, MAX_TOKENS_FIELD};
use cocoon_proto::{completion_limit, ErrorKind, TokenField};
use futures::stream::{self, StreamExt};
use http::header;
use serde_json::{json, Value};

/// The model name the synthetic engine serves.
pub const SYNTHETIC_MODEL: &str = "synthetic";

/// The most completion tokens one synthetic answer may have.
pub const SYNTHETIC_CONTEXT_TOKENS: u64 = 1 << 16;

/// Shape of the synthetic stream.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticParams {
    /// Bytes of text per chunk.
    pub chunk_bytes: usize,
    /// Pause between chunks.
    pub interval: Duration,
    /// Without a pause, hand each chunk to the connection on its own (it is written and flushed
    /// alone), as vLLM and llama.cpp do token by token; otherwise ready chunks go out together.
    pub flush_each_chunk: bool,
}

/// An OpenAI-compatible router (`/v1/chat/completions`, `/v1/completions`, `/v1/models`).
pub fn router(params: SyntheticParams) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .with_state(params)
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": SYNTHETIC_MODEL, "object": "model", "owned_by": "cocoon"}]}),
    )
}

async fn chat(State(params): State<SyntheticParams>, body: Bytes) -> Response {
    answer(params, body, true).await
}

async fn completions(State(params): State<SyntheticParams>, body: Bytes) -> Response {
    answer(params, body, false).await
}

async fn answer(params: SyntheticParams, body: Bytes, chat: bool) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return error_response(ErrorKind::InvalidRequest, format!("invalid JSON: {error}"))
        }
    };
    let tokens = match completion_limit(
        TokenField::read(request.get(MAX_TOKENS_FIELD)),
        TokenField::read(request.get(MAX_COMPLETION_TOKENS_FIELD)),
    ) {
        Ok(tokens) => tokens.unwrap_or(16),
        Err(error) => return error_response(ErrorKind::InvalidRequest, error.to_string()),
    };
    let stream = request["stream"].as_bool().unwrap_or(false);
    // A whole answer is held in memory: it must fit an answer's size limit too.
    let answer_bytes = usize::try_from(tokens)
        .ok()
        .and_then(|tokens| tokens.checked_mul(params.chunk_bytes));
    if tokens > SYNTHETIC_CONTEXT_TOKENS
        || (!stream && answer_bytes.is_none_or(|bytes| bytes > MAX_ANSWER_BYTES))
    {
        return error_response(
            ErrorKind::ContextLength,
            format!(
                "the synthetic model's context is {SYNTHETIC_CONTEXT_TOKENS} tokens \
                 ({MAX_ANSWER_BYTES} bytes in one answer); {tokens} were requested"
            ),
        );
    }
    let prompt_tokens = (body.len() as u64 / 4).max(1);
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let text: String = "x".repeat(params.chunk_bytes);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "total_tokens": prompt_tokens.saturating_add(tokens),
    });
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    if !stream {
        // Bounded above: at most MAX_ANSWER_BYTES.
        let content = text.repeat(tokens as usize);
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": content, "finish_reason": "length"})
        };
        return Json(json!({
            "id": "synthetic", "object": object, "created": 0, "model": SYNTHETIC_MODEL,
            "choices": [choice], "usage": usage,
        }))
        .into_response();
    }
    let chunk_object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let delta = |content: &str| {
        if chat {
            json!({"index": 0, "delta": {"content": content}, "finish_reason": null})
        } else {
            json!({"index": 0, "text": content, "finish_reason": null})
        }
    };
    let chunk = Bytes::from(format!(
        "data: {}\n\n",
        json!({"id": "synthetic", "object": chunk_object, "created": 0, "model": SYNTHETIC_MODEL,
               "choices": [delta(&text)]})
    ));
    let mut tail = Vec::new();
    if include_usage {
        tail.push(Bytes::from(format!(
            "data: {}\n\n",
            json!({"id": "synthetic", "object": chunk_object, "created": 0, "model": SYNTHETIC_MODEL,
                   "choices": [], "usage": usage})
        )));
    }
    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let (interval, flush_each_chunk) = (params.interval, params.flush_each_chunk);
    let chunks = stream::iter(0..tokens).then(move |_| {
        let chunk = chunk.clone();
        async move {
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            } else if flush_each_chunk {
                // One pending poll: the connection writes out what it holds before the next chunk.
                tokio::task::yield_now().await;
            }
            chunk
        }
    });
    let body = chunks
        .chain(stream::iter(tail))
        .map(Ok::<Bytes, Infallible>);
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn params() -> SyntheticParams {
        SyntheticParams {
            chunk_bytes: 8,
            interval: Duration::ZERO,
            flush_each_chunk: false,
        }
    }

    #[tokio::test]
    async fn streams_max_tokens_chunks_then_usage_then_done() {
        let request = http::Request::post("/v1/chat/completions")
            .body(axum::body::Body::from(
                r#"{"model":"synthetic","stream":true,"max_tokens":3,"stream_options":{"include_usage":true}}"#,
            ))
            .unwrap();
        let response = router(params()).oneshot(request).await.unwrap();
        let text = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&text).unwrap();
        assert_eq!(text.matches("xxxxxxxx").count(), 3);
        assert!(text.contains("\"completion_tokens\":3"));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[tokio::test]
    async fn answers_without_stream_in_one_json() {
        let request = http::Request::post("/v1/completions")
            .body(axum::body::Body::from(
                r#"{"model":"synthetic","max_tokens":2,"prompt":"hi"}"#,
            ))
            .unwrap();
        let response = router(params()).oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["choices"][0]["text"], "x".repeat(16));
        assert_eq!(value["usage"]["completion_tokens"], 2);
    }

    #[tokio::test]
    async fn requests_beyond_its_context_are_refused_without_allocating_them() {
        for body in [
            r#"{"model":"synthetic","max_tokens":65537}"#,
            r#"{"model":"synthetic","max_completion_tokens":65537,"stream":true}"#,
        ] {
            let request = http::Request::post("/v1/chat/completions")
                .body(axum::body::Body::from(body))
                .unwrap();
            let response = router(params()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), 400, "{body}");
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let error: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(error["error"]["code"], "context_length_exceeded", "{body}");
        }
        // Two limits that disagree (the engine cannot pick one), and limits past any context.
        for body in [
            r#"{"model":"synthetic","max_completion_tokens":1,"max_tokens":1000}"#,
            r#"{"model":"synthetic","max_tokens":1000000000}"#,
            r#"{"model":"synthetic","max_tokens":18446744073709551615}"#,
        ] {
            let request = http::Request::post("/v1/chat/completions")
                .body(axum::body::Body::from(body))
                .unwrap();
            let response = router(params()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), 400, "{body}");
        }
    }
}
