//! The client's check of an answer before it pays: every way a proxy could bill what the receipt
//! does not prove is refused, and a cap below the receipt's charge is paid as charged.

use std::collections::BTreeMap;

use cocoon_money::{price, AccountId, Amount, Hash32, Prices};
use cocoon_node::attestation::AttestationArgs;
use cocoon_proto::headers::{
    COST, RECEIPT_PROXY_CERTIFICATE, RECEIPT_RECORD, RECEIPT_WORKER_CERTIFICATE,
};
use cocoon_proto::TokenUsage;
use cocoon_ratls::Identity;
use cocoon_receipt::{unix_now, AnswerRecord, Receipt, WorkerReceipt};
use cocoon_tee::{FakeAttester, Verifier};

use super::*;
use crate::stream::receipt_of;

const COEFFICIENT: u32 = 1_500;

fn identity(label: &str, role: &str, attributes: BTreeMap<String, String>) -> Identity {
    Identity::generate(
        &FakeAttester::from_label(label),
        role,
        attributes,
        Duration::from_secs(3_600),
    )
    .unwrap()
}

fn proxy_key() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

/// A countersigned receipt for an answer at `prices`, by a proxy naming `proxy_wallet`.
fn receipt(prices: Prices, proxy_wallet: AccountId) -> Receipt {
    let attributes = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let worker = identity(
        "worker-image",
        "worker",
        attributes(&[("model", "m".into())]),
    );
    let proxy = identity(
        "proxy-image",
        "proxy",
        attributes(&[("wallet", proxy_wallet.to_string())]),
    );
    let usage = TokenUsage {
        prompt_tokens: 12,
        completion_tokens: 7,
        ..TokenUsage::default()
    };
    let record = AnswerRecord {
        request_id: "r".into(),
        issued_at: unix_now(),
        model: "m".into(),
        model_hash: None,
        worker_image_hash: Verifier::new().verify(worker.quote()).unwrap().image_hash,
        request_sha256: Hash32([0; 32]),
        response_sha256: Hash32([0; 32]),
        usage,
        coefficient: COEFFICIENT,
        charge: price(&usage, COEFFICIENT, &prices).unwrap().client_price,
        prices,
    };
    Receipt::countersign(WorkerReceipt::sign(record, &worker), &proxy).unwrap()
}

/// The request the receipts of [`receipt`] are for.
fn sent() -> SentRequest {
    SentRequest {
        id: "r".into(),
        body_sha256: Hash32([0; 32]),
    }
}

/// The trailers a proxy sends: the receipt and the cost it reports.
fn trailers(receipt: &Receipt, cost: Amount) -> HeaderMap {
    let (record, worker, proxy) = receipt.to_wire();
    let mut trailers = HeaderMap::new();
    trailers.insert(RECEIPT_RECORD, record.parse().unwrap());
    trailers.insert(RECEIPT_WORKER_CERTIFICATE, worker.parse().unwrap());
    trailers.insert(RECEIPT_PROXY_CERTIFICATE, proxy.parse().unwrap());
    let cost = json!({ "total_cost": cost }).to_string();
    trailers.insert(COST, cost.parse().unwrap());
    trailers
}

async fn payer() -> Arc<Payer> {
    let (_, prices) = watch::channel(Arc::new(Prices::default()));
    payer_following(prices).await
}

/// A payer following the registry's `prices`.
async fn payer_following(prices: watch::Receiver<Arc<Prices>>) -> Arc<Payer> {
    let args = AttestationArgs {
        tee: AttestationKind::Fake,
        image_label: "client".into(),
        cert_lifetime_secs: 3_600,
        pccs_url: cocoon_tee::tdx::INTEL_PCS_URL.into(),
    };
    let trust = NodeTrust::new(&args, "client", BTreeMap::new())
        .await
        .unwrap();
    let wallet = SigningKey::from_bytes(&[9; 32]);
    let ledger =
        Arc::new(cocoon_ledger::LedgerClient::new("http://127.0.0.1:9", wallet.clone()).unwrap());
    Payer::new(wallet, trust, AttestationKind::Fake, prices, ledger, false)
}

/// A payer whose channel with a proxy stands at 100 paid (statement 4), that proxy, and an
/// honest receipt of it.
async fn paying() -> (Arc<Payer>, AccountId, Receipt) {
    let payer = payer().await;
    let proxy = AccountId::from(&proxy_key());
    let ids = cocoon_money::VoucherIds::accounts(proxy, payer.account);
    lock(&payer.channels).insert(proxy, Channel::from(ids, 100, 4, None));
    (payer, proxy, receipt(Prices::default(), proxy))
}

/// What the client does when an answer ends with `trailers`: read the receipt once, then settle.
fn settle(payer: &Payer, proxy: AccountId, trailers: &HeaderMap) {
    let receipt = receipt_of(trailers);
    payer.settle_answer(
        proxy,
        &sent(),
        Some(trailers),
        receipt.as_ref(),
        COEFFICIENT,
    );
}

/// `honest` with a record changed after both nodes signed it: everything but its signatures
/// checks out.
fn forged(honest: &Receipt) -> Receipt {
    let mut forged = honest.clone();
    forged.answer.response_sha256 = cocoon_money::Hash32([0xee; 32]);
    forged
}

#[tokio::test]
async fn the_client_pays_what_the_receipt_proves_or_less_and_nothing_else() {
    let payer = payer().await;
    let proxy = AccountId::from(&proxy_key());
    let honest = receipt(Prices::default(), proxy);
    let charge = honest.answer.charge;
    let check = |trailers: &HeaderMap, max_coefficient| {
        let receipt = receipt_of(trailers);
        payer
            .check(proxy, &sent(), trailers, receipt.as_ref(), max_coefficient)
            .map(|answer| answer.cost)
    };

    assert_eq!(
        check(&trailers(&honest, charge), COEFFICIENT).unwrap(),
        charge
    );
    // Capped at the reservation: less than proven, paid as charged.
    assert_eq!(
        check(&trailers(&honest, charge - 1), COEFFICIENT).unwrap(),
        charge - 1
    );
    // At prices of the proxy's own (or of a registry version this client has not seen yet):
    // paid no more than the registry's prices make of the same signed usage.
    let dearer = receipt(
        Prices {
            price_per_token: Prices::default().price_per_token * 2,
            ..Prices::default()
        },
        proxy,
    );
    assert_eq!(dearer.answer.charge, 2 * charge);
    assert_eq!(
        check(&trailers(&dearer, dearer.answer.charge), COEFFICIENT).unwrap(),
        charge
    );

    let refused: Vec<(&str, HeaderMap, u32)> = vec![
        (
            "more than proven",
            trailers(&honest, charge + 1),
            COEFFICIENT,
        ),
        (
            "above the request's coefficient",
            trailers(&honest, charge),
            COEFFICIENT - 1,
        ),
        (
            "another proxy's receipt",
            {
                let other = receipt(
                    Prices::default(),
                    AccountId::from(&SigningKey::from_bytes(&[4; 32])),
                );
                let cost = other.answer.charge;
                trailers(&other, cost)
            },
            COEFFICIENT,
        ),
        (
            "the receipt of another request (a bigger answer's, say)",
            {
                let mut other = honest.clone();
                other.answer.request_id = "another request".into();
                trailers(&other, charge)
            },
            COEFFICIENT,
        ),
        (
            "the receipt of a request that changed on the way to the worker",
            {
                let mut other = honest.clone();
                other.answer.request_sha256 = Hash32([1; 32]);
                trailers(&other, charge)
            },
            COEFFICIENT,
        ),
        (
            "a receipt whose charge is not its usage's price",
            {
                let mut forged = honest.clone();
                forged.answer.charge += 1;
                trailers(&forged, charge + 1)
            },
            COEFFICIENT,
        ),
        (
            "no receipt",
            {
                let mut bare = trailers(&honest, charge);
                bare.remove(RECEIPT_RECORD);
                bare
            },
            COEFFICIENT,
        ),
        (
            "no cost",
            {
                let mut bare = trailers(&honest, charge);
                bare.remove(COST);
                bare
            },
            COEFFICIENT,
        ),
    ];
    for (case, trailers, max_coefficient) in refused {
        assert!(
            check(&trailers, max_coefficient).is_err(),
            "paid for {case}"
        );
    }
}

#[tokio::test]
async fn an_unverifiable_charge_stops_all_payment_to_that_proxy() {
    let (payer, proxy, honest) = paying().await;
    let charge = honest.answer.charge;
    settle(&payer, proxy, &trailers(&honest, charge));
    let paid = payer.latest(&proxy).unwrap();
    assert_eq!(
        (paid.voucher.cumulative, paid.voucher.seqno),
        (100 + charge, 5)
    );
    paid.verify(&payer.account).unwrap();
    assert_eq!(paid.voucher.kind, VoucherKind::ClientPay);

    settle(&payer, proxy, &trailers(&honest, charge + 1));
    assert!(payer.stopped(&proxy).unwrap().contains("receipt proves"));
    // Nothing more is signed for that proxy, even for an honest answer.
    settle(&payer, proxy, &trailers(&honest, charge));
    assert_eq!(payer.latest(&proxy), Some(paid));
    assert!(payer.snapshot()["stopped"][proxy.to_string()].is_string());
}

#[tokio::test]
async fn a_batch_with_one_forged_receipt_pays_exactly_the_others() {
    let (payer, proxy, honest) = paying().await;
    let charge = honest.answer.charge;
    // Five answers end within one payment window; the third's receipt is forged.
    for (index, receipt) in [&honest, &honest, &forged(&honest), &honest, &honest]
        .into_iter()
        .enumerate()
    {
        // Each answer's cost differs, so the total says which were paid.
        let cost = charge - index as Amount;
        settle(&payer, proxy, &trailers(receipt, cost));
    }
    assert!(
        payer.stopped(&proxy).is_none(),
        "signatures are checked in the batch"
    );

    let paid = payer.latest(&proxy).unwrap();
    let others = charge + (charge - 1) + (charge - 3) + (charge - 4);
    assert_eq!(
        (paid.voucher.cumulative, paid.voucher.seqno),
        (100 + others, 4 + 4)
    );
    paid.verify(&payer.account).unwrap();
    let why = payer.stopped(&proxy).unwrap();
    assert!(why.contains("worker signature"), "{why}");
    // Nothing more is paid to that proxy.
    settle(&payer, proxy, &trailers(&honest, charge));
    assert_eq!(payer.latest(&proxy), Some(paid));
}

#[tokio::test]
async fn no_voucher_covers_an_answer_before_its_receipt_is_verified() {
    let (payer, proxy, honest) = paying().await;
    let charge = honest.answer.charge;
    settle(&payer, proxy, &trailers(&honest, charge));
    // A voucher signed while the answer waits in the queue (not due yet) leaves it out.
    let not_due = |_: Option<Instant>| false;
    let early = payer.sign_pending(proxy, not_due, |channel| {
        (channel.latest, channel.cumulative, channel.unverified.len())
    });
    assert_eq!(early, Some((None, 100, 1)));

    let first = payer.latest(&proxy).unwrap();
    assert_eq!(first.voucher.cumulative, 100 + charge);
    // The proxy now sends answers whose receipts' signatures fail: a forged worker signature,
    // a forged proxy signature, and a record both signatures no longer cover.
    let flipped = |signature: &str| {
        let mut bytes = hex::decode(signature).unwrap();
        bytes[0] ^= 1;
        hex::encode(bytes)
    };
    let mut bad_worker = honest.clone();
    bad_worker.worker_signature = flipped(&honest.worker_signature);
    let mut bad_proxy = honest.clone();
    bad_proxy.proxy_signature = flipped(&honest.proxy_signature);
    for receipt in [bad_worker, bad_proxy, forged(&honest)] {
        settle(&payer, proxy, &trailers(&receipt, charge));
    }
    for _ in 0..2 {
        let voucher = payer.latest(&proxy).unwrap();
        assert_eq!(voucher, first, "a voucher covers an unverified answer");
    }
    assert!(payer.stopped(&proxy).is_some());
    assert_eq!(
        payer.snapshot()["channels"][proxy.to_string()]["unverified"],
        0
    );
}

#[tokio::test]
async fn a_request_does_not_go_to_a_proxy_whose_queued_receipt_fails() {
    let (payer, proxy, honest) = paying().await;
    let charge = honest.answer.charge;
    settle(&payer, proxy, &trailers(&honest, charge));
    settle(&payer, proxy, &trailers(&forged(&honest), charge));
    // The next request's payment checks the queue, finds the forgery and sends nothing there.
    let refused = payer.payment_for(proxy).unwrap_err();
    assert!(matches!(refused, PaymentError::Stopped(_)), "{refused}");
    // The honest answer's payment waits for the next flush.
    let channel = lock(&payer.channels)
        .get(&proxy)
        .map(|c| (c.unsent, c.latest));
    let (unsent, latest) = channel.unwrap();
    assert!(unsent);
    assert_eq!(latest.unwrap().voucher.cumulative, 100 + charge);
}

#[tokio::test]
async fn an_answer_priced_just_before_a_registry_price_change_is_paid() {
    let (registry, prices) = watch::channel(Arc::new(Prices::default()));
    let payer = payer_following(prices).await;
    let proxy = AccountId::from(&proxy_key());
    let before = receipt(Prices::default(), proxy);
    // The registry changes its prices while the answer is under way; nothing looked in between.
    let dearer = Prices {
        price_per_token: Prices::default().price_per_token * 2,
        ..Prices::default()
    };
    registry.send_replace(Arc::new(dearer.clone()));
    let check = |receipt: &Receipt| {
        let trailers = trailers(receipt, receipt.answer.charge);
        payer
            .check(
                proxy,
                &sent(),
                &trailers,
                receipt_of(&trailers).as_ref(),
                COEFFICIENT,
            )
            .map(|answer| answer.cost)
    };
    assert_eq!(check(&before).unwrap(), before.answer.charge);
    let after = receipt(dearer, proxy);
    assert_eq!(check(&after).unwrap(), after.answer.charge);
}

#[tokio::test]
async fn each_request_carries_the_newest_voucher() {
    let (payer, proxy, honest) = paying().await;
    let charge = honest.answer.charge;
    let sent = |payer: &Payer| -> SignedVoucher {
        let value = payer.payment_for(proxy).unwrap().unwrap();
        serde_json::from_slice(value.as_bytes()).unwrap()
    };
    settle(&payer, proxy, &trailers(&honest, charge));
    let first = payer.latest(&proxy).unwrap();
    assert_eq!(sent(&payer), first);
    assert_eq!(sent(&payer), first, "the same voucher again");
    settle(&payer, proxy, &trailers(&honest, charge));
    let second = payer.latest(&proxy).unwrap();
    assert_eq!(second.voucher.cumulative, first.voucher.cumulative + charge);
    assert_eq!(sent(&payer), second);
}
