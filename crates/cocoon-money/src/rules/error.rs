//! Why the rules refuse a transaction.

use serde::{Deserialize, Serialize};

use crate::ids::AccountId;
use crate::registry::Amount;
use crate::voucher::VoucherKind;

/// Why the rules reject a transaction. Serialisable, so the HTTP client gets back the same value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleError {
    /// The nonce is not above the account's last one (a replay or a stale nonce).
    #[error("nonce {got} is not above the last used nonce {last}")]
    NonceReplayed {
        /// The account's last nonce.
        last: u64,
        /// The nonce given.
        got: u64,
    },
    /// Moving zero is refused, so no transaction is a silent no-op.
    #[error("amount must be positive")]
    ZeroAmount,
    /// Not enough funds where they were to be taken from.
    #[error("insufficient funds: {available} available, {needed} needed")]
    InsufficientFunds {
        /// What is there.
        available: Amount,
        /// What was asked for.
        needed: Amount,
    },
    /// The faucet is off on this ledger.
    #[error("the faucet is disabled on this ledger")]
    FaucetDisabled,
    /// One faucet grant is capped at [`MAX_FAUCET_GRANT`](crate::rules::MAX_FAUCET_GRANT).
    #[error("a faucet grant is at most {max}, {got} asked")]
    FaucetGrantTooLarge {
        /// The cap.
        max: Amount,
        /// What was asked for.
        got: Amount,
    },
    /// Minting would take the total supply past the 64-bit limit.
    #[error("total supply would overflow")]
    SupplyOverflow,
    /// A key given in the transaction is not a valid Ed25519 public key, or is a weak
    /// (small-order) one that anybody could sign for.
    #[error("not a valid, non-weak Ed25519 public key")]
    InvalidKey,
    /// The signer already has an open (or closing) proxy contract.
    #[error("proxy contract already exists")]
    ProxyExists,
    /// No proxy contract with this id.
    #[error("no proxy contract {proxy}")]
    NoSuchProxy {
        /// The missing proxy id.
        proxy: AccountId,
    },
    /// The proxy contract is closing or closed.
    #[error("proxy contract {proxy} is not open")]
    ProxyNotOpen {
        /// The proxy id.
        proxy: AccountId,
    },
    /// The stake is below the registry's minimum, or the deposit is below the stake.
    #[error("stake too low: at least {min} required, {got} given")]
    StakeTooLow {
        /// The minimum.
        min: Amount,
        /// What was given.
        got: Amount,
    },
    /// No client contract for this client and proxy.
    #[error("no client contract of {client} with proxy {proxy}")]
    NoSuchClientContract {
        /// The proxy id.
        proxy: AccountId,
        /// The client id.
        client: AccountId,
    },
    /// The client already has an open (or closing) contract with this proxy.
    #[error("client contract already exists")]
    ClientContractExists,
    /// The client contract is closing or closed.
    #[error("client contract is not open")]
    ContractNotOpen,
    /// Withdrawal would dip into the stake.
    #[error("only {withdrawable} can be withdrawn, {requested} requested")]
    WithdrawBelowStake {
        /// Balance above the stake.
        withdrawable: Amount,
        /// What was asked for.
        requested: Amount,
    },
    /// The voucher is of the other kind (charge vs pay).
    #[error("wrong voucher kind, expected {expected:?}")]
    WrongVoucherKind {
        /// The kind this operation needs.
        expected: VoucherKind,
    },
    /// The voucher names another proxy or counterparty than the transaction.
    #[error("voucher is for another contract")]
    VoucherMismatch,
    /// The voucher is not signed by the proxy's voucher key.
    #[error("voucher signature does not verify under the proxy's voucher key")]
    BadVoucherSignature,
    /// The voucher is not newer than the last applied one (a replay or an out-of-order voucher).
    #[error("voucher seqno {got} is not above the applied seqno {applied}")]
    VoucherNotNewer {
        /// Seqno already applied.
        applied: u64,
        /// Seqno given.
        got: u64,
    },
    /// A newer voucher with a lower cumulative amount: the proxy broke monotonicity.
    #[error("voucher amount {got} is below the applied amount {applied}")]
    VoucherDecreases {
        /// Cumulative amount already applied.
        applied: Amount,
        /// Cumulative amount given.
        got: Amount,
    },
    /// Immediate close needs a voucher the proxy marked final.
    #[error("voucher is not marked final")]
    VoucherNotFinal,
    /// A client payment is not signed by the client account it names.
    #[error("payment voucher is not signed by the client's own key")]
    BadClientSignature,
    /// The proxy's release states more than the client's applied payments: apply them first.
    #[error("release states {released} paid, but the client's applied payments total {paid}")]
    ReleaseAheadOfPayment {
        /// What the client's applied vouchers total.
        paid: Amount,
        /// What the release states.
        released: Amount,
    },
    /// The proxy's pool and stake cannot cover the claim.
    #[error("proxy funds insufficient: {available} available, {needed} needed")]
    InsufficientProxyFunds {
        /// Pool plus stake.
        available: Amount,
        /// What the claim needs.
        needed: Amount,
    },
    /// The state commit's seqno is not above the last one.
    #[error("commit seqno {got} is not above the last commit {last}")]
    CommitNotNewer {
        /// Last committed seqno.
        last: u64,
        /// Seqno given.
        got: u64,
    },
    /// The close delay has not passed.
    #[error("locked until {release_at} (now {now})")]
    TooEarly {
        /// When the funds are released.
        release_at: u64,
        /// The current time.
        now: u64,
    },
    /// The contract is not closing.
    #[error("contract is not closing")]
    NotClosing,
    /// The contract is already closing.
    #[error("contract is already closing")]
    AlreadyClosing,
    /// Only the registry owner may update the registry.
    #[error("signer is not the registry owner")]
    NotRegistryOwner,
    /// The new registry version is not above the current one.
    #[error("registry version {got} is not above {current}")]
    RegistryVersionNotNewer {
        /// The current version.
        current: u64,
        /// The version given.
        got: u64,
    },
    /// The registry document is inconsistent.
    #[error("invalid registry: {reason}")]
    InvalidRegistry {
        /// What is wrong.
        reason: String,
    },
    /// The key is already the proxy contract's current voucher key.
    #[error("the key is already this proxy's current voucher key")]
    VoucherKeyAlreadyCurrent,
    /// The key to revoke is not an earlier voucher key of the proxy contract (the current one
    /// cannot be revoked: authorize its successor first).
    #[error("the key is not an earlier voucher key of this proxy")]
    NotAnEarlierVoucherKey,
}
