//! Picking each next token with llama.cpp's samplers, in two stages:
//!
//! 1. *shaping*: `logit_bias`, then the repetition / frequency / presence penalties, then the
//!    grammar (`response_format`, tools), which sets every token it forbids to −∞;
//! 2. *selection*: greedy at temperature 0, otherwise top-k → top-p → temperature → a seeded draw
//!    (llama.cpp server's order).
//!
//! Log-probabilities are taken between the two: the log-softmax of the shaped logits, i.e. the
//! model's distribution after biases, penalties and grammar, before temperature and truncation.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::params::Sampling;

/// OpenAI's stand-in for the log-probability of an impossible token.
const IMPOSSIBLE: f32 = -9999.0;

/// One generated token's log-probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenLogprob {
    pub token: TokenBytes,
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<(TokenBytes, f32)>,
}

/// A token's bytes, and the text they make (lossy when a token holds part of a character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenBytes {
    pub id: i32,
    pub text: String,
    pub bytes: Vec<u8>,
}

impl TokenBytes {
    /// How the token is named in a response: its text, or with vLLM's
    /// `return_tokens_as_token_ids`, `token_id:<id>`.
    pub(crate) fn name(&self, as_id: bool) -> String {
        if as_id {
            format!("token_id:{}", self.id)
        } else {
            self.text.clone()
        }
    }

    fn of(model: &LlamaModel, token: LlamaToken) -> Self {
        let bytes = model.vocab().token_to_piece(token, false, None);
        TokenBytes {
            id: token.0,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
        }
    }
}

/// The samplers of one sequence.
pub(crate) struct SlotSampler {
    shaping: Option<LlamaSampler>,
    selection: LlamaSampler,
    /// `Some(k)`: report log-probabilities with the `k` most likely alternatives.
    logprobs: Option<u8>,
}

impl SlotSampler {
    /// The samplers for `s`; `window` is how many recent tokens the penalties look at. Fails
    /// when llama.cpp refuses the grammar.
    pub(crate) fn new(model: &LlamaModel, s: &Sampling, window: u32) -> Result<Self, String> {
        let n_vocab = model.n_vocab();
        let mut shaping = Vec::new();
        if !s.logit_bias.is_empty() {
            let biases: Vec<LlamaLogitBias> = s
                .logit_bias
                .iter()
                .map(|&(token, bias)| LlamaLogitBias::new(LlamaToken::new(token), bias))
                .collect();
            shaping.push(LlamaSampler::logit_bias(n_vocab, &biases));
        }
        if s.repetition_penalty != 1.0 || s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 {
            shaping.push(LlamaSampler::penalties(
                n_vocab,
                i32::try_from(window).unwrap_or(i32::MAX),
                s.repetition_penalty,
                s.frequency_penalty,
                s.presence_penalty,
            ));
        }
        if let Some(grammar) = &s.grammar {
            shaping.push(grammar_sampler(model, grammar)?);
        }
        let shaping = (!shaping.is_empty()).then(|| LlamaSampler::chain_simple(shaping));
        let selection = if s.temperature <= 0.0 {
            LlamaSampler::greedy()
        } else {
            let mut chain = Vec::with_capacity(4);
            if s.top_k > 0 {
                chain.push(LlamaSampler::top_k(s.top_k));
            }
            if s.top_p < 1.0 {
                chain.push(LlamaSampler::top_p(s.top_p, 1));
            }
            chain.push(LlamaSampler::temp(s.temperature));
            chain.push(LlamaSampler::dist(s.seed));
            LlamaSampler::chain_simple(chain)
        };
        Ok(SlotSampler {
            shaping,
            selection,
            logprobs: s.logprobs,
        })
    }

    /// Picks the token after the logits at batch index `at`, with its log-probability when asked
    /// for. Fails when the grammar leaves no token possible (rather than letting llama.cpp abort
    /// on accepting a forbidden one).
    pub(crate) fn sample(
        &mut self,
        model: &LlamaModel,
        ctx: &LlamaContext<'_>,
        at: i32,
    ) -> Result<(LlamaToken, Option<TokenLogprob>), String> {
        let mut candidates = ctx.token_data_array_ith(at);
        if let Some(shaping) = &mut self.shaping {
            candidates.apply_sampler(shaping);
        }
        let distribution = self
            .logprobs
            .map(|top| LogSoftmax::of(&candidates, usize::from(top)));
        candidates.apply_sampler(&mut self.selection);
        let chosen = candidates
            .selected
            .and_then(|i| candidates.data.get(i))
            .filter(|data| data.logit().is_finite())
            .map(|data| data.id())
            .ok_or_else(|| "no token satisfies the required output format".to_owned())?;
        if let Some(shaping) = &mut self.shaping {
            shaping.accept(chosen);
        }
        self.selection.accept(chosen);
        let logprob = distribution.map(|d| d.report(model, chosen));
        Ok((chosen, logprob))
    }
}

/// A grammar sampler, or why llama.cpp refused the grammar.
pub(crate) fn grammar_sampler(model: &LlamaModel, grammar: &str) -> Result<LlamaSampler, String> {
    LlamaSampler::grammar(model, grammar, "root")
        .map_err(|e| format!("the output grammar cannot be used: {e}"))
}

/// Log-probabilities of one shaped distribution.
struct LogSoftmax {
    /// log Σ exp(logit) over the possible tokens.
    normaliser: f32,
    /// (token, shaped logit) of every possible token.
    logits: Vec<(LlamaToken, f32)>,
    top: Vec<(LlamaToken, f32)>,
}

impl LogSoftmax {
    fn of(candidates: &LlamaTokenDataArray, top: usize) -> Self {
        let logits: Vec<(LlamaToken, f32)> = candidates
            .data
            .iter()
            .filter(|d| d.logit().is_finite())
            .map(|d| (d.id(), d.logit()))
            .collect();
        let max = logits
            .iter()
            .map(|&(_, l)| l)
            .fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&(_, l)| f64::from(l - max).exp()).sum();
        let normaliser = max + sum.ln() as f32;
        let mut ranked = logits.clone();
        let top = top.min(ranked.len());
        if top > 0 {
            ranked.select_nth_unstable_by(top - 1, |a, b| b.1.total_cmp(&a.1));
            ranked.truncate(top);
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        } else {
            ranked.clear();
        }
        LogSoftmax {
            normaliser,
            logits,
            top: ranked,
        }
    }

    fn logprob(&self, logit: f32) -> f32 {
        let lp = logit - self.normaliser;
        if lp.is_finite() {
            lp.min(0.0)
        } else {
            IMPOSSIBLE
        }
    }

    fn report(self, model: &LlamaModel, chosen: LlamaToken) -> TokenLogprob {
        let logit = self
            .logits
            .iter()
            .find(|&&(t, _)| t == chosen)
            .map_or(f32::NEG_INFINITY, |&(_, l)| l);
        TokenLogprob {
            token: TokenBytes::of(model, chosen),
            logprob: self.logprob(logit),
            top: self
                .top
                .iter()
                .map(|&(t, l)| (TokenBytes::of(model, t), self.logprob(l)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llama_cpp_2::token::data::LlamaTokenData;

    fn array(logits: &[f32]) -> LlamaTokenDataArray {
        LlamaTokenDataArray::from_iter(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| LlamaTokenData::new(LlamaToken::new(i as i32), l, 0.0)),
            false,
        )
    }

    #[test]
    fn log_softmax_normalises_and_ranks() {
        let d = LogSoftmax::of(&array(&[0.0, 2.0, 1.0, f32::NEG_INFINITY]), 2);
        let total: f32 = d.logits.iter().map(|&(_, l)| d.logprob(l).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(d.top.iter().map(|&(t, _)| t.0).collect::<Vec<_>>(), [1, 2]);
        // A token the grammar forbids (−∞) is impossible, not NaN.
        assert_eq!(d.logprob(f32::NEG_INFINITY), IMPOSSIBLE);
        assert!(d.logprob(2.0) <= 0.0);
    }

    #[test]
    fn top_zero_and_top_beyond_the_vocabulary() {
        assert!(LogSoftmax::of(&array(&[1.0, 2.0]), 0).top.is_empty());
        assert_eq!(LogSoftmax::of(&array(&[1.0, 2.0]), 20).top.len(), 2);
    }
}
