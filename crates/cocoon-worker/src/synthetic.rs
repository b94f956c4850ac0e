//! The synthetic engine: an OpenAI-compatible server that streams fixed text at a fixed rate.
//!
//! It exists for benchmarks and tests only (its model is literally named `synthetic`); it measures
//! the network, never a model. Each request yields `max_tokens` chunks (default 16) of
//! `chunk_bytes` bytes each, one "token" per chunk, with usage counted the same way.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cocoon_node::reply::error_response;
use cocoon_proto::ErrorKind;
use futures::stream::{self, StreamExt};
use http::header;
use serde_json::{json, Value};

/// The model name the synthetic engine serves.
pub const SYNTHETIC_MODEL: &str = "synthetic";

/// Shape of the synthetic stream.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticParams {
    /// Bytes of text per chunk.
    pub chunk_bytes: usize,
    /// Pause between chunks.
    pub interval: Duration,
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
    let tokens = request["max_tokens"]
        .as_u64()
        .or_else(|| request["max_completion_tokens"].as_u64())
        .unwrap_or(16);
    let prompt_tokens = (body.len() as u64 / 4).max(1);
    let stream = request["stream"].as_bool().unwrap_or(false);
    let include_usage = request["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let text: String = "x".repeat(params.chunk_bytes);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "total_tokens": prompt_tokens + tokens,
    });
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    if !stream {
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
    let interval = params.interval;
    let chunks = stream::iter(0..tokens).then(move |_| {
        let chunk = chunk.clone();
        async move {
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
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
}
