//! Connection limits shared by all shards, without locks.
//!
//! Per-IP counts live in a fixed table of atomic counters indexed by a hash of the address.
//! Two addresses that share a slot share a budget, which errs on the side of refusing; with
//! 65,536 slots that needs many clients at once to matter.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
