//! End-to-end: real `cocoon proxy`, `worker` and `client` processes talking over loopback with
//! mutual RA-TLS (`fake` attestation, every check on), driven through the client's OpenAI API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// POSTs `body` to the client API's chat completions.
async fn ask(api: &str, body: &Value) -> reqwest::Response {
    post_chat(api, body).await.unwrap()
}

fn chat(model: &str, max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

#[tokio::test]
async fn chat_and_completions_stream_and_not_with_usage() {
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &["--synthetic-chunk-bytes", "4"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let http = http();

    let answer: Value = ask(&api, &chat("synthetic", 5, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "x".repeat(20));
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // The proxy's charge, in nano-units, split into prompt and completion.
    let cost = |key: &str| {
        answer["usage"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}: {answer}"))
    };
    assert!(cost("completion_total_cost") > 0);
    assert_eq!(
        cost("total_cost"),
        cost("prompt_total_cost") + cost("completion_total_cost")
    );

    let mut request = chat("synthetic", 3, true);
    request["stream_options"] = json!({"include_usage": true});
    let response = ask(&api, &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cocoon-coefficient"], "1000");
    assert_eq!(
        response.headers()["x-cocoon-worker-image"],
        image_hash("test-worker").as_str()
    );
    let (events, receipt) = stream_answer(response).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(receipt.is_some(), "a streamed answer ends with its receipt");
    let usage: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|e| e["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1, "{events:?}");
    assert_eq!(usage[0]["usage"]["completion_tokens"], 3);
    assert!(
        usage[0]["usage"]["total_cost"].as_u64().unwrap() > 0,
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| e.contains("xxxx")).count(), 3);

    // Without include_usage the app gets no usage chunk, as from OpenAI.
    let response = ask(&api, &chat("synthetic", 2, true)).await;
    let (events, _receipt) = stream_answer(response).await;
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let completion: Value = http
        .post(format!("{api}/v1/completions"))
        .json(&json!({"model": "synthetic", "prompt": "hi", "max_tokens": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(completion["choices"][0]["text"], "xxxxxxxx");
    assert_eq!(completion["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn routes_to_the_cheapest_worker_until_it_is_full_and_honours_max_coefficient() {
    let (_proxy, proxy) = proxy(&[]);
    // Slow workers, one request each, so a stream holds the cheap one while we ask again.
    let slow = ["--max-active", "1", "--synthetic-interval-us", "20000"];
    let (_cheap, _) = worker(&proxy, &[&slow[..], &["--coefficient", "1000"]].concat());
    let (_dear, _) = worker(&proxy, &[&slow[..], &["--coefficient", "2000"]].concat());
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 2).await;

    let first = ask(&api, &chat("synthetic", 100, true)).await;
    assert_eq!(first.headers()["x-cocoon-coefficient"], "1000");
    let second = ask(&api, &chat("synthetic", 1, false)).await;
    assert_eq!(second.headers()["x-cocoon-coefficient"], "2000");
    drop(first);

    let mut cheap_only = chat("synthetic", 1, false);
    cheap_only["max_coefficient"] = json!(500);
    let refused = ask(&api, &cheap_only).await;
    assert_eq!(refused.status(), 503);
    let error: Value = refused.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("cheapest is 1000"), "{message}");
    assert!(message.contains("≤ 500"), "{message}");
}

#[tokio::test]
async fn disallowed_images_are_refused_on_both_sides() {
    // The proxy allows only workers of another image: ours never becomes routable.
    let (_proxy, proxy) = proxy(&["--allow-worker-image", &image_hash("some-other-worker")]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_ok(&format!("http://{}/healthz", proxy.stats)).await;
    // The client's link comes up (its image is allowed) and lists nothing.
    let started = Instant::now();
    let listed = loop {
        let response = http().get(format!("{api}/v1/models")).send().await;
        if let Ok(response) = response {
            if response.status() == 200 {
                break response.json::<Value>().await.unwrap();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "client never linked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(listed["data"], json!([]), "{listed}");
    let stats = get_json(&format!("http://{}/jsonstats", proxy.stats)).await;
    assert_eq!(stats["details"]["workers"], json!([]), "{stats}");
    let refused = ask(&api, &chat("synthetic", 1, false)).await;
    assert_eq!(refused.status(), 404);

    // A client that allows only another proxy image never links, and says so.
    let (_picky, picky_api) = client(
        &proxy,
        &["--allow-proxy-image", &image_hash("some-other-proxy")],
    );
    // Up, but never ready: `/healthz` would stay 503.
    wait_for_ok(&format!("{picky_api}/jsonstats")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = ask(&picky_api, &chat("synthetic", 1, false)).await;
    assert_eq!(refused.status(), 503);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "no_capacity", "{error}");
}

#[tokio::test]
async fn a_worker_whose_model_weights_are_not_allowed_is_refused() {
    let allowed = format!("synthetic={}", "ab".repeat(32));
    let (_proxy, proxy) = proxy(&["--allow-model", &allowed]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_ok(&format!("{api}/jsonstats")).await;
    // Give the worker time to dial (and be refused) a few times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = get_json(&format!("http://{}/jsonstats", proxy.stats)).await;
    assert_eq!(stats["details"]["workers"], json!([]), "{stats}");
    let refused = ask(&api, &chat("synthetic", 1, false)).await;
    assert!(
        [404, 503].contains(&refused.status().as_u16()),
        "{}",
        refused.status()
    );
}

#[tokio::test]
async fn a_worker_killed_mid_stream_ends_the_stream_with_an_error_and_the_next_request_goes_elsewhere(
) {
    let (_proxy, proxy) = proxy(&[]);
    let (mut doomed, _) = worker(
        &proxy,
        &["--coefficient", "1000", "--synthetic-interval-us", "20000"],
    );
    let (_survivor, _) = worker(&proxy, &["--coefficient", "2000"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 2).await;

    let response = ask(&api, &chat("synthetic", 500, true)).await;
    assert_eq!(response.headers()["x-cocoon-coefficient"], "1000");
    let mut events = events(response);
    assert!(events.next().await.unwrap().contains("xxxx"));
    doomed.kill();
    let rest: Vec<String> = tokio::time::timeout(Duration::from_secs(20), events.collect())
        .await
        .expect("the stream ends soon after the worker dies");
    let last = rest.last().expect("an error event ends the stream");
    let error: Value = serde_json::from_str(last).unwrap_or_else(|_| panic!("last event: {last}"));
    assert!(error["error"]["message"].as_str().is_some(), "{error}");
    assert!(
        !rest.iter().any(|e| e == "[DONE]"),
        "a failed stream must not look complete"
    );

    wait_for_ok(&format!("http://{}/healthz", proxy.stats)).await;
    let next = ask(&api, &chat("synthetic", 1, false)).await;
    assert_eq!(next.status(), 200);
    assert_eq!(next.headers()["x-cocoon-coefficient"], "2000");
}

#[tokio::test]
async fn a_worker_stopped_with_sigterm_finishes_its_answers_while_new_requests_go_elsewhere() {
    let (mut proxy_node, proxy) = proxy(&[]);
    // The draining worker is the cheaper one, so the proxy would prefer it if it did not know.
    let (mut draining, _) = worker(
        &proxy,
        &["--coefficient", "1000", "--synthetic-interval-us", "20000"],
    );
    let (_other, _) = worker(
        &proxy,
        &["--coefficient", "2000", "--synthetic-interval-us", "20000"],
    );
    let (mut client_node, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 2).await;

    // A 40-chunk answer at 20 ms a chunk is in flight when the worker is told to stop.
    let response = ask(&api, &chat("synthetic", 40, true)).await;
    assert_eq!(response.headers()["x-cocoon-coefficient"], "1000");
    let mut events = events(response);
    assert!(events.next().await.unwrap().contains("xxxx"));
    draining.terminate();

    // The proxy hears of it at once (GOAWAY) and routes no more to it…
    let started = Instant::now();
    while proxy_workers(&proxy).await.len() != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still routed to"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …so new requests are answered by the other worker.
    for _ in 0..5 {
        let next = ask(&api, &chat("synthetic", 1, false)).await;
        assert_eq!(next.status(), 200);
        assert_eq!(next.headers()["x-cocoon-coefficient"], "2000");
    }
    // The answer in flight ends complete, and then the worker exits by itself.
    let rest: Vec<String> = tokio::time::timeout(Duration::from_secs(20), events.collect())
        .await
        .expect("the drained answer ends");
    let done = rest.iter().position(|e| e == "[DONE]");
    assert!(
        done.is_some(),
        "the drained answer completes: {} events",
        rest.len()
    );
    let chunks = 1 + rest.iter().filter(|e| e.contains("xxxx")).count();
    assert_eq!(chunks, 40, "every chunk of the answer arrived");
    let receipt: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(receipt["answer"]["usage"]["completion_tokens"], 40);
    let status = draining
        .exit_within(Duration::from_secs(10))
        .expect("the drained worker exits");
    assert!(status.success(), "{status}");

    // A client told to stop also lets the app's answer in flight finish.
    let response = ask(&api, &chat("synthetic", 40, true)).await;
    let mut streaming = crate::common::events(response);
    assert!(streaming.next().await.unwrap().contains("xxxx"));
    client_node.terminate();
    let rest: Vec<String> = tokio::time::timeout(Duration::from_secs(20), streaming.collect())
        .await
        .expect("the answer ends");
    assert!(rest.iter().any(|e| e == "[DONE]"), "{} events", rest.len());
    assert_eq!(1 + rest.iter().filter(|e| e.contains("xxxx")).count(), 40);

    // Then both stop cleanly: the client, already told, by itself (a second SIGTERM would
    // rightly stop it at once), and the proxy when told.
    proxy_node.terminate();
    for (role, node) in [("client", &mut client_node), ("proxy", &mut proxy_node)] {
        let status = node
            .exit_within(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the {role} did not stop"));
        assert!(status.success(), "{role}: {status}");
    }
}

/// Starts a cheap worker (coefficient 500) in front of `engine` beside a dearer healthy one, asks
/// `requests` times — each answer must come from the healthy worker — and returns the cheap
/// worker's entry in the proxy's routing stats.
async fn cheap_worker_after(engine: &str, requests: usize) -> Value {
    let network = cheap_worker_in_front_of(engine).await;
    let (api, proxy) = (&network.api, &network.proxy);
    for _ in 0..requests {
        let answer = ask(api, &chat("synthetic", 1, false)).await;
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["x-cocoon-coefficient"], "1000");
    }
    proxy_workers(proxy)
        .await
        .into_iter()
        .find(|w| w["coefficient"] == 500)
        .expect("the cheap worker is still linked")
}

#[tokio::test]
async fn a_cheap_worker_with_a_broken_engine_is_retried_around_then_set_aside() {
    // Its engine's port has nothing listening: every request it takes fails with a 5xx. Every
    // request is still answered — by the healthy worker, after a retry while the broken one is
    // still tried first.
    let nowhere = format!("http://{}", free_addr());
    let broken = cheap_worker_after(&nowhere, 12).await;
    let failures = broken["consecutive_failures"].as_u64().unwrap();
    assert!(
        (5..12).contains(&failures),
        "set aside after 5 failures, so not tried on every request: {broken}"
    );
}

/// An engine on loopback that refuses every request as overloaded (429).
async fn busy_engine() -> String {
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            (
                http::StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {"message": "overloaded", "type": "rate_limit_error"}})),
            )
        }),
    );
    serve_on_loopback(router).await
}

#[tokio::test]
async fn a_busy_worker_passes_the_request_on_without_being_held_against_it() {
    let busy = cheap_worker_after(&busy_engine().await, 8).await;
    assert_eq!(busy["consecutive_failures"], 0, "{busy}");
}

/// An engine on loopback whose streamed answers never end, recording when one is dropped.
async fn endless_engine(cancelled: Arc<AtomicBool>) -> String {
    use axum::routing::post;
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let guard = OnDrop(cancelled.clone());
            async move {
                let chunks = futures::stream::unfold(guard, |guard| async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"tick\"}}]}\n\n";
                    Some((Ok::<_, std::convert::Infallible>(chunk), guard))
                });
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(chunks),
                )
            }
        }),
    );
    serve_on_loopback(router).await
}

#[tokio::test]
async fn a_client_disconnecting_mid_stream_cancels_the_engine_request() {
    let cancelled = Arc::new(AtomicBool::new(false));
    let engine = endless_engine(cancelled.clone()).await;
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &["--engine", &engine, "--model", "endless"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "endless", 1).await;

    let response = ask(&api, &chat("endless", 1000, true)).await;
    let mut events = events(response);
    assert!(events.next().await.unwrap().contains("tick"));
    assert!(!cancelled.load(Ordering::SeqCst));
    drop(events);
    let started = Instant::now();
    while !cancelled.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the engine's request was not cancelled after the app disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors() {
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &["--max-body-bytes", "2000"]);
    wait_for_model(&api, "synthetic", 1).await;
    let http = http();
    let url = format!("{api}/v1/chat/completions");

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(&url).header("content-type", "application/json").body("{\"model\": "),
            400,
            "invalid_request_error",
        ),
        (
            http.post(&url).json(&json!({"model": "synthetic", "messages": [{"role": "user", "content": "x".repeat(5000)}]})),
            413,
            "invalid_request_error",
        ),
        (http.post(&url).json(&chat("no-such-model", 1, false)), 404, "invalid_request_error"),
        (
            http.post(&url).json(&json!({"model": "synthetic"})),
            400,
            "invalid_request_error",
        ),
    ];
    for (request, status, error_type) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], error_type, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
}
