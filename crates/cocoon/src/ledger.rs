//! `cocoon ledger`: the local settlement ledger (same rules as the on-chain contracts), served over
//! HTTP/JSON until Ctrl-C or SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use cocoon_ledger::LedgerConfig;
use cocoon_proto::clock::SystemClock;

/// Serves the ledger described by `config` until a shutdown signal.
pub async fn run(config: LedgerConfig) -> anyhow::Result<()> {
    let handle = cocoon_ledger::spawn(&config, Arc::new(SystemClock))
        .await
        .context("starting the ledger")?;
    println!("ledger listening on {}", handle.url());
    cocoon_node::shutdown::on_signal().cancelled().await;
    handle.shutdown().await.context("stopping the ledger")
}
