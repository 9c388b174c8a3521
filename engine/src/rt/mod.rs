//! The runtime facade: everything the engine needs from its executor, in one place.
//!
//! The engine runs one glommio `LocalExecutor` per core. Nothing outside this module names
//! glommio for I/O, so the executor can be swapped for another io_uring runtime by rewriting
//! this module only. The one system call glommio does not offer, a vectored non-blocking
//! send, lives in [`tcp`]; [`tcp`] and [`udp`] hold the engine's only `unsafe` blocks (taking
//! ownership of sockets configured with socket2).

pub mod event;
#[allow(unsafe_code)]
pub mod tcp;
#[allow(unsafe_code)]
pub mod udp;

use std::future::Future;
use std::time::{Duration, Instant};

pub use event::LocalEvent;
pub use tcp::{TcpConn, TcpListener};
pub use udp::UdpSocket;

/// Spawns a task on the current shard and lets it run on its own.
pub fn spawn<F>(fut: F)
where
    F: Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(fut).detach();
}

/// Sleeps for `d` on the current shard's timer wheel.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await
}

/// Sleeps until `deadline` (returns at once when it has passed).
pub async fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        sleep(deadline - now).await;
    }
}

/// The current time. The single clock of the engine: protocol sessions get it injected.
pub fn now() -> Instant {
    Instant::now()
}

/// Yields to other tasks when the shard's time slice is used up.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// Runs `fut` until it finishes or `d` has passed; `None` on timeout.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}
