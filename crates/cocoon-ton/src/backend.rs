//! [`TonBackend`]: the Cocoon contracts on TON as a `SettlementBackend`, which the binary hands to
//! the roles; each opens its [`TonSettlement`] handle (one per account, or one that only reads).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tonlib_core::TonAddress;

use crate::api::TonApi;
use crate::getters;
use crate::sender::WalletSender;
use crate::settlement::{getter_error, Signer, Terms, TonSettlement};
use crate::settlement_types::{
    AccountId, RegistryAuthority, Settlement, SettlementBackend, SettlementError,
};

/// The root at one address, read through one TON API.
#[derive(Clone)]
pub struct TonBackend {
    api: TonApi,
    root: TonAddress,
    terms: Arc<RwLock<Terms>>,
    devnet: Option<String>,
    poll: Duration,
    location: String,
}

impl TonBackend {
    /// The backend over the root at `root`, reading the registry's terms now (minimum stakes and
    /// close delays are part of the contracts' addresses).
    pub async fn connect_root(api: TonApi, root: TonAddress) -> Result<Self, SettlementError> {
        let params = getters::call(
            &api,
            &root,
            "registry_params",
            &[],
            getters::registry_params,
        )
        .await
        .map_err(getter_error)?;
        Ok(Self {
            location: format!("{} (root {})", api.base_url(), root.to_hex()),
            api,
            root,
            terms: Arc::new(RwLock::new(Terms::from(&params))),
            devnet: None,
            poll: crate::sender::POLL_INTERVAL,
        })
    }

    /// The same backend on the local devnet at `url` (its base, without `/api/v2`): `Mint`
    /// credits the wallet from the devnet's faucet. Development only: elsewhere `Mint` is
    /// refused (`FaucetDisabled`).
    pub fn with_devnet_faucet(mut self, url: &str) -> Self {
        self.devnet = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// The same backend polling the chain every `poll` while an operation is under way.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// A handle acting for the wallet of `key`, or only reading (`None`).
    pub fn handle(&self, key: Option<&SigningKey>) -> Result<TonSettlement, SettlementError> {
        let signer = match key {
            Some(key) => Some(Signer {
                sender: WalletSender::new(self.api.clone(), key)
                    .map_err(|e| SettlementError::Backend(e.to_string()))?
                    .with_poll_interval(self.poll),
                me: AccountId::from(key),
            }),
            None => None,
        };
        Ok(TonSettlement {
            api: self.api.clone(),
            signer,
            root: self.root.clone(),
            terms: self.terms.clone(),
            devnet: self.devnet.clone(),
            poll: self.poll,
        })
    }
}

impl SettlementBackend for TonBackend {
    fn connect(&self, key: Option<SigningKey>) -> Result<Arc<dyn Settlement>, SettlementError> {
        Ok(Arc::new(self.handle(key.as_ref())?))
    }

    fn location(&self) -> &str {
        &self.location
    }

    /// The root contract this backend was opened on: only its owner can change the registry.
    fn registry_authority(&self) -> RegistryAuthority {
        RegistryAuthority::Contract {
            address: self.root.to_hex(),
        }
    }
}
