//! The local devnet's own calls (`contracts/devnet/`): deploying a root. Development only; a real
//! network's root is deployed once by its owner.

use crate::api::{TonApi, TonApiError};
use crate::contracts::wallet_address;
use crate::registry_update::registry_params;
use crate::settlement::cell_error;
use crate::settlement_types::{Registry, SettlementError};
use tonlib_core::TonAddress;

/// Deploys, on the devnet at `base` (its URL without `/api/v2`), a root owned by the v5r1 wallet
/// of `registry.owner` with `registry`'s prices, delays and minimum stakes, and empty lists.
pub async fn deploy_root(base: &str, registry: &Registry) -> Result<TonAddress, SettlementError> {
    let base = base.trim_end_matches('/');
    let api = TonApi::new(&format!("{base}/api/v2"), None)
        .map_err(|e| SettlementError::Backend(e.to_string()))?;
    let owner = wallet_address(registry.owner.as_bytes()).map_err(cell_error)?;
    let p = registry_params(registry)?;
    let body = serde_json::json!({
        "owner": owner.to_hex(),
        "params": {
            "price_per_token": p.price_per_token.to_string(),
            "worker_fee_per_token": p.worker_fee_per_token.to_string(),
            "prompt_multiplier": p.prompt_multiplier.to_string(),
            "cached_multiplier": p.cached_multiplier.to_string(),
            "completion_multiplier": p.completion_multiplier.to_string(),
            "reasoning_multiplier": p.reasoning_multiplier.to_string(),
            "client_delay_before_close": p.client_delay_before_close.to_string(),
            "proxy_delay_before_close": p.proxy_delay_before_close.to_string(),
            "min_client_stake": p.min_client_stake.to_string(),
            "min_proxy_stake": p.min_proxy_stake.to_string(),
        },
    });
    let answer = api
        .post_devnet(&format!("{base}/devnet/deploy-root"), &body)
        .await
        .map_err(|e| match e {
            TonApiError::Transport(e) => SettlementError::Unavailable(e.to_string()),
            other => SettlementError::Backend(format!("the devnet refused the root: {other}")),
        })?;
    answer["address"]
        .as_str()
        .and_then(|address| TonAddress::from_hex_str(address).ok())
        .ok_or_else(|| {
            SettlementError::Backend(format!("the devnet's answer {answer} names no root"))
        })
}
