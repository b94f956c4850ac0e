//! Each `TransactionBody` as the one wallet message that performs it on TON, the state read before
//! (to fill a refusal's numbers and compute the outcome), and the outcome read after.
//!
//! docs/contracts.md ("What each operation sends") has the table: which message goes to which
//! contract with what value; `Mint` only through the devnet's faucet; `CommitProxyState` is not
//! on TON.

use crate::contracts::{address_of, wallet_address, Deployment};
use crate::getters;
use crate::messages::{internal_message, ChannelMessage, ProxyMessage, SignedAmount};
use crate::refusals::{refusal, Facts, Refuser};
use crate::registry_update::registry_update;
use crate::settlement::{cell_error, not_on_ton, SendErrorOrTrace, TonSettlement, MESSAGE_FEE};
use crate::settlement_types::{
    Amount, Outcome, Receipt, RuleError, SettlementError, SignedVoucher, TransactionBody as B,
    VoucherKind, MAX_FAUCET_GRANT,
};
use crate::trace;

/// What the contract held before the message: the outcome is the difference.
#[derive(Debug, Clone, Copy, Default)]
enum Before {
    #[default]
    Nothing,
    Channel(getters::ChannelState),
    Proxy(getters::ProxyState),
    Worker(getters::WorkerPaid),
}

/// One operation as a wallet message.
struct Plan {
    to: tonlib_core::TonAddress,
    value: u64,
    bounce: bool,
    body: tonlib_core::cell::Cell,
    deploy: Option<Deployment>,
    refuser: Refuser,
    facts: Facts,
    before: Before,
}

fn with_fee(amount: Amount) -> Result<u64, SettlementError> {
    amount
        .checked_add(MESSAGE_FEE)
        .ok_or(SettlementError::Rejected(RuleError::InsufficientFunds {
            available: u64::MAX - MESSAGE_FEE,
            needed: amount,
        }))
}

fn signed_amount(voucher: &SignedVoucher) -> SignedAmount {
    SignedAmount {
        cumulative: voucher.voucher.cumulative,
        seqno: voucher.voucher.seqno,
        is_final: voucher.voucher.is_final,
        signature: voucher.signature.0,
    }
}

fn rejected(rule: RuleError) -> SettlementError {
    SettlementError::Rejected(rule)
}

fn expect_kind(voucher: &SignedVoucher, expected: VoucherKind) -> Result<(), SettlementError> {
    if voucher.voucher.kind == expected {
        Ok(())
    } else {
        Err(SettlementError::Rejected(RuleError::WrongVoucherKind {
            expected,
        }))
    }
}

impl TonSettlement {
    /// The message of a channel operation of this wallet with the proxy of `operator`.
    async fn channel_plan(
        &self,
        operator: &crate::settlement_types::AccountId,
        message: ChannelMessage,
        amount: Amount,
        value: u64,
    ) -> Result<Plan, SettlementError> {
        let terms = self.channel_terms(operator, &self.me()?)?;
        let deployment = terms.deployment().map_err(cell_error)?;
        let to = deployment.address().map_err(cell_error)?;
        let state = self.channel_state(&to).await?;
        let now = self.chain_time(&to).await?;
        let facts = Facts {
            amount,
            min_stake: terms.min_stake,
            available: state.map_or(0, |s| s.balance.saturating_sub(s.stake)),
            applied_cumulative: state.map_or(0, |s| s.charged),
            release_at: state.map_or(0, |s| s.release_at.into()),
            now,
            proxy: *operator,
            ..Facts::default()
        };
        let deploy = matches!(message, ChannelMessage::Open { .. }) && state.is_none();
        Ok(Plan {
            body: message.body().map_err(cell_error)?,
            to,
            value,
            bounce: true,
            deploy: deploy.then_some(deployment),
            refuser: Refuser::Channel,
            facts,
            before: state.map_or(Before::Nothing, Before::Channel),
        })
    }

    /// The message of an operation on this wallet's own proxy contract.
    async fn proxy_plan(
        &self,
        message: ProxyMessage,
        amount: Amount,
        value: u64,
    ) -> Result<Plan, SettlementError> {
        let deployment = self.proxy_deployment(&self.me()?)?;
        let to = deployment.address().map_err(cell_error)?;
        let state = self.proxy_state(&to).await?;
        let facts = Facts {
            amount,
            min_stake: self.terms().min_proxy_stake,
            available: state.map_or(0, |s| s.pool),
            release_at: state.map_or(0, |s| s.release_at.into()),
            now: self.chain_time(&to).await?,
            proxy: self.me()?,
            ..Facts::default()
        };
        let deploy = matches!(message, ProxyMessage::Open { .. }) && state.is_none();
        Ok(Plan {
            body: message.body().map_err(cell_error)?,
            to,
            value,
            bounce: true,
            deploy: deploy.then_some(deployment),
            refuser: Refuser::Proxy,
            facts,
            before: state.map_or(Before::Nothing, Before::Proxy),
        })
    }

    async fn chain_time(&self, address: &tonlib_core::TonAddress) -> Result<u64, SettlementError> {
        Ok(self
            .api
            .account(address)
            .await
            .map_err(|e| SettlementError::Unavailable(e.to_string()))?
            .sync_time
            .into())
    }

    async fn plan(&self, body: &B) -> Result<Plan, SettlementError> {
        let body_of = |m: &ProxyMessage| m.body().map_err(cell_error);
        Ok(match body {
            B::Mint { .. } | B::CommitProxyState { .. } => {
                return Err(not_on_ton("this operation has no wallet message"))
            }
            B::Transfer { amount: 0, .. } => return Err(rejected(RuleError::ZeroAmount)),
            B::Transfer { to, amount } => Plan {
                to: wallet_address(to.as_bytes()).map_err(cell_error)?,
                value: *amount,
                bounce: false,
                body: tonlib_core::cell::Cell::default(),
                deploy: None,
                refuser: Refuser::Channel,
                facts: Facts::default(),
                before: Before::Nothing,
            },
            B::OpenProxy { stake, voucher_key } => {
                let message = ProxyMessage::Open {
                    stake: *stake,
                    voucher_key: voucher_key.0,
                };
                self.proxy_plan(message, *stake, with_fee(*stake)?).await?
            }
            B::AddProxyStake { amount } => {
                let message = ProxyMessage::AddStake { amount: *amount };
                self.proxy_plan(message, *amount, with_fee(*amount)?)
                    .await?
            }
            B::AuthorizeProxyKey { key } => {
                let message = ProxyMessage::AuthorizeKey { key: key.0 };
                self.proxy_plan(message, 0, MESSAGE_FEE).await?
            }
            B::RevokeProxyKey { key } => {
                let message = ProxyMessage::RevokeKey { key: key.0 };
                self.proxy_plan(message, 0, MESSAGE_FEE).await?
            }
            B::WithdrawCommission { amount } => {
                let message = ProxyMessage::WithdrawCommission { amount: *amount };
                self.proxy_plan(message, *amount, MESSAGE_FEE).await?
            }
            B::StartProxyClose => {
                self.proxy_plan(ProxyMessage::StartClose, 0, MESSAGE_FEE)
                    .await?
            }
            B::FinishProxyClose => {
                self.proxy_plan(ProxyMessage::FinishClose, 0, MESSAGE_FEE)
                    .await?
            }
            B::OpenClient {
                proxy,
                amount,
                stake,
            } => {
                // The channel cannot see its proxy's state; the rules refuse a channel with a
                // proxy that is not open, so this backend checks first.
                match self.proxy_state(&self.proxy_address(proxy)?).await? {
                    None => return Err(rejected(RuleError::NoSuchProxy { proxy: *proxy })),
                    Some(p) if p.status != getters::Status::Open => {
                        return Err(rejected(RuleError::ProxyNotOpen { proxy: *proxy }))
                    }
                    Some(_) => {}
                }
                let message = ChannelMessage::Open {
                    amount: *amount,
                    stake: *stake,
                };
                let mut plan = self
                    .channel_plan(proxy, message, *amount, with_fee(*amount)?)
                    .await?;
                plan.facts.amount = *stake;
                plan
            }
            B::TopUp { proxy, amount } => {
                let message = ChannelMessage::TopUp { amount: *amount };
                self.channel_plan(proxy, message, *amount, with_fee(*amount)?)
                    .await?
            }
            B::WithdrawClient { proxy, amount } => {
                let message = ChannelMessage::Withdraw { amount: *amount };
                self.channel_plan(proxy, message, *amount, MESSAGE_FEE)
                    .await?
            }
            B::CloseClient {
                proxy,
                final_voucher,
            } => {
                let message = match final_voucher {
                    Some(release) => {
                        expect_kind(release, VoucherKind::ClientCharge)?;
                        ChannelMessage::CloseWithRelease(signed_amount(release))
                    }
                    None => ChannelMessage::Close,
                };
                let mut plan = self.channel_plan(proxy, message, 0, MESSAGE_FEE).await?;
                if let Some(release) = final_voucher {
                    plan.facts.voucher_cumulative = release.voucher.cumulative;
                }
                plan
            }
            B::FinishClientClose { proxy } => {
                self.channel_plan(proxy, ChannelMessage::FinishClose, 0, MESSAGE_FEE)
                    .await?
            }
            B::Charge { voucher } => {
                expect_kind(voucher, VoucherKind::ClientPay)?;
                // On TON the voucher names the channel itself (voucher_ids).
                let to = address_of(voucher.voucher.counterparty.as_bytes());
                let Some(before) = self.channel_state(&to).await? else {
                    return Err(rejected(RuleError::NoSuchClientContract {
                        proxy: voucher.voucher.proxy,
                        client: voucher.voucher.counterparty,
                    }));
                };
                Plan {
                    body: ChannelMessage::Pay(signed_amount(voucher))
                        .body()
                        .map_err(cell_error)?,
                    to,
                    value: MESSAGE_FEE,
                    bounce: true,
                    deploy: None,
                    refuser: Refuser::Channel,
                    facts: Facts {
                        applied_seqno: before.voucher_seqno,
                        applied_cumulative: before.charged,
                        voucher_seqno: voucher.voucher.seqno,
                        voucher_cumulative: voucher.voucher.cumulative,
                        ..Facts::default()
                    },
                    before: Before::Channel(before),
                }
            }
            B::Claim { voucher } => {
                expect_kind(voucher, VoucherKind::WorkerPay)?;
                let to = address_of(voucher.voucher.proxy.as_bytes());
                let worker = *voucher.voucher.counterparty.as_bytes();
                let Some(proxy) = self.proxy_state(&to).await? else {
                    return Err(rejected(RuleError::NoSuchProxy {
                        proxy: voucher.voucher.proxy,
                    }));
                };
                let paid = self.worker_paid(&to, &worker).await?.unwrap_or_default();
                let message = ProxyMessage::Claim {
                    worker,
                    voucher: signed_amount(voucher),
                };
                Plan {
                    body: body_of(&message)?,
                    to,
                    value: MESSAGE_FEE,
                    bounce: true,
                    deploy: None,
                    refuser: Refuser::Proxy,
                    facts: Facts {
                        available: proxy.pool.saturating_add(proxy.stake),
                        applied_seqno: paid.voucher_seqno,
                        applied_cumulative: paid.paid,
                        voucher_seqno: voucher.voucher.seqno,
                        voucher_cumulative: voucher.voucher.cumulative,
                        ..Facts::default()
                    },
                    before: Before::Worker(paid),
                }
            }
            B::UpdateRegistry { registry } => {
                let current = self
                    .root_get("registry_version", getters::registry_version)
                    .await?;
                Plan {
                    body: registry_update(registry)?.body().map_err(cell_error)?,
                    to: self.root.clone(),
                    value: MESSAGE_FEE,
                    bounce: true,
                    deploy: None,
                    refuser: Refuser::Root,
                    facts: Facts {
                        registry_version: current,
                        voucher_seqno: registry.version,
                        ..Facts::default()
                    },
                    before: Before::Nothing,
                }
            }
        })
    }

    /// What the operation did, from the state after it.
    async fn outcome(&self, body: &B, plan: &Plan) -> Result<Outcome, SettlementError> {
        let gone =
            || SettlementError::Backend("the contract's state is gone after the operation".into());
        Ok(match (body, plan.before) {
            (B::Charge { .. }, Before::Channel(before)) => {
                let after = self.channel_state(&plan.to).await?.ok_or_else(gone)?;
                let collected = after.collected.saturating_sub(before.collected);
                let billed = after.charged.saturating_sub(before.charged);
                Outcome::Charged {
                    collected,
                    shortfall: billed.saturating_sub(collected),
                }
            }
            (B::Claim { voucher }, Before::Worker(before)) => {
                let worker = voucher.voucher.counterparty.as_bytes();
                let after = self.worker_paid(&plan.to, worker).await?.ok_or_else(gone)?;
                Outcome::Claimed {
                    paid: after.paid.saturating_sub(before.paid),
                }
            }
            (B::CloseClient { .. } | B::FinishClientClose { .. }, Before::Channel(before)) => {
                let after = self.channel_state(&plan.to).await?.ok_or_else(gone)?;
                let returned = before.balance.saturating_sub(after.balance);
                match after.status {
                    getters::Status::Closing => Outcome::ClientCloseStarted {
                        returned,
                        release_at: after.release_at.into(),
                    },
                    _ => Outcome::ClientClosed {
                        collected: 0,
                        returned,
                    },
                }
            }
            (B::StartProxyClose, _) => {
                let after = self.proxy_state(&plan.to).await?.ok_or_else(gone)?;
                Outcome::ProxyCloseStarted {
                    release_at: after.release_at.into(),
                }
            }
            (B::FinishProxyClose, Before::Proxy(before)) => Outcome::ProxyClosed {
                returned: before.stake.saturating_add(before.pool),
            },
            _ => Outcome::Done,
        })
    }

    async fn devnet_faucet(&self, amount: Amount) -> Result<Receipt, SettlementError> {
        let Some(devnet) = &self.devnet else {
            return Err(SettlementError::Rejected(RuleError::FaucetDisabled));
        };
        if amount == 0 {
            return Err(rejected(RuleError::ZeroAmount));
        }
        if amount > MAX_FAUCET_GRANT {
            return Err(rejected(RuleError::FaucetGrantTooLarge {
                max: MAX_FAUCET_GRANT,
                got: amount,
            }));
        }
        let body = serde_json::json!({
            "address": self.signer()?.sender.address().to_base64_url(),
            "amount": amount.to_string(),
        });
        self.api
            .post_devnet(&format!("{devnet}/devnet/faucet"), &body)
            .await
            .map_err(|e| match e {
                crate::api::TonApiError::Transport(e) => {
                    SettlementError::Unavailable(e.to_string())
                }
                other => SettlementError::Backend(format!("the devnet faucet refused: {other}")),
            })?;
        Ok(Receipt {
            seq: 0,
            outcome: Outcome::Done,
        })
    }
}

/// Performs `body` as this wallet: one message, its trace followed to the contracts' answer.
pub(crate) async fn execute(s: &TonSettlement, body: B) -> Result<Receipt, SettlementError> {
    match &body {
        B::Mint { amount } => return s.devnet_faucet(*amount).await,
        B::CommitProxyState { .. } => return Err(not_on_ton(
            "CommitProxyState (no node sends it; a proxy's database position is not kept on chain)",
        )),
        _ => {}
    }
    let sender = &s.signer()?.sender;
    let plan = s.plan(&body).await?;
    // A wallet that cannot even cover the value would have its message refused or skipped only
    // after a block or, unfunded, after every attempt expired: refuse now.
    let balance = s.wallet_balance().await?;
    if balance < plan.value {
        return Err(rejected(RuleError::InsufficientFunds {
            available: balance,
            needed: plan.value,
        }));
    }
    let message = internal_message(
        &plan.to,
        plan.value,
        plan.bounce,
        plan.body.clone(),
        plan.deploy.as_ref(),
    )
    .map_err(cell_error)?;
    let wallet_tx = sender
        .send(&[message])
        .await
        .map_err(SendErrorOrTrace::from)?;
    let seq = wallet_tx.id.lt;
    if wallet_tx.out_messages.is_empty() {
        // The wallet skips a message it cannot pay for with the fees (its send mode ignores
        // action errors).
        return Err(rejected(RuleError::InsufficientFunds {
            available: s.wallet_balance().await?,
            needed: plan.value,
        }));
    }
    let steps = trace::follow(&s.api, sender.address(), wallet_tx, s.poll)
        .await
        .map_err(SendErrorOrTrace::from)?;
    // The addressed contract's refusal decides; for a release, also the proxy's check and the
    // channel's answer to it. (A payment the proxy bounces later is applied all the same.)
    let whole_trace = matches!(
        body,
        B::CloseClient {
            final_voucher: Some(_),
            ..
        }
    );
    // A transfer is non-bounceable and accepted by any account, deployed or not.
    let checked = !matches!(body, B::Transfer { .. });
    if let Some((step, code)) = steps
        .iter()
        .skip(1)
        .filter(|step| checked && (whole_trace || step.on == plan.to))
        .find_map(|step| step.refused().map(|code| (step, code)))
    {
        if step.tx.exit_code.is_none() {
            return Err(SettlementError::Backend(format!(
                "no contract at {}: the message was not processed (it bounces)",
                step.on
            )));
        }
        let refuser = if step.on == plan.to {
            plan.refuser
        } else {
            Refuser::Proxy
        };
        return Err(refusal(refuser, code, &plan.facts));
    }
    let outcome = s.outcome(&body, &plan).await?;
    Ok(Receipt { seq, outcome })
}
