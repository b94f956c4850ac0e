//! Configuration of the `cocoon ledger` service; every field is also a command-line flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use cocoon_serve::HttpLimits;
use serde::{Deserialize, Serialize};

use cocoon_money::ids::AccountId;
use cocoon_money::registry::{Amount, Registry};
use cocoon_money::rules::LedgerState;

/// Default address of the ledger's HTTP/JSON API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:13000";
/// Default database file.
pub const DEFAULT_DATABASE: &str = "cocoon-ledger.sqlite3";

/// Settings of a `cocoon ledger` node.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
// No `deny_unknown_fields`: serde cannot combine it with the flattened limits; `cocoon ledger`'s
// configuration loader refuses unknown keys itself.
#[serde(default)]
pub struct LedgerConfig {
    /// Address the HTTP/JSON API listens on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// SQLite database file; created with the genesis state on first start.
    #[arg(long, default_value = DEFAULT_DATABASE)]
    pub database: PathBuf,
    /// Enable the development faucet (anyone may mint). Never on a network with real money.
    #[arg(long)]
    pub faucet: bool,
    /// Registry owner (hex Ed25519 public key) of a new ledger, when no --registry file is given.
    #[arg(long, value_name = "ACCOUNT")]
    pub owner: Option<AccountId>,
    /// JSON file with the initial registry document of a new ledger.
    #[arg(long, value_name = "FILE")]
    pub registry: Option<PathBuf>,
    /// Initial balance of a new ledger, as ACCOUNT=AMOUNT (nano-units); repeatable.
    #[arg(long = "genesis", value_name = "ACCOUNT=AMOUNT")]
    pub genesis: Vec<GenesisAllocation>,
    /// Connection cap and timeouts of the HTTP/JSON API.
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimits,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            // The constant is a valid socket address; parsing it cannot fail.
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 13000))),
            database: PathBuf::from(DEFAULT_DATABASE),
            faucet: false,
            owner: None,
            registry: None,
            genesis: Vec::new(),
            http: HttpLimits::default(),
        }
    }
}

/// An initial balance: `ACCOUNT=AMOUNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAllocation {
    /// The account credited.
    pub account: AccountId,
    /// Its initial balance.
    pub amount: Amount,
}

/// Why a configuration cannot produce a ledger.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A genesis allocation is not `ACCOUNT=AMOUNT`.
    #[error("genesis allocation {0:?} is not ACCOUNT=AMOUNT")]
    BadAllocation(String),
    /// A new ledger needs someone to own the registry.
    #[error("a new ledger needs --owner or --registry")]
    NoOwner,
    /// The registry file could not be read.
    #[error("reading registry file {path}: {source}")]
    ReadRegistry {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The registry file is not a registry document.
    #[error("parsing registry file {path}: {source}")]
    ParseRegistry {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The genesis state breaks a rule (invalid registry, supply overflow).
    #[error("invalid genesis: {0}")]
    Genesis(#[from] cocoon_money::rules::RuleError),
}

impl FromStr for GenesisAllocation {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadAllocation(s.to_owned());
        let (account, amount) = s.split_once('=').ok_or_else(bad)?;
        Ok(Self {
            account: account.parse().map_err(|_| bad())?,
            amount: amount.trim().parse().map_err(|_| bad())?,
        })
    }
}

impl LedgerConfig {
    /// The registry a new ledger starts with: the --registry file, else defaults owned by --owner.
    pub fn initial_registry(&self) -> Result<Registry, ConfigError> {
        match (&self.registry, self.owner) {
            (Some(path), _) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadRegistry {
                        path: path.clone(),
                        source,
                    })?;
                serde_json::from_str(&text).map_err(|source| ConfigError::ParseRegistry {
                    path: path.clone(),
                    source,
                })
            }
            (None, Some(owner)) => Ok(Registry::new(owner)),
            (None, None) => Err(ConfigError::NoOwner),
        }
    }

    /// The state a new ledger starts with.
    pub fn genesis_state(&self) -> Result<LedgerState, ConfigError> {
        let allocations: Vec<_> = self.genesis.iter().map(|g| (g.account, g.amount)).collect();
        Ok(LedgerState::genesis(
            self.initial_registry()?,
            &allocations,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ledger: LedgerConfig,
    }

    #[test]
    fn flags_parse_into_the_config_and_defaults_agree() {
        let owner = AccountId([1; 32]);
        let cli = Cli::try_parse_from([
            "ledger".to_string(),
            "--faucet".into(),
            "--owner".into(),
            owner.to_string(),
            "--genesis".into(),
            format!("{owner}=500"),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ])
        .unwrap();
        assert!(cli.ledger.faucet);
        assert_eq!(
            cli.ledger.genesis,
            vec![GenesisAllocation {
                account: owner,
                amount: 500
            }]
        );
        let defaults = Cli::try_parse_from(["ledger"]).unwrap().ledger;
        assert_eq!(defaults, LedgerConfig::default());
    }

    #[test]
    fn genesis_needs_an_owner_and_sums_the_allocations() {
        let mut config = LedgerConfig::default();
        assert!(matches!(config.genesis_state(), Err(ConfigError::NoOwner)));
        config.owner = Some(AccountId([1; 32]));
        config.genesis = vec![
            "01".repeat(32)
                .parse::<AccountId>()
                .map(|account| GenesisAllocation { account, amount: 7 })
                .unwrap();
            2
        ];
        assert_eq!(config.genesis_state().unwrap().supply(), 14);
        assert!("nothex=5".parse::<GenesisAllocation>().is_err());
        assert!(format!("{}=x", "01".repeat(32))
            .parse::<GenesisAllocation>()
            .is_err());
    }

    #[test]
    fn registry_file_is_read_and_config_serde_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let mut registry = Registry::new(AccountId([2; 32]));
        registry.version = 9;
        std::fs::write(&path, serde_json::to_string(&registry).unwrap()).unwrap();
        let config = LedgerConfig {
            registry: Some(path),
            ..LedgerConfig::default()
        };
        assert_eq!(config.initial_registry().unwrap(), registry);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<LedgerConfig>(&json).unwrap(), config);
    }
}
