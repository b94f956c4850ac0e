//! What a worker checks before it counts a proxy's voucher as pay, and how far a proxy's
//! vouchers may fall behind what the worker earned from it. Pure: no I/O, no clock.
//!
//! A voucher counts only if the key this proxy's attested certificate names (`voucher_key`)
//! signed it, it names the proxy contract of the operator that certificate names (`wallet`) and
//! this worker's payee — as the settlement backend names them (`Settlement::voucher_ids`: the
//! accounts on the local ledger, the contracts' ids on TON) — and it does not state less than a
//! voucher already held (the ledger would refuse it: a
//! proxy whose database was rolled back does that). The worker counts what it earned on each
//! proxy's links in this run, and stops serving a proxy whose vouchers fall more than a bound
//! behind.

use cocoon_money::{AccountId, Amount, VoucherIds, VoucherKind, WorkerStatement};
use cocoon_ratls::PeerIdentity;

/// The proxy at the other end of a link, as its attested claims name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkedProxy {
    /// The proxy contract its vouchers must name (the operator's account).
    pub contract: AccountId,
    /// The key its vouchers must be signed with (made at its start).
    pub voucher_key: AccountId,
}

impl LinkedProxy {
    /// The contract and voucher key a proxy's attested claims name; `None` if either is missing
    /// or not a valid key (such a proxy cannot pay, and is not served).
    pub fn of(peer: &PeerIdentity) -> Option<Self> {
        Some(Self {
            contract: cocoon_node::wallet::peer_wallet(peer)?.parse().ok()?,
            voucher_key: cocoon_node::wallet::peer_voucher_key(peer)?,
        })
    }
}

/// Why a proxy's statement is not taken as pay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherRefusal {
    /// It pays another account than this worker's payee.
    #[error("the voucher pays {0}, not this worker")]
    NotForThisWorker(AccountId),
    /// It names another proxy contract than the one this link's proxy attested.
    #[error("the voucher names proxy contract {named}, but this link's proxy is {linked}")]
    ForeignProxy {
        /// The contract the voucher names.
        named: AccountId,
        /// The contract the link's proxy attested.
        linked: AccountId,
    },
    /// The statement's figures are not the voucher's, or it is not a worker-pay voucher.
    #[error("the statement does not match its voucher")]
    Mismatch,
    /// The settlement backend cannot name the contract such a voucher would be claimed from.
    #[error("the voucher's contract ids cannot be derived: {0}")]
    NoIds(String),
    /// The signature is not the link's proxy's voucher key's.
    #[error("the voucher is not signed by this link's proxy's attested voucher key")]
    BadSignature,
    /// A newer voucher stating less than one already held: the ledger would refuse it.
    #[error("the voucher states {got} at statement {seqno}, less than the {held} already vouched")]
    Decreases {
        /// The cumulative amount already held.
        held: Amount,
        /// What this one states.
        got: Amount,
        /// Its statement number.
        seqno: u64,
    },
}

/// Checks a statement that came on `link`'s connection for `payee`; `expected` are the ids a
/// worker-pay voucher of the link's operator to `payee` names on the settlement backend.
pub fn check(
    statement: &WorkerStatement,
    payee: AccountId,
    link: &LinkedProxy,
    expected: VoucherIds,
) -> Result<(), VoucherRefusal> {
    let voucher = &statement.voucher.voucher;
    if statement.worker != payee {
        return Err(VoucherRefusal::NotForThisWorker(statement.worker));
    }
    if voucher.counterparty != expected.counterparty {
        return Err(VoucherRefusal::NotForThisWorker(voucher.counterparty));
    }
    if voucher.kind != VoucherKind::WorkerPay || voucher.cumulative != statement.earned {
        return Err(VoucherRefusal::Mismatch);
    }
    if statement.proxy != link.contract {
        return Err(VoucherRefusal::ForeignProxy {
            named: statement.proxy,
            linked: link.contract,
        });
    }
    if voucher.proxy != expected.proxy {
        return Err(VoucherRefusal::ForeignProxy {
            named: voucher.proxy,
            linked: expected.proxy,
        });
    }
    statement
        .voucher
        .verify(&link.voucher_key)
        .map_err(|_| VoucherRefusal::BadSignature)
}

/// What this worker earned from one proxy in this run against what that proxy vouched.
///
/// The first voucher of the run is taken to cover what was earned until it came (a restarted
/// worker does not know which earlier answers the proxy's totals include); from then on every
/// unit earned must be matched by a unit more in a later voucher. So a proxy can leave at most
/// the bound unvouched before its first voucher, and the bound again after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    earned: Amount,
    /// The first voucher's total, and what was earned when it came.
    first: Option<(Amount, Amount)>,
    /// The best voucher's total.
    vouched: Amount,
}

impl Tally {
    /// One more answer served, earning `amount`.
    pub fn earn(&mut self, amount: Amount) {
        self.earned = self.earned.saturating_add(amount);
    }

    /// A voucher for `cumulative` was taken (it was not below the best one held).
    pub fn vouched(&mut self, cumulative: Amount) {
        self.first.get_or_insert((cumulative, self.earned));
        self.vouched = self.vouched.max(cumulative);
    }

    /// Earned in this run and not covered by a voucher.
    pub fn unvouched(&self) -> Amount {
        match self.first {
            None => self.earned,
            Some((first, earned_then)) => self
                .earned
                .saturating_sub(earned_then)
                .saturating_sub(self.vouched.saturating_sub(first)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_money::{VoucherIds, VoucherSigner};
    use ed25519_dalek::SigningKey;

    const PROXY_KEY: [u8; 32] = [9; 32];

    fn link() -> LinkedProxy {
        LinkedProxy {
            contract: AccountId([1; 32]),
            voucher_key: AccountId::from(&SigningKey::from_bytes(&PROXY_KEY)),
        }
    }

    fn payee() -> AccountId {
        AccountId::from(&SigningKey::from_bytes(&[3; 32]))
    }

    fn statement(
        key: [u8; 32],
        proxy: AccountId,
        worker: AccountId,
        earned: Amount,
    ) -> WorkerStatement {
        let signer = VoucherSigner::new(SigningKey::from_bytes(&key), proxy);
        WorkerStatement {
            proxy,
            worker,
            earned,
            voucher: signer.worker_pay(worker, earned, 1),
        }
    }

    /// The check on the local ledger, where vouchers name the accounts.
    fn on_ledger(statement: &WorkerStatement) -> Result<(), VoucherRefusal> {
        check(
            statement,
            payee(),
            &link(),
            VoucherIds::accounts(link().contract, payee()),
        )
    }

    #[test]
    fn on_a_backend_whose_contracts_have_ids_of_their_own_the_voucher_must_name_those() {
        // TON: the proxy contract's and the payee wallet's ids, not the operator's and worker's keys.
        let contracts = VoucherIds {
            proxy: AccountId([0xC1; 32]),
            counterparty: AccountId([0xC2; 32]),
        };
        let signer = VoucherSigner::new(SigningKey::from_bytes(&PROXY_KEY), contracts.proxy);
        let good = WorkerStatement {
            proxy: link().contract,
            worker: payee(),
            earned: 50,
            voucher: signer.worker_pay(contracts.counterparty, 50, 1),
        };
        assert_eq!(check(&good, payee(), &link(), contracts), Ok(()));
        // The same voucher over the accounts would be refused by the contract: refused here too.
        let accounts = statement(PROXY_KEY, link().contract, payee(), 50);
        assert!(matches!(
            check(&accounts, payee(), &link(), contracts),
            Err(VoucherRefusal::NotForThisWorker(_))
        ));
        // Paying this worker's wallet, but claimable from another proxy contract.
        let elsewhere = WorkerStatement {
            voucher: VoucherSigner::new(SigningKey::from_bytes(&PROXY_KEY), AccountId([0xC3; 32]))
                .worker_pay(contracts.counterparty, 50, 1),
            ..good.clone()
        };
        assert!(matches!(
            check(&elsewhere, payee(), &link(), contracts),
            Err(VoucherRefusal::ForeignProxy { .. })
        ));
        // A statement naming another operator than the link's.
        let other_operator = WorkerStatement {
            proxy: AccountId([2; 32]),
            ..good
        };
        assert!(matches!(
            check(&other_operator, payee(), &link(), contracts),
            Err(VoucherRefusal::ForeignProxy { .. })
        ));
    }

    #[test]
    fn a_voucher_of_the_links_proxy_for_this_worker_is_taken() {
        let good = statement(PROXY_KEY, link().contract, payee(), 50);
        assert_eq!(on_ledger(&good), Ok(()));
    }

    #[test]
    fn forged_foreign_and_mismatched_vouchers_are_refused() {
        // Signed by another key (a forger, or another proxy's key) for this link's contract.
        let forged = statement([8; 32], link().contract, payee(), 50);
        assert_eq!(on_ledger(&forged), Err(VoucherRefusal::BadSignature));
        // Signed by this link's key, but naming another proxy's contract.
        let foreign = statement(PROXY_KEY, AccountId([2; 32]), payee(), 50);
        assert!(matches!(
            on_ledger(&foreign),
            Err(VoucherRefusal::ForeignProxy { .. })
        ));
        // For another worker.
        let other = statement(PROXY_KEY, link().contract, AccountId([4; 32]), 50);
        assert!(matches!(
            on_ledger(&other),
            Err(VoucherRefusal::NotForThisWorker(_))
        ));
        // A statement claiming more than its voucher says.
        let mut inflated = statement(PROXY_KEY, link().contract, payee(), 50);
        inflated.earned = 5_000;
        assert_eq!(on_ledger(&inflated), Err(VoucherRefusal::Mismatch));
        // A tampered amount breaks the signature.
        let mut tampered = statement(PROXY_KEY, link().contract, payee(), 50);
        tampered.voucher.voucher.cumulative = 5_000;
        tampered.earned = 5_000;
        assert_eq!(on_ledger(&tampered), Err(VoucherRefusal::BadSignature));
    }

    #[test]
    fn unvouched_earnings_grow_until_a_voucher_covers_them() {
        let mut tally = Tally::default();
        tally.earn(30);
        tally.earn(20);
        assert_eq!(tally.unvouched(), 50);
        // The first voucher (a total of 1 000 from before this run) covers what was earned so far.
        tally.vouched(1_000);
        assert_eq!(tally.unvouched(), 0);
        tally.earn(40);
        assert_eq!(tally.unvouched(), 40);
        tally.vouched(1_030);
        assert_eq!(tally.unvouched(), 10);
        tally.vouched(1_040);
        assert_eq!(tally.unvouched(), 0);
        // Vouching more than was earned here (answers of an earlier run) never goes negative.
        tally.vouched(2_000);
        assert_eq!(tally.unvouched(), 0);
        tally.earn(Amount::MAX);
        assert_eq!(tally.unvouched(), Amount::MAX - 50 - 1_000);
    }
}
