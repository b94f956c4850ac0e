use super::*;
use axum::http::StatusCode;
use serde_json::json;

fn common(v: serde_json::Value) -> CommonParams {
    serde_json::from_value(v).unwrap()
}

fn chat(v: serde_json::Value) -> Result<Generation, ApiError> {
    common(v).validate(7, Endpoint::Chat)
}

fn param_of(v: serde_json::Value, endpoint: Endpoint) -> Option<String> {
    common(v).validate(0, endpoint).unwrap_err().0.error.param
}

#[test]
fn defaults_follow_openai() {
    let g = chat(json!({})).unwrap();
    assert_eq!(g.max_tokens, None);
    assert_eq!(
        g.sampling,
        Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 7,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
            grammar: None,
            logprobs: None,
        }
    );
    assert_eq!(g.n, 1);
    assert!(g.stop.is_empty() && !g.stream && !g.include_usage);
}

#[test]
fn token_limits_follow_the_one_rule_of_every_hop() {
    let g = chat(json!({"max_tokens": 3, "max_completion_tokens": 3})).unwrap();
    assert_eq!(g.max_tokens, Some(3));
    let g = chat(json!({"max_completion_tokens": 4})).unwrap();
    assert_eq!(g.max_tokens, Some(4));
    // Two limits that disagree: refused, whichever an engine would have honoured.
    let e = chat(json!({"max_tokens": 1000, "max_completion_tokens": 1})).unwrap_err();
    assert_eq!(e.0.error.param.as_deref(), Some("max_completion_tokens"));
    let e = chat(json!({"max_tokens": 0})).unwrap_err();
    assert_eq!(e.0.error.param.as_deref(), Some("max_tokens"));
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn n_is_bounded_and_choices_get_their_own_seeds() {
    assert_eq!(chat(json!({"n": 3})).unwrap().n, 3);
    for n in [0, -1, MAX_CHOICES as i64 + 1] {
        assert_eq!(
            param_of(json!({"n": n}), Endpoint::Chat).as_deref(),
            Some("n")
        );
    }
    let s = chat(json!({"seed": 41})).unwrap().sampling;
    assert_eq!(s.for_choice(0).seed, 41);
    assert_eq!(s.for_choice(2).seed, 43);
    assert_eq!(
        Sampling {
            seed: u32::MAX,
            ..s.clone()
        }
        .for_choice(1)
        .seed,
        0
    );
}

#[test]
fn ranges_are_checked() {
    for (body, param) in [
        (json!({"temperature": 2.5}), "temperature"),
        (json!({"top_p": 0.0}), "top_p"),
        (json!({"top_k": -3}), "top_k"),
        (json!({"frequency_penalty": 5}), "frequency_penalty"),
        (json!({"presence_penalty": -2.5}), "presence_penalty"),
        (json!({"repetition_penalty": 0}), "repetition_penalty"),
        (json!({"logprobs": 3}), "logprobs"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
        (json!({"logit_bias": {"-1": 1}}), "logit_bias"),
        (json!({"logit_bias": {"5": 101}}), "logit_bias"),
        (json!({"logit_bias": {"5": "x"}}), "logit_bias"),
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
        ),
    ] {
        assert_eq!(
            param_of(body.clone(), Endpoint::Chat).as_deref(),
            Some(param),
            "{body}"
        );
    }
    let many: serde_json::Map<String, Value> =
        (0..1025).map(|i| (i.to_string(), json!(1))).collect();
    assert_eq!(
        param_of(json!({ "logit_bias": many }), Endpoint::Chat).as_deref(),
        Some("logit_bias")
    );
    assert!(chat(json!({"logprobs": false, "top_k": -1})).is_ok());
}

#[test]
fn penalties_and_bias_are_read() {
    let s = chat(json!({
        "frequency_penalty": 1.5, "presence_penalty": -0.5, "repetition_penalty": 1.3,
        "logit_bias": {"42": -100, "7": 2.5}
    }))
    .unwrap()
    .sampling;
    assert_eq!(
        (
            s.frequency_penalty,
            s.presence_penalty,
            s.repetition_penalty
        ),
        (1.5, -0.5, 1.3)
    );
    let mut bias = s.logit_bias;
    bias.sort_by_key(|&(t, _)| t);
    assert_eq!(bias, [(7, 2.5), (42, -100.0)]);
}

#[test]
fn logprobs_differ_between_chat_and_completions() {
    assert_eq!(
        chat(json!({"logprobs": true})).unwrap().sampling.logprobs,
        Some(0)
    );
    assert_eq!(
        chat(json!({"logprobs": true, "top_logprobs": 5}))
            .unwrap()
            .sampling
            .logprobs,
        Some(5)
    );
    assert_eq!(
        chat(json!({"logprobs": false})).unwrap().sampling.logprobs,
        None
    );
    let completion = |v| common(v).validate(0, Endpoint::Completion);
    assert_eq!(
        completion(json!({"logprobs": 3}))
            .unwrap()
            .sampling
            .logprobs,
        Some(3)
    );
    assert_eq!(
        completion(json!({"logprobs": 0}))
            .unwrap()
            .sampling
            .logprobs,
        Some(0)
    );
    for body in [
        json!({"logprobs": true}),
        json!({"logprobs": 21}),
        json!({"logprobs": 1.5}),
    ] {
        assert_eq!(
            param_of(body.clone(), Endpoint::Completion).as_deref(),
            Some("logprobs"),
            "{body}"
        );
    }
    assert_eq!(
        param_of(json!({"top_logprobs": 1}), Endpoint::Completion).as_deref(),
        Some("top_logprobs")
    );
}

#[test]
fn seed_stop_and_stream_options_are_read() {
    let g = chat(json!({
        "seed": 42, "stop": "\n", "stream": true, "stream_options": {"include_usage": true},
        "temperature": 0, "top_k": 40, "top_p": 0.9
    }))
    .unwrap();
    assert_eq!(
        (
            g.sampling.temperature,
            g.sampling.top_p,
            g.sampling.top_k,
            g.sampling.seed
        ),
        (0.0, 0.9, 40, 42)
    );
    assert_eq!(g.stop, ["\n"]);
    assert!(g.stream && g.include_usage);
    let g = chat(json!({"stop": ["a", "b"], "stop_token_ids": null})).unwrap();
    assert_eq!(g.stop, ["a", "b"]);
}
