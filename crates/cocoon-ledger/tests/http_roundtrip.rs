//! The ledger service and its client, end to end over a real loopback HTTP server.

use std::sync::Arc;

use cocoon_ledger::api::LogQuery;
use cocoon_ledger::{spawn, ApiError, ClientError, LedgerClient};
use cocoon_money::{
    ContractStatus, Hash32, Outcome, RollbackError, RuleError, Settlement, SettlementError,
    Voucher, VoucherKind,
};
use cocoon_proto::clock::ManualClock;

mod common;

use common::*;

fn settlement(url: &str, n: u8) -> Arc<dyn Settlement> {
    Arc::new(LedgerClient::new(url, key(n)).unwrap())
}

fn voucher(kind: VoucherKind, to: u8, cumulative: u64, seqno: u64) -> Voucher {
    Voucher {
        kind,
        proxy: id(PROXY),
        counterparty: id(to),
        cumulative,
        seqno,
        is_final: false,
    }
}

#[tokio::test]
async fn full_money_flow_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let server = spawn(&config(&dir), clock.clone()).await.unwrap();
    let url = server.url();
    let (owner, proxy, client, worker) = (
        settlement(&url, OWNER),
        settlement(&url, PROXY),
        settlement(&url, CLIENT),
        settlement(&url, WORKER),
    );

    let registry = proxy.registry().await.unwrap();
    assert_eq!(registry.owner, id(OWNER));
    let (min_proxy, min_client) = (registry.min_proxy_stake, registry.min_client_stake);

    proxy.faucet(2 * min_proxy).await.unwrap();
    client.faucet(5 * min_client).await.unwrap();
    proxy.open_proxy(min_proxy, id(PROXY)).await.unwrap();
    client
        .open_client(id(PROXY), 2 * min_client, min_client)
        .await
        .unwrap();
    client.top_up(id(PROXY), min_client).await.unwrap();

    // Charges: applied once; replays and older vouchers are harmless.
    let charge = voucher(VoucherKind::ClientPay, CLIENT, 700, 2).sign(&key(CLIENT));
    let receipt = proxy.submit_charge(charge).await.unwrap();
    assert_eq!(
        receipt.outcome,
        Outcome::Charged {
            collected: 700,
            shortfall: 0
        }
    );
    assert!(proxy
        .submit_charge(charge)
        .await
        .unwrap_err()
        .is_stale_voucher());
    let older = voucher(VoucherKind::ClientPay, CLIENT, 300, 1).sign(&key(CLIENT));
    assert!(proxy
        .submit_charge(older)
        .await
        .unwrap_err()
        .is_stale_voucher());

    // Claims: a worker paid with the proxy's voucher; a self-signed voucher is refused.
    let pay = voucher(VoucherKind::WorkerPay, WORKER, 500, 1).sign(&key(PROXY));
    assert_eq!(
        worker.claim(pay).await.unwrap().outcome,
        Outcome::Claimed { paid: 500 }
    );
    let forged = voucher(VoucherKind::WorkerPay, WORKER, 9_000, 2).sign(&key(WORKER));
    assert_eq!(
        worker.claim(forged).await.unwrap_err().rule(),
        Some(&RuleError::BadVoucherSignature)
    );
    assert_eq!(worker.account(id(WORKER)).await.unwrap().balance, 500);
    let contract = proxy
        .worker_contract(id(PROXY), id(WORKER))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((contract.paid, contract.voucher_seqno), (500, 1));

    // The proxy withdraws its commission (what is left of the collected 700).
    proxy.withdraw_commission(200).await.unwrap();
    let contract = proxy.proxy_contract(id(PROXY)).await.unwrap().unwrap();
    assert_eq!((contract.pool, contract.stake), (0, min_proxy));
    assert_eq!(
        proxy.withdraw_commission(1).await.unwrap_err().rule(),
        Some(&RuleError::InsufficientFunds {
            available: 0,
            needed: 1
        })
    );

    // State commits read back and detect a rolled-back database.
    proxy
        .commit_proxy_state(10, Hash32([10; 32]))
        .await
        .unwrap();
    proxy
        .check_proxy_state(id(PROXY), 10, Hash32([10; 32]))
        .await
        .unwrap();
    assert!(matches!(
        proxy.check_proxy_state(id(PROXY), 9, Hash32([9; 32])).await,
        Err(SettlementError::RolledBack(
            RollbackError::RolledBack { .. }
        ))
    ));

    // Forced close without the proxy: above-stake part now, stake after the delay.
    let before = client.account(id(CLIENT)).await.unwrap().balance;
    let started = client.close_client(id(PROXY), None).await.unwrap();
    let Outcome::ClientCloseStarted {
        returned,
        release_at,
    } = started.outcome
    else {
        panic!("unexpected outcome {:?}", started.outcome);
    };
    assert_eq!(returned, 3 * min_client - 700 - min_client);
    assert_eq!(release_at, START + registry.client_delay_before_close);
    assert!(matches!(
        client
            .finish_client_close(id(PROXY))
            .await
            .unwrap_err()
            .rule(),
        Some(RuleError::TooEarly { .. })
    ));
    clock.advance(registry.client_delay_before_close);
    client.finish_client_close(id(PROXY)).await.unwrap();
    let contract = client
        .client_contract(id(PROXY), id(CLIENT))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contract.status, ContractStatus::Closed);
    assert_eq!(contract.charged, 700);
    assert_eq!(
        client.account(id(CLIENT)).await.unwrap().balance,
        before + returned + min_client
    );

    // Registry updates: owner only, version must rise.
    let mut next = registry.clone();
    next.version += 1;
    next.models.insert("tiny".into(), Hash32([7; 32]));
    assert_eq!(
        client
            .update_registry(next.clone())
            .await
            .unwrap_err()
            .rule(),
        Some(&RuleError::NotRegistryOwner)
    );
    owner.update_registry(next.clone()).await.unwrap();
    assert_eq!(worker.registry().await.unwrap(), next);

    // Unknown contracts are `None`, not errors.
    assert!(worker
        .client_contract(id(WORKER), id(CLIENT))
        .await
        .unwrap()
        .is_none());

    // Conservation as the ledger reports it, then durability across a restart.
    let reader = LedgerClient::read_only(&url).unwrap();
    let stats = reader.stats().await.unwrap();
    assert_eq!(stats.holdings_total, u128::from(stats.supply));
    assert_eq!(stats.supply, 2 * min_proxy + 5 * min_client);
    let log = reader
        .log(LogQuery {
            after: 0,
            limit: Some(3),
        })
        .await
        .unwrap();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    server.shutdown().await.unwrap();

    let server = spawn(&config(&dir), clock.clone()).await.unwrap();
    let reader = LedgerClient::read_only(&server.url()).unwrap();
    let reopened = reader.stats().await.unwrap();
    assert_eq!(reopened.last_seq, stats.last_seq);
    assert_eq!(reopened.supply, stats.supply);
    assert_eq!(reader.registry().await.unwrap(), next);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn nonces_stay_ordered_under_concurrency_and_across_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(&config(&dir), Arc::new(ManualClock::new(START)))
        .await
        .unwrap();
    let url = server.url();
    let client = Arc::new(LedgerClient::new(&url, key(CLIENT)).unwrap());
    client.faucet(1_000).await.unwrap();

    let transfers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.transfer(id(WORKER), 10).await })
        })
        .collect();
    for t in transfers {
        t.await.unwrap().unwrap();
    }
    // Another process using the same account makes the cached nonce stale; the client recovers.
    let twin = LedgerClient::new(&url, key(CLIENT)).unwrap();
    twin.transfer(id(WORKER), 10).await.unwrap();
    client.transfer(id(WORKER), 10).await.unwrap();
    let account = client.account(id(CLIENT)).await.unwrap();
    assert_eq!(account.nonce, 11);
    assert_eq!(account.balance, 1_000 - 100);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.faucet = false;
    let server = spawn(&cfg, Arc::new(ManualClock::new(START)))
        .await
        .unwrap();
    let url = server.url();

    let client = LedgerClient::new(&url, key(CLIENT)).unwrap();
    assert_eq!(
        client.faucet(5).await.unwrap_err().rule(),
        Some(&RuleError::FaucetDisabled)
    );
    let reader = LedgerClient::read_only(&url).unwrap();
    assert!(matches!(
        reader.transfer(id(WORKER), 1).await,
        Err(SettlementError::NoSigningKey)
    ));

    let raw = reqwest::Client::new();
    let response = raw
        .post(format!("{url}/v1/transactions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: ApiError = response.json().await.unwrap();
    assert!(matches!(error, ApiError::BadRequest { .. }));

    let response = raw
        .get(format!("{url}/v1/accounts/nothex"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(matches!(reader.proxy_contract(id(PROXY)).await, Ok(None)));

    // Malformed queries, unknown routes and wrong methods answer in the same JSON shape.
    for (method, path, status, message) in [
        ("GET", "/v1/registry?newer_than=abc", 400, "newer_than"),
        ("GET", "/v1/log?limit=-1", 400, "limit"),
        ("GET", "/v1/nothing", 404, "no route for GET /v1/nothing"),
        (
            "DELETE",
            "/v1/stats",
            405,
            "DELETE is not allowed on /v1/stats",
        ),
        ("GET", "/v1/accounts/%FF%FE", 400, "UTF-8"),
        ("GET", "/v1/transactions", 405, "GET is not allowed"),
        ("GET", "/v1/log?limit=1&surprise=1", 400, "surprise"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = raw
            .request(method, format!("{url}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let error: ApiError = response.json().await.unwrap();
        assert_eq!(error.status(), status, "{path}");
        assert!(error.to_string().contains(message), "{path}: {error}");
    }
    assert_eq!(
        raw.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let stats: cocoon_ledger::LedgerStats = raw
        .get(format!("{url}/jsonstats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!stats.faucet_enabled);
    let metrics = raw.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("cocoon_ledger_supply 0"));
    let human = raw.get(format!("{url}/stats")).send().await.unwrap();
    assert!(human.text().await.unwrap().contains("faucet: off"));

    // Nothing listens here any more: a transport error, not an API error.
    server.shutdown().await.unwrap();
    assert!(matches!(reader.stats().await, Err(ClientError::Http(_))));
}

#[tokio::test]
async fn the_registry_comes_with_the_owners_signed_update_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let server = spawn(&config(&dir), clock.clone()).await.unwrap();
    let reader = LedgerClient::read_only(&server.url()).unwrap();
    let wait = std::time::Duration::ZERO;
    // The genesis document was signed by no one: nodes that pin the owner refuse it.
    let genesis = reader.registry_answer_newer_than(0, wait).await.unwrap();
    assert!(genesis.signed_update.is_none());
    assert!(matches!(
        genesis.verify(id(OWNER), None),
        Err(cocoon_money::RegistryRefusal::Unsigned { version: 1 })
    ));

    let mut next = genesis.registry.clone();
    next.version = 2;
    next.min_client_stake += 1;
    settlement(&server.url(), OWNER)
        .update_registry(next.clone())
        .await
        .unwrap();
    // Another account's transactions after the update do not hide it.
    settlement(&server.url(), CLIENT).faucet(5).await.unwrap();
    let answer = reader.registry_answer_newer_than(1, wait).await.unwrap();
    let (verified, seen) = answer.verify(id(OWNER), None).unwrap();
    assert_eq!((verified, seen.version), (next.clone(), 2));
    server.shutdown().await.unwrap();

    let server = spawn(&config(&dir), clock).await.unwrap();
    let reader = LedgerClient::read_only(&server.url()).unwrap();
    let reopened = reader.registry_answer_newer_than(0, wait).await.unwrap();
    assert_eq!(reopened, answer, "the same signed bytes after a restart");
    assert_eq!(reopened.verify(id(OWNER), Some(seen)).unwrap().1, seen);
    server.shutdown().await.unwrap();
}
