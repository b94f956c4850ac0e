//! Which workers may join: besides the RA-TLS policy (image and attestation kind), the model
//! weights a worker serves must be allowed for the model name it serves.

use std::collections::{BTreeMap, BTreeSet};

/// Model name → allowed SHA-256 hashes of its weights. Empty: any model, any weights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedModels(BTreeMap<String, BTreeSet<String>>);

/// Why a worker's model was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelRefused {
    /// A configured entry is not `NAME=HASH` with a 64-hex-digit hash.
    #[error("`{0}` is not NAME=SHA256 (64 hex digits)")]
    BadEntry(String),
    /// The model name is not in the list.
    #[error("model `{0}` is not allowed")]
    UnknownModel(String),
    /// The worker's attestation names no model hash, or one not allowed for the name.
    #[error("model `{model}` with weights {hash} is not allowed (allowed: {allowed})")]
    WrongWeights {
        /// The model name.
        model: String,
        /// The attested hash, or "unknown".
        hash: String,
        /// The allowed hashes.
        allowed: String,
    },
}

impl AllowedModels {
    /// Parses `NAME=HASH` entries (a name may appear several times, for several weight files).
    pub fn parse(entries: &[String]) -> Result<Self, ModelRefused> {
        let mut allowed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in entries {
            let (name, hash) = entry
                .split_once('=')
                .ok_or_else(|| ModelRefused::BadEntry(entry.clone()))?;
            let hash = hash.trim().to_ascii_lowercase();
            if name.trim().is_empty()
                || hash.len() != 64
                || !hash.chars().all(|c| c.is_ascii_hexdigit())
            {
                return Err(ModelRefused::BadEntry(entry.clone()));
            }
            allowed
                .entry(name.trim().to_owned())
                .or_default()
                .insert(hash);
        }
        Ok(AllowedModels(allowed))
    }

    /// The registry's list: one hash per model name.
    pub fn from_registry(models: &BTreeMap<String, cocoon_money::Hash32>) -> Self {
        AllowedModels(
            models
                .iter()
                .map(|(name, hash)| (name.clone(), BTreeSet::from([hash.to_string()])))
                .collect(),
        )
    }

    /// Whether a worker serving `model` with attested weights `hash` may join.
    pub fn check(&self, model: &str, hash: Option<&str>) -> Result<(), ModelRefused> {
        if self.0.is_empty() {
            return Ok(());
        }
        let allowed = self
            .0
            .get(model)
            .ok_or_else(|| ModelRefused::UnknownModel(model.to_owned()))?;
        match hash.map(str::to_ascii_lowercase) {
            Some(hash) if allowed.contains(&hash) => Ok(()),
            hash => Err(ModelRefused::WrongWeights {
                model: model.to_owned(),
                hash: hash.unwrap_or_else(|| "unknown".into()),
                allowed: allowed.iter().cloned().collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    #[test]
    fn an_empty_list_allows_everything() {
        assert_eq!(AllowedModels::default().check("any", None), Ok(()));
    }

    #[test]
    fn only_listed_weights_of_listed_models_join() {
        let allowed = AllowedModels::parse(&[format!("smol={}", GOOD.to_uppercase())]).unwrap();
        assert_eq!(allowed.check("smol", Some(GOOD)), Ok(()));
        assert!(matches!(
            allowed.check("smol", Some(&"0".repeat(64))),
            Err(ModelRefused::WrongWeights { .. })
        ));
        assert!(
            matches!(allowed.check("smol", None), Err(ModelRefused::WrongWeights { hash, .. }) if hash == "unknown")
        );
        assert_eq!(
            allowed.check("other", Some(GOOD)),
            Err(ModelRefused::UnknownModel("other".into()))
        );
    }

    #[test]
    fn the_registry_list_names_one_hash_per_model() {
        let hash: cocoon_money::Hash32 = GOOD.parse().unwrap();
        let allowed = AllowedModels::from_registry(&BTreeMap::from([("smol".to_owned(), hash)]));
        assert_eq!(allowed.check("smol", Some(GOOD)), Ok(()));
        assert!(allowed.check("smol", Some(&"1".repeat(64))).is_err());
    }

    #[test]
    fn malformed_entries_are_reported() {
        for entry in ["smol", "=abc", "smol=abc", &format!("smol={}x", &GOOD[1..])] {
            assert!(
                matches!(
                    AllowedModels::parse(&[entry.to_owned()]),
                    Err(ModelRefused::BadEntry(_))
                ),
                "{entry}"
            );
        }
    }
}
