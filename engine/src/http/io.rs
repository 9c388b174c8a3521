//! hyper's I/O traits over a shard's TCP connection (plain or TLS), with activity tracking
//! for the idle and request-head timeouts (hyper's own timers need `Send` sleeps, which a
//! glommio shard does not have).

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

/// What a connection's watchdog needs to know.
#[derive(Debug)]
pub struct Activity {
    /// Last time bytes moved either way.
    pub last_io: Cell<Instant>,
    /// When the first byte of a request head arrived while no request was being served.
    pub head_started: Cell<Option<Instant>>,
    /// Requests whose response is being produced (a blocking playlist reload waits here).
    pub in_flight: Cell<usize>,
    /// Streaming response bodies being sent (live events).
    pub streaming: Cell<usize>,
}

impl Activity {
    /// A connection that just opened.
    pub fn new(now: Instant) -> Rc<Self> {
        Rc::new(Activity {
            last_io: Cell::new(now),
            head_started: Cell::new(None),
            in_flight: Cell::new(0),
            streaming: Cell::new(0),
        })
    }

    /// Marks a request as being served until the guard is dropped.
    pub fn request(self: &Rc<Self>) -> InFlight {
        self.head_started.set(None);
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self.clone())
    }

    /// Marks a streaming response as being sent until the guard is dropped.
    pub fn streaming(self: &Rc<Self>) -> Streaming {
        self.streaming.set(self.streaming.get() + 1);
        Streaming(self.clone())
    }
}

/// A streaming response being sent; see [`Activity::streaming`].
pub struct Streaming(Rc<Activity>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.streaming.set(self.0.streaming.get() - 1);
    }
}

/// A request being served; see [`Activity::request`].
pub struct InFlight(Rc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

/// Largest read handed to hyper at once.
const READ_CHUNK: usize = 16 * 1024;

/// Adapts a futures-io stream to hyper's `Read`/`Write`.
pub struct HyperIo<S> {
    stream: S,
    activity: Rc<Activity>,
    scratch: Box<[u8]>,
}

impl<S> HyperIo<S> {
    /// Wraps `stream`; reads and writes update `activity`.
    pub fn new(stream: S, activity: Rc<Activity>) -> Self {
        HyperIo {
            stream,
            activity,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// The activity record this stream updates.
    pub fn activity(&self) -> Rc<Activity> {
        self.activity.clone()
    }

    /// The wrapped stream (after an upgrade, the new protocol reads and writes it directly).
    pub fn into_inner(self) -> S {
        self.stream
    }

    fn moved(&self, read: bool, n: usize) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        self.activity.last_io.set(now);
        if read && self.activity.in_flight.get() == 0 && self.activity.head_started.get().is_none()
        {
            self.activity.head_started.set(Some(now));
        }
    }
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Requests are small and not media: reading through a scratch buffer (one copy) keeps
        // this adapter free of `unsafe` uninitialised-memory handling.
        let want = buf.remaining().min(this.scratch.len());
        let n = match Pin::new(&mut this.stream).poll_read(cx, &mut this.scratch[..want]) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        buf.put_slice(&this.scratch[..n]);
        this.moved(true, n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.moved(false, n);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.moved(false, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        // With vectored writes hyper queues each body chunk (a shared media slice) instead of
        // flattening it into its own buffer: segments go out without copying.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
