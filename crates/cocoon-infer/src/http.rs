//! The OpenAI-compatible HTTP surface: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `GET /v1/models`, with streaming as server-sent events in OpenAI's (and vLLM's) exact shape.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_proto::ErrorKind;
use futures::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::engine::{Engine, Event, FinishReason};
use crate::openai::{
    ApiError, ChatCompletionRequest, CommonParams, CompletionRequest, Generation, PromptInput,
};

/// Largest request body accepted (413 beyond). Generous for any prompt that fits a context.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// The router serving `engine` in OpenAI's API. Errors are OpenAI error JSON.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(engine)
}

/// Which endpoint a response is shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completion,
}

async fn chat_completions(
    State(engine): State<Arc<Engine>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let req: ChatCompletionRequest = parse_body(body)?;
        let generation = prepare(&engine, &req.common)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        let messages = req
            .messages
            .iter()
            .map(|m| Ok((m.role.clone(), m.text()?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        let tokens = blocking(&engine, move |engine| {
            let prompt = engine.render_chat(&messages)?;
            Ok(engine.tokenize(&prompt))
        })
        .await?;
        run(&engine, Api::Chat, tokens, generation).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(
    State(engine): State<Arc<Engine>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let req: CompletionRequest = parse_body(body)?;
        let generation = prepare(&engine, &req.common)?;
        let tokens = match req.prompt_input()? {
            PromptInput::Text(text) => {
                blocking(&engine, move |engine| Ok(engine.tokenize(&text))).await?
            }
            PromptInput::Tokens(ids) => engine.tokens_from_ids(&ids)?,
        };
        run(&engine, Api::Completion, tokens, generation).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn models(State(engine): State<Arc<Engine>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{
            "id": engine.model_name(),
            "object": "model",
            "created": unix_now(),
            "owned_by": "cocoon",
            "max_model_len": engine.context_length(),
        }],
    }))
    .into_response()
}

async fn not_found() -> Response {
    ApiError::new(ErrorKind::NotFound, "no such endpoint").into_response()
}

/// The JSON body, or an OpenAI error: 413 when over [`BODY_LIMIT`], 400 when malformed.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("request body is larger than {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::new(ErrorKind::InvalidRequest, e.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequest,
            format!("invalid request body: {e}"),
        )
    })
}

/// Checks the model name and the generation parameters.
fn prepare(engine: &Engine, common: &CommonParams) -> Result<Generation, ApiError> {
    if let Some(model) = &common.model {
        if model != engine.model_name() {
            return Err(ApiError(
                cocoon_proto::OpenAiError::new(
                    ErrorKind::ModelNotFound,
                    format!(
                        "the model `{model}` does not exist; this engine serves `{}`",
                        engine.model_name()
                    ),
                )
                .with_param("model"),
            ));
        }
    }
    common.validate(random_u64() as u32)
}

/// Runs tokenizer work off the async runtime (long prompts take milliseconds).
async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    work: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || work(&engine))
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("tokenizer task failed: {e}")))?
}

/// Submits the generation and answers in one piece or as a stream.
async fn run(
    engine: &Engine,
    api: Api,
    tokens: Vec<llama_cpp_2::token::LlamaToken>,
    generation: Generation,
) -> Result<Response, ApiError> {
    let events = engine.submit(
        tokens,
        generation.max_tokens,
        generation.sampling,
        generation.stop,
    )?;
    let meta = ResponseMeta {
        api,
        id: response_id(api),
        created: unix_now(),
        model: engine.model_name().to_owned(),
        include_usage: generation.include_usage,
    };
    if generation.stream {
        Ok(Sse::new(sse_stream(meta, events)).into_response())
    } else {
        collect(meta, events)
            .await
            .map(|body| Json(body).into_response())
    }
}

/// What every response and chunk of one request repeats.
#[derive(Debug, Clone)]
struct ResponseMeta {
    api: Api,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

fn usage_json(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": u64::from(prompt_tokens) + u64::from(completion_tokens),
    })
}

/// Waits for the whole answer and shapes it as `chat.completion` or `text_completion`.
async fn collect(
    meta: ResponseMeta,
    mut events: mpsc::UnboundedReceiver<Event>,
) -> Result<Value, ApiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Failed(message) => return Err(ApiError::new(ErrorKind::Internal, message)),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let choice = match meta.api {
                    Api::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": finish.as_str(),
                    }),
                    Api::Completion => json!({
                        "index": 0,
                        "text": text,
                        "logprobs": null,
                        "finish_reason": finish.as_str(),
                    }),
                };
                return Ok(json!({
                    "id": meta.id,
                    "object": match meta.api { Api::Chat => "chat.completion", Api::Completion => "text_completion" },
                    "created": meta.created,
                    "model": meta.model,
                    "choices": [choice],
                    "usage": usage_json(prompt_tokens, completion_tokens),
                }));
            }
        }
    }
    Err(ApiError::new(
        ErrorKind::Internal,
        "the engine stopped before finishing",
    ))
}

impl ResponseMeta {
    /// One streamed chunk with a single choice.
    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<FinishReason>) -> Value {
        let finish_reason = finish.map(FinishReason::as_str);
        let (object, choice) = match self.api {
            Api::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(text) = text {
                    delta.insert("content".into(), json!(text));
                }
                (
                    "chat.completion.chunk",
                    json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}),
                )
            }
            Api::Completion => (
                "text_completion",
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason}),
            ),
        };
        let mut chunk = json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The final usage-only chunk sent when `stream_options.include_usage` is set.
    fn usage_chunk(&self, prompt_tokens: u32, completion_tokens: u32) -> Value {
        json!({
            "id": self.id,
            "object": match self.api { Api::Chat => "chat.completion.chunk", Api::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(prompt_tokens, completion_tokens),
        })
    }
}

/// State of one SSE stream.
struct StreamState {
    meta: ResponseMeta,
    events: mpsc::UnboundedReceiver<Event>,
    started: bool,
    ended: bool,
}

/// The answer as SSE: chunks as text arrives, a final chunk with `finish_reason`, an optional
/// usage chunk, then `[DONE]`. Dropping the stream (client gone) drops the event receiver, which
/// the engine notices and frees the sequence.
fn sse_stream(
    meta: ResponseMeta,
    events: mpsc::UnboundedReceiver<Event>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = StreamState {
        meta,
        events,
        started: false,
        ended: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        let mut out: Vec<Value> = Vec::new();
        if !state.started && state.meta.api == Api::Chat {
            // OpenAI opens a chat stream with the role and empty content.
            out.push(state.meta.chunk(Some(""), true, None));
        }
        state.started = true;
        let done = |out: &mut Vec<Value>| out.push(Value::String("[DONE]".into()));
        match state.events.recv().await {
            Some(Event::Text(text)) => out.push(state.meta.chunk(Some(&text), false, None)),
            Some(Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                let empty = match state.meta.api {
                    Api::Chat => None,
                    Api::Completion => Some(""),
                };
                out.push(state.meta.chunk(empty, false, Some(finish)));
                if state.meta.include_usage {
                    out.push(state.meta.usage_chunk(prompt_tokens, completion_tokens));
                }
                done(&mut out);
                state.ended = true;
            }
            Some(Event::Failed(message)) => {
                out.push(
                    serde_json::to_value(ApiError::new(ErrorKind::Internal, message).0)
                        .unwrap_or(Value::Null),
                );
                done(&mut out);
                state.ended = true;
            }
            None => {
                let error =
                    ApiError::new(ErrorKind::Internal, "the engine stopped before finishing").0;
                out.push(serde_json::to_value(error).unwrap_or(Value::Null));
                done(&mut out);
                state.ended = true;
            }
        }
        let frames: Vec<Result<SseEvent, Infallible>> = out
            .into_iter()
            .map(|value| {
                let data = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                Ok(SseEvent::default().data(data))
            })
            .collect();
        Some((stream::iter(frames), state))
    })
    .flatten()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random 64-bit value from the standard library's per-instance random hasher keys: enough for
/// response ids and default seeds, which need to differ, not to be secret.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(unix_now());
    hasher.finish()
}

fn response_id(api: Api) -> String {
    let prefix = match api {
        Api::Chat => "chatcmpl",
        Api::Completion => "cmpl",
    };
    format!("{prefix}-{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(api: Api, include_usage: bool) -> ResponseMeta {
        ResponseMeta {
            api,
            id: "id-1".into(),
            created: 7,
            model: "m".into(),
            include_usage,
        }
    }

    async fn frames(meta: ResponseMeta, events: Vec<Event>) -> Vec<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        for e in events {
            tx.send(e).unwrap();
        }
        drop(tx);
        sse_stream::SseStream::new(Sse::new(sse_stream(meta, rx)).into_response().into_body())
            .map(|event| event.unwrap().data.unwrap_or_default())
            .collect()
            .await
    }

    #[tokio::test]
    async fn chat_stream_has_openai_shape_with_usage_chunk() {
        let out = frames(
            meta(Api::Chat, true),
            vec![
                Event::Text("Hel".into()),
                Event::Text("lo".into()),
                Event::Done {
                    finish: FinishReason::Length,
                    prompt_tokens: 3,
                    completion_tokens: 2,
                },
            ],
        )
        .await;
        assert_eq!(out.len(), 6, "{out:?}");
        let parsed: Vec<Value> = out[..5]
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        assert_eq!(parsed[0]["object"], "chat.completion.chunk");
        assert_eq!(
            parsed[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(parsed[0]["usage"], Value::Null);
        assert_eq!(parsed[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(parsed[2]["choices"][0]["delta"]["content"], "lo");
        assert_eq!(parsed[3]["choices"][0]["finish_reason"], "length");
        assert_eq!(parsed[3]["choices"][0]["delta"], json!({}));
        assert_eq!(parsed[4]["choices"], json!([]));
        assert_eq!(
            parsed[4]["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
        );
        assert_eq!(out[5], "[DONE]");
    }

    #[tokio::test]
    async fn completion_stream_without_usage_has_no_usage_field() {
        let out = frames(
            meta(Api::Completion, false),
            vec![
                Event::Text("x".into()),
                Event::Done {
                    finish: FinishReason::Stop,
                    prompt_tokens: 1,
                    completion_tokens: 1,
                },
            ],
        )
        .await;
        assert_eq!(out.len(), 3, "{out:?}");
        let first: Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(first["object"], "text_completion");
        assert_eq!(first["choices"][0]["text"], "x");
        assert!(first.get("usage").is_none());
        let last: Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(out[2], "[DONE]");
    }

    #[tokio::test]
    async fn engine_failure_mid_stream_is_an_error_event() {
        let out = frames(meta(Api::Chat, false), vec![Event::Failed("boom".into())]).await;
        let error: Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(error["error"]["message"], "boom");
        assert_eq!(error["error"]["code"], "internal_error");
        assert_eq!(out.last().unwrap(), "[DONE]");
    }

    #[tokio::test]
    async fn collected_completion_has_usage_and_finish_reason() {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Event::Text("Paris".into())).unwrap();
        tx.send(Event::Done {
            finish: FinishReason::Stop,
            prompt_tokens: 10,
            completion_tokens: 2,
        })
        .unwrap();
        let body = collect(meta(Api::Chat, false), rx).await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "Paris");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["total_tokens"], 12);
    }

    #[test]
    fn ids_differ() {
        assert_ne!(response_id(Api::Chat), response_id(Api::Chat));
        assert!(response_id(Api::Completion).starts_with("cmpl-"));
    }

    #[test]
    fn oversized_and_malformed_bodies_map_to_openai_errors() {
        let e = parse_body::<Value>(Ok(Bytes::from_static(b"{not json"))).unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(e.0.kind(), Some(ErrorKind::InvalidRequest));
    }
}
