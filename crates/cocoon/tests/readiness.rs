//! End-to-end: the client's `/healthz` answers 200 only when a request can be served at once (a
//! proxy linked, a model with a worker there, the client's contract open and funded), and 503 with
//! the reason otherwise.

use std::time::{Duration, Instant};

use crate::common::*;

/// The client's `/healthz`: status and body, once it answers at all.
async fn healthz(api: &str) -> (u16, String) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(format!("{api}/healthz")).send().await {
            let status = response.status().as_u16();
            return (status, response.text().await.unwrap_or_default());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{api}/healthz never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the client's `/healthz` gives a reason containing `reason`; returns the answer.
async fn until_not_ready_for(api: &str, reason: &str) -> (u16, String) {
    let started = Instant::now();
    loop {
        let (status, body) = healthz(api).await;
        if body.contains(reason) {
            return (status, body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{api}/healthz never said `{reason}`; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn healthz_is_200_only_once_a_request_succeeds_at_once() {
    let (_proxy, proxy) = proxy(&[]);
    let (_client, api) = client(&proxy, &[]);
    // Linked, but no worker yet: not ready.
    let (status, body) = until_not_ready_for(&api, "no worker").await;
    assert_eq!(status, 503, "{body}");

    let (_worker, _) = worker(&proxy, &[]);
    wait_for_ok(&format!("{api}/healthz")).await;
    // No retry: ready means this first request is served.
    let response = post_chat(&api, &chat(2, false)).await.unwrap();
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
}

#[tokio::test]
async fn an_unlinked_or_unfunded_client_is_503_with_the_reason() {
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &[]);

    // Its only proxy does not exist.
    let (_unlinked, unlinked_api) = client_on(&proxy, Some(&free_addr()), &[]);
    let (status, body) = healthz(&unlinked_api).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no proxy linked"), "{body}");

    // No faucet: its empty wallet cannot open a contract with the proxy.
    let (_unfunded, unfunded_api) = client(&proxy, &["--faucet", "0"]);
    wait_for_model_only(&unfunded_api, "synthetic", 1).await;
    // Before its first settlement round the contract is "not opened yet"; after it, the reason
    // is the wallet's.
    let (status, body) = until_not_ready_for(&unfunded_api, "insufficient").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("is not open"), "{body}");
}
