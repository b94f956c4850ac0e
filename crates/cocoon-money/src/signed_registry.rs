//! The registry as its owner signed it, so that a node can check what a ledger serves without
//! trusting the ledger: every version comes with the owner's `UpdateRegistry` transaction that set
//! it, and a node accepts the document inside that transaction only when the transaction is signed
//! by the owner key the node pinned and its version is not older than the last one it accepted.
//!
//! On a backend where the registry is the state of a contract the node pinned (TON's root, named
//! by `--ton-root`: only its owner can change it, and its address commits to its code and first
//! owner) there is no signature to check: [`verify_contract_registry`] applies the rest of the
//! rules (a valid document, never older than the last one accepted, the same version only as the
//! same document).

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{AccountId, Hash32};
use crate::registry::{Registry, RegistryError};
use crate::transaction::{SignedTransaction, TransactionBody, TransactionError};

/// What `GET /v1/registry` answers: the document (for readers that trust their ledger, such as
/// `cocoon registry show`), and the owner-signed update that set it. A new ledger's genesis
/// document was signed by no one, so it has no `signed_update` until the owner's first change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAnswer {
    /// The current document, as the ledger states it (unauthenticated).
    #[serde(flatten)]
    pub registry: Registry,
    /// The owner's transaction that set this version; what nodes verify and use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_update: Option<SignedTransaction>,
}

/// The version a node last accepted, and the digest of the signed payload that carried it, so
/// that the same version is accepted again only as the same document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenVersion {
    /// The registry version.
    pub version: u64,
    /// SHA-256 of the signed transaction's payload (of the document's JSON, for a registry read
    /// from a contract).
    pub digest: Hash32,
}

/// Who vouches for the registry a settlement backend serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuthority {
    /// Each answer carries its owner's signed update ([`RegistryAnswer::verify`]): a node pins the
    /// owner's key (the local ledger).
    OwnerSignature,
    /// The registry is the state of the contract at `address`, which the node pinned (TON's
    /// root): the backend reads it as the chain holds it, and only the owner it was deployed with
    /// can change it ([`verify_contract_registry`]).
    Contract {
        /// The contract's address, as the operator gave it.
        address: String,
    },
}

/// Why a node refuses a registry a ledger served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryRefusal {
    /// The ledger sent no owner signature (a genesis document, or a ledger that strips it).
    #[error("the ledger sent registry version {version} without its owner's signed update")]
    Unsigned {
        /// The version the ledger claims.
        version: u64,
    },
    /// The signature does not verify, or the payload is not a transaction.
    #[error("the registry update's signature does not verify: {0}")]
    BadSignature(String),
    /// Signed, but not by the owner this node pinned.
    #[error("the registry is signed by {signer}, not by the pinned owner {pinned}")]
    WrongOwner {
        /// Who signed it.
        signer: AccountId,
        /// The owner the node pinned (`--registry-owner`).
        pinned: AccountId,
    },
    /// The signed transaction is not a registry update.
    #[error("the owner's signed transaction is not a registry update")]
    NotAnUpdate,
    /// Older than the version this node already accepted (a rollback).
    #[error("registry version {got} is older than version {seen}, the last one accepted")]
    Older {
        /// The version served.
        got: u64,
        /// The last version accepted.
        seen: u64,
    },
    /// The version already accepted, but another document (an update the ledger refused).
    #[error("this registry version {version} is another document than the version {version} accepted before")]
    Forked {
        /// The version.
        version: u64,
    },
    /// The document breaks the registry's own rules.
    #[error("the signed registry is invalid: {0}")]
    Invalid(#[from] RegistryError),
}

impl RegistryAnswer {
    /// `registry` with its update signed by `signer` (with `nonce`), as a ledger serves it.
    pub fn signed(
        registry: Registry,
        signer: &SigningKey,
        nonce: u64,
    ) -> Result<Self, TransactionError> {
        let body = TransactionBody::UpdateRegistry {
            registry: registry.clone(),
        };
        Ok(Self {
            registry,
            signed_update: Some(SignedTransaction::sign(signer, nonce, body)?),
        })
    }

    /// The document inside the owner's signed update, if it is signed by `owner` and not older
    /// than `seen` (the same version only as the same document); with what to remember as seen.
    pub fn verify(
        &self,
        owner: AccountId,
        seen: Option<SeenVersion>,
    ) -> Result<(Registry, SeenVersion), RegistryRefusal> {
        let signed = self
            .signed_update
            .as_ref()
            .ok_or(RegistryRefusal::Unsigned {
                version: self.registry.version,
            })?;
        verify_update(signed, owner, seen)
    }
}

/// The checks of a registry read from a pinned contract ([`RegistryAuthority::Contract`]): the
/// document is valid and not older than `seen` (the same version only as the same document).
pub fn verify_contract_registry(
    registry: &Registry,
    seen: Option<SeenVersion>,
) -> Result<SeenVersion, RegistryRefusal> {
    registry.validate()?;
    // A registry always encodes (its maps have string keys); the digest only compares documents.
    let json = serde_json::to_vec(registry).unwrap_or_default();
    let now = SeenVersion {
        version: registry.version,
        digest: Hash32(Sha256::digest(&json).into()),
    };
    not_older(now, seen)?;
    Ok(now)
}

/// Refuses `now` if it is older than `seen`, or the same version as another document.
fn not_older(now: SeenVersion, seen: Option<SeenVersion>) -> Result<(), RegistryRefusal> {
    let Some(seen) = seen else {
        return Ok(());
    };
    if now.version < seen.version {
        return Err(RegistryRefusal::Older {
            got: now.version,
            seen: seen.version,
        });
    }
    if now.version == seen.version && now.digest != seen.digest {
        return Err(RegistryRefusal::Forked {
            version: now.version,
        });
    }
    Ok(())
}

/// The checks of [`RegistryAnswer::verify`] on the owner's transaction alone.
pub fn verify_update(
    signed: &SignedTransaction,
    owner: AccountId,
    seen: Option<SeenVersion>,
) -> Result<(Registry, SeenVersion), RegistryRefusal> {
    if signed.signer != owner {
        return Err(RegistryRefusal::WrongOwner {
            signer: signed.signer,
            pinned: owner,
        });
    }
    let transaction = signed
        .verify()
        .map_err(|error| RegistryRefusal::BadSignature(error.to_string()))?;
    let TransactionBody::UpdateRegistry { registry } = transaction.body else {
        return Err(RegistryRefusal::NotAnUpdate);
    };
    registry.validate()?;
    let now = SeenVersion {
        version: registry.version,
        digest: Hash32(Sha256::digest(signed.payload.as_bytes()).into()),
    };
    not_older(now, seen)?;
    Ok((registry, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_its_signed_update_decodes_though_documents_refuse_unknown_fields() {
        let owner = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut registry = Registry::new(AccountId::from(&owner));
        registry.version = 2;
        let update = SignedTransaction::sign(
            &owner,
            1,
            crate::TransactionBody::UpdateRegistry {
                registry: registry.clone(),
            },
        )
        .unwrap();
        let answer = RegistryAnswer {
            registry,
            signed_update: Some(update),
        };
        let json = serde_json::to_string(&answer).unwrap();
        assert_eq!(
            serde_json::from_str::<RegistryAnswer>(&json).unwrap(),
            answer
        );
        // A bare document is not an answer with a stray field: it is refused as such.
        assert!(serde_json::from_str::<Registry>(&json).is_err());
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// Version `version` of a registry owned by `owner`, signed by `signer`.
    fn answer(owner: &SigningKey, signer: &SigningKey, version: u64) -> RegistryAnswer {
        let mut registry = Registry::new(AccountId::from(owner));
        registry.version = version;
        RegistryAnswer::signed(registry, signer, version).unwrap()
    }

    #[test]
    fn the_pinned_owners_update_is_accepted_and_remembered() {
        let owner = key(1);
        let (registry, seen) = answer(&owner, &owner, 4)
            .verify(AccountId::from(&owner), None)
            .unwrap();
        assert_eq!((registry.version, seen.version), (4, 4));
        // The same document again (a node restarting on an unchanged ledger) passes.
        let again = answer(&owner, &owner, 4).verify(AccountId::from(&owner), Some(seen));
        assert_eq!(again.unwrap().1, seen);
    }

    #[test]
    fn another_signer_a_forged_signature_or_no_signature_is_refused() {
        let (owner, stranger) = (key(1), key(2));
        let pinned = AccountId::from(&owner);
        // A registry its own owner signed, but that owner is not the one pinned.
        assert!(matches!(
            answer(&stranger, &stranger, 9).verify(pinned, None),
            Err(RegistryRefusal::WrongOwner { signer, .. }) if signer == AccountId::from(&stranger)
        ));
        // The stranger's signature under the owner's name.
        let mut forged = answer(&owner, &stranger, 9);
        forged.signed_update.as_mut().unwrap().signer = pinned;
        assert!(matches!(
            forged.verify(pinned, None),
            Err(RegistryRefusal::BadSignature(_))
        ));
        // The owner's signed payload with its document swapped.
        let mut swapped = answer(&owner, &owner, 9);
        let other = answer(&stranger, &owner, 9).signed_update.unwrap();
        swapped.signed_update.as_mut().unwrap().payload = other.payload;
        assert!(matches!(
            swapped.verify(pinned, None),
            Err(RegistryRefusal::BadSignature(_))
        ));
        let mut unsigned = answer(&owner, &owner, 9);
        unsigned.signed_update = None;
        assert_eq!(
            unsigned.verify(pinned, None),
            Err(RegistryRefusal::Unsigned { version: 9 })
        );
        let transfer = SignedTransaction::sign(&owner, 1, TransactionBody::StartProxyClose);
        assert_eq!(
            verify_update(&transfer.unwrap(), pinned, None),
            Err(RegistryRefusal::NotAnUpdate)
        );
    }

    #[test]
    fn an_older_version_or_another_document_of_the_same_version_is_refused() {
        let owner = key(1);
        let pinned = AccountId::from(&owner);
        let (_, seen) = answer(&owner, &owner, 5).verify(pinned, None).unwrap();
        assert_eq!(
            answer(&owner, &owner, 4).verify(pinned, Some(seen)),
            Err(RegistryRefusal::Older { got: 4, seen: 5 })
        );
        let mut other = Registry::new(pinned);
        other.version = 5;
        other.min_client_stake = 1;
        let fork = SignedTransaction::sign(
            &owner,
            77,
            TransactionBody::UpdateRegistry { registry: other },
        )
        .unwrap();
        assert_eq!(
            verify_update(&fork, pinned, Some(seen)),
            Err(RegistryRefusal::Forked { version: 5 })
        );
        assert!(answer(&owner, &owner, 6).verify(pinned, Some(seen)).is_ok());
    }

    #[test]
    fn a_contract_registry_is_taken_only_valid_and_never_older_or_forked() {
        let mut registry = Registry::new(AccountId([9; 32]));
        registry.version = 3;
        let seen = verify_contract_registry(&registry, None).unwrap();
        assert_eq!(seen.version, 3);
        // The same document again, then a newer one.
        assert_eq!(verify_contract_registry(&registry, Some(seen)), Ok(seen));
        let mut newer = registry.clone();
        newer.version = 4;
        newer.prices.price_per_token += 1;
        let newer_seen = verify_contract_registry(&newer, Some(seen)).unwrap();
        // Rolled back, or the same version with other contents.
        assert_eq!(
            verify_contract_registry(&registry, Some(newer_seen)),
            Err(RegistryRefusal::Older { got: 3, seen: 4 })
        );
        let mut forked = newer.clone();
        forked.prices.price_per_token += 1;
        assert_eq!(
            verify_contract_registry(&forked, Some(newer_seen)),
            Err(RegistryRefusal::Forked { version: 4 })
        );
        // A document that breaks the registry's rules (a contract that validates nothing).
        let mut invalid = newer.clone();
        invalid.version = 5;
        invalid.prices.worker_fee_per_token = invalid.prices.price_per_token + 1;
        assert!(matches!(
            verify_contract_registry(&invalid, Some(newer_seen)),
            Err(RegistryRefusal::Invalid(_))
        ));
    }
}
