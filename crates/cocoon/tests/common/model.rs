//! The real model for end-to-end tests of the embedded engine.

use std::path::PathBuf;

use super::{client, proxy, wait_for_model, worker, Node, ProxyAddrs};

/// The name the test networks serve the model under.
pub const MODEL_NAME: &str = "SmolLM2-135M-Instruct";

/// The model `cocoon model fetch` leaves (or `COCOON_MODEL_PATH`). Without it a test says so and
/// passes, except on CI (`CI` set), where a missing model is a failure.
pub fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("COCOON_MODEL_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| cocoon_infer::default_model_path(&cocoon_infer::default_cache_dir()));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the model is missing at {} (run `cocoon model fetch`)",
        path.display()
    );
    eprintln!("skipped: model not present at {}", path.display());
    None
}

/// Proxy, embedded-engine worker and client, alive as long as this is.
pub struct EmbeddedNetwork {
    _nodes: Vec<Node>,
    /// Owns the proxy's ledger.
    _proxy: ProxyAddrs,
}

/// A network serving the real model (admitted by its hash) from a worker decoding `max_active`
/// sequences at once; `None` (the test then passes) when the model is absent outside CI. Returns
/// the client's API address.
pub async fn embedded_network(max_active: u32) -> Option<(EmbeddedNetwork, String)> {
    let model = model_path()?.display().to_string();
    let allowed = format!("{MODEL_NAME}={}", cocoon_infer::DEFAULT_MODEL_SHA256);
    let (proxy_node, proxy) = proxy(&["--allow-model", &allowed]);
    let max_active = max_active.to_string();
    let (worker_node, _) = worker(
        &proxy,
        &[
            "--engine",
            "embedded",
            "--model-path",
            &model,
            "--max-active",
            &max_active,
            "--context-length",
            "1024",
        ],
    );
    let (client_node, api) = client(&proxy, &[]);
    wait_for_model(&api, MODEL_NAME, 1).await;
    let network = EmbeddedNetwork {
        _nodes: vec![proxy_node, worker_node, client_node],
        _proxy: proxy,
    };
    Some((network, api))
}
