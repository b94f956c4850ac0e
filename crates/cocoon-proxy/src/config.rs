//! The proxy's configuration: one TOML file, every key also a flag.

use std::path::PathBuf;

use cocoon_node::attestation::AttestationArgs;
use cocoon_node::registry_trust::{RegistryTrust, TrustError};
use cocoon_node::serve::HttpLimits;
use cocoon_tee::AttestationKind;
use serde::{Deserialize, Serialize};

/// Everything a proxy needs to route clients' requests to workers.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// Address workers dial (RA-TLS + HTTP/2, the proxy drives their links as HTTP/2 client).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:11001")]
    pub worker_listen: String,
    /// Address clients dial (RA-TLS + HTTP/2).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:11002")]
    pub client_listen: String,
    /// Address of `/healthz`, `/stats`, `/jsonstats` and `/metrics`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:11000")]
    pub stats_listen: String,
    /// Image hashes of workers this proxy accepts (hex; repeat or separate with commas). Empty:
    /// the registry's allowed worker images (any attested at least as strongly as
    /// `--min-worker-tee`, if it lists none), followed live.
    #[arg(long, value_name = "HASH", value_delimiter = ',')]
    pub allow_worker_image: Vec<String>,
    /// The weakest attestation accepted on the worker port (`none`, `fake`, `tdx`). Workers
    /// receive prompts in clear inside their TEE, so anything below `tdx` proves nothing:
    /// development only, and the proxy says so at start and in `/jsonstats`.
    #[arg(long, default_value = "tdx", value_name = "KIND")]
    pub min_worker_tee: AttestationKind,
    /// Admit workers whose attested engine is not inside their TEE (an engine URL that is not a
    /// loopback address): their prompts cross the host's network in clear. Off by default.
    #[arg(long)]
    #[serde(default)]
    pub accept_remote_engines: bool,
    /// Image hashes of clients this proxy accepts (hex; repeat or separate with commas). Empty: any
    /// image attested at least as strongly as `--min-client-tee`.
    #[arg(long, value_name = "HASH", value_delimiter = ',')]
    pub allow_client_image: Vec<String>,
    /// The weakest attestation accepted on the client port (`none`, `fake`, `tdx`), independent of
    /// the worker port's: accepting weaker clients never lets weaker workers in. Below `tdx` the
    /// proxy says so at start and in `/jsonstats`.
    #[arg(long, default_value = "tdx", value_name = "KIND")]
    pub min_client_tee: AttestationKind,
    /// Model weights this proxy routes to, as `NAME=SHA256` (repeat or separate with commas; a
    /// name may be listed with several hashes). A worker must serve a listed name with an allowed
    /// hash in its attested claims. Empty: any model.
    #[arg(long, value_name = "NAME=SHA256", value_delimiter = ',')]
    pub allow_model: Vec<String>,
    /// Largest request body accepted from a client, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Longest a request may take, in seconds; a client's own `timeout` is capped at this.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub max_request_secs: u64,
    /// On Ctrl-C or SIGTERM, seconds the requests in flight may take to finish: new links are
    /// refused, clients are told at once (HTTP/2 GOAWAY) to send no more, and the proxy keeps its
    /// workers and records every charge until the last answer ends or this runs out. 0: stop at
    /// once. A second Ctrl-C stops at once too.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_secs: u64,
    /// Base URL of the ledger that holds the proxy, client and worker contracts.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:13000")]
    pub ledger: String,
    /// The registry owner's account (64 hex digits; `cocoon registry keygen` prints it). Every
    /// registry version must carry its signature and never be older than the last one accepted.
    /// Required unless every list this node would take from the registry is given as a flag.
    #[arg(long, value_name = "ACCOUNT", default_value = "")]
    #[serde(default)]
    pub registry_owner: String,
    /// Directory of the proxy's money database (`proxy-billing.sqlite3`). It holds no key.
    #[arg(long, value_name = "DIR", default_value = "cocoon-data/proxy")]
    pub data_dir: PathBuf,
    /// The operator's account, which owns the proxy contract (stake, commission, close): 64 hex
    /// digits. Its key stays off this host: the proxy makes a voucher key at each start, never
    /// stores it, and waits until the operator authorizes it (`cocoon wallet
    /// authorize-proxy-key`, printed at start). Required unless `--operator-key-file` is given.
    #[arg(long, value_name = "ACCOUNT", default_value = "")]
    #[serde(default)]
    pub operator_account: String,
    /// DEVELOPMENT AND TESTS ONLY: a file holding the operator's secret key (64 hex digits;
    /// created if missing). The proxy then opens its contract, authorizes its own voucher keys
    /// and withdraws the commission itself — so whoever reads this host's disk holds the
    /// operator's money. Production proxies take `--operator-account`.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub operator_key_file: Option<PathBuf>,
    /// With `--operator-key-file`: stake the proxy contract is opened with when it is not open
    /// yet, in nano-units (0: the registry's `min_proxy_stake`), from the operator's account.
    #[arg(long, value_name = "AMOUNT", default_value_t = 0)]
    pub stake: u64,
    /// Development only, with `--operator-key-file`: at start, mint what the operator's account
    /// lacks of the stake plus this much (for the fees to come, on TON) from the ledger's faucet
    /// (0: never).
    #[arg(long, value_name = "AMOUNT", default_value_t = 0)]
    pub faucet: u64,
    /// Milliseconds between settlement rounds: apply client charges, send workers their
    /// earnings, withdraw the commission.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub settle_interval_ms: u64,
    /// With `--operator-key-file`: withdraw the commission to the operator's account once at
    /// least this much (nano-units) is withdrawable (0: never). Without it the operator withdraws
    /// (`cocoon wallet withdraw --commission`).
    #[arg(long, value_name = "AMOUNT", default_value_t = 10_000_000_000)]
    pub withdraw_threshold: u64,
    /// Completion tokens reserved against the client's balance for a request without
    /// `max_tokens` (the charge is always the actual usage).
    #[arg(long, value_name = "TOKENS", default_value_t = 4096)]
    pub reserve_max_tokens: u64,
    /// Requests per model that may wait for a worker slot when every worker is busy; beyond, a
    /// request is refused at once (503 with `Retry-After`). 0: no queue.
    #[arg(long, value_name = "N", default_value_t = 256)]
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// Requests one client may have waiting per model (429 with `Retry-After` beyond), so that one
    /// client's burst leaves room for the others; the queue serves clients in turn.
    #[arg(long, value_name = "N", default_value_t = 64)]
    #[serde(default = "default_queue_per_client")]
    pub queue_per_client: usize,
    /// Longest a request waits in the queue, in milliseconds (never beyond the request's own
    /// timeout); then 503 with `Retry-After`.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    #[serde(default = "default_queue_wait_ms")]
    pub queue_wait_ms: u64,
    /// The most a client may owe unpaid (charged, but not covered by a payment voucher it signed)
    /// before its requests are refused (429 `insufficient_quota`), in nano-units (0: the client contract's stake).
    #[arg(long, value_name = "AMOUNT", default_value_t = 0)]
    #[serde(default)]
    pub max_unpaid: u64,
    /// TESTS ONLY — makes this proxy dishonest: it records and reports twice each answer's
    /// price (the receipt still proves the real one). Exists to test that clients stop paying it.
    #[arg(long, hide = true)]
    #[serde(default)]
    pub test_only_overcharge: bool,
    /// TESTS ONLY — makes this proxy dishonest to workers: it states (and vouches them at) this
    /// worker fee per token instead of the registry's. Exists to test that workers count the
    /// registry's pay and stop serving it.
    #[arg(long, hide = true, value_name = "AMOUNT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_only_worker_fee: Option<u64>,
    /// Seconds a worker or client has to finish the RA-TLS handshake on the proxy's ports.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub handshake_timeout_secs: u64,
    /// Handshakes under way at once on each of the proxy's RA-TLS ports; beyond, a new connection
    /// takes the place of the oldest unfinished handshake (if it has had a second), so a flood of
    /// half-open connections cannot keep real peers out; otherwise the new one is refused.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_handshakes: usize,
    /// TESTS ONLY (hidden): send workers vouchers they must refuse — `forged` (signed by a key
    /// this proxy did not attest) or `foreign-proxy` (naming another proxy contract) — to show
    /// that workers check what they are paid with. Never set it on a real proxy.
    #[arg(long, hide = true, value_name = "HOW")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_only_bad_worker_vouchers: Option<crate::billing::BadWorkerVouchers>,
    /// Connection cap and timeouts of this node's HTTP surface (stats).
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimits,
    /// How this proxy attests itself.
    #[command(flatten)]
    #[serde(flatten)]
    pub attestation: AttestationArgs,
}

impl ProxyConfig {
    /// How this node authenticates the registry (see [`RegistryTrust::for_node`]).
    pub fn registry_trust(
        &self,
        authority: &cocoon_money::RegistryAuthority,
    ) -> Result<RegistryTrust, TrustError> {
        RegistryTrust::for_node(
            &self.registry_owner,
            &[
                ("--allow-worker-image", &self.allow_worker_image[..]),
                ("--allow-model", &self.allow_model[..]),
            ],
            &self.data_dir,
            authority,
        )
    }

    /// Who owns the proxy contract, and whether this proxy may sign for them.
    pub fn operator(&self) -> anyhow::Result<crate::billing::Operator> {
        use anyhow::Context;
        match (&self.operator_key_file, self.operator_account.is_empty()) {
            (Some(path), true) => {
                tracing::warn!(
                    path = %path.display(),
                    "DEVELOPMENT ONLY: this proxy holds its operator's key in a plain file; \
                     production proxies take --operator-account and never see the key"
                );
                let key = cocoon_node::key_file::read_or_create_key(path)
                    .context("--operator-key-file")?;
                Ok(crate::billing::Operator::Key(key))
            }
            (None, false) => {
                let account = self.operator_account.parse().map_err(|error| {
                    anyhow::anyhow!("--operator-account {}: {error}", self.operator_account)
                })?;
                Ok(crate::billing::Operator::Account(account))
            }
            (Some(_), false) => {
                anyhow::bail!("give either --operator-account or --operator-key-file, not both")
            }
            (None, true) => anyhow::bail!(
                "a proxy needs --operator-account ACCOUNT (the account that owns its contract; it \
                 authorizes the key the proxy makes at each start) or, in development, \
                 --operator-key-file PATH"
            ),
        }
    }

    /// How requests wait for a busy model.
    pub fn queue(&self) -> crate::queue::QueueConfig {
        crate::queue::QueueConfig {
            depth: self.queue_depth,
            per_client: self.queue_per_client,
            wait: std::time::Duration::from_millis(self.queue_wait_ms),
        }
    }

    /// The billing part of the configuration.
    pub fn billing(&self) -> crate::billing::BillingConfig {
        crate::billing::BillingConfig {
            ledger: self.ledger.clone(),
            data_dir: self.data_dir.clone(),
            stake: self.stake,
            faucet: self.faucet,
            settle_interval: std::time::Duration::from_millis(self.settle_interval_ms.max(10)),
            withdraw_threshold: self.withdraw_threshold,
            reserve_max_tokens: self.reserve_max_tokens,
            bad_worker_vouchers: self.test_only_bad_worker_vouchers,
            max_unpaid: self.max_unpaid,
            test_only_overcharge: self.test_only_overcharge,
            test_only_worker_fee: self.test_only_worker_fee,
        }
    }
}

fn default_queue_depth() -> usize {
    crate::queue::QueueConfig::default().depth
}

fn default_queue_per_client() -> usize {
    crate::queue::QueueConfig::default().per_client
}

fn default_queue_wait_ms() -> u64 {
    crate::queue::QueueConfig::default().wait.as_millis() as u64
}
