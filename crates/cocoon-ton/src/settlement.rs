//! [`TonSettlement`]: the `Settlement` trait over the Cocoon contracts on TON, for one v5r1 wallet
//! (its Ed25519 key is the account id). Operations become one wallet message each
//! ([`crate::operations`]), sent through the wallet's [`WalletSender`]; the backend then follows the
//! trace (the wallet's transaction, then the contracts') and maps a contract's exit code back to
//! the rules' `RuleError`. Reads are get-methods.
//!
//! Chain latency (blocks of ~5 s, a trace of 2–4 transactions) is what every call costs: this
//! backend is for settlement rounds, never a request's path.
//!
//! Ids: an account id is an Ed25519 key and stands for the v5r1 wallet of that key. A proxy is
//! named by its operator's account id, as on the local ledger; the backend derives the proxy
//! contract from it (with the registry's minimum stake and delay), and a client's channel from
//! both. Vouchers, checked on chain, name the contracts instead: see [`TonSettlement::voucher_ids`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tonlib_core::TonAddress;

use crate::api::TonApi;
use crate::contracts::{account_id, wallet_address, ChannelTerms, ProxyTerms};
use crate::getters::{self, GetterError, Status};
use crate::registry_cells::{RegistryLists, RegistryParams};
use crate::sender::{SendError, WalletSender};
use crate::settlement_types::{
    Account, AccountId, ClientContract, ContractStatus, Hash32, Prices, ProxyContract, Receipt,
    RegisteredProxy, Registry, Settlement, SettlementError, TransactionBody, VoucherIds,
    VoucherKind, WorkerContract,
};
use crate::trace::TraceError;

/// How often a node on the devnet looks for a new registry version: the devnet makes a block per
/// message, not one every few seconds.
const DEVNET_REGISTRY_POLL: Duration = Duration::from_millis(500);

/// What every message that moves money brings above its amount (`MIN_FEE` of the contracts):
/// gas and forward fees; the surplus stays with the contract as its fee reserve or comes back.
pub const MESSAGE_FEE: u64 = 50_000_000;

/// The registry terms that are part of contract addresses, as last read from the root.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    pub(crate) min_client_stake: u64,
    pub(crate) min_proxy_stake: u64,
    pub(crate) client_delay: u32,
    pub(crate) proxy_delay: u32,
}

impl From<&RegistryParams> for Terms {
    fn from(p: &RegistryParams) -> Self {
        Terms {
            min_client_stake: p.min_client_stake,
            min_proxy_stake: p.min_proxy_stake,
            client_delay: p.client_delay_before_close,
            proxy_delay: p.proxy_delay_before_close,
        }
    }
}

/// The wallet a handle acts for.
pub(crate) struct Signer {
    pub(crate) sender: WalletSender,
    pub(crate) me: AccountId,
}

/// The Cocoon contracts on TON, acting for one wallet (or only reading). Made by
/// [`crate::TonBackend`].
pub struct TonSettlement {
    pub(crate) api: TonApi,
    pub(crate) signer: Option<Signer>,
    pub(crate) root: TonAddress,
    /// Shared by every handle of one backend: a `registry()` read refreshes them all.
    pub(crate) terms: Arc<RwLock<Terms>>,
    pub(crate) devnet: Option<String>,
    pub(crate) poll: Duration,
}

pub(crate) fn cell_error(error: tonlib_core::cell::TonCellError) -> SettlementError {
    SettlementError::Backend(format!("cannot build a cell: {error}"))
}

pub(crate) fn getter_error(error: GetterError) -> SettlementError {
    match error {
        GetterError::Api(error) => SettlementError::Unavailable(error.to_string()),
        other => SettlementError::Backend(other.to_string()),
    }
}

impl From<SendErrorOrTrace> for SettlementError {
    fn from(error: SendErrorOrTrace) -> Self {
        match error {
            // The wallet's transaction ran and failed, or the message could not be built:
            // nothing was applied.
            SendErrorOrTrace::Send(error @ (SendError::Failed { .. } | SendError::Build(_))) => {
                SettlementError::Backend(error.to_string())
            }
            SendErrorOrTrace::Send(error) => SettlementError::Unavailable(error.to_string()),
            SendErrorOrTrace::Trace(error) => SettlementError::Unavailable(format!(
                "sent, but the trace could not be followed (check the state before repeating): {error}"
            )),
        }
    }
}

/// A failure between signing and seeing the contract's transaction.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendErrorOrTrace {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

impl TonSettlement {
    /// This handle's signer: its wallet's sender and account id.
    pub(crate) fn signer(&self) -> Result<&Signer, SettlementError> {
        self.signer.as_ref().ok_or(SettlementError::NoSigningKey)
    }

    /// This handle's account id (its key), if it can sign.
    pub(crate) fn me(&self) -> Result<AccountId, SettlementError> {
        Ok(self.signer()?.me)
    }

    /// This handle's wallet, if it can sign.
    pub fn wallet(&self) -> Option<&TonAddress> {
        self.signer.as_ref().map(|s| s.sender.address())
    }

    pub(crate) fn terms(&self) -> Terms {
        *self
            .terms
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Code and initial data of the proxy contract of the operator `operator`.
    pub fn proxy_deployment(
        &self,
        operator: &AccountId,
    ) -> Result<crate::contracts::Deployment, SettlementError> {
        let terms = self.terms();
        ProxyTerms {
            owner: wallet_address(operator.as_bytes()).map_err(cell_error)?,
            root: self.root.clone(),
            min_stake: terms.min_proxy_stake,
            close_delay: terms.proxy_delay,
        }
        .deployment()
        .map_err(cell_error)
    }

    /// The proxy contract of the operator `operator`.
    pub fn proxy_address(&self, operator: &AccountId) -> Result<TonAddress, SettlementError> {
        self.proxy_deployment(operator)?
            .address()
            .map_err(cell_error)
    }

    /// The terms of the channel of client `client` with the proxy of operator `operator`.
    pub fn channel_terms(
        &self,
        operator: &AccountId,
        client: &AccountId,
    ) -> Result<ChannelTerms, SettlementError> {
        let terms = self.terms();
        Ok(ChannelTerms {
            proxy: self.proxy_address(operator)?,
            owner: wallet_address(client.as_bytes()).map_err(cell_error)?,
            client_key: *client.as_bytes(),
            min_stake: terms.min_client_stake,
            close_delay: terms.client_delay,
        })
    }

    /// The channel of `client` with the proxy of `operator`.
    pub fn channel_address(
        &self,
        operator: &AccountId,
        client: &AccountId,
    ) -> Result<TonAddress, SettlementError> {
        self.channel_terms(operator, client)?
            .deployment()
            .and_then(|d| d.address())
            .map_err(cell_error)
    }

    /// The ids a voucher of `kind` names on TON, for the proxy operator `operator` and the
    /// counterparty account `counterparty` (the client, or the worker): the proxy contract's id,
    /// and the client's channel (`client_pay`, `client_charge`) or the worker's wallet
    /// (`worker_pay`, whose payout goes to `0:counterparty`). The local ledger names the accounts
    /// themselves; a node signs and verifies over what its backend names (the trait method this
    /// proposes: `Settlement::voucher_ids`, identity by default).
    pub fn voucher_ids(
        &self,
        kind: VoucherKind,
        operator: &AccountId,
        counterparty: &AccountId,
    ) -> Result<VoucherIds, SettlementError> {
        let proxy = AccountId(account_id(&self.proxy_address(operator)?));
        let other = match kind {
            VoucherKind::ClientPay | VoucherKind::ClientCharge => {
                account_id(&self.channel_address(operator, counterparty)?)
            }
            VoucherKind::WorkerPay => {
                account_id(&wallet_address(counterparty.as_bytes()).map_err(cell_error)?)
            }
        };
        Ok(VoucherIds {
            proxy,
            counterparty: AccountId(other),
        })
    }

    async fn read<T>(
        &self,
        address: &TonAddress,
        method: &'static str,
        args: &[serde_json::Value],
        decode: impl FnOnce(&mut crate::stack::StackReader) -> Result<T, crate::stack::StackError>,
    ) -> Result<Option<T>, SettlementError> {
        match getters::call(&self.api, address, method, args, decode).await {
            Ok(value) => Ok(Some(value)),
            Err(GetterError::NotDeployed) => Ok(None),
            Err(error) => Err(getter_error(error)),
        }
    }

    /// This wallet's balance (nano-TON; a balance past 64 bits reads as `u64::MAX`).
    pub(crate) async fn wallet_balance(&self) -> Result<u64, SettlementError> {
        let state = self
            .api
            .account(self.signer()?.sender.address())
            .await
            .map_err(|e| SettlementError::Unavailable(e.to_string()))?;
        Ok(u64::try_from(state.balance).unwrap_or(u64::MAX))
    }

    /// Get-method `method` of the root (which exists: the backend connected to it).
    pub(crate) async fn root_get<T>(
        &self,
        method: &'static str,
        decode: impl FnOnce(&mut crate::stack::StackReader) -> Result<T, crate::stack::StackError>,
    ) -> Result<T, SettlementError> {
        getters::call(&self.api, &self.root, method, &[], decode)
            .await
            .map_err(getter_error)
    }

    pub(crate) async fn channel_state(
        &self,
        address: &TonAddress,
    ) -> Result<Option<getters::ChannelState>, SettlementError> {
        self.read(address, "channel_state", &[], getters::channel_state)
            .await
    }

    pub(crate) async fn proxy_state(
        &self,
        address: &TonAddress,
    ) -> Result<Option<getters::ProxyState>, SettlementError> {
        self.read(address, "proxy_state", &[], getters::proxy_state)
            .await
    }

    pub(crate) async fn worker_paid(
        &self,
        proxy: &TonAddress,
        worker: &[u8; 32],
    ) -> Result<Option<getters::WorkerPaid>, SettlementError> {
        let args = [getters::int_arg(worker)];
        self.read(proxy, "worker_paid", &args, getters::worker_paid)
            .await
    }
}

fn status(status: Status, release_at: u32) -> ContractStatus {
    match status {
        Status::Open => ContractStatus::Open,
        Status::Closing => ContractStatus::Closing {
            release_at: release_at.into(),
        },
        Status::Closed => ContractStatus::Closed,
    }
}

/// The rules' registry from the root's parts. The owner is the owner wallet's account id (a
/// wallet address does not reveal its key); the proxies' contract addresses are not part of the
/// rules' registry and are dropped.
pub(crate) fn registry_of(
    version: u64,
    owner: &TonAddress,
    params: &RegistryParams,
    lists: RegistryLists,
) -> Registry {
    Registry {
        version,
        owner: AccountId(account_id(owner)),
        prices: Prices {
            price_per_token: params.price_per_token,
            worker_fee_per_token: params.worker_fee_per_token,
            prompt_multiplier: params.prompt_multiplier,
            cached_multiplier: params.cached_multiplier,
            completion_multiplier: params.completion_multiplier,
            reasoning_multiplier: params.reasoning_multiplier,
        },
        client_delay_before_close: params.client_delay_before_close.into(),
        proxy_delay_before_close: params.proxy_delay_before_close.into(),
        min_client_stake: params.min_client_stake,
        min_proxy_stake: params.min_proxy_stake,
        proxy_image_hashes: lists.proxy_images.into_iter().map(Hash32).collect(),
        worker_image_hashes: lists.worker_images.into_iter().map(Hash32).collect(),
        models: lists
            .models
            .into_iter()
            .map(|(hash, name)| (name, Hash32(hash)))
            .collect(),
        proxies: lists
            .proxies
            .into_iter()
            .map(|p| RegisteredProxy {
                seqno: p.seqno,
                worker_endpoint: p.worker_endpoint,
                client_endpoint: p.client_endpoint,
            })
            .collect(),
    }
}

#[async_trait]
impl Settlement for TonSettlement {
    fn registry_poll_interval(&self) -> Duration {
        if self.devnet.is_some() {
            DEVNET_REGISTRY_POLL
        } else {
            crate::settlement_types::REGISTRY_POLL_INTERVAL
        }
    }

    fn account_id(&self) -> Option<AccountId> {
        self.signer.as_ref().map(|s| s.me)
    }

    /// The proxy contract, and the client's channel or the worker's wallet (the inherent
    /// [`TonSettlement::voucher_ids`]).
    fn voucher_ids(
        &self,
        kind: VoucherKind,
        proxy: AccountId,
        counterparty: AccountId,
    ) -> Result<VoucherIds, SettlementError> {
        TonSettlement::voucher_ids(self, kind, &proxy, &counterparty)
    }

    async fn execute(&self, body: TransactionBody) -> Result<Receipt, SettlementError> {
        crate::operations::execute(self, body).await
    }

    async fn registry(&self) -> Result<Registry, SettlementError> {
        let version = self
            .root_get("registry_version", getters::registry_version)
            .await?;
        let owner = self
            .root_get("registry_owner", getters::registry_owner)
            .await?;
        let params = self
            .root_get("registry_params", getters::registry_params)
            .await?;
        let lists = self
            .root_get("registry_lists", getters::registry_lists)
            .await?;
        *self
            .terms
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Terms::from(&params);
        Ok(registry_of(version, &owner, &params, lists))
    }

    async fn account(&self, id: AccountId) -> Result<Account, SettlementError> {
        let wallet = wallet_address(id.as_bytes()).map_err(cell_error)?;
        let state = self
            .api
            .account(&wallet)
            .await
            .map_err(|e| SettlementError::Unavailable(e.to_string()))?;
        let balance = u64::try_from(state.balance)
            .map_err(|_| SettlementError::Backend("a wallet balance past 64 bits".into()))?;
        // The wallet's seqno is its nonce (0 before it is deployed).
        let nonce = self
            .read(&wallet, "seqno", &[], |s| s.uint::<u64>())
            .await?
            .unwrap_or_default();
        Ok(Account { balance, nonce })
    }

    async fn proxy_contract(
        &self,
        proxy: AccountId,
    ) -> Result<Option<ProxyContract>, SettlementError> {
        let address = self.proxy_address(&proxy)?;
        let Some(state) = self.proxy_state(&address).await? else {
            return Ok(None);
        };
        let mut keys = self
            .read(&address, "voucher_keys", &[], getters::voucher_keys)
            .await?
            .unwrap_or_default();
        let current = keys.pop().unwrap_or([0; 32]);
        Ok(Some(ProxyContract {
            owner: proxy,
            voucher_key: AccountId(current),
            earlier_voucher_keys: keys.into_iter().map(AccountId).collect(),
            stake: state.stake,
            pool: state.pool,
            // Not tracked on chain (the transactions tell).
            collected: 0,
            paid_to_workers: 0,
            withdrawn: 0,
            commit: None,
            status: status(state.status, state.release_at),
        }))
    }

    async fn client_contract(
        &self,
        proxy: AccountId,
        client: AccountId,
    ) -> Result<Option<ClientContract>, SettlementError> {
        let address = self.channel_address(&proxy, &client)?;
        Ok(self.channel_state(&address).await?.map(|s| ClientContract {
            proxy,
            client,
            balance: s.balance,
            stake: s.stake,
            charged: s.charged,
            collected: s.collected,
            voucher_seqno: s.voucher_seqno,
            status: status(s.status, s.release_at),
        }))
    }

    async fn worker_contract(
        &self,
        proxy: AccountId,
        worker: AccountId,
    ) -> Result<Option<WorkerContract>, SettlementError> {
        let address = self.proxy_address(&proxy)?;
        let payee = account_id(&wallet_address(worker.as_bytes()).map_err(cell_error)?);
        Ok(self
            .worker_paid(&address, &payee)
            .await?
            .filter(|paid| *paid != getters::WorkerPaid::default())
            .map(|paid| WorkerContract {
                proxy,
                worker,
                paid: paid.paid,
                voucher_seqno: paid.voucher_seqno,
            }))
    }
}

/// A refusal for an operation that has no counterpart on TON.
pub(crate) fn not_on_ton(what: &str) -> SettlementError {
    SettlementError::Unsupported(format!("not on TON: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read-only handle on a root at a made-up address, with the tests' terms (no chain:
    /// addresses are computed locally).
    fn offline() -> TonSettlement {
        TonSettlement {
            api: TonApi::new("http://127.0.0.1:9/api/v2", None).unwrap(),
            signer: None,
            root: crate::contracts::address_of(&[0x42; 32]),
            terms: Arc::new(RwLock::new(Terms {
                min_client_stake: 1_000_000_000,
                min_proxy_stake: 2_000_000_000,
                client_delay: 600,
                proxy_delay: 3600,
            })),
            devnet: None,
            poll: Duration::from_millis(10),
        }
    }

    #[test]
    fn through_the_trait_vouchers_name_the_contracts() {
        let ton = offline();
        let held: &dyn Settlement = &ton;
        let (operator, client) = (AccountId([7; 32]), AccountId([8; 32]));
        let proxy = AccountId(account_id(&ton.proxy_address(&operator).unwrap()));
        let channel = AccountId(account_id(
            &ton.channel_address(&operator, &client).unwrap(),
        ));
        let wallet = AccountId(account_id(&wallet_address(client.as_bytes()).unwrap()));
        for kind in [VoucherKind::ClientPay, VoucherKind::ClientCharge] {
            assert_eq!(
                held.voucher_ids(kind, operator, client).unwrap(),
                VoucherIds::accounts(proxy, channel)
            );
        }
        assert_eq!(
            held.voucher_ids(VoucherKind::WorkerPay, operator, client)
                .unwrap(),
            VoucherIds::accounts(proxy, wallet)
        );
        assert_ne!(proxy, operator, "TON does not name the accounts themselves");
    }

    #[tokio::test]
    async fn a_commit_is_unsupported_not_a_backend_failure() {
        let error = offline()
            .commit_proxy_state(1, Hash32([1; 32]))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, SettlementError::Unsupported(m) if m.starts_with("not on TON")),
            "{error}"
        );
    }

    #[test]
    fn a_node_can_hold_it_as_any_settlement_backend() {
        fn held(backend: TonSettlement) -> Arc<dyn Settlement> {
            Arc::new(backend)
        }
        let _ = held;
    }
}
