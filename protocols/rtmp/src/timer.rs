//! The session timer table.

use std::time::Instant;

/// The timers a session can arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Handshake and `connect` must complete before this.
    Handshake = 0,
    /// Some byte must arrive before this.
    Idle = 1,
}

const COUNT: usize = 2;

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        self.deadlines[t as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, t: Timer) {
        self.deadlines[t as usize] = None;
    }

    pub(crate) fn get(&self, t: Timer) -> Option<Instant> {
        self.deadlines[t as usize]
    }

    /// The timer with the earliest deadline that has passed at `now`, if any.
    pub(crate) fn expired(&self, now: Instant) -> Option<Timer> {
        [Timer::Handshake, Timer::Idle]
            .into_iter()
            .filter(|t| self.get(*t).is_some_and(|d| d <= now))
            .min_by_key(|t| self.get(*t))
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}
