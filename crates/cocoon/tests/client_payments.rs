//! The client × proxy channel end to end, with real processes: a client's money moves only with
//! payment vouchers it signed after checking each answer's receipt; nobody is served on a wallet
//! whose key it lacks; a client that stops paying is refused past the proxy's bound; a client
//! stops paying a proxy whose charge it cannot verify and fails over.

use crate::common::*;
use cocoon_money::{price, Prices};
use cocoon_proto::TokenUsage;
use serde_json::Value;

async fn payments(api: &str) -> Value {
    get_json(&format!("{api}/jsonstats")).await["details"]["payments"].clone()
}

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn the_client_signs_exactly_what_the_receipts_prove_and_the_ledger_collects_that() {
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, worker_stats) = worker(&proxy, &["--claim-threshold", "1"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;

    let (mut paid, mut earned) = (0, 0);
    for (index, stream) in [false, true, true].into_iter().enumerate() {
        let usage = ask(&api, &chat(2 + index as u64, stream))
            .await
            .expect("answered");
        let cost = price(&usage, 1_000, &Prices::default()).unwrap();
        paid += cost.client_price;
        earned += cost.worker_pay;
    }
    let proxy_id = account_of(&proxy.stats).await;
    let client_id = account_of(&api).await;
    let worker_id = account_of(&worker_stats).await;
    // The client signed for exactly the answers' prices, statement by statement.
    let signed = eventually!(payments(&api).await, |p| p["channels"]
        [proxy_id.to_string()]["signed"]
        == paid);
    assert_eq!(
        signed["channels"][proxy_id.to_string()]["seqno"],
        3,
        "{signed}"
    );
    assert_eq!(signed["stopped"], serde_json::json!({}));
    // The ledger collected that, to the nano-unit, and paid the worker its share.
    let applied = eventually!(
        contract(&proxy.ledger, proxy_id, "clients", client_id).await,
        |c| c["collected"] == paid
    );
    assert_eq!(applied["charged"], paid);
    assert_eq!(applied["voucher_seqno"], 3);
    let worker = eventually!(
        contract(&proxy.ledger, proxy_id, "workers", worker_id).await,
        |c| c["paid"] == earned
    );
    assert_eq!(worker["paid"], earned);
    let proxy_contract = get_json(&format!("{}/v1/proxies/{proxy_id}", proxy.ledger)).await;
    assert_eq!(proxy_contract["collected"], paid);
    assert_eq!(proxy_contract["paid_to_workers"], earned);
}

#[tokio::test]
async fn a_proxy_killed_before_its_settlement_round_still_collects_what_its_clients_signed() {
    // No settlement round runs after the first one at start, until the proxy starts again.
    let extra = ["--settle-interval-ms", "3600000"];
    let (mut proxy_node, proxy) = proxy(&extra);
    let (_worker, _) = worker(&proxy, &[]);
    let (mut client_node, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;

    let mut paid = 0;
    for stream in [false, true, false] {
        let usage = ask(&api, &chat(3, stream)).await.expect("answered");
        paid += price(&usage, 1_000, &Prices::default())
            .unwrap()
            .client_price;
    }
    // The proxy holds the client's voucher for all of it on disk (`paid` reads the database).
    eventually!(wallet(&proxy.stats).await, |w| w["paid"] == paid);
    // The client goes away for good, so nobody can send the voucher again; nothing is on the
    // ledger yet.
    let proxy_id = account_of(&proxy.stats).await;
    let client_id = account_of(&api).await;
    client_node.kill();
    let before = contract(&proxy.ledger, proxy_id, "clients", client_id).await;
    assert_eq!(before["collected"], 0, "{before}");

    proxy_node.kill();
    let _proxy_again = Node::start(&proxy_args(&proxy, &extra));
    // The round at start submits the stored voucher: the ledger collects what the answers cost.
    let applied = eventually!(
        contract(&proxy.ledger, proxy_id, "clients", client_id).await,
        |c| c["collected"] == paid
    );
    assert_eq!(applied["charged"], paid, "{applied}");
}

#[tokio::test]
async fn a_client_naming_another_clients_wallet_is_refused_and_that_wallet_pays_nothing() {
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_victim, victim_api) = client(&proxy, &[]);
    wait_for_model(&victim_api, "synthetic", 1).await;
    let victim = account_of(&victim_api).await;
    let proxy_id = account_of(&proxy.stats).await;
    let before = contract(&proxy.ledger, proxy_id, "clients", victim).await;

    let victim_text = victim.to_string();
    let (_impostor, api) = client(&proxy, &["--test-only-claim-wallet", &victim_text]);
    wait_for_model_only(&api, "synthetic", 1).await;
    for stream in [false, true] {
        let (status, message) = error_of(post_chat(&api, &chat(4, stream)).await.unwrap()).await;
        assert_ne!(status, 200);
        assert!(message.contains("wallet"), "{status} {message}");
    }
    // Nothing was reserved, charged or served on the victim's wallet.
    let proxy_wallet = wallet(&proxy.stats).await;
    assert_eq!(proxy_wallet["charged"], 0, "{proxy_wallet}");
    assert_eq!(proxy_wallet["reserved"], 0, "{proxy_wallet}");
    let stats = get_json(&format!("http://{}/jsonstats", proxy.stats)).await;
    assert_eq!(stats["requests"], 0, "{stats}");
    assert!(
        stats["errors"]["invalid_api_key"].as_u64().unwrap_or(0) >= 2,
        "{stats}"
    );
    let after = contract(&proxy.ledger, proxy_id, "clients", victim).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_client_that_stops_paying_is_refused_past_the_bound_before_any_worker_sees_it() {
    let (_proxy, proxy) = proxy(&["--max-unpaid", "1"]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &["--test-only-withhold-payments"]);
    wait_for_model(&api, "synthetic", 1).await;

    let usage = ask(&api, &chat(3, false))
        .await
        .expect("the first answer is on credit");
    let owed = price(&usage, 1_000, &Prices::default())
        .unwrap()
        .client_price;
    let (status, message) = error_of(post_chat(&api, &chat(3, false)).await.unwrap()).await;
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("payment overdue"), "{message}");
    // The proxy served one answer unpaid and nothing more; the ledger moved nothing.
    let proxy_wallet = wallet(&proxy.stats).await;
    assert_eq!(proxy_wallet["charged"], owed, "{proxy_wallet}");
    assert_eq!(proxy_wallet["reserved"], 0, "{proxy_wallet}");
    let proxy_id = account_of(&proxy.stats).await;
    let client_id = account_of(&api).await;
    let on_ledger = contract(&proxy.ledger, proxy_id, "clients", client_id).await;
    assert_eq!(on_ledger["collected"], 0, "{on_ledger}");
}

#[tokio::test]
async fn a_client_stops_paying_a_proxy_whose_charge_it_cannot_verify_and_fails_over() {
    let (_liar, liar) = proxy(&["--test-only-overcharge"]);
    let (_liar_worker, _) = worker(&liar, &[]);
    let (_honest, honest) = proxy_beside(&liar, &[]);
    let (_honest_worker, _) = worker_on(&liar, Some(&honest.workers), &[]);
    let (_client, api) = client(&liar, &["--proxy", &honest.clients]);
    wait_for_model(&api, "synthetic", 1).await;
    let liar_id = account_of(&liar.stats).await;
    let honest_id = account_of(&honest.stats).await;

    // The first answer comes from the preferred (lying) proxy. The worker's receipt proves the
    // real price, so the liar cannot countersign its own: the charge comes without proof.
    assert!(ask(&api, &chat(3, false)).await.is_some());
    let stopped = payments(&api).await["stopped"][liar_id.to_string()].clone();
    assert!(
        stopped.as_str().is_some_and(|why| why.contains("receipt")),
        "{stopped}"
    );
    // Requests now go to the other proxy (once the client's contract there is open).
    eventually!(ask(&api, &chat(3, true)).await, |usage| usage.is_some());
    let honest_charged = eventually!(wallet(&honest.stats).await, |w| w["charged"]
        .as_u64()
        .unwrap_or(0)
        > 0);
    assert!(honest_charged["charged"].as_u64().unwrap() > 0);
    // The liar was never paid: no payment of this client reached its contract.
    let client_id = account_of(&api).await;
    let at_liar = contract(&liar.ledger, liar_id, "clients", client_id).await;
    assert_eq!(at_liar["collected"], 0, "{at_liar}");
    let liar_wallet = wallet(&liar.stats).await;
    assert!(liar_wallet["charged"].as_u64().unwrap() > 0);
    assert_ne!(honest_id, liar_id);
}

/// An engine on loopback that answers every chat with one token but claims a million prompt
/// tokens: usage no reservation covers.
async fn inflating_engine() -> String {
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            axum::Json(serde_json::json!({
                "id": "inflated",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 1,
                          "total_tokens": 1_000_001},
            }))
        }),
    );
    serve_on_loopback(router).await
}

#[tokio::test]
async fn usage_beyond_the_reservation_is_charged_at_the_reservation_and_its_worker_set_aside() {
    let engine = inflating_engine().await;
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &["--engine", &engine, "--model", "inflated"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "inflated", 1).await;

    let request = serde_json::json!({
        "model": "inflated",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 4,
    });
    let response = post_chat(&api, &request).await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["usage"]["prompt_tokens"], 1_000_000, "{answer}");
    let claimed = TokenUsage {
        prompt_tokens: 1_000_000,
        completion_tokens: 1,
        ..TokenUsage::default()
    };
    let full = price(&claimed, 1_000, &Prices::default())
        .unwrap()
        .client_price;
    let charged = answer["usage"]["total_cost"].as_u64().unwrap();
    // At most the worst case the proxy reserved: 4 completion tokens and half the body's bytes.
    assert!(charged < full / 1_000, "charged {charged} of {full}");
    assert_eq!(wallet(&proxy.stats).await["charged"], charged);
    // The worker that reported it is set aside.
    let workers = proxy_workers(&proxy).await;
    assert!(workers[0]["set_aside_ms"].as_u64() > Some(0), "{workers:?}");
    // The client checked the receipt (which proves the full price) and paid the capped cost.
    let proxy_id = account_of(&proxy.stats).await;
    let paid = eventually!(payments(&api).await, |p| p["channels"]
        [proxy_id.to_string()]["signed"]
        == charged);
    assert_eq!(paid["stopped"], serde_json::json!({}));
}
