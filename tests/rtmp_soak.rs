//! Connection churn must not grow the server: 1,000 handshake-and-close cycles after a warm-up
//! leave its resident memory within 10%.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const BATCH: usize = 50;

/// `n` cycles of connect, C0C1, read S0S1S2, C2, close; `BATCH` at a time on std threads.
/// Returns the failures.
fn cycles(addr: SocketAddr, n: usize, seed: u64) -> Vec<String> {
    let mut failures = Vec::new();
    let mut done = 0;
    while done < n {
        let k = BATCH.min(n - done);
        let handles: Vec<_> = (0..k)
            .map(|i| {
                let seed = seed + (done + i) as u64;
                std::thread::spawn(move || -> Result<(), String> {
                    let mut s = connect(addr, Duration::from_secs(5))
                        .map_err(|e| format!("connect: {e}"))?;
                    handshake(&mut s, &mut Rng::new(seed))
                        .map_err(|e| format!("handshake: {e}"))?;
                    close(s);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(_) => failures.push("cycle thread panicked".into()),
            }
        }
        done += k;
    }
    failures
}

/// Waits (bounded) for the server to have seen the closes, then reads RSS.
fn settled_rss(server: &Server) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    // Take the smallest of a few samples a little apart: RSS of a just-freed buffer can lag.
    (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            server.rss_kib()
        })
        .min()
        .unwrap()
}

#[test]
fn thousand_connect_disconnect_cycles_keep_rss_flat() {
    let mut server = Server::start(ServerOpts {
        shards: 2,
        ..Default::default()
    });
    let addr = server.addr();
    let t = Instant::now();

    let warm = cycles(addr, 100, 1);
    assert!(
        warm.is_empty(),
        "warm-up cycles failed: {warm:?}\n{}",
        server.log()
    );
    let rss_warm = settled_rss(&server);

    let failures = cycles(addr, 1000, 1_000_000);
    server.assert_alive();
    let rss_after = settled_rss(&server);
    eprintln!(
        "RSS after 100-cycle warm-up: {rss_warm} KiB; after 1,000 more cycles: {rss_after} KiB \
         ({:+.1}%); {} failures; {:?}",
        (rss_after as f64 / rss_warm as f64 - 1.0) * 100.0,
        failures.len(),
        t.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of 1,000 cycles failed, first: {:?}\n--- server log (tail) ---\n{}",
        failures.len(),
        failures.first(),
        server
            .log()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        rss_after as f64 <= rss_warm as f64 * 1.10,
        "RSS grew from {rss_warm} KiB to {rss_after} KiB over 1,000 connect/disconnect cycles (> 10%)"
    );
    server.stop_ok();
}
