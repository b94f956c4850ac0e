//! Which request parameters each kind of engine honours: the one table to change when an engine
//! learns a parameter.
//!
//! Every hop agrees on a *base* that any engine serves (`model`, `messages`/`prompt`, the token
//! limits, `stream`, `stream_options`, `temperature`, `top_p`, `stop`, `seed`, and the metadata
//! fields `user`, `metadata`, `store`, `service_tier` that do not change an answer). Everything
//! else a request uses — OpenAI's optional features and any parameter OpenAI does not define — is
//! an *engine parameter*: the client lists the ones a request uses in
//! [`ENGINE_PARAMS`](crate::headers::ENGINE_PARAMS), each worker announces which ones its engine
//! honours ([`Honours`], in [`WorkerInfo`](crate::WorkerInfo)), and the proxy routes the request
//! only to a worker that honours all of them, or answers 400 naming the first one none does. So a
//! parameter is honoured, passed to an engine that honours it, or refused — never dropped.

use serde::{Deserialize, Serialize};

/// The parameters of OpenAI's chat and completions APIs whose effect depends on the engine, when
/// a request sets them to something other than their neutral default.
pub const OPENAI_ENGINE_PARAMS: [&str; 15] = [
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "echo",
    "suffix",
    "best_of",
    // A list of several prompts on the legacy completions endpoint.
    "prompt",
    "modalities",
];

/// The embedded engine (`cocoon-infer`): what it honours beyond the base. **When the embedded
/// engine learns a parameter, add its name here — nothing else changes.** `top_k`,
/// `repetition_penalty` and `return_tokens_as_token_ids` are not OpenAI's but llama.cpp's and
/// vLLM's. It does not honour `suffix`, `best_of` or `modalities`; `parallel_tool_calls` is honoured
/// as "at most one call".
pub const EMBEDDED_HONOURS: &[&str] = &[
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "echo",
    "prompt",
    "top_k",
    "repetition_penalty",
    "return_tokens_as_token_ids",
];

/// The synthetic engine (benchmarks and tests): it streams filler text and honours nothing
/// beyond the base.
pub const SYNTHETIC_HONOURS: &[&str] = &[];

/// Longest engine-parameter name a request may use (OpenAI's are all shorter).
pub const MAX_PARAM_NAME: usize = 64;
/// Most engine parameters one request may use (OpenAI defines 15).
pub const MAX_ENGINE_PARAMS: usize = 32;

/// What kind of engine a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The fixed-rate filler-text engine of benchmarks and tests.
    Synthetic,
    /// llama.cpp in the worker's process (`cocoon-infer`).
    Embedded,
    /// An OpenAI-compatible server the worker reaches over HTTP (vLLM, SGLang, llama.cpp server,
    /// Ollama): it gets every parameter and honours or refuses it itself.
    Url,
}

impl EngineKind {
    /// The engine parameters this kind of engine honours.
    pub fn honours(self) -> Honours {
        let only = |names: &[&str]| Honours::Only(names.iter().map(|&n| n.to_owned()).collect());
        match self {
            EngineKind::Synthetic => only(SYNTHETIC_HONOURS),
            EngineKind::Embedded => only(EMBEDDED_HONOURS),
            EngineKind::Url => Honours::Every,
        }
    }
}

/// The engine parameters a worker's engine honours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Honours {
    /// Every parameter goes to the engine, which honours or refuses it itself.
    Every,
    /// Only these; a request using any other is not sent to this worker.
    Only(Vec<String>),
}

impl Default for Honours {
    /// A worker that announces nothing is assumed to honour nothing beyond the base (fail closed).
    fn default() -> Self {
        Honours::Only(Vec::new())
    }
}

impl Honours {
    /// The first of `params` not honoured, if any.
    pub fn first_missing<'a>(&self, params: &'a [String]) -> Option<&'a str> {
        match self {
            Honours::Every => None,
            Honours::Only(honoured) => params
                .iter()
                .find(|param| !honoured.contains(param))
                .map(String::as_str),
        }
    }
}

/// Whether `name` may be listed as an engine parameter: 1 to [`MAX_PARAM_NAME`] ASCII letters,
/// digits and `_` (so that a list of them is a plain header value).
pub fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PARAM_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Reads an [`ENGINE_PARAMS`](crate::headers::ENGINE_PARAMS) header value: comma-separated
/// names. `None` when it is not a valid list (bad name, too many).
pub fn parse_engine_params(value: &str) -> Option<Vec<String>> {
    if value.trim().is_empty() {
        return Some(Vec::new());
    }
    let names: Vec<&str> = value.split(',').map(str::trim).collect();
    if names.len() > MAX_ENGINE_PARAMS || !names.iter().all(|name| is_param_name(name)) {
        return None;
    }
    Some(names.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_kind_has_its_table() {
        let wanted = ["suffix".to_owned(), "top_k".to_owned()];
        assert_eq!(EngineKind::Url.honours().first_missing(&wanted), None);
        assert_eq!(
            EngineKind::Embedded.honours().first_missing(&wanted),
            Some("suffix")
        );
        assert_eq!(
            EngineKind::Synthetic
                .honours()
                .first_missing(&["tools".to_owned()]),
            Some("tools")
        );
        assert_eq!(
            EngineKind::Embedded.honours().first_missing(&wanted[1..]),
            None
        );
        assert_eq!(
            EngineKind::Synthetic.honours().first_missing(&wanted[1..]),
            Some("top_k")
        );
        assert_eq!(Honours::default().first_missing(&[]), None);
    }

    #[test]
    fn the_header_list_is_bounded_and_plain() {
        assert_eq!(parse_engine_params(""), Some(vec![]));
        assert_eq!(
            parse_engine_params("tools, n"),
            Some(vec!["tools".to_owned(), "n".to_owned()])
        );
        assert_eq!(parse_engine_params("tools,,n"), None);
        assert_eq!(parse_engine_params("a b"), None);
        assert_eq!(parse_engine_params(&"x".repeat(MAX_PARAM_NAME + 1)), None);
        let many = vec!["p"; MAX_ENGINE_PARAMS + 1].join(",");
        assert_eq!(parse_engine_params(&many), None);
        for name in OPENAI_ENGINE_PARAMS {
            assert!(is_param_name(name));
        }
    }
}
