//! The settlement backend the binary's commands and roles run on, built from their flags. Only
//! the local ledger exists today (`--ledger URL`); the roles and commands see it as a
//! [`SettlementBackend`], so a TON backend plugs in here.

use std::sync::Arc;

use cocoon_ledger::LocalLedger;
use cocoon_money::SettlementBackend;

/// The backend at `ledger_url`: the local ledger service there.
pub fn backend(ledger_url: &str) -> Arc<dyn SettlementBackend> {
    Arc::new(LocalLedger::new(ledger_url))
}
