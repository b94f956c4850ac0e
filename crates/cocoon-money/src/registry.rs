//! The registry ("root contract") document: network prices, delays, stakes and the allow-lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, Hash32};

/// An amount of money in nano-units (10⁻⁹ of the network's coin).
pub type Amount = u64;

/// Most proxies a registry lists (the network is designed for 10–100).
pub const MAX_REGISTERED_PROXIES: usize = 100;
/// Most image hashes a registry allows per role.
pub const MAX_IMAGE_HASHES: usize = 64;
/// Most models a registry allows.
pub const MAX_MODELS: usize = 64;
/// Longest model name or proxy endpoint, in bytes.
pub const MAX_NAME_LEN: usize = 100;

/// The network's prices. Multipliers are per 10 000 (10 000 = 1.0×); prices are nano-units per
/// adjusted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// A list is longer than any real registry needs (see the `MAX_*` constants).
    #[error("too many {what}: at most {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A model name or endpoint is empty, too long or not printable ASCII, or an endpoint is
    /// not `host:port`.
    #[error("bad {what} {text:?}: at most {max} printable ASCII characters{rule}", max = MAX_NAME_LEN)]
    BadName {
        /// What kind of text.
        what: &'static str,
        /// The text, cut to the limit.
        text: String,
        /// The extra rule it breaks, if any.
        rule: &'static str,
    },
    /// The owner key is not a valid, non-weak Ed25519 key: nobody could ever sign an update, or
    /// anybody could.
    #[error("registry owner is not a valid, non-weak Ed25519 public key")]
    BadOwner,
}

/// Which kind of node an image hash is allowed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRole {
    /// Proxies (checked by clients and workers).
    Proxy,
    /// Workers (checked by proxies).
    Worker,
}

impl std::fmt::Display for ImageRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageRole::Proxy => "proxy",
            ImageRole::Worker => "worker",
        })
    }
}

/// One change to the registry; also the owner's `cocoon registry` subcommands (prices are set
/// with `set-price`, which fills in the fields not given from the current document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "edit", rename_all = "snake_case", deny_unknown_fields)]
pub enum RegistryEdit {
    /// Register a proxy (it gets the next free seqno); clients and workers that follow the
    /// registry link to it.
    AddProxy {
        /// Address workers dial (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        worker_endpoint: String,
        /// Address clients dial (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        client_endpoint: String,
    },
    /// Unregister a proxy (see `show` for seqnos); its links are dropped.
    RemoveProxy {
        /// The proxy's seqno.
        seqno: u64,
    },
    /// Allow an image hash for proxies or workers.
    AllowImage {
        /// Which nodes the image is for.
        #[arg(long, value_enum)]
        role: ImageRole,
        /// The image hash (64 hex digits; `cocoon attest image-hash` prints a node's).
        hash: Hash32,
    },
    /// Revoke an image hash; nodes running it are disconnected within seconds.
    RevokeImage {
        /// Which nodes the image was allowed for.
        #[arg(long, value_enum)]
        role: ImageRole,
        /// The image hash.
        hash: Hash32,
    },
    /// Allow a model name with the SHA-256 of its weights (replaces the name's previous hash).
    AllowModel {
        /// The model name clients request.
        name: String,
        /// SHA-256 of the weights (a worker's `model_hash` in its `/jsonstats`).
        hash: Hash32,
    },
    /// Revoke a model; workers serving it are disconnected within seconds.
    RevokeModel {
        /// The model name.
        name: String,
    },
    /// Replace the prices.
    #[command(skip)]
    SetPrices {
        /// The new prices.
        prices: Prices,
    },
}

/// Why an edit cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The thing to remove is not in the registry.
    #[error("{0} is not in the registry")]
    NotListed(String),
    /// The thing to add is already there.
    #[error("{0} is already in the registry")]
    AlreadyListed(String),
    /// Removing the last entry would turn the list into "allow anything".
    #[error(
        "{0} is the last entry of its list, and an empty list allows anything; allow another first"
    )]
    WouldAllowAny(String),
    /// An endpoint is not `host:port`.
    #[error("endpoint `{0}` is not HOST:PORT")]
    BadEndpoint(String),
    /// The edited document is inconsistent.
    #[error(transparent)]
    Invalid(#[from] RegistryError),
}

impl Registry {
    /// The allowed image hashes for `role` (empty: any).
    pub fn images(&self, role: ImageRole) -> &[Hash32] {
        match role {
            ImageRole::Proxy => &self.proxy_image_hashes,
            ImageRole::Worker => &self.worker_image_hashes,
        }
    }

    /// The next version of this document with `edit` applied (version + 1), or why not.
    pub fn edited(&self, edit: &RegistryEdit) -> Result<Registry, EditError> {
        let mut next = self.clone();
        next.version = self.version.saturating_add(1);
        match edit {
            RegistryEdit::AddProxy {
                worker_endpoint,
                client_endpoint,
            } => {
                for endpoint in [worker_endpoint, client_endpoint] {
                    if !is_endpoint(endpoint) {
                        return Err(EditError::BadEndpoint(endpoint.clone()));
                    }
                }
                let seqno = next.proxies.iter().map(|p| p.seqno + 1).max().unwrap_or(1);
                next.proxies.push(RegisteredProxy {
                    seqno,
                    worker_endpoint: worker_endpoint.clone(),
                    client_endpoint: client_endpoint.clone(),
                });
            }
            RegistryEdit::RemoveProxy { seqno } => {
                let before = next.proxies.len();
                next.proxies.retain(|p| p.seqno != *seqno);
                if next.proxies.len() == before {
                    return Err(EditError::NotListed(format!("proxy #{seqno}")));
                }
            }
            RegistryEdit::AllowImage { role, hash } => {
                let list = next.images_mut(*role);
                if list.contains(hash) {
                    return Err(EditError::AlreadyListed(format!("{role} image {hash}")));
                }
                list.push(*hash);
            }
            RegistryEdit::RevokeImage { role, hash } => {
                let what = format!("{role} image {hash}");
                let list = next.images_mut(*role);
                if !list.contains(hash) {
                    return Err(EditError::NotListed(what));
                }
                if list.len() == 1 {
                    return Err(EditError::WouldAllowAny(what));
                }
                list.retain(|h| h != hash);
            }
            RegistryEdit::AllowModel { name, hash } => {
                if next.models.get(name) == Some(hash) {
                    return Err(EditError::AlreadyListed(format!("model {name}={hash}")));
                }
                next.models.insert(name.clone(), *hash);
            }
            RegistryEdit::RevokeModel { name } => {
                let what = format!("model `{name}`");
                if !next.models.contains_key(name) {
                    return Err(EditError::NotListed(what));
                }
                if next.models.len() == 1 {
                    return Err(EditError::WouldAllowAny(what));
                }
                next.models.remove(name);
            }
            RegistryEdit::SetPrices { prices } => next.prices = prices.clone(),
        }
        next.validate()?;
        Ok(next)
    }

    fn images_mut(&mut self, role: ImageRole) -> &mut Vec<Hash32> {
        match role {
            ImageRole::Proxy => &mut self.proxy_image_hashes,
            ImageRole::Worker => &mut self.worker_image_hashes,
        }
    }

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
        self.owner
            .verifying_key()
            .map_err(|_| RegistryError::BadOwner)?;
        for (what, len, max) in [
            (
                "registered proxies",
                self.proxies.len(),
                MAX_REGISTERED_PROXIES,
            ),
            (
                "proxy image hashes",
                self.proxy_image_hashes.len(),
                MAX_IMAGE_HASHES,
            ),
            (
                "worker image hashes",
                self.worker_image_hashes.len(),
                MAX_IMAGE_HASHES,
            ),
            ("models", self.models.len(), MAX_MODELS),
        ] {
            if len > max {
                return Err(RegistryError::TooMany { what, max });
            }
        }
        for name in self.models.keys() {
            check_name("model name", name, "", |_| true)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for proxy in &self.proxies {
            for endpoint in [&proxy.worker_endpoint, &proxy.client_endpoint] {
                check_name("endpoint", endpoint, ", as HOST:PORT", is_endpoint)?;
            }
            if !seen.insert(proxy.seqno) {
                return Err(RegistryError::DuplicateProxySeqno { seqno: proxy.seqno });
            }
        }
        Ok(())
    }
}

/// Model names and endpoints are short printable ASCII: what real ones are, and nothing that
/// could pad the document or hide in a log line.
fn check_name(
    what: &'static str,
    text: &str,
    rule: &'static str,
    follows_rule: impl Fn(&str) -> bool,
) -> Result<(), RegistryError> {
    let printable = text.bytes().all(|b| b.is_ascii_graphic());
    if text.is_empty() || text.len() > MAX_NAME_LEN || !printable || !follows_rule(text) {
        return Err(RegistryError::BadName {
            what,
            text: text.chars().take(MAX_NAME_LEN).collect(),
            rule,
        });
    }
    Ok(())
}

/// Whether `text` looks like `host:port`.
pub fn is_endpoint(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    })
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
    fn edits_bump_the_version_and_change_one_thing() {
        let reg = Registry::new(AccountId([3; 32]));
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        let allow = |reg: &Registry, hash| {
            reg.edited(&RegistryEdit::AllowImage {
                role: ImageRole::Worker,
                hash,
            })
        };
        let one = allow(&reg, a).unwrap();
        assert_eq!(one.version, 2);
        assert_eq!(one.images(ImageRole::Worker), &[a]);
        assert!(one.images(ImageRole::Proxy).is_empty());
        assert!(matches!(allow(&one, a), Err(EditError::AlreadyListed(_))));
        let two = allow(&one, b).unwrap();
        let revoke = |reg: &Registry, hash| {
            reg.edited(&RegistryEdit::RevokeImage {
                role: ImageRole::Worker,
                hash,
            })
        };
        let back = revoke(&two, a).unwrap();
        assert_eq!(
            (back.version, back.images(ImageRole::Worker)),
            (4, &[b][..])
        );
        // The last image cannot go: an empty list would allow every image.
        assert!(matches!(revoke(&back, b), Err(EditError::WouldAllowAny(_))));
        assert!(matches!(revoke(&back, a), Err(EditError::NotListed(_))));
    }

    #[test]
    fn proxies_get_fresh_seqnos_and_models_keep_one_hash() {
        let reg = Registry::new(AccountId([3; 32]));
        let add = |reg: &Registry, port: u16| {
            reg.edited(&RegistryEdit::AddProxy {
                worker_endpoint: format!("h:{port}"),
                client_endpoint: format!("h:{}", port + 1),
            })
        };
        let reg = add(&add(&reg, 1).unwrap(), 3).unwrap();
        let seqnos: Vec<u64> = reg.proxies.iter().map(|p| p.seqno).collect();
        assert_eq!(seqnos, [1, 2]);
        let reg = reg.edited(&RegistryEdit::RemoveProxy { seqno: 1 }).unwrap();
        assert_eq!(add(&reg, 5).unwrap().proxies[1].seqno, 3);
        assert!(matches!(
            reg.edited(&RegistryEdit::RemoveProxy { seqno: 1 }),
            Err(EditError::NotListed(_))
        ));
        assert!(matches!(
            reg.edited(&RegistryEdit::AddProxy {
                worker_endpoint: "nowhere".into(),
                client_endpoint: "h:1".into()
            }),
            Err(EditError::BadEndpoint(_))
        ));

        let model = |name: &str, byte| RegistryEdit::AllowModel {
            name: name.into(),
            hash: Hash32([byte; 32]),
        };
        let reg = reg
            .edited(&model("m", 1))
            .unwrap()
            .edited(&model("m", 2))
            .unwrap();
        assert_eq!(reg.models.get("m"), Some(&Hash32([2; 32])));
        let reg = reg.edited(&model("n", 1)).unwrap();
        let reg = reg
            .edited(&RegistryEdit::RevokeModel { name: "m".into() })
            .unwrap();
        assert_eq!(reg.models.keys().collect::<Vec<_>>(), ["n"]);
        assert!(matches!(
            reg.edited(&RegistryEdit::RevokeModel { name: "n".into() }),
            Err(EditError::WouldAllowAny(_))
        ));
    }

    #[test]
    fn prices_are_validated() {
        let reg = Registry::new(AccountId([3; 32]));
        let mut prices = reg.prices.clone();
        prices.worker_fee_per_token = prices.price_per_token + 1;
        assert!(matches!(
            reg.edited(&RegistryEdit::SetPrices { prices }),
            Err(EditError::Invalid(RegistryError::FeeAbovePrice { .. }))
        ));
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

    #[test]
    fn registries_are_bounded_and_owned_by_a_usable_key() {
        let owner = AccountId([3; 32]);
        let mut reg = Registry::new(owner);
        reg.models = (0..=MAX_MODELS)
            .map(|i| (format!("m{i}"), Hash32([0; 32])))
            .collect();
        assert!(matches!(
            reg.validate(),
            Err(RegistryError::TooMany { what: "models", .. })
        ));
        for name in [
            "x".repeat(MAX_NAME_LEN + 1),
            "a b".into(),
            "".into(),
            "é".into(),
        ] {
            let mut reg = Registry::new(owner);
            reg.models.insert(name.clone(), Hash32([0; 32]));
            assert!(
                matches!(reg.validate(), Err(RegistryError::BadName { .. })),
                "{name:?}"
            );
        }
        let mut reg = Registry::new(owner);
        reg.proxies.push(RegisteredProxy {
            seqno: 1,
            worker_endpoint: "no-port".into(),
            client_endpoint: "h:1".into(),
        });
        assert!(matches!(reg.validate(), Err(RegistryError::BadName { .. })));
        // Anyone could sign for it.
        assert_eq!(
            Registry::new(crate::ids::WEAK_KEY).validate(),
            Err(RegistryError::BadOwner)
        );
    }
}
