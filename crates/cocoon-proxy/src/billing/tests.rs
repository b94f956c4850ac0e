//! Billing's tests: its pure parts, and reservations, charges and settlement against a ledger
//! running in this process.

use super::*;
use crate::routing::Routing;
use cocoon_ledger::{LedgerClient, LocalLedger};
use cocoon_money::pricing::COEFFICIENT_ONE;
use cocoon_money::{Voucher, VoucherIds};
use cocoon_proto::ErrorKind;
use tokio_util::sync::CancellationToken;

#[test]
fn reservation_inputs_come_from_the_body_and_the_routing() {
    // The completion tokens come from `request_check` (the rule every hop applies).
    assert_eq!(prompt_tokens_bound(101), 51);
    assert_eq!(reservation_coefficient(u32::MAX, Some(1_500)), 1_500);
    assert_eq!(reservation_coefficient(800, Some(1_500)), 800);
    assert_eq!(reservation_coefficient(u32::MAX, None), COEFFICIENT_ONE);
}

#[test]
fn answer_cost_splits_the_charged_price_exactly() {
    let prices = Prices::default();
    let usage = TokenUsage {
        prompt_tokens: 7,
        cached_tokens: 3,
        completion_tokens: 5,
        reasoning_tokens: 0,
    };
    let (cost, answer) = answer_cost(&usage, 1_500, &prices).unwrap();
    assert_eq!(answer.total_cost, cost.client_price);
    assert_eq!(
        answer.prompt_total_cost + answer.completion_total_cost,
        answer.total_cost
    );
    // 4 prompt tokens at 1.0 plus 3 cached at 0.1, all × 1.5 = 6.45 → 6 adjusted tokens.
    assert_eq!(answer.prompt_total_cost, 6 * prices.price_per_token);
    let json = serde_json::to_value(answer).unwrap();
    assert_eq!(json["total_cost"], cost.client_price);
    assert!(json.get("completion_total_cost").is_some());
}

/// A ledger (faucet on) in this process, and the billing of a proxy on it that holds its
/// operator's key (`proxy_key`) and makes a voucher key of its own.
async fn ledger_and_billing(
    dir: &std::path::Path,
    proxy_key: SigningKey,
) -> (cocoon_ledger::LedgerHandle, Arc<Billing>) {
    let config = cocoon_ledger::LedgerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.join("ledger.sqlite3"),
        faucet: true,
        owner: Some(AccountId([0x11; 32])),
        ..cocoon_ledger::LedgerConfig::default()
    };
    let ledger = cocoon_ledger::spawn(&config, Arc::new(cocoon_proto::clock::SystemClock))
        .await
        .unwrap();
    let billing = reopen(&ledger, dir, Operator::Key(proxy_key)).await;
    (ledger, billing)
}

/// The billing of a proxy (re)started on the database in `dir` with a fresh voucher key.
async fn reopen(
    ledger: &cocoon_ledger::LedgerHandle,
    dir: &std::path::Path,
    operator: Operator,
) -> Arc<Billing> {
    Billing::open(
        billing_config(&ledger.url(), &dir.join("proxy")),
        operator,
        SigningKey::generate(&mut rand::rngs::OsRng),
        &registry_of(ledger).await,
        &LocalLedger::new(&ledger.url()),
    )
    .await
    .unwrap()
}

async fn registry_of(ledger: &cocoon_ledger::LedgerHandle) -> RegistryWatch {
    let trust = cocoon_node::registry_trust::RegistryTrust::Unverified;
    RegistryWatch::start(
        &LocalLedger::new(&ledger.url()),
        trust,
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

fn billing_config(ledger: &str, data_dir: &std::path::Path) -> BillingConfig {
    BillingConfig {
        ledger: ledger.to_owned(),
        data_dir: data_dir.to_owned(),
        stake: 0,
        faucet: 100_000_000_000,
        settle_interval: Duration::from_millis(100),
        withdraw_threshold: 0,
        max_unpaid: 0,
        test_only_overcharge: false,
        test_only_worker_fee: None,
        reserve_max_tokens: 16,
        bad_worker_vouchers: None,
    }
}

#[tokio::test]
async fn reserves_refuses_charges_and_releases_against_the_ledger_balance() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, billing) = ledger_and_billing(dir.path(), SigningKey::from_bytes(&[7; 32])).await;
    let client_key = SigningKey::from_bytes(&[8; 32]);
    let client = AccountId::from(&client_key);
    // No contract yet: refused.
    let refused = billing.reserve(client, 10, 10, 1_000).await.err().unwrap();
    assert!(
        matches!(refused, BillingError::NoContract { .. }),
        "{refused}"
    );
    // 1.0 units = 1_000_000 tokens at the default 1000 nano-units per token.
    let (_, wallet) = open_client(&ledger, &billing, 8, 1_000_000_000, 1_000_000_000).await;

    let too_much = billing
        .reserve(client, 0, 1_000_001, 1_000)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            too_much,
            BillingError::Insufficient {
                available: 1_000_000_000,
                ..
            }
        ),
        "{too_much}"
    );
    let held = billing.reserve(client, 0, 600_000, 1_000).await.unwrap();
    assert_eq!(held.amount(), 600_000_000);
    // The hold counts against the next request, until it is released.
    assert!(billing.reserve(client, 0, 600_000, 1_000).await.is_err());
    drop(held);
    let held = billing.reserve(client, 0, 600_000, 1_000).await.unwrap();
    let usage = TokenUsage {
        prompt_tokens: 100,
        completion_tokens: 400_000,
        ..TokenUsage::default()
    };
    let worker = AccountId([9; 32]);
    let (cost, uncapped, ()) = billing
        .charge(held, worker, &usage, 1_000, |_, _| ())
        .await
        .unwrap();
    assert_eq!(uncapped, None);
    assert_eq!(cost.total_cost, 400_100_000);
    assert_eq!(cost.prompt_total_cost, 100_000);
    // Charged but not collected yet: still owed out of the balance.
    assert!(billing.reserve(client, 0, 600_000, 1_000).await.is_err());
    let statement = billing.client_statement(client).unwrap();
    assert_eq!(statement.charged, 400_100_000);
    assert_eq!(statement.reserved, 0);

    // Without the client's payment a settlement round collects nothing: the proxy holds no
    // claim on the client's money of its own.
    billing.settle(&Routing::default()).await;
    let unpaid = wallet
        .client_contract(billing.account(), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((unpaid.charged, unpaid.balance), (0, 1_000_000_000));
    // A payment signed by anyone else is refused; the client's own is kept and applied.
    let forged = Voucher::client_pay(
        &SigningKey::from_bytes(&[9; 32]),
        VoucherIds::accounts(
            billing.account(),
            AccountId::from(&SigningKey::from_bytes(&[9; 32])),
        ),
        1,
        1,
    );
    let mut foreign = forged;
    foreign.voucher.counterparty = client;
    assert!(matches!(
        billing.accept_payment(client, foreign),
        Err(BillingError::BadPayment(_))
    ));
    let paid = Voucher::client_pay(
        &client_key,
        VoucherIds::accounts(billing.account(), AccountId::from(&client_key)),
        400_100_000,
        1,
    );
    billing.accept_payment(client, paid).unwrap();
    billing.settle(&Routing::default()).await;
    let contract = wallet
        .client_contract(billing.account(), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contract.charged, 400_100_000);
    assert_eq!(contract.balance, 1_000_000_000 - 400_100_000);
    let snapshot = billing.snapshot();
    assert_eq!(snapshot["earned"], 400_100 * 800, "{snapshot}");
    ledger.shutdown().await.unwrap();
}

#[tokio::test]
async fn work_done_while_a_charge_is_written_sees_its_price_and_the_answer_still_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, billing) = ledger_and_billing(dir.path(), SigningKey::from_bytes(&[7; 32])).await;
    let client = AccountId::from(&SigningKey::from_bytes(&[8; 32]));
    open_client(&ledger, &billing, 8, 1_000_000_000, 1_000_000_000).await;
    let held = billing.reserve(client, 0, 1_000, 1_000).await.unwrap();
    let usage = TokenUsage {
        prompt_tokens: 10,
        completion_tokens: 20,
        ..TokenUsage::default()
    };
    let (cost, uncapped, seen) = billing
        .charge(held, AccountId([9; 32]), &usage, 1_000, |cost, uncapped| {
            // Meanwhile the reservation is still held, so the answer counts against the
            // client's balance whether or not its charge is on disk yet.
            let statement = billing.client_statement(client).unwrap();
            (cost.total_cost, uncapped, statement.reserved)
        })
        .await
        .unwrap();
    assert_eq!(seen, (30_000, None, 1_000_000));
    assert_eq!((cost.total_cost, uncapped), (30_000, None));
    // Returned: on disk, counted in the client's total, and the reservation released.
    let statement = billing.client_statement(client).unwrap();
    assert_eq!((statement.charged, statement.reserved), (30_000, 0));
    ledger.shutdown().await.unwrap();
}

/// Charges `client` one small answer served by `worker`.
async fn charge_one_answer(billing: &Arc<Billing>, client: AccountId, worker: AccountId) {
    let held = billing.reserve(client, 0, 10, 1_000).await.unwrap();
    let usage = TokenUsage {
        prompt_tokens: 1,
        completion_tokens: 1,
        ..TokenUsage::default()
    };
    billing
        .charge(held, worker, &usage, 1_000, |_, _| ())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restarted_proxy_vouches_on_from_its_database_and_both_keys_vouchers_pay() {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::from_bytes(&[7; 32]);
    let (ledger, billing) = ledger_and_billing(dir.path(), operator.clone()).await;
    let (client, _) = open_client(&ledger, &billing, 8, 2_000_000_000, 1_000_000_000).await;
    let worker_key = SigningKey::from_bytes(&[9; 32]);
    let worker = AccountId::from(&worker_key);
    charge_one_answer(&billing, client, worker).await;
    let before = billing.worker_statements().unwrap().remove(0);
    let first_key = billing.signer.voucher_key();
    drop(billing);

    // The restart makes a new key, which the operator's key authorizes; the old one stays valid.
    let billing = reopen(&ledger, dir.path(), Operator::Key(operator)).await;
    assert_ne!(billing.signer.voucher_key(), first_key);
    charge_one_answer(&billing, client, worker).await;
    let after = billing.worker_statements().unwrap().remove(0);
    assert!(after.voucher.voucher.seqno > before.voucher.voucher.seqno);
    assert_eq!(after.earned, 2 * before.earned);

    let worker_wallet = LedgerClient::new(&ledger.url(), worker_key).unwrap();
    let paid = |receipt: cocoon_money::Receipt| match receipt.outcome {
        cocoon_money::Outcome::Claimed { paid } => paid,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        paid(worker_wallet.claim(before.voucher).await.unwrap()),
        before.earned
    );
    assert_eq!(
        paid(worker_wallet.claim(after.voucher).await.unwrap()),
        after.earned - before.earned
    );
    // The client pays both answers (its own signed voucher), collected once each.
    let charged = billing.client_statement(client).unwrap().charged;
    let payment = Voucher::client_pay(
        &SigningKey::from_bytes(&[8; 32]),
        VoucherIds::accounts(
            billing.account(),
            AccountId::from(&SigningKey::from_bytes(&[8; 32])),
        ),
        charged,
        1,
    );
    billing.accept_payment(client, payment).unwrap();
    billing.settle(&Routing::default()).await;
    let contract = worker_wallet
        .client_contract(billing.account(), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        contract.charged,
        billing.client_statement(client).unwrap().charged
    );
    ledger.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_the_operators_key_a_proxy_waits_until_its_key_is_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let operator = SigningKey::from_bytes(&[7; 32]);
    let (ledger, billing) = ledger_and_billing(dir.path(), operator.clone()).await;
    let account = billing.account();
    drop(billing);

    let voucher_key = SigningKey::from_bytes(&[12; 32]);
    let config = billing_config(&ledger.url(), &dir.path().join("proxy"));
    let registry = registry_of(&ledger).await;
    let backend = LocalLedger::new(&ledger.url());
    let opening = Billing::open(
        config,
        Operator::Account(account),
        voucher_key.clone(),
        &registry,
        &backend,
    );
    tokio::pin!(opening);
    // Not authorized: still waiting after a few looks at the ledger.
    let waited = tokio::time::timeout(3 * operator::AUTHORIZATION_POLL, &mut opening).await;
    assert!(waited.is_err(), "started without an authorized key");

    let wallet = LedgerClient::new(&ledger.url(), operator).unwrap();
    wallet
        .authorize_proxy_key(AccountId::from(&voucher_key))
        .await
        .unwrap();
    let billing = opening.await.unwrap();
    assert_eq!(billing.account(), account);
    assert_eq!(billing.snapshot()["acts_for_operator"], false);
    ledger.shutdown().await.unwrap();
}

#[test]
fn refusals_are_payment_errors_and_outages_are_not() {
    let refused = BillingError::Insufficient {
        available: 1,
        needed: 2,
    };
    assert_eq!(refused.kind(), ErrorKind::InsufficientQuota);
    assert_eq!(refused.kind().http_status(), 429);
    assert_eq!(BillingError::NoWallet.kind(), ErrorKind::InsufficientQuota);
    let outage = BillingError::Ledger(SettlementError::Unavailable("down".into()));
    assert_eq!(outage.kind(), ErrorKind::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_wait_on_the_databases_read_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, billing) = ledger_and_billing(dir.path(), SigningKey::from_bytes(&[7; 32])).await;
    let (client, _) = open_client(&ledger, &billing, 8, 1_000_000_000, 1_000_000_000).await;
    // Settlement or statistics reading the database (a slow disk, many rows) holds its
    // connection meanwhile.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let billing = billing.clone();
        std::thread::spawn(move || {
            let _store = lock(&billing.store);
            held_tx.send(()).unwrap();
            // Whether the request below finished while the connection was held.
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok()
        })
    };
    held_rx.recv().unwrap();
    let usage = TokenUsage {
        prompt_tokens: 10,
        completion_tokens: 90,
        ..TokenUsage::default()
    };
    for _ in 0..2 {
        let held = billing.reserve(client, 10, 100, 1_000).await.unwrap();
        billing
            .charge(held, AccountId([9; 32]), &usage, 1_000, |_, _| ())
            .await
            .unwrap();
    }
    // Both charges count against the next reservation and in the client's statement.
    assert_eq!(billing.client_statement(client).unwrap().charged, 200_000);
    let _ = done_tx.send(());
    assert!(
        holder.join().unwrap(),
        "a request waited for the database's read connection"
    );
    drop(billing);
    // The totals reservations use are the committed ones, after a restart too.
    let billing = reopen(
        &ledger,
        dir.path(),
        Operator::Key(SigningKey::from_bytes(&[7; 32])),
    )
    .await;
    assert_eq!(billing.client_statement(client).unwrap().charged, 200_000);
}

/// Opens a client contract (`deposit`, `stake`) with `billing`'s proxy for the wallet of key
/// `seed`, funded from the faucet; returns the client's account and its ledger client.
async fn open_client(
    ledger: &cocoon_ledger::LedgerHandle,
    billing: &Billing,
    seed: u8,
    deposit: Amount,
    stake: Amount,
) -> (AccountId, LedgerClient) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let client = AccountId::from(&key);
    let wallet = LedgerClient::new(&ledger.url(), key).unwrap();
    wallet.faucet(deposit).await.unwrap();
    wallet
        .open_client(billing.account(), deposit, stake)
        .await
        .unwrap();
    (client, wallet)
}

#[tokio::test]
async fn without_the_ledger_a_known_client_is_served_within_its_stake_and_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, billing) = ledger_and_billing(dir.path(), SigningKey::from_bytes(&[7; 32])).await;
    // 5.0 units deposited each, 1.0 of them the stake (1_000_000 tokens at 1000 nano-units).
    let (client, _) = open_client(&ledger, &billing, 8, 5_000_000_000, 1_000_000_000).await;
    let (other, _) = open_client(&ledger, &billing, 9, 5_000_000_000, 1_000_000_000).await;
    drop(billing.reserve(client, 0, 10, 1_000).await.unwrap());
    ledger.shutdown().await.unwrap();

    // Beyond the freshness of the cached reading, the ledger is asked, and is gone.
    tokio::time::sleep(CONTRACT_FRESHNESS).await;
    let held = billing.reserve(client, 0, 600_000, 1_000).await.unwrap();
    let beyond = billing
        .reserve(client, 0, 600_000, 1_000)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            beyond,
            BillingError::OutageBound {
                available: 400_000_000,
                needed: 600_000_000
            }
        ),
        "{beyond}"
    );
    assert_eq!(beyond.kind(), ErrorKind::Unavailable);
    let usage = TokenUsage {
        completion_tokens: 300_000,
        ..TokenUsage::default()
    };
    billing
        .charge(held, AccountId([3; 32]), &usage, 1_000, |_, _| ())
        .await
        .unwrap();
    // The charge counts against the stake until the ledger collects it.
    assert!(billing.reserve(client, 0, 700_001, 1_000).await.is_err());
    drop(billing.reserve(client, 0, 700_000, 1_000).await.unwrap());
    // A client never read before cannot be judged at all.
    let unknown = billing.reserve(other, 0, 10, 1_000).await.err().unwrap();
    assert!(
        matches!(
            unknown,
            BillingError::Ledger(SettlementError::Unavailable(_))
        ),
        "{unknown}"
    );
    assert!(billing.snapshot()["ledger_unreachable_for_ms"].is_u64());
}

#[tokio::test]
async fn a_client_owing_more_than_the_bound_unpaid_is_refused_until_it_pays() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, billing) = ledger_and_billing(dir.path(), SigningKey::from_bytes(&[7; 32])).await;
    let client_key = SigningKey::from_bytes(&[8; 32]);
    let (client, _) = open_client(&ledger, &billing, 8, 2_000_000_000, 1_000_000_000).await;
    let usage = TokenUsage {
        prompt_tokens: 1,
        completion_tokens: 1,
        ..TokenUsage::default()
    };
    // The default bound is the contract's stake (1.0 unit): one cheap answer is within it.
    let held = billing.reserve(client, 0, 10, 1_000).await.unwrap();
    billing
        .charge(held, AccountId([9; 32]), &usage, 1_000, |_, _| ())
        .await
        .unwrap();
    let held = billing.reserve(client, 0, 10, 1_000).await.unwrap();
    // An answer above the stake, unpaid: the next request is refused before any worker.
    let big = TokenUsage {
        completion_tokens: 1_000_001,
        ..usage
    };
    drop(held);
    let held = billing.reserve(client, 0, 1_000_001, 1_000).await.unwrap();
    billing
        .charge(held, AccountId([9; 32]), &big, 1_000, |_, _| ())
        .await
        .unwrap();
    let refused = billing.reserve(client, 0, 10, 1_000).await.err().unwrap();
    assert!(
        matches!(refused, BillingError::PaymentOverdue { .. }),
        "{refused}"
    );
    assert_eq!(refused.kind(), cocoon_proto::ErrorKind::InsufficientQuota);
    // The client's payment for everything clears it.
    let charged = billing.client_statement(client).unwrap().charged;
    let paid = Voucher::client_pay(
        &client_key,
        VoucherIds::accounts(billing.account(), AccountId::from(&client_key)),
        charged,
        2,
    );
    billing.accept_payment(client, paid).unwrap();
    billing.reserve(client, 0, 10, 1_000).await.unwrap();
    // An older payment changes nothing; a newer one that pays less in total is refused.
    billing
        .accept_payment(
            client,
            Voucher::client_pay(
                &client_key,
                VoucherIds::accounts(billing.account(), AccountId::from(&client_key)),
                1,
                1,
            ),
        )
        .unwrap();
    assert!(billing
        .accept_payment(
            client,
            Voucher::client_pay(
                &client_key,
                VoucherIds::accounts(billing.account(), AccountId::from(&client_key)),
                1,
                3
            )
        )
        .is_err());
    assert_eq!(
        billing.client_statement(client).unwrap().voucher,
        Some(paid)
    );
    ledger.shutdown().await.unwrap();
}

#[test]
fn a_charge_above_the_reservation_is_capped_and_the_worker_paid_in_proportion() {
    let usage = TokenUsage {
        prompt_tokens: 100,
        completion_tokens: 900,
        ..TokenUsage::default()
    };
    let (mut cost, mut answer) = answer_cost(&usage, 1_000, &Prices::default()).unwrap();
    assert_eq!(cap_at_reservation(&mut cost, &mut answer, 2_000_000), None);
    let full = cost.client_price;
    assert_eq!(
        cap_at_reservation(&mut cost, &mut answer, full / 4),
        Some(full)
    );
    assert_eq!((cost.client_price, answer.total_cost), (full / 4, full / 4));
    assert_eq!(
        answer.prompt_total_cost + answer.completion_total_cost,
        full / 4
    );
    assert_eq!(cost.worker_pay, 800 * 1_000 / 4);
    assert!(cost.worker_pay <= cost.client_price);
}

#[tokio::test]
async fn a_release_waits_for_answers_and_payment_and_then_the_client_is_served_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, billing) = ledger_and_billing(dir.path(), SigningKey::from_bytes(&[7; 32])).await;
    let client_key = SigningKey::from_bytes(&[8; 32]);
    let client = AccountId::from(&client_key);
    let (_, wallet) = open_client(&ledger, &billing, 8, 1_000_000_000, 1_000_000_000).await;
    let held = billing.reserve(client, 0, 1_000, 1_000).await.unwrap();
    // An answer in flight: no release yet, but no new request either from the first ask on.
    let busy = billing.release(client).await.err().unwrap();
    assert!(matches!(busy, BillingError::ReleaseNotReady(_)), "{busy}");
    assert!(matches!(
        billing.reserve(client, 0, 1, 1_000).await.err().unwrap(),
        BillingError::Released
    ));
    let usage = TokenUsage {
        prompt_tokens: 10,
        completion_tokens: 90,
        ..TokenUsage::default()
    };
    let (cost, _, ()) = billing
        .charge(held, AccountId([9; 32]), &usage, 1_000, |_, _| ())
        .await
        .unwrap();
    // Served but not paid: no release (its close would take back what was not paid).
    let unpaid = billing.release(client).await.err().unwrap();
    assert!(
        unpaid.to_string().contains("send the payment first"),
        "{unpaid}"
    );
    let ids = VoucherIds::accounts(billing.account(), client);
    let paid = Voucher::client_pay(&client_key, ids, cost.total_cost, 1);
    billing.accept_payment(client, paid).unwrap();
    // Paid: the proxy applies the payment itself, then releases exactly what was charged.
    let release = billing.release(client).await.unwrap();
    assert_eq!(
        release.voucher.kind,
        cocoon_money::VoucherKind::ClientCharge
    );
    assert!(release.voucher.is_final);
    assert_eq!(release.voucher.ids(), ids);
    assert_eq!(release.voucher.cumulative, cost.total_cost);
    let contract = wallet
        .client_contract(billing.account(), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contract.charged, cost.total_cost);
    // The ledger takes it: the client's whole balance comes back at once.
    let closed = wallet
        .close_client(billing.account(), Some(release))
        .await
        .unwrap();
    assert_eq!(
        closed.outcome,
        cocoon_money::Outcome::ClientClosed {
            collected: 0,
            returned: 1_000_000_000 - cost.total_cost,
        }
    );
    // A restarted proxy still serves the released client nothing.
    drop(billing);
    let billing = reopen(
        &ledger,
        dir.path(),
        Operator::Key(SigningKey::from_bytes(&[7; 32])),
    )
    .await;
    assert!(matches!(
        billing.reserve(client, 0, 1, 1_000).await.err().unwrap(),
        BillingError::Released
    ));
    ledger.shutdown().await.unwrap();
}
