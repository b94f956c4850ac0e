//! Checking an app's completion request before it costs anything upstream: JSON shape, every
//! OpenAI field ([`crate::request_fields`]), and the one completion-token limit ([`completion_limit`]) that
//! the proxy reserves and the worker enforces. The cocoon-only fields `max_coefficient` and
//! `timeout` become link headers and are stripped from the body, which otherwise travels to the
//! engine unchanged.

use std::time::Duration;

use bytes::Bytes;
use cocoon_proto::limits::{MAX_COMPLETION_TOKENS_FIELD, MAX_TOKENS_FIELD};
use cocoon_proto::link::{PATH_CHAT, PATH_COMPLETIONS};
use cocoon_proto::{completion_limit, ErrorKind, TokenField};
use serde_json::{Map, Value};

use crate::http::Failure;
use crate::request_fields::check_fields;

/// Longest timeout an app may ask for; keeps deadline arithmetic far from overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The two completion endpoints the client forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`: needs `messages`.
    Chat,
    /// `POST /v1/completions`: needs `prompt`.
    Completions,
}

impl Endpoint {
    /// The path, the same on the app side and on the link.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => PATH_CHAT,
            Endpoint::Completions => PATH_COMPLETIONS,
        }
    }
}

/// Values for requests that do not set their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Highest coefficient accepted.
    pub max_coefficient: u32,
    /// Whole-request deadline.
    pub timeout: Duration,
}

/// A checked request, ready for the link.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The body for the engine: the app's JSON without the cocoon-only fields.
    pub body: Bytes,
    /// The requested model.
    pub model: String,
    /// The engine parameters the request uses ([`cocoon_proto::capabilities`]).
    pub engine_params: Vec<String>,
    /// Choices asked for (`n`).
    pub choices: u32,
    /// The request's completion-token limit, if it sets one (see [`completion_limit`]).
    pub max_tokens: Option<u64>,
    /// Whether the app asked for a stream.
    pub stream: bool,
    /// Whether the app asked for the final usage chunk of a stream.
    pub include_usage: bool,
    /// Highest coefficient accepted for this request.
    pub max_coefficient: u32,
    /// This request's deadline.
    pub timeout: Duration,
}

/// Checks an app's request body for `endpoint` and turns it into what goes on the link.
pub fn prepare(endpoint: Endpoint, body: &[u8], defaults: Defaults) -> Result<Prepared, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        Failure::new(
            ErrorKind::InvalidRequest,
            format!("the request body is not valid JSON: {error}"),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err(Failure::new(
            ErrorKind::InvalidRequest,
            "the request body must be a JSON object",
        ));
    };
    let model = match object.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(_) => {
            return Err(Failure::invalid(
                "model",
                "`model` must be a non-empty string",
            ))
        }
        None => return Err(Failure::invalid("model", "`model` is required")),
    };
    let fields = check_fields(endpoint, &object)?;
    let token_field = |name: &str| TokenField::read(object.get(name));
    let max_tokens = completion_limit(
        token_field(MAX_TOKENS_FIELD),
        token_field(MAX_COMPLETION_TOKENS_FIELD),
    )
    .map_err(|error| Failure::invalid(error.param(), error.to_string()))?;
    // Both fields given (and equal): the body goes on with one, so no hop or engine can read
    // another value than the one reserved.
    let duplicate_limit = max_tokens.is_some()
        && present(&object, MAX_TOKENS_FIELD).is_some()
        && present(&object, MAX_COMPLETION_TOKENS_FIELD).is_some();
    let stream = match present(&object, "stream") {
        None => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(Failure::invalid("stream", "`stream` must be a boolean")),
    };
    let include_usage = match present(&object, "stream_options") {
        None => false,
        Some(Value::Object(_)) if !stream => {
            return Err(Failure::invalid(
                "stream_options",
                "`stream_options` is only allowed with `stream: true`",
            ))
        }
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(include)) => *include,
            Some(_) => {
                return Err(Failure::invalid(
                    "stream_options",
                    "`stream_options.include_usage` must be a boolean",
                ))
            }
        },
        Some(_) => {
            return Err(Failure::invalid(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    let max_coefficient = match present(&object, "max_coefficient") {
        None => defaults.max_coefficient,
        Some(value) => value
            .as_u64()
            .and_then(|value| u32::try_from(value).ok())
            .ok_or_else(|| {
                Failure::invalid(
                    "max_coefficient",
                    "`max_coefficient` must be an integer from 0 to 4294967295 (1000 = 1.0x)",
                )
            })?,
    };
    let timeout = match present(&object, "timeout") {
        None => defaults.timeout,
        Some(value) => value
            .as_f64()
            .filter(|seconds| *seconds > 0.0 && *seconds <= MAX_TIMEOUT.as_secs_f64())
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Failure::invalid(
                    "timeout",
                    format!(
                        "`timeout` must be a number of seconds above 0 and at most {}",
                        MAX_TIMEOUT.as_secs()
                    ),
                )
            })?,
    };
    let body = if object.contains_key("max_coefficient")
        || object.contains_key("timeout")
        || duplicate_limit
    {
        object.remove("max_coefficient");
        object.remove("timeout");
        if duplicate_limit {
            object.remove(MAX_COMPLETION_TOKENS_FIELD);
        }
        Bytes::from(serde_json::to_vec(&Value::Object(object)).map_err(|error| {
            Failure::new(
                ErrorKind::Internal,
                format!("cannot re-encode the request: {error}"),
            )
        })?)
    } else {
        // Nothing to strip: forward the app's bytes exactly.
        Bytes::copy_from_slice(body)
    };
    Ok(Prepared {
        body,
        model,
        engine_params: fields.engine_params,
        choices: fields.choices,
        max_tokens,
        stream,
        include_usage,
        max_coefficient,
        timeout,
    })
}

/// A field's value, treating an explicit `null` as absent (as OpenAI does).
fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    const DEFAULTS: Defaults = Defaults {
        max_coefficient: 4000,
        timeout: Duration::from_secs(300),
    };

    fn chat(body: &str) -> Result<Prepared, Failure> {
        prepare(Endpoint::Chat, body.as_bytes(), DEFAULTS)
    }

    fn param_of(result: Result<Prepared, Failure>) -> Option<String> {
        let failure = result.expect_err("should be refused");
        assert_eq!(failure.status, StatusCode::BAD_REQUEST);
        assert_eq!(failure.error.kind(), Some(ErrorKind::InvalidRequest));
        failure.error.error.param
    }

    #[test]
    fn a_plain_request_passes_unchanged_with_defaults() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let prepared = chat(body).unwrap();
        assert_eq!(&prepared.body[..], body.as_bytes());
        assert_eq!(prepared.model, "m");
        assert!(!prepared.stream);
        assert!(!prepared.include_usage);
        assert_eq!(prepared.max_coefficient, 4000);
        assert_eq!(prepared.timeout, Duration::from_secs(300));
    }

    #[test]
    fn cocoon_fields_become_settings_and_leave_the_body() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_coefficient":1500,"timeout":2.5,"stream":true,"stream_options":{"include_usage":true}}"#;
        let prepared = chat(body).unwrap();
        assert_eq!(prepared.max_coefficient, 1500);
        assert_eq!(prepared.timeout, Duration::from_millis(2500));
        assert!(prepared.stream);
        assert!(prepared.include_usage);
        let forwarded: Value = serde_json::from_slice(&prepared.body).unwrap();
        assert!(forwarded.get("max_coefficient").is_none());
        assert!(forwarded.get("timeout").is_none());
        assert_eq!(forwarded["stream"], true);
        assert_eq!(forwarded["messages"][0]["content"], "hi");
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert_eq!(param_of(chat("{not json")), None);
        assert_eq!(param_of(chat("[1,2]")), None);
        assert!(chat("{not json")
            .unwrap_err()
            .error
            .error
            .message
            .contains("not valid JSON"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"messages":[{"role":"user"}]}"#, "model"),
            (r#"{"model":5,"messages":[{"role":"user"}]}"#, "model"),
            (r#"{"model":"m"}"#, "messages"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":["hi"]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":1.5}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":"2"}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":1}}"#,
                "stream_options",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_coefficient":-1}"#,
                "max_coefficient",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_coefficient":5000000000}"#,
                "max_coefficient",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"timeout":0}"#,
                "timeout",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"timeout":"10"}"#,
                "timeout",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(param_of(chat(body)).as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn nulls_count_as_absent() {
        let prepared =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":null,"stream":null,"timeout":null}"#).unwrap();
        assert!(!prepared.stream);
        assert_eq!(prepared.timeout, DEFAULTS.timeout);
    }

    #[test]
    fn completions_need_a_prompt() {
        let completions = |body: &str| prepare(Endpoint::Completions, body.as_bytes(), DEFAULTS);
        assert!(completions(r#"{"model":"m","prompt":"Once"}"#).is_ok());
        assert!(completions(r#"{"model":"m","prompt":[1,2,3]}"#).is_ok());
        assert_eq!(
            param_of(completions(r#"{"model":"m"}"#)).as_deref(),
            Some("prompt")
        );
        assert_eq!(
            param_of(completions(r#"{"model":"m","prompt":7}"#)).as_deref(),
            Some("prompt")
        );
        // `messages` is a chat field: a completions request does not need it.
        assert!(completions(r#"{"model":"m","prompt":"x","n":2}"#).is_ok());
    }

    #[test]
    fn token_limits_follow_one_rule_and_leave_with_one_field() {
        let limit = |fields: &str| {
            chat(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{fields}}}"#
            ))
        };
        assert_eq!(limit("").unwrap().max_tokens, None);
        assert_eq!(limit(r#","max_tokens":7"#).unwrap().max_tokens, Some(7));
        let prepared = limit(r#","max_tokens":7,"max_completion_tokens":7"#).unwrap();
        assert_eq!(prepared.max_tokens, Some(7));
        let forwarded: Value = serde_json::from_slice(&prepared.body).unwrap();
        assert_eq!(forwarded["max_tokens"], 7);
        assert!(forwarded.get("max_completion_tokens").is_none());
        // The request that killed a network: reserved by one field, served by the other.
        let poisoned = limit(r#","max_completion_tokens":1,"max_tokens":1000000000"#);
        assert_eq!(param_of(poisoned).as_deref(), Some("max_tokens"));
        let conflict = limit(r#","max_completion_tokens":1,"max_tokens":1000"#);
        assert_eq!(param_of(conflict).as_deref(), Some("max_completion_tokens"));
        // Values whose reservation would overflow are refused here, as invalid, not as unpaid.
        for (fields, param) in [
            (r#","max_tokens":9223372036854775808"#, "max_tokens"),
            (
                r#","max_completion_tokens":18446744073709551615"#,
                "max_completion_tokens",
            ),
            (r#","max_tokens":1e300"#, "max_tokens"),
            (r#","max_tokens":0"#, "max_tokens"),
            (r#","max_completion_tokens":"5""#, "max_completion_tokens"),
        ] {
            assert_eq!(param_of(limit(fields)).as_deref(), Some(param), "{fields}");
        }
    }
}
