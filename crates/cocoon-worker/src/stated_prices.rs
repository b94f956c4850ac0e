//! What an answer earns this worker, at the prices its proxy stated (`x-cocoon-prices`).
//!
//! The proxy names the prices it bills at, and the worker signs them into the receipt. At the
//! registry's prices (now, or just before its last change) the answer earns what those prices
//! pay. At prices the registry does not know — a proxy that saw a newer registry version first
//! (on a chain, nodes poll seconds apart), or one stating a fee of its own — it earns no less
//! than the known prices pay for the same usage: a proxy cannot lower the worker's share by
//! stating a lower fee, because the worker then counts more than the proxy vouches for, and stops
//! serving it once its vouchers fall more than `--max-unvouched` behind
//! ([`crate::settlement::WorkerSettlement::refusal`]). A proxy ahead of this worker by a
//! registry version that lowered the fee looks behind by the difference on the few seconds of
//! answers until the worker reads that version too, which the bound absorbs.

use std::sync::Arc;

use cocoon_money::{AccountId, Amount, Cost, Prices};
use cocoon_node::prices::KnownPrices;
use cocoon_node::serve::LogThrottle;
use cocoon_proto::TokenUsage;
use tokio::sync::watch;

/// The registry's prices, against which a proxy's stated prices are taken.
pub struct StatedPrices {
    known: KnownPrices,
    /// Answers at unknown prices, logged at most once a second.
    unknown_log: LogThrottle,
}

impl StatedPrices {
    /// Follows the registry's `prices`.
    pub fn new(prices: watch::Receiver<Arc<Prices>>) -> Self {
        Self {
            known: KnownPrices::new(prices),
            unknown_log: LogThrottle::per_second(),
        }
    }

    /// What an answer that used `usage` at `coefficient` earns, given its `cost` at the `stated`
    /// prices of the proxy of contract `proxy`: that cost's pay, and at unknown prices at least
    /// what the known prices pay for the same usage.
    pub fn earned(
        &self,
        proxy: &AccountId,
        stated: &Prices,
        usage: &TokenUsage,
        coefficient: u32,
        cost: &Cost,
    ) -> Amount {
        if self.known.knows(stated) {
            return cost.worker_pay;
        }
        let least = self.known.least_worker_pay_for(usage, coefficient);
        if least > cost.worker_pay {
            if let Some(held_back) = self.unknown_log.admit() {
                tracing::warn!(
                    %proxy,
                    stated_pay = cost.worker_pay,
                    counted = least,
                    held_back,
                    "a proxy states prices the registry does not know, paying this worker less \
                     than the registry's prices do; counting the registry's pay (a proxy that \
                     vouches less falls behind and is no longer served)"
                );
            }
        }
        cost.worker_pay.max(least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocoon_money::price;

    fn fee(worker_fee_per_token: Amount) -> Prices {
        Prices {
            worker_fee_per_token,
            ..Prices::default()
        }
    }

    const USAGE: TokenUsage = TokenUsage {
        prompt_tokens: 12,
        completion_tokens: 30,
        cached_tokens: 0,
        reasoning_tokens: 0,
    };

    fn earned_at(rule: &StatedPrices, stated: &Prices) -> Amount {
        let cost = price(&USAGE, 1_000, stated).unwrap();
        rule.earned(&AccountId([7; 32]), stated, &USAGE, 1_000, &cost)
    }

    fn pay_at(prices: &Prices) -> Amount {
        price(&USAGE, 1_000, prices).unwrap().worker_pay
    }

    #[test]
    fn a_proxy_stating_a_lower_fee_than_the_registry_is_counted_at_the_registry_fee() {
        let (_registry, watched) = watch::channel(Arc::new(fee(800)));
        let rule = StatedPrices::new(watched);
        assert!(pay_at(&fee(800)) > 0);
        // The registry's prices: their pay.
        assert_eq!(earned_at(&rule, &fee(800)), pay_at(&fee(800)));
        // A fee of the proxy's own, lower (down to nothing): the registry's pay is still owed.
        assert_eq!(earned_at(&rule, &fee(0)), pay_at(&fee(800)));
        assert_eq!(earned_at(&rule, &fee(500)), pay_at(&fee(800)));
        // Higher than the registry's: the proxy says it owes more, and is held to it.
        assert_eq!(earned_at(&rule, &fee(900)), pay_at(&fee(900)));
    }

    #[test]
    fn prices_just_before_a_registry_change_earn_what_they_pay() {
        let (registry, watched) = watch::channel(Arc::new(fee(800)));
        let rule = StatedPrices::new(watched);
        registry.send_replace(Arc::new(fee(600)));
        // A request priced just before the change, at the previous (known) fee.
        assert_eq!(earned_at(&rule, &fee(800)), pay_at(&fee(800)));
        assert_eq!(earned_at(&rule, &fee(600)), pay_at(&fee(600)));
        // Unknown prices earn at least the lesser of the two known fees' pay.
        assert_eq!(earned_at(&rule, &fee(0)), pay_at(&fee(600)));
    }
}
