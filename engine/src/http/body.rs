//! Response bodies: a list of shared `Bytes` slices, sent with vectored writes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A response body made of slices that may point into shared media buffers. Its length is
/// known, so responses carry `Content-Length`.
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    remaining: u64,
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
        Body { chunks, remaining }
    }

    /// Bytes not yet handed to hyper.
    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
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
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.chunks.pop_front().map(|c| {
            this.remaining -= c.len() as u64;
            Ok(Frame::data(c))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
