//! A client closing its channel at once with the proxy's release (`POST /cocoon/v1/close` on the
//! client's API), end to end with real processes, on both settlement backends: the whole balance
//! comes back without the registry's delay, the ledger holds exactly what was served, and the
//! proxy serves the wallet no more. (Closing without a release, after the delay, is in
//! `ton_money.rs` and the wallet CLI tests.)

use crate::common::*;
use cocoon_money::{price, Amount, ContractStatus, Prices};
use serde_json::Value;

async fn a_client_closes_at_once_with_the_proxys_release(network: ProxyAddrs) {
    let _proxy = Node::start(&proxy_args(&network, &[]));
    let (_worker, _) = worker(&network, &[]);
    let deposit: Amount = 10_000_000_000;
    let (_client, api) = client(&network, &["--deposit", &deposit.to_string()]);
    wait_for_model(&api, "synthetic", 1).await;
    let mut paid = 0;
    for tokens in [3, 5, 7] {
        let usage = ask(&api, &chat(tokens, tokens == 5))
            .await
            .expect("answered");
        paid += price(&usage, 1_000, &Prices::default())
            .unwrap()
            .client_price;
    }

    let response = http()
        .post(format!("{api}/cocoon/v1/close"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let closed: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["released"], paid, "{closed}");
    assert_eq!(closed["outcome"]["outcome"], "client_closed", "{closed}");
    assert_eq!(closed["outcome"]["returned"], deposit - paid, "{closed}");

    // Closed now, not after the delay; the ledger collected exactly what was served.
    let proxy_id = account_of(&network.stats).await;
    let client_id = account_of(&api).await;
    let contract = settlement_of(&network)
        .await
        .client_contract(proxy_id, client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contract.status, ContractStatus::Closed, "{contract:?}");
    assert_eq!((contract.charged, contract.collected), (paid, paid));
    assert_eq!(wallet(&network.stats).await["charged"], paid);
    // The client uses that proxy no more (and the proxy would refuse it).
    assert!(ask(&api, &chat(2, false)).await.is_none());
}

#[tokio::test]
async fn on_the_local_ledger_a_client_closes_at_once_with_the_proxys_release() {
    a_client_closes_at_once_with_the_proxys_release(proxy_addrs(&[])).await;
}

#[tokio::test]
async fn on_ton_a_client_closes_at_once_with_the_proxys_release() {
    let Some(network) = proxy_addrs_on_ton().await else {
        return;
    };
    a_client_closes_at_once_with_the_proxys_release(network).await;
}
