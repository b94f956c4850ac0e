//! The client × proxy channel, proxy side: who may be served on a wallet, and how the client pays.
//!
//! - **Proof of the wallet.** A client's certificate names its wallet (claims are self-asserted:
//!   clients run outside TEEs). Every request carries the wallet key's signature over the
//!   certificate's key (`x-cocoon-wallet-proof`); without a valid one the request is refused
//!   (401) before anything is reserved, so nobody is served on a wallet whose key it lacks. A
//!   proven (certificate key, wallet) pair is remembered: only the holder of that certificate's
//!   key can open a link with it.
//! - **Payments.** The client pays with cumulative `ClientPay` vouchers signed by its wallet key
//!   (`x-cocoon-payment` on a request, or `POST /cocoon/v1/payment`). The proxy keeps the newest
//!   one per client (in memory, and durably in its database: [`crate::charge_writer`]) and
//!   applies it on the ledger each settlement round; it holds no other claim on a client's money.
//!   A restarted proxy reloads the stored vouchers, checking each signature again.
//! - **Bounded exposure.** What the proxy charged a client beyond what the client has signed for
//!   is *unpaid*. A new request is refused (402) while the unpaid amount exceeds the bound:
//!   `--max-unpaid`, or by default the client contract's stake. So what a client that stops
//!   signing can take is the bound plus the worst cases of its requests in flight.

use std::collections::{HashMap, HashSet};

use cocoon_money::{AccountId, Amount, ClientContract, Settlement, SignedVoucher, VoucherKind};
use cocoon_node::wallet::check_wallet_proof;
use cocoon_proto::headers::{PAYMENT, WALLET_PROOF};
use cocoon_ratls::PeerIdentity;
use http::HeaderMap;

use super::{lock, wallet_of, Billing, BillingError};
use crate::store::StoredPayment;

/// Proven (certificate key, wallet) pairs kept; the set is emptied when it reaches this size, so
/// a flood of certificates costs one signature check each, never unbounded memory.
pub(super) const MAX_PROVEN: usize = 4096;

/// Proven pairs of (certificate key, wallet).
pub(super) type Proven = HashSet<([u8; 32], AccountId)>;

impl Billing {
    /// The wallet a request on a client link is billed to, once the request proves the client
    /// holds that wallet's key; records the payment voucher the request carries, if any.
    pub fn paying_client(
        &self,
        peer: Option<&PeerIdentity>,
        headers: &HeaderMap,
    ) -> Result<AccountId, BillingError> {
        let peer = peer.ok_or(BillingError::NoWallet)?;
        let client = wallet_of(peer).ok_or(BillingError::NoWallet)?;
        let proof = headers
            .get(WALLET_PROOF)
            .and_then(|value| value.to_str().ok())
            .ok_or(BillingError::WalletNotProven)?;
        let pair = (peer.public_key, client);
        if !lock(&self.proven).contains(&pair) {
            if !check_wallet_proof(&client, &peer.public_key, proof) {
                return Err(BillingError::WalletNotProven);
            }
            let mut proven = lock(&self.proven);
            if proven.len() >= MAX_PROVEN {
                proven.clear();
            }
            proven.insert(pair);
        }
        if let Some(payment) = headers.get(PAYMENT) {
            let voucher = serde_json::from_slice::<SignedVoucher>(payment.as_bytes())
                .map_err(|e| BillingError::BadPayment(format!("unreadable voucher: {e}")))?;
            self.accept_payment(client, voucher)?;
        }
        Ok(client)
    }

    /// Keeps `voucher` if it is `client`'s own payment to this proxy and newer than the one held.
    /// An older one (a replay, or reordered on the link) changes nothing.
    pub fn accept_payment(
        &self,
        client: AccountId,
        voucher: SignedVoucher,
    ) -> Result<(), BillingError> {
        let v = voucher.voucher;
        if v.kind != VoucherKind::ClientPay {
            return Err(not_addressed());
        }
        let newer = |held: Option<&SignedVoucher>| -> Result<bool, BillingError> {
            match held {
                Some(held) if held.voucher.seqno >= v.seqno => Ok(false),
                Some(held) if held.voucher.cumulative > v.cumulative => {
                    Err(BillingError::BadPayment(format!(
                        "statement {} pays {} in total, less than statement {} ({})",
                        v.seqno, v.cumulative, held.voucher.seqno, held.voucher.cumulative
                    )))
                }
                _ => Ok(true),
            }
        };
        if !newer(lock(&self.payments).get(&client))? {
            return Ok(());
        }
        check_payment(&*self.ledger, self.account, client, &voucher)?;
        let mut payments = lock(&self.payments);
        if newer(payments.get(&client))? {
            payments.insert(client, voucher);
            // Queued under the lock, so the writer sees a client's vouchers in seqno order.
            self.writer.record_payment(client, voucher);
        }
        Ok(())
    }

    /// Resolves once every payment accepted before is on disk: a payment sent alone is answered
    /// only then, so the client knows it needs no resending.
    pub async fn payments_written(&self) -> Result<(), BillingError> {
        self.writer
            .written()
            .await
            .map_err(|error| BillingError::ChargesNotWritable(error.to_string()))
    }

    /// The newest payment `client` signed that this proxy holds.
    pub(super) fn payment_of(&self, client: &AccountId) -> Option<SignedVoucher> {
        lock(&self.payments).get(client).copied()
    }

    /// What `client` has paid in total: its newest voucher here, or what the ledger applied.
    pub(super) fn paid(&self, client: &AccountId, contract: &ClientContract) -> Amount {
        self.payment_of(client)
            .map_or(0, |v| v.voucher.cumulative)
            .max(contract.charged)
    }

    /// Refuses a client whose unpaid charges (`charged` here, less what it paid) exceed the bound.
    pub(super) fn check_unpaid(
        &self,
        client: &AccountId,
        contract: &ClientContract,
        charged: Amount,
    ) -> Result<(), BillingError> {
        let unpaid = charged.saturating_sub(self.paid(client, contract));
        let bound = unpaid_bound(self.config.max_unpaid, contract);
        if unpaid > bound {
            return Err(BillingError::PaymentOverdue { unpaid, bound });
        }
        Ok(())
    }
}

fn not_addressed() -> BillingError {
    BillingError::BadPayment("the voucher is not this client's payment to this proxy".into())
}

/// Refuses a voucher that is not `client`'s payment on its channel with the proxy of `operator`
/// (the ids `ledger` gives for them), or not signed by `client`'s wallet key.
fn check_payment(
    ledger: &dyn Settlement,
    operator: AccountId,
    client: AccountId,
    voucher: &SignedVoucher,
) -> Result<(), BillingError> {
    let expected = ledger.voucher_ids(VoucherKind::ClientPay, operator, client)?;
    if voucher.voucher.kind != VoucherKind::ClientPay || voucher.voucher.ids() != expected {
        return Err(not_addressed());
    }
    voucher.verify(&client).map_err(|_| {
        BillingError::BadPayment("the voucher is not signed by the client's wallet key".into())
    })
}

/// The stored payments a restarted proxy may rely on: each one checked as when it arrived
/// (addressed to the proxy of `operator`, signed by its client's key), since the database file is
/// trusted no more than a peer. A row that fails is logged and left out; the ledger would refuse
/// it anyway.
pub(super) fn verified_payments(
    ledger: &dyn Settlement,
    operator: AccountId,
    stored: Vec<StoredPayment>,
) -> HashMap<AccountId, SignedVoucher> {
    let mut payments = HashMap::new();
    for (client, voucher) in stored {
        let checked = voucher.map_err(BillingError::from).and_then(|voucher| {
            check_payment(ledger, operator, client, &voucher)?;
            Ok(voucher)
        });
        match checked {
            Ok(voucher) => {
                payments.insert(client, voucher);
            }
            Err(error) => {
                tracing::warn!(%client, %error, "a stored client payment is refused; ignored")
            }
        }
    }
    payments
}

/// The most a client may owe unpaid: `configured`, or (0) its contract's stake.
pub(super) fn unpaid_bound(configured: Amount, contract: &ClientContract) -> Amount {
    if configured > 0 {
        configured
    } else {
        contract.stake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use cocoon_money::{SettlementBackend, Voucher, VoucherIds};
    use ed25519_dalek::SigningKey;

    #[test]
    fn only_stored_payments_that_verify_as_on_arrival_are_loaded() {
        let proxy = AccountId([7; 32]);
        let keys: Vec<SigningKey> = (1..=5u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let ids: Vec<AccountId> = keys.iter().map(AccountId::from).collect();
        let good = Voucher::client_pay(
            &keys[0],
            VoucherIds::accounts(proxy, AccountId::from(&keys[0])),
            100,
            3,
        );
        // Forged: claims client 1's payment, signed by another key.
        let mut forged = Voucher::client_pay(
            &keys[4],
            VoucherIds::accounts(proxy, AccountId::from(&keys[4])),
            900,
            9,
        );
        forged.voucher.counterparty = ids[1];
        // Genuine, but to another proxy.
        let foreign = Voucher::client_pay(
            &keys[2],
            VoucherIds::accounts(AccountId([8; 32]), AccountId::from(&keys[2])),
            50,
            1,
        );
        // Genuine, but its amount edited after signing.
        let mut edited = Voucher::client_pay(
            &keys[3],
            VoucherIds::accounts(proxy, AccountId::from(&keys[3])),
            10,
            1,
        );
        edited.voucher.cumulative = 10_000;
        let stored = vec![
            (ids[0], Ok(good)),
            (ids[1], Ok(forged)),
            (ids[2], Ok(foreign)),
            (ids[3], Ok(edited)),
            (ids[4], Err(StoreError::Corrupt("garbage".into()))),
        ];
        // The local ledger's ids (the accounts); no ledger is reached.
        let ledger = cocoon_ledger::LocalLedger::new("http://127.0.0.1:9")
            .connect(None)
            .unwrap();
        let loaded = verified_payments(&*ledger, proxy, stored);
        assert_eq!(loaded, HashMap::from([(ids[0], good)]));
    }
}
