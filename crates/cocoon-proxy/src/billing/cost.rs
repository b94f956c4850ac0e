//! What an answer costs: the bound of a request's prompt, the price split as the app's `usage`
//! shows it, the cap at what the request reserved, and the coefficient a reservation assumes. Pure.

use cocoon_money::pricing::COEFFICIENT_ONE;
use cocoon_money::{price, Amount, Cost, Prices, PricingError};
use cocoon_proto::TokenUsage;
use serde::Serialize;

/// Upper bound of a request's prompt tokens from its body size. A token is at least one byte of
/// text in practice, and the JSON around the text (keys, quotes, escapes, the message list) more
/// than doubles it, so half the body's bytes bounds the prompt without running a tokenizer.
pub fn prompt_tokens_bound(body_bytes: usize) -> u64 {
    (body_bytes as u64).div_ceil(2)
}

/// What one answer cost the client, split as in the app's `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AnswerCost {
    /// The prompt's part (nano-units).
    pub prompt_total_cost: Amount,
    /// The completion's part.
    pub completion_total_cost: Amount,
    /// Both.
    pub total_cost: Amount,
}

/// The price of an answer, and the client's part of it split into prompt and completion. The
/// prompt part is the prompt priced alone (rounded down as every price), the completion part the
/// rest, so the two always add up to the total charged.
pub fn answer_cost(
    usage: &TokenUsage,
    coefficient: u32,
    prices: &Prices,
) -> Result<(Cost, AnswerCost), PricingError> {
    let cost = price(usage, coefficient, prices)?;
    let prompt_only = TokenUsage {
        completion_tokens: 0,
        reasoning_tokens: 0,
        ..*usage
    };
    let prompt = price(&prompt_only, coefficient, prices)?
        .client_price
        .min(cost.client_price);
    Ok((
        cost,
        AnswerCost {
            prompt_total_cost: prompt,
            completion_total_cost: cost.client_price - prompt,
            total_cost: cost.client_price,
        },
    ))
}

/// Caps an answer's price at what its request `reserved`; the worker's pay shrinks in the same
/// proportion (rounded down), so the commission stays non-negative. Returns the uncapped price
/// when the cap applied.
pub fn cap_at_reservation(
    cost: &mut Cost,
    answer: &mut AnswerCost,
    reserved: Amount,
) -> Option<Amount> {
    let full = cost.client_price;
    if full <= reserved {
        return None;
    }
    // full > reserved ≥ 0, so full > 0; the quotient is at most worker_pay.
    let scaled = u128::from(cost.worker_pay) * u128::from(reserved) / u128::from(full);
    cost.worker_pay = Amount::try_from(scaled).unwrap_or(cost.worker_pay);
    cost.client_price = reserved;
    answer.prompt_total_cost = answer.prompt_total_cost.min(reserved);
    answer.completion_total_cost = reserved - answer.prompt_total_cost;
    answer.total_cost = reserved;
    Some(full)
}

/// The coefficient a reservation assumes: the request's limit, capped by the dearest worker that
/// serves the model now (the router never picks above either); 1.0× if none is linked yet.
pub fn reservation_coefficient(max_coefficient: u32, dearest_worker: Option<u32>) -> u32 {
    max_coefficient.min(dearest_worker.unwrap_or(COEFFICIENT_ONE))
}
