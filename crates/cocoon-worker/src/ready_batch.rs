//! Gathering what a stream has ready into one batch, so that a burst of an engine's events
//! leaves as one frame.

use std::future::{poll_fn, Future};
use std::task::Poll;

use futures::{FutureExt, Stream, StreamExt};

/// Most events one batch (one relayed frame) carries.
pub const MAX_EVENTS_PER_FRAME: usize = 64;

/// The next events: the first one as soon as it arrives, then whatever else the engine has
/// already sent.
///
/// An engine connection decodes its body on a task of its own and hands it over one chunk at a
/// time, so a burst already read from the engine's socket only becomes visible by yielding to that
/// task. The batch yields once after each step that brought something and stops at the first
/// yield that brings nothing: a burst still leaves as one frame, while a lone chunk (an engine
/// that flushes every token, and is not ahead of us) costs one yield, not several.
pub async fn next_batch<S, T>(events: &mut S) -> Option<Vec<T>>
where
    S: Stream<Item = T> + Unpin,
{
    let first = events.next().await?;
    let mut batch = vec![first];
    let mut since_yield = 1;
    while batch.len() < MAX_EVENTS_PER_FRAME {
        match events.next().now_or_never() {
            Some(Some(event)) => {
                batch.push(event);
                since_yield += 1;
            }
            Some(None) => break,
            None if since_yield > 0 => {
                since_yield = 0;
                let_woken_tasks_run().await;
            }
            None => break,
        }
    }
    Some(batch)
}

/// Lets the tasks already woken run before this one continues: the engine connection's, woken
/// when its last chunk was taken, hands over the next one it has already read. Unlike
/// `tokio::task::yield_now`, which resumes only after the runtime has also polled its I/O driver
/// (a system call per yield, so per chunk), this does not wait for data not yet read.
fn let_woken_tasks_run() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if std::mem::replace(&mut yielded, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::SinkExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A stream with one event ready, then nothing ever again; counts how often it is polled.
    struct LoneEvent {
        sent: bool,
        polls: usize,
    }

    impl Stream for LoneEvent {
        type Item = u32;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u32>> {
            self.polls += 1;
            if std::mem::replace(&mut self.sent, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(1))
            }
        }
    }

    #[tokio::test]
    async fn a_lone_event_leaves_after_one_look_for_more() {
        let mut events = LoneEvent {
            sent: false,
            polls: 0,
        };
        assert_eq!(next_batch(&mut events).await, Some(vec![1]));
        // The first event, a look for more, one yield and a last look.
        assert_eq!(events.polls, 3);
    }

    /// A burst handed over one event at a time by another task, as an engine connection does:
    /// each event is only visible after yielding to it.
    fn handed_over_one_at_a_time(events: u32) -> mpsc::Receiver<u32> {
        let (mut tx, rx) = mpsc::channel(0);
        tokio::spawn(async move {
            for event in 0..events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    #[tokio::test]
    async fn a_burst_handed_over_one_event_at_a_time_becomes_one_batch() {
        let mut events = handed_over_one_at_a_time(40);
        let batch = next_batch(&mut events).await.unwrap();
        assert_eq!(batch, (0..40).collect::<Vec<_>>());
        assert_eq!(next_batch(&mut events).await, None);
    }

    #[tokio::test]
    async fn a_long_burst_is_cut_into_batches_of_the_most_a_frame_carries() {
        let total = MAX_EVENTS_PER_FRAME as u32 * 2 + 5;
        let mut events = handed_over_one_at_a_time(total);
        let mut sizes = Vec::new();
        while let Some(batch) = next_batch(&mut events).await {
            sizes.push(batch.len());
        }
        assert_eq!(sizes, [MAX_EVENTS_PER_FRAME, MAX_EVENTS_PER_FRAME, 5]);
    }
}
