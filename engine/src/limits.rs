//! Connection limits and the failed-publish limit, shared by all shards, without locks.
//!
//! Per-IP counts live in a fixed table of atomic counters indexed by a hash of the address.
//! Two addresses that share a slot share a budget, which errs on the side of refusing; with
//! 65,536 slots that needs many clients at once to matter.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

const IP_SLOTS: usize = 1 << 16;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_connections` reached.
    TooManyConnections,
    /// `limits.max_connections_per_ip` reached for this address.
    TooManyFromAddress,
}

/// Counters for `limits.max_connections` and `limits.max_connections_per_ip`.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: u32,
    total: AtomicUsize,
    per_ip: Box<[AtomicU32]>,
    hasher: RandomState,
}

impl ConnectionLimits {
    /// New counters for the given limits.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip: u32::try_from(max_per_ip).unwrap_or(u32::MAX),
            total: AtomicUsize::new(0),
            per_ip: (0..IP_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            hasher: RandomState::new(),
        })
    }

    fn slot(&self, ip: IpAddr) -> &AtomicU32 {
        let h = self.hasher.hash_one(ip) as usize;
        &self.per_ip[h % IP_SLOTS]
    }

    /// Counts a new connection from `ip`, or says why it must be refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, Refusal> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::TooManyConnections);
        }
        let slot = self.slot(ip);
        if slot.fetch_add(1, Ordering::Relaxed) >= self.max_per_ip {
            slot.fetch_sub(1, Ordering::Relaxed);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::TooManyFromAddress);
        }
        Ok(ConnectionGuard {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// Holds one connection's place in the counters; dropping it frees the place.
pub struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.limits.slot(self.ip).fetch_sub(1, Ordering::Relaxed);
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Slots of the failed-publish table (per-IP, hashed; 32 KiB).
const FAILED_PUBLISH_SLOTS: usize = 4096;

/// Failed publish attempts per IP address in the current minute, for
/// `auth.max_failed_publish_per_minute`: shared by all shards, without locks.
///
/// Each slot packs (minute index << 32 | failures) into one `AtomicU64`, so a new minute
/// resets the count in the same compare-and-swap that adds to it. Windows are fixed minutes of
/// the process's monotonic clock. Addresses hash (with a per-process random key) into 4,096
/// slots; two addresses that share a slot share a budget, which errs on the side of refusing.
pub struct FailedPublishes {
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    epoch: Instant,
}

impl Default for FailedPublishes {
    fn default() -> Self {
        FailedPublishes {
            slots: (0..FAILED_PUBLISH_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }
}

impl FailedPublishes {
    /// The table every shard of this process uses.
    pub fn global() -> &'static FailedPublishes {
        static TABLE: OnceLock<FailedPublishes> = OnceLock::new();
        TABLE.get_or_init(FailedPublishes::default)
    }

    fn slot(&self, ip: IpAddr) -> &AtomicU64 {
        let h = self.hasher.hash_one(ip) as usize;
        &self.slots[h % FAILED_PUBLISH_SLOTS]
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / 60 + 1
    }

    /// Whether `ip` already failed `limit` times this minute (then refuse without checking
    /// its key). A `limit` of 0 turns the limit off.
    pub fn is_blocked(&self, ip: IpAddr, limit: u32, now: Instant) -> bool {
        if limit == 0 {
            return false;
        }
        let v = self.slot(ip).load(Ordering::Relaxed);
        v >> 32 == self.minute(now) && (v & 0xFFFF_FFFF) as u32 >= limit
    }

    /// Counts a failed attempt (wrong key, refused by a hook) from `ip`; returns the failures
    /// of this minute so far.
    pub fn note_failure(&self, ip: IpAddr, now: Instant) -> u32 {
        let minute = self.minute(now);
        let slot = self.slot(ip);
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let count = if cur >> 32 == minute {
                ((cur & 0xFFFF_FFFF) as u32).saturating_add(1)
            } else {
                1
            };
            let next = (minute << 32) | u64::from(count);
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return count,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Counts a failed publish attempt from `ip` in the process-wide table (for every check that
/// refuses a publisher: keys, the `on_publish` hook).
pub fn note_failed_publish(ip: IpAddr) -> u32 {
    FailedPublishes::global().note_failure(ip, Instant::now())
}

/// Whether `ip` has used up its failed publish attempts for this minute (`limit` of 0: never).
pub fn publish_blocked(ip: IpAddr, limit: u32) -> bool {
    FailedPublishes::global().is_blocked(ip, limit, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_publishes_are_limited_per_ip_and_minute() {
        let t = FailedPublishes::default();
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        for n in 1..=3 {
            assert!(!t.is_blocked(a, 3, now));
            assert_eq!(t.note_failure(a, now), n);
        }
        assert!(t.is_blocked(a, 3, now));
        assert!(!t.is_blocked(a, 0, now), "0 turns the limit off");
        assert!(
            !t.is_blocked(b, 3, now),
            "another address has its own budget"
        );
        // The next minute starts afresh.
        let later = now + std::time::Duration::from_secs(61);
        assert!(!t.is_blocked(a, 3, later));
        assert_eq!(t.note_failure(a, later), 1);
    }

    #[test]
    fn failed_publish_counts_are_exact_across_threads() {
        let t = std::sync::Arc::new(FailedPublishes::default());
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        t.note_failure(ip, now);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.note_failure(ip, now), 4001);
    }

    #[test]
    fn limits_total_and_per_ip() {
        let l = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = l.admit(a).unwrap();
        let _g2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::TooManyFromAddress));
        let _g3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some(Refusal::TooManyConnections));
        drop(g1);
        assert_eq!(l.open_connections(), 2);
        assert!(l.admit(a).is_ok());
    }
}
