//! The worker's configuration: one TOML file, every key also a flag.

use std::path::PathBuf;

use cocoon_node::attestation::AttestationArgs;
use cocoon_node::registry_trust::{RegistryTrust, TrustError};
use cocoon_node::serve::HttpLimits;
use cocoon_tee::AttestationKind;
use serde::{Deserialize, Serialize};

/// Everything a worker needs to serve a model to proxies.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// Proxies to serve (host:port of their worker port; repeat or separate with commas). Empty:
    /// every proxy the registry lists, followed live. The worker dials each and keeps the links up.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub proxy: Vec<String>,
    /// Image hashes of proxies this worker accepts (hex; repeat or separate with commas). Empty:
    /// the registry's allowed proxy images (any, if it lists none), followed live; a proxy whose
    /// image is revoked is disconnected.
    #[arg(long, value_name = "HASH", value_delimiter = ',')]
    pub allow_proxy_image: Vec<String>,
    /// The weakest attestation accepted from proxies (`none`, `fake`, `tdx`). Anything below
    /// `tdx` proves nothing (anyone can make a `fake` quote): development only, and the node says
    /// so at start and in `/jsonstats`.
    #[arg(long, default_value = "tdx", value_name = "KIND")]
    pub min_peer_tee: AttestationKind,
    /// The inference engine: `embedded` (llama.cpp inside the worker, serving `--model-path`),
    /// `synthetic` (a fixed-rate token stream for benchmarks and tests, not a model), or the base
    /// URL of an OpenAI-compatible server such as vLLM, SGLang, llama.cpp or Ollama
    /// (e.g. `http://127.0.0.1:8000`).
    #[arg(long, value_name = "ENGINE", default_value = "embedded")]
    pub engine: String,
    /// Allow an engine URL that is not a loopback address. Prompts then cross the host's network
    /// in clear, outside this worker's TEE; the URL is in the worker's attested claims, and proxies
    /// admit such a worker only with `--accept-remote-engines`. Off by default.
    #[arg(long)]
    #[serde(default)]
    pub allow_remote_engine: bool,
    /// The model name requests must carry. For `embedded` it defaults to the GGUF file's name.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub model: String,
    /// The weights served. `embedded`: the GGUF model file (empty: the default model,
    /// SmolLM2-135M-Instruct, fetched once into the user's model cache). An engine URL: the file or
    /// directory (e.g. a Hugging Face snapshot) the engine loaded, so the worker can attest their
    /// SHA-256 (`cocoon attest model-hash PATH`); without it the worker attests no model hash, and
    /// only proxies that list no models admit it. Hashes are cached beside the files.
    #[arg(long, value_name = "PATH", default_value = "")]
    pub model_path: String,
    /// `embedded` engine: serve a private copy of the model made in this directory, hashed as it is
    /// written, so the bytes served are the bytes attested even if the host rewrites the file
    /// afterwards. Inside a TD it must be TD-private memory (budget the model's size in RAM). Empty:
    /// `/dev/shm` for `--tee tdx`; no copy otherwise (the file is served as it is, its hash read
    /// from the sidecar cache).
    #[arg(long, value_name = "DIR", default_value = "")]
    #[serde(default)]
    pub weights_copy_dir: String,
    /// Context window per sequence of the `embedded` engine, in tokens.
    #[arg(long, value_name = "TOKENS", default_value_t = 4096)]
    pub context_length: u32,
    /// Price coefficient: 1000 = 1.0× the network's base price per token.
    #[arg(long, value_name = "C", default_value_t = 1000)]
    pub coefficient: u32,
    /// Requests served at once; more are refused with 429 and the proxy routes elsewhere. For the
    /// `embedded` engine this is also its number of parallel sequences.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_active: u32,
    /// Address of this worker's `/healthz`, `/stats`, `/jsonstats` and `/metrics`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:12000")]
    pub stats_listen: String,
    /// On Ctrl-C or SIGTERM, seconds the requests in flight may take to finish: the proxies are
    /// told at once to send no more (HTTP/2 GOAWAY) and route to other workers, and the worker
    /// exits when its last answer ends or this runs out. 0: stop at once. A second Ctrl-C stops at
    /// once too.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_secs: u64,
    /// Largest request body accepted from a proxy, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Synthetic engine only: bytes of text in each streamed chunk.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub synthetic_chunk_bytes: usize,
    /// Synthetic engine only: microseconds between chunks (0 = as fast as possible).
    #[arg(long, value_name = "MICROS", default_value_t = 0)]
    pub synthetic_interval_us: u64,
    /// Base URL of the ledger where this worker claims its earnings.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:13000")]
    pub ledger: String,
    /// The registry owner's account (64 hex digits; `cocoon registry keygen` prints it). Every
    /// registry version must carry its signature and never be older than the last one accepted.
    /// Required unless every list this node would take from the registry is given as a flag.
    #[arg(long, value_name = "ACCOUNT", default_value = "")]
    #[serde(default)]
    pub registry_owner: String,
    /// Directory of the worker's sealed wallet key.
    #[arg(long, value_name = "DIR", default_value = "cocoon-data/worker")]
    pub data_dir: PathBuf,
    /// Where earnings are paid: an account you control (64 hex digits, as `cocoon wallet address`
    /// prints it). Proxies name it in this worker's vouchers and claims pay it. The worker then
    /// keeps no key on disk: the key that signs its claims is made at each start and never stored,
    /// so a `tdx` worker needs no sealing service, and several workers can share one account.
    /// Empty: the worker's own wallet, sealed in `--data-dir`.
    #[arg(long, value_name = "ACCOUNT", default_value = "")]
    pub payout_account: String,
    /// Claim earnings from a proxy once at least this much (nano-units) is claimable.
    #[arg(long, value_name = "AMOUNT", default_value_t = 1_000_000_000)]
    pub claim_threshold: u64,
    /// Milliseconds between checks of what is claimable.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub claim_interval_ms: u64,
    /// Development only: at start, mint what the wallet that claims (this node's key) lacks of
    /// this amount from the ledger's faucet (0: never). On TON that wallet pays the claims' fees.
    #[arg(long, default_value_t = 0, value_name = "AMOUNT")]
    #[serde(default)]
    pub faucet: u64,
    /// Most this worker lets a proxy owe it without a voucher (nano-units): what it earned on
    /// the proxy's links in this run beyond the proxy's vouchers. Beyond it the worker refuses
    /// that proxy's requests until vouchers catch up. Proxies voucher once per settlement round
    /// (5 s by default), so keep it above several rounds of earnings. 10 units by default.
    #[arg(long, value_name = "AMOUNT", default_value_t = 10_000_000_000)]
    #[serde(default = "default_max_unvouched")]
    pub max_unvouched: u64,
    /// Milliseconds an answer that ends while others are still running may wait for them, so
    /// that their receipts are signed together: one signature over the batch's Merkle root
    /// instead of one per answer (each receipt carries its inclusion proof). An answer that ends
    /// while no other runs is signed at once. 0: no answer waits (those that end at the same
    /// moment are still signed together).
    #[arg(long, value_name = "MS", default_value_t = 2)]
    #[serde(default = "default_receipt_batch_ms")]
    pub receipt_batch_ms: u64,
    /// Connection cap and timeouts of this node's HTTP surface (stats).
    #[command(flatten)]
    #[serde(flatten)]
    pub http: HttpLimits,
    /// How this worker attests itself and which proxies it accepts.
    #[command(flatten)]
    #[serde(flatten)]
    pub attestation: AttestationArgs,
}

fn default_receipt_batch_ms() -> u64 {
    2
}

fn default_max_unvouched() -> u64 {
    10_000_000_000
}

impl WorkerConfig {
    /// Where the embedded engine copies its weights before hashing and loading them (see
    /// `--weights-copy-dir`), if anywhere.
    pub fn weights_copy_dir(&self) -> Option<PathBuf> {
        if !self.weights_copy_dir.is_empty() {
            Some(PathBuf::from(&self.weights_copy_dir))
        } else if self.attestation.tee == AttestationKind::Tdx {
            Some(PathBuf::from("/dev/shm"))
        } else {
            None
        }
    }

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
}
