//! Tests of the contract rules: scenarios from DESIGN §6 (property tests of conservation are in
//! `properties.rs`).

use super::*;
use crate::ids::WEAK_KEY;
use crate::voucher::{Voucher, VoucherIds};

const OWNER: u8 = 1;
const PROXY: u8 = 2;
const CLIENT: u8 = 3;
const WORKER: u8 = 4;

pub(crate) use super::properties::{id, key, test_registry};

/// A state with funded accounts 1..=4, a fresh nonce counter, and the clock at 1000.
struct Harness {
    state: LedgerState,
    ctx: Context,
}

impl Harness {
    fn new() -> Self {
        let allocations: Vec<_> = (1..=4).map(|n| (id(n), 1_000)).collect();
        Self {
            state: LedgerState::genesis(test_registry(), &allocations).unwrap(),
            ctx: Context {
                now: 1_000,
                faucet_enabled: false,
            },
        }
    }

    fn run(&mut self, who: u8, body: TransactionBody) -> Result<Outcome, RuleError> {
        let nonce = self.state.account(&id(who)).map_or(0, |a| a.nonce) + 1;
        let tx = Transaction {
            signer: id(who),
            nonce,
            body,
        };
        let before = self.state.clone();
        let result = self.state.apply(&tx, &self.ctx);
        if result.is_err() {
            assert_eq!(
                self.state, before,
                "a rejected transaction changed the state"
            );
        }
        assert_eq!(self.state.holdings_total(), u128::from(self.state.supply()));
        result
    }

    fn balance(&self, who: u8) -> Amount {
        self.state.account(&id(who)).map_or(0, |a| a.balance)
    }

    /// Proxy 2 opens with stake 100; client 3 deposits 300 with stake 20.
    fn with_contracts() -> Self {
        let mut h = Self::new();
        h.run(
            PROXY,
            TransactionBody::OpenProxy {
                stake: 100,
                voucher_key: id(PROXY),
            },
        )
        .unwrap();
        h.run(
            CLIENT,
            TransactionBody::OpenClient {
                proxy: id(PROXY),
                amount: 300,
                stake: 20,
            },
        )
        .unwrap();
        h
    }
}

fn voucher(kind: VoucherKind, to: u8, cumulative: Amount, seqno: u64) -> Voucher {
    Voucher {
        kind,
        proxy: id(PROXY),
        counterparty: id(to),
        cumulative,
        seqno,
        is_final: false,
    }
}

/// The client's own payment voucher (signed by the client's key).
pub(crate) fn charge(cumulative: Amount, seqno: u64) -> TransactionBody {
    TransactionBody::Charge {
        voucher: Voucher::client_pay(
            &key(CLIENT),
            VoucherIds::accounts(id(PROXY), AccountId::from(&key(CLIENT))),
            cumulative,
            seqno,
        ),
    }
}

fn claim(cumulative: Amount, seqno: u64) -> TransactionBody {
    TransactionBody::Claim {
        voucher: voucher(VoucherKind::WorkerPay, WORKER, cumulative, seqno).sign(&key(PROXY)),
    }
}

#[test]
fn full_lifecycle_moves_money_where_design_says() {
    let mut h = Harness::with_contracts();
    assert_eq!(h.balance(CLIENT), 700);
    assert_eq!(
        h.run(PROXY, charge(120, 1)),
        Ok(Outcome::Charged {
            collected: 120,
            shortfall: 0
        })
    );
    assert_eq!(
        h.run(WORKER, claim(90, 1)),
        Ok(Outcome::Claimed { paid: 90 })
    );
    assert_eq!(h.balance(WORKER), 1_090);
    let proxy = h.state.proxy(&id(PROXY)).unwrap();
    assert_eq!((proxy.pool, proxy.stake), (30, 100));
    h.run(PROXY, TransactionBody::WithdrawCommission { amount: 30 })
        .unwrap();
    assert_eq!(h.balance(PROXY), 930);

    let client = h.state.client_contract(&id(PROXY), &id(CLIENT)).unwrap();
    assert_eq!(
        (client.balance, client.charged, client.withdrawable()),
        (180, 120, 160)
    );
    h.run(
        CLIENT,
        TransactionBody::WithdrawClient {
            proxy: id(PROXY),
            amount: 60,
        },
    )
    .unwrap();
    assert_eq!(
        h.run(
            CLIENT,
            TransactionBody::WithdrawClient {
                proxy: id(PROXY),
                amount: 101,
            },
        ),
        Err(RuleError::WithdrawBelowStake {
            withdrawable: 100,
            requested: 101
        })
    );

    // The client pays its last 30, then the proxy releases it at once.
    h.run(CLIENT, charge(150, 2)).unwrap();
    let mut last = voucher(VoucherKind::ClientCharge, CLIENT, 150, 2);
    last.is_final = true;
    assert_eq!(
        h.run(
            CLIENT,
            TransactionBody::CloseClient {
                proxy: id(PROXY),
                final_voucher: Some(last.sign(&key(PROXY))),
            },
        ),
        Ok(Outcome::ClientClosed {
            collected: 0,
            returned: 90
        })
    );
    assert_eq!(h.balance(CLIENT), 700 + 60 + 90);
}

#[test]
fn replayed_and_out_of_order_vouchers_change_nothing() {
    let mut h = Harness::with_contracts();
    h.run(PROXY, charge(50, 2)).unwrap();
    let after = h.state.clone();
    assert_eq!(
        h.run(PROXY, charge(50, 2)),
        Err(RuleError::VoucherNotNewer { applied: 2, got: 2 })
    );
    assert_eq!(
        h.run(PROXY, charge(30, 1)),
        Err(RuleError::VoucherNotNewer { applied: 2, got: 1 })
    );
    assert_eq!(
        h.run(PROXY, charge(40, 3)),
        Err(RuleError::VoucherDecreases {
            applied: 50,
            got: 40
        })
    );
    // Only nonces moved; no money and no contract changed.
    assert_eq!(h.state.clients, after.clients);
    assert_eq!(h.state.proxies, after.proxies);

    h.run(WORKER, claim(20, 5)).unwrap();
    let paid = h.balance(WORKER);
    assert!(h.run(WORKER, claim(20, 5)).is_err());
    assert!(h.run(WORKER, claim(10, 4)).is_err());
    assert_eq!(h.balance(WORKER), paid);
}

#[test]
fn voucher_signed_by_another_key_is_rejected() {
    let mut h = Harness::with_contracts();
    let forged = voucher(VoucherKind::ClientPay, CLIENT, 200, 1).sign(&key(PROXY));
    assert_eq!(
        h.run(PROXY, TransactionBody::Charge { voucher: forged }),
        Err(RuleError::BadClientSignature)
    );
    let forged = voucher(VoucherKind::WorkerPay, WORKER, 200, 1).sign(&key(WORKER));
    assert_eq!(
        h.run(WORKER, TransactionBody::Claim { voucher: forged }),
        Err(RuleError::BadVoucherSignature)
    );
    // A charge voucher cannot be used as a claim.
    let charge_voucher = voucher(VoucherKind::ClientCharge, WORKER, 200, 1).sign(&key(PROXY));
    assert_eq!(
        h.run(
            WORKER,
            TransactionBody::Claim {
                voucher: charge_voucher
            }
        ),
        Err(RuleError::WrongVoucherKind {
            expected: VoucherKind::WorkerPay
        })
    );
}

#[test]
fn forced_close_returns_stake_only_after_the_delay() {
    let mut h = Harness::with_contracts();
    assert_eq!(
        h.run(
            CLIENT,
            TransactionBody::CloseClient {
                proxy: id(PROXY),
                final_voucher: None,
            },
        ),
        Ok(Outcome::ClientCloseStarted {
            returned: 280,
            release_at: 1_050
        })
    );
    assert_eq!(h.balance(CLIENT), 980);
    // The proxy may still charge the stake during the delay.
    h.run(PROXY, charge(5, 1)).unwrap();
    h.ctx.now = 1_049;
    let finish = TransactionBody::FinishClientClose { proxy: id(PROXY) };
    assert_eq!(
        h.run(CLIENT, finish.clone()),
        Err(RuleError::TooEarly {
            release_at: 1_050,
            now: 1_049
        })
    );
    h.ctx.now = 1_050;
    assert_eq!(
        h.run(CLIENT, finish.clone()),
        Ok(Outcome::ClientClosed {
            collected: 0,
            returned: 15
        })
    );
    assert_eq!(h.balance(CLIENT), 995);
    assert_eq!(h.run(CLIENT, finish), Err(RuleError::NotClosing));
}

#[test]
fn a_release_must_be_final_and_not_ahead_of_what_the_client_paid() {
    let mut h = Harness::with_contracts();
    h.run(PROXY, charge(40, 3)).unwrap();
    let close = |v: Voucher| TransactionBody::CloseClient {
        proxy: id(PROXY),
        final_voucher: Some(v.sign(&key(PROXY))),
    };
    let not_final = voucher(VoucherKind::ClientCharge, CLIENT, 40, 3);
    assert_eq!(
        h.run(CLIENT, close(not_final)),
        Err(RuleError::VoucherNotFinal)
    );
    // The proxy cannot collect by releasing: a release above the applied payments is refused.
    let mut ahead = voucher(VoucherKind::ClientCharge, CLIENT, 41, 9);
    ahead.is_final = true;
    assert_eq!(
        h.run(CLIENT, close(ahead)),
        Err(RuleError::ReleaseAheadOfPayment {
            paid: 40,
            released: 41
        })
    );
    // A proxy statement is never a payment.
    let mut statement = voucher(VoucherKind::ClientCharge, CLIENT, 90, 9);
    statement.is_final = true;
    assert_eq!(
        h.run(
            PROXY,
            TransactionBody::Charge {
                voucher: statement.sign(&key(PROXY)),
            },
        ),
        Err(RuleError::WrongVoucherKind {
            expected: VoucherKind::ClientPay
        })
    );
    let mut release = voucher(VoucherKind::ClientCharge, CLIENT, 40, 3);
    release.is_final = true;
    assert_eq!(
        h.run(CLIENT, close(release)),
        Ok(Outcome::ClientClosed {
            collected: 0,
            returned: 260
        })
    );
}

#[test]
fn claims_use_the_stake_when_the_pool_is_short() {
    let mut h = Harness::with_contracts();
    h.run(PROXY, charge(10, 1)).unwrap();
    assert_eq!(
        h.run(WORKER, claim(60, 1)),
        Ok(Outcome::Claimed { paid: 60 })
    );
    let proxy = h.state.proxy(&id(PROXY)).unwrap();
    assert_eq!((proxy.pool, proxy.stake), (0, 50));
    assert_eq!(
        h.run(WORKER, claim(200, 2)),
        Err(RuleError::InsufficientProxyFunds {
            available: 50,
            needed: 140
        })
    );
}

#[test]
fn charge_beyond_the_balance_collects_what_is_there() {
    let mut h = Harness::with_contracts();
    assert_eq!(
        h.run(PROXY, charge(350, 1)),
        Ok(Outcome::Charged {
            collected: 300,
            shortfall: 50
        })
    );
    let client = h.state.client_contract(&id(PROXY), &id(CLIENT)).unwrap();
    assert_eq!((client.balance, client.charged), (0, 350));
}

#[test]
fn replayed_nonce_is_rejected() {
    let mut h = Harness::new();
    let tx = Transaction {
        signer: id(CLIENT),
        nonce: 5,
        body: TransactionBody::Transfer {
            to: id(WORKER),
            amount: 1,
        },
    };
    h.state.apply(&tx, &h.ctx).unwrap();
    assert_eq!(
        h.state.apply(&tx, &h.ctx),
        Err(RuleError::NonceReplayed { last: 5, got: 5 })
    );
    assert_eq!(h.balance(WORKER), 1_001);
}

#[test]
fn faucet_only_when_enabled() {
    let mut h = Harness::new();
    let mint = TransactionBody::Mint { amount: 500 };
    assert_eq!(h.run(CLIENT, mint.clone()), Err(RuleError::FaucetDisabled));
    h.ctx.faucet_enabled = true;
    h.run(CLIENT, mint).unwrap();
    assert_eq!(h.state.supply(), 4_500);
}

#[test]
fn one_faucet_grant_is_capped_far_below_the_supply_limit() {
    let mut h = Harness::new();
    h.ctx.faucet_enabled = true;
    for amount in [MAX_FAUCET_GRANT + 1, u64::MAX - 4_000] {
        assert_eq!(
            h.run(CLIENT, TransactionBody::Mint { amount }),
            Err(RuleError::FaucetGrantTooLarge {
                max: MAX_FAUCET_GRANT,
                got: amount
            })
        );
    }
    h.run(
        CLIENT,
        TransactionBody::Mint {
            amount: MAX_FAUCET_GRANT,
        },
    )
    .unwrap();
    assert_eq!(h.state.supply(), 4_000 + MAX_FAUCET_GRANT);

    // The supply limit still holds for grants within the cap.
    h.state = LedgerState::genesis(test_registry(), &[(id(OWNER), u64::MAX - 10)]).unwrap();
    assert_eq!(
        h.run(CLIENT, TransactionBody::Mint { amount: 11 }),
        Err(RuleError::SupplyOverflow)
    );
}

#[test]
fn weak_keys_can_neither_receive_money_nor_sign_vouchers() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(
            CLIENT,
            TransactionBody::Transfer {
                to: WEAK_KEY,
                amount: 5
            }
        ),
        Err(RuleError::InvalidKey)
    );
    assert_eq!(
        h.run(
            PROXY,
            TransactionBody::OpenProxy {
                stake: 100,
                voucher_key: WEAK_KEY
            }
        ),
        Err(RuleError::InvalidKey)
    );
    assert!(LedgerState::genesis(test_registry(), &[(WEAK_KEY, 1)]).is_err());
    let mut registry = test_registry();
    registry.owner = WEAK_KEY;
    registry.version += 1;
    assert!(matches!(
        h.run(OWNER, TransactionBody::UpdateRegistry { registry }),
        Err(RuleError::InvalidRegistry { .. })
    ));
}

#[test]
fn stakes_below_the_registry_minimum_are_refused() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(
            PROXY,
            TransactionBody::OpenProxy {
                stake: 99,
                voucher_key: id(PROXY)
            }
        ),
        Err(RuleError::StakeTooLow { min: 100, got: 99 })
    );
    let mut h = Harness::with_contracts();
    assert_eq!(
        h.run(
            WORKER,
            TransactionBody::OpenClient {
                proxy: id(PROXY),
                amount: 50,
                stake: 9
            }
        ),
        Err(RuleError::StakeTooLow { min: 10, got: 9 })
    );
}

#[test]
fn proxy_close_waits_for_the_delay_and_refuses_new_clients() {
    let mut h = Harness::with_contracts();
    h.run(PROXY, charge(30, 1)).unwrap();
    assert_eq!(
        h.run(PROXY, TransactionBody::StartProxyClose),
        Ok(Outcome::ProxyCloseStarted { release_at: 1_080 })
    );
    assert_eq!(
        h.run(
            WORKER,
            TransactionBody::OpenClient {
                proxy: id(PROXY),
                amount: 50,
                stake: 10
            }
        ),
        Err(RuleError::ProxyNotOpen { proxy: id(PROXY) })
    );
    assert!(matches!(
        h.run(PROXY, TransactionBody::FinishProxyClose),
        Err(RuleError::TooEarly { .. })
    ));
    h.ctx.now = 1_080;
    assert_eq!(
        h.run(PROXY, TransactionBody::FinishProxyClose),
        Ok(Outcome::ProxyClosed { returned: 130 })
    );
    // With the proxy gone for good, a client closes at once.
    assert_eq!(
        h.run(
            CLIENT,
            TransactionBody::CloseClient {
                proxy: id(PROXY),
                final_voucher: None
            }
        ),
        Ok(Outcome::ClientClosed {
            collected: 0,
            returned: 270
        })
    );
}

#[test]
fn state_commits_must_increase_and_detect_rollback() {
    let mut h = Harness::with_contracts();
    let commit = |seqno| TransactionBody::CommitProxyState {
        seqno,
        state_hash: Hash32([seqno as u8; 32]),
    };
    h.run(PROXY, commit(7)).unwrap();
    assert_eq!(
        h.run(PROXY, commit(7)),
        Err(RuleError::CommitNotNewer { last: 7, got: 7 })
    );
    let stored = h.state.proxy(&id(PROXY)).unwrap().commit.unwrap();
    assert_eq!((stored.seqno, stored.committed_at), (7, 1_000));
    assert_eq!(stored.check_local(7, &Hash32([7; 32])), Ok(()));
    assert_eq!(stored.check_local(9, &Hash32([0; 32])), Ok(()));
    assert_eq!(
        stored.check_local(6, &Hash32([6; 32])),
        Err(RollbackError::RolledBack {
            committed_seqno: 7,
            local_seqno: 6
        })
    );
    assert_eq!(
        stored.check_local(7, &Hash32([0; 32])),
        Err(RollbackError::Diverged { seqno: 7 })
    );
}

#[test]
fn registry_updates_need_the_owner_and_a_higher_version() {
    let mut h = Harness::new();
    let mut next = test_registry();
    next.version = 2;
    next.min_client_stake = 77;
    assert_eq!(
        h.run(
            CLIENT,
            TransactionBody::UpdateRegistry {
                registry: next.clone()
            }
        ),
        Err(RuleError::NotRegistryOwner)
    );
    h.run(
        OWNER,
        TransactionBody::UpdateRegistry {
            registry: next.clone(),
        },
    )
    .unwrap();
    assert_eq!(h.state.registry().min_client_stake, 77);
    assert_eq!(
        h.run(OWNER, TransactionBody::UpdateRegistry { registry: next }),
        Err(RuleError::RegistryVersionNotNewer { current: 2, got: 2 })
    );
}
