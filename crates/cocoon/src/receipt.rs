//! `cocoon receipt verify`: check an answer's receipt offline — both attested certificates, both
//! signatures, the charge, and (when given) the answer, the request and a registry's allow-lists.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use cocoon_money::Registry;

use crate::settlement::SettlementArgs;
use cocoon_receipt::{AnswerText, Expectations, Receipt};
use cocoon_tee::{AttestationKind, Quote, Verifier};
use serde_json::json;
use sha2::{Digest, Sha256};

/// `cocoon receipt …`
#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check a receipt: the `x-cocoon-receipt` header value, or the JSON of the `cocoon.receipt`
    /// event that ends a stream. Exits non-zero when any check fails.
    Verify(VerifyArgs),
}

/// Options of `cocoon receipt verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The receipt (JSON or header value); `-` reads standard input.
    pub file: PathBuf,
    /// The answer as the app received it (JSON body or SSE transcript): its text must be the one
    /// the receipt names.
    #[arg(long, value_name = "FILE")]
    pub response: Option<PathBuf>,
    /// The request body sent: it must be the one the receipt names.
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// A registry document (JSON, as `cocoon registry show --json` prints it) whose allow-lists
    /// must contain the worker image, the proxy image and the model.
    #[arg(long, value_name = "FILE", conflicts_with = "ledger")]
    pub registry: Option<PathBuf>,
    /// Check against the registry of this ledger now, instead of a file.
    #[arg(long, value_name = "URL")]
    pub ledger: Option<String>,
    /// Or against the registry of the Cocoon root on TON now (`--settlement ton --ton-api URL
    /// --ton-root ADDRESS`).
    #[command(flatten)]
    pub settlement: SettlementArgs,
    /// The weakest attestation accepted for both nodes (`fake` and `none` prove nothing: pass
    /// them only to check receipts of a development network such as `cocoon dev`).
    #[arg(long, default_value = "tdx", value_name = "KIND")]
    pub min_tee: AttestationKind,
    /// Intel PCS or PCCS base URL for the collateral of `tdx` quotes.
    #[arg(long, value_name = "URL", default_value = cocoon_tee::tdx::INTEL_PCS_URL)]
    pub pccs_url: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cocoon receipt …`.
pub async fn run(command: ReceiptCommand) -> anyhow::Result<()> {
    let ReceiptCommand::Verify(args) = command;
    let text = read(&args.file)?;
    let receipt = Receipt::parse(&String::from_utf8_lossy(&text))
        .with_context(|| format!("reading {}", args.file.display()))?;
    let response_sha256 = match &args.response {
        Some(path) => Some(AnswerText::from_transcript(&read(path)?).sha256()),
        None => None,
    };
    let request_sha256 = match &args.request {
        Some(path) => Some(Sha256::digest(read(path)?).into()),
        None => None,
    };
    let registry: Option<Registry> = match (&args.registry, &args.ledger) {
        (Some(path), _) => Some(
            serde_json::from_slice(&read(path)?)
                .with_context(|| format!("{} is not a registry document", path.display()))?,
        ),
        (None, _) if args.settlement.on_ton() => {
            let backend = args.settlement.backend("").await?;
            let root = backend.connect(None)?;
            Some(crate::registry::read(&*root, backend.location()).await?)
        }
        (None, Some(url)) => {
            let ledger = crate::settlement::local(url).connect(None)?;
            Some(crate::registry::read(&*ledger, url).await?)
        }
        (None, None) => None,
    };
    let verifier = verifier_for(&receipt, &args.pccs_url).await?;
    let verified = receipt
        .verify(&Expectations {
            verifier: &verifier,
            min_kind: args.min_tee,
            registry: registry.as_ref(),
            response_sha256,
            request_sha256,
        })
        .context("the receipt does NOT verify")?;
    let answer = &receipt.answer;
    let checked = |given: bool| if given { "matches" } else { "not checked" };
    if args.json {
        let out = json!({
            "valid": true,
            "answer": answer,
            "version": receipt.version,
            "batch": receipt.batch.as_ref().map(|b| json!({ "index": b.index, "size": b.size })),
            "worker": { "image_hash": verified.worker.image_hash.to_string(), "kind": verified.worker.kind.to_string() },
            "proxy": { "image_hash": verified.proxy.image_hash.to_string(), "kind": verified.proxy.kind.to_string() },
            "response": checked(response_sha256.is_some()),
            "request": checked(request_sha256.is_some()),
            "registry": registry.as_ref().map(|r| r.version),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let usage = &answer.usage;
    println!("receipt verifies");
    println!(
        "  request:  {} (issued at {} unix)",
        answer.request_id, answer.issued_at
    );
    println!(
        "  model:    {} (weights {})",
        answer.model,
        answer.model_hash.as_deref().unwrap_or("unknown")
    );
    println!(
        "  worker:   image {} ({} attestation)",
        verified.worker.image_hash, verified.worker.kind
    );
    println!(
        "  proxy:    image {} ({} attestation)",
        verified.proxy.image_hash, verified.proxy.kind
    );
    println!(
        "  usage:    {} prompt ({} cached) + {} completion ({} reasoning) tokens at coefficient {}",
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.completion_tokens,
        usage.reasoning_tokens,
        answer.coefficient
    );
    println!("  charge:   {} nano-units", answer.charge);
    match &receipt.batch {
        Some(batch) => println!(
            "  signed:   as answer {} of a batch of {} (version {})",
            batch.index + 1,
            batch.size,
            receipt.version
        ),
        None => println!("  signed:   alone (version {})", receipt.version),
    }
    println!("  response: {}", checked(response_sha256.is_some()));
    println!("  request:  {}", checked(request_sha256.is_some()));
    match &registry {
        Some(registry) => println!("  registry: allowed by version {}", registry.version),
        None => println!("  registry: not checked"),
    }
    Ok(())
}

/// A verifier for the receipt's two quotes (`tdx` ones get their collateral fetched first).
async fn verifier_for(receipt: &Receipt, pccs_url: &str) -> anyhow::Result<Verifier> {
    use base64::Engine as _;
    let quotes: Vec<Quote> = [&receipt.worker_certificate, &receipt.proxy_certificate]
        .into_iter()
        .filter_map(|certificate| {
            base64::engine::general_purpose::STANDARD
                .decode(certificate)
                .ok()
        })
        .filter_map(|der| cocoon_ratls::inspect_certificate(&der).ok())
        .map(|contents| contents.quote)
        .collect();
    // Certificates that do not decode are reported by the verification itself.
    crate::attest::verifier_for(&quotes.iter().collect::<Vec<_>>(), pccs_url).await
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
