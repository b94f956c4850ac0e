//! The registry's prices a node takes in a peer's statement: those in force now, or those in force
//! just before the last change (a request priced by the proxy a moment before a new registry
//! version reached this node, or the other way round). Anything else is refused: a proxy cannot
//! make a worker count its earnings, or a client pay, at prices of its own.

use std::sync::{Arc, Mutex};

use cocoon_money::Prices;
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
}
