//! Whether the client can serve a request now, for its `/healthz`: a proxy is linked, that proxy
//! lists a model with a worker, and this client's contract with that proxy is open with money
//! available. A load balancer or `cocoon dev` that waits for 200 can then send a request at once.

use std::sync::Arc;
use std::time::Duration;

use cocoon_money::AccountId;
use cocoon_node::link::get_json;
use cocoon_node::stats::Readiness;
use cocoon_proto::link::{ModelList, PATH_MODELS};
use futures::future::BoxFuture;

use crate::link::ProxyLinks;
use crate::settlement::ClientSettlement;

/// How long the proxy may take to list its models before the client counts as not ready.
const MODELS_TIMEOUT: Duration = Duration::from_secs(5);

/// The client's readiness check over its proxy links and its settlement.
pub fn readiness(links: Arc<ProxyLinks>, settlement: Arc<ClientSettlement>) -> Readiness {
    Arc::new(move || -> BoxFuture<'static, Result<(), String>> {
        let (links, settlement) = (links.clone(), settlement.clone());
        Box::pin(async move { check(&links, &settlement).await })
    })
}

async fn check(links: &ProxyLinks, settlement: &ClientSettlement) -> Result<(), String> {
    let link = links.current().ok_or("no proxy linked yet")?;
    let listed = tokio::time::timeout(
        MODELS_TIMEOUT,
        get_json::<ModelList>(&link.sender, PATH_MODELS),
    )
    .await
    .map_err(|_| {
        format!(
            "the proxy {} did not list its models within {MODELS_TIMEOUT:?}",
            link.proxy
        )
    })?
    .map_err(|error| format!("the proxy {} did not list its models: {error}", link.proxy))?;
    if !listed.models.iter().any(|model| model.workers > 0) {
        return Err(format!(
            "the proxy {} has no worker for any model yet",
            link.proxy
        ));
    }
    let proxy = cocoon_node::wallet::peer_wallet(&link.peer)
        .and_then(|wallet| wallet.parse::<AccountId>().ok())
        .ok_or_else(|| format!("the proxy {} names no wallet", link.proxy))?;
    settlement.funded_with(proxy)
}
