//! Receipts, vouchers, ledger transactions and the ledger's rules under hostile numbers.

use std::sync::OnceLock;
use std::time::Duration;

use cocoon_money::{
    AccountId, Context, Hash32, LedgerState, Prices, Registry, SignedTransaction, SignedVoucher,
    Transaction, TransactionBody, Voucher, VoucherIds, VoucherSigner,
};
use cocoon_proto::TokenUsage;
use cocoon_ratls::Identity;
use cocoon_receipt::{AnswerRecord, Expectations, Receipt, WorkerReceipt};
use cocoon_tee::{AttestationKind, FakeAttester, Verifier};
use ed25519_dalek::SigningKey;
use serde_json::Value;

use crate::{Format, Target};

struct Nodes {
    worker: Identity,
    proxy: Identity,
}

fn nodes() -> &'static Nodes {
    static NODES: OnceLock<Nodes> = OnceLock::new();
    NODES.get_or_init(|| {
        let make = |label: &str, role: &str, attrs: &[(&str, &str)]| {
            let attributes = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Identity::generate(
                &FakeAttester::from_label(label),
                role,
                attributes,
                Duration::from_secs(3600),
            )
            .expect("a fake identity")
        };
        Nodes {
            worker: make("worker", "worker", &[("model", "smol")]),
            proxy: make("proxy", "proxy", &[]),
        }
    })
}

fn record() -> AnswerRecord {
    let nodes = nodes();
    let usage = TokenUsage {
        prompt_tokens: 12,
        completion_tokens: 7,
        ..TokenUsage::default()
    };
    let prices = Prices::default();
    AnswerRecord {
        request_id: "req-1".into(),
        issued_at: cocoon_receipt::unix_now(),
        model: "smol".into(),
        model_hash: None,
        worker_image_hash: Verifier::new()
            .verify(nodes.worker.quote())
            .expect("a fake quote verifies")
            .image_hash,
        request_sha256: Hash32([1; 32]),
        response_sha256: Hash32([2; 32]),
        charge: cocoon_money::price(&usage, 1500, &prices)
            .expect("a price")
            .client_price,
        usage,
        coefficient: 1500,
        prices,
    }
}

fn signed(record: AnswerRecord) -> Receipt {
    let nodes = nodes();
    Receipt::countersign(WorkerReceipt::sign(record, &nodes.worker), &nodes.proxy).unwrap()
}

fn verify(receipt: &Receipt) {
    let verifier = Verifier::new();
    let _ = receipt.verify(&Expectations {
        verifier: &verifier,
        min_kind: AttestationKind::Fake,
        registry: None,
        response_sha256: Some([2; 32]),
        request_sha256: None,
    });
}

/// A receipt as an app or `cocoon receipt verify` reads it (JSON or header form), verified.
pub const RECEIPT: Target = Target {
    name: "receipt",
    seeds: || {
        let receipt = signed(record());
        vec![
            serde_json::to_vec(&receipt).expect("JSON"),
            receipt.to_header().into_bytes(),
        ]
    },
    run: |bytes| {
        if let Ok(receipt) = Receipt::parse(&String::from_utf8_lossy(bytes)) {
            verify(&receipt);
        }
    },
    format: Format::Json,
};

/// A receipt's record with hostile values, validly signed, so verification gets past the
/// signatures to the time, price and digest checks.
pub const RECEIPT_WIRE: Target = Target {
    name: "receipt-record",
    seeds: || vec![serde_json::to_vec(&record()).expect("JSON")],
    run: |bytes| {
        if let Ok(record) = serde_json::from_slice::<AnswerRecord>(bytes) {
            let receipt = signed(record);
            let (wire, worker, proxy) = receipt.to_wire();
            if let Ok(back) = Receipt::from_wire(&wire, worker, proxy) {
                verify(&back);
            }
        }
    },
    format: Format::Json,
};

const OWNER: u8 = 1;
const PROXY: u8 = 2;
const CLIENT: u8 = 3;
const WORKER: u8 = 4;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn id(n: u8) -> AccountId {
    AccountId::from(&key(n))
}

fn voucher_signer() -> VoucherSigner {
    VoucherSigner::new(key(PROXY), id(PROXY))
}

/// A voucher as a worker receives it or the ledger reads it, checked against the proxy's key.
pub const VOUCHER: Target = Target {
    name: "voucher",
    seeds: || {
        let signer = voucher_signer();
        vec![
            serde_json::to_vec(&signer.client_charge(id(CLIENT), 1_000, 3, false)).expect("JSON"),
            serde_json::to_vec(&signer.worker_pay(id(WORKER), 700, 2)).expect("JSON"),
        ]
    },
    run: |bytes| {
        if let Ok(voucher) = serde_json::from_slice::<SignedVoucher>(bytes) {
            let _ = voucher.verify(&id(PROXY));
            let _ = voucher.voucher.signing_bytes();
        }
    },
    format: Format::Json,
};

/// A signed transaction envelope as the ledger receives it.
pub const TRANSACTION: Target = Target {
    name: "transaction",
    seeds: || {
        transaction_script()
            .into_iter()
            .filter_map(|(who, nonce, body)| SignedTransaction::sign(&key(who), nonce, body).ok())
            .map(|tx| serde_json::to_vec(&tx).expect("JSON"))
            .collect()
    },
    run: |bytes| {
        if let Ok(tx) = serde_json::from_slice::<SignedTransaction>(bytes) {
            let _ = tx.verify();
        }
    },
    format: Format::Json,
};

/// A whole life of contracts: stake, deposit, charge, claim, a new proxy key, withdraw, close.
fn transaction_script() -> Vec<(u8, u64, TransactionBody)> {
    let signer = voucher_signer();
    vec![
        (
            PROXY,
            1,
            TransactionBody::OpenProxy {
                stake: 100,
                voucher_key: id(PROXY),
            },
        ),
        (
            CLIENT,
            1,
            TransactionBody::OpenClient {
                proxy: id(PROXY),
                amount: 500,
                stake: 10,
            },
        ),
        (
            CLIENT,
            2,
            TransactionBody::TopUp {
                proxy: id(PROXY),
                amount: 50,
            },
        ),
        (
            WORKER,
            1,
            TransactionBody::Charge {
                voucher: Voucher::client_pay(
                    &key(CLIENT),
                    VoucherIds::accounts(id(PROXY), AccountId::from(&key(CLIENT))),
                    320,
                    1,
                ),
            },
        ),
        (
            WORKER,
            2,
            TransactionBody::Claim {
                voucher: signer.worker_pay(id(WORKER), 200, 1),
            },
        ),
        // A restarted proxy node's key; the first one's vouchers stay valid.
        (
            PROXY,
            2,
            TransactionBody::AuthorizeProxyKey { key: id(OWNER) },
        ),
        (PROXY, 3, TransactionBody::WithdrawCommission { amount: 50 }),
        (
            CLIENT,
            3,
            TransactionBody::WithdrawClient {
                proxy: id(PROXY),
                amount: 20,
            },
        ),
        (
            CLIENT,
            4,
            TransactionBody::CloseClient {
                proxy: id(PROXY),
                final_voucher: Some(signer.client_charge(id(CLIENT), 320, 2, true)),
            },
        ),
        (PROXY, 4, TransactionBody::StartProxyClose),
        (PROXY, 5, TransactionBody::FinishProxyClose),
        (
            OWNER,
            1,
            TransactionBody::Transfer {
                to: id(WORKER),
                amount: 5,
            },
        ),
    ]
}

/// Re-signs every voucher in a transaction body with the key the rules check (the client's for
/// a payment, the proxy's otherwise), so that mutated amounts and sequence numbers reach the
/// rules instead of stopping at the signature.
fn resign_vouchers(body: TransactionBody) -> TransactionBody {
    let sign = |v: Voucher| v.sign(&key(PROXY));
    match body {
        TransactionBody::Charge { voucher } => TransactionBody::Charge {
            voucher: voucher.voucher.sign(&key(CLIENT)),
        },
        TransactionBody::Claim { voucher } => TransactionBody::Claim {
            voucher: sign(voucher.voucher),
        },
        TransactionBody::CloseClient {
            proxy,
            final_voucher,
        } => TransactionBody::CloseClient {
            proxy,
            final_voucher: final_voucher.map(|v| sign(v.voucher)),
        },
        other => other,
    }
}

/// A sequence of transactions (a JSON list of `[signer 1-4, nonce, body]`) applied to a ledger;
/// money must be conserved after every step, whatever the numbers.
pub const LEDGER_RULES: Target = Target {
    name: "ledger-rules",
    seeds: || {
        let lines: Vec<String> = transaction_script()
            .into_iter()
            .map(|(who, nonce, body)| serde_json::to_string(&(who, nonce, body)).expect("JSON"))
            .collect();
        vec![lines.join("\n").into_bytes()]
    },
    run: |bytes| {
        let mut registry = Registry::new(id(OWNER));
        registry.min_client_stake = 10;
        registry.min_proxy_stake = 100;
        let allocations: Vec<_> = (1..=4).map(|n| (id(n), 1_000)).collect();
        let Ok(mut state) = LedgerState::genesis(registry, &allocations) else {
            return;
        };
        let mut now = 1_000u64;
        let Ok(steps) = serde_json::from_slice::<Vec<(u8, u64, Value)>>(bytes) else {
            return;
        };
        for (who, nonce, body) in steps.into_iter().take(64) {
            let Ok(body) = serde_json::from_value::<TransactionBody>(body) else {
                continue;
            };
            let tx = Transaction {
                signer: id(who.clamp(1, 4)),
                nonce,
                body: resign_vouchers(body),
            };
            now = now.saturating_add(u64::from(who) * 10);
            let ctx = Context {
                now,
                faucet_enabled: who == OWNER,
            };
            let _ = state.apply(&tx, &ctx);
            assert_eq!(
                state.holdings_total(),
                u128::from(state.supply()),
                "money not conserved after {tx:?}"
            );
        }
    },
    format: Format::Json,
};
