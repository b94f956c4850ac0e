//! The client × proxy channel: opening, topping up, withdrawing above the stake, closing (with the
//! delay or the proxy's release); a client's money moves only with the client's own signature.
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
use crate::registry::Amount;
use crate::voucher::{SignedVoucher, VoucherKind};

impl LedgerState {
    pub(super) fn open_client(
        &mut self,
        signer: AccountId,
        proxy: AccountId,
        amount: Amount,
        stake: Amount,
    ) -> Result<Outcome, RuleError> {
        self.open_proxy_contract(&proxy)?;
        if self
            .clients
            .get(&(proxy, signer))
            .is_some_and(|c| c.status != ContractStatus::Closed)
        {
            return Err(RuleError::ClientContractExists);
        }
        let min = self.registry.min_client_stake;
        if stake < min {
            return Err(RuleError::StakeTooLow { min, got: stake });
        }
        if amount < stake {
            return Err(RuleError::StakeTooLow {
                min: stake,
                got: amount,
            });
        }
        Self::require_funds(self.balance_of(&signer), amount)?;
        self.account_mut(signer).balance -= amount;
        // A reopened contract keeps its voucher history: the proxy's vouchers stay cumulative.
        let contract = self.client_mut(proxy, signer);
        contract.balance = amount;
        contract.stake = stake;
        contract.status = ContractStatus::Open;
        Ok(Outcome::Done)
    }

    pub(super) fn top_up(
        &mut self,
        signer: AccountId,
        proxy: AccountId,
        amount: Amount,
    ) -> Result<Outcome, RuleError> {
        self.open_proxy_contract(&proxy)?;
        if self.existing_client(&proxy, &signer)?.status != ContractStatus::Open {
            return Err(RuleError::ContractNotOpen);
        }
        Self::require_funds(self.balance_of(&signer), amount)?;
        self.account_mut(signer).balance -= amount;
        self.client_mut(proxy, signer).balance += amount;
        Ok(Outcome::Done)
    }

    pub(super) fn withdraw_client(
        &mut self,
        signer: AccountId,
        proxy: AccountId,
        amount: Amount,
    ) -> Result<Outcome, RuleError> {
        let contract = self.existing_client(&proxy, &signer)?;
        if contract.status != ContractStatus::Open {
            return Err(RuleError::ContractNotOpen);
        }
        if amount == 0 {
            return Err(RuleError::ZeroAmount);
        }
        let withdrawable = contract.withdrawable();
        if amount > withdrawable {
            return Err(RuleError::WithdrawBelowStake {
                withdrawable,
                requested: amount,
            });
        }
        self.client_mut(proxy, signer).balance -= amount;
        self.account_mut(signer).balance += amount;
        Ok(Outcome::Done)
    }

    pub(super) fn close_client(
        &mut self,
        signer: AccountId,
        proxy: AccountId,
        final_voucher: Option<&SignedVoucher>,
        now: u64,
    ) -> Result<Outcome, RuleError> {
        let contract = self.existing_client(&proxy, &signer)?;
        if contract.status == ContractStatus::Closed {
            return Err(RuleError::ContractNotOpen);
        }
        let (balance, stake, status) = (contract.balance, contract.stake, contract.status);
        let proxy_status = self.existing_proxy(&proxy)?.status;

        if let Some(release) = final_voucher {
            return self.close_released(signer, proxy, release);
        }

        if matches!(status, ContractStatus::Closing { .. }) {
            return Err(RuleError::AlreadyClosing);
        }
        if proxy_status == ContractStatus::Closed {
            // Nobody can charge any more, so there is nothing to wait for.
            let contract = self.client_mut(proxy, signer);
            contract.balance = 0;
            contract.status = ContractStatus::Closed;
            self.account_mut(signer).balance += balance;
            return Ok(Outcome::ClientClosed {
                collected: 0,
                returned: balance,
            });
        }
        let returned = balance.saturating_sub(stake);
        let release_at = now.saturating_add(self.registry.client_delay_before_close);
        let contract = self.client_mut(proxy, signer);
        contract.balance -= returned;
        contract.status = ContractStatus::Closing { release_at };
        if returned > 0 {
            self.account_mut(signer).balance += returned;
        }
        Ok(Outcome::ClientCloseStarted {
            returned,
            release_at,
        })
    }

    pub(super) fn finish_client_close(
        &mut self,
        signer: AccountId,
        proxy: AccountId,
        now: u64,
    ) -> Result<Outcome, RuleError> {
        let contract = self.existing_client(&proxy, &signer)?;
        let ContractStatus::Closing { release_at } = contract.status else {
            return Err(RuleError::NotClosing);
        };
        if now < release_at {
            return Err(RuleError::TooEarly { release_at, now });
        }
        Ok(self.close_returning_balance(proxy, signer))
    }

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
