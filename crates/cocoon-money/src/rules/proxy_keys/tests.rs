//! Every way a proxy's voucher keys are authorized, evicted and revoked, and every refusal.

use super::super::tests::{id, key, test_registry};
use super::*;
use crate::ids::WEAK_KEY;
use crate::transaction::{Transaction, TransactionBody};
use crate::voucher::{Voucher, VoucherKind};
use crate::{Amount, Context};

const OPERATOR: u8 = 1;
const WORKER: u8 = 2;
const STRANGER: u8 = 3;
/// Seeds of proxy node keys (made at each start in real life).
const FIRST_NODE: u8 = 10;

struct Ledger {
    state: LedgerState,
}

impl Ledger {
    /// The operator's proxy contract is open with node key `FIRST_NODE` and a stake of 1 000.
    fn new() -> Self {
        let allocations: Vec<_> = (1..=3).map(|n| (id(n), 10_000)).collect();
        let mut ledger = Self {
            state: LedgerState::genesis(test_registry(), &allocations).unwrap(),
        };
        ledger
            .run(
                OPERATOR,
                TransactionBody::OpenProxy {
                    stake: 1_000,
                    voucher_key: id(FIRST_NODE),
                },
            )
            .unwrap();
        ledger
    }

    fn run(&mut self, who: u8, body: TransactionBody) -> Result<Outcome, RuleError> {
        let nonce = self.state.account(&id(who)).map_or(0, |a| a.nonce) + 1;
        let before = self.state.clone();
        let tx = Transaction {
            signer: id(who),
            nonce,
            body,
        };
        let ctx = Context {
            now: 1_000,
            faucet_enabled: false,
        };
        let result = self.state.apply(&tx, &ctx);
        if result.is_err() {
            assert_eq!(
                self.state, before,
                "a refused transaction changed the state"
            );
        }
        result
    }

    fn authorize(&mut self, who: u8, node: u8) -> Result<Outcome, RuleError> {
        self.run(who, TransactionBody::AuthorizeProxyKey { key: id(node) })
    }

    /// The worker claims a voucher for `cumulative` (statement `seqno`) signed by node key `node`.
    fn claim(&mut self, node: u8, cumulative: Amount, seqno: u64) -> Result<Outcome, RuleError> {
        let voucher = worker_voucher(node, cumulative, seqno);
        self.run(WORKER, TransactionBody::Claim { voucher })
    }

    fn contract(&self) -> &ProxyContract {
        self.state.proxy(&id(OPERATOR)).unwrap()
    }
}

/// The operator's proxy's voucher for `cumulative` to the worker, signed by node key `node`.
fn worker_voucher(node: u8, cumulative: Amount, seqno: u64) -> SignedVoucher {
    Voucher {
        kind: VoucherKind::WorkerPay,
        proxy: id(OPERATOR),
        counterparty: id(WORKER),
        cumulative,
        seqno,
        is_final: false,
    }
    .sign(&key(node))
}

#[test]
fn vouchers_of_the_key_before_a_restart_stay_claimable_after_it() {
    let mut ledger = Ledger::new();
    // The first node vouches 100 (statement 5) and is killed; its successor goes on from the
    // same database with a new key: 250 at statement 9.
    let old = worker_voucher(FIRST_NODE, 100, 5);
    ledger.authorize(OPERATOR, FIRST_NODE + 1).unwrap();
    assert_eq!(ledger.contract().voucher_key, id(FIRST_NODE + 1));
    assert_eq!(
        ledger.run(WORKER, TransactionBody::Claim { voucher: old }),
        Ok(Outcome::Claimed { paid: 100 })
    );
    assert_eq!(
        ledger.claim(FIRST_NODE + 1, 250, 9),
        Ok(Outcome::Claimed { paid: 150 })
    );
}

#[test]
fn only_the_contracts_owner_authorizes_keys() {
    let mut ledger = Ledger::new();
    // A stranger has no proxy contract: there is nothing of its own to authorize a key for,
    // and the operator's contract is another's.
    assert_eq!(
        ledger.authorize(STRANGER, 20),
        Err(RuleError::NoSuchProxy {
            proxy: id(STRANGER)
        })
    );
    assert!(!ledger.contract().authorizes(&id(20)));
    assert_eq!(
        ledger.claim(20, 100, 1),
        Err(RuleError::BadVoucherSignature)
    );
    // A stranger with a contract of its own authorizes keys for that contract only.
    ledger
        .run(
            STRANGER,
            TransactionBody::OpenProxy {
                stake: 1_000,
                voucher_key: id(STRANGER),
            },
        )
        .unwrap();
    ledger.authorize(STRANGER, 20).unwrap();
    assert_eq!(
        ledger.claim(20, 100, 1),
        Err(RuleError::BadVoucherSignature)
    );
}

#[test]
fn a_voucher_by_a_key_never_authorized_is_refused() {
    let mut ledger = Ledger::new();
    // The operator's own account key is not a voucher key unless authorized.
    assert_eq!(
        ledger.claim(OPERATOR, 100, 1),
        Err(RuleError::BadVoucherSignature)
    );
    assert_eq!(
        ledger.claim(WORKER, 100, 1),
        Err(RuleError::BadVoucherSignature)
    );
}

#[test]
fn the_oldest_key_is_evicted_beyond_the_bound() {
    let mut ledger = Ledger::new();
    let count = u8::try_from(MAX_PROXY_VOUCHER_KEYS).unwrap();
    for node in FIRST_NODE + 1..FIRST_NODE + count {
        ledger.authorize(OPERATOR, node).unwrap();
    }
    assert_eq!(
        ledger.contract().voucher_keys().count(),
        MAX_PROXY_VOUCHER_KEYS
    );
    assert!(ledger.contract().authorizes(&id(FIRST_NODE)));
    ledger.authorize(OPERATOR, FIRST_NODE + count).unwrap();
    assert_eq!(
        ledger.contract().voucher_keys().count(),
        MAX_PROXY_VOUCHER_KEYS
    );
    assert!(!ledger.contract().authorizes(&id(FIRST_NODE)));
    assert_eq!(
        ledger.claim(FIRST_NODE, 100, 1),
        Err(RuleError::BadVoucherSignature)
    );
    // Every key after it still signs.
    assert_eq!(
        ledger.claim(FIRST_NODE + 1, 100, 1),
        Ok(Outcome::Claimed { paid: 100 })
    );
    assert_eq!(
        ledger.claim(FIRST_NODE + count, 150, 2),
        Ok(Outcome::Claimed { paid: 50 })
    );
}

#[test]
fn authorizing_an_earlier_key_again_makes_it_current_without_a_duplicate() {
    let mut ledger = Ledger::new();
    ledger.authorize(OPERATOR, FIRST_NODE + 1).unwrap();
    ledger.authorize(OPERATOR, FIRST_NODE).unwrap();
    let contract = ledger.contract();
    assert_eq!(contract.voucher_key, id(FIRST_NODE));
    assert_eq!(contract.earlier_voucher_keys, vec![id(FIRST_NODE + 1)]);
}

#[test]
fn refusals_change_nothing() {
    let mut ledger = Ledger::new();
    assert_eq!(
        ledger.run(
            OPERATOR,
            TransactionBody::AuthorizeProxyKey { key: WEAK_KEY }
        ),
        Err(RuleError::InvalidKey)
    );
    assert_eq!(
        ledger.authorize(OPERATOR, FIRST_NODE),
        Err(RuleError::VoucherKeyAlreadyCurrent)
    );
    ledger
        .run(OPERATOR, TransactionBody::StartProxyClose)
        .unwrap();
    assert_eq!(
        ledger.authorize(OPERATOR, FIRST_NODE + 1),
        Err(RuleError::ProxyNotOpen {
            proxy: id(OPERATOR)
        })
    );
}

#[test]
fn a_revoked_key_signs_nothing_more_and_the_current_one_cannot_be_revoked() {
    let mut ledger = Ledger::new();
    ledger.authorize(OPERATOR, FIRST_NODE + 1).unwrap();
    let revoke = |node: u8| TransactionBody::RevokeProxyKey { key: id(node) };
    assert_eq!(
        ledger.run(STRANGER, revoke(FIRST_NODE)),
        Err(RuleError::NoSuchProxy {
            proxy: id(STRANGER)
        })
    );
    assert_eq!(
        ledger.run(OPERATOR, revoke(FIRST_NODE + 1)),
        Err(RuleError::NotAnEarlierVoucherKey)
    );
    assert_eq!(
        ledger.run(OPERATOR, revoke(30)),
        Err(RuleError::NotAnEarlierVoucherKey)
    );
    ledger.run(OPERATOR, revoke(FIRST_NODE)).unwrap();
    assert_eq!(
        ledger.claim(FIRST_NODE, 100, 1),
        Err(RuleError::BadVoucherSignature)
    );
    assert_eq!(
        ledger.claim(FIRST_NODE + 1, 100, 1),
        Ok(Outcome::Claimed { paid: 100 })
    );
}

#[test]
fn a_reopened_contract_keeps_honouring_the_keys_of_before() {
    let mut ledger = Ledger::new();
    ledger
        .run(OPERATOR, TransactionBody::StartProxyClose)
        .unwrap();
    let ctx = Context {
        now: 10_000,
        faucet_enabled: false,
    };
    let nonce = ledger.state.account(&id(OPERATOR)).unwrap().nonce + 1;
    let finish = Transaction {
        signer: id(OPERATOR),
        nonce,
        body: TransactionBody::FinishProxyClose,
    };
    ledger.state.apply(&finish, &ctx).unwrap();
    ledger
        .run(
            OPERATOR,
            TransactionBody::OpenProxy {
                stake: 1_000,
                voucher_key: id(FIRST_NODE + 1),
            },
        )
        .unwrap();
    assert!(ledger.contract().authorizes(&id(FIRST_NODE)));
    assert_eq!(
        ledger.claim(FIRST_NODE, 100, 1),
        Ok(Outcome::Claimed { paid: 100 })
    );
}
