//! The rules' registry as the root's `update_registry`: the owner as the v5r1 wallet of its key,
//! delays in 32 bits, names and endpoints of at most one cell. What does not fit is
//! `InvalidRegistry`.

use crate::contracts::wallet_address;
use crate::messages::UpdateRegistry;
use crate::registry_cells::{ListedProxy, RegistryLists, RegistryParams};
use crate::settlement::cell_error;
use crate::settlement_types::{Registry, RuleError, SettlementError};

/// The root's update for the rules' `registry`. The owner becomes the v5r1 wallet of
/// `registry.owner`; the rules' registry does not name proxy contracts, so listed proxies carry
/// the zero address (nodes find a proxy's contract from its operator's id).
pub fn registry_update(registry: &Registry) -> Result<UpdateRegistry, SettlementError> {
    let params = registry_params(registry)?;
    let lists = registry_lists(registry);
    Ok(UpdateRegistry {
        version: registry.version,
        owner: wallet_address(registry.owner.as_bytes()).map_err(cell_error)?,
        params: params.cell().map_err(|e| invalid(&e.to_string()))?,
        lists: lists.cell().map_err(|e| invalid(&e.to_string()))?,
    })
}

/// The root's lists of the rules' `registry` (listed proxies with the zero address).
pub fn registry_lists(registry: &Registry) -> RegistryLists {
    RegistryLists {
        proxy_images: registry.proxy_image_hashes.iter().map(|h| h.0).collect(),
        worker_images: registry.worker_image_hashes.iter().map(|h| h.0).collect(),
        models: registry
            .models
            .iter()
            .map(|(name, hash)| (hash.0, name.clone()))
            .collect(),
        proxies: registry
            .proxies
            .iter()
            .map(|p| ListedProxy {
                seqno: p.seqno,
                address: tonlib_core::TonAddress::NULL,
                worker_endpoint: p.worker_endpoint.clone(),
                client_endpoint: p.client_endpoint.clone(),
            })
            .collect(),
    }
}

/// The root's parameters (prices, delays, minimum stakes) of the rules' `registry`.
pub fn registry_params(registry: &Registry) -> Result<RegistryParams, SettlementError> {
    let delay = |seconds: u64, what: &str| {
        u32::try_from(seconds).map_err(|_| invalid(&format!("{what} past 32 bits on TON")))
    };
    Ok(RegistryParams {
        price_per_token: registry.prices.price_per_token,
        worker_fee_per_token: registry.prices.worker_fee_per_token,
        prompt_multiplier: registry.prices.prompt_multiplier,
        cached_multiplier: registry.prices.cached_multiplier,
        completion_multiplier: registry.prices.completion_multiplier,
        reasoning_multiplier: registry.prices.reasoning_multiplier,
        client_delay_before_close: delay(registry.client_delay_before_close, "client delay")?,
        proxy_delay_before_close: delay(registry.proxy_delay_before_close, "proxy delay")?,
        min_client_stake: registry.min_client_stake,
        min_proxy_stake: registry.min_proxy_stake,
    })
}

fn invalid(reason: &str) -> SettlementError {
    SettlementError::Rejected(RuleError::InvalidRegistry {
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::account_id;
    use crate::settlement::registry_of;
    use crate::settlement_types::{AccountId, Hash32, Prices, RegisteredProxy};

    fn registry() -> Registry {
        Registry {
            version: 4,
            owner: AccountId([9; 32]),
            prices: Prices::default(),
            client_delay_before_close: 600,
            proxy_delay_before_close: 3600,
            min_client_stake: 1,
            min_proxy_stake: 2,
            proxy_image_hashes: vec![Hash32([1; 32])],
            worker_image_hashes: vec![Hash32([2; 32]), Hash32([3; 32])],
            models: [("qwen".to_owned(), Hash32([4; 32]))].into(),
            proxies: vec![RegisteredProxy {
                seqno: 1,
                worker_endpoint: "w:1".into(),
                client_endpoint: "c:2".into(),
            }],
        }
    }

    #[test]
    fn a_registry_goes_to_the_root_and_comes_back_with_the_owner_as_its_wallet() {
        let update = registry_update(&registry()).unwrap();
        let params = RegistryParams::from_cell(&update.params).unwrap();
        let lists = RegistryLists::from_cell(&update.lists).unwrap();
        let back = registry_of(update.version, &update.owner, &params, lists);
        let wallet = wallet_address(&[9; 32]).unwrap();
        assert_eq!(back.owner, AccountId(account_id(&wallet)));
        assert_eq!(
            back,
            Registry {
                owner: back.owner,
                ..registry()
            }
        );
    }

    #[test]
    fn what_does_not_fit_the_root_is_an_invalid_registry() {
        let too_long = Registry {
            client_delay_before_close: u64::from(u32::MAX) + 1,
            ..registry()
        };
        let long_name = Registry {
            models: [("m".repeat(200), Hash32([4; 32]))].into(),
            ..registry()
        };
        for registry in [too_long, long_name] {
            assert!(matches!(
                registry_update(&registry),
                Err(SettlementError::Rejected(RuleError::InvalidRegistry { .. }))
            ));
        }
    }
}
