//! Playlist rendering (RFC 8216bis section 4, Apple LL-HLS).
//!
//! ```text
//! #EXTM3U, VERSION, TARGETDURATION, MEDIA-SEQUENCE, [DISCONTINUITY-SEQUENCE],
//! SERVER-CONTROL, PART-INF, [SKIP]
//! per segment: [DISCONTINUITY] [MAP] PROGRAM-DATE-TIME [PART*] EXTINF uri
//! segment in progress: [DISCONTINUITY] [MAP] PROGRAM-DATE-TIME PART*
//! [MAP] PRELOAD-HINT | ENDLIST
//! ```
//!
//! Parts are named by their stream-global sequence number, `part-<seq>.m4s`, so the preload
//! hint (`part-<next seq>.m4s`) names the next part whether it continues the segment in
//! progress or opens the next one. A playlist that lists no segment yet still carries the
//! current init's EXT-X-MAP before its hint, so a player that preloads the hinted part can
//! decode it.
//!
//! Players without LL-HLS support (ffmpeg 5.1) ignore the LL tags and play the EXTINF
//! segments; the tags of the segment in progress have no URI after them and are dropped.

use std::fmt::Write;
use std::time::Duration;

use super::Window;
use crate::request::PlaylistRequest;

/// `d` as decimal seconds with milliseconds; durations here are whole milliseconds, so this
/// is exact and the parts of a segment add up to its EXTINF as printed.
fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// ISO 8601 UTC with milliseconds, for example `2023-11-14T22:13:20.123Z`.
pub(crate) fn iso8601(unix_ms: u64) -> String {
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

impl Window {
    /// The media playlist, or with `_HLS_skip` its delta update: complete segments older than
    /// CAN-SKIP-UNTIL from the end are replaced by `EXT-X-SKIP`. Parts are listed for the
    /// segment in progress and for segments that end within three target durations of the
    /// end; the preload hint names the next part, `part-<next seq>.m4s`.
    pub fn media_playlist(&self, req: &PlaylistRequest) -> String {
        let target = self.target_secs;
        let part_target = Duration::from_millis(self.cfg.part_ms());
        let first_msn = self
            .segments
            .front()
            .map_or(self.numbering.next_msn, |s| s.msn);
        let discontinuity_sequence = self
            .segments
            .front()
            .map_or(self.numbering.discontinuity_sequence, |s| {
                s.discontinuity_sequence - u64::from(s.discontinuity)
            });
        let mut o = String::with_capacity(512 + 80 * self.segments.len() * 4);
        // Version 9: EXT-X-SKIP needs it, and a delta update and a full playlist of one
        // stream should not disagree.
        let _ = write!(
            o,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first_msn}\n"
        );
        if discontinuity_sequence > 0 {
            let _ = writeln!(o, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}");
        }
        // PART-HOLD-BACK: three part targets, as the spec recommends; CAN-SKIP-UNTIL: the
        // minimum the spec allows, six target durations.
        let _ = write!(
            o,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={}.0\n\
             #EXT-X-PART-INF:PART-TARGET={}\n",
            secs(part_target * 3),
            6 * target,
            secs(part_target)
        );
        // Time from each segment's end to the end of the playlist.
        let mut after = vec![Duration::ZERO; self.segments.len()];
        let mut sum = Duration::ZERO;
        for (i, s) in self.segments.iter().enumerate().rev() {
            after[i] = sum;
            sum += s.duration_so_far();
        }
        let skip_until = Duration::from_secs(6 * target);
        let skipped = if req.skip {
            self.segments
                .iter()
                .zip(&after)
                .take_while(|(s, a)| s.duration.is_some() && **a >= skip_until)
                .count()
        } else {
            0
        };
        if skipped > 0 {
            let _ = writeln!(o, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let parts_within = Duration::from_secs(3 * target);
        let mut map = None;
        for (s, a) in self.segments.iter().zip(&after).skip(skipped) {
            if s.duration.is_none() && s.parts.is_empty() {
                continue;
            }
            if s.discontinuity {
                o.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(s.init_id) {
                let _ = writeln!(o, "#EXT-X-MAP:URI=\"init-{}.mp4\"", s.init_id);
                map = Some(s.init_id);
            }
            let _ = writeln!(
                o,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                iso8601(s.program_date_time_ms)
            );
            if s.duration.is_none() || *a < parts_within {
                for p in &s.parts {
                    let independent = if p.independent {
                        ",INDEPENDENT=YES"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        o,
                        "#EXT-X-PART:DURATION={},URI=\"part-{}.m4s\"{independent}",
                        secs(p.duration),
                        p.seq
                    );
                }
            }
            if let Some(d) = s.duration {
                let _ = write!(o, "#EXTINF:{},\nseg-{}.m4s\n", secs(d), s.msn);
            }
        }
        if self.ended {
            o.push_str("#EXT-X-ENDLIST\n");
        } else {
            // Nothing listed yet (before the first part): the hinted part still needs its init.
            let current_init = match self.segments.back() {
                Some(s) if s.duration.is_none() => Some(s.init_id),
                _ => self.inits.last().map(|(id, _)| *id),
            };
            if let (None, Some(id)) = (map, current_init) {
                let _ = writeln!(o, "#EXT-X-MAP:URI=\"init-{id}.mp4\"");
            }
            let _ = writeln!(
                o,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{}.m4s\"",
                self.next_part_seq()
            );
        }
        o
    }

    /// The multivariant playlist with one variant, `media_uri`; `None` before the first init.
    /// BANDWIDTH is the peak segment bitrate seen, or the init's guess before a segment is
    /// complete.
    pub fn multivariant_playlist(&self, media_uri: &str) -> Option<String> {
        let info = self.info.as_ref()?;
        let bandwidth = self.peak_bandwidth.unwrap_or(info.bandwidth);
        let mut o = format!(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\"",
            info.codecs
        );
        if let (Some(w), Some(h)) = (info.width, info.height) {
            let _ = write!(o, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = info.frame_rate {
            let _ = write!(o, ",FRAME-RATE={fps:.3}");
        }
        // A URI line cannot hold line breaks; keep a careless caller from injecting tags.
        let uri: String = media_uri.chars().filter(|c| !c.is_control()).collect();
        let _ = writeln!(o, "\n{uri}");
        Some(o)
    }
}
