//! The registry ("root contract") document: network prices, delays, stakes and the allow-lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, Hash32};

/// An amount of money in nano-units (10⁻⁹ of the network's coin).
pub type Amount = u64;

/// The network's prices. Multipliers are per 10 000 (10 000 = 1.0×); prices are nano-units per
/// adjusted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    /// What a client pays per adjusted token.
    pub price_per_token: Amount,
    /// What a worker earns per adjusted token; the difference to `price_per_token` is the proxy's.
    pub worker_fee_per_token: Amount,
    /// Multiplier for prompt tokens not served from cache.
    pub prompt_multiplier: u32,
    /// Multiplier for prompt tokens served from the engine's prefix cache.
    pub cached_multiplier: u32,
    /// Multiplier for completion tokens other than reasoning.
    pub completion_multiplier: u32,
    /// Multiplier for hidden reasoning tokens.
    pub reasoning_multiplier: u32,
}

impl Default for Prices {
    /// Development prices: 1.0× for everything but cached prompt tokens (0.1×), and a 20 %
    /// proxy commission.
    fn default() -> Self {
        Self {
            price_per_token: 1_000,
            worker_fee_per_token: 800,
            prompt_multiplier: 10_000,
            cached_multiplier: 1_000,
            completion_multiplier: 10_000,
            reasoning_multiplier: 10_000,
        }
    }
}

/// A proxy the registry lists, as clients and workers find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredProxy {
    /// Sequence number of the registration (unique within the registry).
    pub seqno: u64,
    /// Address workers dial (`host:port`).
    pub worker_endpoint: String,
    /// Address clients dial (`host:port`).
    pub client_endpoint: String,
}

/// The versioned registry document. Only its owner may replace it, and only with a higher version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Version, strictly increasing with every update.
    pub version: u64,
    /// The account whose signature is required to update this document.
    pub owner: AccountId,
    /// Token prices and multipliers.
    pub prices: Prices,
    /// Seconds a client's stake stays locked after a close without the proxy's final voucher.
    pub client_delay_before_close: u64,
    /// Seconds a proxy's stake and pool stay locked after it starts closing, so workers can claim.
    pub proxy_delay_before_close: u64,
    /// Least stake a client contract must lock.
    pub min_client_stake: Amount,
    /// Least stake a proxy contract must lock.
    pub min_proxy_stake: Amount,
    /// Allowed proxy TEE image hashes (empty = any; enforced by the trust layer, not the ledger).
    #[serde(default)]
    pub proxy_image_hashes: Vec<Hash32>,
    /// Allowed worker TEE image hashes (empty = any; enforced by the trust layer).
    #[serde(default)]
    pub worker_image_hashes: Vec<Hash32>,
    /// Allowed models: name → model hash.
    #[serde(default)]
    pub models: BTreeMap<String, Hash32>,
    /// Registered proxies.
    #[serde(default)]
    pub proxies: Vec<RegisteredProxy>,
}

/// Why a registry document is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The worker fee exceeds the client price, which would make the proxy's commission negative.
    #[error("worker_fee_per_token {fee} exceeds price_per_token {price}")]
    FeeAbovePrice {
        /// The worker fee per token.
        fee: Amount,
        /// The client price per token.
        price: Amount,
    },
    /// Two registered proxies share a sequence number.
    #[error("registered proxy seqno {seqno} appears twice")]
    DuplicateProxySeqno {
        /// The repeated seqno.
        seqno: u64,
    },
}

impl Registry {
    /// A first-version registry owned by `owner`, with development prices, delays and stakes and
    /// empty allow-lists.
    pub fn new(owner: AccountId) -> Self {
        Self {
            version: 1,
            owner,
            prices: Prices::default(),
            client_delay_before_close: 600,
            proxy_delay_before_close: 3_600,
            min_client_stake: 1_000_000_000,
            min_proxy_stake: 10_000_000_000,
            proxy_image_hashes: Vec::new(),
            worker_image_hashes: Vec::new(),
            models: BTreeMap::new(),
            proxies: Vec::new(),
        }
    }

    /// Checks the document's internal consistency.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let p = &self.prices;
        if p.worker_fee_per_token > p.price_per_token {
            return Err(RegistryError::FeeAbovePrice {
                fee: p.worker_fee_per_token,
                price: p.price_per_token,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for proxy in &self.proxies {
            if !seen.insert(proxy.seqno) {
                return Err(RegistryError::DuplicateProxySeqno { seqno: proxy.seqno });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_registry_is_valid_and_round_trips() {
        let mut reg = Registry::new(AccountId([3; 32]));
        reg.models.insert("qwen".into(), Hash32([9; 32]));
        reg.validate().unwrap();
        let json = serde_json::to_string(&reg).unwrap();
        assert_eq!(serde_json::from_str::<Registry>(&json).unwrap(), reg);
    }

    #[test]
    fn fee_above_price_and_duplicate_seqno_are_rejected() {
        let mut reg = Registry::new(AccountId([3; 32]));
        reg.prices.worker_fee_per_token = reg.prices.price_per_token + 1;
        assert!(matches!(
            reg.validate(),
            Err(RegistryError::FeeAbovePrice { .. })
        ));

        let mut reg = Registry::new(AccountId([3; 32]));
        let proxy = RegisteredProxy {
            seqno: 1,
            worker_endpoint: "a:1".into(),
            client_endpoint: "a:2".into(),
        };
        reg.proxies = vec![proxy.clone(), proxy];
        assert_eq!(
            reg.validate(),
            Err(RegistryError::DuplicateProxySeqno { seqno: 1 })
        );
    }
}
