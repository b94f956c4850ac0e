//! Token usage as counted by an engine and carried to every hop.

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
