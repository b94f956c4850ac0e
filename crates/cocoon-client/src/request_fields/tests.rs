//! Every field's range at both ends, every refusal naming its parameter, and the engine
//! parameters a request is found to use.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::http::Failure;
use crate::request::{prepare, Defaults, Endpoint, Prepared};

const DEFAULTS: Defaults = Defaults {
    max_coefficient: 4000,
    timeout: Duration::from_secs(300),
};

fn user() -> Value {
    json!([{"role": "user", "content": "hi"}])
}

/// A chat request with `extra` fields.
fn chat(extra: Value) -> Result<Prepared, Failure> {
    let mut body = json!({"model": "m", "messages": user()});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    prepare(Endpoint::Chat, body.to_string().as_bytes(), DEFAULTS)
}

fn completion(extra: Value) -> Result<Prepared, Failure> {
    let mut body = json!({"model": "m", "prompt": "Once"});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    prepare(Endpoint::Completions, body.to_string().as_bytes(), DEFAULTS)
}

fn refused_param(result: Result<Prepared, Failure>) -> String {
    let failure = result.expect_err("should be refused");
    assert_eq!(failure.status, StatusCode::BAD_REQUEST);
    failure.error.error.param.expect("names its parameter")
}

fn engine_params(result: Result<Prepared, Failure>) -> Vec<String> {
    result.expect("should be accepted").engine_params
}

#[test]
fn numeric_ranges_are_checked_at_both_ends() {
    let cases: [(&str, Value, Value, Value, Value); 5] = [
        ("temperature", json!(0), json!(2), json!(-0.01), json!(2.01)),
        ("top_p", json!(0), json!(1), json!(-0.1), json!(1.01)),
        (
            "frequency_penalty",
            json!(-2),
            json!(2),
            json!(-2.1),
            json!(2.1),
        ),
        (
            "presence_penalty",
            json!(-2),
            json!(2),
            json!(-2.5),
            json!(5),
        ),
        ("n", json!(1), json!(128), json!(0), json!(129)),
    ];
    for (param, low, high, below, above) in cases {
        assert!(chat(json!({ param: low })).is_ok(), "{param} = {low}");
        assert!(chat(json!({ param: high })).is_ok(), "{param} = {high}");
        assert_eq!(refused_param(chat(json!({ param: below }))), param);
        assert_eq!(refused_param(chat(json!({ param: above }))), param);
        assert_eq!(refused_param(chat(json!({ param: "1" }))), param);
    }
    let logprobs = |top: Value| chat(json!({"logprobs": true, "top_logprobs": top}));
    assert!(logprobs(json!(0)).is_ok());
    assert!(logprobs(json!(20)).is_ok());
    assert_eq!(refused_param(logprobs(json!(21))), "top_logprobs");
    assert_eq!(refused_param(logprobs(json!(-1))), "top_logprobs");
    assert_eq!(
        refused_param(chat(json!({"top_logprobs": 2}))),
        "top_logprobs"
    );
    assert!(completion(json!({"logprobs": 5})).is_ok());
    assert_eq!(
        refused_param(completion(json!({"logprobs": 6}))),
        "logprobs"
    );
    assert_eq!(refused_param(chat(json!({"logprobs": 1}))), "logprobs");
    assert_eq!(refused_param(chat(json!({"seed": 1.5}))), "seed");
    assert!(chat(json!({"seed": -5})).is_ok());
}

#[test]
fn logit_bias_takes_token_ids_to_bounded_numbers() {
    assert!(chat(json!({"logit_bias": {"50256": -100, "7": 100}})).is_ok());
    for bad in [
        json!({"50256": -100.5}),
        json!({"7": 101}),
        json!({"word": 1}),
        json!({"-1": 1}),
        json!({"99999999999": 1}),
        json!({"7": "1"}),
        json!([1]),
    ] {
        assert_eq!(
            refused_param(chat(json!({ "logit_bias": bad }))),
            "logit_bias"
        );
    }
    let many: serde_json::Map<String, Value> =
        (0..1025).map(|id| (id.to_string(), json!(1))).collect();
    assert_eq!(
        refused_param(chat(json!({ "logit_bias": many }))),
        "logit_bias"
    );
}

#[test]
fn stop_holds_at_most_four_sequences() {
    assert!(chat(json!({"stop": "\n"})).is_ok());
    assert!(chat(json!({"stop": ["a", "b", "c", "d"]})).is_ok());
    for bad in [
        json!(["a", "b", "c", "d", "e"]),
        json!(""),
        json!([1]),
        json!(7),
    ] {
        assert_eq!(refused_param(chat(json!({ "stop": bad }))), "stop");
    }
}

#[test]
fn messages_need_valid_roles_and_content() {
    let messages = |list: Value| chat(json!({ "messages": list }));
    for good in [
        json!([{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
        json!([{"role": "developer", "content": "d"}, {"role": "user", "content": "u", "name": "ann"}]),
        json!([{"role": "user", "content": "u"}, {"role": "assistant", "content": null, "refusal": "no"}]),
    ] {
        assert!(messages(good.clone()).is_ok(), "{good}");
    }
    for bad in [
        json!([{"content": "no role"}]),
        json!([{"role": 1, "content": "x"}]),
        json!([{"role": "wizard", "content": "x"}]),
        json!([{"role": "user"}]),
        json!([{"role": "user", "content": 5}]),
        json!([{"role": "user", "content": [{"text": "no type"}]}]),
        json!([{"role": "user", "content": [{"type": "text"}]}]),
        json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        json!([{"role": "assistant"}]),
        json!([{"role": "tool", "content": "42"}]),
        json!([{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}]),
        json!([{"role": "user", "content": "x", "name": 3}]),
        json!([]),
        json!("hi"),
    ] {
        assert_eq!(refused_param(messages(bad.clone())), "messages", "{bad}");
    }
}

#[test]
fn tools_and_tool_choice_are_shaped_as_openai_documents() {
    let weather = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "d",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }}]);
    let uses = engine_params(chat(json!({"tools": weather, "tool_choice": "auto"})));
    assert_eq!(uses, ["tools", "tool_choice"]);
    assert!(chat(json!({"tools": weather, "tool_choice": "required"})).is_ok());
    assert!(chat(json!({"tools": weather, "parallel_tool_calls": false})).is_ok());
    assert!(chat(json!({"tools": weather,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}))
    .is_ok());
    // `none` needs no tools, but is still the engine's to honour.
    assert_eq!(
        engine_params(chat(json!({"tool_choice": "none"}))),
        ["tool_choice"]
    );
    for (extra, param) in [
        (json!({"tools": {}}), "tools"),
        (json!({"tools": [{"type": "retrieval"}]}), "tools"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
            "tools",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]}),
            "tools",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (json!({"tool_choice": "auto"}), "tool_choice"),
        (
            json!({"tools": weather, "tool_choice": "always"}),
            "tool_choice",
        ),
        (
            json!({"tools": weather, "tool_choice": {"type": "function", "function": {"name": "other"}}}),
            "tool_choice",
        ),
        (json!({"parallel_tool_calls": true}), "parallel_tool_calls"),
    ] {
        assert_eq!(refused_param(chat(extra.clone())), param, "{extra}");
    }
    let many: Vec<Value> = (0..129)
        .map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}}))
        .collect();
    assert_eq!(refused_param(chat(json!({ "tools": many }))), "tools");
}

#[test]
fn response_format_shapes() {
    assert!(engine_params(chat(json!({"response_format": {"type": "text"}}))).is_empty());
    assert_eq!(
        engine_params(chat(json!({"response_format": {"type": "json_object"}}))),
        ["response_format"]
    );
    let schema = json!({"type": "json_schema", "json_schema": {
        "name": "answer", "strict": true,
        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}
    }});
    assert!(chat(json!({ "response_format": schema })).is_ok());
    for bad in [
        json!({"type": "xml"}),
        json!({"type": "json_schema"}),
        json!({"type": "json_schema", "json_schema": {"schema": {}}}),
        json!({"type": "json_schema", "json_schema": {"name": "a", "schema": "x"}}),
        json!("json"),
    ] {
        assert_eq!(
            refused_param(chat(json!({ "response_format": bad }))),
            "response_format"
        );
    }
}

#[test]
fn engine_parameters_are_listed_never_dropped() {
    // Neutral values use nothing beyond the base.
    let neutral = chat(json!({
        "n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {},
        "logprobs": false, "temperature": 0.7, "top_p": 0.9, "stop": ["x"], "seed": 3,
        "user": "u", "store": false, "metadata": {"k": "v"}, "modalities": ["text"],
        "stream": true, "stream_options": {"include_usage": true}
    }));
    assert!(engine_params(neutral).is_empty());
    let used = engine_params(chat(json!({
        "n": 3, "frequency_penalty": 0.5, "logit_bias": {"1": 5}, "logprobs": true,
        "top_logprobs": 2, "top_k": 40, "min_p": 0.1
    })));
    for param in [
        "n",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "top_k",
        "min_p",
    ] {
        assert!(used.iter().any(|p| p == param), "{param} in {used:?}");
    }
    let image = json!([{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]);
    assert_eq!(
        engine_params(chat(json!({ "messages": image }))),
        ["image_url"]
    );
    let history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    ]);
    assert_eq!(
        engine_params(chat(json!({ "messages": history }))),
        ["tools"]
    );
    // Completions: several prompts, echo, suffix, best_of.
    let used = engine_params(completion(json!({
        "prompt": ["a", "b"], "echo": true, "suffix": "z", "n": 2, "best_of": 3
    })));
    assert_eq!(used, ["prompt", "echo", "suffix", "n", "best_of"]);
    assert!(engine_params(completion(json!({"prompt": [[1, 2]], "echo": false}))).is_empty());
    assert_eq!(
        refused_param(completion(json!({"n": 3, "best_of": 2}))),
        "best_of"
    );
    for bad in [json!([]), json!([1, "a"]), json!([[]]), json!({})] {
        assert_eq!(
            refused_param(completion(json!({ "prompt": bad }))),
            "prompt"
        );
    }
    // An unknown parameter's name must be a plain one (it travels in a header).
    assert_eq!(refused_param(chat(json!({"top k": 1}))), "top k");
    let huge = "y".repeat(10_000);
    assert_eq!(refused_param(chat(json!({ huge: 1 }))), "y".repeat(64));
    let many: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("x{i}"), json!(1))).collect();
    assert!(refused_param(chat(Value::Object(many))).starts_with('x'));
}

#[test]
fn stream_options_need_a_stream() {
    assert_eq!(
        refused_param(chat(json!({"stream_options": {"include_usage": true}}))),
        "stream_options"
    );
    assert!(chat(json!({"stream": true, "stream_options": {"include_usage": false}})).is_ok());
}
