//! Validating the generation parameters of a request into what the engine thread runs: OpenAI's
//! ranges, and this engine's bounds on what a client may ask of it.

use std::sync::Arc;

use cocoon_proto::{completion_limit, TokenField};
use serde_json::Value;

use crate::openai::{ApiError, CommonParams, Stop};

/// Most sequences one request may generate (`n` × prompts): each holds a slot of the batch.
pub(crate) const MAX_CHOICES: usize = 16;
/// Most alternatives reported per token (`top_logprobs`, or `logprobs` on completions).
pub(crate) const MAX_TOP_LOGPROBS: i64 = 20;
/// Most entries in `logit_bias` (the client edge's limit too).
const MAX_LOGIT_BIAS: usize = 1024;

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1 disables nucleus sampling.
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    pub seed: u32,
    /// OpenAI's additive penalties over the generated tokens (0 = off).
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// The multiplicative penalty of vLLM and llama.cpp (1 = off).
    pub repetition_penalty: f32,
    /// (token id, bias) pairs.
    pub logit_bias: Vec<(i32, f32)>,
    /// A GBNF grammar the output must match (`response_format`, tools).
    pub grammar: Option<Arc<str>>,
    /// `Some(k)`: report each token's log-probability and its `k` likeliest alternatives.
    pub logprobs: Option<u8>,
}

impl Sampling {
    /// The sampling of choice `index` of a request: the seed moves on by one per choice, so the
    /// choices differ and a seeded request stays reproducible.
    pub(crate) fn for_choice(&self, index: usize) -> Sampling {
        Sampling {
            seed: self.seed.wrapping_add(index as u32),
            ..self.clone()
        }
    }
}

/// Which endpoint the parameters came with (`logprobs` differs between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completion,
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
    /// Choices per prompt.
    pub n: usize,
    /// Name tokens `token_id:<id>` in log-probabilities (vLLM's `return_tokens_as_token_ids`).
    pub token_ids: bool,
}

fn number_in(
    value: Option<f32>,
    param: &str,
    default: f32,
    range: std::ops::RangeInclusive<f32>,
) -> Result<f32, ApiError> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            param,
            format!(
                "{param} must be between {} and {}, got {value}",
                range.start(),
                range.end()
            ),
        ))
    }
}

impl CommonParams {
    /// Checks the parameters against OpenAI's ranges and what this engine supports.
    /// `random_seed` is used when the request names no seed.
    pub(crate) fn validate(
        &self,
        random_seed: u32,
        endpoint: Endpoint,
    ) -> Result<Generation, ApiError> {
        let n = match self.n {
            None => 1,
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(
                    "n",
                    format!("n must be from 1 to {MAX_CHOICES}, got {n}"),
                ))
            }
        };
        let logprobs = self.logprobs(endpoint)?;
        // The rule every hop applies: one limit, or two equal ones.
        let max_tokens = completion_limit(
            TokenField::from_i64(self.max_tokens),
            TokenField::from_i64(self.max_completion_tokens),
        )
        .map_err(|error| ApiError::invalid(error.param(), error.to_string()))?
        .map(|limit| u32::try_from(limit).unwrap_or(u32::MAX));
        let temperature = number_in(self.temperature, "temperature", 1.0, 0.0..=2.0)?;
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
        let frequency_penalty =
            number_in(self.frequency_penalty, "frequency_penalty", 0.0, -2.0..=2.0)?;
        let presence_penalty =
            number_in(self.presence_penalty, "presence_penalty", 0.0, -2.0..=2.0)?;
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty > 0.0 && repetition_penalty <= 10.0) {
            return Err(ApiError::invalid(
                "repetition_penalty",
                format!("repetition_penalty must be in (0, 10], got {repetition_penalty}"),
            ));
        }
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
                frequency_penalty,
                presence_penalty,
                repetition_penalty,
                logit_bias: self.logit_bias()?,
                grammar: None,
                logprobs,
            },
            stop,
            stream,
            include_usage,
            n,
            token_ids: self.return_tokens_as_token_ids.unwrap_or(false),
        })
    }

    /// Chat: `logprobs` is a boolean and `top_logprobs` the alternatives; completions:
    /// `logprobs` is the number of alternatives.
    fn logprobs(&self, endpoint: Endpoint) -> Result<Option<u8>, ApiError> {
        let count = |value: i64, param: &str| {
            if (0..=MAX_TOP_LOGPROBS).contains(&value) {
                Ok(value as u8)
            } else {
                Err(ApiError::invalid(
                    param,
                    format!("{param} must be from 0 to {MAX_TOP_LOGPROBS}, got {value}"),
                ))
            }
        };
        match endpoint {
            Endpoint::Chat => {
                let wanted = match &self.logprobs {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(ApiError::invalid("logprobs", "logprobs must be a boolean"))
                    }
                };
                match (wanted, self.top_logprobs) {
                    (true, top) => Ok(Some(count(top.unwrap_or(0), "top_logprobs")?)),
                    (false, None | Some(0)) => Ok(None),
                    (false, Some(_)) => Err(ApiError::invalid(
                        "top_logprobs",
                        "top_logprobs needs logprobs set to true",
                    )),
                }
            }
            Endpoint::Completion => {
                if self.top_logprobs.is_some() {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        "top_logprobs is a chat parameter; completions take `logprobs: k`",
                    ));
                }
                match &self.logprobs {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::Number(k)) => match k.as_i64() {
                        Some(k) => Ok(Some(count(k, "logprobs")?)),
                        None => Err(ApiError::invalid("logprobs", "logprobs must be an integer")),
                    },
                    Some(_) => Err(ApiError::invalid("logprobs", "logprobs must be an integer")),
                }
            }
        }
    }

    /// `logit_bias` as (token id, bias) pairs; ids are checked against the vocabulary later.
    fn logit_bias(&self) -> Result<Vec<(i32, f32)>, ApiError> {
        let Some(map) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        if map.len() > MAX_LOGIT_BIAS {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("logit_bias may name at most {MAX_LOGIT_BIAS} tokens"),
            ));
        }
        map.iter()
            .map(|(token, bias)| {
                let token: i32 = token.parse().ok().filter(|t| *t >= 0).ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("logit_bias keys must be token ids, not {token:?}"),
                    )
                })?;
                let bias = bias
                    .as_f64()
                    .filter(|b| (-100.0..=100.0).contains(b))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "logit_bias",
                            format!("the bias of token {token} must be a number from -100 to 100"),
                        )
                    })?;
                Ok((token, bias as f32))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
