//! `cocoon attest`: make, inspect and check RA-TLS certificates and image hashes, offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use cocoon_node::attestation::{attester_for, own_image_hash, AttestationArgs};
use cocoon_ratls::{inspect_certificate, verify_certificate, Identity};
use cocoon_tee::tdx::{CollateralSource, PccsConfig, TdxQuoteVerifier};
use cocoon_tee::{AttestationKind, ImageHash, Policy, Quote, Verifier};
use serde_json::json;

/// `cocoon attest …`
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Make an RA-TLS certificate with this machine's attestation (`--tee`), as a node would.
    GenCert(GenCertArgs),
    /// Show what a certificate claims, and whether its quote verifies (no policy applied).
    Show(ShowArgs),
    /// Check a certificate as a peer would: signatures, validity, quote, binding, and a policy.
    Verify(VerifyArgs),
    /// Print the image hash this machine's attestation (`--tee`, `--image-label`) yields.
    ImageHash(ImageHashArgs),
    /// Print the model hash a worker serving these weights attests (a GGUF file, or a directory
    /// such as a Hugging Face snapshot), for `cocoon registry allow-model NAME HASH`.
    ModelHash(ModelHashArgs),
}

/// Options of `cocoon attest gen-cert`.
#[derive(Debug, Args)]
pub struct GenCertArgs {
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The role claimed (`proxy`, `worker`, `client`).
    #[arg(long, default_value = "worker")]
    pub role: String,
    /// Extra claims, `KEY=VALUE` (repeatable), e.g. `model=…`.
    #[arg(long = "claim", value_name = "KEY=VALUE")]
    pub claims: Vec<String>,
    /// Validity in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub validity_secs: u64,
    /// Print JSON (the file and the certificate's fingerprint) instead of the fingerprint alone.
    #[arg(long)]
    pub json: bool,
    /// How to attest.
    #[command(flatten)]
    pub attestation: AttestationArgs,
}

/// Options of `cocoon attest show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The certificate (PEM or DER).
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `cocoon attest verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The certificate (PEM or DER).
    pub file: PathBuf,
    /// Allowed image hashes (repeat or separate with commas). Empty: any image.
    #[arg(long, value_name = "HASH", value_delimiter = ',')]
    pub allow_image: Vec<String>,
    /// The weakest attestation kind accepted (`fake` and `none` prove nothing: pass them only to
    /// check development certificates).
    #[arg(long, default_value = "tdx")]
    pub min_kind: AttestationKind,
    /// Check at this time (unix seconds) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub at: Option<u64>,
    /// Intel PCS or PCCS base URL for the collateral of a `tdx` quote.
    #[arg(long, value_name = "URL", default_value = cocoon_tee::tdx::INTEL_PCS_URL)]
    pub pccs_url: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `cocoon attest image-hash`.
#[derive(Debug, Args)]
pub struct ImageHashArgs {
    /// Print JSON (the attestation kind and the image hash) instead of the hash alone.
    #[arg(long)]
    pub json: bool,
    /// How to attest.
    #[command(flatten)]
    pub attestation: AttestationArgs,
}

/// Options of `cocoon attest model-hash`.
#[derive(Debug, Args)]
pub struct ModelHashArgs {
    /// The weights: a file, or a directory (every file under it but hidden ones; see
    /// docs/operators/worker.md for the exact rule).
    pub path: PathBuf,
    /// Print JSON (the path and the hash) instead of the hash alone.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `cocoon attest` command.
pub async fn run(command: AttestCommand) -> anyhow::Result<()> {
    match command {
        AttestCommand::GenCert(args) => gen_cert(args),
        AttestCommand::Show(args) => show(args),
        AttestCommand::Verify(args) => verify(args).await,
        AttestCommand::ImageHash(args) => {
            let hash = own_image_hash(&args.attestation)?.to_string();
            print_result(
                args.json,
                &hash,
                json!({ "tee": args.attestation.tee, "image_hash": hash }),
            )
        }
        AttestCommand::ModelHash(args) => {
            let path = args.path.clone();
            let hash =
                tokio::task::spawn_blocking(move || cocoon_tee::weights::weights_sha256(&path))
                    .await??;
            print_result(
                args.json,
                &hash,
                json!({ "path": args.path, "model_hash": hash }),
            )
        }
    }
}

fn gen_cert(args: GenCertArgs) -> anyhow::Result<()> {
    let attester = attester_for(&args.attestation)?;
    let claims = args
        .claims
        .iter()
        .map(|claim| {
            claim
                .split_once('=')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .with_context(|| format!("`{claim}` is not KEY=VALUE"))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let identity = Identity::generate(
        attester.as_ref(),
        &args.role,
        claims,
        Duration::from_secs(args.validity_secs),
    )?;
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", identity.certificate_der()));
    std::fs::write(&args.out, pem).with_context(|| format!("writing {}", args.out.display()))?;
    let fingerprint = hex::encode(identity.fingerprint());
    print_result(
        args.json,
        &fingerprint,
        json!({ "out": args.out, "fingerprint": fingerprint }),
    )
}

/// Prints `text`, or `json` (pretty) with `--json`.
fn print_result(as_json: bool, text: &str, json: serde_json::Value) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let der = read_certificate(&args.file)?;
    let contents = inspect_certificate(&der)?;
    let verified = Verifier::new().verify(&contents.quote);
    let report = json!({
        "fingerprint": hex::encode(contents.fingerprint),
        "public_key": hex::encode(contents.public_key),
        "not_before": unix(contents.not_before),
        "not_after": unix(contents.not_after),
        "claims": contents.claims,
        "quote": {
            "kind": contents.quote.kind,
            "verifies": verified.is_ok(),
            "error": verified.as_ref().err().map(ToString::to_string),
            "image_hash": verified.as_ref().ok().map(|q| q.image_hash.to_string()),
            "measurements": verified.as_ref().ok().map(|q| &q.measurements),
        },
    });
    print_report(&report, args.json)
}

/// A verifier for `quotes`: `tdx` ones get their DCAP collateral fetched from `pccs_url` first.
pub async fn verifier_for(quotes: &[&Quote], pccs_url: &str) -> anyhow::Result<Verifier> {
    let collateral = Arc::new(CollateralSource::pccs(PccsConfig::new(pccs_url))?);
    for quote in quotes.iter().filter(|q| q.kind == AttestationKind::Tdx) {
        collateral
            .prefetch(&quote.bytes)
            .await
            .with_context(|| format!("fetching TDX collateral from {pccs_url}"))?;
    }
    Ok(Verifier::new().with_tdx(Arc::new(TdxQuoteVerifier::new(collateral))))
}

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let der = read_certificate(&args.file)?;
    let verifier = match inspect_certificate(&der) {
        Ok(contents) => verifier_for(&[&contents.quote], &args.pccs_url).await?,
        // Verification reports what is wrong with it.
        Err(_) => Verifier::new(),
    };
    let policy = Policy {
        allowed_image_hashes: args
            .allow_image
            .iter()
            .map(|hash| {
                hash.trim()
                    .parse::<ImageHash>()
                    .map_err(|_| anyhow::anyhow!("`{hash}` is not an image hash"))
            })
            .collect::<anyhow::Result<_>>()?,
        min_kind: args.min_kind,
    };
    let now = args
        .at
        .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
        .unwrap_or_else(SystemTime::now);
    match verify_certificate(&der, &verifier, &policy, now) {
        Ok(peer) => print_result(
            args.json,
            &format!(
                "valid: {} image {} ({})",
                peer.claims.role, peer.image_hash, peer.kind
            ),
            json!({"valid": true, "peer": serde_json::to_value(&peer)?}),
        ),
        Err(error) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"valid": false, "error": error.to_string()})
                    )?
                );
            }
            bail!("certificate rejected: {error}")
        }
    }
}

/// A certificate file's DER, from PEM or DER.
fn read_certificate(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        let pem =
            pem::parse(&bytes).with_context(|| format!("{} is not valid PEM", path.display()))?;
        return Ok(pem.into_contents());
    }
    Ok(bytes)
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn print_report(report: &serde_json::Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let quote = &report["quote"];
    println!(
        "fingerprint  {}",
        report["fingerprint"].as_str().unwrap_or_default()
    );
    println!(
        "public key   {}",
        report["public_key"].as_str().unwrap_or_default()
    );
    println!(
        "valid        {} .. {} (unix)",
        report["not_before"], report["not_after"]
    );
    println!(
        "role         {}",
        report["claims"]["role"].as_str().unwrap_or_default()
    );
    if let Some(attributes) = report["claims"]["attributes"].as_object() {
        for (key, value) in attributes {
            println!(
                "claim        {key} = {}",
                value.as_str().unwrap_or_default()
            );
        }
    }
    println!(
        "quote        {} ({})",
        quote["kind"].as_str().unwrap_or_default(),
        if quote["verifies"] == true {
            "verifies"
        } else {
            "does NOT verify"
        }
    );
    if let Some(hash) = quote["image_hash"].as_str() {
        println!("image hash   {hash}");
    }
    if let Some(error) = quote["error"].as_str() {
        println!("quote error  {error}");
    }
    Ok(())
}
