//! The client's check of an answer before it pays: every way a proxy could bill what the receipt
//! does not prove is refused, and a cap below the receipt's charge is paid as charged.

use std::collections::BTreeMap;

use cocoon_money::{price, AccountId, Hash32, Prices};
use cocoon_node::attestation::AttestationArgs;
use cocoon_proto::headers::{
    COST, RECEIPT_PROXY_CERTIFICATE, RECEIPT_RECORD, RECEIPT_WORKER_CERTIFICATE,
};
use cocoon_proto::TokenUsage;
use cocoon_ratls::Identity;
use cocoon_receipt::{unix_now, AnswerRecord, Receipt, WorkerReceipt};
use cocoon_tee::{FakeAttester, Verifier};

use super::*;

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
    Receipt::countersign(WorkerReceipt::sign(record, &worker), &proxy)
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
    let (_, prices) = watch::channel(Arc::new(Prices::default()));
    let ledger =
        Arc::new(cocoon_ledger::LedgerClient::new("http://127.0.0.1:9", wallet.clone()).unwrap());
    Payer::new(wallet, trust, AttestationKind::Fake, prices, ledger, false)
}

#[tokio::test]
async fn the_client_pays_what_the_receipt_proves_or_less_and_nothing_else() {
    let payer = payer().await;
    let proxy = AccountId::from(&proxy_key());
    let honest = receipt(Prices::default(), proxy);
    let charge = honest.answer.charge;
    let check =
        |trailers: &HeaderMap, max_coefficient| payer.check(proxy, trailers, max_coefficient);

    assert_eq!(
        check(&trailers(&honest, charge), COEFFICIENT).unwrap(),
        charge
    );
    // Capped at the reservation: less than proven, paid as charged.
    assert_eq!(
        check(&trailers(&honest, charge - 1), COEFFICIENT).unwrap(),
        charge - 1
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
            "prices not the registry's",
            {
                let dearer = receipt(
                    Prices {
                        price_per_token: Prices::default().price_per_token * 2,
                        ..Prices::default()
                    },
                    proxy,
                );
                let cost = dearer.answer.charge;
                trailers(&dearer, cost)
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
    let payer = payer().await;
    let proxy = AccountId::from(&proxy_key());
    let honest = receipt(Prices::default(), proxy);
    let charge = honest.answer.charge;
    lock(&payer.channels).insert(proxy, Channel::from(100, 4, None));
    payer.settle_answer(proxy, Some(&trailers(&honest, charge)), COEFFICIENT);
    let paid = payer.latest(&proxy).unwrap();
    assert_eq!(
        (paid.voucher.cumulative, paid.voucher.seqno),
        (100 + charge, 5)
    );
    paid.verify(&payer.account).unwrap();
    assert_eq!(paid.voucher.kind, VoucherKind::ClientPay);

    payer.settle_answer(proxy, Some(&trailers(&honest, charge + 1)), COEFFICIENT);
    assert!(payer.stopped(&proxy).unwrap().contains("receipt proves"));
    // Nothing more is signed for that proxy, even for an honest answer.
    payer.settle_answer(proxy, Some(&trailers(&honest, charge)), COEFFICIENT);
    assert_eq!(payer.latest(&proxy), Some(paid));
    assert!(payer.snapshot()["stopped"][proxy.to_string()].is_string());
}
