//! AMF0 (Action Message Format 0) values, as used by RTMP commands and data messages.
//!
//! Decoding is a hand-written reader over `&[u8]` with a length check before every read and
//! caps on string length, container item count and nesting depth, so that a few hostile bytes
//! can never make the decoder allocate much or recurse deeply. Reference: "Action Message
//! Format -- AMF 0", Adobe, section 2 (type markers).

/// Type markers (AMF0 spec section 2.1).
mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0a;
    pub const DATE: u8 = 0x0b;
    pub const LONG_STRING: u8 = 0x0c;
    pub const UNSUPPORTED: u8 = 0x0d;
    pub const XML_DOCUMENT: u8 = 0x0f;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// An IEEE 754 double.
    Number(f64),
    /// A boolean.
    Boolean(bool),
    /// A UTF-8 string of at most 65535 bytes (longer ones are encoded as long strings).
    String(String),
    /// An anonymous object: ordered key/value pairs (typed objects decode to this too).
    Object(Vec<(String, Amf0Value)>),
    /// `null`.
    Null,
    /// `undefined` (the "unsupported" marker also decodes to this).
    Undefined,
    /// An associative array (`onMetaData` uses it).
    EcmaArray(Vec<(String, Amf0Value)>),
    /// A dense array.
    StrictArray(Vec<Amf0Value>),
    /// A date: milliseconds since the Unix epoch and a time-zone field (spec: reserved, 0).
    Date {
        /// Milliseconds since 1970-01-01 UTC.
        millis: f64,
        /// Time-zone offset field, as sent.
        tz: i16,
    },
    /// A string longer than 65535 bytes (XML documents decode to this too).
    LongString(String),
}

impl Amf0Value {
    /// The string content of `String` and `LongString` values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) | Amf0Value::LongString(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a `Number`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The properties of an `Object` or `EcmaArray`.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(p) | Amf0Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// The property `key` of an `Object` or `EcmaArray` (first match).
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Shorthand for a `String` value.
    pub fn string(s: impl Into<String>) -> Self {
        Amf0Value::String(s.into())
    }

    /// Shorthand for an `Object` from `(&str, value)` pairs.
    pub fn object<'a>(props: impl IntoIterator<Item = (&'a str, Amf0Value)>) -> Self {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

/// Caps applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amf0Limits {
    /// Maximum container nesting (an object in an object has depth 2).
    pub max_depth: usize,
    /// Maximum string length in bytes (keys included).
    pub max_string: usize,
    /// Maximum number of items in one container.
    pub max_items: usize,
}

impl Default for Amf0Limits {
    fn default() -> Self {
        Amf0Limits {
            max_depth: 16,
            max_string: 64 * 1024,
            max_items: 1024,
        }
    }
}

/// Why AMF0 decoding failed. Offsets are relative to the start of the decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Amf0Error {
    /// The buffer ended inside a value; `needed` more bytes would allow progress.
    #[error("AMF0 value incomplete: {needed} more bytes needed")]
    Incomplete {
        /// Bytes missing for the read that failed.
        needed: usize,
    },
    /// The bytes break an AMF0 rule.
    #[error("invalid AMF0 at offset {offset}: {what}")]
    Invalid {
        /// Offset of the offending byte.
        offset: usize,
        /// The rule broken.
        what: &'static str,
    },
    /// Containers nested deeper than allowed.
    #[error("AMF0 nesting deeper than {max} at offset {offset}")]
    TooDeep {
        /// Offset of the container marker.
        offset: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A string longer than allowed.
    #[error("AMF0 string of {len} bytes exceeds {max} at offset {offset}")]
    StringTooLong {
        /// Offset of the length field.
        offset: usize,
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// A container with more items than allowed.
    #[error("AMF0 container with more than {max} items at offset {offset}")]
    TooManyItems {
        /// Offset of the item that went over.
        offset: usize,
        /// Configured maximum.
        max: usize,
    },
}

/// A bounds-checked big-endian reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn need(&self, n: usize) -> Result<(), Amf0Error> {
        let left = self.buf.len() - self.pos;
        if left < n {
            Err(Amf0Error::Incomplete { needed: n - left })
        } else {
            Ok(())
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        self.need(n)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

struct Decoder<'a> {
    r: Reader<'a>,
    limits: Amf0Limits,
}

impl Decoder<'_> {
    fn string_body(&mut self, len: usize, len_offset: usize) -> Result<String, Amf0Error> {
        if len > self.limits.max_string {
            return Err(Amf0Error::StringTooLong {
                offset: len_offset,
                len: len as u64,
                max: self.limits.max_string,
            });
        }
        let b = self.r.take(len)?;
        // Peers are not always careful with encodings; keep going with replacement characters.
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    fn short_string(&mut self) -> Result<String, Amf0Error> {
        let at = self.r.pos;
        let len = self.r.u16()? as usize;
        self.string_body(len, at)
    }

    fn long_string(&mut self) -> Result<String, Amf0Error> {
        let at = self.r.pos;
        let len = self.r.u32()? as usize;
        self.string_body(len, at)
    }

    /// Properties up to the object-end marker. With `lenient_end`, a buffer that ends where a
    /// key would start also ends the list (some encoders omit the ECMA array end marker).
    fn properties(
        &mut self,
        depth: usize,
        lenient_end: bool,
    ) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        let mut props = Vec::new();
        loop {
            if lenient_end && self.r.is_empty() {
                return Ok(props);
            }
            let at = self.r.pos;
            let key = self.short_string()?;
            if key.is_empty() && self.r.peek() == Some(marker::OBJECT_END) {
                self.r.pos += 1;
                return Ok(props);
            }
            if props.len() >= self.limits.max_items {
                return Err(Amf0Error::TooManyItems {
                    offset: at,
                    max: self.limits.max_items,
                });
            }
            let v = self.value(depth)?;
            props.push((key, v));
        }
    }

    fn enter(&self, depth: usize, at: usize) -> Result<usize, Amf0Error> {
        let d = depth + 1;
        if d > self.limits.max_depth {
            Err(Amf0Error::TooDeep {
                offset: at,
                max: self.limits.max_depth,
            })
        } else {
            Ok(d)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, Amf0Error> {
        let at = self.r.pos;
        let m = self.r.u8()?;
        Ok(match m {
            marker::NUMBER => Amf0Value::Number(self.r.f64()?),
            marker::BOOLEAN => Amf0Value::Boolean(self.r.u8()? != 0),
            marker::STRING => Amf0Value::String(self.short_string()?),
            marker::OBJECT => {
                let d = self.enter(depth, at)?;
                Amf0Value::Object(self.properties(d, false)?)
            }
            marker::TYPED_OBJECT => {
                let d = self.enter(depth, at)?;
                let _class = self.short_string()?;
                Amf0Value::Object(self.properties(d, false)?)
            }
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED | marker::UNSUPPORTED => Amf0Value::Undefined,
            marker::ECMA_ARRAY => {
                let d = self.enter(depth, at)?;
                // The count is only a hint and often wrong; the end marker ends the array.
                let _hint = self.r.u32()?;
                Amf0Value::EcmaArray(self.properties(d, true)?)
            }
            marker::STRICT_ARRAY => {
                let d = self.enter(depth, at)?;
                let count_at = self.r.pos;
                let count = self.r.u32()? as usize;
                if count > self.limits.max_items {
                    return Err(Amf0Error::TooManyItems {
                        offset: count_at,
                        max: self.limits.max_items,
                    });
                }
                // Every item takes at least one byte: never reserve more than the input holds.
                let left = self.r.buf.len() - self.r.pos;
                let mut items = Vec::with_capacity(count.min(left));
                for _ in 0..count {
                    items.push(self.value(d)?);
                }
                Amf0Value::StrictArray(items)
            }
            marker::DATE => {
                let millis = self.r.f64()?;
                let tz = self.r.u16()? as i16;
                Amf0Value::Date { millis, tz }
            }
            marker::LONG_STRING | marker::XML_DOCUMENT => {
                Amf0Value::LongString(self.long_string()?)
            }
            marker::OBJECT_END => {
                return Err(Amf0Error::Invalid {
                    offset: at,
                    what: "object end marker outside an object",
                })
            }
            marker::REFERENCE => {
                return Err(Amf0Error::Invalid {
                    offset: at,
                    what: "object references are not supported",
                })
            }
            marker::AVMPLUS => {
                return Err(Amf0Error::Invalid {
                    offset: at,
                    what: "AMF3 values are not supported",
                })
            }
            _ => {
                return Err(Amf0Error::Invalid {
                    offset: at,
                    what: "unknown AMF0 type marker",
                })
            }
        })
    }
}

/// Decodes one value from the start of `buf`; returns it and the number of bytes it used.
pub fn decode(buf: &[u8], limits: &Amf0Limits) -> Result<(Amf0Value, usize), Amf0Error> {
    let mut d = Decoder {
        r: Reader { buf, pos: 0 },
        limits: *limits,
    };
    let v = d.value(0)?;
    Ok((v, d.r.pos))
}

/// Decodes values until `buf` is exhausted (a command or data message body).
///
/// At most `limits.max_items` top-level values are accepted.
pub fn decode_all(buf: &[u8], limits: &Amf0Limits) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut d = Decoder {
        r: Reader { buf, pos: 0 },
        limits: *limits,
    };
    let mut out = Vec::new();
    while !d.r.is_empty() {
        if out.len() >= limits.max_items {
            return Err(Amf0Error::TooManyItems {
                offset: d.r.pos,
                max: limits.max_items,
            });
        }
        out.push(d.value(0)?);
    }
    Ok(out)
}

fn put_key(out: &mut Vec<u8>, s: &str) {
    // Keys cannot be long strings; cut at the last char boundary within 65535 bytes.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_string(out: &mut Vec<u8>, s: &str, force_long: bool) {
    if !force_long && s.len() <= u16::MAX as usize {
        out.push(marker::STRING);
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    } else {
        out.push(marker::LONG_STRING);
        // Strings above 4 GiB cannot be represented; truncate rather than corrupt the stream.
        let len = s.len().min(u32::MAX as usize);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&s.as_bytes()[..len]);
        return;
    }
    out.extend_from_slice(s.as_bytes());
}

fn put_props(out: &mut Vec<u8>, props: &[(String, Amf0Value)]) {
    for (k, v) in props {
        put_key(out, k);
        encode(v, out);
    }
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
}

/// Appends the encoding of `v` to `out`.
///
/// A `String` longer than 65535 bytes is written as a long string; object keys longer than
/// 65535 bytes are truncated (AMF0 cannot express them).
pub fn encode(v: &Amf0Value, out: &mut Vec<u8>) {
    match v {
        Amf0Value::Number(n) => {
            out.push(marker::NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => {
            out.push(marker::BOOLEAN);
            out.push(u8::from(*b));
        }
        Amf0Value::String(s) => put_string(out, s, false),
        Amf0Value::LongString(s) => put_string(out, s, true),
        Amf0Value::Object(p) => {
            out.push(marker::OBJECT);
            put_props(out, p);
        }
        Amf0Value::Null => out.push(marker::NULL),
        Amf0Value::Undefined => out.push(marker::UNDEFINED),
        Amf0Value::EcmaArray(p) => {
            out.push(marker::ECMA_ARRAY);
            out.extend_from_slice(&(p.len().min(u32::MAX as usize) as u32).to_be_bytes());
            put_props(out, p);
        }
        Amf0Value::StrictArray(items) => {
            out.push(marker::STRICT_ARRAY);
            out.extend_from_slice(&(items.len().min(u32::MAX as usize) as u32).to_be_bytes());
            for i in items {
                encode(i, out);
            }
        }
        Amf0Value::Date { millis, tz } => {
            out.push(marker::DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&tz.to_be_bytes());
        }
    }
}

/// Encodes a sequence of values into a new buffer.
pub fn encode_all(values: &[Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(v: Amf0Value) {
        let mut buf = Vec::new();
        encode(&v, &mut buf);
        let (d, n) = decode(&buf, &Amf0Limits::default()).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(d, v);
    }

    #[test]
    fn round_trips() {
        rt(Amf0Value::Number(1.5));
        rt(Amf0Value::Boolean(true));
        rt(Amf0Value::string("héllo"));
        rt(Amf0Value::Null);
        rt(Amf0Value::Undefined);
        rt(Amf0Value::Date {
            millis: 1e12,
            tz: -60,
        });
        rt(Amf0Value::LongString("x".repeat(10)));
        rt(Amf0Value::object([
            ("app", Amf0Value::string("live")),
            (
                "nested",
                Amf0Value::EcmaArray(vec![
                    ("a".into(), Amf0Value::Number(3.0)),
                    (
                        "b".into(),
                        Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Boolean(false)]),
                    ),
                ]),
            ),
            ("", Amf0Value::Number(0.0)),
        ]));
    }

    #[test]
    fn known_bytes() {
        let mut b = Vec::new();
        encode(&Amf0Value::string("connect"), &mut b);
        assert_eq!(b, b"\x02\x00\x07connect");
        let mut b = Vec::new();
        encode(&Amf0Value::object([("a", Amf0Value::Null)]), &mut b);
        assert_eq!(b, b"\x03\x00\x01a\x05\x00\x00\x09");
    }

    #[test]
    fn long_string_is_promoted() {
        let s = "y".repeat(70_000);
        let mut b = Vec::new();
        encode(&Amf0Value::String(s.clone()), &mut b);
        assert_eq!(b[0], marker::LONG_STRING);
        let limits = Amf0Limits {
            max_string: 100_000,
            ..Default::default()
        };
        assert_eq!(decode(&b, &limits).unwrap().0, Amf0Value::LongString(s));
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for _ in 0..depth {
            b.extend_from_slice(b"\x03\x00\x01k");
        }
        b.push(marker::NULL);
        for _ in 0..depth {
            b.extend_from_slice(&[0, 0, 9]);
        }
        b
    }

    #[test]
    fn nesting_cap() {
        let l = Amf0Limits::default();
        assert!(decode(&nested(16), &l).is_ok());
        assert!(matches!(
            decode(&nested(17), &l),
            Err(Amf0Error::TooDeep { max: 16, .. })
        ));
        assert!(matches!(
            decode(&nested(1000), &l),
            Err(Amf0Error::TooDeep { .. })
        ));
    }

    #[test]
    fn size_caps_without_allocating() {
        let l = Amf0Limits::default();
        // A 2 GiB long string.
        let b = [marker::LONG_STRING, 0x80, 0, 0, 0, b'a'];
        assert!(matches!(
            decode(&b, &l),
            Err(Amf0Error::StringTooLong {
                len: 0x8000_0000,
                ..
            })
        ));
        // A strict array announcing 2^31 items.
        let b = [marker::STRICT_ARRAY, 0x80, 0, 0, 0];
        assert!(matches!(
            decode(&b, &l),
            Err(Amf0Error::TooManyItems { .. })
        ));
        // Within the cap but not backed by bytes: incomplete, capacity bounded by input.
        let b = [marker::STRICT_ARRAY, 0, 0, 3, 0xff];
        assert!(matches!(decode(&b, &l), Err(Amf0Error::Incomplete { .. })));
        // Too many object properties.
        let mut b = vec![marker::OBJECT];
        for _ in 0..1025 {
            b.extend_from_slice(b"\x00\x01k\x05");
        }
        b.extend_from_slice(&[0, 0, 9]);
        assert!(matches!(
            decode(&b, &l),
            Err(Amf0Error::TooManyItems { .. })
        ));
    }

    #[test]
    fn incomplete_vs_invalid() {
        let l = Amf0Limits::default();
        assert_eq!(
            decode(b"\x00\x01\x02", &l),
            Err(Amf0Error::Incomplete { needed: 6 })
        );
        assert_eq!(
            decode(b"\x09", &l),
            Err(Amf0Error::Invalid {
                offset: 0,
                what: "object end marker outside an object"
            })
        );
        assert!(matches!(
            decode(b"\x42", &l),
            Err(Amf0Error::Invalid { offset: 0, .. })
        ));
    }

    #[test]
    fn ecma_array_without_end_marker() {
        let b = b"\x08\x00\x00\x00\x01\x00\x01a\x05";
        let v = decode_all(b, &Amf0Limits::default()).unwrap();
        assert_eq!(
            v,
            vec![Amf0Value::EcmaArray(vec![("a".into(), Amf0Value::Null)])]
        );
    }
}
