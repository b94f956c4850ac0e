//! End-to-end: the OpenAI API at the client's edge (issue #13) — every request checked at the
//! client whatever the engine, engine parameters sent only to engines that honour them, limits
//! and quota refused in OpenAI's shape before anything is reserved, `GET /v1/models/{id}`, real
//! `created` times, `x-request-id` on every answer, and CORS.

use std::sync::{Arc, Mutex};

use crate::common::*;
use serde_json::{json, Value};

/// Asks `body` and returns the status, the answer's `x-request-id`, and its JSON.
async fn ask_json(api: &str, body: &Value) -> (u16, Option<String>, Value) {
    let response = post_chat(api, body).await.unwrap();
    let status = response.status().as_u16();
    let id = request_id_of(&response);
    (status, id, response.json().await.unwrap())
}

async fn get(url: String) -> reqwest::Response {
    http().get(url).send().await.unwrap()
}

fn request_id_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// `chat(…)` with `extra` fields.
fn chat_with(extra: Value) -> Value {
    let mut body = chat(4, false);
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// An OpenAI-compatible engine on loopback that records each request body and answers a fixed
/// completion.
async fn recording_engine(seen: Arc<Mutex<Vec<Value>>>) -> String {
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(body): axum::Json<Value>| {
            seen.lock().unwrap().push(body);
            async {
                axum::Json(json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": "synthetic",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
                }))
            }
        }),
    );
    serve_on_loopback(router).await
}

#[tokio::test]
async fn requests_are_checked_at_the_client_and_engine_parameters_go_only_where_honoured() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = recording_engine(seen.clone()).await;
    let (_proxy_node, proxy) = proxy(&[]);
    // The cheap worker runs the synthetic engine (it honours no engine parameter); the dearer
    // one an engine URL (which gets every parameter and judges it itself).
    let (_synthetic, synthetic_stats) = worker(&proxy, &["--coefficient", "500"]);
    let url_args = [
        "--engine",
        &engine,
        "--model",
        "synthetic",
        "--coefficient",
        "1000",
    ];
    let (_url_worker, _) = worker(&proxy, &url_args);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 2).await;

    // Out of range or malformed: refused at the client, naming the parameter, for any engine.
    for (extra, param) in [
        (json!({"temperature": 5}), "temperature"),
        (json!({"messages": [{"content": "no role"}]}), "messages"),
        (json!({"frequency_penalty": 5}), "frequency_penalty"),
        (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"logit_bias": {"word": 3}}), "logit_bias"),
        (json!({"n": 500}), "n"),
        (json!({"tool_choice": "required"}), "tool_choice"),
    ] {
        let (status, id, error) = ask_json(&api, &chat_with(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {error}");
        assert_eq!(error["error"]["param"], param, "{extra}: {error}");
        assert!(id.is_some(), "errors carry x-request-id too");
    }
    let synthetic = get_json(&format!("http://{synthetic_stats}/jsonstats")).await;
    assert_eq!(synthetic["requests"], 0, "nothing reached a worker");
    assert!(seen.lock().unwrap().is_empty());

    // Valid, and honoured by the engine URL only: sent there, unchanged, though it is dearer.
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }}]);
    let image = json!([{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]);
    for extra in [
        json!({"tools": tools, "tool_choice": "auto"}),
        json!({"n": 2, "logprobs": true, "top_logprobs": 3}),
        json!({"response_format": {"type": "json_object"}, "frequency_penalty": 0.5}),
        json!({ "messages": image }),
        json!({"min_p": 0.05}),
    ] {
        let body = chat_with(extra.clone());
        let answer = post_chat(&api, &body).await.unwrap();
        assert_eq!(answer.status(), 200, "{extra}");
        assert_eq!(answer.headers()["x-cocoon-coefficient"], "1000", "{extra}");
        let received = seen.lock().unwrap().pop().expect("the engine got it");
        for (key, value) in extra.as_object().unwrap() {
            assert_eq!(&received[key], value, "{key} passed through unchanged");
        }
    }
    // A plain request goes to the cheapest worker, as before.
    let answer = post_chat(&api, &chat(4, false)).await.unwrap();
    assert_eq!(answer.headers()["x-cocoon-coefficient"], "500");
}

#[tokio::test]
async fn an_engine_that_does_not_honour_a_parameter_is_never_sent_it() {
    let (_proxy_node, proxy) = proxy(&[]);
    let (_worker, stats) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let image = json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]}]);
    for (extra, param) in [
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (json!({"tool_choice": "none"}), "tool_choice"),
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"presence_penalty": 1}), "presence_penalty"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({ "messages": image }), "image_url"),
        (json!({"top_k": 5}), "top_k"),
    ] {
        let (status, _, error) = ask_json(&api, &chat_with(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {error}");
        assert_eq!(error["error"]["param"], param, "{extra}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let worker = get_json(&format!("http://{stats}/jsonstats")).await;
    assert_eq!(
        worker["requests"], 0,
        "nothing reached the worker: {worker}"
    );
    // Neutral values of those parameters are the base: served.
    let neutral = chat_with(json!({"n": 1, "logprobs": false, "presence_penalty": 0,
        "response_format": {"type": "text"}, "logit_bias": {}}));
    assert_eq!(post_chat(&api, &neutral).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_limit_beyond_the_context_and_spent_funds_are_refused_before_any_reservation() {
    let (_proxy_node, proxy) = proxy(&[]);
    let (_worker, stats) = worker(&proxy, &[]);
    // A client with no money: it cannot open its contract.
    let (_client, api) = client(&proxy, &["--faucet", "0"]);
    wait_for_model_only(&api, "synthetic", 1).await;

    // Beyond the model's context: the request's fault, said so before any reservation (this
    // client could not pay for one), not 402/429.
    let (status, _, error) = ask_json(&api, &chat(100_000, false)).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
    assert_eq!(error["error"]["param"], "max_tokens", "{error}");
    // Within it, but unpaid: OpenAI's spent-quota answer, which SDKs raise as a rate limit.
    let (status, _, error) = ask_json(&api, &chat(5, false)).await;
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["error"]["type"], "insufficient_quota", "{error}");
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    let worker = get_json(&format!("http://{stats}/jsonstats")).await;
    assert_eq!(worker["requests"], 0, "{worker}");
}

#[tokio::test]
async fn models_request_ids_and_cors() {
    let (_proxy_node, proxy) = proxy(&[]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (_worker, _) = worker(&proxy, &[]);
    let origin = "https://app.example.com";
    let (_client, api) = client(&proxy, &["--cors-origin", origin]);
    let (_plain_client, plain_api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;

    // `created` is when the model became available: the worker's start.
    let list = get_json(&format!("{api}/v1/models")).await;
    let created = list["data"][0]["created"].as_u64().unwrap();
    assert!(created >= before.saturating_sub(1), "{list}");
    assert_eq!(list["data"][0]["context_length"], 65536, "{list}");
    let one = get(format!("{api}/v1/models/synthetic")).await;
    assert_eq!(one.status(), 200);
    assert!(request_id_of(&one).is_some_and(|id| id.starts_with("req_")));
    let one: Value = one.json().await.unwrap();
    assert_eq!(
        (one["id"].clone(), one["object"].clone()),
        (json!("synthetic"), json!("model"))
    );
    assert_eq!(one["created"], created);
    let missing = get(format!("{api}/v1/models/org/no-such-model")).await;
    assert_eq!(missing.status(), 404);
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(missing["error"]["code"], "model_not_found", "{missing}");
    assert_eq!(missing["error"]["param"], "model", "{missing}");

    // A sane request id of the app's is echoed (and names the request on the link); another is
    // replaced; every answer has one, errors and unknown routes included.
    let echoed = http()
        .post(format!("{api}/v1/chat/completions"))
        .header("x-request-id", "app-42.retry:1")
        .json(&chat(2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 200);
    assert_eq!(request_id_of(&echoed).as_deref(), Some("app-42.retry:1"));
    assert_eq!(echoed.headers()["x-cocoon-request-id"], "app-42.retry:1");
    let long = "x".repeat(200);
    let replaced = http()
        .get(format!("{api}/v1/models"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    let id = request_id_of(&replaced).unwrap();
    assert!(id.starts_with("req_") && id != long, "{id}");
    let unknown = get(format!("{api}/v2/nothing")).await;
    assert_eq!(unknown.status(), 404);
    assert!(request_id_of(&unknown).is_some());

    // CORS: the allowed origin's preflight (no API key needed) and answers; no other origin;
    // and nothing from a client that allows none.
    let preflight = |api: String, origin: &'static str| async move {
        http()
            .request(
                reqwest::Method::OPTIONS,
                format!("{api}/v1/chat/completions"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-stainless-os",
            )
            .send()
            .await
            .unwrap()
    };
    let allowed = preflight(api.clone(), origin).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], origin);
    let allow_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allow_headers.contains("authorization"), "{allow_headers}");
    assert!(allow_headers.contains("x-stainless-os"), "{allow_headers}");
    let other = preflight(api.clone(), "https://evil.example.com").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let none = preflight(plain_api.clone(), origin).await;
    assert!(none.headers().get("access-control-allow-origin").is_none());
    let answer = http()
        .post(format!("{api}/v1/chat/completions"))
        .header("origin", origin)
        .json(&chat(2, false))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["access-control-allow-origin"], origin);
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

/// The embedded engine's row of the table, with the real model (skipped without it, as the
/// embedded-model tests are).
#[cfg(feature = "embedded")]
#[tokio::test]
async fn the_embedded_engine_gets_what_it_honours_and_is_spared_the_rest() {
    let Some(model) = model_path() else { return };
    let model = model.display().to_string();
    let (_proxy_node, proxy) = proxy(&[]);
    let embedded = [
        "--engine",
        "embedded",
        "--model-path",
        &model,
        "--context-length",
        "1024",
    ];
    let (_worker, stats) = worker(&proxy, &embedded);
    let (_client, api) = client(&proxy, &[]);
    let name = "SmolLM2-135M-Instruct";
    wait_for_model(&api, name, 1).await;
    let listed: Value = get(format!("{api}/v1/models/{name}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["context_length"], 1024, "{listed}");
    assert!(listed["created"].as_u64() > Some(0), "{listed}");

    let ask = |extra: Value| {
        let mut body = json!({"model": name, "max_tokens": 3, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hi"}]});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    for (extra, param, code) in [
        // Not in its table: audio output.
        (
            json!({"modalities": ["text", "audio"]}),
            "modalities",
            "invalid_request",
        ),
        (
            json!({"max_tokens": 1024}),
            "max_tokens",
            "context_length_exceeded",
        ),
    ] {
        let (status, _, error) = ask_json(&api, &ask(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {error}");
        assert_eq!(error["error"]["param"], param, "{extra}: {error}");
        assert_eq!(error["error"]["code"], code, "{extra}: {error}");
    }
    let worker = get_json(&format!("http://{stats}/jsonstats")).await;
    assert_eq!(worker["requests"], 0, "refused before the worker: {worker}");
    // In its table: served.
    let (status, _, answer) = ask_json(&api, &ask(json!({"top_k": 5}))).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{answer}"
    );
    let (status, _, answer) = ask_json(&api, &ask(json!({"n": 2, "logit_bias": {"1": 5}}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
}
