//! The OpenAI request shapes this engine accepts and the error type answered to clients.
//!
//! Unknown fields are ignored (clients send many optional ones); the generation parameters are validated in [`crate::params`],
//! tools in [`crate::tools`], `response_format` in [`crate::json_grammar`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cocoon_proto::{ErrorKind, OpenAiError};
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
    /// A bool for chat, a count (0–20) for completions.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// Chat only: alternatives per token when `logprobs` is true.
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// vLLM's and llama.cpp's multiplicative penalty (1 = off).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// vLLM's extension: name tokens `token_id:<id>` in log-probabilities.
    #[serde(default)]
    pub return_tokens_as_token_ids: Option<bool>,
    /// Token id (as a string) → bias from −100 to 100.
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One chat message. `content` may be a string or a list of parts (only text parts are accepted);
/// an assistant turn may carry the tool calls it made instead.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub tool_calls: Option<Vec<PastToolCall>>,
}

/// A tool call in the conversation so far.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PastToolCall {
    pub function: PastFunctionCall,
}

/// The function part of a past tool call.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PastFunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// One entry of `tools`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

/// A function the model may call.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FunctionDefinition {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A JSON schema of the arguments object (any object when absent).
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or `{"type": "function", "function": {"name"}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum ToolChoice {
    Mode(String),
    Named { function: NamedFunction },
}

/// The function `tool_choice` names.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NamedFunction {
    pub name: String,
}

/// `response_format`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub json_schema: Option<JsonSchemaFormat>,
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JsonSchemaFormat {
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    // `strict` is read by no one: the output always matches the schema exactly either way.
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
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// A completion `prompt`: a string, a list of strings, token ids, or a list of token-id lists.
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

impl ChatMessage {
    /// The message as the model reads it: its text, then any tool calls it made, each in the
    /// form the engine's tool grammar produces.
    pub(crate) fn rendered(&self) -> Result<String, ApiError> {
        let mut text = self.text()?;
        for call in self.tool_calls.iter().flatten() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&crate::tools::call_text(
                &call.function.name,
                &call.function.arguments,
            ));
        }
        Ok(text)
    }

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
    /// The prompts (one or a list), refusing what this engine does not implement (`suffix`).
    pub(crate) fn prompt_inputs(&self) -> Result<Vec<PromptInput>, ApiError> {
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid(
                "suffix",
                "suffix is not supported by this engine",
            ));
        }
        let prompts: Vec<PromptInput> = match &self.prompt {
            Prompt::Text(s) => vec![PromptInput::Text(s.clone())],
            Prompt::Texts(list) => list.iter().cloned().map(PromptInput::Text).collect(),
            Prompt::Tokens(tokens) => vec![PromptInput::Tokens(tokens.clone())],
            Prompt::TokenLists(lists) => lists.iter().cloned().map(PromptInput::Tokens).collect(),
        };
        if prompts.is_empty() {
            return Err(ApiError::invalid("prompt", "the list of prompts is empty"));
        }
        Ok(prompts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let text = |s: &str| PromptInput::Text(s.into());
        assert_eq!(
            req(json!({"prompt": "hi"})).prompt_inputs().unwrap(),
            [text("hi")]
        );
        assert_eq!(
            req(json!({"prompt": ["a", "b"]})).prompt_inputs().unwrap(),
            [text("a"), text("b")]
        );
        assert_eq!(
            req(json!({"prompt": [1, 2]})).prompt_inputs().unwrap(),
            [PromptInput::Tokens(vec![1, 2])]
        );
        assert_eq!(
            req(json!({"prompt": [[1], [2, 3]]}))
                .prompt_inputs()
                .unwrap(),
            [
                PromptInput::Tokens(vec![1]),
                PromptInput::Tokens(vec![2, 3])
            ]
        );
        let e = req(json!({"prompt": []})).prompt_inputs().unwrap_err();
        assert_eq!(e.0.error.param.as_deref(), Some("prompt"));
        let e = req(json!({"prompt": "a", "suffix": "b"}))
            .prompt_inputs()
            .unwrap_err();
        assert_eq!(e.0.error.param.as_deref(), Some("suffix"));
    }
}
