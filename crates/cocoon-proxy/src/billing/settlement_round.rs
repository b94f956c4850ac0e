//! The settlement round the proxy runs every `--settle-interval-ms`: apply the clients' own payment
//! vouchers, tell linked workers what they can claim, withdraw the commission (when this process
//! holds the operator's key). Every step reads the proxy's own database, so a round that fails (the ledger is
//! down) changes nothing, and the next one that succeeds settles everything that accrued.

use std::sync::Arc;

use bytes::Bytes;
use cocoon_money::{Amount, RuleError, SettlementError, WorkerStatement};
use cocoon_node::Body;
use cocoon_proto::link::PATH_EARNINGS;
use http::{header, Request};
use tokio_util::sync::CancellationToken;

use super::{lock, wallet_of, Billing, BillingError, PUSH_TIMEOUT};
use crate::routing::Routing;

impl Billing {
    /// One settlement round; errors are logged and retried next round.
    pub async fn settle(&self, routing: &Routing) {
        if let Err(error) = self.try_settle(routing).await {
            tracing::warn!(%error, "settlement round failed");
            lock(&self.view).last_error = Some(error.to_string());
        }
    }

    async fn try_settle(&self, routing: &Routing) -> Result<(), BillingError> {
        // (No commit of the database position: nobody's safety rests on it; see docs/money.md.)
        // Workers' earnings are read before the clients' charges are applied: a charge written
        // in between is then applied to its client before its worker can claim it, so claims
        // never run ahead of what clients paid into the pool (the stake would cover the gap).
        let statements = self.worker_statements()?;
        // 1. Apply what clients paid: each one's newest voucher, signed by its own wallet key
        // (clients may also apply the same vouchers: harmless).
        let clients = lock(&self.store).clients()?;
        for (client, _) in clients {
            let Some(voucher) = self.payment_of(&client) else {
                continue;
            };
            let known = self.fetch_contract(client).await?;
            let on_ledger = known.contract.as_ref().map_or(0, |c| c.voucher_seqno);
            if voucher.voucher.seqno <= on_ledger {
                continue;
            }
            match self.ledger.submit_charge(voucher).await {
                Ok(_) => {
                    self.fetch_contract(client).await?;
                }
                Err(e) if e.is_stale_voucher() => {}
                Err(e)
                    if !self.acts_for_operator
                        && matches!(e.rule(), Some(RuleError::InsufficientFunds { .. })) =>
                {
                    // On a chain every message pays a fee from the sender's wallet: here the
                    // wallet of this start's voucher key, which the operator must fund.
                    let key = self.signer.voucher_key();
                    tracing::warn!(
                        %client, voucher_key = %key, error = %e,
                        "applying a client payment failed: the wallet of this start's voucher key \
                         cannot pay the fees; on the operator's machine run: cocoon wallet \
                         … transfer --to {key} 1000000000"
                    );
                }
                Err(e) => tracing::warn!(%client, error = %e, "applying a client payment failed"),
            }
        }
        // 2. Tell linked workers what they can claim, as of before step 2.
        let links = routing.links();
        lock(&self.pushed).retain(|id, _| links.iter().any(|link| link.id == *id));
        for link in links {
            let Some(statement) = statements
                .iter()
                .find(|s| wallet_of(&link.peer) == Some(s.worker))
            else {
                continue;
            };
            if lock(&self.pushed).get(&link.id) == Some(&statement.earned) {
                continue;
            }
            match push_statement(&link.sender, statement).await {
                Ok(()) => {
                    lock(&self.pushed).insert(link.id, statement.earned);
                }
                Err(error) => {
                    tracing::warn!(worker = %statement.worker, %error, "sending earnings failed")
                }
            }
        }
        // 3. Withdraw the commission: what the pool holds beyond the workers' unclaimed earnings.
        let contract =
            self.ledger
                .proxy_contract(self.account)
                .await?
                .ok_or(BillingError::Ledger(SettlementError::Backend(
                    "the proxy contract disappeared".into(),
                )))?;
        let workers = lock(&self.store).workers()?;
        let threshold = self.config.withdraw_threshold;
        let (mut pool, mut withdrawn) = (contract.pool, contract.withdrawn);
        let mut paid_to_workers = contract.paid_to_workers;
        // Only a pool past the threshold can give a withdrawal worth making: then read what each
        // worker was paid (a chain keeps no total), to keep every unclaimed earning in the pool.
        if self.acts_for_operator && threshold > 0 && contract.pool >= threshold {
            let mut unclaimed: Amount = 0;
            paid_to_workers = 0;
            for (worker, totals) in &workers {
                let paid = self
                    .ledger
                    .worker_contract(self.account, *worker)
                    .await?
                    .map_or(0, |c| c.paid);
                unclaimed = unclaimed.saturating_add(totals.amount.saturating_sub(paid));
                paid_to_workers = paid_to_workers.saturating_add(paid);
            }
            let withdrawable = withdrawable_commission(contract.pool, unclaimed);
            if withdrawable >= threshold {
                self.ledger.withdraw_commission(withdrawable).await?;
                pool -= withdrawable;
                withdrawn = withdrawn.saturating_add(withdrawable);
                tracing::info!(amount = withdrawable, "commission withdrawn");
            }
        }
        let balance = self.ledger.account(self.account).await?.balance;
        let mut view = lock(&self.view);
        view.balance = balance;
        view.stake = contract.stake;
        view.pool = pool;
        view.paid_to_workers = paid_to_workers;
        view.withdrawn = withdrawn;
        view.last_error = None;
        Ok(())
    }

    /// Settles every `settle_interval` until `shutdown`, and once more at shutdown.
    pub fn spawn(
        self: &Arc<Self>,
        routing: Arc<Routing>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let billing = self.clone();
        tokio::spawn(async move {
            loop {
                billing.settle(&routing).await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(billing.config.settle_interval) => {}
                }
            }
            billing.settle(&routing).await;
        })
    }
}

/// Commission that can leave the pool: the pool less what workers earned but have not claimed.
fn withdrawable_commission(pool: Amount, unclaimed: Amount) -> Amount {
    pool.saturating_sub(unclaimed)
}

async fn push_statement(
    sender: &cocoon_node::link::LinkSender,
    statement: &WorkerStatement,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(statement)?;
    let request = Request::post(PATH_EARNINGS)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(Bytes::from(body)))?;
    let mut sender = sender.clone();
    let exchange = async move {
        sender.ready().await?;
        sender.send_request(request).await
    };
    let response = tokio::time::timeout(PUSH_TIMEOUT, exchange).await??;
    anyhow::ensure!(
        response.status().is_success(),
        "worker answered {}",
        response.status()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commission_never_touches_unclaimed_worker_earnings() {
        assert_eq!(withdrawable_commission(1_000, 800 - 300), 500);
        assert_eq!(withdrawable_commission(100, 800), 0);
    }
}
