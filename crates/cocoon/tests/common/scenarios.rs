//! Networks that several test files set up the same way.

use super::{client, proxy, wait_for_model, worker, Node, ProxyAddrs};

/// A proxy with a cheap worker (coefficient 500) in front of an engine under test, which routing
/// prefers, beside a dearer healthy one (the synthetic engine), and a client whose API lists both.
pub struct CheapAndHealthy {
    /// The cheap worker.
    pub cheap: Node,
    /// The client's API.
    pub api: String,
    /// The proxy's addresses (holding its ledger).
    pub proxy: ProxyAddrs,
    _nodes: Vec<Node>,
}

/// Starts [`CheapAndHealthy`] with the cheap worker in front of `engine`.
pub async fn cheap_worker_in_front_of(engine: &str) -> CheapAndHealthy {
    let (proxy_node, proxy) = proxy(&[]);
    let cheap_args = [
        "--engine",
        engine,
        "--model",
        "synthetic",
        "--coefficient",
        "500",
    ];
    let (cheap, _) = worker(&proxy, &cheap_args);
    let (healthy, _) = worker(&proxy, &["--coefficient", "1000"]);
    let (client_node, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 2).await;
    CheapAndHealthy {
        cheap,
        api,
        proxy,
        _nodes: vec![proxy_node, healthy, client_node],
    }
}
