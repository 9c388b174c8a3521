//! Parsing what HTTP clients send: playlist delivery directives (RFC 8216bis 6.2.5) and
//! resource names.

/// The largest `_HLS_msn` accepted: 2^53 - 1, the largest integer a JavaScript player can
/// hold exactly; anything above is not a real player's request.
pub const MAX_MSN: u64 = (1 << 53) - 1;
/// The largest `_HLS_part` accepted; no segment has this many parts.
pub const MAX_PART: u32 = 65_535;

/// Delivery directives of a media playlist request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaylistRequest {
    /// `_HLS_msn`: block until this segment is in the playlist.
    pub msn: Option<u64>,
    /// `_HLS_part`: with `msn`, block until this part of it is.
    pub part: Option<u32>,
    /// `_HLS_skip=YES` or `v2`: answer with a delta update. There are no date ranges to skip,
    /// so `v2` means the same as `YES`.
    pub skip: bool,
}

/// Why a playlist query was refused; the message suits a 400 response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Not a plain decimal integer.
    #[error("{param} must be a decimal integer, got {value:?}")]
    NotANumber {
        /// The parameter.
        param: &'static str,
        /// The value (at most 32 characters of it).
        value: String,
    },
    /// Too large to be a real request (or to fit the integer type).
    #[error("{param} exceeds {max}")]
    TooLarge {
        /// The parameter.
        param: &'static str,
        /// The largest accepted value.
        max: u64,
    },
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part requires _HLS_msn")]
    PartWithoutMsn,
    /// `_HLS_skip` other than `YES` or `v2`.
    #[error("_HLS_skip must be YES or v2, got {value:?}")]
    BadSkip {
        /// The value (at most 32 characters of it).
        value: String,
    },
    /// A directive given twice, which would be ambiguous.
    #[error("{param} given more than once")]
    Repeated {
        /// The parameter.
        param: &'static str,
    },
}

fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

/// A plain decimal integer: ASCII digits only (no sign, no spaces), `None` when it
/// overflows `u64`.
fn decimal(s: &str) -> Option<Result<u64, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().map_err(|_| ()))
}

impl PlaylistRequest {
    /// Parses the query string of a media playlist request (with or without the leading
    /// `?`). Unknown parameters are ignored; values are taken literally (the directives never
    /// need percent-encoding).
    pub fn parse(query: &str) -> Result<PlaylistRequest, QueryError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let mut req = PlaylistRequest::default();
        let mut skip_seen = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |param: &'static str, max: u64| match decimal(value) {
                None => Err(QueryError::NotANumber {
                    param,
                    value: clip(value),
                }),
                Some(Ok(v)) if v <= max => Ok(v),
                Some(_) => Err(QueryError::TooLarge { param, max }),
            };
            match key {
                "_HLS_msn" if req.msn.is_some() => {
                    return Err(QueryError::Repeated { param: "_HLS_msn" })
                }
                "_HLS_msn" => req.msn = Some(number("_HLS_msn", MAX_MSN)?),
                "_HLS_part" if req.part.is_some() => {
                    return Err(QueryError::Repeated { param: "_HLS_part" })
                }
                "_HLS_part" => {
                    // Fits: at most MAX_PART.
                    req.part = Some(number("_HLS_part", MAX_PART.into())? as u32);
                }
                "_HLS_skip" if skip_seen => {
                    return Err(QueryError::Repeated { param: "_HLS_skip" })
                }
                "_HLS_skip" => {
                    skip_seen = true;
                    req.skip = match value {
                        "YES" | "v2" => true,
                        _ => return Err(QueryError::BadSkip { value: clip(value) }),
                    };
                }
                _ => {}
            }
        }
        if req.part.is_some() && req.msn.is_none() {
            return Err(QueryError::PartWithoutMsn);
        }
        Ok(req)
    }
}

/// A file of a stream, the name after `/hls/<stream>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `index.m3u8`: the multivariant playlist.
    Multivariant,
    /// `media.m3u8`: the media playlist.
    Media,
    /// `init-<id>.mp4`.
    Init {
        /// Init segment id.
        id: u64,
    },
    /// `seg-<msn>.m4s`: a complete segment.
    Segment {
        /// Media sequence number.
        msn: u64,
    },
    /// `part-<seq>.m4s`: a part, by its stream-global sequence number.
    Part {
        /// Part sequence number.
        seq: u64,
    },
}

/// A canonical decimal number: digits only, no leading zero (each resource has exactly one
/// name, so caches and logs never see aliases), within `u64`.
fn canonical(s: &str) -> Option<u64> {
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    decimal(s)?.ok()
}

impl Resource {
    /// Parses a file name (without query string); anything but the five name patterns with
    /// canonical in-range numbers is `None`.
    pub fn parse(name: &str) -> Option<Resource> {
        match name {
            "index.m3u8" => return Some(Resource::Multivariant),
            "media.m3u8" => return Some(Resource::Media),
            _ => {}
        }
        if let Some(id) = name
            .strip_prefix("init-")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return Some(Resource::Init { id: canonical(id)? });
        }
        if let Some(msn) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            return Some(Resource::Segment {
                msn: canonical(msn)?,
            });
        }
        let seq = name.strip_prefix("part-")?.strip_suffix(".m4s")?;
        Some(Resource::Part {
            seq: canonical(seq)?,
        })
    }

    /// The Content-Type to serve it with.
    pub fn content_type(&self) -> &'static str {
        match self {
            Resource::Multivariant | Resource::Media => "application/vnd.apple.mpegurl",
            Resource::Init { .. } | Resource::Segment { .. } | Resource::Part { .. } => "video/mp4",
        }
    }
}
