//! Statements a proxy gives its counterparties over their attested links: what a client has been
//! charged and what a worker has earned, each with the proxy's signed cumulative voucher, which the
//! counterparty (or anyone) can apply on the ledger.

use serde::{Deserialize, Serialize};

use crate::ids::AccountId;
use crate::registry::Amount;
use crate::voucher::SignedVoucher;

/// The proxy's answer to a client asking for its bill (`/cocoon/v1/billing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatement {
    /// The proxy contract (the proxy's wallet).
    pub proxy: AccountId,
    /// The client's wallet, as the proxy knows it from the client's attestation.
    pub client: AccountId,
    /// Everything the proxy has charged this client, in total.
    pub charged: Amount,
    /// Worst-case cost of the client's requests in flight, reserved against its balance.
    pub reserved: Amount,
    /// The proxy's voucher for `charged`; `None` before the first charge.
    pub voucher: Option<SignedVoucher>,
}

/// What the proxy tells a worker it has earned (`/cocoon/v1/earnings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatement {
    /// The proxy's operator account (its contract's owner).
    pub proxy: AccountId,
    /// The worker's wallet.
    pub worker: AccountId,
    /// Everything the worker has earned from this proxy, in total.
    pub earned: Amount,
    /// The proxy's worker-pay voucher for `earned`, claimable on the ledger. It names the ids the
    /// settlement backend gives for `proxy` and `worker` (`Settlement::voucher_ids`).
    pub voucher: SignedVoucher,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voucher::VoucherSigner;
    use ed25519_dalek::SigningKey;

    #[test]
    fn statements_round_trip_with_verifiable_vouchers() {
        let signer = VoucherSigner::new(SigningKey::from_bytes(&[4; 32]), AccountId([1; 32]));
        let statement = WorkerStatement {
            proxy: AccountId([1; 32]),
            worker: AccountId([2; 32]),
            earned: 40,
            voucher: signer.worker_pay(AccountId([2; 32]), 40, 3),
        };
        let back: WorkerStatement =
            serde_json::from_str(&serde_json::to_string(&statement).unwrap()).unwrap();
        assert_eq!(back, statement);
        back.voucher.verify(&signer.voucher_key()).unwrap();
        let bill = ClientStatement {
            proxy: AccountId([1; 32]),
            client: AccountId([3; 32]),
            charged: 0,
            reserved: 0,
            voucher: None,
        };
        let json = serde_json::to_value(&bill).unwrap();
        assert!(json["voucher"].is_null());
    }
}
