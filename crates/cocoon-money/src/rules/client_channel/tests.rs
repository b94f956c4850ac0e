//! Tests of the client × proxy channel: only the client's signature moves its money.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::super::properties::{build_body, op, Op, KEYS};
use super::super::tests::{charge, id, key, test_registry};
use super::super::*;
use crate::voucher::{Voucher, VoucherIds};

const PROXY: u8 = 2;
const CLIENT: u8 = 3;

fn ledger() -> (LedgerState, Context) {
    let allocations: Vec<_> = (1..=KEYS).map(|n| (id(n), 2_000)).collect();
    let state = LedgerState::genesis(test_registry(), &allocations).unwrap();
    let ctx = Context {
        now: 0,
        faucet_enabled: true,
    };
    (state, ctx)
}

fn apply(
    state: &mut LedgerState,
    ctx: &Context,
    who: u8,
    body: TransactionBody,
) -> Result<Outcome, RuleError> {
    let nonce = state.account(&id(who)).map_or(0, |a| a.nonce) + 1;
    state.apply(
        &Transaction {
            signer: id(who),
            nonce,
            body,
        },
        ctx,
    )
}

/// Proxies 1 and 2 open; the client (3) deposits 400 (stake 20) with each.
fn with_client_contracts() -> (LedgerState, Context) {
    let (mut state, ctx) = ledger();
    for proxy in [1, PROXY] {
        apply(
            &mut state,
            &ctx,
            proxy,
            TransactionBody::OpenProxy {
                stake: 100,
                voucher_key: id(proxy),
            },
        )
        .unwrap();
        apply(
            &mut state,
            &ctx,
            CLIENT,
            TransactionBody::OpenClient {
                proxy: id(proxy),
                amount: 400,
                stake: 20,
            },
        )
        .unwrap();
    }
    (state, ctx)
}

/// What the client holds: its account and its contracts' balances.
fn holdings(state: &LedgerState, client: AccountId) -> u128 {
    let contracts: u128 = state
        .clients
        .values()
        .filter(|c| c.client == client)
        .map(|c| u128::from(c.balance))
        .sum();
    contracts + u128::from(state.account(&client).map_or(0, |a| a.balance))
}

#[test]
fn a_payment_signed_by_the_proxy_or_a_stranger_moves_nothing() {
    let (mut state, ctx) = with_client_contracts();
    let before = state.clone();
    for signer in [PROXY, 1] {
        let mut forged = Voucher::client_pay(
            &key(CLIENT),
            VoucherIds::accounts(id(PROXY), AccountId::from(&key(CLIENT))),
            300,
            1,
        );
        forged = forged.voucher.sign(&key(signer));
        assert_eq!(
            apply(
                &mut state,
                &ctx,
                PROXY,
                TransactionBody::Charge { voucher: forged }
            ),
            Err(RuleError::BadClientSignature)
        );
    }
    // The proxy's own statement, even marked final, is not a payment.
    let mut statement = Voucher::client_pay(
        &key(CLIENT),
        VoucherIds::accounts(id(PROXY), AccountId::from(&key(CLIENT))),
        300,
        1,
    )
    .voucher;
    statement.kind = VoucherKind::ClientCharge;
    statement.is_final = true;
    assert_eq!(
        apply(
            &mut state,
            &ctx,
            PROXY,
            TransactionBody::Charge {
                voucher: statement.sign(&key(PROXY)),
            }
        ),
        Err(RuleError::WrongVoucherKind {
            expected: VoucherKind::ClientPay
        })
    );
    assert_eq!(state.clients, before.clients);
    assert_eq!(state.proxies, before.proxies);
}

#[test]
fn the_clients_payment_moves_what_it_signed_once_whoever_submits_it() {
    let (mut state, ctx) = with_client_contracts();
    // The proxy submits the client's voucher; then a replay by a stranger changes nothing.
    assert_eq!(
        apply(&mut state, &ctx, PROXY, charge(120, 1)),
        Ok(Outcome::Charged {
            collected: 120,
            shortfall: 0
        })
    );
    assert_eq!(
        apply(&mut state, &ctx, 1, charge(120, 1)),
        Err(RuleError::VoucherNotNewer { applied: 1, got: 1 })
    );
    let contract = state.client_contract(&id(PROXY), &id(CLIENT)).unwrap();
    assert_eq!((contract.balance, contract.charged), (280, 120));
    assert_eq!(state.proxy(&id(PROXY)).unwrap().pool, 120);
    // A voucher for another proxy's contract moves nothing here.
    let other = Voucher::client_pay(
        &key(CLIENT),
        VoucherIds::accounts(id(1), AccountId::from(&key(CLIENT))),
        50,
        1,
    );
    apply(
        &mut state,
        &ctx,
        PROXY,
        TransactionBody::Charge { voucher: other },
    )
    .unwrap();
    assert_eq!(state.proxy(&id(PROXY)).unwrap().pool, 120);
    assert_eq!(state.proxy(&id(1)).unwrap().pool, 50);
}

/// Applies `ops` after the setup, with every transaction the client itself would sign dropped,
/// and checks after each step that the client's holdings fell by no more than what its own
/// payment vouchers authorized (per proxy, the highest cumulative it signed).
fn check_only_signed_payments_leave(ops: &[Op]) -> Result<(), TestCaseError> {
    let (mut state, mut ctx) = with_client_contracts();
    let client = id(CLIENT);
    let start = holdings(&state, client);
    let mut signed: BTreeMap<AccountId, Amount> = BTreeMap::new();
    for op in ops {
        let (signer, spec) = match op {
            Op::Advance(dt) => {
                ctx.now += dt;
                continue;
            }
            Op::Tx { signer, body, .. } if *signer != CLIENT => (*signer, body),
            Op::Tx { .. } => continue,
        };
        let body = build_body(signer, spec);
        if let TransactionBody::Charge { voucher } = &body {
            let v = voucher.voucher;
            if v.counterparty == client && voucher.verify(&client).is_ok() {
                let most = signed.entry(v.proxy).or_default();
                *most = (*most).max(v.cumulative);
            }
        }
        let _ = apply(&mut state, &ctx, signer, body);
        let authorized: u128 = signed.values().map(|&a| u128::from(a)).sum();
        prop_assert!(holdings(&state, client) + authorized >= start);
        for contract in state.clients.values().filter(|c| c.client == client) {
            let most = signed.get(&contract.proxy).copied().unwrap_or(0);
            prop_assert!(
                contract.collected <= most,
                "collected {} > signed {most}",
                contract.collected
            );
        }
        prop_assert_eq!(state.holdings_total(), u128::from(state.supply()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn without_the_clients_signature_its_money_stays(ops in proptest::collection::vec(op(), 1..120)) {
        check_only_signed_payments_leave(&ops)?;
    }
}
