//! `TonSettlement` against the local TON devnet (`support`): the money flow of one proxy, one
//! client and one worker, settled on the contracts, and refusals mapped back to the rules' errors.

mod support;

use std::time::Duration;

use cocoon_ton::settlement_types::{
    AccountId, Outcome, RuleError, Settlement, SettlementBackend, SettlementError, Voucher,
    VoucherKind,
};
use cocoon_ton::{TonApi, TonBackend, TonSettlement};
use ed25519_dalek::SigningKey;

use support::{advance, devnet, key, test_root, Devnet, TON};

async fn backend(
    devnet: &Devnet,
    root: &cocoon_ton::TonAddress,
    key: &SigningKey,
) -> TonSettlement {
    chain(devnet, root)
        .await
        .with_devnet_faucet(&devnet.url)
        .handle(Some(key))
        .unwrap()
}

/// The devnet's root as a settlement backend, without its faucet.
async fn chain(devnet: &Devnet, root: &cocoon_ton::TonAddress) -> TonBackend {
    let api = TonApi::new(&format!("{}/api/v2", devnet.url), None).unwrap();
    TonBackend::connect_root(api, root.clone())
        .await
        .unwrap()
        .with_poll_interval(Duration::from_millis(50))
}

fn voucher(
    backend: &TonSettlement,
    kind: VoucherKind,
    operator: &AccountId,
    counterparty: &AccountId,
    cumulative: u64,
    seqno: u64,
) -> Voucher {
    let ids = backend.voucher_ids(kind, operator, counterparty).unwrap();
    Voucher {
        kind,
        proxy: ids.proxy,
        counterparty: ids.counterparty,
        cumulative,
        seqno,
        is_final: false,
    }
}

#[tokio::test]
async fn client_paid_equals_worker_earned_plus_commission_and_a_replay_is_voucher_not_newer() {
    let Some(devnet) = devnet() else { return };
    let (registry_owner, operator_key, node_key, client_key, worker_key) =
        (key(40), key(41), key(42), key(43), key(44));
    let root = test_root(&devnet, &registry_owner).await;

    let operator = backend(&devnet, &root, &operator_key).await;
    let client = backend(&devnet, &root, &client_key).await;
    let worker = backend(&devnet, &root, &worker_key).await;
    let operator_id = operator.account_id().unwrap();
    let client_id = client.account_id().unwrap();
    let worker_id = worker.account_id().unwrap();
    let node_id = AccountId::from(&node_key);
    for (who, amount) in [(&operator, 10 * TON), (&client, 10 * TON), (&worker, TON)] {
        who.faucet(amount).await.unwrap();
        assert_eq!(
            who.account(who.account_id().unwrap())
                .await
                .unwrap()
                .balance,
            amount
        );
    }

    // The operator opens its proxy contract and authorizes its node's key.
    operator.open_proxy(2 * TON, operator_id).await.unwrap();
    operator.authorize_proxy_key(node_id).await.unwrap();
    let proxy = operator.proxy_contract(operator_id).await.unwrap().unwrap();
    assert_eq!(
        (proxy.stake, proxy.pool, proxy.voucher_key),
        (2 * TON, 0, node_id)
    );
    assert_eq!(proxy.earlier_voucher_keys, vec![operator_id]);

    // The client opens its channel with the proxy and pays 1 TON with a voucher it signs.
    client.open_client(operator_id, 5 * TON, TON).await.unwrap();
    let pay = voucher(
        &client,
        VoucherKind::ClientPay,
        &operator_id,
        &client_id,
        TON,
        1,
    )
    .sign(&client_key);
    let receipt = operator.submit_charge(pay).await.unwrap();
    assert_eq!(
        receipt.outcome,
        Outcome::Charged {
            collected: TON,
            shortfall: 0
        }
    );

    // The worker claims 0.8 TON with a voucher the node's key signed.
    let earned = 800_000_000;
    let pay_worker = voucher(
        &worker,
        VoucherKind::WorkerPay,
        &operator_id,
        &worker_id,
        earned,
        1,
    )
    .sign(&node_key);
    let worker_before = worker.account(worker_id).await.unwrap().balance;
    let receipt = worker.claim(pay_worker).await.unwrap();
    assert_eq!(receipt.outcome, Outcome::Claimed { paid: earned });
    let worker_after = worker.account(worker_id).await.unwrap().balance;
    // What reached the wallet is the claim less the fees the worker's own message spent.
    assert!(
        worker_after > worker_before + earned - TON / 20,
        "{worker_before} → {worker_after}"
    );

    // The operator withdraws its commission: the whole pool.
    let commission = TON - earned;
    operator.withdraw_commission(commission).await.unwrap();

    // Client paid = worker earned + commission, to the nano-TON; the stake is untouched.
    let channel = client
        .client_contract(operator_id, client_id)
        .await
        .unwrap()
        .unwrap();
    let paid_worker = worker
        .worker_contract(operator_id, worker_id)
        .await
        .unwrap()
        .unwrap();
    let proxy = operator.proxy_contract(operator_id).await.unwrap().unwrap();
    assert_eq!(channel.collected, TON);
    assert_eq!(channel.balance, 4 * TON);
    assert_eq!(paid_worker.paid, earned);
    assert_eq!(proxy.pool, 0);
    assert_eq!(proxy.stake, 2 * TON);
    assert_eq!(channel.collected, paid_worker.paid + commission);

    // A handle without a key reads the same and signs nothing.
    let reader = chain(&devnet, &root).await.connect(None).unwrap();
    assert_eq!(reader.account_id(), None);
    assert_eq!(
        reader
            .client_contract(operator_id, client_id)
            .await
            .unwrap(),
        Some(channel.clone())
    );
    assert!(matches!(
        reader.withdraw_commission(1).await,
        Err(SettlementError::NoSigningKey)
    ));

    // Replays are refused by the contracts, as the rules refuse them.
    let replay = operator.submit_charge(pay).await.unwrap_err();
    assert!(
        matches!(
            replay.rule(),
            Some(RuleError::VoucherNotNewer { applied: 1, got: 1 })
        ),
        "{replay}"
    );
    assert!(replay.is_stale_voucher());
    let replay = worker.claim(pay_worker).await.unwrap_err();
    assert!(
        matches!(replay.rule(), Some(RuleError::VoucherNotNewer { .. })),
        "{replay}"
    );
    // Nothing moved.
    let again = client
        .client_contract(operator_id, client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, channel);

    // More than the pool is refused with the numbers; a forged voucher is a bad signature.
    let error = operator.withdraw_commission(1).await.unwrap_err();
    assert!(
        matches!(
            error.rule(),
            Some(RuleError::InsufficientFunds {
                available: 0,
                needed: 1
            })
        ),
        "{error}"
    );
    let forged = voucher(
        &client,
        VoucherKind::ClientPay,
        &operator_id,
        &client_id,
        2 * TON,
        2,
    )
    .sign(&worker_key);
    let error = operator.submit_charge(forged).await.unwrap_err();
    assert_eq!(error.rule(), Some(&RuleError::BadClientSignature));

    // What has no counterpart on TON is refused as such; the faucet exists only on the devnet.
    let error = operator
        .commit_proxy_state(1, cocoon_ton::settlement_types::Hash32([1; 32]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SettlementError::Unsupported(m) if m.starts_with("not on TON")),
        "{error}"
    );
    let no_faucet = chain(&devnet, &root).await.handle(Some(&key(45))).unwrap();
    assert!(matches!(
        operator.faucet(u64::MAX).await.unwrap_err().rule(),
        Some(RuleError::FaucetGrantTooLarge { .. })
    ));
    assert_eq!(
        no_faucet.faucet(TON).await.unwrap_err().rule(),
        Some(&RuleError::FaucetDisabled)
    );
}

#[tokio::test]
async fn every_operation_settles_on_the_contracts_with_the_rules_refusals() {
    let Some(devnet) = devnet() else { return };
    let (owner_key, operator_key, node_key, client_key, other_client_key) =
        (key(50), key(51), key(52), key(53), key(54));
    let root = test_root(&devnet, &owner_key).await;
    let owner = backend(&devnet, &root, &owner_key).await;
    let operator = backend(&devnet, &root, &operator_key).await;
    let client = backend(&devnet, &root, &client_key).await;
    let other = backend(&devnet, &root, &other_client_key).await;
    let operator_id = operator.account_id().unwrap();
    let client_id = client.account_id().unwrap();
    let other_id = other.account_id().unwrap();
    let node_id = AccountId::from(&node_key);
    for who in [&owner, &operator, &client, &other] {
        who.faucet(20 * TON).await.unwrap();
    }
    let rule = |error: SettlementError| error.rule().cloned();

    // Registry: the owner replaces it; a stale version and a stranger are refused.
    let mut registry = owner.registry().await.unwrap();
    assert_eq!(registry.version, 0);
    assert_eq!(registry.min_proxy_stake, 2 * TON);
    registry.version = 1;
    registry.owner = owner.account_id().unwrap();
    registry.worker_image_hashes = vec![cocoon_ton::settlement_types::Hash32([7; 32])];
    owner.update_registry(registry.clone()).await.unwrap();
    let back = owner.registry().await.unwrap();
    assert_eq!(back.version, 1);
    assert_eq!(back.worker_image_hashes, registry.worker_image_hashes);
    assert_eq!(
        rule(owner.update_registry(registry.clone()).await.unwrap_err()),
        Some(RuleError::RegistryVersionNotNewer { current: 1, got: 1 })
    );
    registry.version = 2;
    assert_eq!(
        rule(client.update_registry(registry).await.unwrap_err()),
        Some(RuleError::NotRegistryOwner)
    );

    // Proxy: stake below the minimum, open, add stake, keys.
    assert_eq!(
        rule(operator.open_proxy(TON, node_id).await.unwrap_err()),
        Some(RuleError::StakeTooLow {
            min: 2 * TON,
            got: TON
        })
    );
    operator.open_proxy(2 * TON, operator_id).await.unwrap();
    assert_eq!(
        rule(operator.open_proxy(2 * TON, operator_id).await.unwrap_err()),
        Some(RuleError::ProxyExists)
    );
    operator.add_proxy_stake(TON).await.unwrap();
    operator.authorize_proxy_key(node_id).await.unwrap();
    assert_eq!(
        rule(operator.authorize_proxy_key(node_id).await.unwrap_err()),
        Some(RuleError::VoucherKeyAlreadyCurrent)
    );
    operator.revoke_proxy_key(operator_id).await.unwrap();
    assert_eq!(
        rule(operator.revoke_proxy_key(operator_id).await.unwrap_err()),
        Some(RuleError::NotAnEarlierVoucherKey)
    );
    let proxy = operator.proxy_contract(operator_id).await.unwrap().unwrap();
    assert_eq!((proxy.stake, proxy.voucher_key), (3 * TON, node_id));
    assert!(proxy.earlier_voucher_keys.is_empty());

    // Channel: open, top up, withdraw above the stake only.
    client.open_client(operator_id, 5 * TON, TON).await.unwrap();
    assert_eq!(
        rule(
            client
                .open_client(operator_id, 5 * TON, TON)
                .await
                .unwrap_err()
        ),
        Some(RuleError::ClientContractExists)
    );
    client.top_up(operator_id, TON).await.unwrap();
    assert_eq!(
        rule(
            client
                .withdraw_client(operator_id, 10 * TON)
                .await
                .unwrap_err()
        ),
        Some(RuleError::WithdrawBelowStake {
            withdrawable: 5 * TON,
            requested: 10 * TON
        })
    );
    client.withdraw_client(operator_id, TON).await.unwrap();

    // A payment, then a close with the proxy's final release: everything else returns at once.
    let pay = voucher(
        &client,
        VoucherKind::ClientPay,
        &operator_id,
        &client_id,
        2 * TON,
        1,
    )
    .sign(&client_key);
    client.submit_charge(pay).await.unwrap();
    let mut ahead = voucher(
        &client,
        VoucherKind::ClientCharge,
        &operator_id,
        &client_id,
        3 * TON,
        2,
    );
    ahead.is_final = true;
    assert_eq!(
        rule(
            client
                .close_client(operator_id, Some(ahead.sign(&node_key)))
                .await
                .unwrap_err()
        ),
        Some(RuleError::ReleaseAheadOfPayment {
            paid: 2 * TON,
            released: 3 * TON
        })
    );
    let mut release = voucher(
        &client,
        VoucherKind::ClientCharge,
        &operator_id,
        &client_id,
        2 * TON,
        2,
    );
    release.is_final = true;
    assert_eq!(
        rule(
            client
                .close_client(operator_id, Some(release.sign(&client_key)))
                .await
                .unwrap_err()
        ),
        Some(RuleError::BadVoucherSignature),
        "a release the proxy's keys did not sign is refused at the proxy"
    );
    let receipt = client
        .close_client(operator_id, Some(release.sign(&node_key)))
        .await
        .unwrap();
    assert_eq!(
        receipt.outcome,
        Outcome::ClientClosed {
            collected: 0,
            returned: 3 * TON
        }
    );

    // Another client closes without a release: the stake waits for the delay.
    other.open_client(operator_id, 3 * TON, TON).await.unwrap();
    let receipt = other.close_client(operator_id, None).await.unwrap();
    let Outcome::ClientCloseStarted {
        returned,
        release_at,
    } = receipt.outcome
    else {
        panic!("{receipt:?}")
    };
    assert_eq!(returned, 2 * TON);
    assert!(matches!(
        rule(other.finish_client_close(operator_id).await.unwrap_err()),
        Some(RuleError::TooEarly { release_at: r, .. }) if r == release_at
    ));
    advance(&devnet, 601).await;
    let receipt = other.finish_client_close(operator_id).await.unwrap();
    assert_eq!(
        receipt.outcome,
        Outcome::ClientClosed {
            collected: 0,
            returned: TON
        }
    );
    let closed = other
        .client_contract(operator_id, other_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        closed.status,
        cocoon_ton::settlement_types::ContractStatus::Closed
    );

    // A wallet that cannot cover the value is refused before sending; one that covers the value
    // but not the fees on top has its message skipped by the wallet: refused all the same.
    let poor = backend(&devnet, &root, &key(58)).await;
    let poor_id = poor.account_id().unwrap();
    let needed = 5 * TON + TON / 20;
    for funds in [TON, needed - TON] {
        poor.faucet(funds).await.unwrap();
        let error = poor
            .open_client(operator_id, 5 * TON, TON)
            .await
            .unwrap_err();
        assert!(
            matches!(rule(error), Some(RuleError::InsufficientFunds { needed: n, .. }) if n == needed)
        );
        assert_eq!(
            poor.client_contract(operator_id, poor_id).await.unwrap(),
            None
        );
    }

    // A plain transfer arrives whole.
    let payee = AccountId::from(&key(55));
    assert_eq!(
        rule(client.transfer(payee, 0).await.unwrap_err()),
        Some(RuleError::ZeroAmount)
    );
    client.transfer(payee, TON).await.unwrap();
    assert_eq!(client.account(payee).await.unwrap().balance, TON);

    // A payment for a channel nobody opened, a claim on a proxy nobody opened, a channel with a
    // proxy nobody opened: refused before anything is sent, as the rules refuse them.
    let stranger = AccountId::from(&key(56));
    let pay = voucher(
        &client,
        VoucherKind::ClientPay,
        &operator_id,
        &stranger,
        TON,
        1,
    );
    let error = client.submit_charge(pay.sign(&key(56))).await.unwrap_err();
    assert!(matches!(
        rule(error),
        Some(RuleError::NoSuchClientContract { .. })
    ));
    let claim = voucher(
        &client,
        VoucherKind::WorkerPay,
        &stranger,
        &client_id,
        TON,
        1,
    );
    let error = client.claim(claim.sign(&key(56))).await.unwrap_err();
    assert!(matches!(rule(error), Some(RuleError::NoSuchProxy { .. })));
    assert_eq!(
        rule(
            client
                .open_client(stranger, 2 * TON, TON)
                .await
                .unwrap_err()
        ),
        Some(RuleError::NoSuchProxy { proxy: stranger })
    );

    // The proxy closes after its delay, returning stake and pool.
    let receipt = operator.start_proxy_close().await.unwrap();
    assert!(matches!(receipt.outcome, Outcome::ProxyCloseStarted { .. }));
    let late = backend(&devnet, &root, &key(57)).await;
    assert_eq!(
        rule(
            late.open_client(operator_id, 2 * TON, TON)
                .await
                .unwrap_err()
        ),
        Some(RuleError::ProxyNotOpen { proxy: operator_id })
    );
    assert!(matches!(
        rule(operator.finish_proxy_close().await.unwrap_err()),
        Some(RuleError::TooEarly { .. })
    ));
    advance(&devnet, 3601).await;
    let receipt = operator.finish_proxy_close().await.unwrap();
    assert_eq!(
        receipt.outcome,
        Outcome::ProxyClosed {
            returned: 3 * TON + 2 * TON
        }
    );
}
