//! A client's release: the proxy's final `ClientCharge` statement, which lets the client close
//! its channel at once instead of after the registry's delay (`rules::client_channel`).
//!
//! The delay exists so that the proxy can still apply the client's latest payment; a release
//! waives it, so the proxy gives one only when nothing is left to apply: the client is marked
//! released first (no new request is reserved for it, durably: a restart does not serve it
//! again), no request of its is in flight, its newest payment covers everything charged, and that
//! payment is applied on the ledger. The release states that total. The ledger refuses a release
//! stating more than the payments applied, so the proxy cannot release past what it was paid
//! (and gains nothing by stating less: the client's balance comes back whole either way).

use cocoon_money::{AccountId, ClientContract, SignedVoucher, VoucherKind};

use super::{lock, Billing, BillingError};

impl Billing {
    /// Releases `client`: from now on it is served nothing; once its payments cover and have
    /// settled every charge, returns the final statement it closes its channel with. Asking again
    /// is harmless (the same total, signed again).
    pub async fn release(&self, client: AccountId) -> Result<SignedVoucher, BillingError> {
        let in_flight = {
            let reserved = lock(&self.reserved);
            let newly = lock(&self.released).insert(client);
            if newly {
                self.writer.record_release(client);
                tracing::info!(%client, "client released for closing: serving it no more");
            }
            reserved.get(&client).copied().unwrap_or(0)
        };
        self.writer
            .written()
            .await
            .map_err(|error| BillingError::ChargesNotWritable(error.to_string()))?;
        if in_flight > 0 {
            return Err(BillingError::ReleaseNotReady(
                "requests of this client are still being answered; ask again once they end".into(),
            ));
        }
        let charged = self.writer.charged(&client);
        let payment = self.payment_of(&client);
        let paid = payment.map_or(0, |v| v.voucher.cumulative);
        if paid < charged {
            return Err(BillingError::ReleaseNotReady(format!(
                "charged {charged}, but the client's newest payment covers {paid}: send the \
                 payment first"
            )));
        }
        let mut contract = self.fetch_contract(client).await?.contract;
        let applied =
            |contract: &Option<ClientContract>| contract.as_ref().map_or(0, |c| c.charged);
        if let (true, Some(payment)) = (applied(&contract) < charged, payment) {
            match self.ledger.submit_charge(payment).await {
                Ok(_) => {}
                Err(error) if error.is_stale_voucher() => {}
                Err(error) => return Err(error.into()),
            }
            contract = self.fetch_contract(client).await?.contract;
        }
        let seqno = contract
            .as_ref()
            .filter(|c| c.charged >= charged)
            .map(|c| c.voucher_seqno)
            .ok_or_else(|| {
                BillingError::ReleaseNotReady(format!(
                    "the ledger has applied {} of the {charged} charged",
                    applied(&contract)
                ))
            })?;
        let channel = self
            .ledger
            .voucher_ids(VoucherKind::ClientCharge, self.account, client)?
            .counterparty;
        Ok(self.signer.client_charge(channel, charged, seqno, true))
    }
}
