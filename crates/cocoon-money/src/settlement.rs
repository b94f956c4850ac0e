//! The [`Settlement`] trait: everything a proxy, client or worker needs from a settlement backend.
//!
//! The local ledger (`cocoon_ledger::LedgerClient`) implements it; a TON backend implements the same
//! trait with the same rules ([`crate::rules`]). A backend implements the few required methods;
//! the named operations are provided on top of [`Settlement::execute`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, Hash32};
use crate::registry::{Amount, Registry};
use crate::rules::{
    Account, ClientContract, Outcome, ProxyContract, RollbackError, RuleError, WorkerContract,
};
use crate::signed_registry::{RegistryAnswer, RegistryAuthority};
use crate::transaction::TransactionBody;
use crate::voucher::{SignedVoucher, VoucherIds, VoucherKind};

/// The result of an accepted transaction. (Not `deny_unknown_fields`: serde does not support it
/// beside `flatten`; a backend only writes it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Position of the transaction in the backend's log (1-based).
    pub seq: u64,
    /// What it did.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Why a settlement operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    /// The backend's rules refused the operation; nothing changed.
    #[error("rejected: {0}")]
    Rejected(RuleError),
    /// The operation needs a signing key this handle does not have.
    #[error("this settlement handle has no signing key")]
    NoSigningKey,
    /// The backend could not be reached or did not answer; the operation may or may not have
    /// been applied, so check the state before repeating a money transfer.
    #[error("settlement backend unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error of its own (bad request, storage failure, bad reply).
    #[error("settlement backend error: {0}")]
    Backend(String),
    /// The backend has no counterpart for this operation (TON keeps no proxy state commits);
    /// nothing was sent or changed.
    #[error("not supported by this settlement backend: {0}")]
    Unsupported(String),
    /// The proxy's local database is behind or diverged from its last commit.
    #[error(transparent)]
    RolledBack(#[from] RollbackError),
}

impl SettlementError {
    /// The rule that refused the operation, if that is what happened.
    pub fn rule(&self) -> Option<&RuleError> {
        match self {
            SettlementError::Rejected(rule) => Some(rule),
            _ => None,
        }
    }

    /// True for a voucher the backend had already applied (or a newer one): safe to ignore.
    pub fn is_stale_voucher(&self) -> bool {
        matches!(self.rule(), Some(RuleError::VoucherNotNewer { .. }))
    }
}

/// How often the default registry watch ([`Settlement::registry_answer_newer_than`]) asks a
/// backend that cannot hold a request open (a chain: a new block every few seconds).
pub const REGISTRY_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// The shortest pause between two polls of the default registry watch, whatever a backend's
/// [`Settlement::registry_poll_interval`] says: the watch never spins.
pub const MIN_REGISTRY_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Opens [`Settlement`] handles on one backend. The binary picks the backend from its
/// configuration (the local ledger today; TON later) and hands it to the roles, which open the
/// accounts they act for on it and depend on no backend's crate.
pub trait SettlementBackend: Send + Sync {
    /// A handle acting for `key`'s account, or one that only reads (`None`).
    fn connect(&self, key: Option<SigningKey>) -> Result<Arc<dyn Settlement>, SettlementError>;

    /// Where the backend is, for logs and for the commands a node tells its operator to run
    /// (the local ledger's URL, a `--ledger` flag's value).
    fn location(&self) -> &str;

    /// Who vouches for the registry this backend serves. Default: the owner's signature on each
    /// update; a backend whose registry is a contract the node pinned overrides it.
    fn registry_authority(&self) -> RegistryAuthority {
        RegistryAuthority::OwnerSignature
    }
}

/// A settlement backend, acting for one account (its signing key) where an operation needs one.
#[async_trait]
pub trait Settlement: Send + Sync {
    /// The account this handle acts for, if it can sign.
    fn account_id(&self) -> Option<AccountId>;

    /// The ids a voucher of `kind` names, for the proxy of operator `proxy` and `counterparty`
    /// (the client, or the worker): what a node signs a voucher over and checks it against.
    /// Default: the accounts themselves, as the local ledger names them; a backend whose
    /// contracts are accounts of their own (TON: the proxy contract, the client's channel, the
    /// worker's wallet) overrides it.
    fn voucher_ids(
        &self,
        kind: VoucherKind,
        proxy: AccountId,
        counterparty: AccountId,
    ) -> Result<VoucherIds, SettlementError> {
        let _ = kind;
        Ok(VoucherIds::accounts(proxy, counterparty))
    }

    /// Signs and applies one transaction as [`Self::account_id`].
    async fn execute(&self, body: TransactionBody) -> Result<Receipt, SettlementError>;

    /// The current registry document.
    async fn registry(&self) -> Result<Registry, SettlementError>;

    /// The current registry with the owner's signed update that set it, for a node that checks
    /// it ([`RegistryAnswer::verify`]). Default: the document without a signed update (which a
    /// node that pinned the owner refuses); a backend that keeps the update overrides it.
    async fn registry_answer(&self) -> Result<RegistryAnswer, SettlementError> {
        Ok(RegistryAnswer {
            registry: self.registry().await?,
            signed_update: None,
        })
    }

    /// How long the default [`Self::registry_answer_newer_than`] waits between two polls
    /// (never less than [`MIN_REGISTRY_POLL_INTERVAL`]).
    fn registry_poll_interval(&self) -> Duration {
        REGISTRY_POLL_INTERVAL
    }

    /// The registry watch: the registry once its version is above `version`, or the current one
    /// after `wait`. Default: polls [`Self::registry_answer`] every
    /// [`Self::registry_poll_interval`] until then (at most `wait / interval + 2` polls); a
    /// backend that can hold a request open (the local ledger's long poll) overrides it.
    async fn registry_answer_newer_than(
        &self,
        version: u64,
        wait: Duration,
    ) -> Result<RegistryAnswer, SettlementError> {
        let interval = self
            .registry_poll_interval()
            .max(MIN_REGISTRY_POLL_INTERVAL);
        let start = tokio::time::Instant::now();
        loop {
            let answer = self.registry_answer().await?;
            let waited = start.elapsed();
            if answer.registry.version > version || waited >= wait {
                return Ok(answer);
            }
            tokio::time::sleep(interval.min(wait - waited)).await;
        }
    }

    /// An account (zero balance and nonce if never seen).
    async fn account(&self, id: AccountId) -> Result<Account, SettlementError>;

    /// A proxy contract, if it exists.
    async fn proxy_contract(
        &self,
        proxy: AccountId,
    ) -> Result<Option<ProxyContract>, SettlementError>;

    /// The client contract of `client` with `proxy`, if it exists.
    async fn client_contract(
        &self,
        proxy: AccountId,
        client: AccountId,
    ) -> Result<Option<ClientContract>, SettlementError>;

    /// The worker contract of `worker` with `proxy`, if it exists.
    async fn worker_contract(
        &self,
        proxy: AccountId,
        worker: AccountId,
    ) -> Result<Option<WorkerContract>, SettlementError>;

    /// Development faucet: mint `amount` into this account.
    async fn faucet(&self, amount: Amount) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::Mint { amount }).await
    }

    /// Development faucet: mints what this account lacks of `at_least` (at most
    /// [`crate::rules::MAX_FAUCET_GRANT`]); returns what was minted.
    async fn top_up_from_faucet(&self, at_least: Amount) -> Result<Amount, SettlementError> {
        let me = self.account_id().ok_or(SettlementError::NoSigningKey)?;
        let balance = self.account(me).await?.balance;
        let missing = at_least
            .saturating_sub(balance)
            .min(crate::rules::MAX_FAUCET_GRANT);
        if missing > 0 {
            self.faucet(missing).await?;
        }
        Ok(missing)
    }

    /// Sends `amount` to `to`.
    async fn transfer(&self, to: AccountId, amount: Amount) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::Transfer { to, amount }).await
    }

    /// Proxy: opens this account's proxy contract with `stake`; vouchers must be signed by
    /// `voucher_key`.
    async fn open_proxy(
        &self,
        stake: Amount,
        voucher_key: AccountId,
    ) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::OpenProxy { stake, voucher_key })
            .await
    }

    /// Proxy operator: lets `key` (a proxy node's key of this start) sign the contract's
    /// vouchers; the keys authorized before stay valid, up to
    /// [`crate::rules::MAX_PROXY_VOUCHER_KEYS`].
    async fn authorize_proxy_key(&self, key: AccountId) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::AuthorizeProxyKey { key })
            .await
    }

    /// Proxy operator: stops honouring vouchers of `key`, an earlier voucher key (one that leaked).
    async fn revoke_proxy_key(&self, key: AccountId) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::RevokeProxyKey { key }).await
    }

    /// Proxy: adds to its stake.
    async fn add_proxy_stake(&self, amount: Amount) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::AddProxyStake { amount })
            .await
    }

    /// Proxy: commits its database position `(seqno, state_hash)`.
    async fn commit_proxy_state(
        &self,
        seqno: u64,
        state_hash: Hash32,
    ) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::CommitProxyState { seqno, state_hash })
            .await
    }

    /// Proxy, on start: fails with [`SettlementError::RolledBack`] if the local database
    /// (`local_seqno`, `local_hash`) is behind or diverged from the last commit of `proxy`.
    async fn check_proxy_state(
        &self,
        proxy: AccountId,
        local_seqno: u64,
        local_hash: Hash32,
    ) -> Result<(), SettlementError> {
        let commit = self.proxy_contract(proxy).await?.and_then(|p| p.commit);
        match commit {
            Some(commit) => Ok(commit.check_local(local_seqno, &local_hash)?),
            None => Ok(()),
        }
    }

    /// Proxy: withdraws commission from its pool of collected client funds.
    async fn withdraw_commission(&self, amount: Amount) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::WithdrawCommission { amount })
            .await
    }

    /// Proxy: starts closing its contract.
    async fn start_proxy_close(&self) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::StartProxyClose).await
    }

    /// Proxy: finishes closing once the delay has passed.
    async fn finish_proxy_close(&self) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::FinishProxyClose).await
    }

    /// Proxy (or anyone holding the voucher): applies a client-charge voucher.
    async fn submit_charge(&self, voucher: SignedVoucher) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::Charge { voucher }).await
    }

    /// Client: opens its contract with `proxy`, depositing `amount` of which `stake` is locked.
    async fn open_client(
        &self,
        proxy: AccountId,
        amount: Amount,
        stake: Amount,
    ) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::OpenClient {
            proxy,
            amount,
            stake,
        })
        .await
    }

    /// Client: adds funds to its contract with `proxy`.
    async fn top_up(&self, proxy: AccountId, amount: Amount) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::TopUp { proxy, amount }).await
    }

    /// Client: withdraws funds above the stake from its contract with `proxy`.
    async fn withdraw_client(
        &self,
        proxy: AccountId,
        amount: Amount,
    ) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::WithdrawClient { proxy, amount })
            .await
    }

    /// Client: closes its contract with `proxy`: at once with the proxy's final voucher, else
    /// the part above the stake now and the stake after the delay ([`Self::finish_client_close`]).
    async fn close_client(
        &self,
        proxy: AccountId,
        final_voucher: Option<SignedVoucher>,
    ) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::CloseClient {
            proxy,
            final_voucher,
        })
        .await
    }

    /// Client: collects the stake once the close delay has passed.
    async fn finish_client_close(&self, proxy: AccountId) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::FinishClientClose { proxy })
            .await
    }

    /// Worker (or anyone holding the voucher): claims earnings with a worker-pay voucher.
    async fn claim(&self, voucher: SignedVoucher) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::Claim { voucher }).await
    }

    /// Registry owner: replaces the registry document.
    async fn update_registry(&self, registry: Registry) -> Result<Receipt, SettlementError> {
        self.execute(TransactionBody::UpdateRegistry { registry })
            .await
    }
}

#[cfg(test)]
mod tests;
