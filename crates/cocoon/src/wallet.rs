//! `cocoon wallet`: a node's settlement account from the command line, on the local ledger or on
//! TON (`--settlement ton`). The wallet key is the node's own sealed key (same `--data-dir` and
//! attestation options as the node), so the CLI acts for the very account the node's attestation
//! names; or an operator's TON wallet from its 24-word mnemonic (`--mnemonic-file`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use cocoon_money::{
    AccountId, Amount, RegistryAuthority, Settlement, SettlementBackend, SignedVoucher,
};
use cocoon_node::attestation::AttestationArgs;

use crate::settlement::{MnemonicArgs, SettlementArgs};
use cocoon_node::registry::RegistryWatch;
use cocoon_node::registry_trust::RegistryTrust;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Options of `cocoon wallet`.
#[derive(Debug, Args)]
pub struct WalletArgs {
    /// The node's data directory, where its sealed wallet key lives: the key this command signs
    /// with, unless `--mnemonic-file` is given.
    #[arg(long, value_name = "DIR", default_value = "cocoon-data/client")]
    pub data_dir: PathBuf,
    /// Base URL of the ledger (with `--settlement local`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:13000")]
    pub ledger: String,
    /// Where money settles.
    #[command(flatten)]
    pub settlement: SettlementArgs,
    /// Sign with a TON mnemonic's key instead of the node's sealed key.
    #[command(flatten)]
    pub mnemonic: MnemonicArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The registry owner's account: registry figures (such as the minimum stake `deposit` uses
    /// by default) are read only from a version it signed, never from the ledger's word.
    #[arg(long, value_name = "ACCOUNT", default_value = "")]
    pub registry_owner: String,
    /// The node's attestation options (the key is sealed to its image).
    #[command(flatten)]
    pub attestation: AttestationArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: WalletCommand,
}

/// `cocoon wallet …`
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create the wallet key if there is none; print its address.
    New,
    /// Print the wallet's address (hex public key; on TON also its v5r1 wallet, where TON for
    /// this account is sent).
    Address,
    /// The account's balance, and its contracts with `--proxy`.
    Balance {
        /// A proxy's wallet: also show this account's client and worker contracts with it.
        #[arg(long, value_name = "ACCOUNT")]
        proxy: Option<AccountId>,
    },
    /// Send `amount` from this account to another (e.g. a worker owner's earnings onward).
    Transfer {
        /// The receiving account.
        #[arg(long, value_name = "ACCOUNT")]
        to: AccountId,
        /// Nano-units.
        amount: Amount,
    },
    /// Development only (a ledger with its faucet on, or `--settlement ton-devnet`): mint
    /// `amount` into this account from the faucet.
    Faucet {
        /// Nano-units.
        amount: Amount,
    },
    /// Deposit into the client contract with `proxy` (opening it with `--stake` if needed).
    Deposit {
        /// The proxy's wallet.
        #[arg(long, value_name = "ACCOUNT")]
        proxy: AccountId,
        /// Nano-units.
        amount: Amount,
        /// Stake of a new contract (default: the registry's minimum, which needs
        /// `--registry-owner` on the local ledger; on TON the root's own).
        #[arg(long, value_name = "AMOUNT")]
        stake: Option<Amount>,
    },
    /// Withdraw from the client contract with `--proxy` (above its stake), or with
    /// `--commission` from this proxy's own collected commission.
    Withdraw {
        /// The proxy's wallet.
        #[arg(long, value_name = "ACCOUNT", required_unless_present = "commission")]
        proxy: Option<AccountId>,
        /// Withdraw commission from this account's proxy contract instead.
        #[arg(long)]
        commission: bool,
        /// Nano-units.
        amount: Amount,
    },
    /// Close the client contract with `proxy` (the part above the stake now, the stake after the
    /// registry's delay); run again after the delay to collect the stake.
    Close {
        /// The proxy's wallet.
        #[arg(long, value_name = "ACCOUNT")]
        proxy: AccountId,
    },
    /// Claim earnings with a proxy's worker-pay voucher (JSON, as in the worker's `/jsonstats`).
    Claim {
        /// The signed voucher.
        #[arg(long, value_name = "JSON")]
        voucher: String,
    },
    /// Proxy operator: let a proxy node's voucher key (printed by the proxy at start, and named
    /// in its attested claims as `voucher_key`) sign this account's proxy contract's vouchers.
    /// With `--stake`, opens the contract with that key if it is not open.
    AuthorizeProxyKey {
        /// The proxy node's voucher key.
        #[arg(long, value_name = "KEY")]
        key: AccountId,
        /// Open the proxy contract with this stake (nano-units) if it is not open yet.
        #[arg(long, value_name = "AMOUNT")]
        stake: Option<Amount>,
    },
    /// Proxy operator: stop honouring an earlier voucher key of this account's proxy contract
    /// (one that leaked); its unclaimed vouchers become worthless.
    RevokeProxyKey {
        /// The key to revoke.
        #[arg(long, value_name = "KEY")]
        key: AccountId,
    },
}

/// The registry's `min_client_stake`, from a version its pinned owner signed, or (on TON) from the
/// pinned root contract — and not older than the last one this data directory saw.
async fn verified_min_client_stake(
    backend: &dyn SettlementBackend,
    owner: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<Amount> {
    let authority = backend.registry_authority();
    if owner.trim().is_empty() && authority == RegistryAuthority::OwnerSignature {
        anyhow::bail!(
            "pass --stake AMOUNT, or --registry-owner ACCOUNT to stake the registry's minimum (read \
             only from a version its owner signed)"
        );
    }
    let trust = RegistryTrust::for_node(owner, &[], data_dir, &authority)?;
    let stop = CancellationToken::new();
    let registry = tokio::time::timeout(
        REGISTRY_WAIT,
        RegistryWatch::start(backend, trust, stop.clone()),
    )
    .await
    .with_context(|| {
        format!(
            "{} served no registry this node accepts within {REGISTRY_WAIT:?}",
            backend.location()
        )
    })?
    .context("reading the registry")?;
    let stake = registry.current().min_client_stake;
    stop.cancel();
    Ok(stake)
}

/// How long `deposit` waits for a registry version it can trust.
const REGISTRY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one wallet command.
pub async fn run(args: WalletArgs) -> anyhow::Result<()> {
    let key = match args.mnemonic.key()? {
        Some(key) => key,
        None => cocoon_node::wallet::open_wallet(&args.data_dir, &args.attestation)
            .context("opening the wallet key")?,
    };
    let account = AccountId::from(&key);
    if matches!(args.command, WalletCommand::New | WalletCommand::Address) {
        // No backend needed: the address is the key's.
        return print(&address(account, args.settlement.on_ton())?, args.json);
    }
    let backend = args.settlement.backend(&args.ledger).await?;
    let ledger = backend
        .connect(Some(key))
        .with_context(|| format!("connecting to {}", backend.location()))?;
    let out = match args.command {
        WalletCommand::New | WalletCommand::Address => address(account, args.settlement.on_ton())?,
        WalletCommand::Balance { proxy } => balance(&*ledger, account, proxy).await?,
        WalletCommand::Transfer { to, amount } => {
            let receipt = ledger.transfer(to, amount).await?;
            json!({ "outcome": receipt.outcome, "balance": balance(&*ledger, account, None).await? })
        }
        WalletCommand::Faucet { amount } => {
            let receipt = ledger.faucet(amount).await?;
            json!({ "address": account.to_string(), "minted": amount, "seq": receipt.seq })
        }
        WalletCommand::Deposit {
            proxy,
            amount,
            stake,
        } => {
            let open = ledger
                .client_contract(proxy, account)
                .await?
                .is_some_and(|c| c.status == cocoon_money::ContractStatus::Open);
            if open {
                ledger.top_up(proxy, amount).await?;
            } else {
                let stake = match stake {
                    Some(stake) => stake,
                    // On TON the root is the registry, and the channel's address commits to its
                    // minimum: a channel opened with another stake would not be the one the
                    // proxy finds.
                    None if args.settlement.on_ton() => ledger.registry().await?.min_client_stake,
                    None => {
                        verified_min_client_stake(&*backend, &args.registry_owner, &args.data_dir)
                            .await?
                    }
                };
                ledger.open_client(proxy, amount, stake).await?;
            }
            balance(&*ledger, account, Some(proxy)).await?
        }
        WalletCommand::Withdraw {
            proxy,
            commission,
            amount,
        } => {
            match (commission, proxy) {
                (true, _) => ledger.withdraw_commission(amount).await?,
                (false, Some(proxy)) => ledger.withdraw_client(proxy, amount).await?,
                (false, None) => anyhow::bail!("--proxy or --commission is required"),
            };
            balance(&*ledger, account, proxy).await?
        }
        WalletCommand::Close { proxy } => {
            let closing = ledger
                .client_contract(proxy, account)
                .await?
                .is_some_and(|c| matches!(c.status, cocoon_money::ContractStatus::Closing { .. }));
            let receipt = if closing {
                ledger.finish_client_close(proxy).await?
            } else {
                ledger.close_client(proxy, None).await?
            };
            json!({ "outcome": receipt.outcome, "balance": balance(&*ledger, account, Some(proxy)).await? })
        }
        WalletCommand::Claim { voucher } => {
            let voucher: SignedVoucher =
                serde_json::from_str(&voucher).context("--voucher is not a signed voucher")?;
            let receipt = ledger.claim(voucher).await?;
            json!({ "outcome": receipt.outcome, "balance": balance(&*ledger, account, None).await? })
        }
        WalletCommand::AuthorizeProxyKey { key, stake } => {
            let open = ledger
                .proxy_contract(account)
                .await?
                .is_some_and(|c| c.status == cocoon_money::ContractStatus::Open);
            match stake {
                Some(stake) if !open => ledger.open_proxy(stake, key).await?,
                _ => ledger.authorize_proxy_key(key).await?,
            };
            balance(&*ledger, account, None).await?
        }
        WalletCommand::RevokeProxyKey { key } => {
            ledger.revoke_proxy_key(key).await?;
            balance(&*ledger, account, None).await?
        }
    };
    print(&out, args.json)
}

/// The account's address; on TON also the v5r1 wallet that holds its TON.
fn address(account: AccountId, on_ton: bool) -> anyhow::Result<Value> {
    let mut out = json!({ "address": account.to_string() });
    if on_ton {
        let wallet = cocoon_ton::contracts::wallet_address(account.as_bytes())
            .context("computing the TON wallet address")?;
        // Non-bounceable: what a first transfer to a wallet not yet deployed must use.
        out["ton_wallet"] = json!(wallet.to_base64_url_flags(true, false));
    }
    Ok(out)
}

fn print(out: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(out)?);
    } else {
        print_text(out, "");
    }
    Ok(())
}

async fn balance(
    ledger: &dyn Settlement,
    account: AccountId,
    proxy: Option<AccountId>,
) -> anyhow::Result<Value> {
    let mut out = json!({
        "address": account.to_string(),
        "balance": ledger.account(account).await?.balance,
    });
    if let Some(contract) = ledger.proxy_contract(account).await? {
        out["proxy_contract"] = serde_json::to_value(contract)?;
    }
    if let Some(proxy) = proxy {
        out["client_contract"] =
            serde_json::to_value(ledger.client_contract(proxy, account).await?)?;
        out["worker_contract"] =
            serde_json::to_value(ledger.worker_contract(proxy, account).await?)?;
    }
    Ok(out)
}

/// `key: value` lines, nested objects indented.
fn print_text(value: &Value, indent: &str) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::Object(_) => {
                        println!("{indent}{key}:");
                        print_text(value, &format!("{indent}  "));
                    }
                    other => println!("{indent}{key}: {other}"),
                }
            }
        }
        other => println!("{indent}{other}"),
    }
}
