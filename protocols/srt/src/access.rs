//! The stream ID: what a caller asks for (SRT access control guidelines, "Stream ID").
//!
//! The structured form is `#!::` followed by comma-separated `key=value` pairs; zerocast reads
//! `r` (the resource, `live/NAME` or `live/KEY`) and `m` (`publish` or `request`; absent means
//! `request`). It also takes the short forms `publish:live/KEY` and `read:live/NAME`.

use thiserror::Error;

/// What the caller wants to do with the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send media to us.
    Publish,
    /// Receive media from us.
    Request,
}

/// A parsed stream ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId {
    /// The resource, as given (`live/abc`).
    pub resource: String,
    /// Publish or request.
    pub mode: Mode,
}

/// Why a stream ID was not understood.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamIdError {
    /// No stream ID at all.
    #[error("no stream ID; use #!::r=live/NAME,m=request or #!::r=live/KEY,m=publish")]
    Empty,
    /// A `#!::` pair without `=`.
    #[error("stream ID item {0:?} is not key=value")]
    NotKeyValue(String),
    /// `m=` other than publish or request.
    #[error("unsupported stream ID mode {0:?} (publish or request)")]
    BadMode(String),
    /// No `r=` in the structured form.
    #[error("stream ID has no resource (r=)")]
    NoResource,
    /// A key given twice.
    #[error("stream ID key {0:?} given twice")]
    Duplicate(String),
}

impl StreamId {
    /// Parses the structured or short form.
    pub fn parse(s: &str) -> Result<StreamId, StreamIdError> {
        if s.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if let Some(items) = s.strip_prefix("#!::") {
            let (mut resource, mut mode) = (None, None);
            for item in items.split(',').filter(|i| !i.is_empty()) {
                let (k, v) = item
                    .split_once('=')
                    .ok_or_else(|| StreamIdError::NotKeyValue(item.to_owned()))?;
                let slot = match k {
                    "r" => &mut resource,
                    "m" => &mut mode,
                    // Other keys (u=user, s=session, t=type, h=host) are allowed and ignored.
                    _ => continue,
                };
                if slot.replace(v).is_some() {
                    return Err(StreamIdError::Duplicate(k.to_owned()));
                }
            }
            let mode = match mode {
                None | Some("request") => Mode::Request,
                Some("publish") => Mode::Publish,
                Some(m) => return Err(StreamIdError::BadMode(m.to_owned())),
            };
            let resource = resource.ok_or(StreamIdError::NoResource)?;
            return Ok(StreamId {
                resource: resource.to_owned(),
                mode,
            });
        }
        if let Some(r) = s.strip_prefix("publish:") {
            return Ok(StreamId {
                resource: r.to_owned(),
                mode: Mode::Publish,
            });
        }
        if let Some(r) = s.strip_prefix("read:") {
            return Ok(StreamId {
                resource: r.to_owned(),
                mode: Mode::Request,
            });
        }
        // A bare resource is a request, as libsrt's own tools assume.
        Ok(StreamId {
            resource: s.to_owned(),
            mode: Mode::Request,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_and_short_forms() {
        let p = StreamId::parse("#!::r=live/abc,m=publish").unwrap();
        assert_eq!((p.resource.as_str(), p.mode), ("live/abc", Mode::Publish));
        let r = StreamId::parse("#!::u=joe,r=live/cam").unwrap();
        assert_eq!((r.resource.as_str(), r.mode), ("live/cam", Mode::Request));
        assert_eq!(
            StreamId::parse("publish:live/k").unwrap().mode,
            Mode::Publish
        );
        assert_eq!(StreamId::parse("read:live/n").unwrap().resource, "live/n");
        assert_eq!(StreamId::parse(""), Err(StreamIdError::Empty));
        assert_eq!(
            StreamId::parse("#!::r=a,m=bidirectional"),
            Err(StreamIdError::BadMode("bidirectional".into()))
        );
        assert_eq!(
            StreamId::parse("#!::m=publish"),
            Err(StreamIdError::NoResource)
        );
        assert!(matches!(
            StreamId::parse("#!::r=a,r=b"),
            Err(StreamIdError::Duplicate(_))
        ));
    }
}
