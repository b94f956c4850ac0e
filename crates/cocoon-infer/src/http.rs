//! The OpenAI-compatible HTTP surface: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `GET /v1/models`, with streaming as server-sent events in OpenAI's (and vLLM's) exact shape.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cocoon_proto::ErrorKind;
use llama_cpp_2::token::LlamaToken;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::answer::{collect, sse_stream, Api, ChoiceSpec, ResponseMeta};
use crate::engine::Engine;
use crate::json_grammar;
use crate::openai::{
    ApiError, ChatCompletionRequest, CommonParams, CompletionRequest, PromptInput, ResponseFormat,
};
use crate::params::{Endpoint, Generation, MAX_CHOICES};
use crate::tools::{self, CallMode};

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

async fn chat_completions(
    State(engine): State<Arc<Engine>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let req: ChatCompletionRequest = parse_body(body)?;
        let mut generation = prepare(&engine, &req.common, Endpoint::Chat)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        let tools = tools::plan(
            req.tools.as_deref().unwrap_or_default(),
            req.tool_choice.as_ref(),
        )?;
        let format = format_grammar(req.response_format.as_ref())?;
        let (grammar, grammar_param) = match (tools.grammar, format) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "response_format",
                    "response_format cannot be combined with tool calls on this engine; \
                     use tool_choice \"none\" or drop response_format",
                ))
            }
            (Some(grammar), None) => (Some(grammar), "tools"),
            (None, Some(grammar)) => (Some(grammar), "response_format"),
            (None, None) => (None, ""),
        };
        let mut messages = req
            .messages
            .iter()
            .map(|m| Ok((m.role.clone(), m.rendered()?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        if let Some(instructions) = tools.instructions {
            match messages.first_mut() {
                Some((role, text)) if role == "system" => {
                    text.push_str("\n\n");
                    text.push_str(&instructions);
                }
                _ => messages.insert(0, ("system".into(), instructions)),
            }
        }
        let (tokens, grammar) = blocking(&engine, move |engine| {
            if let Some(grammar) = &grammar {
                engine.check_grammar(grammar, grammar_param)?;
            }
            let prompt = engine.render_chat(&messages)?;
            Ok((engine.tokenize(&prompt), grammar))
        })
        .await?;
        generation.sampling.grammar = grammar.map(Arc::from);
        let prompts = vec![PromptJob { tokens, echo: None }];
        run(&engine, Api::Chat, prompts, generation, tools.mode).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// The grammar `response_format` asks for, if any.
fn format_grammar(format: Option<&ResponseFormat>) -> Result<Option<String>, ApiError> {
    let Some(format) = format else {
        return Ok(None);
    };
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(json_grammar::object_grammar())),
        "json_schema" => {
            let schema = format
                .json_schema
                .as_ref()
                .and_then(|f| f.schema.as_ref())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "response_format",
                        "response_format json_schema needs json_schema.schema",
                    )
                })?;
            json_grammar::schema_grammar(schema)
                .map(Some)
                .map_err(|e| ApiError::invalid("response_format", e.to_string()))
        }
        other => Err(ApiError::invalid(
            "response_format",
            format!("response_format type must be text, json_object or json_schema, not {other:?}"),
        )),
    }
}

async fn completions(
    State(engine): State<Arc<Engine>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let req: CompletionRequest = parse_body(body)?;
        let generation = prepare(&engine, &req.common, Endpoint::Completion)?;
        let inputs = req.prompt_inputs()?;
        if inputs.len().saturating_mul(generation.n) > MAX_CHOICES {
            return Err(ApiError::invalid(
                "n",
                format!("prompts × n must be at most {MAX_CHOICES}"),
            ));
        }
        let echo = req.echo.unwrap_or(false);
        if echo && generation.sampling.logprobs.is_some() {
            return Err(ApiError::invalid(
                "echo",
                "echo together with logprobs (the prompt's log-probabilities) is not supported \
                 by this engine",
            ));
        }
        let prompts = blocking(&engine, move |engine| {
            inputs
                .into_iter()
                .map(|input| {
                    let tokens = match input {
                        PromptInput::Text(text) => engine.tokenize(&text),
                        PromptInput::Tokens(ids) => engine.tokens_from_ids(&ids, "prompt")?,
                    };
                    let echo = echo.then(|| engine.detokenize(&tokens));
                    Ok(PromptJob { tokens, echo })
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?;
        run(
            &engine,
            Api::Completion,
            prompts,
            generation,
            CallMode::Never,
        )
        .await
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
fn prepare(
    engine: &Engine,
    common: &CommonParams,
    endpoint: Endpoint,
) -> Result<Generation, ApiError> {
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
    let generation = common.validate(random_u64() as u32, endpoint)?;
    let biased: Vec<i32> = generation
        .sampling
        .logit_bias
        .iter()
        .map(|&(t, _)| t)
        .collect();
    engine.tokens_from_ids(&biased, "logit_bias")?;
    Ok(generation)
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

/// One prompt of a request, tokenized.
struct PromptJob {
    tokens: Vec<LlamaToken>,
    /// The prompt's text, when it is echoed.
    echo: Option<String>,
}

/// Submits `n` generations per prompt (choice `p × n + k` is prompt `p`'s `k`-th) and answers in
/// one piece or as a stream. If any cannot be queued, none runs: the receivers already made are
/// dropped, which cancels their jobs.
async fn run(
    engine: &Engine,
    api: Api,
    prompts: Vec<PromptJob>,
    generation: Generation,
    mode: CallMode,
) -> Result<Response, ApiError> {
    let mut choices = Vec::with_capacity(prompts.len() * generation.n);
    for prompt in prompts {
        for k in 0..generation.n {
            let index = choices.len();
            let events = engine.submit(
                prompt.tokens.clone(),
                generation.max_tokens,
                generation.sampling.for_choice(index),
                generation.stop.clone(),
            )?;
            choices.push(ChoiceSpec {
                events,
                echo: prompt.echo.clone(),
                counts_prompt: k == 0,
                mode,
                call_id: format!("call_{:016x}{:08x}", random_u64(), random_u64() as u32),
            });
        }
    }
    let meta = ResponseMeta {
        api,
        id: response_id(api),
        created: unix_now(),
        model: engine.model_name().to_owned(),
        include_usage: generation.include_usage,
        logprobs: generation.sampling.logprobs.is_some(),
        token_ids: generation.token_ids,
    };
    if generation.stream {
        Ok(Sse::new(sse_stream(meta, choices)).into_response())
    } else {
        collect(meta, choices)
            .await
            .map(|body| Json(body).into_response())
    }
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

    #[test]
    fn ids_differ() {
        assert_ne!(response_id(Api::Chat), response_id(Api::Chat));
        assert!(response_id(Api::Completion).starts_with("cmpl-"));
    }

    #[test]
    fn oversized_and_malformed_bodies_map_to_openai_errors() {
        let e = parse_body::<serde_json::Value>(Ok(Bytes::from_static(b"{not json"))).unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(e.0.kind(), Some(ErrorKind::InvalidRequest));
    }

    #[test]
    fn response_formats_map_to_grammars_or_named_refusals() {
        let format = |v: serde_json::Value| serde_json::from_value::<ResponseFormat>(v).unwrap();
        assert_eq!(format_grammar(None).unwrap(), None);
        assert_eq!(
            format_grammar(Some(&format(json!({"type": "text"})))).unwrap(),
            None
        );
        assert!(
            format_grammar(Some(&format(json!({"type": "json_object"}))))
                .unwrap()
                .unwrap()
                .starts_with("root ::= object")
        );
        let schema = format(
            json!({"type": "json_schema", "json_schema": {"name": "x", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}),
        );
        assert!(format_grammar(Some(&schema))
            .unwrap()
            .unwrap()
            .contains("integer"));
        for bad in [
            json!({"type": "yaml"}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "string", "format": "email"}}}),
        ] {
            let e = format_grammar(Some(&format(bad.clone()))).unwrap_err();
            assert_eq!(e.0.error.param.as_deref(), Some("response_format"), "{bad}");
        }
    }
}
