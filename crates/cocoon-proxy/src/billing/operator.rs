//! Who owns the proxy contract, and how this start's voucher key gets authorized for it: with
//! the operator's key (development) the proxy opens the contract or authorizes the key itself;
//! without it, it waits until the operator has, saying what to run.

use std::time::{Duration, Instant};

use cocoon_money::{AccountId, ContractStatus, Settlement};
use cocoon_node::registry::RegistryWatch;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::{BillingConfig, BillingError, CERTIFICATE_FILE};

/// Pause between looks at the ledger while waiting for the operator to authorize this start's key.
pub(super) const AUTHORIZATION_POLL: Duration = Duration::from_secs(1);
/// How often the wait for authorization repeats the command the operator has to run.
const AUTHORIZATION_REMINDER: Duration = Duration::from_secs(30);

/// Who owns the proxy contract, and whether this process holds their key.
pub enum Operator {
    /// Development and tests: the operator's key itself. The proxy opens its contract, stakes,
    /// authorizes its own voucher keys and withdraws the commission.
    Key(SigningKey),
    /// Production: the operator's account only; the operator authorizes each start's key.
    Account(AccountId),
}

impl Operator {
    /// The operator's account: the proxy contract's id.
    pub fn account(&self) -> AccountId {
        match self {
            Operator::Key(key) => AccountId::from(key),
            Operator::Account(account) => *account,
        }
    }
}

/// Tests only: how a proxy makes the worker vouchers workers must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadWorkerVouchers {
    /// Signed by a key this proxy did not attest.
    Forged,
    /// Signed by this proxy's key, naming another proxy contract.
    ForeignProxy,
}

/// With the operator's key: opens the proxy contract with `key` as its voucher key, or
/// authorizes `key` on the open one.
pub(super) async fn open_and_authorize(
    ledger: &dyn Settlement,
    config: &BillingConfig,
    registry: &RegistryWatch,
    account: AccountId,
    key: AccountId,
) -> Result<(), BillingError> {
    let stake = config.stake.max(registry.current().min_proxy_stake);
    if config.faucet > 0 {
        // Development: the stake, and as much again for the fees of the operations to come (a
        // chain charges each message).
        ledger
            .top_up_from_faucet(stake.saturating_add(config.faucet))
            .await?;
    }
    let contract = ledger.proxy_contract(account).await?;
    if contract
        .as_ref()
        .is_some_and(|c| c.status == ContractStatus::Open)
    {
        ledger.authorize_proxy_key(key).await?;
        tracing::info!(%account, voucher_key = %key, "this start's voucher key authorized");
        return Ok(());
    }
    let balance = ledger.account(account).await?.balance;
    if balance < stake {
        return Err(BillingError::CannotStake {
            account,
            balance,
            stake,
        });
    }
    ledger.open_proxy(stake, key).await?;
    tracing::info!(%account, stake, voucher_key = %key, "proxy contract opened");
    Ok(())
}

/// Without the operator's key: waits until the operator's open proxy contract authorizes `key`,
/// saying what to run meanwhile. Vouchers signed before would be worthless, so nothing is served.
pub(super) async fn wait_for_authorization(
    ledger: &dyn Settlement,
    config: &BillingConfig,
    account: AccountId,
    key: AccountId,
) {
    let mut reminded: Option<Instant> = None;
    loop {
        match ledger.proxy_contract(account).await {
            Ok(Some(contract))
                if contract.status == ContractStatus::Open && contract.authorizes(&key) =>
            {
                tracing::info!(%account, voucher_key = %key, "the operator authorized this start's voucher key");
                return;
            }
            Ok(_) | Err(_) if reminded.is_some_and(|at| at.elapsed() < AUTHORIZATION_REMINDER) => {}
            Ok(contract) => {
                reminded = Some(Instant::now());
                let open = contract.is_some_and(|c| c.status == ContractStatus::Open);
                tracing::warn!(
                    operator = %account,
                    voucher_key = %key,
                    contract_open = open,
                    "waiting for the operator to authorize this proxy's voucher key; check that \
                     the attested certificate {} names it (cocoon attest verify FILE \
                     --allow-image HASH), then on the operator's machine run: cocoon wallet \
                     --data-dir OPERATOR_WALLET --ledger {} authorize-proxy-key --key {key}{}",
                    config.data_dir.join(CERTIFICATE_FILE).display(),
                    config.ledger,
                    if open { "" } else { " --stake AMOUNT (opens the contract)" },
                );
            }
            Err(error) => {
                reminded = Some(Instant::now());
                tracing::warn!(%error, "waiting for the operator's authorization: cannot read the ledger");
            }
        }
        tokio::time::sleep(AUTHORIZATION_POLL).await;
    }
}
