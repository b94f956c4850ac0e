//! A contract's exit code mapped back to the rules' [`RuleError`] (the table of
//! docs/contracts.md). The contracts refuse with a code only; the numbers a `RuleError` carries
//! (the applied seqno, the stake, …) come from the state the backend read before sending, in
//! [`Facts`]. Pure: no I/O.

use crate::settlement_types::{AccountId, Amount, RuleError, SettlementError};

/// Which contract refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuser {
    /// A client channel.
    Channel,
    /// A proxy contract.
    Proxy,
    /// The root.
    Root,
}

/// What the backend knew when it sent the message: fills the refusal's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The amount the operation moves (or the stake it locks).
    pub amount: Amount,
    /// The registry's minimum stake for the contract.
    pub min_stake: Amount,
    /// What can be taken: the pool (commission), balance above the stake (withdraw), pool + stake
    /// (claim).
    pub available: Amount,
    /// The applied voucher's seqno and cumulative.
    pub applied_seqno: u64,
    /// See `applied_seqno`.
    pub applied_cumulative: Amount,
    /// The submitted voucher's seqno and cumulative.
    pub voucher_seqno: u64,
    /// See `voucher_seqno`.
    pub voucher_cumulative: Amount,
    /// When a close may finish, and chain time.
    pub release_at: u64,
    /// See `release_at`.
    pub now: u64,
    /// The registry's current version.
    pub registry_version: u64,
    /// The proxy operator the operation names.
    pub proxy: AccountId,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            amount: 0,
            min_stake: 0,
            available: 0,
            applied_seqno: 0,
            applied_cumulative: 0,
            voucher_seqno: 0,
            voucher_cumulative: 0,
            release_at: 0,
            now: 0,
            registry_version: 0,
            proxy: AccountId([0; 32]),
        }
    }
}

/// The error for exit code `exit_code` of `refuser`.
pub fn refusal(refuser: Refuser, exit_code: i32, facts: &Facts) -> SettlementError {
    use Refuser::{Channel, Proxy, Root};
    let rule = match (exit_code, refuser) {
        (101, _) => RuleError::ZeroAmount,
        (102, _) => RuleError::InsufficientFunds {
            available: facts.available,
            needed: facts.amount,
        },
        (103, _) => RuleError::StakeTooLow {
            min: facts.min_stake,
            got: facts.amount,
        },
        (104, Proxy) => RuleError::ProxyExists,
        (104, _) => RuleError::ClientContractExists,
        (105, Proxy) => RuleError::ProxyNotOpen { proxy: facts.proxy },
        (105, _) => RuleError::ContractNotOpen,
        (106, _) => RuleError::WithdrawBelowStake {
            withdrawable: facts.available,
            requested: facts.amount,
        },
        (107, Channel) => RuleError::BadClientSignature,
        (107, _) => RuleError::BadVoucherSignature,
        (108, _) => RuleError::VoucherNotNewer {
            applied: facts.applied_seqno,
            got: facts.voucher_seqno,
        },
        (109, _) => RuleError::VoucherDecreases {
            applied: facts.applied_cumulative,
            got: facts.voucher_cumulative,
        },
        (110, _) => RuleError::VoucherNotFinal,
        (111, _) => RuleError::ReleaseAheadOfPayment {
            paid: facts.applied_cumulative,
            released: facts.voucher_cumulative,
        },
        (112, _) => RuleError::InsufficientProxyFunds {
            available: facts.available,
            needed: facts
                .voucher_cumulative
                .saturating_sub(facts.applied_cumulative),
        },
        (113, _) => RuleError::TooEarly {
            release_at: facts.release_at,
            now: facts.now,
        },
        (114, _) => RuleError::NotClosing,
        (115, _) => RuleError::AlreadyClosing,
        (116, _) => RuleError::VoucherKeyAlreadyCurrent,
        (117, _) => RuleError::NotAnEarlierVoucherKey,
        (119, _) => RuleError::NotRegistryOwner,
        (120, _) => RuleError::RegistryVersionNotNewer {
            current: facts.registry_version,
            got: facts.voucher_seqno,
        },
        // 100 (not the owner): the backend addressed a contract its wallet does not own.
        (100, _) => {
            return SettlementError::Backend(format!(
                "the {refuser:?} contract refused this wallet as sender (exit 100)"
            ))
        }
        // 118: the backend sent too little value for the amount plus MIN_FEE: a bug here.
        (118, _) => {
            return SettlementError::Backend(format!(
            "the {refuser:?} contract found the message's value short of amount + fee (exit 118)"
        ))
        }
        (code, Root | Channel | Proxy) => {
            return SettlementError::Backend(format!(
                "the {refuser:?} contract failed with exit code {code}"
            ))
        }
    };
    SettlementError::Rejected(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_of_the_table_maps_to_its_rule() {
        let facts = Facts {
            applied_seqno: 5,
            voucher_seqno: 5,
            ..Facts::default()
        };
        let rule = |refuser, code| refusal(refuser, code, &facts).rule().cloned();
        use Refuser::*;
        assert_eq!(rule(Proxy, 104), Some(RuleError::ProxyExists));
        assert_eq!(rule(Channel, 104), Some(RuleError::ClientContractExists));
        assert_eq!(rule(Channel, 105), Some(RuleError::ContractNotOpen));
        assert_eq!(rule(Channel, 107), Some(RuleError::BadClientSignature));
        assert_eq!(rule(Proxy, 107), Some(RuleError::BadVoucherSignature));
        assert_eq!(
            rule(Channel, 108),
            Some(RuleError::VoucherNotNewer { applied: 5, got: 5 })
        );
        assert!(refusal(Channel, 108, &facts).is_stale_voucher());
        assert_eq!(rule(Root, 119), Some(RuleError::NotRegistryOwner));
        for code in 101..=120 {
            let error = refusal(Proxy, code, &facts);
            let is_rule = error.rule().is_some();
            assert_eq!(is_rule, !matches!(code, 100 | 118), "{code}: {error}");
        }
        for code in [0, 5, 9, 65535, -1, i32::MIN] {
            assert!(matches!(
                refusal(Channel, code, &facts),
                SettlementError::Backend(_)
            ));
        }
    }
}
