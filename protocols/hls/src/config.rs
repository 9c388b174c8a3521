//! Packaging configuration, shared by the [`Packager`](crate::Packager) and every
//! [`Window`](crate::Window) of a stream.

use std::time::Duration;

/// Segment and part durations and how much history a [`Window`](crate::Window) keeps.
///
/// Give the packager and every window of a stream the same configuration: the window prints
/// the targets the packager cuts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackagerConfig {
    /// Shortest segment; segments end before the first video keyframe after this long.
    pub segment_duration: Duration,
    /// PART-TARGET: the longest a part may be (a single longer frame excepted).
    pub part_duration: Duration,
    /// Complete segments a window keeps besides the one in progress.
    pub window_segments: usize,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        PackagerConfig {
            segment_duration: Duration::from_secs(2),
            part_duration: Duration::from_millis(200),
            window_segments: 10,
        }
    }
}

impl PackagerConfig {
    /// The segment target in whole milliseconds, 1 ms to one hour: bounded so that tick
    /// arithmetic cannot overflow.
    pub(crate) fn segment_ms(&self) -> u64 {
        self.segment_duration.as_millis().clamp(1, 3_600_000) as u64
    }

    /// The part target in whole milliseconds (so printed durations are exact and a part never
    /// rounds above PART-TARGET), at least 1 ms, at most the segment target.
    pub(crate) fn part_ms(&self) -> u64 {
        (self.part_duration.as_millis() as u64).clamp(1, self.segment_ms())
    }

    /// The smallest EXT-X-TARGETDURATION this configuration allows (whole seconds, at least 1).
    pub(crate) fn min_target_secs(&self) -> u64 {
        self.segment_ms().div_ceil(1000).max(1)
    }

    pub(crate) fn window(&self) -> usize {
        self.window_segments.max(1)
    }
}
