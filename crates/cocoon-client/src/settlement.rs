//! The client's side of the money: it opens its contract with the proxy it uses (deposit, part of
//! it locked as stake), tops it up when the available balance falls below half the stake, sends
//! the proxy the payments no request carried ([`Payer::flush`]), and applies its own newest
//! payment voucher on the ledger when what it signed but the ledger has not applied exceeds half
//! the stake.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cocoon_money::{
    AccountId, Amount, ClientContract, ClientStatement, ContractStatus, Settlement, SettlementError,
};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::link::ProxyLinks;
use crate::payment::{proxy_account, Payer};

/// How much the client deposits and keeps available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Funding {
    /// Amount deposited when the contract is opened, and added by each top-up.
    pub deposit: Amount,
    /// Stake locked in the contract (raised to the registry's minimum).
    pub stake: Amount,
    /// Development: mint at least this much from the faucet when the wallet cannot pay (0: never).
    pub faucet: Amount,
}

/// What to do next with a contract, from its state and the proxy's statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open the contract, depositing this much.
    Open(Amount),
    /// Apply this client's newest payment voucher (too much is signed but not applied).
    SubmitCharges,
    /// Add this much to the contract.
    TopUp(Amount),
    /// Nothing to do.
    Nothing,
}

/// Decides the next step. `charged` is the proxy's total for this client, `signed` what this
/// client signed for in total.
pub fn next_action(
    contract: Option<&ClientContract>,
    charged: Amount,
    signed: Amount,
    funding: &Funding,
) -> Action {
    let Some(contract) = contract.filter(|c| c.status != ContractStatus::Closed) else {
        return Action::Open(funding.deposit.max(funding.stake));
    };
    if contract.status != ContractStatus::Open {
        return Action::Nothing;
    }
    let half_stake = contract.stake / 2;
    if signed.saturating_sub(contract.charged) > half_stake {
        return Action::SubmitCharges;
    }
    if available(contract, charged) < half_stake {
        return Action::TopUp(funding.deposit.max(funding.stake));
    }
    Action::Nothing
}

/// The contract balance less what the proxy charged but the ledger has not collected.
pub fn available(contract: &ClientContract, charged: Amount) -> Amount {
    contract
        .balance
        .saturating_sub(charged.saturating_sub(contract.collected))
}

/// The last round's view, for `/jsonstats`.
#[derive(Debug, Clone, Default, Serialize)]
struct View {
    proxy: Option<String>,
    balance: Option<Amount>,
    deposited: Option<Amount>,
    stake: Option<Amount>,
    charged: Option<Amount>,
    charged_on_ledger: Option<Amount>,
    available: Option<Amount>,
    /// Whether the contract is open (not closing or closed).
    open: bool,
    last_error: Option<String>,
}

/// The client's wallet and its contract with the current proxy.
pub struct ClientSettlement {
    account: AccountId,
    ledger: Arc<dyn Settlement>,
    funding: Funding,
    interval: Duration,
    view: Mutex<View>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientSettlement {
    /// Settlement for the wallet `account` on `ledger` (which signs as `account`), checked
    /// every `interval`.
    pub fn new(
        ledger: Arc<dyn Settlement>,
        account: AccountId,
        funding: Funding,
        interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            account,
            ledger,
            funding,
            interval,
            view: Mutex::new(View::default()),
        })
    }

    /// This client's wallet.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Makes sure the wallet holds `needed`, from the faucet if allowed.
    async fn ensure_funds(&self, needed: Amount) -> Result<(), SettlementError> {
        let balance = self.ledger.account(self.account).await?.balance;
        if balance < needed && self.funding.faucet > 0 {
            self.ledger
                .faucet(self.funding.faucet.max(needed - balance))
                .await?;
        }
        Ok(())
    }

    /// One round against the proxy the client currently uses.
    ///
    /// `min_stake` is the registry's `min_client_stake`, as the node's verified registry says (the
    /// ledger's own unauthenticated answer is not asked).
    pub async fn settle(&self, links: &ProxyLinks, payer: &Payer, min_stake: Amount) {
        payer.flush(links).await;
        if let Err(error) = self.try_settle(links, payer, min_stake).await {
            tracing::warn!(%error, "client settlement round failed");
            lock(&self.view).last_error = Some(error.to_string());
        }
    }

    async fn try_settle(
        &self,
        links: &ProxyLinks,
        payer: &Payer,
        min_stake: Amount,
    ) -> anyhow::Result<()> {
        let Some(link) = links
            .live_links()
            .into_iter()
            .find(|link| payer.usable(link))
        else {
            return Ok(());
        };
        let Some(proxy) = proxy_account(&link) else {
            anyhow::bail!("proxy {} names no wallet in its attestation", link.proxy);
        };
        let funding = Funding {
            stake: self.funding.stake.max(min_stake),
            ..self.funding
        };
        // A few steps per round: open, then apply charges or top up as the state asks.
        for _ in 0..3 {
            let contract = self.ledger.client_contract(proxy, self.account).await?;
            // What the proxy says it charged counts against the balance (it reserves by it);
            // what this client signed is what it applies.
            let statement: Option<ClientStatement> = match contract {
                Some(_) => Some(payer.statement(&link).await?),
                None => None,
            };
            let charged = statement.as_ref().map_or(0, |s| s.charged);
            let signed = payer.latest(&proxy);
            self.record(proxy, contract.as_ref(), charged).await;
            let signed_total = signed.map_or(0, |v| v.voucher.cumulative);
            match next_action(contract.as_ref(), charged, signed_total, &funding) {
                Action::Open(amount) => {
                    self.ensure_funds(amount).await?;
                    self.ledger
                        .open_client(proxy, amount, funding.stake)
                        .await?;
                    tracing::info!(%proxy, amount, stake = funding.stake, "client contract opened");
                }
                Action::SubmitCharges => {
                    if let Some(voucher) = signed {
                        match self.ledger.submit_charge(voucher).await {
                            Ok(_) => {}
                            Err(error) if error.is_stale_voucher() => return Ok(()),
                            Err(error) => return Err(error.into()),
                        }
                    } else {
                        return Ok(());
                    }
                }
                Action::TopUp(amount) => {
                    self.ensure_funds(amount).await?;
                    self.ledger.top_up(proxy, amount).await?;
                    tracing::info!(%proxy, amount, "client contract topped up");
                }
                Action::Nothing => return Ok(()),
            }
        }
        Ok(())
    }

    async fn record(&self, proxy: AccountId, contract: Option<&ClientContract>, charged: Amount) {
        let balance = self
            .ledger
            .account(self.account)
            .await
            .ok()
            .map(|a| a.balance);
        let mut view = lock(&self.view);
        *view = View {
            proxy: Some(proxy.to_string()),
            balance,
            deposited: contract.map(|c| c.balance),
            stake: contract.map(|c| c.stake),
            charged: Some(charged),
            charged_on_ledger: contract.map(|c| c.charged),
            available: contract.map(|c| available(c, charged)),
            open: contract.is_some_and(|c| c.status == ContractStatus::Open),
            last_error: None,
        };
    }

    /// Whether the contract with `proxy`, as the last round read it, is open with money
    /// available, so a request sent there now is not refused for payment; else why not.
    pub fn funded_with(&self, proxy: AccountId) -> Result<(), String> {
        let view = lock(&self.view);
        if view.proxy.as_deref() != Some(proxy.to_string().as_str()) {
            return Err(format!("no contract with the proxy {proxy} read yet"));
        }
        if !view.open {
            let why = view.last_error.as_deref().unwrap_or("not opened yet");
            return Err(format!(
                "the contract with the proxy {proxy} is not open: {why}"
            ));
        }
        match view.available {
            Some(available) if available > 0 => Ok(()),
            _ => Err(format!(
                "the contract with the proxy {proxy} has no money available; it is topped up \
                 from the wallet (see /jsonstats `details.wallet`)"
            )),
        }
    }

    /// Settles every interval until `shutdown`, with the minimum stake `min_stake` follows (from
    /// the node's verified registry).
    pub fn spawn(
        self: &Arc<Self>,
        links: Arc<ProxyLinks>,
        payer: Arc<Payer>,
        min_stake: watch::Receiver<Arc<Amount>>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let settlement = self.clone();
        tokio::spawn(async move {
            loop {
                let stake = **min_stake.borrow();
                settlement.settle(&links, &payer, stake).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(settlement.interval) => {}
                }
            }
        })
    }

    /// Wallet figures for `/jsonstats`.
    pub fn snapshot(&self) -> Value {
        let view = lock(&self.view).clone();
        json!({
            "account": self.account.to_string(),
            "proxy": view.proxy,
            "balance": view.balance,
            "deposited": view.deposited,
            "stake": view.stake,
            "charged": view.charged,
            "charged_on_ledger": view.charged_on_ledger,
            "available": view.available,
            "last_error": view.last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNDING: Funding = Funding {
        deposit: 1_000,
        stake: 400,
        faucet: 0,
    };

    fn contract(balance: Amount, charged: Amount) -> ClientContract {
        ClientContract {
            proxy: AccountId([1; 32]),
            client: AccountId([2; 32]),
            balance,
            stake: 400,
            charged,
            collected: charged,
            voucher_seqno: 1,
            status: ContractStatus::Open,
        }
    }

    #[test]
    fn opens_then_tops_up_and_submits_at_half_the_stake() {
        assert_eq!(next_action(None, 0, 0, &FUNDING), Action::Open(1_000));
        assert_eq!(
            next_action(Some(&contract(1_000, 0)), 200, 200, &FUNDING),
            Action::Nothing
        );
        // 201 signed but unapplied: above half the stake.
        assert_eq!(
            next_action(Some(&contract(1_000, 0)), 201, 201, &FUNDING),
            Action::SubmitCharges
        );
        // Applied; 199 left of the balance: below half the stake.
        assert_eq!(
            next_action(Some(&contract(199, 201)), 201, 201, &FUNDING),
            Action::TopUp(1_000)
        );
        assert_eq!(available(&contract(500, 100), 250), 350);
    }

    #[test]
    fn a_closing_contract_is_left_alone_and_a_closed_one_reopened() {
        let mut closing = contract(100, 0);
        closing.status = ContractStatus::Closing { release_at: 9 };
        assert_eq!(next_action(Some(&closing), 0, 0, &FUNDING), Action::Nothing);
        closing.status = ContractStatus::Closed;
        assert_eq!(
            next_action(Some(&closing), 0, 0, &FUNDING),
            Action::Open(1_000)
        );
    }
}
