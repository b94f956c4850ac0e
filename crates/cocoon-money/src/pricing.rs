//! Request pricing: adjusted tokens, the client's price, the worker's pay and the proxy's commission.
//!
//! Rounding rule: for each token kind the exact adjusted amount is
//! `tokens × c × mult / (1000 × 10 000)`; the four are summed exactly (as a fraction over
//! 10 000 000) and the sum is rounded **down** once, giving whole adjusted tokens. Both the
//! client's price and the worker's pay are that same whole number times their per-token price, so
//! the commission `adjusted × (price_per_token − worker_fee_per_token)` is never negative and any
//! fraction lost to rounding is in the client's favour. Cached tokens beyond the prompt (or reasoning
//! beyond the completion) are clamped, so a bad engine report never bills more than was served.

use cocoon_proto::usage::TokenUsage;
use serde::{Deserialize, Serialize};

use crate::registry::{Amount, Prices};

/// Worker coefficient meaning 1.0× (coefficients are per 1000).
pub const COEFFICIENT_ONE: u32 = 1_000;
/// Multiplier meaning 1.0× (multipliers are per 10 000).
pub const MULTIPLIER_ONE: u32 = 10_000;

/// Everything a priced request costs, in nano-units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Whole adjusted tokens (after coefficient, multipliers and rounding down).
    pub adjusted_tokens: u64,
    /// What the client pays.
    pub client_price: Amount,
    /// What the worker earns.
    pub worker_pay: Amount,
    /// What the proxy keeps: `client_price − worker_pay`.
    pub commission: Amount,
}

/// Why a price could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The result does not fit in an [`Amount`].
    #[error("price overflows a 64-bit amount")]
    Overflow,
    /// The prices would make the proxy's commission negative.
    #[error("worker_fee_per_token {fee} exceeds price_per_token {price}")]
    FeeAbovePrice {
        /// The worker fee per token.
        fee: Amount,
        /// The client price per token.
        price: Amount,
    },
}

/// Prices a served request: `usage` from the engine, `coefficient` of the worker (1000 = 1.0×).
pub fn price(usage: &TokenUsage, coefficient: u32, prices: &Prices) -> Result<Cost, PricingError> {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let reasoning = usage.reasoning_tokens.min(usage.completion_tokens);
    let counts = [
        (usage.prompt_tokens - cached, prices.prompt_multiplier),
        (cached, prices.cached_multiplier),
        (
            usage.completion_tokens - reasoning,
            prices.completion_multiplier,
        ),
        (reasoning, prices.reasoning_multiplier),
    ];
    cost_of(&counts, coefficient, prices)
}

/// The most a request may cost: every prompt token at the dearer of the prompt and cached
/// multipliers, `max_tokens` completion tokens at the dearer of completion and reasoning, on a worker
/// at `max_coefficient`. The proxy reserves this before forwarding.
pub fn worst_case_cost(
    prompt_tokens: u64,
    max_tokens: u64,
    max_coefficient: u32,
    prices: &Prices,
) -> Result<Cost, PricingError> {
    let counts = [
        (
            prompt_tokens,
            prices.prompt_multiplier.max(prices.cached_multiplier),
        ),
        (
            max_tokens,
            prices
                .completion_multiplier
                .max(prices.reasoning_multiplier),
        ),
    ];
    cost_of(&counts, max_coefficient, prices)
}

/// Applies the module's rounding rule to `(tokens, multiplier)` pairs.
fn cost_of(counts: &[(u64, u32)], coefficient: u32, prices: &Prices) -> Result<Cost, PricingError> {
    if prices.worker_fee_per_token > prices.price_per_token {
        return Err(PricingError::FeeAbovePrice {
            fee: prices.worker_fee_per_token,
            price: prices.price_per_token,
        });
    }
    let mut numerator: u128 = 0;
    for &(tokens, mult) in counts {
        // u64 × u32 × u32 < 2^128, so the products cannot overflow; only the sum can.
        let term = u128::from(tokens) * u128::from(coefficient) * u128::from(mult);
        numerator = numerator.checked_add(term).ok_or(PricingError::Overflow)?;
    }
    let denominator = u128::from(COEFFICIENT_ONE) * u128::from(MULTIPLIER_ONE);
    let adjusted = numerator / denominator;
    let times = |per_token: Amount| -> Result<Amount, PricingError> {
        adjusted
            .checked_mul(u128::from(per_token))
            .and_then(|v| Amount::try_from(v).ok())
            .ok_or(PricingError::Overflow)
    };
    let client_price = times(prices.price_per_token)?;
    let worker_pay = times(prices.worker_fee_per_token)?;
    Ok(Cost {
        adjusted_tokens: u64::try_from(adjusted).map_err(|_| PricingError::Overflow)?,
        client_price,
        worker_pay,
        // Cannot underflow: same adjusted count, fee ≤ price (checked above).
        commission: client_price - worker_pay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            cached_tokens: cached,
            completion_tokens: completion,
            reasoning_tokens: reasoning,
        }
    }

    #[test]
    fn worked_example_matches_the_formula() {
        let prices = Prices {
            price_per_token: 100,
            worker_fee_per_token: 70,
            prompt_multiplier: 10_000,
            cached_multiplier: 2_500,
            completion_multiplier: 20_000,
            reasoning_multiplier: 30_000,
        };
        // c = 1.5×: prompt 80 × 1.5 × 1 = 120, cached 20 × 1.5 × 0.25 = 7.5,
        // completion 40 × 1.5 × 2 = 120, reasoning 10 × 1.5 × 3 = 45 → 292.5 → 292.
        let cost = price(&usage(100, 20, 50, 10), 1_500, &prices).unwrap();
        assert_eq!(cost.adjusted_tokens, 292);
        assert_eq!(cost.client_price, 29_200);
        assert_eq!(cost.worker_pay, 20_440);
        assert_eq!(cost.commission, 8_760);
    }

    #[test]
    fn cached_beyond_prompt_is_clamped() {
        let prices = Prices::default();
        let honest = price(&usage(10, 10, 5, 5), 1_000, &prices).unwrap();
        let bogus = price(&usage(10, 999, 5, 999), 1_000, &prices).unwrap();
        assert_eq!(honest, bogus);
    }

    #[test]
    fn huge_inputs_report_overflow_instead_of_panicking() {
        let prices = Prices {
            price_per_token: u64::MAX,
            worker_fee_per_token: 0,
            ..Prices::default()
        };
        let err = price(&usage(u64::MAX, 0, u64::MAX, 0), u32::MAX, &prices);
        assert_eq!(err, Err(PricingError::Overflow));
        assert_eq!(
            worst_case_cost(u64::MAX, u64::MAX, u32::MAX, &prices),
            Err(PricingError::Overflow)
        );
    }

    #[test]
    fn fee_above_price_is_an_error() {
        let prices = Prices {
            price_per_token: 1,
            worker_fee_per_token: 2,
            ..Prices::default()
        };
        assert!(matches!(
            price(&usage(1, 0, 1, 0), 1_000, &prices),
            Err(PricingError::FeeAbovePrice { .. })
        ));
    }

    fn arb_prices() -> impl Strategy<Value = Prices> {
        (
            0u64..1_000_000,
            0u64..=1_000_000,
            proptest::array::uniform4(0u32..100_000),
        )
            .prop_map(|(fee, extra, m)| Prices {
                price_per_token: fee + extra,
                worker_fee_per_token: fee,
                prompt_multiplier: m[0],
                cached_multiplier: m[1],
                completion_multiplier: m[2],
                reasoning_multiplier: m[3],
            })
    }

    fn arb_usage() -> impl Strategy<Value = TokenUsage> {
        (
            0u64..1_000_000,
            0u64..1_000_000,
            0u64..1_000_000,
            0u64..1_000_000,
        )
            .prop_map(|(p, c, o, r)| usage(p, c.min(p), o, r.min(o)))
    }

    proptest! {
        #[test]
        fn commission_is_never_negative(u in arb_usage(), c in 0u32..100_000, prices in arb_prices()) {
            let cost = price(&u, c, &prices).unwrap();
            prop_assert_eq!(cost.client_price, cost.worker_pay + cost.commission);
            prop_assert!(cost.worker_pay <= cost.client_price);
        }

        #[test]
        fn more_tokens_of_any_kind_never_cost_less(
            u in arb_usage(), c in 0u32..100_000, prices in arb_prices(),
            kind in 0usize..4, extra in 0u64..10_000,
        ) {
            let mut more = u;
            match kind {
                0 => more.prompt_tokens += extra,
                1 => { more.prompt_tokens += extra; more.cached_tokens += extra; }
                2 => more.completion_tokens += extra,
                _ => { more.completion_tokens += extra; more.reasoning_tokens += extra; }
            }
            let a = price(&u, c, &prices).unwrap();
            let b = price(&more, c, &prices).unwrap();
            prop_assert!(b.client_price >= a.client_price);
            prop_assert!(b.worker_pay >= a.worker_pay);
            prop_assert!(b.commission >= a.commission);
        }

        #[test]
        fn higher_coefficient_never_costs_less(
            u in arb_usage(), c in 0u32..100_000, extra in 0u32..100_000, prices in arb_prices(),
        ) {
            let a = price(&u, c, &prices).unwrap();
            let b = price(&u, c + extra, &prices).unwrap();
            prop_assert!(b.client_price >= a.client_price);
            prop_assert!(b.worker_pay >= a.worker_pay);
        }

        #[test]
        fn rounding_loses_less_than_one_adjusted_token(
            u in arb_usage(), c in 0u32..100_000, prices in arb_prices(),
        ) {
            let cost = price(&u, c, &prices).unwrap();
            let exact = |t: u64, m: u32| t as f64 * f64::from(c) * f64::from(m) / 1e7;
            let cached = u.cached_tokens;
            let reasoning = u.reasoning_tokens;
            let total = exact(u.prompt_tokens - cached, prices.prompt_multiplier)
                + exact(cached, prices.cached_multiplier)
                + exact(u.completion_tokens - reasoning, prices.completion_multiplier)
                + exact(reasoning, prices.reasoning_multiplier);
            let adjusted = cost.adjusted_tokens as f64;
            // Allow for f64 error on large values.
            prop_assert!(adjusted <= total * (1.0 + 1e-12) + 1e-6);
            prop_assert!(total < adjusted + 1.0 + total * 1e-12);
        }

        #[test]
        fn worst_case_bounds_every_allowed_request(
            u in arb_usage(), c in 0u32..100_000, slack_c in 0u32..1_000,
            slack_p in 0u64..1_000, slack_m in 0u64..1_000, prices in arb_prices(),
        ) {
            let actual = price(&u, c, &prices).unwrap();
            let reserved = worst_case_cost(
                u.prompt_tokens + slack_p,
                u.completion_tokens + slack_m,
                c + slack_c,
                &prices,
            ).unwrap();
            prop_assert!(reserved.client_price >= actual.client_price);
            prop_assert!(reserved.worker_pay >= actual.worker_pay);
        }
    }
}
