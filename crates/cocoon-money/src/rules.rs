//! The contract rules as a pure state machine: [`LedgerState`] + [`Transaction`] → [`LedgerState::apply`].
//!
//! Money lives in exactly these places: account balances, client-contract balances, and each proxy
//! contract's stake and pool (collected client funds not yet paid out). Every rule moves money
//! between them; only the faucet ([`TransactionBody::Mint`]) and genesis create it, and both raise
//! `supply`, so `holdings_total() == supply()` always. Because `supply` is bounded by `u64::MAX`
//! (mint checks it), no single holding can overflow when credited.
//!
//! Each rule checks everything first and mutates only after, so a rejected transaction leaves the
//! state exactly as it was. Mutations go through accessors that record the touched entity, which is
//! what the local ledger's store (`cocoon_ledger::store`) writes to disk.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{AccountId, Hash32};
use crate::registry::{Amount, Registry};
use crate::transaction::{Transaction, TransactionBody};
use crate::voucher::{SignedVoucher, VoucherKind};

/// The most one faucet transaction mints (1000 coins): plenty for any development node, and far
/// from the supply limit, so nobody drains a development faucet with one transaction.
pub const MAX_FAUCET_GRANT: Amount = 1_000_000_000_000;

/// Money may only go to a key that can sign for it: a valid, non-weak Ed25519 key. (A weak key's
/// "signatures" need no secret, so its money would be anybody's.)
fn usable_key(id: &AccountId) -> Result<(), RuleError> {
    id.verifying_key()
        .map(drop)
        .map_err(|_| RuleError::InvalidKey)
}

/// One persisted entity of the ledger state; the store writes those a transaction touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKey {
    /// The total supply.
    Supply,
    /// The registry document.
    Registry,
    /// An account.
    Account(AccountId),
    /// A proxy contract.
    Proxy(AccountId),
    /// A client contract: (proxy, client).
    Client(AccountId, AccountId),
    /// A worker contract: (proxy, worker).
    Worker(AccountId, AccountId),
}

/// The whole ledger: accounts, contracts, registry, supply.
#[derive(Debug, Clone)]
pub struct LedgerState {
    pub(crate) supply: Amount,
    pub(crate) registry: Registry,
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    pub(crate) proxies: BTreeMap<AccountId, ProxyContract>,
    pub(crate) clients: BTreeMap<(AccountId, AccountId), ClientContract>,
    pub(crate) workers: BTreeMap<(AccountId, AccountId), WorkerContract>,
    /// Entities changed since the last [`LedgerState::take_touched`]; not part of the state.
    touched: BTreeSet<EntityKey>,
}

impl PartialEq for LedgerState {
    fn eq(&self, other: &Self) -> bool {
        self.supply == other.supply
            && self.registry == other.registry
            && self.accounts == other.accounts
            && self.proxies == other.proxies
            && self.clients == other.clients
            && self.workers == other.workers
    }
}

impl Eq for LedgerState {}

impl LedgerState {
    /// A fresh ledger with `registry` and the given initial balances (which make up the supply).
    pub fn genesis(
        registry: Registry,
        allocations: &[(AccountId, Amount)],
    ) -> Result<Self, RuleError> {
        registry
            .validate()
            .map_err(|e| RuleError::InvalidRegistry {
                reason: e.to_string(),
            })?;
        let mut state = Self {
            supply: 0,
            registry,
            accounts: BTreeMap::new(),
            proxies: BTreeMap::new(),
            clients: BTreeMap::new(),
            workers: BTreeMap::new(),
            touched: BTreeSet::new(),
        };
        for &(id, amount) in allocations {
            usable_key(&id)?;
            state.supply = state
                .supply
                .checked_add(amount)
                .ok_or(RuleError::SupplyOverflow)?;
            state.account_mut(id).balance += amount;
        }
        state.touched.insert(EntityKey::Supply);
        state.touched.insert(EntityKey::Registry);
        Ok(state)
    }

    /// Reassembles a state loaded from storage.
    pub fn from_parts(
        supply: Amount,
        registry: Registry,
        accounts: BTreeMap<AccountId, Account>,
        proxies: BTreeMap<AccountId, ProxyContract>,
        clients: BTreeMap<(AccountId, AccountId), ClientContract>,
        workers: BTreeMap<(AccountId, AccountId), WorkerContract>,
    ) -> Self {
        Self {
            supply,
            registry,
            accounts,
            proxies,
            clients,
            workers,
            touched: BTreeSet::new(),
        }
    }

    /// Total money in existence (genesis plus faucet mints).
    pub fn supply(&self) -> Amount {
        self.supply
    }

    /// The current registry document.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every account that ever received money or sent a transaction.
    pub fn account_ids(&self) -> impl Iterator<Item = &AccountId> {
        self.accounts.keys()
    }

    /// An account, if it ever received money or sent a transaction.
    pub fn account(&self, id: &AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    /// A proxy contract by its owner.
    pub fn proxy(&self, id: &AccountId) -> Option<&ProxyContract> {
        self.proxies.get(id)
    }

    /// The client contract of `client` with `proxy`.
    pub fn client_contract(
        &self,
        proxy: &AccountId,
        client: &AccountId,
    ) -> Option<&ClientContract> {
        self.clients.get(&(*proxy, *client))
    }

    /// The worker contract of `worker` with `proxy`.
    pub fn worker_contract(
        &self,
        proxy: &AccountId,
        worker: &AccountId,
    ) -> Option<&WorkerContract> {
        self.workers.get(&(*proxy, *worker))
    }

    /// Counts of accounts, proxy, client and worker contracts.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.accounts.len(),
            self.proxies.len(),
            self.clients.len(),
            self.workers.len(),
        )
    }

    /// Sum of every holding (accounts, client contracts, proxy stakes and pools). Equals
    /// [`Self::supply`] in a consistent ledger; wide so the audit itself cannot overflow.
    pub fn holdings_total(&self) -> u128 {
        let accounts: u128 = self.accounts.values().map(|a| u128::from(a.balance)).sum();
        let clients: u128 = self.clients.values().map(|c| u128::from(c.balance)).sum();
        let proxies: u128 = self
            .proxies
            .values()
            .map(|p| u128::from(p.stake) + u128::from(p.pool))
            .sum();
        accounts + clients + proxies
    }

    /// Entities changed since the last call (drains the set).
    pub fn take_touched(&mut self) -> BTreeSet<EntityKey> {
        std::mem::take(&mut self.touched)
    }

    /// Applies one verified transaction. On `Err` the state is unchanged.
    pub fn apply(&mut self, tx: &Transaction, ctx: &Context) -> Result<Outcome, RuleError> {
        let last = self.accounts.get(&tx.signer).map_or(0, |a| a.nonce);
        if tx.nonce <= last {
            return Err(RuleError::NonceReplayed {
                last,
                got: tx.nonce,
            });
        }
        let outcome = self.apply_body(tx.signer, &tx.body, ctx)?;
        self.account_mut(tx.signer).nonce = tx.nonce;
        Ok(outcome)
    }

    fn apply_body(
        &mut self,
        signer: AccountId,
        body: &TransactionBody,
        ctx: &Context,
    ) -> Result<Outcome, RuleError> {
        use TransactionBody as B;
        match body {
            B::Mint { amount } => self.mint(signer, *amount, ctx),
            B::Transfer { to, amount } => self.transfer(signer, *to, *amount),
            B::OpenProxy { stake, voucher_key } => self.open_proxy(signer, *stake, *voucher_key),
            B::AddProxyStake { amount } => self.add_proxy_stake(signer, *amount),
            B::CommitProxyState { seqno, state_hash } => {
                self.commit_proxy_state(signer, *seqno, *state_hash, ctx.now)
            }
            B::WithdrawCommission { amount } => self.withdraw_commission(signer, *amount),
            B::StartProxyClose => self.start_proxy_close(signer, ctx.now),
            B::FinishProxyClose => self.finish_proxy_close(signer, ctx.now),
            B::OpenClient {
                proxy,
                amount,
                stake,
            } => self.open_client(signer, *proxy, *amount, *stake),
            B::TopUp { proxy, amount } => self.top_up(signer, *proxy, *amount),
            B::WithdrawClient { proxy, amount } => self.withdraw_client(signer, *proxy, *amount),
            B::Charge { voucher } => self.client_pay(voucher),
            B::Claim { voucher } => self.claim(voucher),
            B::CloseClient {
                proxy,
                final_voucher,
            } => self.close_client(signer, *proxy, final_voucher.as_ref(), ctx.now),
            B::FinishClientClose { proxy } => self.finish_client_close(signer, *proxy, ctx.now),
            B::UpdateRegistry { registry } => self.update_registry(signer, registry),
            B::AuthorizeProxyKey { key } => self.authorize_proxy_key(signer, *key),
            B::RevokeProxyKey { key } => self.revoke_proxy_key(signer, *key),
        }
    }

    // ---- mutation accessors: each records what it touches. A contract created here starts
    // `Closed` with nothing in it; only the opening rules call these for a missing contract. ----

    fn account_mut(&mut self, id: AccountId) -> &mut Account {
        self.touched.insert(EntityKey::Account(id));
        self.accounts.entry(id).or_default()
    }

    fn proxy_mut(&mut self, id: AccountId) -> &mut ProxyContract {
        self.touched.insert(EntityKey::Proxy(id));
        self.proxies.entry(id).or_insert_with(|| ProxyContract {
            owner: id,
            voucher_key: id,
            earlier_voucher_keys: Vec::new(),
            stake: 0,
            pool: 0,
            collected: 0,
            paid_to_workers: 0,
            withdrawn: 0,
            commit: None,
            status: ContractStatus::Closed,
        })
    }

    fn client_mut(&mut self, proxy: AccountId, client: AccountId) -> &mut ClientContract {
        self.touched.insert(EntityKey::Client(proxy, client));
        self.clients
            .entry((proxy, client))
            .or_insert_with(|| ClientContract {
                proxy,
                client,
                balance: 0,
                stake: 0,
                charged: 0,
                collected: 0,
                voucher_seqno: 0,
                status: ContractStatus::Closed,
            })
    }

    fn worker_mut(&mut self, proxy: AccountId, worker: AccountId) -> &mut WorkerContract {
        self.touched.insert(EntityKey::Worker(proxy, worker));
        self.workers
            .entry((proxy, worker))
            .or_insert_with(|| WorkerContract {
                proxy,
                worker,
                paid: 0,
                voucher_seqno: 0,
            })
    }

    // ---- checks ----

    fn balance_of(&self, id: &AccountId) -> Amount {
        self.accounts.get(id).map_or(0, |a| a.balance)
    }

    fn require_funds(available: Amount, needed: Amount) -> Result<(), RuleError> {
        if needed == 0 {
            Err(RuleError::ZeroAmount)
        } else if available < needed {
            Err(RuleError::InsufficientFunds { available, needed })
        } else {
            Ok(())
        }
    }

    fn existing_proxy(&self, proxy: &AccountId) -> Result<&ProxyContract, RuleError> {
        self.proxies
            .get(proxy)
            .ok_or(RuleError::NoSuchProxy { proxy: *proxy })
    }

    fn open_proxy_contract(&self, proxy: &AccountId) -> Result<&ProxyContract, RuleError> {
        let contract = self.existing_proxy(proxy)?;
        if contract.status != ContractStatus::Open {
            return Err(RuleError::ProxyNotOpen { proxy: *proxy });
        }
        Ok(contract)
    }

    fn existing_client(
        &self,
        proxy: &AccountId,
        client: &AccountId,
    ) -> Result<&ClientContract, RuleError> {
        self.clients
            .get(&(*proxy, *client))
            .ok_or(RuleError::NoSuchClientContract {
                proxy: *proxy,
                client: *client,
            })
    }

    /// Checks a voucher's kind and signature against its proxy's voucher key.
    fn verified_voucher(
        &self,
        voucher: &SignedVoucher,
        expected: VoucherKind,
    ) -> Result<(), RuleError> {
        if voucher.voucher.kind != expected {
            return Err(RuleError::WrongVoucherKind { expected });
        }
        self.existing_proxy(&voucher.voucher.proxy)?
            .check_voucher_signature(voucher)
    }

    /// Checks that a voucher is newer than what was applied; returns the amount it adds.
    fn voucher_delta(
        applied_seqno: u64,
        applied_amount: Amount,
        voucher: &SignedVoucher,
    ) -> Result<Amount, RuleError> {
        let v = &voucher.voucher;
        if v.seqno <= applied_seqno {
            return Err(RuleError::VoucherNotNewer {
                applied: applied_seqno,
                got: v.seqno,
            });
        }
        v.cumulative
            .checked_sub(applied_amount)
            .ok_or(RuleError::VoucherDecreases {
                applied: applied_amount,
                got: v.cumulative,
            })
    }

    // ---- rules ----

    fn mint(
        &mut self,
        signer: AccountId,
        amount: Amount,
        ctx: &Context,
    ) -> Result<Outcome, RuleError> {
        if !ctx.faucet_enabled {
            return Err(RuleError::FaucetDisabled);
        }
        if amount == 0 {
            return Err(RuleError::ZeroAmount);
        }
        if amount > MAX_FAUCET_GRANT {
            return Err(RuleError::FaucetGrantTooLarge {
                max: MAX_FAUCET_GRANT,
                got: amount,
            });
        }
        let supply = self
            .supply
            .checked_add(amount)
            .ok_or(RuleError::SupplyOverflow)?;
        self.supply = supply;
        self.touched.insert(EntityKey::Supply);
        self.account_mut(signer).balance += amount;
        Ok(Outcome::Done)
    }

    fn transfer(
        &mut self,
        signer: AccountId,
        to: AccountId,
        amount: Amount,
    ) -> Result<Outcome, RuleError> {
        usable_key(&to)?;
        Self::require_funds(self.balance_of(&signer), amount)?;
        self.account_mut(signer).balance -= amount;
        self.account_mut(to).balance += amount;
        Ok(Outcome::Done)
    }

    fn open_proxy(
        &mut self,
        signer: AccountId,
        stake: Amount,
        voucher_key: AccountId,
    ) -> Result<Outcome, RuleError> {
        if self
            .proxies
            .get(&signer)
            .is_some_and(|p| p.status != ContractStatus::Closed)
        {
            return Err(RuleError::ProxyExists);
        }
        usable_key(&voucher_key)?;
        let min = self.registry.min_proxy_stake;
        if stake < min {
            return Err(RuleError::StakeTooLow { min, got: stake });
        }
        Self::require_funds(self.balance_of(&signer), stake)?;
        self.account_mut(signer).balance -= stake;
        let reopened = self.proxies.contains_key(&signer);
        // A reopened contract keeps its pool, statistics, commit history and earlier keys.
        let contract = self.proxy_mut(signer);
        if reopened {
            contract.authorize(voucher_key);
        } else {
            contract.voucher_key = voucher_key;
        }
        contract.stake += stake;
        contract.status = ContractStatus::Open;
        Ok(Outcome::Done)
    }

    fn add_proxy_stake(&mut self, signer: AccountId, amount: Amount) -> Result<Outcome, RuleError> {
        self.open_proxy_contract(&signer)?;
        Self::require_funds(self.balance_of(&signer), amount)?;
        self.account_mut(signer).balance -= amount;
        self.proxy_mut(signer).stake += amount;
        Ok(Outcome::Done)
    }

    fn commit_proxy_state(
        &mut self,
        signer: AccountId,
        seqno: u64,
        state_hash: Hash32,
        now: u64,
    ) -> Result<Outcome, RuleError> {
        let contract = self.existing_proxy(&signer)?;
        if let Some(last) = contract.commit {
            if seqno <= last.seqno {
                return Err(RuleError::CommitNotNewer {
                    last: last.seqno,
                    got: seqno,
                });
            }
        }
        self.proxy_mut(signer).commit = Some(StateCommit {
            seqno,
            state_hash,
            committed_at: now,
        });
        Ok(Outcome::Done)
    }

    fn withdraw_commission(
        &mut self,
        signer: AccountId,
        amount: Amount,
    ) -> Result<Outcome, RuleError> {
        let pool = self.existing_proxy(&signer)?.pool;
        Self::require_funds(pool, amount)?;
        let contract = self.proxy_mut(signer);
        contract.pool -= amount;
        contract.withdrawn = contract.withdrawn.saturating_add(amount);
        self.account_mut(signer).balance += amount;
        Ok(Outcome::Done)
    }

    fn start_proxy_close(&mut self, signer: AccountId, now: u64) -> Result<Outcome, RuleError> {
        self.open_proxy_contract(&signer)?;
        let release_at = now.saturating_add(self.registry.proxy_delay_before_close);
        self.proxy_mut(signer).status = ContractStatus::Closing { release_at };
        Ok(Outcome::ProxyCloseStarted { release_at })
    }

    fn finish_proxy_close(&mut self, signer: AccountId, now: u64) -> Result<Outcome, RuleError> {
        let contract = self.existing_proxy(&signer)?;
        let ContractStatus::Closing { release_at } = contract.status else {
            return Err(RuleError::NotClosing);
        };
        if now < release_at {
            return Err(RuleError::TooEarly { release_at, now });
        }
        let returned = contract.stake + contract.pool;
        let contract = self.proxy_mut(signer);
        contract.stake = 0;
        contract.pool = 0;
        contract.status = ContractStatus::Closed;
        self.account_mut(signer).balance += returned;
        Ok(Outcome::ProxyClosed { returned })
    }

    /// Moves up to `delta` from a client contract to its proxy's pool and records the voucher.
    /// Returns `(collected, shortfall)`. Callers have checked the voucher.
    fn collect_charge(&mut self, voucher: &SignedVoucher, delta: Amount) -> (Amount, Amount) {
        let v = voucher.voucher;
        let contract = self.client_mut(v.proxy, v.counterparty);
        let collected = delta.min(contract.balance);
        contract.balance -= collected;
        contract.charged = v.cumulative;
        contract.collected = contract.collected.saturating_add(collected);
        contract.voucher_seqno = v.seqno;
        let proxy = self.proxy_mut(v.proxy);
        proxy.pool += collected;
        proxy.collected = proxy.collected.saturating_add(collected);
        (collected, delta - collected)
    }

    fn claim(&mut self, voucher: &SignedVoucher) -> Result<Outcome, RuleError> {
        self.verified_voucher(voucher, VoucherKind::WorkerPay)?;
        let v = voucher.voucher;
        usable_key(&v.counterparty)?;
        let (paid_seqno, paid) = self
            .worker_contract(&v.proxy, &v.counterparty)
            .map_or((0, 0), |w| (w.voucher_seqno, w.paid));
        let delta = Self::voucher_delta(paid_seqno, paid, voucher)?;
        let proxy = self.existing_proxy(&v.proxy)?;
        // Disjoint holdings: their sum is bounded by the supply.
        let available = proxy.pool + proxy.stake;
        if delta > available {
            return Err(RuleError::InsufficientProxyFunds {
                available,
                needed: delta,
            });
        }
        // The pool (client money) pays first; the stake is the collateral behind it.
        let contract = self.proxy_mut(v.proxy);
        let from_pool = delta.min(contract.pool);
        contract.pool -= from_pool;
        contract.stake -= delta - from_pool;
        contract.paid_to_workers = contract.paid_to_workers.saturating_add(delta);
        let worker = self.worker_mut(v.proxy, v.counterparty);
        worker.paid = v.cumulative;
        worker.voucher_seqno = v.seqno;
        self.account_mut(v.counterparty).balance += delta;
        Ok(Outcome::Claimed { paid: delta })
    }

    fn update_registry(
        &mut self,
        signer: AccountId,
        registry: &Registry,
    ) -> Result<Outcome, RuleError> {
        if signer != self.registry.owner {
            return Err(RuleError::NotRegistryOwner);
        }
        if registry.version <= self.registry.version {
            return Err(RuleError::RegistryVersionNotNewer {
                current: self.registry.version,
                got: registry.version,
            });
        }
        registry
            .validate()
            .map_err(|e| RuleError::InvalidRegistry {
                reason: e.to_string(),
            })?;
        self.registry = registry.clone();
        self.touched.insert(EntityKey::Registry);
        Ok(Outcome::Done)
    }
}

mod client_channel;
mod error;
mod proxy_keys;
mod state;
pub use error::RuleError;
pub use proxy_keys::MAX_PROXY_VOUCHER_KEYS;
pub use state::{
    Account, ClientContract, Context, ContractStatus, Outcome, ProxyContract, RollbackError,
    StateCommit, WorkerContract,
};

#[cfg(any(test, feature = "test-support"))]
pub mod properties;
#[cfg(test)]
pub(crate) mod tests;
