//! Log-probabilities in OpenAI's two shapes: chat's `logprobs.content[]` (token, logprob, bytes,
//! top_logprobs) and legacy completions' parallel lists (`tokens`, `token_logprobs`,
//! `top_logprobs`, `text_offset`).

use serde_json::{json, Map, Value};

use crate::sampler::TokenLogprob;

/// The chat shape of `tokens` (named by id with `as_ids`).
pub(crate) fn chat_logprobs(tokens: &[TokenLogprob], as_ids: bool) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|(alt, lp)| json!({"token": alt.name(as_ids), "logprob": lp, "bytes": alt.bytes}))
                .collect();
            json!({
                "token": t.token.name(as_ids),
                "logprob": t.logprob,
                "bytes": t.token.bytes,
                "top_logprobs": top,
            })
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// The completions shape of `tokens`, whose text starts at character `offset` of the choice's
/// text (after any echoed prompt and earlier chunks). Returns the offset after them.
pub(crate) fn completion_logprobs(
    tokens: &[TokenLogprob],
    mut offset: usize,
    as_ids: bool,
) -> (Value, usize) {
    let mut texts = Vec::with_capacity(tokens.len());
    let mut logprobs = Vec::with_capacity(tokens.len());
    let mut tops = Vec::with_capacity(tokens.len());
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        texts.push(Value::from(t.token.name(as_ids)));
        logprobs.push(json!(t.logprob));
        let top: Map<String, Value> = t
            .top
            .iter()
            .map(|(alt, lp)| (alt.name(as_ids), json!(lp)))
            .collect();
        tops.push(Value::Object(top));
        offsets.push(json!(offset));
        offset += t.token.text.chars().count();
    }
    (
        json!({
            "tokens": texts,
            "token_logprobs": logprobs,
            "top_logprobs": tops,
            "text_offset": offsets,
        }),
        offset,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::TokenBytes;

    fn token(text: &str, logprob: f32, top: &[(&str, f32)]) -> TokenLogprob {
        let bytes = |s: &str| TokenBytes {
            id: s.len() as i32,
            text: s.into(),
            bytes: s.as_bytes().to_vec(),
        };
        TokenLogprob {
            token: bytes(text),
            logprob,
            top: top.iter().map(|&(s, lp)| (bytes(s), lp)).collect(),
        }
    }

    #[test]
    fn chat_shape() {
        let v = chat_logprobs(&[token("Hé", -0.5, &[("Hé", -0.5), ("A", -2.0)])], false);
        assert_eq!(
            v,
            json!({"content": [{"token": "Hé", "logprob": -0.5, "bytes": [72, 195, 169],
                "top_logprobs": [{"token": "Hé", "logprob": -0.5, "bytes": [72, 195, 169]},
                                 {"token": "A", "logprob": -2.0, "bytes": [65]}]}],
                "refusal": null})
        );
    }

    #[test]
    fn completion_shape_counts_offsets_in_characters() {
        let (v, next) = completion_logprobs(
            &[token("é", -1.0, &[("é", -1.0)]), token("b", -0.25, &[])],
            3,
            false,
        );
        assert_eq!(
            v,
            json!({"tokens": ["é", "b"], "token_logprobs": [-1.0, -0.25],
                "top_logprobs": [{"é": -1.0}, {}], "text_offset": [3, 4]})
        );
        assert_eq!(next, 5);
    }

    #[test]
    fn tokens_can_be_named_by_id() {
        let v = chat_logprobs(&[token("ab", -0.5, &[("ab", -0.5)])], true);
        assert_eq!(v["content"][0]["token"], "token_id:2");
        assert_eq!(v["content"][0]["top_logprobs"][0]["token"], "token_id:2");
        let (v, _) = completion_logprobs(&[token("abc", -0.5, &[])], 0, true);
        assert_eq!(v["tokens"], json!(["token_id:3"]));
    }
}
