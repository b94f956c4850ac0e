//! Which keys may sign a proxy contract's vouchers.
//!
//! A proxy contract is owned by its operator's account; the proxy node signs vouchers with a key
//! it makes at each start and never stores (in a TD, its attested key). The owner authorizes each
//! such key ([`TransactionBody::AuthorizeProxyKey`](crate::TransactionBody::AuthorizeProxyKey)).
//! Vouchers signed before a restart stay claimable: the keys authorized before the current one
//! stay valid, up to [`MAX_PROXY_VOUCHER_KEYS`] in all. Authorizing one more evicts the oldest,
//! whose unclaimed vouchers can then no longer be applied — but vouchers are cumulative, and a
//! restarted proxy goes on from its database, so its next voucher to the same worker (signed with
//! the new key) covers everything the evicted one did. Only a worker that holds an evicted key's
//! voucher and never gets a later one loses it: workers claim promptly
//! (`--claim-threshold`), and a proxy restarting eight times before it pays its workers again is
//! one they stop serving (`--max-unvouched`). A key that leaked is revoked at once
//! ([`TransactionBody::RevokeProxyKey`](crate::TransactionBody::RevokeProxyKey)).

use super::{usable_key, ContractStatus, LedgerState, Outcome, ProxyContract, RuleError};
use crate::ids::AccountId;
use crate::voucher::SignedVoucher;

/// The most keys whose vouchers one proxy contract honours at once (the current one included).
pub const MAX_PROXY_VOUCHER_KEYS: usize = 8;

impl ProxyContract {
    /// Whether vouchers signed by `key` are honoured.
    pub fn authorizes(&self, key: &AccountId) -> bool {
        self.voucher_key == *key || self.earlier_voucher_keys.contains(key)
    }

    /// Every key whose vouchers are honoured, the current one first.
    pub fn voucher_keys(&self) -> impl Iterator<Item = &AccountId> {
        std::iter::once(&self.voucher_key).chain(self.earlier_voucher_keys.iter().rev())
    }

    /// Checks a voucher's signature against every authorized key.
    pub(super) fn check_voucher_signature(&self, voucher: &SignedVoucher) -> Result<(), RuleError> {
        if self.voucher_keys().any(|key| voucher.verify(key).is_ok()) {
            Ok(())
        } else {
            Err(RuleError::BadVoucherSignature)
        }
    }

    /// Makes `key` the current voucher key; the current one becomes an earlier one, and the
    /// oldest beyond [`MAX_PROXY_VOUCHER_KEYS`] is evicted.
    pub(super) fn authorize(&mut self, key: AccountId) {
        if key == self.voucher_key {
            return;
        }
        self.earlier_voucher_keys.retain(|earlier| *earlier != key);
        self.earlier_voucher_keys.push(self.voucher_key);
        self.voucher_key = key;
        let excess = self
            .earlier_voucher_keys
            .len()
            .saturating_sub(MAX_PROXY_VOUCHER_KEYS - 1);
        self.earlier_voucher_keys.drain(..excess);
    }
}

impl LedgerState {
    pub(super) fn authorize_proxy_key(
        &mut self,
        signer: AccountId,
        key: AccountId,
    ) -> Result<Outcome, RuleError> {
        // The contract is the signer's own: nobody else can name a key for it.
        let contract = self.open_proxy_contract(&signer)?;
        usable_key(&key)?;
        if contract.voucher_key == key {
            return Err(RuleError::VoucherKeyAlreadyCurrent);
        }
        self.proxy_mut(signer).authorize(key);
        Ok(Outcome::Done)
    }

    pub(super) fn revoke_proxy_key(
        &mut self,
        signer: AccountId,
        key: AccountId,
    ) -> Result<Outcome, RuleError> {
        // A closing contract's workers still claim; revoking a leaked key must stay possible.
        let contract = self.existing_proxy(&signer)?;
        if contract.status == ContractStatus::Closed
            || !contract.earlier_voucher_keys.contains(&key)
        {
            return Err(RuleError::NotAnEarlierVoucherKey);
        }
        self.proxy_mut(signer)
            .earlier_voucher_keys
            .retain(|earlier| *earlier != key);
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests;
