//! End-to-end with the real model: `cocoon proxy`, a `cocoon worker` embedding llama.cpp with
//! SmolLM2-135M-Instruct, and `cocoon client`, as separate processes on loopback.
//!
//! The model comes from `cocoon model fetch` (run by `scripts/setup.sh`). Without it these tests
//! say so and pass, except on CI (`CI` set), where a missing model is a failure.

#![cfg(feature = "embedded")]

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn the_network_answers_with_the_real_model() {
    // The proxy admits exactly these weights for this name.
    let Some((_network, api)) = embedded_network(2).await else {
        return;
    };
    let http = http();

    let response = http
        .post(format!("{api}/v1/chat/completions"))
        .json(&json!({
            "model": "SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 32,
            "temperature": 0,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-cocoon-model-hash"],
        cocoon_infer::DEFAULT_MODEL_SHA256,
        "the worker advertises the hash of the model it serves"
    );
    let answer: Value = response.json().await.unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{answer}");
    assert!(
        answer["usage"]["prompt_tokens"].as_u64().unwrap() > 5,
        "{answer}"
    );

    // Streamed, token by token, with a length limit honoured exactly.
    let response = http
        .post(format!("{api}/v1/completions"))
        .json(&json!({
            "model": "SmolLM2-135M-Instruct",
            "prompt": "Once upon a time",
            "max_tokens": 6,
            "stream": true,
            "stream_options": {"include_usage": true},
        }))
        .send()
        .await
        .unwrap();
    let (events, receipt) = stream_answer(response).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let receipt = receipt.expect("a receipt after [DONE]");
    assert_eq!(
        receipt["answer"]["model_hash"],
        cocoon_infer::DEFAULT_MODEL_SHA256
    );
    assert_eq!(receipt["answer"]["usage"]["completion_tokens"], 6);
    let chunks: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 6, "{events:?}");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));
}

/// The model hash a worker started with `extra` attests, read from its stats once it is up.
async fn attested_hash(proxy: &ProxyAddrs, model: &str, extra: &[&str]) -> String {
    let mut args = vec!["--engine", "embedded", "--model-path", model];
    args.extend_from_slice(extra);
    let (_worker, stats) = worker(proxy, &args);
    wait_for_port(&stats);
    let details = get_json(&format!("http://{stats}/jsonstats")).await["details"].clone();
    details["model_hash"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_private_weights_copy_attests_the_bytes_it_serves_not_a_planted_digest() {
    let Some(model) = model_path() else { return };
    let host = tempfile::tempdir().unwrap();
    let served = host.path().join(model.file_name().unwrap());
    std::fs::copy(&model, &served).unwrap();
    // The host plants a digest for the file's size and time (the sidecar format is public).
    cocoon_tee::weights::weights_sha256(&served).unwrap();
    let sidecar = cocoon_tee::weights::cache_path(&served);
    let planted = std::fs::read_to_string(&sidecar).unwrap().replacen(
        cocoon_infer::DEFAULT_MODEL_SHA256,
        &"ab".repeat(32),
        1,
    );
    std::fs::write(&sidecar, planted).unwrap();
    let served = served.display().to_string();
    let (_proxy, proxy) = proxy(&[]);

    // Serving the file as it is believes the sidecar: the attack this guards against.
    assert_eq!(attested_hash(&proxy, &served, &[]).await, "ab".repeat(32));

    let private = tempfile::tempdir().unwrap();
    let copy_dir = private.path().display().to_string();
    let hash = attested_hash(&proxy, &served, &["--weights-copy-dir", &copy_dir]).await;
    assert_eq!(hash, cocoon_infer::DEFAULT_MODEL_SHA256);
    assert_eq!(
        std::fs::read_dir(private.path()).unwrap().count(),
        0,
        "the copy's name is removed once the model is loaded"
    );
}
