//! End-to-end: every answer through the network comes with a receipt the worker signed and the
//! proxy countersigned, and `cocoon receipt verify` checks it offline — and fails when one byte of
//! the answer, the usage, or either signature changes.

use std::path::Path;

use crate::common::*;
use serde_json::{json, Value};

/// `cocoon receipt verify RECEIPT --min-tee fake EXTRA…`: the test network attests with `fake`.
fn verify(receipt: &Path, extra: &[&str]) -> (bool, String, String) {
    let receipt = receipt.display().to_string();
    let mut args = vec!["receipt", "verify", receipt.as_str(), "--min-tee", "fake"];
    args.extend_from_slice(extra);
    cocoon(&args)
}

#[tokio::test]
async fn answers_carry_receipts_that_verify_offline_and_tampering_fails() {
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &["--synthetic-chunk-bytes", "4"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let show = |p: &Path| p.display().to_string();

    // Not streamed: the receipt is a response header.
    let request = json!({"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6});
    let request_bytes = serde_json::to_vec(&request).unwrap();
    let response = http()
        .post(format!("{api}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(request_bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-cocoon-receipt"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    std::fs::write(path("receipt"), &header).unwrap();
    std::fs::write(path("answer.json"), &body).unwrap();
    std::fs::write(path("request.json"), &request_bytes).unwrap();
    let (ok, stdout, stderr) = verify(
        &path("receipt"),
        &[
            "--response",
            &show(&path("answer.json")),
            "--request",
            &show(&path("request.json")),
            "--ledger",
            &proxy.ledger,
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["response"], "matches");
    assert_eq!(report["request"], "matches");
    assert_eq!(report["answer"]["model"], "synthetic");
    assert_eq!(report["answer"]["usage"]["completion_tokens"], 6);
    // The charge in the receipt is the cost the app was shown.
    assert_eq!(report["answer"]["charge"], answer["usage"]["total_cost"]);
    assert_eq!(report["worker"]["image_hash"], image_hash("test-worker"));
    assert_eq!(report["proxy"]["image_hash"], image_hash("test-proxy"));
    // By default a receipt must come from `tdx` nodes: `fake` ones prove nothing.
    let (ok, _, stderr) = cocoon(&["receipt", "verify", &show(&path("receipt"))]);
    assert!(!ok);
    assert!(
        stderr.contains("below the policy's minimum tdx"),
        "{stderr}"
    );

    // One byte of the answer's text changed.
    let tampered = String::from_utf8(body.to_vec())
        .unwrap()
        .replacen("xxxx", "xxxy", 1);
    std::fs::write(path("tampered.json"), tampered).unwrap();
    let (ok, _, stderr) = verify(
        &path("receipt"),
        &["--response", &show(&path("tampered.json"))],
    );
    assert!(!ok);
    assert!(stderr.contains("response hashes to"), "{stderr}");

    // The usage, or either signature, changed.
    let receipt: Value = serde_json::from_str(&{
        let (ok, stdout, stderr) = verify(&path("receipt"), &["--json"]);
        assert!(ok, "{stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["response"], "not checked");
        // The header form and the JSON form are the same receipt.
        let decoded = base64_json(&header);
        serde_json::to_string(&decoded).unwrap()
    })
    .unwrap();
    let flip_hex = |text: &str| {
        let mut chars: Vec<char> = text.chars().collect();
        chars[10] = if chars[10] == '0' { '1' } else { '0' };
        chars.into_iter().collect::<String>()
    };
    type Tamper = Box<dyn Fn(&mut Value)>;
    let cases: [(&str, Tamper, &str); 3] = [
        (
            "usage",
            Box::new(|r: &mut Value| {
                let tokens = r["answer"]["usage"]["completion_tokens"].as_u64().unwrap();
                r["answer"]["usage"]["completion_tokens"] = json!(tokens - 1);
            }),
            "worker signature",
        ),
        (
            "worker signature",
            Box::new(move |r: &mut Value| {
                r["worker_signature"] = json!(flip_hex(r["worker_signature"].as_str().unwrap()));
            }),
            "worker signature",
        ),
        (
            "proxy signature",
            Box::new(move |r: &mut Value| {
                r["proxy_signature"] = json!(flip_hex(r["proxy_signature"].as_str().unwrap()));
            }),
            "proxy signature",
        ),
    ];
    for (what, tamper, expected) in cases {
        let mut changed = receipt.clone();
        tamper(&mut changed);
        std::fs::write(path("changed.json"), serde_json::to_vec(&changed).unwrap()).unwrap();
        let (ok, _, stderr) = verify(&path("changed.json"), &[]);
        assert!(!ok, "a changed {what} verified");
        assert!(stderr.contains(expected), "{what}: {stderr}");
    }

    // Streamed: the receipt is the event after [DONE], and covers the streamed text.
    let request = json!({"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": true});
    let (transcript, receipt) = streamed(&api, &request).await;
    std::fs::write(path("stream-receipt.json"), receipt.to_string()).unwrap();
    std::fs::write(path("stream.txt"), &transcript).unwrap();
    let (ok, stdout, stderr) = verify(
        &path("stream-receipt.json"),
        &["--response", &show(&path("stream.txt"))],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("response: matches"), "{stdout}");
    // Another answer's receipt does not cover this one.
    let (ok, _, _) = verify(
        &path("receipt"),
        &["--response", &show(&path("stream.txt"))],
    );
    assert!(!ok);

    // An app behind an HTTP stack with small header limits can have the header left off.
    let (_quiet, quiet_api) = client(&proxy, &["--no-receipt-header"]);
    wait_for_model(&quiet_api, "synthetic", 1).await;
    let response = http()
        .post(format!("{quiet_api}/v1/chat/completions"))
        .json(&json!({"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-cocoon-receipt").is_none());
}

#[tokio::test]
async fn answers_that_end_together_share_one_signed_batch_and_each_verifies_offline() {
    let (_proxy, proxy) = proxy(&[]);
    // Streams of a token every 20 ms run side by side on the worker; with a long window the
    // first to end waits until every answer running has ended too.
    let (_worker, _) = worker(
        &proxy,
        &[
            "--synthetic-interval-us",
            "20000",
            "--receipt-batch-ms",
            "20000",
        ],
    );
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let dir = tempfile::tempdir().unwrap();
    const ANSWERS: usize = 5;
    let request = json!({"model": "synthetic", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 25, "stream": true});
    let (transcripts, receipts): (Vec<String>, Vec<Value>) =
        futures::future::join_all((0..ANSWERS).map(|_| streamed(&api, &request)))
            .await
            .into_iter()
            .unzip();
    let mut places = Vec::new();
    for (index, (receipt, transcript)) in receipts.iter().zip(&transcripts).enumerate() {
        assert_eq!(receipt["version"], 2);
        assert_eq!(receipt["batch"]["size"], ANSWERS, "{receipt}");
        for signature in ["worker_signature", "proxy_signature"] {
            assert_eq!(receipt[signature], receipts[0][signature]);
        }
        places.push(receipt["batch"]["index"].as_u64().unwrap());
        let receipt_path = dir.path().join(format!("receipt-{index}.json"));
        let answer_path = dir.path().join(format!("answer-{index}.sse"));
        std::fs::write(&receipt_path, receipt.to_string()).unwrap();
        std::fs::write(&answer_path, transcript).unwrap();
        let answer = answer_path.display().to_string();
        let (ok, stdout, stderr) = verify(&receipt_path, &["--response", &answer, "--json"]);
        assert!(ok, "answer {index}: {stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["batch"]["size"], ANSWERS);
        assert_eq!(report["response"], "matches");
    }
    places.sort_unstable();
    assert_eq!(places, (0..ANSWERS as u64).collect::<Vec<_>>());

    // An answer claimed at another place in the batch is refused.
    let mut moved = receipts[0].clone();
    let index = moved["batch"]["index"].as_u64().unwrap();
    moved["batch"]["index"] = json!((index + 1) % ANSWERS as u64);
    let moved_path = dir.path().join("moved.json");
    std::fs::write(&moved_path, moved.to_string()).unwrap();
    let (ok, _, stderr) = verify(&moved_path, &[]);
    assert!(!ok);
    // Its path leads to another root (a signature fails) or does not fit the new place at all.
    assert!(
        stderr.contains("signature") || stderr.contains("inclusion proof"),
        "{stderr}"
    );
}

/// A streamed answer's transcript, and the receipt of its `cocoon.receipt` event, which must
/// follow `data: [DONE]`.
async fn streamed(api: &str, request: &Value) -> (String, Value) {
    let transcript = http()
        .post(format!("{api}/v1/chat/completions"))
        .json(request)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (before, event) = transcript
        .split_once("event: cocoon.receipt\n")
        .unwrap_or_else(|| panic!("no receipt event in {transcript}"));
    assert!(before.ends_with("data: [DONE]\n\n"), "{transcript}");
    let json = event
        .strip_prefix("data: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap();
    let receipt = serde_json::from_str(json).unwrap();
    (transcript, receipt)
}

/// The JSON inside a header-form receipt (base64url, no padding).
fn base64_json(header: &str) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
