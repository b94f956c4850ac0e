//! The JSON-schema grammars through llama.cpp with the real model: every keyword the converter
//! supports yields a grammar llama.cpp accepts and output that matches, and schemas llama.cpp
//! cannot use (left recursion) are refused as requests, never a crash.

mod support;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::*;

/// A schema and what a value valid against it looks like.
type Case = (Value, fn(&Value) -> bool);

async fn answer_to(schema: Value) -> Option<(StatusCode, Value)> {
    let app = shared_router()?;
    let _serial = SERIAL.lock().await;
    let body = chat(
        "Answer in JSON.",
        json!({
            "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
            "temperature": 0,
            "max_tokens": 48,
        }),
    );
    Some(post(&app, "/v1/chat/completions", body).await)
}

/// The answer's JSON when generation completed (a value cut by `max_tokens` is not checked).
async fn value_for(schema: Value) -> Option<Value> {
    let (status, answer) = answer_to(schema.clone()).await?;
    assert_eq!(status, StatusCode::OK, "{schema}: {answer}");
    if answer["choices"][0]["finish_reason"] != "stop" {
        return None;
    }
    let text = content(&answer);
    Some(serde_json::from_str(text).unwrap_or_else(|e| panic!("{schema}: {e}: {text}")))
}

#[tokio::test]
async fn every_supported_keyword_is_enforced_by_llama_cpp() {
    if shared_engine().is_none() {
        return;
    }
    let cases: Vec<Case> = vec![
        (json!({"const": "fixed"}), |v| v == "fixed"),
        (json!({"enum": ["x", 2, null]}), |v| {
            v == "x" || v == 2 || v.is_null()
        }),
        (json!({"type": ["integer", "null"]}), |v| {
            v.is_i64() || v.is_u64() || v.is_null()
        }),
        (json!({"type": "boolean"}), Value::is_boolean),
        (json!({"type": "number"}), Value::is_number),
        (
            json!({"type": "string", "minLength": 2, "maxLength": 4}),
            |v| {
                v.as_str()
                    .is_some_and(|s| (2..=4).contains(&s.chars().count()))
            },
        ),
        (
            json!({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}),
            |v| v.is_i64() || v.is_u64() || v.is_boolean(),
        ),
        (
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}),
            |v| {
                v.as_array()
                    .is_some_and(|a| (2..=3).contains(&a.len()) && a.iter().all(Value::is_i64))
            },
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}}}),
            |v| {
                v.as_object()
                    .is_some_and(|o| o.keys().all(|k| k == "a" || k == "b"))
            },
        ),
        (
            json!({"$defs": {"leaf": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
                   "type": "array", "items": {"$ref": "#/$defs/leaf"}, "maxItems": 2}),
            |v| {
                v.as_array()
                    .is_some_and(|a| a.iter().all(|e| e["n"].is_i64()))
            },
        ),
        (json!({"type": "object"}), Value::is_object),
    ];
    let total = cases.len();
    let mut checked = 0;
    for (schema, matches) in cases {
        if let Some(value) = value_for(schema.clone()).await {
            assert!(matches(&value), "{schema}: {value}");
            checked += 1;
        }
    }
    // Short schemas finish well within the budget: most answers are complete and checked.
    assert!(
        checked * 2 > total,
        "only {checked} of {total} answers completed"
    );
}

#[tokio::test]
async fn grammars_llama_cpp_cannot_use_are_refused_by_name() {
    for schema in [
        json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        json!({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"}),
    ] {
        let Some((status, answer)) = answer_to(schema.clone()).await else {
            return;
        };
        assert_eq!(status, StatusCode::BAD_REQUEST, "{schema}: {answer}");
        assert_eq!(answer["error"]["param"], "response_format", "{answer}");
    }
}
