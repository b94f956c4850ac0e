//! The client × proxy channel: a client's money moves only with the client's own signature.
//!
//! - `Charge` applies a [`VoucherKind::ClientPay`] voucher: a cumulative total the client signed
//!   with its wallet key, checked against the client account it names (the account id *is* that
//!   Ed25519 key). Nothing the proxy signs can take a client's funds.
//! - `CloseClient` with a `final_voucher` closes at once with the proxy's **release**: a
//!   [`VoucherKind::ClientCharge`] statement marked final, signed by the proxy's voucher key, that
//!   states no more than the client's payments already applied. It moves no money; it only lets
//!   the proxy waive the close delay (which exists so that the proxy can still apply the client's
//!   latest payment). Without a release the client waits `client_delay_before_close`.

use super::{ContractStatus, LedgerState, Outcome, RuleError};
use crate::ids::AccountId;
use crate::voucher::{SignedVoucher, VoucherKind};

impl LedgerState {
    /// Applies a client's own payment voucher (anyone may submit it).
    pub(super) fn client_pay(&mut self, voucher: &SignedVoucher) -> Result<Outcome, RuleError> {
        let v = &voucher.voucher;
        if v.kind != VoucherKind::ClientPay {
            return Err(RuleError::WrongVoucherKind {
                expected: VoucherKind::ClientPay,
            });
        }
        self.existing_proxy(&v.proxy)?;
        let contract = self.existing_client(&v.proxy, &v.counterparty)?;
        voucher
            .verify(&v.counterparty)
            .map_err(|_| RuleError::BadClientSignature)?;
        let delta = Self::voucher_delta(contract.voucher_seqno, contract.charged, voucher)?;
        let (collected, shortfall) = self.collect_charge(voucher, delta);
        Ok(Outcome::Charged {
            collected,
            shortfall,
        })
    }

    /// Closes `signer`'s contract with `proxy` at once with the proxy's final release.
    pub(super) fn close_released(
        &mut self,
        signer: AccountId,
        proxy: AccountId,
        release: &SignedVoucher,
    ) -> Result<Outcome, RuleError> {
        let v = &release.voucher;
        if v.kind != VoucherKind::ClientCharge {
            return Err(RuleError::WrongVoucherKind {
                expected: VoucherKind::ClientCharge,
            });
        }
        if v.proxy != proxy || v.counterparty != signer {
            return Err(RuleError::VoucherMismatch);
        }
        if !v.is_final {
            return Err(RuleError::VoucherNotFinal);
        }
        self.verified_voucher(release, VoucherKind::ClientCharge)?;
        let paid = self.existing_client(&proxy, &signer)?.charged;
        if v.cumulative > paid {
            return Err(RuleError::ReleaseAheadOfPayment {
                paid,
                released: v.cumulative,
            });
        }
        Ok(self.close_returning_balance(proxy, signer))
    }

    /// Closes `client`'s contract with `proxy`, returning its whole balance to the client.
    pub(super) fn close_returning_balance(
        &mut self,
        proxy: AccountId,
        client: AccountId,
    ) -> Outcome {
        let contract = self.client_mut(proxy, client);
        let returned = contract.balance;
        contract.balance = 0;
        contract.status = ContractStatus::Closed;
        self.account_mut(client).balance += returned;
        Outcome::ClientClosed {
            collected: 0,
            returned,
        }
    }
}

#[cfg(test)]
mod tests;
