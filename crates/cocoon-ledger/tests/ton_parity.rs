//! Parity between the Rust rules and the TON contracts (`contracts/src/*.tolk`).
//!
//! A seeded sequence of contract operations is applied through [`LedgerState::apply`]; after each
//! step the fixture `contracts/test/parity/sequence.json` records whether it was applied (or the
//! rule's refusal) and the contract-level amounts. `contracts/test/parity.test.js` replays the same
//! operations on the contracts in @ton/sandbox and compares (gas excluded). The fixture also holds
//! voucher vectors (bytes and signature) the JS side must reproduce byte for byte.
//!
//! Regenerate with `COCOON_UPDATE_PARITY=1 cargo test -p cocoon-ledger --test ton_parity`.
//!
//! Operations whose outcome differs by design on TON are not generated (docs/contracts.md,
//! "Differences from the local ledger"): opening or topping up a channel of a proxy that is not
//! open, paying into a closed proxy, a client closing after its proxy closed, and operations on
//! contracts that were never opened.

use std::path::PathBuf;

use cocoon_ledger::transaction::TransactionBody;
use cocoon_ledger::voucher::{Voucher, VoucherKind};
use cocoon_ledger::{
    AccountId, Amount, Context, ContractStatus, LedgerState, Registry, Transaction,
};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

const SEED: u64 = 0x00c0_c00e;
const STEPS: usize = 240;
const CLIENTS: u8 = 3;
const WORKERS: u8 = 2;
const VOUCHER_KEYS: u8 = 10;
const START: u64 = 1_800_000_000;
const NANO: Amount = 1_000_000_000;

/// splitmix64: small, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}
fn client_seed(i: u8) -> u8 {
    10 + i
}
fn worker_seed(j: u8) -> u8 {
    20 + j
}
fn voucher_key_seed(k: u8) -> u8 {
    40 + k
}
const OPERATOR_SEED: u8 = 30;
const OWNER_SEED: u8 = 50;

fn id(seed: u8) -> AccountId {
    AccountId::from(&key(seed))
}

fn status(s: ContractStatus) -> Value {
    match s {
        ContractStatus::Open => json!({"status": "open"}),
        ContractStatus::Closing { release_at } => {
            json!({"status": "closing", "release_at": release_at})
        }
        ContractStatus::Closed => json!({"status": "closed"}),
    }
}

fn snapshot(state: &LedgerState) -> Value {
    let operator = id(OPERATOR_SEED);
    let proxy = state.proxy(&operator).map(|p| {
        let mut keys: Vec<u8> = Vec::new();
        for k in p
            .earlier_voucher_keys
            .iter()
            .chain(std::iter::once(&p.voucher_key))
        {
            let seed = (0..VOUCHER_KEYS).find(|&k2| id(voucher_key_seed(k2)) == *k);
            keys.push(seed.expect("only generated keys are authorized"));
        }
        json!({"state": status(p.status), "stake": p.stake, "pool": p.pool, "keys": keys})
    });
    let clients: Vec<Value> = (0..CLIENTS)
        .map(
            |i| match state.client_contract(&operator, &id(client_seed(i))) {
                None => Value::Null,
                Some(c) => json!({
                    "state": status(c.status), "balance": c.balance, "stake": c.stake,
                    "charged": c.charged, "collected": c.collected, "seqno": c.voucher_seqno,
                }),
            },
        )
        .collect();
    let workers: Vec<Value> = (0..WORKERS)
        .map(|j| {
            let w = state.worker_contract(&operator, &id(worker_seed(j)));
            json!({"paid": w.map_or(0, |w| w.paid), "seqno": w.map_or(0, |w| w.voucher_seqno)})
        })
        .collect();
    json!({"proxy": proxy, "clients": clients, "workers": workers})
}

/// One generated operation: its JSON for the fixture and the ledger transaction it stands for.
struct Op {
    json: Value,
    signer: AccountId,
    body: Option<TransactionBody>,
}

struct Generator {
    rng: Rng,
    /// Per client: the last payment it signed (cumulative, seqno).
    paid: Vec<(Amount, u64)>,
    /// Per worker: the last voucher the proxy signed (cumulative, seqno).
    earned: Vec<(Amount, u64)>,
}

impl Generator {
    fn amount(&mut self, max_nano: u64) -> Amount {
        // Whole and fractional coins, sometimes zero.
        if self.rng.chance(5) {
            0
        } else {
            self.rng.below(max_nano * NANO) + 1
        }
    }

    fn next_op(&mut self, state: &LedgerState, step: usize) -> Op {
        let operator = id(OPERATOR_SEED);
        let proxy_status = state.proxy(&operator).map(|p| p.status);
        if step == 0 {
            return self.op(
                json!({"op": "open_proxy", "stake": 20 * NANO, "key": 0}),
                operator,
                TransactionBody::OpenProxy {
                    stake: 20 * NANO,
                    voucher_key: id(voucher_key_seed(0)),
                },
            );
        }
        loop {
            let i = self.rng.below(u64::from(CLIENTS)) as u8;
            let client = id(client_seed(i));
            let channel = state.client_contract(&operator, &client);
            let exists = channel.is_some();
            let proxy_open = proxy_status == Some(ContractStatus::Open);
            let proxy_closed = proxy_status == Some(ContractStatus::Closed);
            match self.rng.below(20) {
                0 | 1 if proxy_open => {
                    let amount = self.amount(6);
                    let stake = if self.rng.chance(80) {
                        NANO
                    } else {
                        self.rng.below(2 * NANO)
                    };
                    return self.op(
                        json!({"op": "open_client", "client": i, "amount": amount, "stake": stake}),
                        client,
                        TransactionBody::OpenClient {
                            proxy: operator,
                            amount,
                            stake,
                        },
                    );
                }
                2 if proxy_open && exists => {
                    let amount = self.amount(3);
                    return self.op(
                        json!({"op": "top_up", "client": i, "amount": amount}),
                        client,
                        TransactionBody::TopUp {
                            proxy: operator,
                            amount,
                        },
                    );
                }
                3 if exists => {
                    let max = if self.rng.chance(60) { 2 } else { 6 };
                    let amount = self.amount(max);
                    return self.op(
                        json!({"op": "withdraw_client", "client": i, "amount": amount}),
                        client,
                        TransactionBody::WithdrawClient {
                            proxy: operator,
                            amount,
                        },
                    );
                }
                4..=7 if exists && !proxy_closed => {
                    let (last, seqno) = self.paid[usize::from(i)];
                    let (cumulative, seqno) = match self.rng.below(10) {
                        0 => (last, seqno),                       // a replay
                        1 => (last.saturating_sub(1), seqno + 1), // decreasing
                        _ => (
                            last + self.rng.below(2 * NANO),
                            seqno + 1 + self.rng.below(2),
                        ),
                    };
                    let wrong_signer = self.rng.chance(8);
                    if !wrong_signer {
                        self.paid[usize::from(i)] =
                            (cumulative.max(last), seqno.max(self.paid[usize::from(i)].1));
                    }
                    let signer_seed = if wrong_signer {
                        client_seed((i + 1) % CLIENTS)
                    } else {
                        client_seed(i)
                    };
                    let voucher = Voucher {
                        kind: VoucherKind::ClientPay,
                        proxy: operator,
                        counterparty: client,
                        cumulative,
                        seqno,
                        is_final: false,
                    }
                    .sign(&key(signer_seed));
                    return self.op(
                        json!({"op": "pay", "client": i, "cumulative": cumulative, "seqno": seqno,
                        "signer": signer_seed}),
                        client,
                        TransactionBody::Charge { voucher },
                    );
                }
                8 if exists && !proxy_closed => {
                    return self.op(
                        json!({"op": "close_client", "client": i}),
                        client,
                        TransactionBody::CloseClient {
                            proxy: operator,
                            final_voucher: None,
                        },
                    );
                }
                9 if exists => {
                    let charged = channel.map_or(0, |c| c.charged);
                    let k = self.signing_key(state);
                    let authorized = state
                        .proxy(&operator)
                        .is_some_and(|p| p.authorizes(&id(voucher_key_seed(k))));
                    // Ahead of payment only with a good signature: the two refusals are checked in
                    // another order on TON (the channel checks the amount, the proxy the signature).
                    let ahead = authorized && self.rng.chance(20);
                    let cumulative = if ahead {
                        charged + 1
                    } else {
                        charged.saturating_sub(self.rng.below(NANO))
                    };
                    let is_final = self.rng.chance(85);
                    let seqno = 1 + self.rng.below(100);
                    let release = Voucher {
                        kind: VoucherKind::ClientCharge,
                        proxy: operator,
                        counterparty: client,
                        cumulative,
                        seqno,
                        is_final,
                    }
                    .sign(&key(voucher_key_seed(k)));
                    return self.op(
                        json!({"op": "close_released", "client": i, "cumulative": cumulative,
                        "seqno": seqno, "final": is_final, "key": k}),
                        client,
                        TransactionBody::CloseClient {
                            proxy: operator,
                            final_voucher: Some(release),
                        },
                    );
                }
                10 if exists => {
                    return self.op(
                        json!({"op": "finish_client_close", "client": i}),
                        client,
                        TransactionBody::FinishClientClose { proxy: operator },
                    );
                }
                11 | 12 => {
                    let j = self.rng.below(u64::from(WORKERS)) as u8;
                    let (last, seqno) = self.earned[usize::from(j)];
                    let (cumulative, seqno) = match self.rng.below(10) {
                        0 => (last, seqno),
                        1 => (last.saturating_sub(1), seqno + 1),
                        _ => (last + self.rng.below(3 * NANO), seqno + 1),
                    };
                    let k = self.signing_key(state);
                    self.earned[usize::from(j)] = (
                        cumulative.max(last),
                        seqno.max(self.earned[usize::from(j)].1),
                    );
                    let voucher = Voucher {
                        kind: VoucherKind::WorkerPay,
                        proxy: operator,
                        counterparty: id(worker_seed(j)),
                        cumulative,
                        seqno,
                        is_final: false,
                    }
                    .sign(&key(voucher_key_seed(k)));
                    return self.op(json!({"op": "claim", "worker": j, "cumulative": cumulative, "seqno": seqno, "key": k}),
                        id(worker_seed(j)), TransactionBody::Claim { voucher });
                }
                13 => {
                    let k = self.rng.below(u64::from(VOUCHER_KEYS)) as u8;
                    return self.op(
                        json!({"op": "authorize_key", "key": k}),
                        operator,
                        TransactionBody::AuthorizeProxyKey {
                            key: id(voucher_key_seed(k)),
                        },
                    );
                }
                14 => {
                    let k = self.rng.below(u64::from(VOUCHER_KEYS)) as u8;
                    return self.op(
                        json!({"op": "revoke_key", "key": k}),
                        operator,
                        TransactionBody::RevokeProxyKey {
                            key: id(voucher_key_seed(k)),
                        },
                    );
                }
                15 => {
                    let amount = self.amount(3);
                    return self.op(
                        json!({"op": "withdraw_commission", "amount": amount}),
                        operator,
                        TransactionBody::WithdrawCommission { amount },
                    );
                }
                16 => {
                    let amount = self.amount(5);
                    return self.op(
                        json!({"op": "add_stake", "amount": amount}),
                        operator,
                        TransactionBody::AddProxyStake { amount },
                    );
                }
                17 if step > STEPS / 2 && self.rng.chance(25) => {
                    return match proxy_status {
                        Some(ContractStatus::Open) => self.op(
                            json!({"op": "start_proxy_close"}),
                            operator,
                            TransactionBody::StartProxyClose,
                        ),
                        Some(ContractStatus::Closing { .. }) => self.op(
                            json!({"op": "finish_proxy_close"}),
                            operator,
                            TransactionBody::FinishProxyClose,
                        ),
                        _ => {
                            let k = self.rng.below(u64::from(VOUCHER_KEYS)) as u8;
                            let stake = 10 * NANO + self.rng.below(5 * NANO);
                            self.op(
                                json!({"op": "open_proxy", "stake": stake, "key": k}),
                                operator,
                                TransactionBody::OpenProxy {
                                    stake,
                                    voucher_key: id(voucher_key_seed(k)),
                                },
                            )
                        }
                    };
                }
                18 | 19 => {
                    let seconds = [1, 300, 599, 600, 3_600][self.rng.below(5) as usize];
                    return Op {
                        json: json!({"op": "advance", "seconds": seconds}),
                        signer: operator,
                        body: None,
                    };
                }
                _ => continue,
            }
        }
    }

    /// Mostly the proxy's current voucher key, sometimes any of the first five.
    fn signing_key(&mut self, state: &LedgerState) -> u8 {
        let current = state
            .proxy(&id(OPERATOR_SEED))
            .and_then(|p| (0..VOUCHER_KEYS).find(|&k| id(voucher_key_seed(k)) == p.voucher_key));
        match current {
            Some(k) if self.rng.chance(70) => k,
            _ => self.rng.below(5) as u8,
        }
    }

    fn op(&mut self, json: Value, signer: AccountId, body: TransactionBody) -> Op {
        Op {
            json,
            signer,
            body: Some(body),
        }
    }
}

fn refusal_code(error: &cocoon_ledger::RuleError) -> String {
    serde_json::to_value(error).expect("rule errors serialize")["code"]
        .as_str()
        .expect("tagged with a code")
        .to_owned()
}

/// Vectors for byte-exact vouchers: the JS side must produce the same bytes and signatures.
fn voucher_vectors() -> Value {
    let kinds = [
        (VoucherKind::ClientCharge, true, 1u8),
        (VoucherKind::WorkerPay, false, 2),
        (VoucherKind::ClientPay, false, 3),
    ];
    let vectors: Vec<Value> = kinds
        .iter()
        .map(|&(kind, is_final, n)| {
            let voucher = Voucher {
                kind, proxy: AccountId([0xa0 + n; 32]), counterparty: AccountId([0xb0 + n; 32]),
                cumulative: u64::MAX - u64::from(n), seqno: 0x0102_0304_0506_0708 + u64::from(n), is_final,
            };
            let signed = voucher.sign(&key(60 + n));
            json!({
                "signer_seed": 60 + n, "kind": n, "proxy": hex::encode(voucher.proxy.as_bytes()),
                "counterparty": hex::encode(voucher.counterparty.as_bytes()),
                "cumulative": voucher.cumulative.to_string(), "seqno": voucher.seqno.to_string(), "final": is_final,
                "bytes": hex::encode(voucher.signing_bytes()),
                "signature": hex::encode(signed.signature.to_signature().to_bytes()),
            })
        })
        .collect();
    Value::Array(vectors)
}

fn generate() -> Value {
    let registry = Registry::new(id(OWNER_SEED));
    let mut funded = vec![(id(OPERATOR_SEED), 1_000_000 * NANO)];
    funded.extend((0..CLIENTS).map(|i| (id(client_seed(i)), 1_000_000 * NANO)));
    let mut state = LedgerState::genesis(registry.clone(), &funded).expect("genesis");
    let mut generator = Generator {
        rng: Rng(SEED),
        paid: vec![(0, 0); usize::from(CLIENTS)],
        earned: vec![(0, 0); usize::from(WORKERS)],
    };
    let mut nonces = std::collections::BTreeMap::<AccountId, u64>::new();
    let mut now = START;
    let mut steps = Vec::new();
    for step in 0..STEPS {
        let op = generator.next_op(&state, step);
        let result = match op.body {
            None => {
                now += op.json["seconds"].as_u64().expect("seconds");
                "ok".to_owned()
            }
            Some(body) => {
                let nonce = nonces.entry(op.signer).or_default();
                *nonce += 1;
                let tx = Transaction {
                    signer: op.signer,
                    nonce: *nonce,
                    body,
                };
                match state.apply(
                    &tx,
                    &Context {
                        now,
                        faucet_enabled: false,
                    },
                ) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => refusal_code(&e),
                }
            }
        };
        steps.push(json!({"op": op.json, "result": result, "after": snapshot(&state)}));
    }
    assert_eq!(
        state.holdings_total(),
        u128::from(state.supply()),
        "the rules conserve money"
    );
    json!({
        "about": "generated by crates/cocoon-ledger/tests/ton_parity.rs; replayed by contracts/test/parity.test.js",
        "seed": SEED,
        "start": START,
        "min_client_stake": registry.min_client_stake,
        "min_proxy_stake": registry.min_proxy_stake,
        "client_delay_before_close": registry.client_delay_before_close,
        "proxy_delay_before_close": registry.proxy_delay_before_close,
        "seeds": {
            "clients": (0..CLIENTS).map(client_seed).collect::<Vec<_>>(),
            "workers": (0..WORKERS).map(worker_seed).collect::<Vec<_>>(),
            "voucher_keys": (0..VOUCHER_KEYS).map(voucher_key_seed).collect::<Vec<_>>(),
        },
        "vouchers": voucher_vectors(),
        "steps": steps,
    })
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contracts/test/parity/sequence.json")
}

#[test]
fn the_rules_give_the_recorded_contract_amounts() {
    let generated = generate();
    let path = fixture_path();
    if std::env::var_os("COCOON_UPDATE_PARITY").is_some() {
        let text = serde_json::to_string_pretty(&generated).expect("json") + "\n";
        std::fs::write(&path, text).expect("write the fixture");
        return;
    }
    let text = std::fs::read_to_string(&path).expect("the committed fixture");
    let recorded: Value = serde_json::from_str(&text).expect("fixture is JSON");
    assert!(
        recorded == generated,
        "{} differs from what the rules give now; if the rules changed on purpose, regenerate \
         it (COCOON_UPDATE_PARITY=1) and make the contracts agree (npm test in contracts/)",
        path.display()
    );
}

#[test]
fn the_sequence_exercises_every_operation_and_refusal_it_compares() {
    let generated = generate();
    let steps = generated["steps"].as_array().expect("steps");
    let count = |pred: &dyn Fn(&Value) -> bool| steps.iter().filter(|s| pred(s)).count();
    for op in [
        "open_client",
        "top_up",
        "withdraw_client",
        "pay",
        "close_client",
        "close_released",
        "finish_client_close",
        "claim",
        "authorize_key",
        "revoke_key",
        "withdraw_commission",
        "add_stake",
    ] {
        assert!(
            count(&|s| s["op"]["op"] == op && s["result"] == "ok") > 0,
            "no applied {op}"
        );
    }
    for refusal in [
        "zero_amount",
        "insufficient_funds",
        "stake_too_low",
        "client_contract_exists",
        "contract_not_open",
        "withdraw_below_stake",
        "bad_client_signature",
        "bad_voucher_signature",
        "voucher_not_newer",
        "voucher_decreases",
        "voucher_not_final",
        "not_closing",
        "not_an_earlier_voucher_key",
    ] {
        assert!(
            count(&|s| s["result"] == refusal) > 0,
            "no {refusal} refusal"
        );
    }
}
