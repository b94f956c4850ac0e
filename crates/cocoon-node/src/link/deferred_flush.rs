//! A link's writes, gathered in a buffer and flushed one scheduler turn after HTTP/2 asks.
//!
//! HTTP/2 flushes at the end of every write cycle of its connection task. A request's HEADERS and
//! DATA are two such cycles: hyper sends a body only once the new stream has send capacity, which
//! the connection task assigns while it writes the HEADERS — so the body's task is woken just
//! after that flush, and the DATA leaves in a second TLS record and system call. Putting the
//! flush off by one turn (the connection task wakes itself, so every task already woken runs
//! first) lets the frames those tasks queue meanwhile — the body, other streams' frames — leave
//! in the same write. Nothing waits for the network or a timer: a deferred flush happens the
//! next time the connection task is polled, which is as soon as the tasks ahead of it yield.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};

/// `S` behind a write buffer of `capacity` bytes, whose flushes are put off by one turn (see the
/// module docs). Reads pass straight through.
pub struct DeferredFlush<S> {
    buffered: BufWriter<S>,
    /// A flush was put off and has not been done yet: the next one is done at once.
    deferred: bool,
}

impl<S: AsyncWrite> DeferredFlush<S> {
    /// Wraps `io` with a write buffer of `capacity` bytes.
    pub fn new(io: S, capacity: usize) -> Self {
        DeferredFlush {
            buffered: BufWriter::with_capacity(capacity, io),
            deferred: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for DeferredFlush<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.buffered).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeferredFlush<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.buffered).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.buffered).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.buffered.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.deferred && !self.buffered.buffer().is_empty() {
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let flushed = Pin::new(&mut self.buffered).poll_flush(cx);
        if flushed.is_ready() {
            self.deferred = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.buffered).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    /// A sink that records each write it is given (one per system call, for a socket).
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bytes: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Poll::Ready(Ok(bytes.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn what_other_tasks_write_before_the_deferred_flush_leaves_with_it() {
        let writes = Writes::default();
        let link = Arc::new(tokio::sync::Mutex::new(DeferredFlush::new(
            writes.clone(),
            1 << 16,
        )));
        // The "connection task" writes HEADERS and flushes; a "body task", woken meanwhile,
        // writes DATA before the flush is done.
        let body = {
            let link = link.clone();
            tokio::spawn(async move {
                link.lock().await.write_all(b"DATA").await.unwrap();
            })
        };
        {
            let mut guard = link.lock().await;
            guard.write_all(b"HEADERS").await.unwrap();
            let flush = std::future::poll_fn(|cx| Pin::new(&mut *guard).poll_flush(cx));
            tokio::pin!(flush);
            // Put off once, waking itself: nothing is written yet.
            assert!(futures::poll!(flush.as_mut()).is_pending());
            assert!(writes.0.lock().unwrap().is_empty());
        }
        // The body task runs in the turn the flush was put off by.
        body.await.unwrap();
        link.lock().await.flush().await.unwrap();
        assert_eq!(*writes.0.lock().unwrap(), vec![b"HEADERSDATA".to_vec()]);
    }

    /// Flushes `link`; returns how many times the flush was polled.
    async fn polls_to_flush(link: &mut DeferredFlush<Writes>) -> usize {
        let mut polls = 0;
        std::future::poll_fn(|cx| {
            polls += 1;
            Pin::new(&mut *link).poll_flush(cx)
        })
        .await
        .unwrap();
        polls
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_flush_is_put_off_at_most_once_and_an_empty_one_not_at_all() {
        let writes = Writes::default();
        let mut link = DeferredFlush::new(writes.clone(), 1 << 16);
        // Nothing buffered: done at once.
        assert_eq!(polls_to_flush(&mut link).await, 1);
        link.write_all(b"frame").await.unwrap();
        assert_eq!(polls_to_flush(&mut link).await, 2);
        assert_eq!(*writes.0.lock().unwrap(), vec![b"frame".to_vec()]);
        // The next flush is put off again: each one gets its turn.
        link.write_all(b"more").await.unwrap();
        assert_eq!(polls_to_flush(&mut link).await, 2);
        assert_eq!(writes.0.lock().unwrap().len(), 2);
    }
}
