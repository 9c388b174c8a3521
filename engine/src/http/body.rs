//! Response bodies: a list of shared `Bytes` slices sent with vectored writes, or a stream of
//! chunks produced while the response is being sent (live events).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_lite::Stream;
use http_body::{Frame, SizeHint};

use super::io::Streaming;

/// A response body.
///
/// * Fixed: slices that may point into shared media buffers (LL-HLS parts); its length is
///   known, so the response carries `Content-Length`, and each slice goes to the kernel as it
///   is (no copy).
/// * Streaming ([`Body::stream`]): chunks produced by a shard-local stream until it ends; the
///   response is sent with `Transfer-Encoding: chunked`. While such a body is being sent the
///   connection's watchdog treats the connection as busy, not idle (see `http::expired`); the
///   stream must therefore yield something at least every [`STREAM_HEARTBEAT`](super::STREAM_HEARTBEAT)
///   and end when the shard shuts down.
#[derive(Default)]
pub struct Body {
    kind: Kind,
}

enum Kind {
    Fixed {
        chunks: VecDeque<Bytes>,
        remaining: u64,
    },
    Stream {
        stream: Pin<Box<dyn Stream<Item = Bytes>>>,
        /// Set by the connection when it starts sending this body; dropped with it.
        guard: Option<Streaming>,
        ended: bool,
    },
}

impl Default for Kind {
    fn default() -> Self {
        Kind::Fixed {
            chunks: VecDeque::new(),
            remaining: 0,
        }
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body::default()
    }

    /// A body of `chunks`, in order; empty chunks are left out.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Body {
            kind: Kind::Fixed { chunks, remaining },
        }
    }

    /// A streaming body: each item of `stream` is sent as it comes; the body ends with the
    /// stream. Empty items are skipped.
    pub fn stream(stream: impl Stream<Item = Bytes> + 'static) -> Self {
        Body {
            kind: Kind::Stream {
                stream: Box::pin(stream),
                guard: None,
                ended: false,
            },
        }
    }

    /// Bytes of a fixed body not yet handed to hyper (0 for a streaming body).
    pub fn len(&self) -> u64 {
        match &self.kind {
            Kind::Fixed { remaining, .. } => *remaining,
            Kind::Stream { .. } => 0,
        }
    }

    /// True when a fixed body has nothing left (never for a streaming body).
    pub fn is_empty(&self) -> bool {
        match &self.kind {
            Kind::Fixed { remaining, .. } => *remaining == 0,
            Kind::Stream { .. } => false,
        }
    }

    /// Whether this is a streaming body.
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Kind::Stream { .. })
    }

    /// Ties `guard` to a streaming body's life (no-op for a fixed body).
    pub(super) fn hold(&mut self, guard: Streaming) {
        if let Kind::Stream { guard: g, .. } = &mut self.kind {
            *g = Some(guard);
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Fixed { chunks, remaining } => f
                .debug_struct("Body")
                .field("chunks", &chunks.len())
                .field("remaining", remaining)
                .finish(),
            Kind::Stream { ended, .. } => f
                .debug_struct("Body")
                .field("stream", &true)
                .field("ended", ended)
                .finish(),
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::from_chunks([Bytes::from(s)])
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::from_chunks([Bytes::from_static(s.as_bytes())])
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::from_chunks([b])
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Fixed { chunks, remaining } => Poll::Ready(chunks.pop_front().map(|c| {
                *remaining -= c.len() as u64;
                Ok(Frame::data(c))
            })),
            Kind::Stream {
                stream,
                guard,
                ended,
            } => loop {
                if *ended {
                    return Poll::Ready(None);
                }
                match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(c)) if c.is_empty() => continue,
                    Poll::Ready(Some(c)) => return Poll::Ready(Some(Ok(Frame::data(c)))),
                    Poll::Ready(None) => {
                        *ended = true;
                        // The connection is an ordinary keep-alive one again.
                        guard.take();
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Fixed { chunks, .. } => chunks.is_empty(),
            Kind::Stream { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Fixed { remaining, .. } => SizeHint::with_exact(*remaining),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn a_fixed_body_keeps_its_slices_and_length() {
        let b = Body::from_chunks([Bytes::from_static(b"ab"), Bytes::new(), Bytes::from("c")]);
        assert_eq!(b.len(), 3);
        assert_eq!(http_body::Body::size_hint(&b).exact(), Some(3));
        let got = futures_lite::future::block_on(b.collect())
            .unwrap()
            .to_bytes();
        assert_eq!(&got[..], b"abc");
    }

    #[test]
    fn a_streaming_body_has_no_length_and_ends_with_its_stream() {
        let items = vec![Bytes::from("x"), Bytes::new(), Bytes::from("yz")];
        let b = Body::stream(futures_lite::stream::iter(items));
        assert!(b.is_stream());
        assert_eq!(http_body::Body::size_hint(&b).exact(), None);
        assert!(!http_body::Body::is_end_stream(&b));
        let got = futures_lite::future::block_on(b.collect())
            .unwrap()
            .to_bytes();
        assert_eq!(&got[..], b"xyz");
    }
}
