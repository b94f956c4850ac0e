//! What the real-model tests share: the model, one engine for all tests of a binary, and asking
//! its router.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use cocoon_infer::{default_cache_dir, default_model_path, router, Engine, EngineConfig};
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
pub static SHARED: OnceLock<Arc<Engine>> = OnceLock::new();

/// The model file, or `None` (after saying so) when it is absent outside CI.
pub fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("COCOON_MODEL_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_model_path(&default_cache_dir()));
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "model not present at {} (CI requires it: run fetch_default_model or set COCOON_MODEL_PATH)",
            path.display()
        );
    }
    println!("skipped: model not present ({})", path.display());
    None
}

pub fn config(path: PathBuf, parallel: usize) -> EngineConfig {
    let mut config = EngineConfig::new(path);
    config.context_length = 512;
    config.parallel = parallel;
    // One thread per engine: test binaries share a small machine, and llama.cpp's OpenMP threads
    // spin-wait, which collapses throughput when they outnumber the free cores.
    config.threads = Some(1);
    config
}

pub fn shared_engine() -> Option<Arc<Engine>> {
    let path = model_path()?;
    Some(Arc::clone(SHARED.get_or_init(|| {
        Engine::load(config(path, 2)).expect("model loads")
    })))
}

pub async fn post(app: &Router, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .clone()
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// The `data` of every SSE event of a streamed request.
pub async fn post_stream(app: &Router, path: &str, body: Value) -> Vec<String> {
    let response = app
        .clone()
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    sse_stream::SseStream::new(response.into_body())
        .map(|event| event.expect("well-formed SSE").data.unwrap_or_default())
        .collect()
        .await
}

pub fn chat(question: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": question}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

pub fn content(response: &Value) -> &str {
    response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
}

/// The shared engine's router, or `None` when the model is absent.
pub fn shared_router() -> Option<Router> {
    shared_engine().map(router)
}
