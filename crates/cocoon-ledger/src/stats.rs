//! The ledger's monitoring surfaces: human `/stats` text and Prometheus `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::LedgerStats;

/// Renders `stats` as a few human-readable lines.
pub fn stats_text(stats: &LedgerStats) -> String {
    format!(
        "cocoon ledger\n\
         last transaction: {}\n\
         supply: {} (holdings {}{})\n\
         accounts: {}\n\
         contracts: {} proxy, {} client, {} worker\n\
         registry version: {} ({} watching)\n\
         faucet: {}\n\
         clock: {}\n",
        stats.last_seq,
        stats.supply,
        stats.holdings_total,
        if stats.holdings_total == u128::from(stats.supply) {
            ""
        } else {
            " — MISMATCH"
        },
        stats.accounts,
        stats.proxy_contracts,
        stats.client_contracts,
        stats.worker_contracts,
        stats.registry_version,
        stats.registry_watchers,
        if stats.faucet_enabled { "on" } else { "off" },
        stats.now,
    )
}

/// Renders `stats` in the Prometheus text exposition format.
pub fn metrics_text(stats: &LedgerStats) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("cocoon_ledger");
    // Amounts can exceed i64, so every gauge is a float.
    let gauges: [(&str, &str, f64); 9] = [
        (
            "last_seq",
            "Sequence number of the last accepted transaction",
            stats.last_seq as f64,
        ),
        (
            "supply",
            "Total money in existence, nano-units",
            stats.supply as f64,
        ),
        (
            "holdings",
            "Sum of all holdings, nano-units (equals supply)",
            stats.holdings_total as f64,
        ),
        ("accounts", "Number of accounts", stats.accounts as f64),
        (
            "proxy_contracts",
            "Number of proxy contracts",
            stats.proxy_contracts as f64,
        ),
        (
            "client_contracts",
            "Number of client contracts",
            stats.client_contracts as f64,
        ),
        (
            "worker_contracts",
            "Number of worker contracts",
            stats.worker_contracts as f64,
        ),
        (
            "registry_version",
            "Current registry version",
            stats.registry_version as f64,
        ),
        (
            "registry_watchers",
            "Registry long polls waiting now",
            stats.registry_watchers as f64,
        ),
    ];
    for (name, help, value) in gauges {
        let gauge = Gauge::<f64, AtomicU64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> LedgerStats {
        LedgerStats {
            last_seq: 12,
            supply: 5_000,
            holdings_total: 5_000,
            accounts: 3,
            proxy_contracts: 1,
            client_contracts: 2,
            worker_contracts: 4,
            registry_version: 7,
            registry_watchers: 2,
            faucet_enabled: true,
            now: 99,
        }
    }

    #[test]
    fn metrics_carry_every_figure() {
        let text = metrics_text(&stats()).unwrap();
        assert!(text.contains("cocoon_ledger_supply 5000"), "{text}");
        assert!(text.contains("cocoon_ledger_worker_contracts 4"), "{text}");
        assert!(text.contains("# HELP cocoon_ledger_last_seq"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn stats_text_flags_a_holdings_mismatch() {
        assert!(!stats_text(&stats()).contains("MISMATCH"));
        let broken = LedgerStats {
            holdings_total: 1,
            ..stats()
        };
        assert!(stats_text(&broken).contains("MISMATCH"));
    }
}
