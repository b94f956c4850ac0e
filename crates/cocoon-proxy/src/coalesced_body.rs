//! A relayed body whose data frames already queued are merged into one, so that chunks of an
//! answer that reach the proxy together leave for the client as one HTTP/2 DATA frame, not one
//! frame each.
//!
//! Nothing is ever held back to wait for more: a poll returns what was ready, and the merge only
//! takes frames the inner body yields without waiting.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// The most bytes merged into one frame: HTTP/2's default largest frame, so a merged frame is
/// never split again on the way out.
pub const MAX_MERGED_BYTES: usize = 16 * 1024;

/// What the inner body yielded while data was being merged, returned by the next poll.
type Held<E> = Option<Result<Frame<Bytes>, E>>;

/// `inner` with its ready data frames merged (see the module docs).
pub struct Coalesced<B: Body> {
    inner: B,
    /// A frame that did not fit the merge (trailers, data past the size, an error, the end).
    held: Option<Held<B::Error>>,
}

impl<B: Body> Coalesced<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Coalesced { inner, held: None }
    }
}

impl<B> Body for Coalesced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(held) = this.held.take() {
            return Poll::Ready(held);
        }
        let first = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let first = match first.into_data() {
            Ok(data) => data,
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        let mut merged: Option<BytesMut> = None;
        let mut size = first.len();
        while size < MAX_MERGED_BYTES {
            let next = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(other) => {
                    this.held = Some(other);
                    break;
                }
            };
            let data = match next.into_data() {
                Ok(data) if size + data.len() <= MAX_MERGED_BYTES => data,
                Ok(data) => {
                    this.held = Some(Some(Ok(Frame::data(data))));
                    break;
                }
                Err(frame) => {
                    this.held = Some(Some(Ok(frame)));
                    break;
                }
            };
            // The first frame is copied only once a second one joins it.
            merged
                .get_or_insert_with(|| {
                    let mut buffer = BytesMut::with_capacity(MAX_MERGED_BYTES);
                    buffer.extend_from_slice(&first);
                    buffer
                })
                .extend_from_slice(&data);
            size += data.len();
        }
        let data = merged.map_or(first, BytesMut::freeze);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.held {
            Some(held) => held.is_none(),
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.held {
            // A held frame is not counted; an exact hint would then be wrong.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::{stream, FutureExt};
    use http::HeaderMap;
    use http_body_util::{BodyExt, StreamBody};

    type Part = Result<Frame<Bytes>, String>;

    fn data(bytes: &[u8]) -> Part {
        Ok(Frame::data(Bytes::copy_from_slice(bytes)))
    }

    fn trailers() -> Part {
        let mut map = HeaderMap::new();
        map.insert("x-end", "1".parse().unwrap());
        Ok(Frame::trailers(map))
    }

    /// What each poll of the coalesced body yields, when every part is ready at once.
    async fn frames_of(parts: Vec<Part>) -> Vec<Result<Frame<Bytes>, String>> {
        let mut body = Coalesced::new(StreamBody::new(stream::iter(parts)));
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame);
        }
        out
    }

    fn data_of(frame: &Result<Frame<Bytes>, String>) -> &[u8] {
        frame.as_ref().unwrap().data_ref().unwrap()
    }

    #[tokio::test]
    async fn many_tiny_ready_chunks_leave_as_few_frames_with_every_byte_in_order() {
        let mut expected = Vec::new();
        let mut parts = Vec::new();
        for i in 0..5000u32 {
            let chunk = (i % 7 + 1).to_string().repeat((i % 5) as usize);
            expected.extend_from_slice(chunk.as_bytes());
            parts.push(data(chunk.as_bytes()));
        }
        let frames = frames_of(parts).await;
        let relayed: Vec<u8> = frames.iter().flat_map(|f| data_of(f).to_vec()).collect();
        assert_eq!(relayed, expected);
        assert!(frames.iter().all(|f| data_of(f).len() <= MAX_MERGED_BYTES));
        assert!(
            frames.len() <= expected.len() / MAX_MERGED_BYTES + 2,
            "{}",
            frames.len()
        );
    }

    #[tokio::test]
    async fn a_chunk_larger_than_a_frame_passes_alone_and_whole() {
        let huge = vec![b'x'; 3 * MAX_MERGED_BYTES];
        let frames = frames_of(vec![data(b"a"), data(&huge), data(b"b")]).await;
        let sizes: Vec<usize> = frames.iter().map(|f| data_of(f).len()).collect();
        assert_eq!(sizes, [1, huge.len(), 1]);
    }

    #[tokio::test]
    async fn trailers_an_error_and_the_end_come_after_the_data_before_them() {
        let frames = frames_of(vec![data(b"a"), data(b"b"), trailers()]).await;
        assert_eq!(frames.len(), 2);
        assert_eq!(data_of(&frames[0]), b"ab");
        assert!(frames[1].as_ref().unwrap().is_trailers());

        let frames = frames_of(vec![
            data(b"a"),
            data(b"b"),
            Err("broken".into()),
            data(b"c"),
        ])
        .await;
        assert_eq!(data_of(&frames[0]), b"ab");
        assert_eq!(frames[1].as_ref().unwrap_err(), "broken");
    }

    #[tokio::test]
    async fn a_ready_chunk_is_never_held_back_for_the_next() {
        let (tx, rx) = mpsc::unbounded::<Part>();
        let mut body = Coalesced::new(StreamBody::new(rx));
        tx.unbounded_send(data(b"first")).unwrap();
        tx.unbounded_send(data(b" second")).unwrap();
        // Both were ready: one frame. Nothing more is ready: the next poll waits.
        let frame = body.frame().now_or_never().unwrap().unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().as_ref(), b"first second");
        assert!(body.frame().now_or_never().is_none());
        tx.unbounded_send(data(b"third")).unwrap();
        let frame = body.frame().now_or_never().unwrap().unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().as_ref(), b"third");
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn the_end_found_while_merging_is_reported_as_the_end() {
        let mut body = Coalesced::new(StreamBody::new(stream::iter(vec![data(b"a")])));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
