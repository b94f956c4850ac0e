//! Money end to end on TON: a proxy, workers and clients (real processes) settling on the Cocoon
//! contracts on the local devnet (`contracts/devnet/`, the real TVM), every number checked
//! against the contracts' own state as their get-methods read it.

use std::time::Duration;

use crate::common::*;
use cocoon_money::{price, Amount, ContractStatus, Prices};
use futures::future::join_all;
use serde_json::Value;

/// The stake a test proxy opens its contract with: the registry's minimum.
fn opening_stake() -> Amount {
    cocoon_money::Registry::new(cocoon_money::AccountId([0; 32])).min_proxy_stake
}

/// What `usage` costs at the default prices and coefficient: (client's price, worker's pay).
fn cost(usage: &cocoon_proto::TokenUsage) -> (Amount, Amount) {
    let cost = price(usage, 1_000, &Prices::default()).unwrap();
    (cost.client_price, cost.worker_pay)
}

/// Asks `api` one answer of each `(max_tokens, stream)`; what they cost: (paid, earned).
async fn answers(api: &str, requests: &[(u64, bool)]) -> (Amount, Amount) {
    let (mut paid, mut earned) = (0, 0);
    for &(tokens, stream) in requests {
        let usage = ask(api, &chat(tokens, stream)).await.expect("answered");
        paid += cost(&usage).0;
        earned += cost(&usage).1;
    }
    (paid, earned)
}

/// Waits until the chain holds `client`'s channel with `proxy` collected to `paid` and `worker`
/// paid `earned`.
async fn settled(
    chain: &dyn cocoon_money::Settlement,
    proxy: cocoon_money::AccountId,
    (client, paid): (cocoon_money::AccountId, Amount),
    (worker, earned): (cocoon_money::AccountId, Amount),
) {
    eventually!(chain.client_contract(proxy, client).await.unwrap(), |c| c
        .as_ref()
        .is_some_and(|c| c.collected == paid));
    eventually!(chain.worker_contract(proxy, worker).await.unwrap(), |c| c
        .as_ref()
        .is_some_and(|c| c.paid == earned));
}

/// A non-streamed answer's receipt, written to a file in `dir`.
async fn receipt_of_an_answer(api: &str, dir: &std::path::Path) -> String {
    let response = post_chat(api, &chat(2, false)).await.unwrap();
    assert_eq!(response.status(), 200);
    let receipt = response.headers()["x-cocoon-receipt"].to_str().unwrap();
    let file = dir.join("receipt");
    std::fs::write(&file, receipt).unwrap();
    file.display().to_string()
}

/// `cocoon receipt verify FILE` against the registry on the network's root.
fn verify_on_ton(network: &ProxyAddrs, receipt: &str) -> (bool, String, String) {
    let args = [
        vec!["receipt", "verify", receipt, "--min-tee", "fake", "--json"],
        network.ton.iter().map(String::as_str).collect(),
    ]
    .concat();
    cocoon(&args)
}

#[tokio::test]
async fn on_ton_a_client_pays_a_worker_earns_and_the_proxy_keeps_the_difference() {
    let Some(network) = proxy_addrs_on_ton().await else {
        return;
    };
    let _proxy = Node::start(&proxy_args(&network, &["--withdraw-threshold", "0"]));
    let (_worker, worker_stats) = worker(&network, &["--claim-threshold", "1"]);
    let (_client, api) = client(&network, &["--deposit", "10000000000"]);
    wait_for_model(&api, "synthetic", 1).await;

    let requests = [(3, false), (4, true), (5, false), (6, true), (7, true)];
    let (paid, earned) = answers(&api, &requests).await;
    assert!(paid > earned && earned > 0);
    let proxy_id = account_of(&network.stats).await;
    let client_id = account_of(&api).await;
    let worker_id = account_of(&worker_stats).await;
    let proxy_wallet = wallet(&network.stats).await;
    assert_eq!(proxy_wallet["charged"], paid, "{proxy_wallet}");
    assert_eq!(proxy_wallet["earned"], earned, "{proxy_wallet}");

    // The contracts converge to exactly the tokens served, to the nano-TON: the client's channel
    // charged and collected, the worker paid by the proxy contract, the rest in its pool.
    let chain = settlement_of(&network).await;
    settled(&*chain, proxy_id, (client_id, paid), (worker_id, earned)).await;
    let channel = chain
        .client_contract(proxy_id, client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(channel.charged, paid);
    assert_eq!(channel.balance, 10_000_000_000 - paid);
    let proxy = chain.proxy_contract(proxy_id).await.unwrap().unwrap();
    assert_eq!(proxy.stake + proxy.pool, opening_stake() + paid - earned);
    assert_eq!(proxy.status, ContractStatus::Open);
    let worker_wallet = eventually!(wallet(&worker_stats).await, |w| w["claimed"] == earned);
    assert_eq!(worker_wallet["vouchers_refused"], 0, "{worker_wallet}");
}

#[tokio::test]
async fn on_ton_a_proxy_killed_under_load_restarts_and_every_charge_settles() {
    let Some(network) = proxy_addrs_on_ton().await else {
        return;
    };
    let proxy_args = proxy_args(&network, &["--withdraw-threshold", "0"]);
    let mut proxy = Node::start(&proxy_args);
    let (_worker, worker_stats) = worker(
        &network,
        &[
            "--claim-threshold",
            "1",
            "--synthetic-interval-us",
            "20000",
            "--max-active",
            "16",
        ],
    );
    let (_client, api) = client(&network, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    ask(&api, &chat(5, true)).await.expect("answered");

    // Under load (streams of 0.1 s to 1.2 s), kill -9 the proxy.
    let requests: Vec<Value> = (1..=12).map(|i| chat(5 * i, true)).collect();
    let load = join_all(requests.iter().map(|r| ask(&api, r)));
    let killer = async {
        eventually!(proxy_workers(&network).await, |w| w
            .iter()
            .filter_map(|w| w["active"].as_u64())
            .sum::<u64>()
            >= 6);
        proxy.kill();
    };
    let (answers, ()) = tokio::join!(load, killer);
    assert!(
        answers.iter().flatten().count() < requests.len(),
        "the kill interrupted nothing"
    );

    // Restarted on its database: a new voucher key, authorized on the contract by itself.
    let _proxy = Node::start(&proxy_args);
    wait_for_model(&api, "synthetic", 1).await;
    for tokens in [3, 7] {
        ask(&api, &chat(tokens, true)).await.expect("answered");
    }

    // The chain ends where the proxy's database does: every client charge collected, every
    // worker earning paid out of the pool, the difference left in it.
    let stats = wallet(&network.stats).await;
    let charged = stats["charged"].as_u64().unwrap();
    let earned = stats["earned"].as_u64().unwrap();
    let received: Amount = answers.iter().flatten().map(|u| cost(u).0).sum();
    assert!(charged >= received, "{charged} < {received}");
    let proxy_id = account_of(&network.stats).await;
    let client_id = account_of(&api).await;
    let worker_id = account_of(&worker_stats).await;
    let chain = settlement_of(&network).await;
    let channel = eventually!(
        chain.client_contract(proxy_id, client_id).await.unwrap(),
        |c| c.as_ref().is_some_and(|c| c.charged == charged)
    )
    .unwrap();
    assert_eq!(channel.collected, charged);
    eventually!(
        chain.worker_contract(proxy_id, worker_id).await.unwrap(),
        |c| c.as_ref().is_some_and(|c| c.paid == earned)
    );
    // A claim that came before its client's payment was applied was paid from the stake; the
    // payment then filled the pool: together they hold the stake plus the commission.
    let proxy = chain.proxy_contract(proxy_id).await.unwrap().unwrap();
    assert_eq!(proxy.stake + proxy.pool, opening_stake() + charged - earned);
    // Both starts' voucher keys are honoured.
    assert_eq!(proxy.earlier_voucher_keys.len(), 1, "{proxy:?}");
    assert_eq!(wallet(&worker_stats).await["vouchers_refused"], 0);
}

#[tokio::test]
async fn on_ton_a_client_closes_its_channel_and_gets_its_stake_back_after_the_delay() {
    let Some(network) = proxy_addrs_on_ton().await else {
        return;
    };
    let _proxy = Node::start(&proxy_args(&network, &[]));
    let (_worker, _) = worker(&network, &[]);
    let client_dir = tempfile::tempdir().unwrap();
    let client_dir = client_dir.path().display().to_string();
    let (mut client, api) = client(&network, &["--data-dir", &client_dir]);
    wait_for_model(&api, "synthetic", 1).await;
    let usage = ask(&api, &chat(4, false)).await.expect("answered");
    let proxy_id = account_of(&network.stats).await;
    let client_id = account_of(&api).await;
    let chain = settlement_of(&network).await;
    let open = eventually!(
        chain.client_contract(proxy_id, client_id).await.unwrap(),
        |c| c.as_ref().is_some_and(|c| c.collected == cost(&usage).0)
    )
    .unwrap();
    client.terminate();

    // The client's wallet (its sealed node key) closes: what is above the stake comes back now,
    // the stake after the registry's delay (600 s), which the devnet's clock is moved past.
    let close = |args: &[&str]| {
        let all = [
            network.ton.iter().map(String::as_str).collect::<Vec<_>>(),
            args.to_vec(),
        ]
        .concat();
        wallet_cli(&network.ledger, &client_dir, "test-client", &all)
    };
    let proxy_arg = proxy_id.to_string();
    let started = close(&["close", "--proxy", &proxy_arg]);
    assert_eq!(
        started["outcome"]["returned"],
        open.balance - open.stake,
        "{started}"
    );
    let closing = chain
        .client_contract(proxy_id, client_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(closing.status, ContractStatus::Closing { .. }),
        "{closing:?}"
    );
    let early = wallet_command(
        &network.ledger,
        &client_dir,
        "test-client",
        &[
            network.ton.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["close", "--proxy", &proxy_arg],
        ]
        .concat(),
    );
    assert!(!early.status.success(), "closed before the delay");
    ton_devnet::advance(network.devnet(), 601).await;
    let finished = close(&["close", "--proxy", &proxy_arg]);
    assert_eq!(finished["outcome"]["returned"], open.stake, "{finished}");
    let closed = chain
        .client_contract(proxy_id, client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, ContractStatus::Closed);
    assert_eq!(closed.collected, cost(&usage).0);
}

#[tokio::test]
async fn on_ton_a_revoked_worker_image_drops_its_workers() {
    let Some(network) = proxy_addrs_on_ton().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let owner_key = dir.path().join("owner.key");
    std::fs::write(&owner_key, hex::encode(TEST_OWNER_SEED)).unwrap();
    let owner_key = owner_key.display().to_string();
    let change = |args: &[&str]| {
        let all = [
            vec!["registry", "--owner-key", &owner_key],
            network.ton.iter().map(String::as_str).collect(),
            args.to_vec(),
        ]
        .concat();
        cocoon_ok(&all);
    };
    let worker_image = image_hash("test-worker");
    for image in [&worker_image, &image_hash("spare-worker")] {
        change(&["allow-image", "--role", "worker", image]);
    }
    let _proxy = Node::start(&proxy_args(&network, &[]));
    let (_worker, _) = worker(&network, &[]);
    let (_client, api) = client(&network, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let receipt = receipt_of_an_answer(&api, dir.path()).await;
    let (ok, stdout, stderr) = verify_on_ton(&network, &receipt);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["registry"], 2, "the root's version: {report}");

    // On TON the root is the registry's authority: a node pinning an owner key is refused.
    let (ok, _, stderr) = cocoon(
        &[
            vec!["client", "--registry-owner", &test_owner()],
            network.ton.iter().map(String::as_str).collect(),
        ]
        .concat(),
    );
    assert!(!ok && stderr.contains("drop --registry-owner"), "{stderr}");

    change(&["revoke-image", "--role", "worker", &worker_image]);
    eventually!(proxy_workers(&network).await, |w| w.is_empty());
    // It stays out: the root no longer lists its image; nor does a receipt of its answers verify.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(proxy_workers(&network).await.is_empty());
    let (ok, _, stderr) = verify_on_ton(&network, &receipt);
    assert!(!ok, "a revoked image's receipt verified");
    assert!(stderr.contains(&worker_image), "{stderr}");
}

#[tokio::test]
async fn on_ton_a_keyless_proxy_is_authorized_by_its_operator_and_collects_with_its_keys_wallet() {
    let Some(network) = proxy_addrs_on_ton().await else {
        return;
    };
    let operator_dir = tempfile::tempdir().unwrap();
    let operator_dir = operator_dir.path().display().to_string();
    let operator_cli = |args: &[&str]| {
        let all = [
            network.ton.iter().map(String::as_str).collect::<Vec<_>>(),
            args.to_vec(),
        ]
        .concat();
        wallet_cli(&network.ledger, &operator_dir, "operator-laptop", &all)
    };
    let operator = operator_cli(&["new"])["address"]
        .as_str()
        .unwrap()
        .to_owned();
    operator_cli(&["faucet", "100000000000"]);
    let proxy = Node::launch(
        &proxy_args(&network, &["--operator-account", &operator]),
        Launch {
            capture_stderr: true,
            ..Launch::default()
        },
    );
    let key = eventually!(key_to_authorize(&proxy), |k| k.is_some()).unwrap();
    // The operator opens the contract with this start's key, and funds that key's wallet for the
    // fees of applying the clients' payments.
    operator_cli(&[
        "authorize-proxy-key",
        "--key",
        &key,
        "--stake",
        &opening_stake().to_string(),
    ]);
    operator_cli(&["transfer", "--to", &key, "1000000000"]);
    wait_for_ok(&format!("http://{}/healthz", network.stats)).await;
    assert_eq!(wallet(&network.stats).await["acts_for_operator"], false);

    let (_worker, worker_stats) = worker(&network, &["--claim-threshold", "1"]);
    let (_client, api) = client(&network, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let (paid, earned) = answers(&api, &[(4, true), (6, true)]).await;
    let proxy_id: cocoon_money::AccountId = operator.parse().unwrap();
    let client = (account_of(&api).await, paid);
    let worker = (account_of(&worker_stats).await, earned);
    let chain = settlement_of(&network).await;
    settled(&*chain, proxy_id, client, worker).await;
    let contract = chain.proxy_contract(proxy_id).await.unwrap().unwrap();
    assert!(contract.authorizes(&key.parse().unwrap()), "{contract:?}");
}

#[tokio::test]
async fn on_ton_the_proxy_withdraws_all_its_commission_once_workers_have_claimed() {
    let Some(network) = proxy_addrs_on_ton().await else {
        return;
    };
    let _proxy = Node::start(&proxy_args(&network, &["--withdraw-threshold", "1"]));
    let (_worker, worker_stats) = worker(&network, &["--claim-threshold", "1"]);
    let (_client, api) = client(&network, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let (paid, earned) = answers(&api, &[(4, false), (6, false), (8, false)]).await;
    assert!(paid > earned);
    let proxy_id = account_of(&network.stats).await;
    let client = (account_of(&api).await, paid);
    let worker = (account_of(&worker_stats).await, earned);
    let chain = settlement_of(&network).await;
    settled(&*chain, proxy_id, client, worker).await;
    // Every worker claimed, so the whole pool is commission: it leaves (the contract keeps no
    // total of what workers were paid; the proxy reads each worker's).
    eventually!(
        chain.proxy_contract(proxy_id).await.unwrap().unwrap(),
        |c| c.pool == 0
    );
}
