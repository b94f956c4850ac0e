//! The newest payment voucher each client signed, kept in the proxy's database so that a proxy
//! killed between settlement rounds still collects for what it served. Rows hold the voucher as
//! JSON; they are written by the charge writer in the same transactions as charges, and read back
//! (and re-verified by [`crate::billing`]) when the proxy starts. A row is filed under the client
//! the proxy accepted the voucher from: the voucher itself names that client's channel, which on
//! some backends is not the client's account (`Settlement::voucher_ids`).

use cocoon_money::{AccountId, SignedVoucher};
use rusqlite::{params, Connection, OptionalExtension};

use super::{account_of, execute_cached, StoreError};

/// One stored row: the client it is filed under, and its voucher if the row decodes.
pub type StoredPayment = (AccountId, Result<SignedVoucher, StoreError>);

/// Keeps `voucher` as `client`'s payment unless the row holds one with the same or a higher
/// seqno (the in-memory rule: never replace a newer voucher with an older one). A row that does
/// not decode is replaced.
pub(super) fn keep_newest(
    db: &Connection,
    client: &AccountId,
    voucher: &SignedVoucher,
) -> Result<(), StoreError> {
    let held: Option<String> = db
        .prepare_cached("SELECT voucher FROM payments WHERE client = ?1")?
        .query_row(params![&client.0[..]], |row| row.get(0))
        .optional()?;
    let held_seqno = held
        .and_then(|json| serde_json::from_str::<SignedVoucher>(&json).ok())
        .map(|held| held.voucher.seqno);
    if held_seqno.is_some_and(|seqno| seqno >= voucher.voucher.seqno) {
        return Ok(());
    }
    let json = serde_json::to_string(voucher)
        .map_err(|e| StoreError::Corrupt(format!("a voucher does not encode: {e}")))?;
    execute_cached(
        db,
        "INSERT INTO payments (client, voucher) VALUES (?1, ?2)
         ON CONFLICT (client) DO UPDATE SET voucher = ?2",
        params![&client.0[..], json],
    )?;
    Ok(())
}

/// Every stored payment; a row that does not decode comes back as its error, so one bad row does
/// not hide the others. Whether a voucher is its row's client's is the caller's check.
pub(super) fn all(db: &Connection) -> Result<Vec<StoredPayment>, StoreError> {
    let mut statement =
        db.prepare_cached("SELECT client, voucher FROM payments ORDER BY client")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut payments = Vec::new();
    for row in rows {
        let (client, json) = row?;
        let Ok(client) = account_of(client) else {
            tracing::warn!("a stored payment's client is not an account; ignored");
            continue;
        };
        let voucher = serde_json::from_str::<SignedVoucher>(&json)
            .map_err(|e| StoreError::Corrupt(format!("a stored payment does not decode: {e}")));
        payments.push((client, voucher));
    }
    Ok(payments)
}

#[cfg(test)]
mod tests {
    use super::super::BillingStore;
    use super::*;
    use cocoon_money::{Voucher, VoucherIds};
    use ed25519_dalek::SigningKey;

    fn voucher(client: &SigningKey, cumulative: u64, seqno: u64) -> SignedVoucher {
        let ids = VoucherIds::accounts(AccountId([7; 32]), AccountId::from(client));
        Voucher::client_pay(client, ids, cumulative, seqno)
    }

    /// A payment as the charge writer files it: under its client.
    fn pay(client: &SigningKey, cumulative: u64, seqno: u64) -> (AccountId, SignedVoucher) {
        (AccountId::from(client), voucher(client, cumulative, seqno))
    }

    fn stored(store: &BillingStore) -> Vec<(AccountId, Option<SignedVoucher>)> {
        store
            .payments()
            .unwrap()
            .into_iter()
            .map(|(client, voucher)| (client, voucher.ok()))
            .collect()
    }

    /// A new database in a directory the caller keeps alive, and two clients' keys.
    fn fresh_store() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        BillingStore,
        [SigningKey; 2],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sqlite3");
        let store = BillingStore::open(&path).unwrap();
        let keys = [1, 2].map(|seed| SigningKey::from_bytes(&[seed; 32]));
        (dir, path, store, keys)
    }

    #[test]
    fn the_newest_payment_per_client_survives_reopening_and_an_older_one_never_replaces_it() {
        let (_dir, path, mut store, [alice, bob]) = fresh_store();
        // Out of order within one commit and across commits: seqno decides, not arrival.
        store
            .record(
                &[],
                &[
                    pay(&alice, 100, 1),
                    pay(&alice, 300, 3),
                    pay(&alice, 200, 2),
                ],
            )
            .unwrap();
        store.record(&[], &[pay(&bob, 50, 1)]).unwrap();
        store.record(&[], &[pay(&alice, 250, 2)]).unwrap();
        drop(store);

        let mut store = BillingStore::open(&path).unwrap();
        let alice_id = AccountId::from(&alice);
        let bob_id = AccountId::from(&bob);
        let mut expected = vec![
            (alice_id, Some(voucher(&alice, 300, 3))),
            (bob_id, Some(voucher(&bob, 50, 1))),
        ];
        expected.sort_by_key(|(client, _)| *client);
        assert_eq!(stored(&store), expected);
        store.record(&[], &[pay(&alice, 400, 4)]).unwrap();
        assert!(stored(&store).contains(&(alice_id, Some(voucher(&alice, 400, 4)))));
    }

    #[test]
    fn a_corrupted_row_comes_back_as_an_error_and_is_replaced_by_the_next_payment() {
        let (_dir, path, mut store, [alice, bob]) = fresh_store();
        store
            .record(&[], &[pay(&alice, 100, 5), pay(&bob, 50, 1)])
            .unwrap();
        let alice_id = AccountId::from(&alice);
        let bob_id = AccountId::from(&bob);
        // Someone edits the file: garbage in one row, another client's voucher in the other
        // (which decodes: that it is not Bob's is for the billing to find, with the ids the
        // settlement backend gives).
        let db = Connection::open(&path).unwrap();
        db.execute(
            "UPDATE payments SET voucher = '{\"voucher\":' WHERE client = ?1",
            params![&alice_id.0[..]],
        )
        .unwrap();
        let alices = serde_json::to_string(&voucher(&alice, 999, 9)).unwrap();
        db.execute(
            "UPDATE payments SET voucher = ?1 WHERE client = ?2",
            params![alices, &bob_id.0[..]],
        )
        .unwrap();
        drop(db);

        let mut store = BillingStore::open(&path).unwrap();
        let rows = store.payments().unwrap();
        assert_eq!(rows.len(), 2);
        for (client, stored) in &rows {
            if *client == alice_id {
                assert!(matches!(stored, Err(StoreError::Corrupt(_))), "{stored:?}");
            } else {
                assert_eq!(stored.as_ref().ok(), Some(&voucher(&alice, 999, 9)));
            }
        }
        // The garbage row does not block a real payment (whatever seqno it claimed).
        store.record(&[], &[pay(&alice, 120, 1)]).unwrap();
        assert!(stored(&store).contains(&(alice_id, Some(voucher(&alice, 120, 1)))));
    }
}
