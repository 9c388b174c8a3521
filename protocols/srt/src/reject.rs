//! Why a handshake was refused: the rejection codes a listener puts in the handshake type
//! field of its answer (SRT spec 4.3, Table 7; libsrt `SRT_REJECT_REASON` and the
//! access-control `SRT_REJX_*` codes).
//!
//! Two numbers are involved. The *reason code* is what the application and libsrt's API
//! speak: 0..=17 for the system reasons, 1000..=1999 for the predefined access-control
//! ("REJX") codes modelled on HTTP statuses (1403 = forbidden), 2000.. for user codes. The
//! *wire code* is what the refusal handshake carries: the reason code plus 1000, so
//! "incorrect passphrase" (10) goes out as 1010 and "forbidden" (1403) as 2403. A wire code
//! below 1000 is not a refusal at all (it is one of the ordinary handshake types).

use std::fmt;

/// The smallest handshake type value that means "refused": wire code = this + reason code.
pub const WIRE_OFFSET: u32 = 1000;

/// A handshake refusal reason. Codes without a named variant (unassigned system codes,
/// unassigned 1xxx codes, the application's own 2xxx codes) are kept in [`RejectReason::Other`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// 0: no reason given (also libsrt's "in progress" value).
    Unknown,
    /// 1: a system call failed on the refusing side.
    System,
    /// 2: the peer refused (the caller's view of a listener's refusal).
    Peer,
    /// 3: the refusing side ran out of a resource.
    Resource,
    /// 4: the handshake contents were malformed or inconsistent.
    Rogue,
    /// 5: the listener's backlog of pending connections is full.
    Backlog,
    /// 6: an internal program error.
    Ipe,
    /// 7: the socket is closing.
    Close,
    /// 8: the peer's SRT version is older than the minimum the refusing side accepts.
    Version,
    /// 9: rendezvous cookie collision.
    RdvCookie,
    /// 10: the passphrases differ.
    BadSecret,
    /// 11: one side requires encryption and the other has no passphrase.
    Unsecure,
    /// 12: message API versus stream API mismatch.
    MessageApi,
    /// 13: incompatible congestion controllers.
    Congestion,
    /// 14: incompatible packet filters.
    Filter,
    /// 15: incompatible socket groups.
    Group,
    /// 16: the connection timed out.
    Timeout,
    /// 17: conflicting cipher configurations (libsrt with the AEAD preview).
    Crypto,
    /// 1000: an access-control refusal with no more precise code.
    Fallback,
    /// 1001: a key in the stream id is not supported.
    KeyNotSupported,
    /// 1002: the file path in the stream id is malformed or missing.
    FilePath,
    /// 1003: the `h` (host) key of the stream id names no host this service knows.
    HostNotFound,
    /// 1400: the stream id is malformed.
    BadRequest,
    /// 1401: authentication failed.
    Unauthorized,
    /// 1402: the server is overloaded or the caller's credits are exhausted.
    Overload,
    /// 1403: access to the resource is denied.
    Forbidden,
    /// 1404: the resource does not exist (now).
    NotFound,
    /// 1405: the mode (`m` key) is not supported for this resource.
    BadMode,
    /// 1406: the requested parameters cannot be satisfied.
    Unacceptable,
    /// 1409: the resource is already in use (e.g. someone else publishes it).
    Conflict,
    /// 1415: the media type (`t` key) is not supported.
    NotSupportedMedia,
    /// 1423: the resource is locked.
    Locked,
    /// 1424: a session this one depends on has gone.
    FailedDependency,
    /// 1500: an unexpected internal server error.
    InternalServerError,
    /// 1501: the request is understood but not implemented.
    Unimplemented,
    /// 1502: a gateway's upstream refused.
    Gateway,
    /// 1503: the service is down.
    Down,
    /// 1505: the SRT version is not supported (access-control flavour).
    UnsupportedVersion,
    /// 1507: no room to store the stream.
    NoRoom,
    /// Any other reason code (not the wire code).
    Other(u32),
}

/// Every named variant with its reason code; the single source for both directions.
const TABLE: [(RejectReason, u32); 39] = [
    (RejectReason::Unknown, 0),
    (RejectReason::System, 1),
    (RejectReason::Peer, 2),
    (RejectReason::Resource, 3),
    (RejectReason::Rogue, 4),
    (RejectReason::Backlog, 5),
    (RejectReason::Ipe, 6),
    (RejectReason::Close, 7),
    (RejectReason::Version, 8),
    (RejectReason::RdvCookie, 9),
    (RejectReason::BadSecret, 10),
    (RejectReason::Unsecure, 11),
    (RejectReason::MessageApi, 12),
    (RejectReason::Congestion, 13),
    (RejectReason::Filter, 14),
    (RejectReason::Group, 15),
    (RejectReason::Timeout, 16),
    (RejectReason::Crypto, 17),
    (RejectReason::Fallback, 1000),
    (RejectReason::KeyNotSupported, 1001),
    (RejectReason::FilePath, 1002),
    (RejectReason::HostNotFound, 1003),
    (RejectReason::BadRequest, 1400),
    (RejectReason::Unauthorized, 1401),
    (RejectReason::Overload, 1402),
    (RejectReason::Forbidden, 1403),
    (RejectReason::NotFound, 1404),
    (RejectReason::BadMode, 1405),
    (RejectReason::Unacceptable, 1406),
    (RejectReason::Conflict, 1409),
    (RejectReason::NotSupportedMedia, 1415),
    (RejectReason::Locked, 1423),
    (RejectReason::FailedDependency, 1424),
    (RejectReason::InternalServerError, 1500),
    (RejectReason::Unimplemented, 1501),
    (RejectReason::Gateway, 1502),
    (RejectReason::Down, 1503),
    (RejectReason::UnsupportedVersion, 1505),
    (RejectReason::NoRoom, 1507),
];

impl RejectReason {
    /// The reason code (libsrt's `srt_getrejectreason` value): 10 for [`RejectReason::BadSecret`],
    /// 1403 for [`RejectReason::Forbidden`].
    pub fn code(self) -> u32 {
        if let RejectReason::Other(code) = self {
            return code;
        }
        TABLE
            .iter()
            .find(|(r, _)| *r == self)
            .map_or(0, |&(_, code)| code)
    }

    /// The reason for a reason code; codes without a named variant become [`RejectReason::Other`].
    pub fn from_code(code: u32) -> RejectReason {
        TABLE
            .iter()
            .find(|&&(_, c)| c == code)
            .map_or(RejectReason::Other(code), |&(r, _)| r)
    }

    /// The value sent in the handshake type field of a refusal: the reason code plus 1000
    /// (libsrt `URQFailure`). Saturates at `u32::MAX` for absurd [`RejectReason::Other`] codes.
    pub fn wire_code(self) -> u32 {
        self.code().saturating_add(WIRE_OFFSET)
    }

    /// The reason a refusal handshake's type field carries. Values below 1000 are not
    /// refusals; they give [`RejectReason::Unknown`], as libsrt does.
    pub fn from_wire(code: u32) -> RejectReason {
        match code.checked_sub(WIRE_OFFSET) {
            Some(reason) => RejectReason::from_code(reason),
            None => RejectReason::Unknown,
        }
    }

    /// Whether this is an access-control refusal (a 1xxx predefined or 2xxx user code)
    /// rather than a transport-level one.
    pub fn is_access_control(self) -> bool {
        self.code() >= 1000
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            RejectReason::Unknown => "unknown or unspecified reason",
            RejectReason::System => "system function error",
            RejectReason::Peer => "rejected by peer",
            RejectReason::Resource => "resource allocation problem",
            RejectReason::Rogue => "malformed handshake",
            RejectReason::Backlog => "listener's backlog exceeded",
            RejectReason::Ipe => "internal program error",
            RejectReason::Close => "socket is closing",
            RejectReason::Version => "peer's SRT version is too old",
            RejectReason::RdvCookie => "rendezvous cookie collision",
            RejectReason::BadSecret => "incorrect passphrase",
            RejectReason::Unsecure => "passphrase required or unexpected",
            RejectReason::MessageApi => "message API / stream API mismatch",
            RejectReason::Congestion => "incompatible congestion controller",
            RejectReason::Filter => "incompatible packet filter",
            RejectReason::Group => "incompatible group",
            RejectReason::Timeout => "connection timed out",
            RejectReason::Crypto => "conflicting cryptographic configuration",
            RejectReason::Fallback => "access denied (no specific reason)",
            RejectReason::KeyNotSupported => "stream id key not supported",
            RejectReason::FilePath => "bad file path in stream id",
            RejectReason::HostNotFound => "host in stream id not found",
            RejectReason::BadRequest => "bad request: malformed stream id",
            RejectReason::Unauthorized => "unauthorized: authentication failed",
            RejectReason::Overload => "server overloaded or credits exceeded",
            RejectReason::Forbidden => "forbidden: access to the resource denied",
            RejectReason::NotFound => "resource not found",
            RejectReason::BadMode => "mode not supported for this resource",
            RejectReason::Unacceptable => "requested parameters cannot be satisfied",
            RejectReason::Conflict => "resource already in use",
            RejectReason::NotSupportedMedia => "media type not supported",
            RejectReason::Locked => "resource locked",
            RejectReason::FailedDependency => "a session this depends on has gone",
            RejectReason::InternalServerError => "internal server error",
            RejectReason::Unimplemented => "request not implemented",
            RejectReason::Gateway => "gateway's upstream refused",
            RejectReason::Down => "service down",
            RejectReason::UnsupportedVersion => "SRT version not supported",
            RejectReason::NoRoom => "no room to store the stream",
            RejectReason::Other(code) if *code >= 2000 => {
                return write!(f, "application-defined refusal {code}")
            }
            RejectReason::Other(code) => return write!(f, "refusal reason {code}"),
        };
        write!(f, "{text} ({})", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_code_is_reason_plus_1000() {
        // Captured: libsrt 1.5.1 refuses a wrong passphrase with handshake type 0x3F2.
        assert_eq!(RejectReason::BadSecret.wire_code(), 0x3F2);
        assert_eq!(RejectReason::from_wire(0x3F2), RejectReason::BadSecret);
        assert_eq!(RejectReason::Forbidden.code(), 1403);
        assert_eq!(RejectReason::Forbidden.wire_code(), 2403);
        assert_eq!(RejectReason::from_wire(2403), RejectReason::Forbidden);
        assert_eq!(RejectReason::Unknown.wire_code(), 1000);
        assert_eq!(RejectReason::Crypto.wire_code(), 1017);
    }

    #[test]
    fn every_named_reason_round_trips() {
        for (reason, code) in TABLE {
            assert_eq!(reason.code(), code);
            assert_eq!(RejectReason::from_code(code), reason);
            assert_eq!(RejectReason::from_wire(reason.wire_code()), reason);
            assert!(!reason.to_string().is_empty());
        }
    }

    #[test]
    fn unnamed_codes_are_kept() {
        assert_eq!(RejectReason::from_wire(3000), RejectReason::Other(2000));
        assert_eq!(RejectReason::Other(2000).wire_code(), 3000);
        assert!(RejectReason::Other(2000).is_access_control());
        assert_eq!(RejectReason::from_wire(1018), RejectReason::Other(18));
        assert!(!RejectReason::BadSecret.is_access_control());
        // Not a refusal at all (induction = 1).
        assert_eq!(RejectReason::from_wire(1), RejectReason::Unknown);
        assert_eq!(RejectReason::Other(u32::MAX).wire_code(), u32::MAX);
        assert_eq!(
            RejectReason::Other(2001).to_string(),
            "application-defined refusal 2001"
        );
        assert_eq!(
            RejectReason::Forbidden.to_string(),
            "forbidden: access to the resource denied (1403)"
        );
    }
}
