//! Property tests of the contract rules: random operation sequences keep money conserved and
//! leave a refused transaction without effect. The generators are public under the
//! `test-support` feature, so other crates' tests replay the same sequences (the ledger's store).
// Test generators, not API: documented where it helps; the property checks are used by tests only.
#![allow(missing_docs)]
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::BTreeMap;

use proptest::prelude::*;

use ed25519_dalek::SigningKey;

use super::*;
use crate::voucher::Voucher;

pub const KEYS: u8 = 3;

/// The test key of seed `n`.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The account of [`key`]`(n)`.
pub fn id(n: u8) -> AccountId {
    AccountId::from(&key(n))
}

/// A registry owned by `id(1)`, with small stakes and close delays.
pub fn test_registry() -> Registry {
    let mut registry = Registry::new(id(1));
    registry.min_client_stake = 10;
    registry.min_proxy_stake = 100;
    registry.client_delay_before_close = 50;
    registry.proxy_delay_before_close = 80;
    registry
}

/// A random operation; indices pick among `KEYS` accounts (1-based keys).
#[derive(Debug, Clone)]
pub enum Op {
    Advance(u64),
    Tx {
        signer: u8,
        replay_nonce: bool,
        body: BodySpec,
    },
}

#[derive(Debug, Clone)]
pub enum BodySpec {
    Mint(Amount),
    Transfer(u8, Amount),
    /// Stake and voucher key (`None`: the signer's own key).
    OpenProxy(Amount, Option<u8>),
    AddProxyStake(Amount),
    Commit(u64),
    WithdrawCommission(Amount),
    StartProxyClose,
    FinishProxyClose,
    OpenClient(u8, Amount, Amount),
    TopUp(u8, Amount),
    WithdrawClient(u8, Amount),
    Charge(VoucherSpec),
    Claim(VoucherSpec),
    CloseClient(u8, Option<VoucherSpec>),
    FinishClientClose(u8),
    /// Authorize the key of this seed (1..=12: more keys than a contract holds, so some evict).
    AuthorizeKey(u8),
    RevokeKey(u8),
}

#[derive(Debug, Clone)]
pub struct VoucherSpec {
    proxy: u8,
    counterparty: u8,
    signed_by: u8,
    cumulative: Amount,
    seqno: u64,
    is_final: bool,
}

fn who() -> impl Strategy<Value = u8> {
    1..=KEYS
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![8 => 1u64..150, 1 => Just(0), 1 => Just(u64::MAX)]
}

fn voucher_key_seed() -> impl Strategy<Value = u8> {
    1u8..=12
}

fn voucher_spec() -> impl Strategy<Value = VoucherSpec> {
    (
        who(),
        who(),
        who(),
        voucher_key_seed(),
        0u64..600,
        0u64..12,
        any::<bool>(),
    )
        .prop_map(
            |(proxy, counterparty, signed_by, node_key, cumulative, seqno, is_final)| VoucherSpec {
                proxy,
                counterparty,
                // Mostly the proxy's own key, sometimes a stranger's or a node key (authorized or not).
                signed_by: match signed_by {
                    1 => counterparty,
                    2 => node_key,
                    _ => proxy,
                },
                cumulative,
                seqno,
                is_final,
            },
        )
}

fn body_spec() -> impl Strategy<Value = BodySpec> {
    prop_oneof![
        amount().prop_map(BodySpec::Mint),
        (who(), amount()).prop_map(|(t, a)| BodySpec::Transfer(t, a)),
        (100u64..300, proptest::option::weighted(0.1, who()))
            .prop_map(|(a, k)| BodySpec::OpenProxy(a, k)),
        amount().prop_map(BodySpec::AddProxyStake),
        (0u64..10).prop_map(BodySpec::Commit),
        amount().prop_map(BodySpec::WithdrawCommission),
        Just(BodySpec::StartProxyClose),
        Just(BodySpec::FinishProxyClose),
        (who(), 0u64..400, 0u64..40).prop_map(|(p, a, s)| BodySpec::OpenClient(p, a, s)),
        (who(), amount()).prop_map(|(p, a)| BodySpec::TopUp(p, a)),
        (who(), amount()).prop_map(|(p, a)| BodySpec::WithdrawClient(p, a)),
        voucher_spec().prop_map(BodySpec::Charge),
        voucher_spec().prop_map(BodySpec::Claim),
        (who(), proptest::option::of(voucher_spec()))
            .prop_map(|(p, v)| BodySpec::CloseClient(p, v)),
        who().prop_map(BodySpec::FinishClientClose),
        voucher_key_seed().prop_map(BodySpec::AuthorizeKey),
        voucher_key_seed().prop_map(BodySpec::RevokeKey),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u64..100).prop_map(Op::Advance),
        9 => (who(), proptest::bool::weighted(0.05), body_spec())
            .prop_map(|(signer, replay_nonce, body)| Op::Tx { signer, replay_nonce, body }),
    ]
}

fn build_voucher(spec: &VoucherSpec, kind: VoucherKind) -> SignedVoucher {
    Voucher {
        kind,
        proxy: id(spec.proxy),
        counterparty: id(spec.counterparty),
        cumulative: spec.cumulative,
        seqno: spec.seqno,
        is_final: spec.is_final,
    }
    .sign(&key(spec.signed_by))
}

pub fn build_body(signer: u8, spec: &BodySpec) -> TransactionBody {
    use TransactionBody as B;
    match spec {
        BodySpec::Mint(a) => B::Mint { amount: *a },
        BodySpec::Transfer(t, a) => B::Transfer {
            to: id(*t),
            amount: *a,
        },
        BodySpec::OpenProxy(a, k) => B::OpenProxy {
            stake: *a,
            voucher_key: id(k.unwrap_or(signer)),
        },
        BodySpec::AddProxyStake(a) => B::AddProxyStake { amount: *a },
        BodySpec::Commit(s) => B::CommitProxyState {
            seqno: *s,
            state_hash: Hash32([*s as u8; 32]),
        },
        BodySpec::WithdrawCommission(a) => B::WithdrawCommission { amount: *a },
        BodySpec::StartProxyClose => B::StartProxyClose,
        BodySpec::FinishProxyClose => B::FinishProxyClose,
        BodySpec::OpenClient(p, a, s) => B::OpenClient {
            proxy: id(*p),
            amount: *a,
            stake: *s,
        },
        BodySpec::TopUp(p, a) => B::TopUp {
            proxy: id(*p),
            amount: *a,
        },
        BodySpec::WithdrawClient(p, a) => B::WithdrawClient {
            proxy: id(*p),
            amount: *a,
        },
        BodySpec::Charge(v) => B::Charge {
            voucher: build_voucher(v, VoucherKind::ClientPay),
        },
        BodySpec::Claim(v) => B::Claim {
            voucher: build_voucher(v, VoucherKind::WorkerPay),
        },
        BodySpec::CloseClient(p, v) => B::CloseClient {
            proxy: id(*p),
            // Aim the voucher at the signer's own contract, so closes often succeed.
            final_voucher: v.as_ref().map(|v| {
                let aimed = VoucherSpec {
                    proxy: *p,
                    counterparty: signer,
                    signed_by: if v.signed_by == v.counterparty {
                        signer
                    } else {
                        *p
                    },
                    // A release succeeds only up to what the client paid: often state nothing.
                    cumulative: if v.seqno % 2 == 0 { 0 } else { v.cumulative },
                    ..v.clone()
                };
                build_voucher(&aimed, VoucherKind::ClientCharge)
            }),
        },
        BodySpec::FinishClientClose(p) => B::FinishClientClose { proxy: id(*p) },
        BodySpec::AuthorizeKey(k) => B::AuthorizeProxyKey { key: id(*k) },
        BodySpec::RevokeKey(k) => B::RevokeProxyKey { key: id(*k) },
    }
}

/// Applies `ops` to a fresh faucet-enabled ledger, checking the invariants after every step.
/// Returns how many transactions of each kind succeeded.
pub fn run_ops(ops: &[Op]) -> Result<BTreeMap<&'static str, usize>, TestCaseError> {
    let mut applied = BTreeMap::new();
    let allocations: Vec<_> = (1..=KEYS).map(|n| (id(n), 2_000)).collect();
    let mut state = LedgerState::genesis(test_registry(), &allocations).unwrap();
    let mut ctx = Context {
        now: 0,
        faucet_enabled: true,
    };
    for op in ops {
        let (signer, replay_nonce, spec) = match op {
            Op::Advance(dt) => {
                ctx.now += dt;
                continue;
            }
            Op::Tx {
                signer,
                replay_nonce,
                body,
            } => (*signer, *replay_nonce, body),
        };
        let last = state.account(&id(signer)).map_or(0, |a| a.nonce);
        let tx = Transaction {
            signer: id(signer),
            nonce: if replay_nonce { last } else { last + 1 },
            body: build_body(signer, spec),
        };
        let before = state.clone();
        let result = state.apply(&tx, &ctx);
        match &result {
            Err(_) => prop_assert_eq!(&state, &before, "rejected tx changed state"),
            Ok(_) if !matches!(spec, BodySpec::Mint(_)) => {
                prop_assert_eq!(
                    state.supply(),
                    before.supply(),
                    "supply changed without a mint"
                )
            }
            Ok(_) => {}
        }
        prop_assert!(!(replay_nonce && result.is_ok()), "replayed nonce accepted");
        if result.is_ok() {
            *applied.entry(spec.name()).or_default() += 1;
        }
        prop_assert_eq!(state.holdings_total(), u128::from(state.supply()));
        // Vouchers only ever move forward: charged and paid never decrease.
        for (key, after) in &state.clients {
            if let Some(prev) = before.clients.get(key) {
                prop_assert!(after.charged >= prev.charged);
                prop_assert!(after.voucher_seqno >= prev.voucher_seqno);
                prop_assert!(after.charged - prev.charged >= after.collected - prev.collected);
            }
        }
        for (key, after) in &state.workers {
            let prev = before.workers.get(key).map_or(0, |w| w.paid);
            prop_assert!(after.paid >= prev);
        }
        check_voucher_keys(&before, &state, spec, result.is_ok())?;
    }
    Ok(applied)
}

/// A proxy honours at most [`MAX_PROXY_VOUCHER_KEYS`] distinct keys, and a voucher moves money
/// only when a key its contract authorized (before the transaction) signed it.
fn check_voucher_keys(
    before: &LedgerState,
    state: &LedgerState,
    spec: &BodySpec,
    applied: bool,
) -> Result<(), TestCaseError> {
    for proxy in state.proxies.values() {
        let keys: std::collections::BTreeSet<_> = proxy.voucher_keys().collect();
        prop_assert_eq!(
            keys.len(),
            proxy.earlier_voucher_keys.len() + 1,
            "duplicate keys"
        );
        prop_assert!(keys.len() <= MAX_PROXY_VOUCHER_KEYS);
    }
    match spec {
        // A client's payment moves money only with the client's own signature.
        BodySpec::Charge(v) if applied => prop_assert_eq!(
            v.signed_by,
            v.counterparty,
            "a payment not signed by its client moved money"
        ),
        BodySpec::Claim(v) if applied => prop_assert!(
            before.proxies[&id(v.proxy)].authorizes(&id(v.signed_by)),
            "a voucher by an unauthorized key moved money"
        ),
        _ => {}
    }
    Ok(())
}

impl BodySpec {
    fn name(&self) -> &'static str {
        match self {
            BodySpec::Mint(_) => "mint",
            BodySpec::Transfer(..) => "transfer",
            BodySpec::OpenProxy(..) => "open_proxy",
            BodySpec::AddProxyStake(_) => "add_proxy_stake",
            BodySpec::Commit(_) => "commit",
            BodySpec::WithdrawCommission(_) => "withdraw_commission",
            BodySpec::StartProxyClose => "start_proxy_close",
            BodySpec::FinishProxyClose => "finish_proxy_close",
            BodySpec::OpenClient(..) => "open_client",
            BodySpec::TopUp(..) => "top_up",
            BodySpec::WithdrawClient(..) => "withdraw_client",
            BodySpec::Charge(_) => "charge",
            BodySpec::Claim(_) => "claim",
            BodySpec::CloseClient(_, None) => "close_client_forced",
            BodySpec::CloseClient(_, Some(_)) => "close_client_final",
            BodySpec::FinishClientClose(_) => "finish_client_close",
            BodySpec::AuthorizeKey(_) => "authorize_proxy_key",
            BodySpec::RevokeKey(_) => "revoke_proxy_key",
        }
    }
}

/// Guards the property test against vacuity: the generator must reach every rule's success path.
#[test]
fn random_sequences_exercise_every_rule() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(op(), 100..120);
    let mut total: BTreeMap<&'static str, usize> = BTreeMap::new();
    for _ in 0..300 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        for (name, n) in run_ops(&ops).unwrap() {
            *total.entry(name).or_default() += n;
        }
    }
    eprintln!("{total:?}");
    assert_eq!(total.len(), 18, "some rule never succeeded: {total:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn money_is_conserved_across_random_sequences(ops in proptest::collection::vec(op(), 1..120)) {
        run_ops(&ops)?;
    }

    #[test]
    fn touched_entities_cover_every_change(ops in proptest::collection::vec(op(), 1..80)) {
        // Rebuild a copy only from the touched entities and compare: this is what the store relies on.
        let allocations: Vec<_> = (1..=KEYS).map(|n| (id(n), 2_000)).collect();
        let mut state = LedgerState::genesis(test_registry(), &allocations).unwrap();
        let mut mirror = state.clone();
        state.take_touched();
        let ctx = Context { now: 10, faucet_enabled: true };
        for op in &ops {
            let Op::Tx { signer, body, .. } = op else { continue };
            let nonce = state.account(&id(*signer)).map_or(0, |a| a.nonce) + 1;
            let tx = Transaction { signer: id(*signer), nonce, body: build_body(*signer, body) };
            let _ = state.apply(&tx, &ctx);
            for key in state.take_touched() {
                match key {
                    EntityKey::Supply => mirror.supply = state.supply,
                    EntityKey::Registry => mirror.registry = state.registry.clone(),
                    EntityKey::Account(a) => { mirror.accounts.insert(a, state.accounts[&a]); }
                    EntityKey::Proxy(p) => { mirror.proxies.insert(p, state.proxies[&p].clone()); }
                    EntityKey::Client(p, c) => {
                        mirror.clients.insert((p, c), state.clients[&(p, c)].clone());
                    }
                    EntityKey::Worker(p, w) => {
                        mirror.workers.insert((p, w), state.workers[&(p, w)].clone());
                    }
                }
            }
            prop_assert_eq!(&mirror, &state);
        }
    }
}
