//! Keyless proxies and workers that check what they are paid with, end to end with real
//! processes: a proxy's voucher key lives only as long as the process, the operator authorizes
//! each one, and every voucher a worker was given stays claimable across a `kill -9`.

use crate::common::*;
use cocoon_money::{price, AccountId, Amount, Prices};
use futures::future::join_all;
use serde_json::Value;

/// Never claim by itself: the test claims each voucher it kept.
const NEVER_CLAIM: &str = "1000000000000000000";

/// Starts the keyless proxy at `addrs` for `operator` and authorizes its key of this start with
/// the operator's wallet, as an operator does outside the TD; returns it and its key.
async fn start_and_authorize(
    addrs: &ProxyAddrs,
    operator: &str,
    operator_dir: &str,
    stake: Option<&str>,
) -> (Node, String) {
    let launch = Launch {
        capture_stderr: true,
        ..Launch::default()
    };
    let proxy = Node::launch(
        &proxy_args(addrs, &["--operator-account", operator]),
        launch,
    );
    let key = eventually!(key_to_authorize(&proxy), |k| k.is_some()).unwrap();
    // The operator checks that the proxy's attested certificate names this key.
    let certificate = addrs.data_dir.join("proxy-certificate.der");
    let verified = cocoon_ok(&[
        "attest",
        "verify",
        &certificate.display().to_string(),
        "--allow-image",
        &image_hash("test-proxy"),
        "--min-kind",
        "fake",
        "--json",
    ]);
    assert!(verified.contains(&key), "{verified}");
    let mut args = vec!["authorize-proxy-key", "--key", &key];
    if let Some(stake) = stake {
        args.extend(["--stake", stake]);
    }
    wallet_cli(&addrs.ledger, operator_dir, "operator-laptop", &args);
    wait_for_ok(&format!("http://{}/healthz", addrs.stats)).await;
    assert_eq!(wallet(&addrs.stats).await["voucher_key"], key.as_str());
    assert_eq!(wallet(&addrs.stats).await["acts_for_operator"], false);
    (proxy, key)
}

/// Each worker's best voucher (as `cocoon wallet claim --voucher` takes it) once every worker
/// holds one for all it earned by the proxy's database.
async fn vouchers_once_settled(proxy: &ProxyAddrs, workers: &[String]) -> Vec<Value> {
    let earned = wallet(&proxy.stats).await["earned"].as_u64().unwrap();
    let held = eventually!(
        join_all(workers.iter().map(|w| wallet(w))).await,
        |held| held
            .iter()
            .map(|w| w["earned"].as_u64().unwrap())
            .sum::<Amount>()
            == earned
    );
    held.iter()
        .map(|w| {
            let voucher = w["proxies"][0]["voucher"].clone();
            assert!(voucher.is_object(), "a worker holds no voucher: {w}");
            voucher
        })
        .collect()
}

/// Sends overlapping streams from both clients, so that both workers serve some.
async fn busy_both_workers(api1: &str, api2: &str) {
    let requests: Vec<(&str, Value)> = (0..8)
        .map(|i| (if i % 2 == 0 { api1 } else { api2 }, chat(10, true)))
        .collect();
    let answers = join_all(requests.iter().map(|(api, r)| ask(api, r))).await;
    assert!(answers.iter().all(Option::is_some), "{answers:?}");
}

/// Submits `voucher` from a wallet of nobody in particular (anyone may) and returns what it paid.
fn claim(ledger: &str, claimer_dir: &str, voucher: &Value) -> Amount {
    let claimed = wallet_cli(
        ledger,
        claimer_dir,
        "anyone",
        &["claim", "--voucher", &voucher.to_string()],
    );
    claimed["outcome"]["paid"].as_u64().expect("claimed")
}

#[tokio::test]
async fn a_keyless_proxy_killed_under_load_restarts_with_a_new_key_and_every_voucher_pays() {
    let addrs = proxy_addrs(&[]);
    let operator_dir = tempfile::tempdir().unwrap();
    let operator_dir = operator_dir.path().display().to_string();
    let operator = wallet_cli(&addrs.ledger, &operator_dir, "operator-laptop", &["new"]);
    let operator = operator["address"].as_str().unwrap().to_owned();
    wallet_cli(
        &addrs.ledger,
        &operator_dir,
        "operator-laptop",
        &["faucet", "100000000000"],
    );
    let (mut proxy, first_key) =
        start_and_authorize(&addrs, &operator, &operator_dir, Some("20000000000")).await;
    // The proxy holds no key on disk: only its money database.
    assert!(!addrs.data_dir.join(OPERATOR_KEY_FILE).exists());
    assert!(!addrs.data_dir.join("wallet.sealed").exists());

    let worker_flags = [
        "--claim-threshold",
        NEVER_CLAIM,
        "--synthetic-interval-us",
        "20000",
        "--max-active",
        "32",
    ];
    let (_w1, w1) = worker(&addrs, &worker_flags);
    let (_w2, w2) = worker(&addrs, &worker_flags);
    let workers = [w1, w2];
    let (_c1, api1) = client(&addrs, &[]);
    let (_c2, api2) = client(&addrs, &[]);
    wait_for_model(&api1, "synthetic", 2).await;
    wait_for_model(&api2, "synthetic", 2).await;
    busy_both_workers(&api1, &api2).await;
    let old_key_vouchers = vouchers_once_settled(&addrs, &workers).await;

    // Under load (streams of 0.1 s to 1.6 s from both clients), kill -9 the proxy.
    let requests: Vec<(&String, Value)> = (1..=16)
        .map(|i| (if i % 2 == 0 { &api1 } else { &api2 }, chat(5 * i, true)))
        .collect();
    let load = join_all(requests.iter().map(|(api, r)| ask(api, r)));
    let killer = async {
        let active = eventually!(proxy_workers(&addrs).await, |w| w
            .iter()
            .filter_map(|w| w["active"].as_u64())
            .sum::<u64>()
            >= 8);
        proxy.kill();
        active
    };
    let (answers, _) = tokio::join!(load, killer);
    let done = answers.iter().flatten().count();
    assert!(done < requests.len(), "the kill interrupted nothing");

    // Restarted: a new key, authorized by the operator; the old one's vouchers stay valid.
    let (_proxy, second_key) = start_and_authorize(&addrs, &operator, &operator_dir, None).await;
    assert_ne!(first_key, second_key);
    wait_for_model(&api1, "synthetic", 2).await;
    wait_for_model(&api2, "synthetic", 2).await;
    busy_both_workers(&api1, &api2).await;
    let new_key_vouchers = vouchers_once_settled(&addrs, &workers).await;

    // Every worker is paid everything it was vouched: the old key's voucher, then the new one's
    // for the rest.
    let claimer = tempfile::tempdir().unwrap();
    let claimer = claimer.path().display().to_string();
    let proxy_id: AccountId = operator.parse().unwrap();
    let mut paid_total = 0;
    for (old, new) in old_key_vouchers.iter().zip(&new_key_vouchers) {
        let old_total = old["voucher"]["cumulative"].as_u64().unwrap();
        let new_total = new["voucher"]["cumulative"].as_u64().unwrap();
        assert!(new_total > old_total);
        assert_eq!(claim(&addrs.ledger, &claimer, old), old_total);
        assert_eq!(claim(&addrs.ledger, &claimer, new), new_total - old_total);
        let worker: AccountId = new["voucher"]["counterparty"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let contract = contract(&addrs.ledger, proxy_id, "workers", worker).await;
        assert_eq!(contract["paid"], new_total);
        paid_total += new_total;
    }
    assert_eq!(wallet(&addrs.stats).await["earned"], paid_total);

    // Every client is charged on the ledger exactly what the proxy's database says it served,
    // and at least every answer it received.
    let cost = |usage: &cocoon_proto::TokenUsage| price(usage, 1_000, &Prices::default()).unwrap();
    let received: Amount = answers.iter().flatten().map(|u| cost(u).client_price).sum();
    let charged = wallet(&addrs.stats).await["charged"].as_u64().unwrap();
    assert!(charged >= received, "{charged} < {received}");
    // The ledger learns the last charges with the proxy's next settlement round: wait for the
    // clients' contracts to add up to the proxy's total (each client's own view can lag with it).
    let clients = [account_of(&api1).await, account_of(&api2).await];
    let on_ledger = eventually!(
        join_all(clients.iter().map(|client| contract(
            &addrs.ledger,
            proxy_id,
            "clients",
            *client
        )))
        .await,
        |contracts| contracts
            .iter()
            .map(|c| c["charged"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == charged
    );
    for (api, contract) in [&api1, &api2].into_iter().zip(&on_ledger) {
        assert_eq!(contract["collected"], contract["charged"]);
        eventually!(client_wallet(api).await, |wallet| wallet["charged"]
            == contract["charged"]);
    }
}

/// A network whose proxy runs with `proxy_flags` and whose worker serves a proxy that owes it
/// at most 1 unit without a voucher, after one answer served while nothing was owed. The nodes
/// (and the ledger, which the proxy's addresses hold) live as long as the value.
struct OwedOneAnswer {
    _nodes: [Node; 3],
    _proxy: ProxyAddrs,
    api: String,
    worker_stats: String,
}

async fn owed_one_answer(proxy_flags: &[&str]) -> OwedOneAnswer {
    let (proxy_node, proxy) = proxy(proxy_flags);
    let (worker_node, worker_stats) = worker(&proxy, &["--max-unvouched", "1"]);
    let (client_node, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    ask(&api, &chat(3, false))
        .await
        .expect("served while owed nothing");
    OwedOneAnswer {
        _nodes: [proxy_node, worker_node, client_node],
        _proxy: proxy,
        api,
        worker_stats,
    }
}

/// A worker on a proxy that pays it with `how` vouchers refuses them and, once it is owed more
/// than its bound, the proxy's requests.
async fn a_worker_refuses(how: &str, reason: &str) {
    let network = owed_one_answer(&["--test-only-bad-worker-vouchers", how]).await;
    let refused = eventually!(wallet(&network.worker_stats).await, |w| w
        ["vouchers_refused"]
        .as_u64()
        .unwrap_or(0)
        > 0);
    let why = refused["last_voucher_refusal"].as_str().unwrap();
    assert!(why.contains(reason), "{how}: {why}");
    assert_eq!(refused["claimable"], 0, "{refused}");
    assert!(
        ask(&network.api, &chat(3, false)).await.is_none(),
        "{how}: a worker owed more than its bound serves on"
    );
    let unvouched = &wallet(&network.worker_stats).await["unvouched"][0]["unvouched"];
    assert!(unvouched.as_u64().unwrap() > 1, "{unvouched}");
}

#[tokio::test]
async fn a_worker_refuses_forged_vouchers_and_then_the_proxy() {
    a_worker_refuses("forged", "not signed by this link's proxy").await;
}

#[tokio::test]
async fn a_worker_refuses_vouchers_naming_another_proxy_and_then_the_proxy() {
    a_worker_refuses("foreign-proxy", "names proxy contract").await;
}

#[tokio::test]
async fn a_worker_owed_more_than_its_bound_serves_again_once_vouched() {
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, worker_stats) = worker(&proxy, &["--max-unvouched", "1"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    for _ in 0..3 {
        ask(&api, &chat(3, false)).await.expect("served");
        // Owed more than 1 until the proxy's next voucher covers it; then served again.
        eventually!(wallet(&worker_stats).await, |w| w["unvouched"][0]
            ["unvouched"]
            == 0);
    }
    assert_eq!(wallet(&worker_stats).await["vouchers_refused"], 0);
}

#[tokio::test]
async fn a_worker_counts_the_registry_fee_and_stops_serving_a_proxy_that_states_a_lower_one() {
    // The proxy states (and vouches the worker at) a worker fee of nothing.
    let network = owed_one_answer(&["--test-only-worker-fee", "0"]).await;
    // The worker counts what the registry's fee pays for that answer, not the proxy's nothing:
    // it is owed more than its bound, and serves that proxy no more.
    eventually!(wallet(&network.worker_stats).await, |w| w["unvouched"][0]
        ["unvouched"]
        .as_u64()
        .unwrap_or(0)
        > 1);
    assert!(
        ask(&network.api, &chat(3, false)).await.is_none(),
        "a worker underpaid beyond its bound serves on"
    );
}
