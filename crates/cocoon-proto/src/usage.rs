//! Token usage as counted by an engine and carried to every hop.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};

/// Tokens used by one request, as reported by the engine's `usage`.
///
/// `cached_tokens` is a subset of `prompt_tokens`, and `reasoning_tokens` a subset of
/// `completion_tokens`, as in OpenAI's `prompt_tokens_details` / `completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Tokens of the prompt, cached ones included.
    pub prompt_tokens: u64,
    /// Prompt tokens served from the engine's prefix cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Tokens generated, reasoning ones included.
    pub completion_tokens: u64,
    /// Generated tokens spent on hidden reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl TokenUsage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Whether a JSON answer or stream chunk may carry a `usage` object (not `"usage": null`).
///
/// Engines such as vLLM and llama.cpp put `"usage": null` in every token chunk; this textual
/// check lets every hop skip decoding those, and decode only the final usage chunk. It may say yes
/// wrongly (a `"usage"` string inside content), never no wrongly, so callers still decode to be sure.
pub fn may_carry_usage(json: &str) -> bool {
    // Built once: every hop asks this of every chunk of every answer.
    static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
    USAGE_KEY.find_iter(json.as_bytes()).any(|at| {
        // The key is ASCII, so the byte after it is a character boundary.
        let rest = json[at + USAGE_KEY.needle().len()..].trim_start();
        rest.strip_prefix(':')
            .is_some_and(|value| value.trim_start().starts_with('{'))
    })
}

/// OpenAI's `usage` object as engines send it (vLLM, SGLang, llama.cpp, OpenAI itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiUsage {
    /// Tokens of the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Prompt plus completion.
    #[serde(default)]
    pub total_tokens: u64,
    /// Breakdown of the prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Breakdown of the completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Completion tokens spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl From<&OpenAiUsage> for TokenUsage {
    fn from(usage: &OpenAiUsage) -> Self {
        // Subsets are clamped so a confused engine cannot make "prompt − cached" negative.
        let cached = usage
            .prompt_tokens_details
            .as_ref()
            .map_or(0, |d| d.cached_tokens)
            .min(usage.prompt_tokens);
        let reasoning = usage
            .completion_tokens_details
            .as_ref()
            .map_or(0, |d| d.reasoning_tokens)
            .min(usage.completion_tokens);
        TokenUsage {
            prompt_tokens: usage.prompt_tokens,
            cached_tokens: cached,
            completion_tokens: usage.completion_tokens,
            reasoning_tokens: reasoning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_usage_object_counts_as_usage() {
        assert!(may_carry_usage(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(may_carry_usage(
            r#"{"choices":[], "usage" : { "prompt_tokens":1}}"#
        ));
        assert!(!may_carry_usage(
            r#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#
        ));
        assert!(!may_carry_usage(
            r#"{"choices":[{"delta":{"content":"x"}}]}"#
        ));
        // A later real usage key still counts after an earlier mention in content.
        assert!(may_carry_usage(
            r#"{"choices":[{"text":"\"usage\""}],"usage":{}}"#
        ));
    }

    #[test]
    fn reads_openai_usage_with_details_and_clamps_subsets() {
        let usage: OpenAiUsage = serde_json::from_str(
            r#"{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14,
                "prompt_tokens_details":{"cached_tokens":99},
                "completion_tokens_details":{"reasoning_tokens":3}}"#,
        )
        .unwrap();
        let tokens = TokenUsage::from(&usage);
        assert_eq!(tokens.prompt_tokens, 10);
        assert_eq!(tokens.cached_tokens, 10);
        assert_eq!(tokens.reasoning_tokens, 3);
        assert_eq!(tokens.total_tokens(), 14);
    }
}
