//! End-to-end with the real model: what agent frameworks and structured-output apps send — tools
//! and `tool_choice`, `response_format`, `logprobs`, `n`, penalties and `logit_bias`, prompt
//! lists and `echo` — honoured by the embedded engine through proxy, worker and client.
//!
//! The model comes from `cocoon model fetch`; without it these tests say so and pass, except on
//! CI (see `embedded_model.rs`).

#![cfg(feature = "embedded")]

use crate::common::*;
use serde_json::{json, Value};

const MODEL: &str = MODEL_NAME;

async fn post(api: &str, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = http()
        .post(format!("{api}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap(), headers)
}

/// The JSON chunks of a streamed answer.
fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect()
}

/// `cocoon receipt verify` of a receipt header (and, when given, against `answer`).
fn verify_receipt(header: &[u8], answer: Option<&Value>, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let receipt = dir.path().join("receipt").display().to_string();
    let body = dir.path().join("answer.json").display().to_string();
    std::fs::write(&receipt, header).unwrap();
    let mut args = vec!["receipt", "verify", &receipt, "--min-tee", "fake"];
    if let Some(answer) = answer {
        std::fs::write(&body, answer.to_string()).unwrap();
        args.extend(["--response", &body]);
    }
    args.extend(extra);
    cocoon(&args)
}

async fn chat(api: &str, body: Value) -> Value {
    let (status, answer, _) = post(api, "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn weather_tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 24},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city", "unit"],
                "additionalProperties": false
            }
        }
    }])
}

fn ask_weather(extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather like in Paris?"}],
        "tools": weather_tools(),
        "temperature": 0,
        "max_tokens": 60,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Checks a call's arguments against the weather schema.
fn assert_weather_arguments(arguments: &str) {
    let arguments: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("arguments are not JSON ({e}): {arguments}"));
    let object = arguments.as_object().expect("arguments are an object");
    assert!(
        object.keys().all(|k| k == "city" || k == "unit"),
        "{arguments}"
    );
    let city = object["city"].as_str().expect("city is a string");
    assert!(city.chars().count() <= 24, "{arguments}");
    assert!(
        ["celsius", "fahrenheit"].contains(&object["unit"].as_str().expect("unit is a string")),
        "{arguments}"
    );
}

#[tokio::test]
async fn tool_calls_are_decoded_under_the_schema_and_answered_in_openai_shape() {
    let Some((_network, api)) = embedded_network(3).await else {
        return;
    };
    // Forced by name, and `required`: one valid call to the function.
    for choice in [
        json!({"type": "function", "function": {"name": "get_weather"}}),
        json!("required"),
    ] {
        let (status, answer, headers) = post(
            &api,
            "/v1/chat/completions",
            ask_weather(json!({"tool_choice": choice})),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let choice0 = &answer["choices"][0];
        assert_eq!(choice0["finish_reason"], "tool_calls", "{answer}");
        assert_eq!(choice0["message"]["content"], Value::Null, "{answer}");
        let call = &choice0["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(call["function"]["name"], "get_weather");
        assert_weather_arguments(call["function"]["arguments"].as_str().unwrap());

        // The receipt covers the call: it verifies against this very answer, not another call.
        let header = headers["x-cocoon-receipt"].as_bytes();
        let (ok, _, stderr) = verify_receipt(header, Some(&answer), &[]);
        assert!(ok, "{stderr}");
        let mut forged = answer.clone();
        forged["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] =
            json!("{\"city\": \"Rome\", \"unit\": \"celsius\"}");
        let (ok, _, _) = verify_receipt(header, Some(&forged), &[]);
        assert!(!ok, "a receipt must not verify another tool call");
    }

    // `none`: plain text, no call, even though tools are offered.
    let answer = chat(&api, ask_weather(json!({"tool_choice": "none"}))).await;
    let choice0 = &answer["choices"][0];
    assert!(choice0["message"]["content"].is_string(), "{answer}");
    assert!(choice0["message"].get("tool_calls").is_none(), "{answer}");
    assert_ne!(choice0["finish_reason"], "tool_calls");

    // `auto`: either a valid call or text.
    let answer = chat(&api, ask_weather(json!({"tool_choice": "auto"}))).await;
    let choice0 = &answer["choices"][0];
    match choice0["message"].get("tool_calls") {
        Some(calls) => {
            assert_eq!(choice0["finish_reason"], "tool_calls", "{answer}");
            assert_eq!(calls[0]["function"]["name"], "get_weather");
            assert_weather_arguments(calls[0]["function"]["arguments"].as_str().unwrap());
        }
        None => {
            let text = choice0["message"]["content"].as_str().unwrap();
            assert!(!text.starts_with('{'), "{answer}");
        }
    }

    // Streamed: the call arrives as `delta.tool_calls`, name first, then the arguments.
    let response = http()
        .post(format!("{api}/v1/chat/completions"))
        .json(&ask_weather(
            json!({"tool_choice": "required", "stream": true}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (events, receipt) = stream_answer(response).await;
    assert!(receipt.is_some(), "a streamed call has its receipt");
    let chunks = chunks(&events);
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas[0]["function"]["name"], "get_weather", "{events:?}");
    let arguments: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_weather_arguments(&arguments);
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test]
async fn structured_output_matches_its_schema_and_logprobs_are_sensible() {
    let Some((_network, api)) = embedded_network(3).await else {
        return;
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer"},
            "colours": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3}
        },
        "required": ["name", "age", "colours"],
        "additionalProperties": false
    });
    let answer = chat(
        &api,
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Describe a person as JSON."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}},
            "temperature": 0,
            "max_tokens": 120,
        }),
    )
    .await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let person: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    let mut keys: Vec<&String> = person.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["age", "colours", "name"], "{content}");
    assert!(person["name"].as_str().unwrap().chars().count() <= 20);
    assert!(
        person["age"].is_i64() || person["age"].is_u64(),
        "{content}"
    );
    let colours = person["colours"].as_array().unwrap();
    assert!(colours.len() <= 3);
    assert!(colours
        .iter()
        .all(|c| ["red", "green", "blue"].contains(&c.as_str().unwrap())));

    // json_object: any JSON object.
    let answer = chat(
        &api,
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Give me a JSON object."}],
            "response_format": {"type": "json_object"},
            "temperature": 0,
            "max_tokens": 80,
        }),
    )
    .await;
    if answer["choices"][0]["finish_reason"] == "stop" {
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        let value: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(value.is_object(), "{content}");
    }
    // A schema keyword the grammar cannot enforce is refused by name.
    let (status, error, _) = post(
        &api,
        "/v1/chat/completions",
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "a+"}}},
        }),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "response_format");

    // Chat logprobs at temperature 0: each ≤ 0, alternatives sorted, the chosen one first.
    let answer = chat(
        &api,
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "logprobs": true,
            "top_logprobs": 3,
            "temperature": 0,
            "max_tokens": 8,
        }),
    )
    .await;
    let content = answer["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(
        content.len() as u64,
        answer["usage"]["completion_tokens"].as_u64().unwrap()
            - u64::from(answer["choices"][0]["finish_reason"] == "stop"),
        "one entry per generated token (the end of turn has none): {answer}"
    );
    for entry in content {
        let logprob = entry["logprob"].as_f64().unwrap();
        assert!(logprob <= 0.0, "{entry}");
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{entry}");
        let values: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{entry}");
        assert!(values.iter().map(|v| v.exp()).sum::<f64>() <= 1.0 + 1e-4);
        assert_eq!(
            top[0]["token"], entry["token"],
            "greedy picks the likeliest: {entry}"
        );
        assert_eq!(top[0]["logprob"], entry["logprob"]);
    }
    let text: String = content
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(
        text,
        answer["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Completions: `logprobs: k`, streamed, with text offsets.
    let response = http()
        .post(format!("{api}/v1/completions"))
        .json(
            &json!({"model": MODEL, "prompt": "The sky is", "logprobs": 2, "max_tokens": 4,
            "temperature": 0, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    let (events, _) = stream_answer(response).await;
    let chunks = chunks(&events);
    let offsets: Vec<u64> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["text_offset"].as_array())
        .flatten()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets.len(), 4, "{events:?}");
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
}

#[tokio::test]
async fn n_choices_prompt_lists_echo_penalties_and_bias() {
    let Some((_network, api)) = embedded_network(3).await else {
        return;
    };
    // n = 3: three choices, each up to max_tokens, billed as three.
    let (status, answer, headers) = post(
        &api,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "Once upon a time", "n": 3, "max_tokens": 5,
            "temperature": 1, "seed": 7}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{answer}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
    }
    let completion = answer["usage"]["completion_tokens"].as_u64().unwrap();
    let lengths = choices
        .iter()
        .filter(|c| c["finish_reason"] == "length")
        .count() as u64;
    assert!(
        completion >= lengths * 5 && completion <= 15,
        "every choice is counted: {answer}"
    );
    assert!(answer["usage"]["total_cost"].as_u64().unwrap() > 0);
    let (ok, stdout, stderr) =
        verify_receipt(headers["x-cocoon-receipt"].as_bytes(), None, &["--json"]);
    assert!(ok, "{stderr}");
    let verified: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        verified["answer"]["usage"]["completion_tokens"], completion,
        "the receipt bills every choice: {verified}"
    );

    // n = 2 streamed: both indices arrive, and the usage counts both.
    let response = http()
        .post(format!("{api}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}],
            "n": 2, "max_tokens": 4, "stream": true, "temperature": 1, "seed": 3, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    let (events, _) = stream_answer(response).await;
    let chunks = chunks(&events);
    let finished: Vec<u64> = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    let mut sorted = finished.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [0, 1], "{events:?}");
    let usage = &chunks.iter().find(|c| c["usage"].is_object()).unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 4, "{usage}");

    // A list of prompts with echo: one choice each, starting with its prompt.
    let (status, answer, _) = post(
        &api,
        "/v1/completions",
        json!({"model": MODEL, "prompt": ["The sky is", "Grass is"], "echo": true,
            "max_tokens": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert!(choices[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("The sky is"));
    assert!(choices[1]["text"].as_str().unwrap().starts_with("Grass is"));
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() >= 4);

    // logit_bias −100 on the token greedy decoding picks first: another token comes first.
    let greedy = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 12,
        "temperature": 0, "logprobs": 0, "return_tokens_as_token_ids": true});
    let (_, plain, _) = post(&api, "/v1/completions", greedy.clone()).await;
    let first = plain["choices"][0]["logprobs"]["tokens"][0]
        .as_str()
        .unwrap();
    let first_id = first.strip_prefix("token_id:").unwrap();
    let mut biased = greedy.clone();
    biased["logit_bias"] = json!({ first_id: -100 });
    let (_, answer, _) = post(&api, "/v1/completions", biased).await;
    assert_ne!(
        answer["choices"][0]["logprobs"]["tokens"][0], first,
        "{answer}"
    );
    assert_ne!(answer["choices"][0]["text"], plain["choices"][0]["text"]);

    // Penalties change greedy text that repeats itself.
    let repeat = json!({"model": MODEL, "prompt": "one one one one one one one", "max_tokens": 16,
        "temperature": 0});
    let (_, plain, _) = post(&api, "/v1/completions", repeat.clone()).await;
    let mut penalised = repeat;
    penalised["frequency_penalty"] = json!(2.0);
    penalised["presence_penalty"] = json!(2.0);
    let (_, answer, _) = post(&api, "/v1/completions", penalised).await;
    assert_ne!(
        answer["choices"][0]["text"], plain["choices"][0]["text"],
        "{answer} vs {plain}"
    );
}
