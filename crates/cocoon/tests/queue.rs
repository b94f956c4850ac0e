//! End-to-end: requests for a busy model wait in the proxy's queue instead of being refused;
//! beyond the queue they are refused with `Retry-After`; clients are served in turn; a request
//! whose app hangs up leaves the queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// A proxy, one synthetic worker and some clients, all linked and funded.
struct Network {
    proxy: ProxyAddrs,
    /// Each client's API.
    apis: Vec<String>,
    worker_stats: String,
    _nodes: Vec<Node>,
}

/// A proxy started with `proxy_flags`, a worker with `slots` slots streaming a token every
/// `interval_us`, and `clients` clients.
async fn network(proxy_flags: &[&str], slots: u32, interval_us: u32, clients: usize) -> Network {
    let (proxy_node, proxy) = proxy(proxy_flags);
    let (slots, interval_us) = (slots.to_string(), interval_us.to_string());
    let (worker_node, worker_stats) = worker(
        &proxy,
        &[
            "--max-active",
            &slots,
            "--synthetic-interval-us",
            &interval_us,
        ],
    );
    let mut nodes = vec![proxy_node, worker_node];
    let mut apis = Vec::new();
    for _ in 0..clients {
        let (node, api) = client(&proxy, &[]);
        wait_for_model(&api, "synthetic", 1).await;
        nodes.push(node);
        apis.push(api);
    }
    Network {
        proxy,
        apis,
        worker_stats,
        _nodes: nodes,
    }
}

/// The proxy's queue for the synthetic model, from `/jsonstats`.
async fn queue(proxy: &ProxyAddrs) -> Value {
    let stats = get_json(&format!("http://{}/jsonstats", proxy.stats)).await;
    stats["details"]["queues"]["models"]["synthetic"].clone()
}

/// Waits until the proxy's queue for the synthetic model satisfies `holds`.
async fn until_queue(proxy: &ProxyAddrs, holds: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let queue = queue(proxy).await;
        if holds(&queue) {
            return queue;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the queue never got there: {queue}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn waiting(count: u64) -> impl Fn(&Value) -> bool {
    move |queue| queue["waiting"].as_u64() == Some(count)
}

/// A streamed request that holds its worker slot for `tokens` × the worker's interval.
async fn hold_a_slot(api: &str, tokens: u64) -> reqwest::Response {
    let response = post_chat(api, &chat(tokens, true)).await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// A one-token request to `api`, sent on a task of its own.
fn ask_in_background(api: &str) -> tokio::task::JoinHandle<reqwest::Response> {
    let api = api.to_owned();
    tokio::spawn(async move { post_chat(&api, &chat(1, false)).await.unwrap() })
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[tokio::test]
async fn sixty_four_concurrent_requests_on_four_slots_are_all_answered() {
    // A generous wait: the machine running the tests may be slow; the point is the queue.
    let net = network(&["--queue-wait-ms", "120000"], 4, 5000, 1).await;
    let (proxy, api) = (&net.proxy, &net.apis[0]);
    let requests: Vec<_> = (0..64)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { ask(&api, &chat(5, i % 2 == 0)).await })
        })
        .collect();
    for request in requests {
        let usage = request.await.unwrap().expect("every request is answered");
        assert_eq!(usage.completion_tokens, 5);
    }
    let queue = queue(proxy).await;
    assert!(
        queue["served"].as_u64() > Some(0),
        "nothing queued: {queue}"
    );
    assert_eq!(queue["waiting"], 0, "{queue}");
    assert_eq!(queue["refused"]["queue_full"], 0, "{queue}");
    assert_eq!(queue["refused"]["timed_out"], 0, "{queue}");
}

#[tokio::test]
async fn beyond_the_queue_or_its_wait_the_app_is_refused_with_retry_after() {
    let flags = [
        "--queue-depth",
        "2",
        "--queue-per-client",
        "1",
        "--queue-wait-ms",
        "4000",
    ];
    let net = network(&flags, 1, 20000, 2).await;
    let (proxy, api_a, api_b) = (&net.proxy, &net.apis[0], &net.apis[1]);
    let _held = hold_a_slot(api_a, 500).await;

    let queued_a = ask_in_background(api_a);
    until_queue(proxy, waiting(1)).await;
    // Client A's share (one) is taken: 429.
    let share = post_chat(api_a, &chat(1, false)).await.unwrap();
    assert_eq!(share.status(), 429);
    assert_eq!(retry_after(&share), Some(4), "{:?}", share.headers());
    let error: Value = share.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limited", "{error}");

    let queued_b = ask_in_background(api_b);
    until_queue(proxy, waiting(2)).await;
    // The queue (two) is full: 503, whoever asks.
    let full = post_chat(api_b, &chat(1, false)).await.unwrap();
    assert_eq!(full.status(), 503);
    assert_eq!(retry_after(&full), Some(4), "{:?}", full.headers());

    // The slot stays held past the queue's wait: both waiters are told to come back later.
    for queued in [queued_a, queued_b] {
        let timed_out = queued.await.unwrap();
        assert_eq!(timed_out.status(), 503);
        assert_eq!(
            retry_after(&timed_out),
            Some(4),
            "{:?}",
            timed_out.headers()
        );
        let error: Value = timed_out.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("became free"), "{message}");
    }
    let queue = queue(proxy).await;
    assert_eq!(queue["refused"]["client_share"], 1, "{queue}");
    assert_eq!(queue["refused"]["queue_full"], 1, "{queue}");
    assert_eq!(queue["refused"]["timed_out"], 2, "{queue}");
    let metrics = get_text(&format!("http://{}/metrics", proxy.stats)).await;
    assert!(
        metrics.contains(r#"cocoon_queue_refused_total{model="synthetic",reason="timed_out"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cocoon_queue_depth{model="synthetic"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_clients_burst_does_not_keep_another_clients_request_waiting() {
    const BURST: usize = 20;
    let net = network(&["--queue-wait-ms", "120000"], 2, 20000, 2).await;
    let (proxy, api_a, api_b) = (&net.proxy, &net.apis[0], &net.apis[1]);

    // Client A's burst: two requests take the slots, the rest wait.
    let a_served = Arc::new(AtomicUsize::new(0));
    let burst: Vec<_> = (0..BURST)
        .map(|_| {
            let (api, served) = (api_a.clone(), a_served.clone());
            tokio::spawn(async move {
                let response = post_chat(&api, &chat(10, true)).await.unwrap();
                assert_eq!(response.status(), 200);
                served.fetch_add(1, Ordering::SeqCst);
                stream_answer(response).await
            })
        })
        .collect();
    until_queue(proxy, waiting(BURST as u64 - 2)).await;
    // Client B's one request arrives behind all of them…
    let answer = post_chat(api_b, &chat(10, true)).await.unwrap();
    assert_eq!(answer.status(), 200);
    // …and is served in B's turn, long before A's burst drains: at most the two first, the one
    // in A's turn before B's, and those served while B's answer travelled here.
    let a_before_b = a_served.load(Ordering::SeqCst);
    assert!(
        a_before_b <= 6,
        "{a_before_b} of A's {BURST} requests went before B's"
    );
    let (events, _) = stream_answer(answer).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for request in burst {
        let (events, _) = request.await.unwrap();
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }
}

#[tokio::test]
async fn an_app_hanging_up_while_queued_frees_its_place_and_is_never_charged() {
    let net = network(
        &["--queue-depth", "1", "--queue-wait-ms", "120000"],
        1,
        20000,
        1,
    )
    .await;
    let (proxy, api, worker_stats) = (&net.proxy, &net.apis[0], &net.worker_stats);
    let held = hold_a_slot(api, 40).await;

    let gone = ask_in_background(api);
    until_queue(proxy, waiting(1)).await;
    gone.abort();
    let queue = until_queue(proxy, waiting(0)).await;
    assert_eq!(queue["abandoned"], 1, "{queue}");

    // Its place is free again: the next request waits (the queue holds one) and is answered.
    let next = tokio::spawn({
        let api = api.clone();
        async move { ask(&api, &chat(2, false)).await }
    });
    until_queue(proxy, waiting(1)).await;
    let (events, _) = stream_answer(held).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage = next.await.unwrap().expect("the next request is answered");
    assert_eq!(usage.completion_tokens, 2);

    // The request that left never reached the worker, and holds no slot.
    let worker = get_json(&format!("http://{worker_stats}/jsonstats")).await;
    assert_eq!(worker["requests"], 2, "{worker}");
    // The last answer's slot is released as its charge is recorded, just after the app has it:
    // wait for the state, not a moment.
    let started = std::time::Instant::now();
    loop {
        let workers = proxy_workers(proxy).await;
        if workers[0]["active"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a slot stays held: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
