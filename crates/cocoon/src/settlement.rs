//! The settlement backend the binary's commands and roles run on, chosen by one set of flags
//! ([`SettlementArgs`], flattened into every command that takes `--ledger`): the local ledger at
//! `--ledger` (the default), or the Cocoon contracts on TON (`--settlement ton`). Roles and
//! commands see either as a [`SettlementBackend`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use cocoon_ledger::LocalLedger;
use cocoon_money::SettlementBackend;
use cocoon_ton::{TonAddress, TonApi, TonBackend};
use ed25519_dalek::SigningKey;

/// Which settlement backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SettlementKind {
    /// The local ledger service at `--ledger`.
    Local,
    /// The Cocoon contracts on TON: `--ton-api` and `--ton-root` are required.
    Ton,
    /// Development only: TON on the local devnet (`node contracts/devnet/server.js`), whose
    /// faucet `wallet faucet` may use. `--ton-api` is the devnet's API (`http://HOST:PORT/api/v2`).
    TonDevnet,
}

/// The settlement choice (the local ledger's own `--ledger URL` is the command's).
#[derive(Clone, Args)]
pub struct SettlementArgs {
    /// Where money settles: `local` (the ledger at `--ledger`), `ton` (the Cocoon contracts on
    /// TON, with `--ton-api` and `--ton-root`), or `ton-devnet` (TON on the local devnet, with its
    /// faucet; development only).
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "local")]
    pub settlement: SettlementKind,
    /// TON HTTP API v2 endpoint (e.g. `https://toncenter.com/api/v2`, or a self-hosted
    /// `ton-http-api`: recommended, since the API's answers are trusted as they come).
    #[arg(long, value_name = "URL")]
    pub ton_api: Option<String>,
    /// API key sent to `--ton-api` as `X-API-Key` (toncenter's rate limits). Prefer the
    /// environment variable: a flag shows in the process list.
    #[arg(
        long,
        value_name = "KEY",
        env = "COCOON_TON_API_KEY",
        hide_env_values = true
    )]
    pub ton_api_key: Option<String>,
    /// The Cocoon root contract (the registry) on TON: a raw (`0:…`) or user-friendly address.
    #[arg(long, value_name = "ADDRESS")]
    pub ton_root: Option<String>,
}

/// Never shows the API key.
impl std::fmt::Debug for SettlementArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettlementArgs")
            .field("settlement", &self.settlement)
            .field("ton_api", &self.ton_api)
            .field(
                "ton_api_key",
                &self.ton_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("ton_root", &self.ton_root)
            .finish()
    }
}

impl SettlementArgs {
    /// True for the Cocoon contracts on TON (devnet or not).
    pub fn on_ton(&self) -> bool {
        self.settlement != SettlementKind::Local
    }

    /// The chosen backend: the local ledger at `ledger_url`, or the root on TON (read once here:
    /// its terms are part of the contracts' addresses).
    pub async fn backend(&self, ledger_url: &str) -> anyhow::Result<Arc<dyn SettlementBackend>> {
        if !self.on_ton() {
            return Ok(local(ledger_url));
        }
        let (api, root) = self.ton_target()?;
        let backend = connect_root(api, root).await?;
        Ok(Arc::new(match self.settlement {
            SettlementKind::TonDevnet => {
                on_devnet(backend, &devnet_base(self.ton_api.as_deref().unwrap_or("")))
            }
            _ => backend,
        }))
    }

    /// The TON API client of `--ton-api` (TON only; no root needed).
    pub fn ton_api(&self) -> anyhow::Result<TonApi> {
        if !self.on_ton() {
            bail!("this command is for TON: pass --settlement ton --ton-api URL");
        }
        let Some(url) = self.ton_api.as_deref() else {
            bail!("--settlement ton needs --ton-api URL (a TON HTTP API v2 endpoint)");
        };
        TonApi::new(url, self.ton_api_key.clone()).with_context(|| format!("bad --ton-api {url:?}"))
    }

    /// The API client and the root's address, from flags that must both be there.
    fn ton_target(&self) -> anyhow::Result<(TonApi, TonAddress)> {
        let api = self.ton_api()?;
        let Some(root) = self.ton_root.as_deref() else {
            bail!("--settlement ton needs --ton-root ADDRESS (the Cocoon root contract)");
        };
        let root = root
            .parse::<TonAddress>()
            .map_err(|error| anyhow::anyhow!("bad --ton-root {root:?}: {error}"))?;
        Ok((api, root))
    }
}

/// How often a devnet backend looks for its operations' results: the devnet makes a block per
/// message, so waiting for a chain's seconds would only slow development down.
const DEVNET_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The Cocoon root at `root` on TON, read through `api`.
async fn connect_root(api: TonApi, root: TonAddress) -> anyhow::Result<TonBackend> {
    TonBackend::connect_root(api, root.clone())
        .await
        .with_context(|| format!("reading the Cocoon root {} on TON", root.to_hex()))
}

/// `backend` on the devnet at `base`: its faucet, and polled as fast as it makes blocks.
fn on_devnet(backend: TonBackend, base: &str) -> TonBackend {
    backend
        .with_devnet_faucet(base)
        .with_poll_interval(DEVNET_POLL)
}

/// The root at `root` on the devnet at `base` (what `cocoon dev --settlement ton-devnet` runs on).
pub async fn devnet_backend(base: &str, root: &str) -> anyhow::Result<TonBackend> {
    let api = TonApi::new(&format!("{base}/api/v2"), None)
        .with_context(|| format!("bad devnet URL {base:?}"))?;
    let root = root
        .parse::<TonAddress>()
        .map_err(|error| anyhow::anyhow!("bad devnet root {root:?}: {error}"))?;
    Ok(on_devnet(connect_root(api, root).await?, base))
}

/// The devnet's own base (its faucet is at `/devnet/faucet`) from its API URL.
fn devnet_base(api_url: &str) -> String {
    let url = api_url.trim_end_matches('/');
    url.strip_suffix("/api/v2").unwrap_or(url).to_owned()
}

/// The local ledger service at `ledger_url` (what `cocoon dev` starts for itself).
pub fn local(ledger_url: &str) -> Arc<dyn SettlementBackend> {
    Arc::new(LocalLedger::new(ledger_url))
}

/// Where a command's signing key comes from, beside the command's own key file.
#[derive(Debug, Clone, Args)]
pub struct MnemonicArgs {
    /// File with a TON wallet's 24-word mnemonic: sign with its key (TON's standard derivation,
    /// as wallet apps use; no password) instead of the command's own key (`wallet`: the node's
    /// sealed key; `registry`: `--owner-key`). On TON the account is the v5r1 wallet of that key.
    #[arg(long, value_name = "FILE")]
    pub mnemonic_file: Option<PathBuf>,
}

impl MnemonicArgs {
    /// The mnemonic's key, if `--mnemonic-file` was given.
    pub fn key(&self) -> anyhow::Result<Option<SigningKey>> {
        self.mnemonic_file.as_deref().map(read_mnemonic).transpose()
    }
}

fn read_mnemonic(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the mnemonic file {}", path.display()))?;
    cocoon_ton::key_from_mnemonic(&text).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        settlement: SettlementArgs,
    }

    fn parse(args: &[&str]) -> SettlementArgs {
        Command::try_parse_from(std::iter::once("cocoon").chain(args.iter().copied()))
            .unwrap()
            .settlement
    }

    async fn backend_error(args: &[&str]) -> String {
        match parse(args).backend("http://127.0.0.1:9").await {
            Ok(_) => panic!("{args:?} built a backend"),
            Err(error) => format!("{error:#}"),
        }
    }

    async fn backend_error_on_ton(api: &str, root: &str) -> String {
        backend_error(&["--settlement", "ton", "--ton-api", api, "--ton-root", root]).await
    }

    #[tokio::test]
    async fn the_local_ledger_is_the_default() {
        let args = parse(&[]);
        assert_eq!(args.settlement, SettlementKind::Local);
        assert!(!args.on_ton());
        let backend = args.backend("http://127.0.0.1:9").await.unwrap();
        assert_eq!(backend.location(), "http://127.0.0.1:9");
    }

    #[tokio::test]
    async fn missing_or_invalid_ton_flags_are_clear_errors() {
        let error = backend_error(&["--settlement", "ton", "--ton-root", "0:00"]).await;
        assert!(error.contains("needs --ton-api"), "{error}");
        let error = backend_error(&["--settlement", "ton", "--ton-api", "http://x/api/v2"]).await;
        assert!(error.contains("needs --ton-root"), "{error}");
        let error = backend_error_on_ton("ftp://x", "0:00").await;
        assert!(error.contains("bad --ton-api"), "{error}");
        let error = backend_error_on_ton("http://127.0.0.1:9/api/v2", "not an address").await;
        assert!(error.contains("bad --ton-root"), "{error}");
        assert!(Command::try_parse_from(["cocoon", "--settlement", "chain"]).is_err());
    }

    #[test]
    fn the_api_key_never_prints() {
        let args = parse(&["--settlement", "ton", "--ton-api-key", "s3cret"]);
        assert!(!format!("{args:?}").contains("s3cret"));
    }

    #[test]
    fn the_devnet_faucet_is_at_the_apis_base() {
        assert_eq!(
            devnet_base("http://127.0.0.1:13100/api/v2/"),
            "http://127.0.0.1:13100"
        );
        assert_eq!(
            devnet_base("http://127.0.0.1:13100"),
            "http://127.0.0.1:13100"
        );
    }
}
