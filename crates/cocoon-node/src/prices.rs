//! The registry's prices a node takes in a peer's statement: those in force now, or those in force
//! just before the last change (a request priced by the proxy a moment before a new registry
//! version reached this node). A statement at other prices may be a peer that saw a newer version
//! first (on a chain, nodes poll seconds apart), or a peer's own prices: [`KnownPrices::most_for`]
//! is the most the known prices make of the same usage, which bounds what such a statement can
//! be worth.

use std::sync::{Arc, Mutex};

use cocoon_money::{price, Amount, Cost, Prices};
use cocoon_proto::TokenUsage;
use tokio::sync::watch;

/// The prices a node accepts, following the registry.
pub struct KnownPrices {
    registry: watch::Receiver<Arc<Prices>>,
    /// The prices seen last, and the ones before them.
    seen: Mutex<(Arc<Prices>, Option<Arc<Prices>>)>,
}

impl KnownPrices {
    /// Follows `registry`'s prices, starting from the current ones.
    pub fn new(registry: watch::Receiver<Arc<Prices>>) -> Self {
        let current = registry.borrow().clone();
        Self {
            registry,
            seen: Mutex::new((current, None)),
        }
    }

    /// The prices in force now.
    pub fn current(&self) -> Arc<Prices> {
        self.registry.borrow().clone()
    }

    /// Whether `prices` are the registry's now, or the ones just before its last change.
    pub fn knows(&self, prices: &Prices) -> bool {
        let current = self.current();
        // Plain data, replaced whole: a panic elsewhere cannot leave it half-written.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen.0 != *current {
            let before = std::mem::replace(&mut seen.0, current.clone());
            seen.1 = Some(before);
        }
        *current == *prices || seen.1.as_deref() == Some(prices)
    }

    /// The most `usage` at `coefficient` costs at the prices known (now, and before the last
    /// change): a client's price, or 0 if no known price can price it.
    pub fn most_for(&self, usage: &TokenUsage, coefficient: u32) -> Amount {
        self.known_costs(usage, coefficient)
            .map(|cost| cost.client_price)
            .max()
            .unwrap_or(0)
    }

    /// The least a worker earns for `usage` at `coefficient` at the prices known (now, and before
    /// the last change), or 0 if no known price can price it: what a statement at unknown prices
    /// owes a worker at least.
    pub fn least_worker_pay_for(&self, usage: &TokenUsage, coefficient: u32) -> Amount {
        self.known_costs(usage, coefficient)
            .map(|cost| cost.worker_pay)
            .min()
            .unwrap_or(0)
    }

    fn known_costs(&self, usage: &TokenUsage, coefficient: u32) -> impl Iterator<Item = Cost> {
        let current = self.current();
        let previous = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone();
        let usage = *usage;
        [Some(current), previous]
            .into_iter()
            .flatten()
            .filter_map(move |prices| price(&usage, coefficient, &prices).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(per_token: u64) -> Prices {
        Prices {
            price_per_token: per_token,
            ..Prices::default()
        }
    }

    #[test]
    fn the_current_and_the_previous_prices_are_known_and_nothing_else() {
        let (registry, watched) = watch::channel(Arc::new(priced(1_000)));
        let known = KnownPrices::new(watched);
        assert!(known.knows(&priced(1_000)));
        assert!(!known.knows(&priced(999)), "prices of the proxy's own");
        // A change: a statement priced just before it is still taken, the first time it is
        // asked about too (nothing needed to look in between).
        registry.send_replace(Arc::new(priced(2_000)));
        assert!(known.knows(&priced(1_000)));
        assert!(known.knows(&priced(2_000)));
        // Two changes on: the oldest is forgotten.
        registry.send_replace(Arc::new(priced(3_000)));
        assert!(known.knows(&priced(2_000)));
        assert!(known.knows(&priced(3_000)));
        assert!(!known.knows(&priced(1_000)));
    }

    #[test]
    fn the_most_known_prices_make_of_a_usage_bounds_a_statement_at_unknown_prices() {
        let (registry, watched) = watch::channel(Arc::new(priced(1_000)));
        let known = KnownPrices::new(watched);
        let usage = TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 20,
            ..TokenUsage::default()
        };
        let at = |per_token| {
            price(&usage, 1_000, &priced(per_token))
                .unwrap()
                .client_price
        };
        assert_eq!(known.most_for(&usage, 1_000), at(1_000));
        registry.send_replace(Arc::new(priced(500)));
        assert!(known.knows(&priced(500)));
        // Cheaper now, dearer before the change: the dearer bounds it.
        assert_eq!(known.most_for(&usage, 1_000), at(1_000));
    }

    #[test]
    fn the_least_known_worker_pay_bounds_what_a_statement_at_unknown_prices_owes_a_worker() {
        let fee = |worker_fee_per_token| Prices {
            worker_fee_per_token,
            ..Prices::default()
        };
        let (registry, watched) = watch::channel(Arc::new(fee(800)));
        let known = KnownPrices::new(watched);
        let usage = TokenUsage {
            prompt_tokens: 10,
            completion_tokens: 20,
            ..TokenUsage::default()
        };
        let pay = |per_token| price(&usage, 1_000, &fee(per_token)).unwrap().worker_pay;
        assert!(pay(800) > 0);
        assert_eq!(known.least_worker_pay_for(&usage, 1_000), pay(800));
        registry.send_replace(Arc::new(fee(600)));
        assert!(known.knows(&fee(600)));
        // Less now, more before the change: the lesser is what is surely owed.
        assert_eq!(known.least_worker_pay_for(&usage, 1_000), pay(600));
        // Usage no known price can price owes nothing by this rule.
        let huge = TokenUsage {
            prompt_tokens: u64::MAX,
            ..TokenUsage::default()
        };
        assert_eq!(known.least_worker_pay_for(&huge, 1_000), 0);
    }
}
