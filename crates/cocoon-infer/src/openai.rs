//! The OpenAI request shapes this engine accepts, their validation, and the error type answered
//! to clients.
//!
//! Unknown fields are ignored (clients send many optional ones); fields that would change the
//! answer in ways this engine cannot honour (`n > 1`, `logprobs`, `tools`) are refused clearly
//! rather than silently dropped.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cocoon_proto::{completion_limit, ErrorKind, OpenAiError, TokenField};
use serde::Deserialize;

/// A request-level failure, answered as OpenAI error JSON with the kind's HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError(pub OpenAiError);

impl ApiError {
    /// An error of `kind`.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError(OpenAiError::new(kind, message))
    }

    /// An invalid-request error blaming the request field `param`.
    pub(crate) fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError(OpenAiError::new(ErrorKind::InvalidRequest, message).with_param(param))
    }

    /// The HTTP status this error is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        let code = self.0.kind().map_or(500, |kind| kind.http_status());
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.0)).into_response()
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Fields shared by chat and plain completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct CommonParams {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// A bool for chat, a count for completions: any truthy value is refused.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    #[serde(default)]
    pub tools: Option<Vec<serde_json::Value>>,
}

/// One chat message. `content` may be a string or a list of parts (only text parts are accepted).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// A message's `content`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part message.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChatCompletionRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// A completion `prompt`: a string, a list of one string, or token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i32>),
    TokenLists(Vec<Vec<i32>>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CompletionRequest {
    pub prompt: Prompt,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// How to pick each next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1 disables nucleus sampling.
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    pub seed: u32,
}

/// The validated, engine-facing form of the common parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Generation {
    /// `None`: up to the end of the context.
    pub max_tokens: Option<u32>,
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

impl CommonParams {
    /// Checks the parameters against OpenAI's ranges and what this engine supports.
    /// `random_seed` is used when the request names no seed.
    pub(crate) fn validate(&self, random_seed: u32) -> Result<Generation, ApiError> {
        if let Some(n) = self.n {
            if n != 1 {
                return Err(ApiError::invalid(
                    "n",
                    format!(
                        "n = {n} is not supported: this engine returns exactly one choice (n = 1)"
                    ),
                ));
            }
        }
        if self.logprobs.as_ref().is_some_and(|v| {
            !(v.is_null() || v == &serde_json::json!(false) || v == &serde_json::json!(0))
        }) {
            return Err(ApiError::invalid(
                "logprobs",
                "logprobs are not supported by this engine",
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::invalid(
                "tools",
                "tool calling is not supported by this engine",
            ));
        }
        // The rule every hop applies: one limit, or two equal ones.
        let max_tokens = completion_limit(
            TokenField::from_i64(self.max_tokens),
            TokenField::from_i64(self.max_completion_tokens),
        )
        .map_err(|error| ApiError::invalid(error.param(), error.to_string()))?
        .map(|limit| u32::try_from(limit).unwrap_or(u32::MAX));
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be between 0 and 2, got {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p must be in (0, 1], got {top_p}"),
            ));
        }
        // vLLM spells "disabled" as -1, llama.cpp as 0.
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => i32::try_from(k).unwrap_or(i32::MAX),
            Some(k) => {
                return Err(ApiError::invalid(
                    "top_k",
                    format!("top_k must be -1, 0 or positive, got {k}"),
                ))
            }
        };
        // Any 64-bit seed is accepted; its low 32 bits seed llama.cpp's sampler.
        let seed = self.seed.map_or(random_seed, |s| s as u32);
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        };
        let stream = self.stream.unwrap_or(false);
        let include_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        if include_usage && !stream {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ));
        }
        Ok(Generation {
            max_tokens,
            sampling: Sampling {
                temperature,
                top_p,
                top_k,
                seed,
            },
            stop,
            stream,
            include_usage,
        })
    }
}

impl ChatMessage {
    /// The message's text: a string, or its text parts joined. Other parts are refused.
    pub(crate) fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(MessageContent::Text(s)) => Ok(s.clone()),
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                "messages",
                                format!(
                                    "content parts of type {kind:?} are not supported; only text"
                                ),
                            ))
                        }
                    }
                }
                Ok(text)
            }
        }
    }
}

/// What a completion prompt turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PromptInput {
    Text(String),
    Tokens(Vec<i32>),
}

impl CompletionRequest {
    /// The single prompt, refusing batches and options this engine does not implement.
    pub(crate) fn prompt_input(&self) -> Result<PromptInput, ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::invalid(
                "echo",
                "echo is not supported by this engine",
            ));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid(
                "suffix",
                "suffix is not supported by this engine",
            ));
        }
        let batch_error =
            || ApiError::invalid("prompt", "only one prompt per request is supported");
        match &self.prompt {
            Prompt::Text(s) => Ok(PromptInput::Text(s.clone())),
            Prompt::Texts(list) if list.len() == 1 => Ok(PromptInput::Text(list[0].clone())),
            Prompt::Tokens(tokens) => Ok(PromptInput::Tokens(tokens.clone())),
            Prompt::TokenLists(lists) if lists.len() == 1 => {
                Ok(PromptInput::Tokens(lists[0].clone()))
            }
            _ => Err(batch_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common(v: serde_json::Value) -> CommonParams {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_follow_openai() {
        let g = common(json!({})).validate(7).unwrap();
        assert_eq!(g.max_tokens, None);
        assert_eq!(
            g.sampling,
            Sampling {
                temperature: 1.0,
                top_p: 1.0,
                top_k: 0,
                seed: 7
            }
        );
        assert!(g.stop.is_empty() && !g.stream && !g.include_usage);
    }

    #[test]
    fn token_limits_follow_the_one_rule_of_every_hop() {
        let g = common(json!({"max_tokens": 3, "max_completion_tokens": 3}))
            .validate(0)
            .unwrap();
        assert_eq!(g.max_tokens, Some(3));
        let g = common(json!({"max_completion_tokens": 4}))
            .validate(0)
            .unwrap();
        assert_eq!(g.max_tokens, Some(4));
        // Two limits that disagree: refused, whichever an engine would have honoured.
        let e = common(json!({"max_tokens": 1000, "max_completion_tokens": 1}))
            .validate(0)
            .unwrap_err();
        assert_eq!(e.0.error.param.as_deref(), Some("max_completion_tokens"));
        let e = common(json!({"max_tokens": 0})).validate(0).unwrap_err();
        assert_eq!(e.0.error.param.as_deref(), Some("max_tokens"));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn n_greater_than_one_is_refused_by_name() {
        let e = common(json!({"n": 2})).validate(0).unwrap_err();
        assert_eq!(e.0.error.param.as_deref(), Some("n"));
        assert!(e.0.error.message.contains("n = 1"));
        assert!(common(json!({"n": 1})).validate(0).is_ok());
    }

    #[test]
    fn ranges_are_checked() {
        for (body, param) in [
            (json!({"temperature": 2.5}), "temperature"),
            (json!({"top_p": 0.0}), "top_p"),
            (json!({"top_k": -3}), "top_k"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"tools": [{"type": "function"}]}), "tools"),
            (
                json!({"stream_options": {"include_usage": true}}),
                "stream_options",
            ),
        ] {
            let e = common(body.clone()).validate(0).unwrap_err();
            assert_eq!(e.0.error.param.as_deref(), Some(param), "{body}");
        }
        assert!(common(json!({"logprobs": false, "top_k": -1}))
            .validate(0)
            .is_ok());
    }

    #[test]
    fn seed_stop_and_stream_options_are_read() {
        let g = common(json!({
            "seed": 42, "stop": "\n", "stream": true, "stream_options": {"include_usage": true},
            "temperature": 0, "top_k": 40, "top_p": 0.9
        }))
        .validate(0)
        .unwrap();
        assert_eq!(
            g.sampling,
            Sampling {
                temperature: 0.0,
                top_p: 0.9,
                top_k: 40,
                seed: 42
            }
        );
        assert_eq!(g.stop, ["\n"]);
        assert!(g.stream && g.include_usage);
        let g = common(json!({"stop": ["a", "b"], "stop_token_ids": null}))
            .validate(0)
            .unwrap();
        assert_eq!(g.stop, ["a", "b"]);
    }

    #[test]
    fn message_content_parts() {
        let m: ChatMessage = serde_json::from_value(
            json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        )
        .unwrap();
        assert_eq!(m.text().unwrap(), "ab");
        let m: ChatMessage = serde_json::from_value(
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}),
        )
        .unwrap();
        assert!(m.text().is_err());
    }

    #[test]
    fn completion_prompts() {
        let req = |v| serde_json::from_value::<CompletionRequest>(v).unwrap();
        assert_eq!(
            req(json!({"prompt": "hi"})).prompt_input().unwrap(),
            PromptInput::Text("hi".into())
        );
        assert_eq!(
            req(json!({"prompt": ["hi"]})).prompt_input().unwrap(),
            PromptInput::Text("hi".into())
        );
        assert_eq!(
            req(json!({"prompt": [1, 2]})).prompt_input().unwrap(),
            PromptInput::Tokens(vec![1, 2])
        );
        assert!(req(json!({"prompt": ["a", "b"]})).prompt_input().is_err());
        assert!(req(json!({"prompt": "a", "echo": true}))
            .prompt_input()
            .is_err());
    }
}
