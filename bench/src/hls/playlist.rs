//! What an LL-HLS player needs from a media playlist (RFC 8216bis, draft 16): the parts in
//! order with their (MSN, index), the preload hint, the init segment, PART-TARGET.
//!
//! Parts are numbered the way the spec numbers them, by position, not by URI: a segment's
//! `EXT-X-PART` lines come before its URI line; the first segment's MSN is
//! `EXT-X-MEDIA-SEQUENCE`; the parts after the last URI line (and the preload hint) belong to
//! the segment in progress (§4.4.4.9, §6.2.5.2). zerocast names parts by a stream-global
//! sequence number instead (`part-<seq>.m4s`, so that the hint always names the next part,
//! whatever segment it falls in); [`zerocast_part_seq`] reads it and [`sequence_fault`] checks
//! that the listed parts are consecutive and the hint names the one after the last.

/// A part: segment `msn`, index `index` within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartId {
    /// Media sequence number of its segment.
    pub msn: u64,
    /// Index within the segment, from 0.
    pub index: u32,
}

impl std::fmt::Display for PartId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.msn, self.index)
    }
}

/// One `EXT-X-PART`.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Its position.
    pub id: PartId,
    /// URI as written.
    pub uri: String,
    /// DURATION, seconds.
    pub duration: f64,
    /// INDEPENDENT=YES.
    pub independent: bool,
}

/// `EXT-X-PRELOAD-HINT:TYPE=PART`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// Its position: the part a blocking reload asks for.
    pub id: PartId,
    /// URI as written.
    pub uri: String,
}

/// The parts of a media playlist this harness uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: Option<u64>,
    /// EXT-X-PART-INF PART-TARGET, seconds.
    pub part_target: Option<f64>,
    /// EXT-X-SERVER-CONTROL CAN-BLOCK-RELOAD=YES.
    pub can_block_reload: bool,
    /// URI of the last EXT-X-MAP.
    pub map_uri: Option<String>,
    /// Every EXT-X-PART, in playlist order.
    pub parts: Vec<Part>,
    /// The preload hint of type PART.
    pub hint: Option<Hint>,
    /// MSN of the segment in progress (the one after the last complete segment).
    pub next_msn: u64,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

/// Why a playlist is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// The first line is not `#EXTM3U`.
    #[error("not a playlist (no #EXTM3U)")]
    NotM3u,
    /// A tag broke its grammar.
    #[error("line {line}: {what}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
}

impl MediaPlaylist {
    /// Parses a media playlist.
    pub fn parse(text: &str) -> Result<MediaPlaylist, PlaylistError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l.trim_end() == "#EXTM3U" => {}
            _ => return Err(PlaylistError::NotM3u),
        }
        let mut p = MediaPlaylist::default();
        let mut msn = 0u64;
        let mut index = 0u32;
        for (n, line) in lines {
            let line = line.trim();
            let bad = |what| PlaylistError::Invalid { line: n + 1, what };
            if line.is_empty() {
                continue;
            }
            let Some(tag) = line.strip_prefix('#') else {
                // A segment URI: it closes the segment `msn`.
                msn += 1;
                index = 0;
                continue;
            };
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXT-X-TARGETDURATION" => {
                    p.target_duration =
                        Some(value.parse().map_err(|_| bad("EXT-X-TARGETDURATION"))?);
                }
                "EXT-X-MEDIA-SEQUENCE" => {
                    msn = value.parse().map_err(|_| bad("EXT-X-MEDIA-SEQUENCE"))?;
                }
                "EXT-X-PART-INF" => {
                    let v = attribute(value, "PART-TARGET").ok_or(bad("no PART-TARGET"))?;
                    p.part_target = Some(v.parse().map_err(|_| bad("PART-TARGET"))?);
                }
                "EXT-X-SERVER-CONTROL" => {
                    p.can_block_reload = attribute(value, "CAN-BLOCK-RELOAD") == Some("YES");
                }
                "EXT-X-MAP" => {
                    p.map_uri = Some(
                        attribute(value, "URI")
                            .ok_or(bad("EXT-X-MAP without URI"))?
                            .to_owned(),
                    );
                }
                "EXT-X-PART" => {
                    let uri = attribute(value, "URI").ok_or(bad("EXT-X-PART without URI"))?;
                    let duration = attribute(value, "DURATION")
                        .ok_or(bad("EXT-X-PART without DURATION"))?
                        .parse()
                        .map_err(|_| bad("EXT-X-PART DURATION"))?;
                    p.parts.push(Part {
                        id: PartId { msn, index },
                        uri: uri.to_owned(),
                        duration,
                        independent: attribute(value, "INDEPENDENT") == Some("YES"),
                    });
                    index += 1;
                }
                "EXT-X-PRELOAD-HINT" if attribute(value, "TYPE") == Some("PART") => {
                    let uri =
                        attribute(value, "URI").ok_or(bad("EXT-X-PRELOAD-HINT without URI"))?;
                    p.hint = Some(Hint {
                        id: PartId { msn, index },
                        uri: uri.to_owned(),
                    });
                }
                "EXT-X-ENDLIST" => p.ended = true,
                _ => {}
            }
        }
        p.next_msn = msn;
        Ok(p)
    }
}

/// The value of attribute `key` in an attribute list (§4.2), quotes removed.
pub fn attribute<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            let next = q[end + 1..].strip_prefix(',').unwrap_or(&q[end + 1..]);
            (&q[..end], next)
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        if k.trim() == key {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// The part sequence number spelled in a zerocast part URI, `part-<seq>.m4s`.
pub fn zerocast_part_seq(uri: &str) -> Option<u64> {
    let file = uri.rsplit('/').next()?.split('?').next()?;
    let seq = file.strip_prefix("part-")?.strip_suffix(".m4s")?;
    if !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// Where zerocast's part names break their sequence in `pl`: two listed parts that are not
/// consecutive, or a preload hint that does not name the part after the last one listed.
/// `None` when they are in sequence (or the names are not zerocast's).
pub fn sequence_fault(pl: &MediaPlaylist) -> Option<String> {
    let named = |uri: &str| zerocast_part_seq(uri).map(|seq| (seq, uri.to_owned()));
    let parts = pl.parts.iter().map(|p| (named(&p.uri), p.id));
    let hint = pl.hint.iter().map(|h| (named(&h.uri), h.id));
    let mut previous: Option<(u64, PartId)> = None;
    for (name, id) in parts.chain(hint) {
        let (seq, uri) = name?;
        if let Some((prev, prev_id)) = previous {
            if seq != prev + 1 {
                return Some(format!("{uri} at {id} follows part {prev} at {prev_id}"));
            }
        }
        previous = Some((seq, id));
    }
    None
}

/// The first variant URI of a multivariant playlist (`#EXT-X-STREAM-INF` then a URI line).
pub fn first_variant(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    while let Some(l) = lines.next() {
        if l.starts_with("#EXT-X-STREAM-INF") {
            return lines.find(|l| !l.is_empty() && !l.starts_with('#'));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-MAP:URI=\"init-1.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:00.000Z
#EXTINF:2.000,
seg-7.m4s
#EXT-X-PART:DURATION=0.200,URI=\"part-80.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI=\"part-81.m4s\"
#EXTINF:2.000,
seg-8.m4s
#EXT-X-PART:DURATION=0.200,URI=\"part-82.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.167,URI=\"part-83.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-84.m4s\"
";

    #[test]
    fn numbers_parts_by_position() {
        let p = MediaPlaylist::parse(LIVE).unwrap();
        assert_eq!(p.target_duration, Some(2));
        assert_eq!(p.part_target, Some(0.2));
        assert!(p.can_block_reload);
        assert_eq!(p.map_uri.as_deref(), Some("init-1.mp4"));
        let ids: Vec<String> = p.parts.iter().map(|x| x.id.to_string()).collect();
        assert_eq!(ids, ["8.0", "8.1", "9.0", "9.1"]);
        assert!(p.parts[2].independent && !p.parts[3].independent);
        assert_eq!(p.parts[3].duration, 0.167);
        let hint = p.hint.clone().unwrap();
        assert_eq!(hint.id, PartId { msn: 9, index: 2 });
        assert_eq!(hint.uri, "part-84.m4s");
        assert_eq!(p.next_msn, 9);
        let seqs: Vec<Option<u64>> = p.parts.iter().map(|x| zerocast_part_seq(&x.uri)).collect();
        assert_eq!(seqs, [Some(80), Some(81), Some(82), Some(83)]);
        assert_eq!(zerocast_part_seq(&hint.uri), Some(84));
        assert_eq!(sequence_fault(&p), None);
        assert!(!p.ended);
    }

    #[test]
    fn hint_at_a_segment_boundary_is_part_zero_of_the_next() {
        let text =
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-PART:DURATION=0.2,URI=\"part-30.m4s\"\n\
                    #EXTINF:0.2,\nseg-3.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-31.m4s\"\n";
        let p = MediaPlaylist::parse(text).unwrap();
        assert_eq!(p.hint.clone().unwrap().id, PartId { msn: 4, index: 0 });
        assert_eq!(sequence_fault(&p), None);
    }

    #[test]
    fn part_names_out_of_sequence_are_faults() {
        assert_eq!(zerocast_part_seq("/hls/a/part-12.m4s?x=1"), Some(12));
        for bad in ["part-1-2.m4s", "part-+1.m4s", "part-.m4s", "seg-1.m4s"] {
            assert_eq!(zerocast_part_seq(bad), None, "{bad}");
        }
        // Names that are not zerocast's are not checked.
        let other = LIVE.replace("part-", "p");
        assert_eq!(sequence_fault(&MediaPlaylist::parse(&other).unwrap()), None);
        let gap = LIVE.replace("part-82", "part-90");
        let fault = sequence_fault(&MediaPlaylist::parse(&gap).unwrap()).unwrap();
        assert_eq!(fault, "part-90.m4s at 9.0 follows part 81 at 8.1");
        let stale = LIVE.replace("part-84", "part-85");
        let fault = sequence_fault(&MediaPlaylist::parse(&stale).unwrap()).unwrap();
        assert_eq!(fault, "part-85.m4s at 9.2 follows part 83 at 9.1");
    }

    #[test]
    fn attribute_lists() {
        let l = "TYPE=PART,URI=\"a,b=c.m4s\",BYTERANGE-START=10";
        assert_eq!(attribute(l, "URI"), Some("a,b=c.m4s"));
        assert_eq!(attribute(l, "TYPE"), Some("PART"));
        assert_eq!(attribute(l, "BYTERANGE-START"), Some("10"));
        assert_eq!(attribute(l, "START"), None);
    }

    #[test]
    fn rejects_junk() {
        assert_eq!(MediaPlaylist::parse("hello"), Err(PlaylistError::NotM3u));
        assert!(matches!(
            MediaPlaylist::parse("#EXTM3U\n#EXT-X-PART:URI=\"x\"\n"),
            Err(PlaylistError::Invalid { line: 2, .. })
        ));
    }

    #[test]
    fn finds_the_variant() {
        let mv = "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\"\nmedia.m3u8\n";
        assert_eq!(first_variant(mv), Some("media.m3u8"));
        assert_eq!(first_variant(LIVE), None);
    }
}
