//! Deploying a network's root: the registry contract, owned by the v5r1 wallet of the key that
//! deploys it. The root's address commits to its code and initial data (owner, terms, lists), so
//! it is known before the message is sent, and the nodes of the network pin it (`--ton-root`).

use ed25519_dalek::SigningKey;
use tonlib_core::cell::Cell;
use tonlib_core::TonAddress;

use crate::api::TonApi;
use crate::contracts::{wallet_address, RootTerms};
use crate::getters;
use crate::messages::internal_message;
use crate::registry_update::{registry_lists, registry_params};
use crate::sender::WalletSender;
use crate::settlement::{cell_error, SendErrorOrTrace, MESSAGE_FEE};
use crate::settlement_types::{AccountId, Registry, RuleError, SettlementError};

/// What a root's deployment takes from the owner's wallet beyond fees: its storage reserve.
pub const ROOT_DEPLOY_VALUE: u64 = MESSAGE_FEE;

/// The root a deployment by `owner`'s key with `registry`'s terms and lists would have.
pub fn root_terms(owner: &AccountId, registry: &Registry) -> Result<RootTerms, SettlementError> {
    Ok(RootTerms {
        owner: wallet_address(owner.as_bytes()).map_err(cell_error)?,
        params: registry_params(registry)?,
        lists: registry_lists(registry),
    })
}

/// Deploys, from the v5r1 wallet of `key` (which pays and becomes the owner), a root holding
/// `registry`'s terms and lists at version 0; returns its address once the chain shows it
/// active. Deploying again the same root is harmless (the address is the same; the message only
/// adds to its balance).
pub async fn deploy_root(
    api: &TonApi,
    key: &SigningKey,
    registry: &Registry,
) -> Result<TonAddress, SettlementError> {
    let terms = root_terms(&AccountId::from(key), registry)?;
    let deployment = terms.deployment().map_err(cell_error)?;
    let address = deployment.address().map_err(cell_error)?;
    let sender =
        WalletSender::new(api.clone(), key).map_err(|e| SettlementError::Backend(e.to_string()))?;
    // An unfunded wallet's message would only expire, attempt after attempt: refuse now.
    let balance = api
        .account(sender.address())
        .await
        .map_err(|e| SettlementError::Unavailable(e.to_string()))?
        .balance;
    let needed = ROOT_DEPLOY_VALUE.saturating_mul(2);
    if balance < u128::from(needed) {
        return Err(SettlementError::Rejected(RuleError::InsufficientFunds {
            available: u64::try_from(balance).unwrap_or(u64::MAX),
            needed,
        }));
    }
    let message = internal_message(
        &address,
        ROOT_DEPLOY_VALUE,
        false,
        Cell::default(),
        Some(&deployment),
    )
    .map_err(cell_error)?;
    sender
        .send(&[message])
        .await
        .map_err(|e| SettlementError::from(SendErrorOrTrace::from(e)))?;
    // The wallet's transaction sent it; the root's own follows in the next block.
    for _ in 0..60 {
        match getters::call(
            api,
            &address,
            "registry_version",
            &[],
            getters::registry_version,
        )
        .await
        {
            Ok(_) => return Ok(address),
            Err(getters::GetterError::NotDeployed) => {}
            Err(error) => return Err(SettlementError::Unavailable(error.to_string())),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Err(SettlementError::Unavailable(format!(
        "the root {} was sent but is not active after 60 s; check it before sending again",
        address.to_hex()
    )))
}
