//! What a request holds of its client's balance while it runs, and how much a client may still
//! hold: its balance as last read from the ledger, or while the ledger cannot be reached, only the
//! part of it that cannot leave the contract before the proxy settles (see [`outage_available`]).

use std::sync::Arc;
use std::time::Duration;

use cocoon_money::{AccountId, Amount, ClientContract, Prices};

use super::Billing;

/// Balance a client can still spend: its contract balance, less what was charged but not yet
/// collected on the ledger, less what its requests in flight hold.
pub(super) fn available_balance(
    contract: &ClientContract,
    charged_here: Amount,
    reserved: Amount,
) -> Amount {
    let uncollected = charged_here.saturating_sub(contract.collected);
    contract
        .balance
        .saturating_sub(uncollected)
        .saturating_sub(reserved)
}

/// What a client may still hold while the ledger cannot be reached, from its contract as read
/// `age` ago. Only the stake counts: the part of the balance above it may have been withdrawn
/// since (a client may withdraw it, or start closing, at any time), but the stake stays on the
/// contract for `close_delay` after a close starts, so every charge made within that time can
/// still be collected when the proxy reaches the ledger again. Past `close_delay`, nothing.
/// The proxy's risk in an outage is therefore at most what it charged beyond the stakes, which
/// this bound keeps at zero.
pub(super) fn outage_available(
    contract: &ClientContract,
    charged_here: Amount,
    reserved: Amount,
    age: Duration,
    close_delay: Duration,
) -> Amount {
    if age >= close_delay {
        return 0;
    }
    let guaranteed = ClientContract {
        balance: contract.balance.min(contract.stake),
        ..contract.clone()
    };
    available_balance(&guaranteed, charged_here, reserved)
}

/// A held worst-case amount of a client's balance; released when dropped (a failed or cancelled
/// answer costs nothing), consumed by [`Billing::charge`].
pub struct Reservation {
    billing: Arc<Billing>,
    client: AccountId,
    amount: Amount,
    /// The prices of this request, fixed when it was reserved: the worker is told them, its
    /// receipt states them, and the charge uses them even if the registry changes meanwhile.
    prices: Arc<Prices>,
}

impl Reservation {
    pub(super) fn new(
        billing: Arc<Billing>,
        client: AccountId,
        amount: Amount,
        prices: Arc<Prices>,
    ) -> Self {
        Reservation {
            billing,
            client,
            amount,
            prices,
        }
    }

    /// The paying client.
    pub fn client(&self) -> AccountId {
        self.client
    }

    /// The amount held.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// The prices the request is billed at.
    pub fn prices(&self) -> &Arc<Prices> {
        &self.prices
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.billing.unreserve(self.client, self.amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_money::ContractStatus;

    fn contract(balance: Amount, charged: Amount, collected: Amount) -> ClientContract {
        ClientContract {
            proxy: AccountId([1; 32]),
            client: AccountId([2; 32]),
            balance,
            stake: 10,
            charged,
            collected,
            voucher_seqno: 0,
            status: ContractStatus::Open,
        }
    }

    #[test]
    fn available_balance_subtracts_uncollected_charges_and_reservations() {
        // 100 on the ledger, 30 charged here of which 20 already collected (balance is after
        // collection), 15 held by requests in flight.
        assert_eq!(available_balance(&contract(100, 20, 20), 30, 15), 75);
        // A shortfall on the ledger (charged 40, collected 25) still counts as owed.
        assert_eq!(available_balance(&contract(0, 40, 25), 40, 0), 0);
        assert_eq!(available_balance(&contract(10, 0, 0), 50, 5), 0);
    }

    #[test]
    fn in_an_outage_only_the_stake_as_last_read_covers_and_only_within_the_close_delay() {
        let delay = Duration::from_secs(600);
        let recent = Duration::from_secs(5);
        // Balance 100 with a stake of 10: the 90 above it could be gone; 3 uncollected, 2 held.
        assert_eq!(
            outage_available(&contract(100, 0, 0), 3, 2, recent, delay),
            5
        );
        // A balance below the stake covers only itself.
        assert_eq!(outage_available(&contract(4, 0, 0), 0, 0, recent, delay), 4);
        // Charges beyond what the stake covers leave nothing, never an underflow.
        assert_eq!(
            outage_available(&contract(100, 0, 0), 50, 0, recent, delay),
            0
        );
        // A reading as old as the close delay guarantees nothing: the stake may have left.
        assert_eq!(
            outage_available(&contract(100, 0, 0), 0, 0, delay, delay),
            0
        );
        // It never exceeds what the ledger itself would allow.
        for balance in [0, 5, 10, 50] {
            for charged in [0, 5, 20] {
                let c = contract(balance, 0, 0);
                assert!(
                    outage_available(&c, charged, 1, recent, delay)
                        <= available_balance(&c, charged, 1)
                );
            }
        }
    }
}
