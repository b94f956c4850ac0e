//! Whom a node believes about the registry. A node pins the registry owner's key
//! (`--registry-owner`) and uses a version only as the owner signed it, never older than the last
//! one it accepted: kept in memory, and in the node's data directory so that a restart does not
//! forget it. A ledger can then withhold new versions, but neither forge one nor roll one back.
//!
//! On TON the registry is the state of the root contract the node pinned (`--ton-root`), which
//! only its owner can change: there is no signature to check, and `--registry-owner` is refused
//! rather than silently ignored. The node still never takes an invalid document or an older
//! version than the last one it accepted (kept the same way).
//!
//! A refused version is logged (at most once a minute for the same reason) and counted, and the
//! node keeps the last good one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_money::signed_registry::{verify_contract_registry, verify_update};
use cocoon_money::{
    AccountId, Registry, RegistryAuthority, RegistryRefusal, SeenVersion, Settlement,
    SettlementBackend, SettlementError, SignedTransaction,
};
use serde::{Deserialize, Serialize};

/// The file in a node's data directory that keeps the last registry update it accepted.
pub const SEEN_FILE: &str = "registry-seen.json";

/// The same for a registry read from a contract: the contract's address and the document.
pub const SEEN_CONTRACT_FILE: &str = "registry-seen-contract.json";

/// How often the same refusal is logged as a warning.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How a node authenticates the registry it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryTrust {
    /// Every version must be signed by `owner` and not older than the last one accepted (kept in
    /// `data_dir`, if given, across restarts).
    Pinned {
        /// The registry owner's account (its Ed25519 public key).
        owner: AccountId,
        /// Where the last accepted version is kept.
        data_dir: Option<PathBuf>,
    },
    /// The registry is the state of the contract at `address`, which the node pinned (TON's
    /// root): every version must be valid and not older than the last one accepted (kept in
    /// `data_dir`, if given, across restarts).
    Contract {
        /// The contract's address.
        address: String,
        /// Where the last accepted version is kept.
        data_dir: Option<PathBuf>,
    },
    /// Development only: the registry is taken as the ledger states it. Allowed only for a node
    /// whose lists all come from its command line (see [`RegistryTrust::for_node`]).
    Unverified,
}

/// Why a node cannot trust a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// `--registry-owner` is not an account.
    #[error("--registry-owner {given}: {reason}")]
    BadOwner {
        /// What was given.
        given: String,
        /// Why it is not an account.
        reason: String,
    },
    /// `--registry-owner` was given where the registry is a pinned contract's state.
    #[error(
        "--registry-owner pins the signer of the local ledger's registry; on TON the registry is \
         the root contract {address} (--ton-root), which only its owner can change: drop \
         --registry-owner"
    )]
    OwnerOnContract {
        /// The contract's address.
        address: String,
    },
    /// The node follows the registry but pinned no owner.
    #[error(
        "without {from_registry} this node follows the registry, so it must pin the registry's \
         owner: pass --registry-owner ACCOUNT (`cocoon registry keygen` prints it; `cocoon dev` \
         keeps its key in <data-dir>/registry-owner.key)"
    )]
    OwnerNotPinned {
        /// The flag of the first list the node would take from the registry.
        from_registry: &'static str,
    },
}

impl RegistryTrust {
    /// The trust of a node that pinned `owner` (`--registry-owner`, hex; empty: none), keeping
    /// the last accepted version in `data_dir`, on a backend whose registry `authority` vouches
    /// for. `lists` are the lists the node takes from its command line, or from the registry when
    /// the flag is not given: `(flag, values)`. A node without an owner may read the registry
    /// unverified only when every list is given on its command line. On a pinned contract
    /// ([`RegistryAuthority::Contract`]) the contract is the authority, and an owner is refused.
    pub fn for_node(
        owner: &str,
        lists: &[(&'static str, &[String])],
        data_dir: &Path,
        authority: &RegistryAuthority,
    ) -> Result<Self, TrustError> {
        if let RegistryAuthority::Contract { address } = authority {
            if !owner.trim().is_empty() {
                return Err(TrustError::OwnerOnContract {
                    address: address.clone(),
                });
            }
            return Ok(RegistryTrust::Contract {
                address: address.clone(),
                data_dir: Some(data_dir.to_owned()),
            });
        }
        let owner = match owner.trim() {
            "" => None,
            given => Some(
                given
                    .parse::<AccountId>()
                    .map_err(|error| TrustError::BadOwner {
                        given: given.to_owned(),
                        reason: error.to_string(),
                    })?,
            ),
        };
        let from_registry = lists
            .iter()
            .find(|(_, values)| values.is_empty())
            .map(|(flag, _)| *flag);
        match (owner, from_registry) {
            (Some(owner), _) => Ok(RegistryTrust::Pinned {
                owner,
                data_dir: Some(data_dir.to_owned()),
            }),
            (None, None) => {
                tracing::warn!(
                    "no --registry-owner: the registry's prices and stakes are taken unverified \
                     from the ledger (development only; every list is fixed on the command line)"
                );
                Ok(RegistryTrust::Unverified)
            }
            (None, Some(from_registry)) => Err(TrustError::OwnerNotPinned { from_registry }),
        }
    }
}

/// Why a registry read gave no version to use.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The settlement backend did not answer.
    #[error(transparent)]
    Ledger(#[from] SettlementError),
    /// The ledger answered with a version this node refuses.
    #[error(transparent)]
    Refused(#[from] RegistryRefusal),
}

/// The refusals of one node, for its stats.
#[derive(Debug, Default)]
pub struct Refusals {
    count: AtomicU64,
    /// The latest reason, and when it was last logged as a warning.
    latest: Mutex<Option<(String, Instant)>>,
}

impl Refusals {
    /// How many versions were refused, and the latest reason.
    pub fn snapshot(&self) -> (u64, Option<String>) {
        let latest = self.lock().as_ref().map(|(reason, _)| reason.clone());
        (self.count.load(Ordering::Relaxed), latest)
    }

    fn record(&self, refusal: &RegistryRefusal, ledger: &str) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let reason = refusal.to_string();
        let mut latest = self.lock();
        let repeated = latest
            .as_ref()
            .is_some_and(|(last, at)| *last == reason && at.elapsed() < WARN_EVERY);
        if repeated {
            tracing::debug!(%ledger, %reason, "registry refused again; keeping the last good one");
        } else {
            tracing::warn!(%ledger, %reason, "registry refused; keeping the last good one");
            *latest = Some((reason, Instant::now()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant)>> {
        // Plain data, assigned whole: a panic elsewhere cannot leave it half-written.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`SEEN_FILE`] holds: the owner's last accepted update, as signed.
#[derive(Debug, Serialize, Deserialize)]
struct SeenFile {
    owner: AccountId,
    update: SignedTransaction,
}

/// Reads the registry from one settlement backend and judges every version by the node's trust.
pub(crate) struct RegistryReader {
    ledger: Arc<dyn Settlement>,
    url: String,
    trust: RegistryTrust,
    seen: Option<SeenVersion>,
    /// The last good version from the data directory, used when the ledger's is refused at start.
    stored: Option<Registry>,
    pub(crate) refusals: Arc<Refusals>,
}

impl RegistryReader {
    /// A reader of `backend`, starting from the version kept in the data directory.
    pub(crate) fn new(
        backend: &dyn SettlementBackend,
        trust: RegistryTrust,
    ) -> Result<Self, SettlementError> {
        let mut reader = Self {
            ledger: backend.connect(None)?,
            url: backend.location().to_owned(),
            trust,
            seen: None,
            stored: None,
            refusals: Arc::default(),
        };
        let stored = match &reader.trust {
            RegistryTrust::Pinned {
                owner,
                data_dir: Some(dir),
            } => load_seen(dir, *owner),
            RegistryTrust::Contract {
                address,
                data_dir: Some(dir),
            } => load_seen_contract(dir, address),
            _ => None,
        };
        if let Some((registry, seen)) = stored {
            tracing::info!(
                version = seen.version,
                "last accepted registry version read"
            );
            reader.seen = Some(seen);
            reader.stored = Some(registry);
        }
        Ok(reader)
    }

    /// The ledger's address.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The last good version from the data directory, if any.
    pub(crate) fn stored(&self) -> Option<Registry> {
        self.stored.clone()
    }

    /// The version after `version` (once the ledger has one, or its current one after `wait`),
    /// if this node accepts it.
    pub(crate) async fn read(
        &mut self,
        version: u64,
        wait: Duration,
    ) -> Result<Registry, ReadError> {
        let answer = self
            .ledger
            .registry_answer_newer_than(version, wait)
            .await?;
        let verdict = match &self.trust {
            RegistryTrust::Unverified => return Ok(answer.registry),
            RegistryTrust::Pinned { owner, .. } => answer.verify(*owner, self.seen),
            RegistryTrust::Contract { .. } => verify_contract_registry(&answer.registry, self.seen)
                .map(|seen| (answer.registry.clone(), seen)),
        };
        let (registry, seen) = match verdict {
            Ok(accepted) => accepted,
            Err(refusal) => {
                self.refusals.record(&refusal, &self.url);
                return Err(refusal.into());
            }
        };
        if self.seen != Some(seen) {
            self.seen = Some(seen);
            match &self.trust {
                RegistryTrust::Pinned {
                    owner,
                    data_dir: Some(dir),
                } => {
                    if let Some(update) = &answer.signed_update {
                        store_seen(dir, *owner, update);
                    }
                }
                RegistryTrust::Contract {
                    address,
                    data_dir: Some(dir),
                } => store_seen_contract(dir, address, &registry),
                _ => {}
            }
        }
        Ok(registry)
    }
}

/// The update kept in `dir`, if it is `owner`'s and still verifies.
fn load_seen(dir: &Path, owner: AccountId) -> Option<(Registry, SeenVersion)> {
    let file: SeenFile = read_seen(dir, SEEN_FILE)?;
    // Another owner's network (the node was re-pinned) starts its versions afresh.
    if file.owner != owner {
        return None;
    }
    match verify_update(&file.update, owner, None) {
        Ok(accepted) => Some(accepted),
        Err(refusal) => {
            tracing::warn!(dir = %dir.display(), %refusal, "ignoring the last accepted registry");
            None
        }
    }
}

/// Keeps `update` in `dir`.
fn store_seen(dir: &Path, owner: AccountId, update: &SignedTransaction) {
    let file = SeenFile {
        owner,
        update: update.clone(),
    };
    write_seen(dir, SEEN_FILE, &file);
}

/// What [`SEEN_CONTRACT_FILE`] holds: the last document accepted from the contract at `address`.
#[derive(Debug, Serialize, Deserialize)]
struct SeenContractFile {
    address: String,
    registry: Registry,
}

/// The document kept in `dir`, if it is the contract at `address`'s and still valid.
fn load_seen_contract(dir: &Path, address: &str) -> Option<(Registry, SeenVersion)> {
    let file: SeenContractFile = read_seen(dir, SEEN_CONTRACT_FILE)?;
    // Another network's root (the node was re-pinned) starts its versions afresh.
    if file.address != address {
        return None;
    }
    match verify_contract_registry(&file.registry, None) {
        Ok(seen) => Some((file.registry, seen)),
        Err(refusal) => {
            tracing::warn!(dir = %dir.display(), %refusal, "ignoring the last accepted registry");
            None
        }
    }
}

/// Keeps `registry`, read from the contract at `address`, in `dir`.
fn store_seen_contract(dir: &Path, address: &str, registry: &Registry) {
    let file = SeenContractFile {
        address: address.to_owned(),
        registry: registry.clone(),
    };
    write_seen(dir, SEEN_CONTRACT_FILE, &file);
}

/// `dir/name` decoded, if it is there and readable (a problem is logged).
fn read_seen<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Option<T> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the last accepted registry");
            return None;
        }
    };
    serde_json::from_str(&text)
        .inspect_err(|error| {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable last accepted registry");
        })
        .ok()
}

/// Writes `value` to `dir/name` (aside, then renamed over the old file). A failure is logged: the
/// version stays protected in memory until the node restarts.
fn write_seen(dir: &Path, name: &str, value: &impl Serialize) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = serde_json::to_vec(value)?;
        let temporary = dir.join(format!("{name}.tmp"));
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, dir.join(name))
    };
    if let Err(error) = write() {
        tracing::warn!(dir = %dir.display(), %error, "cannot keep the accepted registry version on disk");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: RegistryAuthority = RegistryAuthority::OwnerSignature;

    #[test]
    fn on_a_pinned_contract_the_contract_is_the_authority_and_an_owner_is_refused() {
        let dir = Path::new("/nonexistent");
        let root = RegistryAuthority::Contract {
            address: "0:ab".into(),
        };
        let follows = [("--proxy", &[][..])];
        assert_eq!(
            RegistryTrust::for_node("", &follows, dir, &root),
            Ok(RegistryTrust::Contract {
                address: "0:ab".into(),
                data_dir: Some(dir.to_owned())
            })
        );
        assert_eq!(
            RegistryTrust::for_node(&AccountId([1; 32]).to_string(), &follows, dir, &root),
            Err(TrustError::OwnerOnContract {
                address: "0:ab".into()
            })
        );
    }

    #[test]
    fn a_contracts_kept_document_is_read_back_only_for_that_contract_and_if_valid() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::new(AccountId([3; 32]));
        registry.version = 7;
        assert!(load_seen_contract(dir.path(), "0:ab").is_none());
        store_seen_contract(dir.path(), "0:ab", &registry);
        let (read, seen) = load_seen_contract(dir.path(), "0:ab").unwrap();
        assert_eq!((read, seen.version), (registry.clone(), 7));
        assert!(load_seen_contract(dir.path(), "0:cd").is_none());
        registry.prices.worker_fee_per_token = registry.prices.price_per_token + 1;
        store_seen_contract(dir.path(), "0:ab", &registry);
        assert!(load_seen_contract(dir.path(), "0:ab").is_none());
    }

    #[test]
    fn a_node_that_follows_the_registry_must_pin_its_owner() {
        let dir = Path::new("/nonexistent");
        let owner = AccountId([1; 32]);
        let listed = ["127.0.0.1:1".to_owned()];
        let follows = [("--proxy", &[][..]), ("--allow-proxy-image", &listed[..])];
        assert_eq!(
            RegistryTrust::for_node("", &follows, dir, &SIGNED),
            Err(TrustError::OwnerNotPinned {
                from_registry: "--proxy"
            })
        );
        let fixed = [
            ("--proxy", &listed[..]),
            ("--allow-proxy-image", &listed[..]),
        ];
        assert_eq!(
            RegistryTrust::for_node("", &fixed, dir, &SIGNED),
            Ok(RegistryTrust::Unverified)
        );
        assert_eq!(
            RegistryTrust::for_node(&owner.to_string(), &follows, dir, &SIGNED),
            Ok(RegistryTrust::Pinned {
                owner,
                data_dir: Some(dir.to_owned())
            })
        );
        assert!(matches!(
            RegistryTrust::for_node("not-hex", &fixed, dir, &SIGNED),
            Err(TrustError::BadOwner { .. })
        ));
    }

    #[test]
    fn the_kept_update_is_read_back_only_for_its_owner_and_if_it_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let owner = AccountId::from(&key);
        let mut registry = Registry::new(owner);
        registry.version = 7;
        let body = cocoon_money::TransactionBody::UpdateRegistry {
            registry: registry.clone(),
        };
        let update = SignedTransaction::sign(&key, 1, body).unwrap();
        assert!(load_seen(dir.path(), owner).is_none());
        store_seen(dir.path(), owner, &update);
        let (read, seen) = load_seen(dir.path(), owner).unwrap();
        assert_eq!((read, seen.version), (registry, 7));
        assert!(load_seen(dir.path(), AccountId([9; 32])).is_none());
        let mut forged = update;
        forged.payload = forged.payload.replace("\"version\":7", "\"version\":8");
        store_seen(dir.path(), owner, &forged);
        assert!(load_seen(dir.path(), owner).is_none());
    }
}
