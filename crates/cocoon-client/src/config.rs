//! The client's configuration: every option is a command-line flag and a config-file key of the
//! same name.

use std::path::PathBuf;
use std::time::Duration;

use cocoon_node::attestation::AttestationArgs;
use cocoon_node::registry_trust::{RegistryTrust, TrustError};
use cocoon_node::serve::HttpLimits;
use cocoon_tee::AttestationKind;
use serde::{Deserialize, Serialize};

/// How the client serves apps and which proxies it forwards to.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Address the OpenAI-compatible API (and `/healthz`, `/stats`, `/jsonstats`, `/metrics`)
    /// listens on.
    #[arg(long, default_value = "127.0.0.1:10000", value_name = "HOST:PORT")]
    pub listen: String,
    /// Client endpoints of the proxies to forward to, most preferred first (repeat or separate with
    /// commas). Empty: every proxy the registry lists, followed live. Links to all are kept up;
    /// each request goes to the first one whose link is up.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub proxy: Vec<String>,
    /// Image hashes of proxies this client accepts (hex; repeat or separate with commas). Empty:
    /// the registry's allowed proxy images (any, if it lists none), followed live.
    #[arg(long, value_name = "HASH", value_delimiter = ',')]
    pub allow_proxy_image: Vec<String>,
    /// The weakest attestation accepted from proxies (`none`, `fake`, `tdx`). Anything below
    /// `tdx` proves nothing (anyone can make a `fake` quote): development only, and the node says
    /// so at start and in `/jsonstats`.
    #[arg(long, default_value = "tdx", value_name = "KIND")]
    pub min_peer_tee: AttestationKind,
    /// API keys apps must present as `Authorization: Bearer <key>` (repeat or separate with
    /// commas; a config file keeps them off the command line). Empty: the local API needs no key.
    #[arg(long, value_delimiter = ',', value_name = "KEY")]
    pub api_key: Vec<String>,
    /// Browser origins allowed to call the API (CORS), e.g. `https://app.example.com` (repeat or
    /// separate with commas; `*` allows any). Empty: no CORS headers, so browsers refuse
    /// cross-origin calls. The API key still applies.
    #[arg(long, value_delimiter = ',', value_name = "ORIGIN")]
    #[serde(default)]
    pub cors_origin: Vec<String>,
    /// Largest request body accepted from apps, in bytes; larger ones are refused with 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// Highest worker price coefficient (1000 = 1.0×) for requests that do not set
    /// `max_coefficient` themselves.
    #[arg(long, default_value_t = 4000, value_name = "COEFFICIENT")]
    pub max_coefficient: u32,
    /// Deadline of a whole request, in seconds, for requests that do not set `timeout`
    /// themselves.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout_secs: u64,
    /// Base URL of the ledger holding this client's contract with its proxy.
    #[arg(long, default_value = "http://127.0.0.1:13000", value_name = "URL")]
    pub ledger: String,
    /// The registry owner's account (64 hex digits; `cocoon registry keygen` prints it). Every
    /// registry version must carry its signature and never be older than the last one accepted.
    /// Required unless every list this node would take from the registry is given as a flag.
    #[arg(long, value_name = "ACCOUNT", default_value = "")]
    #[serde(default)]
    pub registry_owner: String,
    /// Directory of the client's sealed wallet key.
    #[arg(long, default_value = "cocoon-data/client", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Amount (nano-units) deposited when the contract with a proxy is opened, and added by each
    /// automatic top-up (when the available balance falls below half the stake).
    #[arg(long, default_value_t = 10_000_000_000, value_name = "AMOUNT")]
    pub deposit: u64,
    /// Stake locked in the contract (nano-units; raised to the registry's `min_client_stake`).
    /// Charges are applied on the ledger when more than half of it is charged but unapplied.
    #[arg(long, default_value_t = 0, value_name = "AMOUNT")]
    pub stake: u64,
    /// Development only: when the wallet cannot pay a deposit, mint at least this much from the
    /// ledger's faucet (0: never).
    #[arg(long, default_value_t = 0, value_name = "AMOUNT")]
    pub faucet: u64,
    /// Milliseconds between checks of the contract (open, top up, apply charges).
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    pub settle_interval_ms: u64,
    /// Leave the `x-cocoon-receipt` header off non-streamed answers. A receipt carries two attested
    /// certificates: ~5 KB with `fake` quotes, ~20 KB with `tdx` ones, more than some HTTP stacks
    /// and reverse proxies accept in a header. Streamed answers still end with the receipt event.
    #[arg(long)]
    #[serde(default)]
    pub no_receipt_header: bool,
    /// TESTS ONLY — never pays: answers are neither checked nor signed for, so proxies refuse
    /// this client once its unpaid charges pass their bound. Exists to test that bound.
    #[arg(long, hide = true)]
    #[serde(default)]
    pub test_only_withhold_payments: bool,
    /// TESTS ONLY — names ACCOUNT as this client's wallet in its certificate although it does
    /// not hold its key (an impostor): proxies must refuse it. Exists to test that they do.
    #[arg(long, hide = true, value_name = "ACCOUNT")]
    #[serde(default)]
    pub test_only_claim_wallet: Option<String>,
    /// Connection cap and timeouts of this node's HTTP surface (the API and its stats).
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimits,
    /// How this node attests itself and which proxies it accepts.
    #[command(flatten)]
    #[serde(flatten)]
    pub attestation: AttestationArgs,
}

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A proxy address is not `host:port`.
    #[error("proxy address `{0}` is not HOST:PORT")]
    BadProxy(String),
    /// A zero body limit would refuse every request.
    #[error("max_body_bytes must be above 0")]
    ZeroBodyLimit,
    /// A zero timeout would fail every request.
    #[error("timeout_secs must be above 0")]
    ZeroTimeout,
}

impl ClientConfig {
    /// How this node authenticates the registry (see [`RegistryTrust::for_node`]).
    pub fn registry_trust(
        &self,
        authority: &cocoon_money::RegistryAuthority,
    ) -> Result<RegistryTrust, TrustError> {
        RegistryTrust::for_node(
            &self.registry_owner,
            &[
                ("--proxy", &self.proxy[..]),
                ("--allow-proxy-image", &self.allow_proxy_image[..]),
            ],
            &self.data_dir,
            authority,
        )
    }

    /// Checks values that parse but cannot work, so `start` fails clearly instead of every request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for proxy in &self.proxy {
            if !cocoon_money::registry::is_endpoint(proxy) {
                return Err(ConfigError::BadProxy(proxy.clone()));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(())
    }

    /// The default per-request deadline.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

impl Default for ClientConfig {
    /// The configuration with every flag at its default (as `cocoon client` with no flags).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ClientConfig,
        }
        // The defaults live in the clap attributes only, so that `--help`, config files and
        // this impl cannot disagree.
        <Defaults as clap::Parser>::parse_from(["cocoon-client"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ClientConfig,
    }

    #[test]
    fn defaults_match_the_documented_ports_and_limits() {
        let config = ClientConfig::default();
        assert_eq!(config.listen, "127.0.0.1:10000");
        assert!(config.proxy.is_empty(), "proxies come from the registry");
        assert!(config.api_key.is_empty());
        assert!(config.allow_proxy_image.is_empty());
        assert_eq!(config.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(config.max_coefficient, 4000);
        assert_eq!(config.timeout_secs, 300);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn flags_override_and_split_on_commas() {
        let cli = Cli::parse_from([
            "c",
            "--proxy",
            "a:1,b:2",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
            "--max-body-bytes",
            "10",
        ]);
        assert_eq!(cli.config.proxy, vec!["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!(cli.config.api_key, vec!["k1".to_owned(), "k2".to_owned()]);
        assert_eq!(cli.config.max_body_bytes, 10);
    }

    #[test]
    fn config_file_keys_are_the_field_names() {
        let config = ClientConfig::default();
        let value = serde_json::to_value(&config).unwrap();
        for key in [
            "listen",
            "proxy",
            "api_key",
            "max_body_bytes",
            "max_coefficient",
            "timeout_secs",
            "tee",
        ] {
            assert!(value.get(key).is_some(), "missing {key} in {value}");
        }
        let back: ClientConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back.proxy, config.proxy);
    }

    #[test]
    fn unusable_values_are_refused() {
        let mut config = ClientConfig {
            proxy: vec!["no-port".into()],
            ..ClientConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::BadProxy("no-port".into()))
        );
        config.proxy = vec!["[::1]:11002".into()];
        assert_eq!(config.validate(), Ok(()));
        config.max_body_bytes = 0;
        assert_eq!(config.validate(), Err(ConfigError::ZeroBodyLimit));
        config.max_body_bytes = 1;
        config.timeout_secs = 0;
        assert_eq!(config.validate(), Err(ConfigError::ZeroTimeout));
    }
}
