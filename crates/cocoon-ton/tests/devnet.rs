//! The API client, the wallet sender and the contracts' cells against the local TON devnet
//! (`support`).

mod support;

use std::time::Duration;

use cocoon_ton::messages::internal_message;
use cocoon_ton::{
    getters, ChannelMessage, ChannelTerms, GetterError, ListedProxy, ProxyMessage, ProxyTerms,
    RegistryLists, RegistryParams, RootTerms, TonAddress, TonApi, UpdateRegistry, WalletSender,
};
use num_bigint::BigUint;
use tonlib_core::cell::{ArcCell, Cell};
use tonlib_core::message::{CommonMsgInfo, TonMessage, TransferMessage};

use support::{deploy_root, devnet, faucet, key, test_params, TON};

fn transfer(to: &TonAddress, amount: u64) -> ArcCell {
    let mut info = CommonMsgInfo::new_default_internal(to, &BigUint::from(amount));
    if let CommonMsgInfo::InternalMessage(message) = &mut info {
        message.bounce = false;
    }
    TransferMessage::new(info, Cell::default().to_arc())
        .build()
        .unwrap()
        .to_arc()
}

#[tokio::test]
async fn a_wallet_deploys_and_sends_each_message_exactly_once() {
    let Some(devnet) = devnet() else { return };
    let api = TonApi::new(&format!("{}/api/v2", devnet.url), None).unwrap();
    let sender = WalletSender::new(api.clone(), &key(7))
        .unwrap()
        .with_poll_interval(Duration::from_millis(50));
    let payee = WalletSender::new(api.clone(), &key(8)).unwrap();
    let payee = payee.address().clone();

    let fresh = api.account(sender.address()).await.unwrap();
    assert_eq!(fresh.status, "uninitialized");
    assert_eq!(fresh.last_transaction, None);
    faucet(&devnet, sender.address(), 5_000_000_000).await;
    assert_eq!(
        api.account(sender.address()).await.unwrap().balance,
        5_000_000_000
    );

    // The first message deploys the wallet (seqno 0), the second uses seqno 1.
    let first = sender
        .send(&[transfer(&payee, 1_000_000_000)])
        .await
        .unwrap();
    assert_eq!(first.exit_code, Some(0));
    assert_eq!(
        api.account(sender.address()).await.unwrap().status,
        "active"
    );
    sender.send(&[transfer(&payee, 500_000_000)]).await.unwrap();
    // Both arrived, less the payee's storage fee (a nano-TON or so).
    let received = api.account(&payee).await.unwrap().balance;
    assert!(
        (1_499_000_000..=1_500_000_000).contains(&received),
        "{received}"
    );
    let seqno = api
        .run_get_method(sender.address(), "seqno", &[])
        .await
        .unwrap();
    assert_eq!(seqno.int(0).unwrap(), 2);

    // The wallet's history: the faucet's credit and both messages, newest first, pageable.
    let history = api.transactions(sender.address(), 10, None).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[0].id.lt > history[1].id.lt);
    let older = api
        .transactions(sender.address(), 10, Some(&history[1].id))
        .await
        .unwrap();
    assert_eq!(older, history[1..].to_vec());
}

#[tokio::test]
async fn the_devnets_errors_arrive_typed() {
    let Some(devnet) = devnet() else { return };
    let api = TonApi::new(&format!("{}/api/v2", devnet.url), None).unwrap();
    let error = api.send_boc(b"not a bag of cells").await.unwrap_err();
    assert!(
        matches!(&error, cocoon_ton::TonApiError::Api { code: 416, .. }),
        "{error}"
    );
    let nobody = WalletSender::new(api.clone(), &key(9)).unwrap();
    let result = api
        .run_get_method(nobody.address(), "seqno", &[])
        .await
        .unwrap();
    assert_eq!(
        result.exit_code, -13,
        "an undeployed account has no get-methods"
    );
    assert!(TonApi::new("ftp://example", None).is_err());
}

const FEE: u64 = TON / 20;

#[tokio::test]
async fn each_contract_deploys_at_the_address_rust_computes_and_reads_back() {
    let Some(devnet) = devnet() else { return };
    let api = TonApi::new(&format!("{}/api/v2", devnet.url), None).unwrap();
    let owner = WalletSender::new(api.clone(), &key(30))
        .unwrap()
        .with_poll_interval(Duration::from_millis(50));
    faucet(&devnet, owner.address(), 100 * TON).await;
    let wallet = owner.address().clone();

    // Root: deployed by the devnet from the committed code, at the address Rust computes.
    let params = test_params();
    let root = deploy_root(&devnet, &wallet, &params).await;
    let terms = RootTerms {
        owner: wallet.clone(),
        params,
        lists: RegistryLists::default(),
    };
    assert_eq!(terms.deployment().unwrap().address().unwrap(), root);
    let version = getters::call(
        &api,
        &root,
        "registry_version",
        &[],
        getters::registry_version,
    );
    assert_eq!(version.await.unwrap(), 0);

    // The owner replaces the registry; every part reads back.
    let lists = RegistryLists {
        proxy_images: vec![[0xa1; 32]],
        worker_images: vec![[0xb1; 32], [0xb2; 32]],
        models: vec![([0xc1; 32], "qwen3-0.6b".into())],
        proxies: vec![ListedProxy {
            seqno: 1,
            address: wallet.clone(),
            worker_endpoint: "127.0.0.1:9000".into(),
            client_endpoint: "127.0.0.1:8443".into(),
        }],
    };
    let update = UpdateRegistry {
        version: 1,
        owner: wallet.clone(),
        params: RegistryParams {
            price_per_token: 1000,
            ..params
        }
        .cell()
        .unwrap(),
        lists: lists.cell().unwrap(),
    };
    let message = internal_message(&root, FEE, true, update.body().unwrap(), None).unwrap();
    owner.send(&[message]).await.unwrap();
    let read = |method, decode| getters::call(&api, &root, method, &[], decode);
    assert_eq!(
        read("registry_version", getters::registry_version)
            .await
            .unwrap(),
        1
    );
    let back = getters::call(
        &api,
        &root,
        "registry_params",
        &[],
        getters::registry_params,
    );
    assert_eq!(back.await.unwrap().price_per_token, 1000);
    let back = getters::call(&api, &root, "registry_lists", &[], getters::registry_lists);
    assert_eq!(back.await.unwrap(), lists);
    let back = getters::call(&api, &root, "registry_owner", &[], getters::registry_owner);
    assert_eq!(back.await.unwrap(), wallet);
    let image = [getters::int_arg(&[0xb2; 32])];
    let allowed = getters::call(
        &api,
        &root,
        "worker_image_allowed",
        &image,
        getters::allowed,
    );
    assert!(allowed.await.unwrap());

    // Proxy: deployed with its first message, at the computed address.
    let proxy_terms = ProxyTerms {
        owner: wallet.clone(),
        root: root.clone(),
        min_stake: 2 * TON,
        close_delay: 3600,
    };
    let proxy = proxy_terms.deployment().unwrap();
    let proxy_address = proxy.address().unwrap();
    let open = ProxyMessage::Open {
        stake: 2 * TON,
        voucher_key: [0x77; 32],
    };
    let message = internal_message(
        &proxy_address,
        2 * TON + FEE,
        true,
        open.body().unwrap(),
        Some(&proxy),
    )
    .unwrap();
    owner.send(&[message]).await.unwrap();
    assert_eq!(api.account(&proxy_address).await.unwrap().status, "active");
    let state = getters::call(
        &api,
        &proxy_address,
        "proxy_state",
        &[],
        getters::proxy_state,
    );
    let state = state.await.unwrap();
    assert_eq!(
        (state.status, state.stake, state.pool),
        (getters::Status::Open, 2 * TON, 0)
    );
    let back = getters::call(
        &api,
        &proxy_address,
        "proxy_params",
        &[],
        getters::proxy_params,
    );
    let back = back.await.unwrap();
    assert_eq!((back.owner, back.root), (wallet.clone(), root.clone()));
    assert_eq!((back.min_stake, back.close_delay), (2 * TON, 3600));
    let keys = getters::call(
        &api,
        &proxy_address,
        "voucher_keys",
        &[],
        getters::voucher_keys,
    );
    assert_eq!(keys.await.unwrap(), vec![[0x77; 32]]);
    let worker = [getters::int_arg(&[0x55; 32])];
    let paid = getters::call(
        &api,
        &proxy_address,
        "worker_paid",
        &worker,
        getters::worker_paid,
    );
    assert_eq!(paid.await.unwrap(), getters::WorkerPaid::default());

    // Channel: the same.
    let channel_terms = ChannelTerms {
        proxy: proxy_address.clone(),
        owner: wallet.clone(),
        client_key: [0x66; 32],
        min_stake: TON,
        close_delay: 600,
    };
    let channel = channel_terms.deployment().unwrap();
    let channel_address = channel.address().unwrap();
    let open = ChannelMessage::Open {
        amount: 3 * TON,
        stake: TON,
    };
    let message = internal_message(
        &channel_address,
        3 * TON + FEE,
        true,
        open.body().unwrap(),
        Some(&channel),
    )
    .unwrap();
    owner.send(&[message]).await.unwrap();
    let state = getters::call(
        &api,
        &channel_address,
        "channel_state",
        &[],
        getters::channel_state,
    );
    let state = state.await.unwrap();
    assert_eq!(state.status, getters::Status::Open);
    assert_eq!(
        (state.balance, state.stake, state.charged),
        (3 * TON, TON, 0)
    );
    let back = getters::call(
        &api,
        &channel_address,
        "channel_params",
        &[],
        getters::channel_params,
    );
    let back = back.await.unwrap();
    assert_eq!(back.proxy, proxy_address);
    assert_eq!(back.owner, wallet);
    assert_eq!(back.client_key, [0x66; 32]);
    assert_eq!((back.min_stake, back.close_delay), (TON, 600));

    // An address nobody deployed has no get-methods.
    let nowhere = ChannelTerms {
        close_delay: 1,
        ..channel_terms
    };
    let nowhere = nowhere.deployment().unwrap().address().unwrap();
    let state = getters::call(&api, &nowhere, "channel_state", &[], getters::channel_state);
    assert!(matches!(state.await, Err(GetterError::NotDeployed)));
}
