//! Parity between the Rust rules and the TON contracts (`contracts/src/*.tolk`).
//!
//! `contracts/test/parity/sequence.json` holds a seeded sequence of contract operations and, after
//! each, whether the rules applied it (or their refusal) and every contract-level amount. The test
//! here replays its operations through [`LedgerState::apply`] and asserts the recorded outcomes and
//! amounts; `contracts/test/parity.test.js` replays the same operations on the contracts in
//! @ton/sandbox and compares (gas excluded). The fixture also holds voucher vectors (bytes and
//! signature) that the JS side must reproduce byte for byte.
//!
//! Regenerate it from the seed with
//! `COCOON_UPDATE_PARITY=1 cargo test -p cocoon-ledger --test ton_parity`.
//!
//! Operations whose outcome differs by design on TON are not generated (docs/contracts.md,
//! "Differences from the local ledger"): opening or topping up a channel of a proxy that is not
//! open, paying into a closed proxy, a client closing after its proxy closed, and operations on
//! contracts that were never opened.

use std::path::PathBuf;

use cocoon_money::{
    AccountId, Amount, Context, ContractStatus, LedgerState, Registry, RuleError, Transaction,
    TransactionBody, Voucher, VoucherIds, VoucherKind,
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

/// Makes a seeded sequence of operations (as fixture JSON), each chosen from the state so far.
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

    /// The next cumulative statement after `last`: mostly growing (its seqno sometimes skipping
    /// one when `skips`), sometimes a replay or a lower amount.
    fn next_statement(&mut self, last: (Amount, u64), growth: u64, skips: bool) -> (Amount, u64) {
        let (cumulative, seqno) = last;
        match self.rng.below(10) {
            0 => (cumulative, seqno),
            1 => (cumulative.saturating_sub(1), seqno + 1),
            _ => {
                let cumulative = cumulative + self.rng.below(growth);
                let skip = if skips { self.rng.below(2) } else { 0 };
                (cumulative, seqno + 1 + skip)
            }
        }
    }

    fn next_op(&mut self, state: &LedgerState, step: usize) -> Value {
        let operator = id(OPERATOR_SEED);
        let proxy_status = state.proxy(&operator).map(|p| p.status);
        if step == 0 {
            return json!({"op": "open_proxy", "stake": 20 * NANO, "key": 0});
        }
        loop {
            let i = self.rng.below(u64::from(CLIENTS)) as u8;
            let channel = state.client_contract(&operator, &id(client_seed(i)));
            let exists = channel.is_some();
            let proxy_open = proxy_status == Some(ContractStatus::Open);
            let proxy_closed = proxy_status == Some(ContractStatus::Closed);
            return match self.rng.below(20) {
                0 | 1 if proxy_open => {
                    let amount = self.amount(6);
                    let stake = if self.rng.chance(80) {
                        NANO
                    } else {
                        self.rng.below(2 * NANO)
                    };
                    json!({"op": "open_client", "client": i, "amount": amount, "stake": stake})
                }
                2 if proxy_open && exists => {
                    json!({"op": "top_up", "client": i, "amount": self.amount(3)})
                }
                3 if exists => {
                    let max = if self.rng.chance(60) { 2 } else { 6 };
                    json!({"op": "withdraw_client", "client": i, "amount": self.amount(max)})
                }
                4..=7 if exists && !proxy_closed => {
                    let last = self.paid[usize::from(i)];
                    let (cumulative, seqno) = self.next_statement(last, 2 * NANO, true);
                    let wrong_signer = self.rng.chance(8);
                    if !wrong_signer {
                        self.paid[usize::from(i)] = (cumulative.max(last.0), seqno.max(last.1));
                    }
                    let signer = client_seed(if wrong_signer { (i + 1) % CLIENTS } else { i });
                    json!({"op": "pay", "client": i, "cumulative": cumulative, "seqno": seqno, "signer": signer})
                }
                8 if exists && !proxy_closed => json!({"op": "close_client", "client": i}),
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
                    json!({"op": "close_released", "client": i, "cumulative": cumulative,
                        "seqno": seqno, "final": is_final, "key": k})
                }
                10 if exists => json!({"op": "finish_client_close", "client": i}),
                11 | 12 => {
                    let j = self.rng.below(u64::from(WORKERS)) as u8;
                    let last = self.earned[usize::from(j)];
                    let (cumulative, seqno) = self.next_statement(last, 3 * NANO, false);
                    let k = self.signing_key(state);
                    self.earned[usize::from(j)] = (cumulative.max(last.0), seqno.max(last.1));
                    json!({"op": "claim", "worker": j, "cumulative": cumulative, "seqno": seqno, "key": k})
                }
                13 => {
                    json!({"op": "authorize_key", "key": self.rng.below(u64::from(VOUCHER_KEYS))})
                }
                14 => json!({"op": "revoke_key", "key": self.rng.below(u64::from(VOUCHER_KEYS))}),
                15 => json!({"op": "withdraw_commission", "amount": self.amount(3)}),
                16 => json!({"op": "add_stake", "amount": self.amount(5)}),
                17 if step > STEPS / 2 && self.rng.chance(25) => match proxy_status {
                    Some(ContractStatus::Open) => json!({"op": "start_proxy_close"}),
                    Some(ContractStatus::Closing { .. }) => json!({"op": "finish_proxy_close"}),
                    _ => {
                        let k = self.rng.below(u64::from(VOUCHER_KEYS));
                        let stake = 10 * NANO + self.rng.below(5 * NANO);
                        json!({"op": "open_proxy", "stake": stake, "key": k})
                    }
                },
                18 | 19 => {
                    let seconds = [1, 300, 599, 600, 3_600][self.rng.below(5) as usize];
                    json!({"op": "advance", "seconds": seconds})
                }
                _ => continue,
            };
        }
    }
}

/// The ledger transaction an operation of the fixture stands for: `(signer, body)`, or `None`
/// for `advance` (time only). Vouchers are signed here from the seeds, as the JS side does.
fn transaction(op: &Value) -> Option<(AccountId, TransactionBody)> {
    let num = |field: &str| {
        op[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{op}: {field}"))
    };
    let seed = |field: &str| u8::try_from(num(field)).expect("a small index");
    let operator = id(OPERATOR_SEED);
    let voucher = |kind, counterparty, signer: u8| {
        Voucher {
            kind,
            proxy: operator,
            counterparty,
            cumulative: num("cumulative"),
            seqno: num("seqno"),
            is_final: op["final"].as_bool().unwrap_or(false),
        }
        .sign(&key(signer))
    };
    let client = || id(client_seed(seed("client")));
    let worker = || id(worker_seed(seed("worker")));
    let voucher_key = || voucher_key_seed(seed("key"));
    use TransactionBody as B;
    Some(match op["op"].as_str().expect("op") {
        "advance" => return None,
        "open_proxy" => (
            operator,
            B::OpenProxy {
                stake: num("stake"),
                voucher_key: id(voucher_key()),
            },
        ),
        "add_stake" => (
            operator,
            B::AddProxyStake {
                amount: num("amount"),
            },
        ),
        "authorize_key" => (
            operator,
            B::AuthorizeProxyKey {
                key: id(voucher_key()),
            },
        ),
        "revoke_key" => (
            operator,
            B::RevokeProxyKey {
                key: id(voucher_key()),
            },
        ),
        "withdraw_commission" => (
            operator,
            B::WithdrawCommission {
                amount: num("amount"),
            },
        ),
        "start_proxy_close" => (operator, B::StartProxyClose),
        "finish_proxy_close" => (operator, B::FinishProxyClose),
        "open_client" => (
            client(),
            B::OpenClient {
                proxy: operator,
                amount: num("amount"),
                stake: num("stake"),
            },
        ),
        "top_up" => (
            client(),
            B::TopUp {
                proxy: operator,
                amount: num("amount"),
            },
        ),
        "withdraw_client" => (
            client(),
            B::WithdrawClient {
                proxy: operator,
                amount: num("amount"),
            },
        ),
        "pay" => (
            client(),
            B::Charge {
                voucher: voucher(VoucherKind::ClientPay, client(), seed("signer")),
            },
        ),
        "close_client" => (
            client(),
            B::CloseClient {
                proxy: operator,
                final_voucher: None,
            },
        ),
        "close_released" => (
            client(),
            B::CloseClient {
                proxy: operator,
                final_voucher: Some(voucher(VoucherKind::ClientCharge, client(), voucher_key())),
            },
        ),
        "finish_client_close" => (client(), B::FinishClientClose { proxy: operator }),
        "claim" => (
            worker(),
            B::Claim {
                voucher: voucher(VoucherKind::WorkerPay, worker(), voucher_key()),
            },
        ),
        other => panic!("unknown op {other}"),
    })
}

/// Applies operations through the rules, as the fixture records them.
struct Replay {
    state: LedgerState,
    now: u64,
    nonces: std::collections::BTreeMap<AccountId, u64>,
}

impl Replay {
    fn new(registry: &Registry) -> Self {
        let mut funded = vec![(id(OPERATOR_SEED), 1_000_000 * NANO)];
        funded.extend((0..CLIENTS).map(|i| (id(client_seed(i)), 1_000_000 * NANO)));
        let state = LedgerState::genesis(registry.clone(), &funded).expect("genesis");
        Self {
            state,
            now: START,
            nonces: Default::default(),
        }
    }

    /// Applies `op`; returns the fixture step: the op, "ok" or the refusal, the amounts after.
    fn step(&mut self, op: Value) -> Value {
        let result = match transaction(&op) {
            None => {
                self.now += op["seconds"].as_u64().expect("seconds");
                "ok".to_owned()
            }
            Some((signer, body)) => {
                let nonce = self.nonces.entry(signer).or_default();
                *nonce += 1;
                let tx = Transaction {
                    signer,
                    nonce: *nonce,
                    body,
                };
                match self.state.apply(
                    &tx,
                    &Context {
                        now: self.now,
                        faucet_enabled: false,
                    },
                ) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => refusal_code(&e),
                }
            }
        };
        assert_eq!(
            self.state.holdings_total(),
            u128::from(self.state.supply()),
            "the rules conserve money"
        );
        json!({"op": op, "result": result, "after": snapshot(&self.state)})
    }
}

fn refusal_code(error: &RuleError) -> String {
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
            let (proxy, cumulative) = (AccountId([0xa0 + n; 32]), u64::MAX - u64::from(n));
            let seqno = 0x0102_0304_0506_0708 + u64::from(n);
            // The client's payment exactly as clients make it (its key is the counterparty), so
            // the JS side can also submit it to a channel as is.
            let signed = if kind == VoucherKind::ClientPay {
                Voucher::client_pay(&key(60 + n), VoucherIds::accounts(proxy, AccountId::from(&key(60 + n))), cumulative, seqno)
            } else {
                Voucher { kind, proxy, counterparty: AccountId([0xb0 + n; 32]), cumulative, seqno, is_final }
                    .sign(&key(60 + n))
            };
            let voucher = signed.voucher;
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

fn registry() -> Registry {
    Registry::new(id(OWNER_SEED))
}

/// A fresh fixture from the seed (written with `COCOON_UPDATE_PARITY=1`).
fn generate() -> Value {
    let registry = registry();
    let mut replay = Replay::new(&registry);
    let mut generator = Generator {
        rng: Rng(SEED),
        paid: vec![(0, 0); usize::from(CLIENTS)],
        earned: vec![(0, 0); usize::from(WORKERS)],
    };
    let steps: Vec<Value> = (0..STEPS)
        .map(|step| {
            let op = generator.next_op(&replay.state, step);
            replay.step(op)
        })
        .collect();
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

fn recorded() -> Value {
    if std::env::var_os("COCOON_UPDATE_PARITY").is_some() {
        // Being rewritten by the replay test (tests run in parallel): check what it writes.
        return generate();
    }
    let path = fixture_path();
    let text = std::fs::read_to_string(&path).expect("the committed fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn replaying_the_fixture_through_the_rules_gives_the_recorded_amounts() {
    if std::env::var_os("COCOON_UPDATE_PARITY").is_some() {
        let text = serde_json::to_string_pretty(&generate()).expect("json") + "\n";
        std::fs::write(fixture_path(), text).expect("write the fixture");
    }
    let recorded = recorded();
    assert_eq!(
        recorded["vouchers"],
        voucher_vectors(),
        "voucher bytes or signatures changed"
    );
    let mut replay = Replay::new(&registry());
    for (index, step) in recorded["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .enumerate()
    {
        let got = replay.step(step["op"].clone());
        assert!(
            got == *step,
            "step {index}: the rules give {got}\nthe fixture records {step}\nif the rules changed on \
             purpose, regenerate it (COCOON_UPDATE_PARITY=1) and make the contracts agree \
             (npm test in contracts/)"
        );
    }
}

#[test]
fn the_fixture_is_what_the_seed_generates() {
    assert!(
        recorded() == generate(),
        "regenerate the fixture (COCOON_UPDATE_PARITY=1)"
    );
}

#[test]
fn the_fixture_exercises_every_operation_and_most_refusals() {
    let recorded = recorded();
    let steps = recorded["steps"].as_array().expect("steps");
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
        "start_proxy_close",
        "finish_proxy_close",
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
        "too_early",
        "already_closing",
        "insufficient_proxy_funds",
    ] {
        assert!(
            count(&|s| s["result"] == refusal) > 0,
            "no {refusal} refusal"
        );
    }
}
