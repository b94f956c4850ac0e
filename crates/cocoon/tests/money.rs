//! Money end to end, with real processes: a ledger, a proxy, workers and clients on loopback.
//! Every number is checked against the ledger's own state.

use std::time::{Duration, Instant};

use crate::common::*;
use cocoon_money::{price, AccountId, Amount, Prices, Registry};
use cocoon_proto::TokenUsage;
use futures::future::join_all;
use serde_json::Value;

#[tokio::test]
async fn a_client_pays_a_worker_earns_and_the_proxy_keeps_the_difference() {
    let (_proxy, proxy) = proxy(&["--withdraw-threshold", "0"]);
    let (_worker, worker_stats) = worker(&proxy, &["--claim-threshold", "1"]);
    let (_client, api) = client(&proxy, &["--deposit", "10000000000"]);
    wait_for_model(&api, "synthetic", 1).await;

    let (mut paid, mut earned) = (0, 0);
    for (index, stream) in [false, true, false, true, true].into_iter().enumerate() {
        let usage = ask(&api, &chat(3 + index as u64, stream))
            .await
            .expect("answered");
        let cost = price(&usage, 1_000, &Prices::default()).unwrap();
        paid += cost.client_price;
        earned += cost.worker_pay;
    }
    assert!(paid > earned && earned > 0);

    let proxy_id = account_of(&proxy.stats).await;
    let client_id = account_of(&api).await;
    let worker_id = account_of(&worker_stats).await;
    let proxy_wallet = wallet(&proxy.stats).await;
    assert_eq!(proxy_wallet["charged"], paid, "{proxy_wallet}");
    assert_eq!(proxy_wallet["earned"], earned, "{proxy_wallet}");

    // The ledger converges to exactly the tokens served: the client charged, the worker paid.
    let client_contract = eventually!(
        contract(&proxy.ledger, proxy_id, "clients", client_id).await,
        |c| c["charged"] == paid
    );
    assert_eq!(client_contract["collected"], paid);
    assert_eq!(client_contract["balance"], 10_000_000_000u64 - paid);
    let worker_contract = eventually!(
        contract(&proxy.ledger, proxy_id, "workers", worker_id).await,
        |c| c["paid"] == earned
    );
    assert_eq!(worker_contract["paid"], earned);
    let worker_account = get_json(&format!("{}/v1/accounts/{worker_id}", proxy.ledger)).await;
    assert_eq!(worker_account["balance"], earned);
    // The proxy keeps price − fee (nothing withdrawn with a zero threshold).
    let proxy_contract = get_json(&format!("{}/v1/proxies/{proxy_id}", proxy.ledger)).await;
    assert_eq!(
        proxy_commission(&proxy.ledger, proxy_id).await,
        paid - earned
    );
    assert_eq!(proxy_contract["collected"], paid);
    assert_eq!(proxy_contract["paid_to_workers"], earned);
    let stats = get_json(&format!("{}/v1/stats", proxy.ledger)).await;
    assert_eq!(
        stats["supply"].as_u64().map(u128::from),
        stats["holdings_total"].as_u64().map(u128::from)
    );
}

#[tokio::test]
async fn the_proxy_withdraws_its_commission_and_a_worker_claims_with_the_wallet_cli() {
    let (_proxy, proxy) = proxy(&["--withdraw-threshold", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let worker_dir = dir.path().display().to_string();
    // The worker never claims by itself: its earnings wait for the CLI.
    let (_worker, worker_stats) = worker(
        &proxy,
        &[
            "--claim-threshold",
            "1000000000000000000",
            "--data-dir",
            &worker_dir,
        ],
    );
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let (mut paid, mut earned) = (0, 0);
    for max_tokens in [2, 4, 8] {
        let usage = ask(&api, &chat(max_tokens, false)).await.expect("answered");
        let cost = price(&usage, 1_000, &Prices::default()).unwrap();
        paid += cost.client_price;
        earned += cost.worker_pay;
    }
    let proxy_id = account_of(&proxy.stats).await;
    // The commission leaves the pool; the workers' unclaimed earnings stay in it.
    let contract = eventually!(
        get_json(&format!("{}/v1/proxies/{proxy_id}", proxy.ledger)).await,
        |c| c["withdrawn"] == paid - earned
    );
    assert_eq!(contract["pool"], earned, "{contract}");

    let worker_wallet = eventually!(wallet(&worker_stats).await, |w| w["earned"] == earned);
    assert_eq!(worker_wallet["claimable"], earned);
    let voucher = worker_wallet["proxies"][0]["voucher"].to_string();
    let address = wallet_cli(&proxy.ledger, &worker_dir, "test-worker", &["address"]);
    assert_eq!(address["address"], worker_wallet["account"]);
    let claimed = wallet_cli(
        &proxy.ledger,
        &worker_dir,
        "test-worker",
        &["claim", "--voucher", &voucher],
    );
    assert_eq!(claimed["outcome"]["outcome"], "claimed", "{claimed}");
    assert_eq!(claimed["outcome"]["paid"], earned, "{claimed}");
    let balance = wallet_cli(&proxy.ledger, &worker_dir, "test-worker", &["balance"]);
    assert_eq!(balance["balance"], earned);
    let contract = get_json(&format!("{}/v1/proxies/{proxy_id}", proxy.ledger)).await;
    assert_eq!(contract["pool"], 0, "{contract}");
}

#[tokio::test]
async fn a_worker_with_a_payout_account_keeps_no_key_and_its_earnings_reach_the_owner() {
    let (_proxy, proxy) = proxy(&[]);
    let dir = tempfile::tempdir().unwrap();
    // The GPU owner's own wallet, on another machine as far as the worker is concerned.
    let owner_dir = dir.path().join("owner").display().to_string();
    let owner = wallet_cli(&proxy.ledger, &owner_dir, "owner-laptop", &["new"]);
    let owner = owner["address"].as_str().unwrap().to_owned();
    let worker_dir = dir.path().join("worker");
    let worker_dir_arg = worker_dir.display().to_string();
    let payout_worker = || {
        worker(
            &proxy,
            &[
                "--payout-account",
                &owner,
                "--claim-threshold",
                "1",
                "--data-dir",
                &worker_dir_arg,
            ],
        )
    };
    let (mut first, first_stats) = payout_worker();
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let mut earned = 0;
    for max_tokens in [3, 5] {
        let usage = ask(&api, &chat(max_tokens, false)).await.expect("answered");
        earned += price(&usage, 1_000, &Prices::default()).unwrap().worker_pay;
    }
    let stats = wallet(&first_stats).await;
    assert_eq!(stats["account"], owner.as_str(), "{stats}");
    let balance = eventually!(
        wallet_cli(&proxy.ledger, &owner_dir, "owner-laptop", &["balance"]),
        |b| b["balance"] == earned
    );
    assert_eq!(balance["address"], owner.as_str(), "{balance}");
    assert!(
        !worker_dir.join("wallet.sealed").exists(),
        "a payout worker stores no key"
    );

    // Restarted, it signs claims with a new key; the earnings still go to the owner.
    let first_link = proxy_workers(&proxy).await[0]["id"].clone();
    first.kill();
    let (_second, _) = payout_worker();
    // The killed worker stays listed until its link is noticed dead: wait for the new one.
    eventually!(proxy_workers(&proxy).await, |workers| workers
        .iter()
        .any(|w| w["id"] != first_link));
    let usage = ask(&api, &chat(7, false)).await.expect("answered");
    earned += price(&usage, 1_000, &Prices::default()).unwrap().worker_pay;
    eventually!(
        wallet_cli(&proxy.ledger, &owner_dir, "owner-laptop", &["balance"]),
        |b| b["balance"] == earned
    );
    let proxy_id = account_of(&proxy.stats).await;
    let contract = contract(&proxy.ledger, proxy_id, "workers", owner.parse().unwrap()).await;
    assert_eq!(contract["paid"], earned, "{contract}");

    // The owner moves the earnings on like any other money, and cannot move more.
    let elsewhere = AccountId([9; 32]).to_string();
    let transfer = |amount: u64| {
        let amount = amount.to_string();
        cocoon(&[
            "wallet",
            "--json",
            "--ledger",
            &proxy.ledger,
            "--data-dir",
            &owner_dir,
            "--image-label",
            "owner-laptop",
            "transfer",
            "--to",
            &elsewhere,
            &amount,
        ])
    };
    let (ok, _, stderr) = transfer(earned + 1);
    assert!(!ok);
    assert!(stderr.contains("insufficient funds"), "{stderr}");
    let (ok, stdout, stderr) = transfer(earned);
    assert!(ok, "{stderr}");
    let sent: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(sent["balance"]["balance"], 0, "{sent}");
    let received = get_json(&format!("{}/v1/accounts/{elsewhere}", proxy.ledger)).await;
    assert_eq!(received["balance"], earned, "{received}");

    // A `tdx` worker has nowhere to keep a key of its own: it must be told where to pay.
    let (ok, _, stderr) = cocoon(&[
        "worker",
        "--tee",
        "tdx",
        "--registry-owner",
        &test_owner(),
        "--engine",
        "synthetic",
        "--data-dir",
        &worker_dir_arg,
    ]);
    assert!(!ok);
    assert!(stderr.contains("--payout-account"), "{stderr}");
}

#[tokio::test]
async fn out_of_funds_is_a_429_insufficient_quota_before_any_engine_work_and_a_top_up_fixes_it() {
    // Dear tokens, so that a small stake covers few of them.
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::new(test_owner().parse().unwrap());
    registry.prices.price_per_token = 1_000_000;
    registry.prices.worker_fee_per_token = 700_000;
    registry.min_client_stake = 1_000_000_000;
    let registry_file = dir.path().join("registry.json");
    std::fs::write(&registry_file, serde_json::to_vec(&registry).unwrap()).unwrap();
    let registry_arg = registry_file.display().to_string();
    let (_proxy, proxy) = proxy_on_ledger(&["--registry", &registry_arg], &[]);
    let (_worker, worker_stats) = worker(&proxy, &[]);
    let client_dir = dir.path().join("client").display().to_string();
    let (_client, api) = client(
        &proxy,
        &[
            "--faucet",
            "0",
            "--deposit",
            "1000000000",
            "--data-dir",
            &client_dir,
        ],
    );
    wait_for_model_only(&api, "synthetic", 1).await;
    // The client holds nothing: it cannot open its contract, and the proxy refuses it.
    let refused = http()
        .post(format!("{api}/v1/chat/completions"))
        .json(&chat(5, false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    // Exactly one stake's worth (1000 tokens) from the faucet; the client opens its contract.
    let minted = wallet_cli(
        &proxy.ledger,
        &client_dir,
        "test-client",
        &["faucet", "1000000000"],
    );
    assert_eq!(minted["minted"], 1_000_000_000u64);
    wait_for_funds(&api).await;

    assert!(
        ask(&api, &chat(600, false)).await.is_some(),
        "the first request fits the balance"
    );
    let refused = http()
        .post(format!("{api}/v1/chat/completions"))
        .json(&chat(600, false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["type"], "insufficient_quota", "{error}");
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    let worker = get_json(&format!("http://{worker_stats}/jsonstats")).await;
    assert_eq!(
        worker["requests"], 1,
        "the refused request never reached the worker: {worker}"
    );

    // Top up through the wallet CLI; the next request goes through.
    let proxy_id = account_of(&proxy.stats).await.to_string();
    wallet_cli(
        &proxy.ledger,
        &client_dir,
        "test-client",
        &["faucet", "5000000000"],
    );
    // A new contract's default stake is the registry's minimum, read only from a version its
    // owner signed: without the owner pinned, nothing is read and nothing opened.
    let unpinned = wallet_command(
        &proxy.ledger,
        &client_dir,
        "test-client",
        &["deposit", "--proxy", &test_owner(), "4000000000"],
    );
    assert!(!unpinned.status.success());
    assert!(
        String::from_utf8_lossy(&unpinned.stderr).contains("--registry-owner"),
        "{}",
        String::from_utf8_lossy(&unpinned.stderr)
    );
    let after = wallet_cli(
        &proxy.ledger,
        &client_dir,
        "test-client",
        &[
            "--registry-owner",
            &proxy.registry_owner,
            "deposit",
            "--proxy",
            &proxy_id,
            "4000000000",
        ],
    );
    assert!(
        after["client_contract"]["balance"].as_u64().unwrap() >= 4_000_000_000,
        "{after}"
    );
    assert!(
        ask(&api, &chat(600, false)).await.is_some(),
        "served after the top-up"
    );
}

#[tokio::test]
async fn a_proxy_stopped_with_sigterm_finishes_and_charges_every_answer_in_flight() {
    let (mut proxy_node, proxy) = proxy(&[]);
    let (_worker, _) = worker(
        &proxy,
        &["--synthetic-interval-us", "20000", "--max-active", "16"],
    );
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let before = wallet(&proxy.stats).await["charged"].as_u64().unwrap();

    // Eight streams of 0.4 s to 1.1 s; the proxy is told to stop once all are under way.
    let requests: Vec<Value> = (0..8).map(|i| chat(20 + 5 * i, true)).collect();
    let load = join_all(requests.iter().map(|r| ask(&api, r)));
    let stopper = async {
        let started = Instant::now();
        loop {
            let workers = proxy_workers(&proxy).await;
            let active: u64 = workers.iter().filter_map(|w| w["active"].as_u64()).sum();
            if active == 8 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{workers:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proxy_node.terminate();
    };
    let (answers, ()) = tokio::join!(load, stopper);
    assert!(
        answers.iter().all(Option::is_some),
        "every answer in flight completes"
    );
    let status = proxy_node
        .exit_within(Duration::from_secs(15))
        .expect("the drained proxy exits");
    assert!(status.success(), "{status}");

    // Restarted on its database, the proxy has charged each of them exactly once.
    let cost = |usage: &TokenUsage| price(usage, 1_000, &Prices::default()).unwrap();
    let served: Amount = answers.iter().flatten().map(|u| cost(u).client_price).sum();
    let _proxy_again = Node::start(&proxy_args(&proxy, &[]));
    wait_for_ok(&format!("http://{}/healthz", proxy.stats)).await;
    let charged = wallet(&proxy.stats).await["charged"].as_u64().unwrap();
    assert_eq!(charged - before, served);
}

#[tokio::test]
async fn a_proxy_killed_during_streaming_loses_and_doubles_nothing() {
    let extra = ["--withdraw-threshold", "0"];
    let (mut proxy_node, proxy) = proxy(&extra);
    let (_worker, worker_stats) = worker(
        &proxy,
        &[
            "--claim-threshold",
            "1",
            "--synthetic-interval-us",
            "20000",
            "--max-active",
            "32",
        ],
    );
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;

    // Streams of 0.1 s to 1.6 s; the proxy dies at about 0.8 s.
    let requests: Vec<Value> = (1..=16).map(|i| chat(5 * i, true)).collect();
    let load = join_all(requests.iter().map(|r| ask(&api, r)));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        proxy_node.kill();
    };
    let (answers, ()) = tokio::join!(load, killer);
    let cost = |usage: &TokenUsage| price(usage, 1_000, &Prices::default()).unwrap();
    let completed: Amount = answers.iter().flatten().map(|u| cost(u).client_price).sum();
    let done = answers.iter().flatten().count();
    assert!(
        done > 0 && done < requests.len(),
        "{done} of {} finished",
        requests.len()
    );
    // An interrupted stream may have been charged just before the kill; never more than its worst case.
    let interrupted_bound: Amount = requests
        .iter()
        .zip(&answers)
        .filter(|(_, a)| a.is_none())
        .map(|(r, _)| {
            let bytes = serde_json::to_vec(r).unwrap().len() as u64;
            let usage = TokenUsage {
                prompt_tokens: bytes,
                completion_tokens: r["max_tokens"].as_u64().unwrap(),
                ..TokenUsage::default()
            };
            cost(&usage).client_price
        })
        .sum();

    let _proxy_again = Node::start(&proxy_args(&proxy, &extra));
    wait_for_model(&api, "synthetic", 1).await;
    let mut after = 0;
    for _ in 0..3 {
        let usage = ask(&api, &chat(4, false))
            .await
            .expect("served after the restart");
        after += cost(&usage).client_price;
    }

    let proxy_id = account_of(&proxy.stats).await;
    let client_id = account_of(&api).await;
    let worker_id = account_of(&worker_stats).await;
    let charged = wallet(&proxy.stats).await["charged"].as_u64().unwrap();
    assert!(
        charged >= completed + after,
        "lost a charge: {charged} < {}",
        completed + after
    );
    assert!(
        charged <= completed + after + interrupted_bound,
        "charged more than was served"
    );
    let earned = wallet(&proxy.stats).await["earned"].as_u64().unwrap();
    // The client pays, to the unit, for every answer it saw end and for nothing else: a stream the
    // proxy charged just before the kill never reached the client whole, so it stays unpaid (within
    // `interrupted_bound`, checked above; docs/money.md, "Known limits").
    eventually!(
        contract(&proxy.ledger, proxy_id, "clients", client_id).await,
        |c| c["charged"] == completed + after
    );
    eventually!(
        contract(&proxy.ledger, proxy_id, "workers", worker_id).await,
        |c| c["paid"] == earned
    );
}
