//! The proxy's configuration: one TOML file, every key also a flag.

use cocoon_node::attestation::AttestationArgs;
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
    /// Image hashes of workers this proxy accepts (hex; repeat or separate with commas). Empty: any
    /// image attested at least as strongly as `--min-peer-tee`.
    #[arg(long, value_name = "HASH", value_delimiter = ',')]
    pub allow_worker_image: Vec<String>,
    /// Image hashes of clients this proxy accepts (hex; repeat or separate with commas). Empty: any
    /// image attested at least as strongly as `--min-peer-tee`.
    #[arg(long, value_name = "HASH", value_delimiter = ',')]
    pub allow_client_image: Vec<String>,
    /// Largest request body accepted from a client, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Longest a request may take, in seconds; a client's own `timeout` is capped at this.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub max_request_secs: u64,
    /// How this proxy attests itself, and the weakest attestation it accepts from peers.
    #[command(flatten)]
    #[serde(flatten)]
    pub attestation: AttestationArgs,
}
