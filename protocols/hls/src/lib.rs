//! Sans-IO Low-Latency HLS for zerocast: packages a live stream into fMP4/CMAF segments and
//! parts (RFC 8216bis with EXT-X-PART, EXT-X-PRELOAD-HINT, blocking playlist reload and delta
//! updates) and renders the playlists.
//!
//! # Design
//!
//! Two halves, joined by a stream of [`HlsUpdate`]s:
//!
//! - [`Packager`] (one per live stream, on the publisher's shard) turns tracks and frames into
//!   updates: init segments, segment starts, parts, segment ends, the end. It cuts parts and
//!   segments by the frames' own timestamps; the wall clock only stamps program date times and
//!   comes in as an argument.
//! - [`Window`] (one per stream on every shard that serves it) applies the updates and answers
//!   the HTTP layer: playlists, blocking-reload readiness, init segments, parts, segments.
//!
//! Updates are `Send + Clone` and hold media in refcounted `Bytes`, so the engine fans them out
//! to other shards without copying: a part is `moof` + `mdat` header in one small buffer and
//! the frames' original slices, and a segment is its parts, back to back.
//!
//! Nothing here reads a clock, touches a file or socket, or spawns.
//!
//! # Drive-loop contract
//!
//! 1. Publisher side: `set_tracks` when the tracks are known (again whenever they change),
//!    `push_frame` for every frame with the Unix time it arrived, `end` when the publisher
//!    leaves. Apply every returned update, in order, to every window of the stream.
//! 2. HTTP side: [`Resource::parse`] the file name. For `media.m3u8`, [`PlaylistRequest::parse`]
//!    the query (400 on error); while [`Window::readiness`] says `Wait`, hold the request and
//!    ask again whenever [`Window::revision`] changes (give up after a few target durations);
//!    then answer [`Window::media_playlist`]. Parts are named `part-<seq>.m4s` by a
//!    stream-global sequence number (the playlist's `_HLS_msn`/`_HLS_part` stay positional);
//!    [`Window::part`] answers [`PartLookup::NotYet`] for the hinted next part, whatever
//!    segment it will fall in: hold those the same way.
//! 3. Republish under the same name: `Packager::new(cfg, Some(&window))` and keep applying to
//!    the same window; numbering (segments and parts) continues and the first segment is a
//!    discontinuity.
//!
//! ```no_run
//! use zerocast_hls::{
//!     HlsUpdate, PackagerConfig, Packager, PartLookup, PlaylistRequest, Readiness, Resource, Window,
//! };
//! # fn tracks() -> Vec<zerocast_codecs::Track> { Vec::new() }
//! # fn next_frame() -> Option<(zerocast_codecs::Frame, u64)> { None }
//! # fn fan_out(_: &HlsUpdate) {}
//! let cfg = PackagerConfig::default();
//! let mut window = Window::new(cfg);
//! let mut packager = Packager::new(cfg, None);
//! let mut publish = |updates: Vec<HlsUpdate>, window: &mut Window| {
//!     for u in &updates {
//!         window.apply(u);
//!         fan_out(u); // other shards apply it to their own window
//!     }
//! };
//! publish(packager.set_tracks(&tracks())?, &mut window);
//! while let Some((frame, unix_ms)) = next_frame() {
//!     match packager.push_frame(&frame, unix_ms) {
//!         Ok(updates) => publish(updates, &mut window),
//!         Err(e) => eprintln!("hls: frame dropped: {e}"),
//!     }
//! }
//! publish(packager.end(), &mut window);
//!
//! // GET /hls/<stream>/media.m3u8?_HLS_msn=5&_HLS_part=2
//! let req = PlaylistRequest::parse("_HLS_msn=5&_HLS_part=2").expect("400 otherwise");
//! match window.readiness(&req) {
//!     Readiness::Ready => println!("{}", window.media_playlist(&req)),
//!     Readiness::Wait => { /* hold until window.revision() changes */ }
//!     Readiness::BadRequest(why) => eprintln!("400 {why}"),
//! }
//! // GET /hls/<stream>/part-53.m4s
//! if let Some(Resource::Part { seq }) = Resource::parse("part-53.m4s") {
//!     match window.part(seq) {
//!         PartLookup::Found(body) => drop(body), // vectored write, video/mp4
//!         PartLookup::NotYet => { /* hold until window.revision() changes */ }
//!         PartLookup::Gone => { /* 404 */ }
//!     }
//! }
//! # Ok::<(), zerocast_hls::HlsError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod packager;
mod request;
mod update;
mod window;

#[cfg(test)]
mod tests;

pub use config::PackagerConfig;
pub use packager::Packager;
pub use request::{PlaylistRequest, QueryError, Resource, MAX_MSN, MAX_PART};
pub use update::{HlsError, HlsUpdate, StreamInfo};
pub use window::{PartLookup, Readiness, Window};
