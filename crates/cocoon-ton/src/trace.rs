//! Following a transaction's trace: each internal message a transaction sent is found again as the
//! inbound message of a transaction on its destination (same sender, same creation logical time),
//! so a wallet's transaction leads to the contract's, and that one to what the contract sent.
//!
//! The trace is bounded ([`MAX_DEPTH`] levels, [`MAX_FAN_OUT`] messages per transaction), each wait
//! for a destination's transaction by [`HOP_TIMEOUT`] and the whole walk by [`TRACE_TIMEOUT`]
//! (wall clock): a lying or stuck API ends the walk with an error, never a hang.

use std::time::{Duration, Instant};

use crate::api::{MessageRef, TonApi, TonApiError, Transaction};

/// Levels followed below the first transaction (wallet → contract → contract → payout).
pub const MAX_DEPTH: usize = 4;
/// Messages followed per transaction.
pub const MAX_FAN_OUT: usize = 4;
/// Pages of 16 transactions read back on a busy destination before waiting again: its
/// transaction is after the message was created (a higher logical time), so no further.
pub const MAX_PAGES: usize = 8;
/// How long one destination's transaction is waited for (blocks are ~5 s; a shard may lag).
pub const HOP_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a whole trace is followed: a lying API that invents messages cannot hold a caller
/// for every hop's timeout in turn.
pub const TRACE_TIMEOUT: Duration = Duration::from_secs(300);

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
    let deadline = Instant::now() + TRACE_TIMEOUT;
    let mut level = 0..1;
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for index in level.clone() {
            let sender = steps[index].on.clone();
            for message in steps[index].tx.out_messages.iter().take(MAX_FAN_OUT) {
                let tx = wait_for(api, &sender, message, poll, deadline).await?;
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
    deadline: Instant,
) -> Result<Transaction, TraceError> {
    let started = Instant::now();
    loop {
        if let Some(tx) = find(api, sender, message).await? {
            return Ok(tx);
        }
        if started.elapsed() > HOP_TIMEOUT || Instant::now() > deadline {
            return Err(TraceError::Lost {
                address: message.address.to_hex(),
                created_lt: message.created_lt,
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Reads the destination's history, newest first, down to the message's creation time.
async fn find(
    api: &TonApi,
    sender: &tonlib_core::TonAddress,
    message: &MessageRef,
) -> Result<Option<Transaction>, TraceError> {
    let mut from = None;
    for _ in 0..MAX_PAGES {
        let page = api
            .transactions(&message.address, 16, from.as_ref())
            .await?;
        let caused = |tx: &Transaction| {
            tx.in_from
                .as_ref()
                .is_some_and(|m| &m.address == sender && m.created_lt == message.created_lt)
        };
        if let Some(tx) = page.iter().find(|tx| caused(tx)) {
            return Ok(Some(tx.clone()));
        }
        // The page starts with `from` itself (the API pages inclusively).
        match page.last() {
            Some(oldest) if oldest.id.lt > message.created_lt && page.len() > 1 => {
                from = Some(oldest.id.clone());
            }
            _ => break,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use axum::extract::Query;
    use axum::routing::get;
    use axum::Router;

    use super::*;

    const HASH: &str = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=";
    const SENDER: &str = "0:1111111111111111111111111111111111111111111111111111111111111111";

    /// A transaction of lt `lt` caused by the sender's message created at `created_lt`.
    fn tx(lt: u64, created_lt: u64) -> serde_json::Value {
        serde_json::json!({
            "utime": 1, "transaction_id": {"lt": lt.to_string(), "hash": HASH},
            "in_msg": {"source": SENDER, "created_lt": created_lt.to_string(), "body_hash": HASH},
            "out_msgs": [], "compute_exit_code": 0,
        })
    }

    #[tokio::test]
    async fn a_busy_destinations_transaction_is_found_pages_back() {
        // 40 transactions (lt 100 down to 61), newest first; ours is lt 70, message created at 65.
        let history: Vec<serde_json::Value> = (61..=100u64)
            .rev()
            .map(|lt| if lt == 70 { tx(lt, 65) } else { tx(lt, 1) })
            .collect();
        let app = Router::new().route(
            "/getTransactions",
            get(
                move |Query(q): Query<std::collections::HashMap<String, String>>| {
                    let history = history.clone();
                    async move {
                        let from: u64 = q.get("lt").map_or(100, |lt| lt.parse().unwrap());
                        let page: Vec<_> = history
                            .into_iter()
                            .filter(|t| {
                                t["transaction_id"]["lt"]
                                    .as_str()
                                    .unwrap()
                                    .parse::<u64>()
                                    .unwrap()
                                    <= from
                            })
                            .take(16)
                            .collect();
                        serde_json::json!({"ok": true, "result": page}).to_string()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let api = TonApi::new(&url, None).unwrap();
        let sender = tonlib_core::TonAddress::from_hex_str(SENDER).unwrap();
        let message = MessageRef {
            address: sender.clone(),
            created_lt: 65,
            bounced: false,
        };
        let found = find(&api, &sender, &message).await.unwrap().unwrap();
        assert_eq!(found.id.lt, 70);
        // A message created after everything there: not found, without reading further back.
        let later = MessageRef {
            created_lt: 1_000,
            ..message
        };
        assert!(find(&api, &sender, &later).await.unwrap().is_none());
    }
}
