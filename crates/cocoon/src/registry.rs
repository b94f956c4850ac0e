//! `cocoon registry`: read the network's registry, and change it as its owner. Every change is one
//! owner-signed `UpdateRegistry` transaction carrying the next version (on TON: a message from the
//! owner's wallet to the root); nodes watching the ledger apply it within seconds (a revoked image
//! or model disconnects the peers that use it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_money::{
    AccountId, Amount, ImageRole, Registry, RegistryAnswer, RegistryEdit, Settlement,
};
use ed25519_dalek::SigningKey;

use crate::settlement::{MnemonicArgs, SettlementArgs};

/// Options of `cocoon registry`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Base URL of the ledger holding the registry (with `--settlement local`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:13000")]
    pub ledger: String,
    /// Where the registry lives (on TON: the root contract).
    #[command(flatten)]
    pub settlement: SettlementArgs,
    /// File with the registry owner's key (64 hex digits; see `cocoon registry keygen`). Changes
    /// need it or `--mnemonic-file`. `cocoon dev` writes its owner key to
    /// `<data-dir>/registry-owner.key`.
    #[arg(
        long,
        value_name = "FILE",
        env = "COCOON_REGISTRY_OWNER_KEY",
        conflicts_with = "mnemonic_file"
    )]
    pub owner_key: Option<PathBuf>,
    /// The owner's key from a TON wallet's mnemonic instead.
    #[command(flatten)]
    pub mnemonic: MnemonicArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// `cocoon registry …`
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Print the current registry.
    Show,
    /// Create a new owner key in FILE (refuses to overwrite one) and print its account, for a new
    /// ledger's `--owner`.
    Keygen {
        /// Where to write the key (mode 0600).
        file: PathBuf,
    },
    /// On TON: deploy a new network's root (the registry contract) from the owner's wallet
    /// (`--owner-key` or `--mnemonic-file`; it pays about 0.1 TON and owns the root), with the
    /// terms and lists of `--from FILE` (a registry as `registry show --json` prints it) or of a
    /// new local ledger's. Prints the root's address, which every node then takes as
    /// `--ton-root`. Needs `--settlement ton --ton-api URL` (no `--ton-root`).
    DeployRoot {
        /// The registry document to start from.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Owner-signed changes.
    #[command(flatten)]
    Change(ChangeCommand),
}

/// The owner's changes to the registry.
#[derive(Debug, Subcommand)]
pub enum ChangeCommand {
    /// Changes of lists.
    #[command(flatten)]
    Edit(RegistryEdit),
    /// Change prices; options not given keep their current value.
    SetPrice(PriceArgs),
    /// Sign the current document again, unchanged, as the next version. Nodes read only versions
    /// their pinned owner signed, and a new ledger's first document is signed by no one.
    Publish,
}

/// New values for `cocoon registry set-price`.
#[derive(Debug, Args)]
pub struct PriceArgs {
    /// What a client pays per adjusted token (nano-units).
    #[arg(long, value_name = "AMOUNT")]
    pub price_per_token: Option<Amount>,
    /// What a worker earns per adjusted token (nano-units; at most the price).
    #[arg(long, value_name = "AMOUNT")]
    pub worker_fee_per_token: Option<Amount>,
    /// Multiplier for prompt tokens (per 10 000).
    #[arg(long, value_name = "PER_10000")]
    pub prompt_multiplier: Option<u32>,
    /// Multiplier for cached prompt tokens (per 10 000).
    #[arg(long, value_name = "PER_10000")]
    pub cached_multiplier: Option<u32>,
    /// Multiplier for completion tokens (per 10 000).
    #[arg(long, value_name = "PER_10000")]
    pub completion_multiplier: Option<u32>,
    /// Multiplier for reasoning tokens (per 10 000).
    #[arg(long, value_name = "PER_10000")]
    pub reasoning_multiplier: Option<u32>,
}

/// Runs `cocoon registry`.
pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let change = match &args.command {
        RegistryCommand::Show => {
            let backend = args.settlement.backend(&args.ledger).await?;
            let answer = backend
                .connect(None)?
                .registry_answer()
                .await
                .with_context(|| format!("reading the registry from {}", backend.location()))?;
            return print(&answer, args.settlement.on_ton(), args.json);
        }
        RegistryCommand::Keygen { file } => {
            let account = keygen(file)?;
            if args.json {
                println!("{}", serde_json::json!({ "owner": account.to_string() }));
            } else {
                println!("{account}");
            }
            return Ok(());
        }
        RegistryCommand::DeployRoot { from } => {
            return deploy_root(&args, from.as_deref()).await;
        }
        RegistryCommand::Change(change) => change,
    };
    let key = owner_key(&args)?;
    let backend = args.settlement.backend(&args.ledger).await?;
    let ledger = backend.connect(Some(key))?;
    let mut current = read(&*ledger, backend.location()).await?;
    if args.settlement.on_ton() {
        // The root names its owner by wallet address, which does not reveal the key: the
        // document read back carries the address's hash. The owner signing keeps ownership (the
        // root refuses anyone else).
        current.owner = ledger
            .account_id()
            .context("a handle with a key has an account")?;
    }
    let edits = match change {
        ChangeCommand::Edit(edit) => vec![edit.clone()],
        ChangeCommand::SetPrice(prices) => vec![RegistryEdit::SetPrices {
            prices: new_prices(&current.prices, prices),
        }],
        ChangeCommand::Publish => Vec::new(),
    };
    let updated = apply(&*ledger, &current, &edits).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&updated)?);
    } else {
        println!("registry updated to version {}", updated.version);
    }
    Ok(())
}

/// The owner's key, from `--mnemonic-file` or `--owner-key`.
fn owner_key(args: &RegistryArgs) -> anyhow::Result<SigningKey> {
    match (&args.owner_key, args.mnemonic.key()?) {
        (_, Some(key)) => Ok(key),
        (Some(key_file), None) => read_key(key_file),
        (None, None) => bail!(
            "changing the registry needs its owner's key: pass --owner-key FILE or \
             --mnemonic-file FILE"
        ),
    }
}

/// `registry deploy-root`: a new root on TON, owned by the owner key's wallet.
async fn deploy_root(args: &RegistryArgs, from: Option<&Path>) -> anyhow::Result<()> {
    let api = args.settlement.ton_api()?;
    let key = owner_key(args)?;
    let owner = AccountId::from(&key);
    let mut registry = match from {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading the registry document {}", path.display()))?;
            serde_json::from_slice::<RegistryAnswer>(&text)
                .with_context(|| format!("{} is not a registry document", path.display()))?
                .registry
        }
        None => Registry::new(owner),
    };
    registry.owner = owner;
    registry.version = 0;
    registry.validate().context("the registry to deploy")?;
    let root = cocoon_ton::deploy::deploy_root(&api, &key, &registry)
        .await
        .context("deploying the root")?
        .to_hex();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "root": root, "owner": owner.to_string() })
        );
    } else {
        println!("root deployed at {root} (owner {owner})");
        println!("every node and command of this network takes: --ton-root {root}");
    }
    Ok(())
}

/// The current registry.
pub async fn read(ledger: &dyn Settlement, url: &str) -> anyhow::Result<Registry> {
    ledger
        .registry()
        .await
        .with_context(|| format!("reading the registry from {url}"))
}

fn new_prices(current: &cocoon_money::Prices, args: &PriceArgs) -> cocoon_money::Prices {
    cocoon_money::Prices {
        price_per_token: args.price_per_token.unwrap_or(current.price_per_token),
        worker_fee_per_token: args
            .worker_fee_per_token
            .unwrap_or(current.worker_fee_per_token),
        prompt_multiplier: args.prompt_multiplier.unwrap_or(current.prompt_multiplier),
        cached_multiplier: args.cached_multiplier.unwrap_or(current.cached_multiplier),
        completion_multiplier: args
            .completion_multiplier
            .unwrap_or(current.completion_multiplier),
        reasoning_multiplier: args
            .reasoning_multiplier
            .unwrap_or(current.reasoning_multiplier),
    }
}

/// Applies `edits` to `current` and submits the result as one owner-signed update (version + 1).
/// A concurrent update makes the ledger refuse this one (its version is no longer newer).
pub async fn apply(
    ledger: &dyn Settlement,
    current: &Registry,
    edits: &[RegistryEdit],
) -> anyhow::Result<Registry> {
    let mut next = current.clone();
    for edit in edits {
        next = next.edited(edit)?;
    }
    next.version = current.version + 1;
    ledger
        .update_registry(next.clone())
        .await
        .context("the ledger refused the registry update")?;
    Ok(next)
}

/// Signs the registry of the ledger at `url` again, unchanged, as its next version, once the
/// ledger answers (within 30 s): for a network that starts its own ledger, so that its nodes,
/// which pin the owner, have a signed version to read.
pub async fn publish_when_up(url: &str, owner_key: &SigningKey) -> anyhow::Result<Registry> {
    let ledger = crate::settlement::local(url).connect(Some(owner_key.clone()))?;
    let started = std::time::Instant::now();
    let current = loop {
        match read(&*ledger, url).await {
            Ok(current) => break current,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(30) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.context("the ledger did not come up within 30 s")),
        }
    };
    apply(&*ledger, &current, &[]).await
}

pub use cocoon_node::key_file::{read_key, write_key};

fn keygen(path: &Path) -> anyhow::Result<AccountId> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_key(path, &key)?;
    Ok(AccountId::from(&key))
}

fn print(answer: &RegistryAnswer, on_ton: bool, json: bool) -> anyhow::Result<()> {
    let registry = &answer.registry;
    if json {
        println!("{}", serde_json::to_string_pretty(registry)?);
        return Ok(());
    }
    let p = &registry.prices;
    println!("version: {}", registry.version);
    println!("owner:   {}", registry.owner);
    match &answer.signed_update {
        Some(update) => println!("signed:  by {}", update.signer),
        None if on_ton => println!(
            "signed:  on TON: the root accepts changes only from the owner's wallet (owner above: \
             that wallet's address hash)"
        ),
        None => println!(
            "signed:  no (a new ledger's first version; nodes wait for one the owner signed: \
             `cocoon registry publish`)"
        ),
    }
    println!(
        "prices:  {} per token to clients, {} to workers (nano-units); multipliers per 10000: \
         prompt {}, cached {}, completion {}, reasoning {}",
        p.price_per_token,
        p.worker_fee_per_token,
        p.prompt_multiplier,
        p.cached_multiplier,
        p.completion_multiplier,
        p.reasoning_multiplier
    );
    println!(
        "stakes:  client ≥ {}, proxy ≥ {}; close delays: client {} s, proxy {} s",
        registry.min_client_stake,
        registry.min_proxy_stake,
        registry.client_delay_before_close,
        registry.proxy_delay_before_close
    );
    for role in [ImageRole::Proxy, ImageRole::Worker] {
        let images = registry.images(role);
        if images.is_empty() {
            println!("{role} images: any");
        } else {
            println!("{role} images:");
            for hash in images {
                println!("  {hash}");
            }
        }
    }
    if registry.models.is_empty() {
        println!("models: any");
    } else {
        println!("models:");
        for (name, hash) in &registry.models {
            println!("  {name} = {hash}");
        }
    }
    if registry.proxies.is_empty() {
        println!("proxies: none registered");
    } else {
        println!("proxies:");
        for proxy in &registry.proxies {
            println!(
                "  #{}: workers dial {}, clients dial {}",
                proxy.seqno, proxy.worker_endpoint, proxy.client_endpoint
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owner.key");
        let account = keygen(&path).unwrap();
        assert_eq!(AccountId::from(&read_key(&path).unwrap()), account);
        assert!(keygen(&path).is_err(), "an existing key is kept");
        std::fs::write(&path, "not hex").unwrap();
        let error = read_key(&path).unwrap_err();
        assert!(format!("{error:#}").contains("64 hex digits"), "{error:#}");
    }

    #[test]
    fn set_price_keeps_what_is_not_given() {
        let current = cocoon_money::Prices::default();
        let args = PriceArgs {
            price_per_token: Some(5_000),
            worker_fee_per_token: None,
            prompt_multiplier: None,
            cached_multiplier: Some(2_000),
            completion_multiplier: None,
            reasoning_multiplier: None,
        };
        let prices = new_prices(&current, &args);
        assert_eq!(prices.price_per_token, 5_000);
        assert_eq!(prices.cached_multiplier, 2_000);
        assert_eq!(prices.worker_fee_per_token, current.worker_fee_per_token);
    }
}
