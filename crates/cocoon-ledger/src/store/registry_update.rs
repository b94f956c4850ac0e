//! The owner's signed update behind the current registry, found again in the log, so the ledger
//! can serve it (nodes check the document by it, not by the ledger's word).

use super::{corrupt, LedgerStore, StoreError};
use cocoon_money::transaction::{SignedTransaction, TransactionBody};

impl LedgerStore {
    /// The owner's accepted `UpdateRegistry` transaction that set the current registry, so nodes
    /// can check the document without trusting this ledger; `None` for a genesis document, which
    /// no one signed. Reads the log from the newest entry back to the last registry update.
    pub fn current_registry_update(&self) -> Result<Option<SignedTransaction>, StoreError> {
        // The text match only narrows the scan; every candidate is decoded and checked.
        let mut stmt = self.conn.prepare(
            "SELECT tx FROM transactions WHERE tx LIKE '%update_registry%' ORDER BY seq DESC",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let signed: SignedTransaction =
                serde_json::from_str(&row.get::<_, String>(0)?).map_err(corrupt)?;
            let Ok(tx) = signed.verify() else { continue };
            if let TransactionBody::UpdateRegistry { registry } = tx.body {
                let current = &registry == self.state.registry();
                return Ok(current.then_some(signed));
            }
        }
        Ok(None)
    }
}
