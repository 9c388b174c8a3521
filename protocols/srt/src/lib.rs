//! Sans-IO SRT (Secure Reliable Transport, draft-sharabayko-srt) for zerocast: live mode,
//! the HSv5 handshake in both roles, AES-CTR encryption, interoperable with libsrt.
//!
//! # Design
//!
//! - [`packet`]: the wire format, data and control packets and handshake extensions.
//! - [`handshake`]: the [`Listener`] (stateless SYN cookies, then a [`ConnectRequest`] the
//!   application accepts or refuses) and the [`Caller`].
//! - [`rendezvous`]: the [`Rendezvous`] role, two peers that both connect (HSv5 cookie contest).
//! - [`Connection`]: an established session. The receiving half reorders, reports losses
//!   (NAK, at once and periodically), acknowledges every 10 ms, and delivers each payload at
//!   its TSBPD time (sender timestamp + the negotiated latency), giving up gaps whose time
//!   has passed. The sending half keeps unacknowledged packets, resends what is reported
//!   lost, drops what the receiver could no longer play, and paces its output.
//! - [`crypto`]: key material (KMREQ/KMRSP), PBKDF2 + AES key wrap, AES-CTR, key refresh.
//! - [`access`]: the stream ID (`#!::r=live/NAME,m=request`).
//!
//! Nothing here reads a clock, touches a socket, spawns or draws OS randomness: time comes in
//! with every input, and randomness comes from an [`Entropy`] seeded by the driver.
//!
//! # Drive-loop contract
//!
//! For each UDP datagram from a peer with a session, call
//! `handle_input(Input::Receive(now, datagram))`; when the last `Output::Timeout` instant
//! passes, call `handle_input(Input::Timeout(now))`. After every input, and after
//! [`Connection::send`], drain `poll_output()` until it returns `Output::Timeout`: send each
//! `Transmit` to the peer, act on each `Event`. A datagram from an address without a session
//! goes to [`Listener::handle`].
//!
//! ```no_run
//! use std::time::Instant;
//! use zerocast_srt::{Connection, Event, Input, Output};
//!
//! fn drive(conn: &mut Connection, datagram: bytes::Bytes, send: impl Fn(&[bytes::Bytes])) {
//!     conn.handle_input(Input::Receive(Instant::now(), datagram));
//!     loop {
//!         match conn.poll_output() {
//!             Output::Transmit(rope) => send(rope.parts()),
//!             Output::Event(Event::Data(payload)) => { /* demux MPEG-TS */ }
//!             Output::Event(Event::Closed(reason)) => { /* tear down */ }
//!             Output::Timeout(at) => break, // sleep until `at` or the next datagram
//!         }
//!     }
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod config;
pub mod connection;
pub mod crypto;
mod entropy;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod handshake;
pub mod packet;
pub mod reject;
pub mod rendezvous;
pub mod seq;
mod stats;

pub use access::{Mode, StreamId};
pub use config::SessionConfig;
pub use connection::{CloseReason, Connection, Event, Input, Output};
pub use entropy::Entropy;
pub use handshake::{Caller, CallerOutput, ConnectRequest, Listener, ListenerOutput};
pub use reject::RejectReason;
pub use rendezvous::{Rendezvous, RendezvousOutput, Role};
pub use seq::SeqNo;
pub use stats::Stats;
