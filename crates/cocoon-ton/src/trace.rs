//! Following a transaction's trace: each internal message a transaction sent is found again as the
//! inbound message of a transaction on its destination (same sender, same creation logical time),
//! so a wallet's transaction leads to the contract's, and that one to what the contract sent.
//!
//! The trace is bounded ([`MAX_DEPTH`] levels, [`MAX_FAN_OUT`] messages a level) and each wait for
//! a destination's transaction is bounded by a wall-clock deadline: a lying or stuck API ends the
//! walk with an error, never a hang.

use std::time::{Duration, Instant};

use crate::api::{MessageRef, TonApi, TonApiError, Transaction};

/// Levels followed below the first transaction (wallet → contract → contract → payout).
pub const MAX_DEPTH: usize = 4;
/// Messages followed per transaction.
pub const MAX_FAN_OUT: usize = 4;
/// How long one destination's transaction is waited for (blocks are ~5 s; a shard may lag).
pub const HOP_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a trace could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The API failed.
    #[error(transparent)]
    Api(#[from] TonApiError),
    /// A message's transaction did not appear in time.
    #[error("no transaction of {address} for its message of lt {created_lt} within {waited:?}")]
    Lost {
        /// The destination.
        address: String,
        /// The message's creation logical time.
        created_lt: u64,
        /// How long it was waited for.
        waited: Duration,
    },
}

/// One transaction of a trace and the address it ran on.
#[derive(Debug, Clone)]
pub struct Step {
    /// Where it ran.
    pub on: tonlib_core::TonAddress,
    /// The transaction.
    pub tx: Transaction,
}

impl Step {
    /// Whether its compute phase refused (an exit code other than 0 and 1, or aborted).
    pub fn refused(&self) -> Option<i32> {
        match self.tx.exit_code {
            Some(0 | 1) | None if !self.tx.aborted => None,
            code => Some(code.unwrap_or(-1)),
        }
    }
}

/// Follows the trace of `first` (which ran on `on`) breadth first, up to [`MAX_DEPTH`] levels,
/// polling each destination every `poll`. Returns every step, `first` included, in order.
pub async fn follow(
    api: &TonApi,
    on: &tonlib_core::TonAddress,
    first: Transaction,
    poll: Duration,
) -> Result<Vec<Step>, TraceError> {
    let mut steps = vec![Step {
        on: on.clone(),
        tx: first,
    }];
    let mut level = 0..1;
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for index in level.clone() {
            let sender = steps[index].on.clone();
            for message in steps[index].tx.out_messages.iter().take(MAX_FAN_OUT) {
                let tx = wait_for(api, &sender, message, poll).await?;
                next.push(Step {
                    on: message.address.clone(),
                    tx,
                });
            }
        }
        if next.is_empty() {
            break;
        }
        let start = steps.len();
        steps.extend(next);
        level = start..steps.len();
    }
    Ok(steps)
}

/// The transaction on `message.address` whose inbound message is `message` from `sender`.
async fn wait_for(
    api: &TonApi,
    sender: &tonlib_core::TonAddress,
    message: &MessageRef,
    poll: Duration,
) -> Result<Transaction, TraceError> {
    let started = Instant::now();
    loop {
        let recent = api.transactions(&message.address, 16, None).await?;
        let found = recent.into_iter().find(|tx| {
            tx.in_from.as_ref().is_some_and(|from| {
                &from.address == sender && from.created_lt == message.created_lt
            })
        });
        if let Some(tx) = found {
            return Ok(tx);
        }
        if started.elapsed() > HOP_TIMEOUT {
            return Err(TraceError::Lost {
                address: message.address.to_hex(),
                created_lt: message.created_lt,
                waited: HOP_TIMEOUT,
            });
        }
        tokio::time::sleep(poll).await;
    }
}
