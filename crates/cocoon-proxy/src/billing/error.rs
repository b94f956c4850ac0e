//! Why billing refuses a request or fails, and what the client is told.

use cocoon_money::{AccountId, Amount, PricingError, SettlementError};
use cocoon_proto::ErrorKind;

use crate::store::StoreError;

/// Why billing refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// The client's available balance cannot cover the request's worst case.
    #[error("insufficient quota: {available} available, {needed} needed for this request's worst case (max_tokens, prompt, max_coefficient); top up the client contract")]
    Insufficient {
        /// Available balance.
        available: Amount,
        /// The request's worst-case cost.
        needed: Amount,
    },
    /// The client has no open contract with this proxy.
    #[error("no open client contract of {client} with this proxy ({proxy}); deposit first")]
    NoContract {
        /// This proxy's wallet.
        proxy: AccountId,
        /// The client's wallet.
        client: AccountId,
    },
    /// The peer's attestation names no (valid) wallet to bill or pay.
    #[error("the peer's attestation names no valid wallet")]
    NoWallet,
    /// The request's worst case cannot even be priced.
    #[error("pricing: {0}")]
    Pricing(#[from] PricingError),
    /// The ledger failed or refused.
    #[error("ledger: {0}")]
    Ledger(#[from] SettlementError),
    /// The ledger cannot be reached, and what the client's contract as last read guarantees
    /// (its stake, see `billing/reservation.rs`) cannot cover the request.
    #[error("the ledger cannot be reached; until it can, this client may hold only {available} more (of its stake as last read), and this request's worst case is {needed}")]
    OutageBound {
        /// What the client may still hold.
        available: Amount,
        /// The request's worst-case cost.
        needed: Amount,
    },
    /// The proxy cannot write charges (a full disk, an I/O error): it takes no request it could
    /// not bill.
    #[error("the proxy cannot record charges ({0}); it takes no requests until it can")]
    ChargesNotWritable(String),
    /// The proxy's database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet key could not be opened.
    #[error(transparent)]
    Wallet(#[from] cocoon_node::wallet::WalletError),
    /// The operator's account cannot pay the stake its contract needs.
    #[error("the operator's account {account} holds {balance}, but its proxy contract needs a stake of {stake}: fund it (`cocoon wallet`) or set --faucet on a development ledger")]
    CannotStake {
        /// The proxy's wallet.
        account: AccountId,
        /// Its balance.
        balance: Amount,
        /// The stake needed.
        stake: Amount,
    },
    /// The request does not prove that the client holds the key of the wallet it names.
    #[error("the request does not prove that this client holds the key of the wallet its certificate names (x-cocoon-wallet-proof); nobody is served on another's wallet")]
    WalletNotProven,
    /// A payment voucher the client sent is not acceptable.
    #[error("payment refused: {0}")]
    BadPayment(String),
    /// The client has not signed for what it was served, beyond the bound.
    #[error("payment overdue: {unpaid} was served but not paid with the client's signed voucher, more than the {bound} this proxy extends; the client must send its payment")]
    PaymentOverdue {
        /// Charged but not covered by the client's newest voucher.
        unpaid: Amount,
        /// The most this proxy lets a client owe.
        bound: Amount,
    },
    /// The client asked for its release: this proxy serves it no more.
    #[error("this client's channel with the proxy was released for closing; it is served no more")]
    Released,
    /// A release cannot be given yet.
    #[error("no release yet: {0}")]
    ReleaseNotReady(String),
}

impl BillingError {
    /// The error kind a client sees.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BillingError::Insufficient { .. }
            | BillingError::NoContract { .. }
            | BillingError::NoWallet
            | BillingError::PaymentOverdue { .. }
            | BillingError::Released
            | BillingError::ReleaseNotReady(_)
            | BillingError::Pricing(_) => ErrorKind::InsufficientQuota,
            BillingError::WalletNotProven | BillingError::BadPayment(_) => ErrorKind::Unauthorized,
            BillingError::Ledger(SettlementError::Unavailable(_))
            | BillingError::OutageBound { .. }
            | BillingError::ChargesNotWritable(_) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}
