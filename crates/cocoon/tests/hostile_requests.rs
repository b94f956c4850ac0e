//! End-to-end: requests crafted to take nodes down (issue #10) are answered with a clear error,
//! and every node — ledger, proxy, workers, client — is still up and serving afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// Asks `body` and returns the status and the OpenAI error's `param` and `code`.
async fn refusal(api: &str, body: &Value) -> (u16, Value, Value) {
    let response = post_chat(api, body).await.unwrap();
    let status = response.status().as_u16();
    let error: Value = response.json().await.unwrap();
    (
        status,
        error["error"]["param"].clone(),
        error["error"]["code"].clone(),
    )
}

#[tokio::test]
async fn a_poisoned_token_limit_is_refused_and_every_node_keeps_serving() {
    let (mut proxy_node, proxy) = proxy(&[]);
    let (mut first, _) = worker(&proxy, &["--coefficient", "1000"]);
    let (mut second, _) = worker(&proxy, &["--coefficient", "2000"]);
    let (mut client_node, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 2).await;

    // Reserved by `max_completion_tokens`, served by `max_tokens`: this one request used to make
    // the synthetic engine allocate 128 GB and abort, on one worker and then on the retry.
    // Refused for its size; two limits that disagree are refused even when each is small.
    for (max_tokens, param) in [
        (1_000_000_000, "max_tokens"),
        (1_000, "max_completion_tokens"),
    ] {
        for stream in [false, true] {
            let mut poisoned = chat(max_tokens, stream);
            poisoned["max_completion_tokens"] = json!(1);
            let (status, refused, _) = refusal(&api, &poisoned).await;
            assert_eq!((status, refused), (400, json!(param)), "stream: {stream}");
        }
    }
    // A limit whose reservation would overflow is the request's fault, not a lack of funds.
    let (status, param, _) = refusal(&api, &chat(1 << 63, false)).await;
    assert_eq!((status, param), (400, json!("max_tokens")));
    // A limit the protocol allows but no worker's context fits: the proxy refuses it before
    // anything is reserved, and no worker sees it.
    let (status, _, code) = refusal(&api, &chat(100_000, false)).await;
    assert_eq!((status, code), (400, json!("context_length_exceeded")));

    for (role, node) in [
        ("proxy", &mut proxy_node),
        ("first worker", &mut first),
        ("second worker", &mut second),
        ("client", &mut client_node),
    ] {
        assert_eq!(node.exited(), None, "the {role} died");
    }
    let ledger = http()
        .get(format!("{}/v1/stats", proxy.ledger))
        .send()
        .await;
    assert_eq!(ledger.map(|r| r.status().as_u16()).ok(), Some(200));
    let workers = proxy_workers(&proxy).await;
    assert_eq!(workers.len(), 2, "both workers still linked: {workers:?}");
    assert!(
        workers.iter().all(|w| w["consecutive_failures"] == 0),
        "refused requests are not held against the workers: {workers:?}"
    );
    for stream in [false, true] {
        let answer = post_chat(&api, &chat(3, stream)).await.unwrap();
        assert_eq!(answer.status(), 200, "stream: {stream}");
    }
}

/// An engine on loopback that takes requests and never answers; `arrived` is notified for each.
async fn silent_engine(arrived: Arc<Notify>) -> String {
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            arrived.notify_one();
            std::future::pending::<()>()
        }),
    );
    serve_on_loopback(router).await
}

#[tokio::test]
async fn a_request_whose_worker_died_holding_it_is_not_retried_on_another() {
    let arrived = Arc::new(Notify::new());
    let engine = silent_engine(arrived.clone()).await;
    let mut network = cheap_worker_in_front_of(&engine).await;
    let api = network.api.clone();

    let request = tokio::spawn({
        let api = api.clone();
        async move { refusal(&api, &chat(2, false)).await }
    });
    // The cheap worker has the request (its engine holds it); then it dies, as a worker the
    // request itself crashed would.
    tokio::time::timeout(Duration::from_secs(30), arrived.notified())
        .await
        .expect("the cheap worker's engine gets the request");
    network.cheap.kill();
    let (status, _, code) = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("answered soon after the worker died")
        .unwrap();
    assert_eq!(
        (status, code),
        (502, json!("bad_gateway")),
        "the request must not reach (and maybe crash) a second worker"
    );

    // Other requests still go to the surviving worker.
    let started = Instant::now();
    loop {
        let answer = post_chat(&api, &chat(1, false)).await.unwrap();
        if answer.status() == 200 {
            assert_eq!(answer.headers()["x-cocoon-coefficient"], "1000");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the surviving worker never answered: {}",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An engine on loopback that reads each request and then dies without answering (its connection
/// closes), as an engine the request crashed would; `requests` counts what it read.
async fn crashing_engine(requests: Arc<std::sync::atomic::AtomicUsize>) -> String {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                if matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                    requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_request_that_broke_a_workers_engine_is_not_retried_on_another() {
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let engine = crashing_engine(requests.clone()).await;
    let network = cheap_worker_in_front_of(&engine).await;
    let api = &network.api;

    // The cheap worker's engine had the request and died: the proxy must not hand it to the
    // healthy worker (whose engine it might crash too); the app hears the failure.
    let (status, _, code) = refusal(api, &chat(2, false)).await;
    assert_eq!(
        (status, code),
        (502, json!("bad_gateway")),
        "a request that broke an engine must go to no other worker"
    );
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}
