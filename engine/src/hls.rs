//! LL-HLS on a shard: the packager of each stream published here, and this shard's replica
//! of every stream's playlist window.
//!
//! A stream is packaged once, on its origin shard (`zerocast_hls::Packager`). Every update
//! (init segment, part, segment boundary, end) is applied to the origin's own window and sent
//! through the channel mesh to every other shard, which applies it to its replica. So any
//! shard answers any HLS request from memory, without asking another shard, and every shard
//! numbers segments and parts alike (a CDN or a player may reach several shards). Updates
//! carry `Bytes` refcounts: the media is shared, not copied, between shards.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;
use zerocast_codecs::Track;
use zerocast_hls::{HlsError, HlsUpdate, Packager, PackagerConfig, Window};

use crate::config::HlsConfig;
use crate::control::HLS_ACTIVE_WINDOW;
use crate::rt::{self, LocalEvent};
use crate::stream::MediaItem;

/// The packager configuration the `[hls]` section describes.
pub fn packager_config(cfg: &HlsConfig) -> PackagerConfig {
    PackagerConfig {
        segment_duration: cfg.segment_duration,
        part_duration: cfg.part_duration,
        window_segments: cfg.window,
    }
}

/// One stream's window on this shard, and a signal for requests waiting for it to change.
pub struct HlsStream {
    window: RefCell<Window>,
    changed: RefCell<LocalEvent>,
    ended_at: Cell<Option<Instant>>,
    /// HTTP connections that fetched from this stream, and when they last did (viewer counts).
    clients: RefCell<HashMap<u64, Instant>>,
    bytes_out: Cell<u64>,
}

impl HlsStream {
    fn new(cfg: PackagerConfig) -> Self {
        HlsStream {
            window: RefCell::new(Window::new(cfg)),
            changed: RefCell::new(LocalEvent::new()),
            ended_at: Cell::new(None),
            clients: RefCell::default(),
            bytes_out: Cell::new(0),
        }
    }

    /// Notes that HTTP connection `conn` was sent `bytes` of this stream at `now`.
    pub fn served(&self, conn: u64, bytes: u64, now: Instant) {
        self.bytes_out.set(self.bytes_out.get() + bytes);
        let mut clients = self.clients.borrow_mut();
        // Bounded by the connection limits; pruned here so idle entries do not pile up.
        if clients.len() >= 1024 {
            clients.retain(|_, at| now.duration_since(*at) < HLS_ACTIVE_WINDOW);
        }
        clients.insert(conn, now);
    }

    /// Connections that fetched from this stream within [`HLS_ACTIVE_WINDOW`].
    pub fn active_clients(&self, now: Instant) -> u64 {
        self.clients
            .borrow()
            .values()
            .filter(|at| now.duration_since(**at) < HLS_ACTIVE_WINDOW)
            .count() as u64
    }

    /// Bytes of this stream sent over HTTP by this shard.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.get()
    }

    /// The current window.
    pub fn window(&self) -> std::cell::Ref<'_, Window> {
        self.window.borrow()
    }

    fn apply(&self, updates: &[HlsUpdate], now: Instant) {
        {
            let mut w = self.window.borrow_mut();
            for u in updates {
                w.apply(u);
                match u {
                    HlsUpdate::Ended => self.ended_at.set(Some(now)),
                    _ => self.ended_at.set(None),
                }
            }
        }
        // Wake every waiting request; each re-checks what it waits for.
        let fired = self.changed.replace(LocalEvent::new());
        fired.set();
    }

    /// Waits until `ready(window)` holds or `deadline` passes; true when it holds.
    pub async fn wait_until(&self, deadline: Instant, ready: impl Fn(&Window) -> bool) -> bool {
        loop {
            if ready(&self.window.borrow()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Taken after the check with no await in between: no change can be missed.
            let changed = self.changed.borrow().clone();
            rt::timeout(deadline - now, changed.wait()).await;
        }
    }
}

/// This shard's LL-HLS state: a window per stream known to be (or to have been) live.
pub struct HlsShard {
    cfg: HlsConfig,
    streams: RefCell<HashMap<Arc<str>, Rc<HlsStream>>>,
}

impl HlsShard {
    /// Empty state.
    pub fn new(cfg: &HlsConfig) -> Self {
        HlsShard {
            cfg: cfg.clone(),
            streams: RefCell::default(),
        }
    }

    /// Whether streams are packaged at all.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// The configuration.
    pub fn config(&self) -> &HlsConfig {
        &self.cfg
    }

    /// The window of `name`, if it was packaged and not yet swept.
    pub fn get(&self, name: &str) -> Option<Rc<HlsStream>> {
        self.streams.borrow().get(name).cloned()
    }

    /// LL-HLS clients of every stream on this shard that fetched something within
    /// [`HLS_ACTIVE_WINDOW`] (a client of two streams counts twice).
    pub fn active_clients(&self, now: Instant) -> u64 {
        self.streams
            .borrow()
            .values()
            .map(|s| s.active_clients(now))
            .sum()
    }

    /// Applies updates of `name` (from this shard's packager or another shard's).
    pub fn apply(&self, name: &Arc<str>, updates: &[HlsUpdate]) {
        let stream = self
            .streams
            .borrow_mut()
            .entry(name.clone())
            .or_insert_with(|| Rc::new(HlsStream::new(packager_config(&self.cfg))))
            .clone();
        stream.apply(updates, Instant::now());
    }

    /// A packager for a new publish of `name`. It continues the numbering of the stream's
    /// previous window, if this shard still has it, so players see a discontinuity rather
    /// than a playlist that went back in time.
    pub fn packager(&self, name: &str) -> StreamPackager {
        let cfg = packager_config(&self.cfg);
        let previous = self.get(name);
        let packager = match &previous {
            Some(s) => Packager::new(cfg, Some(&s.window())),
            None => Packager::new(cfg, None),
        };
        StreamPackager {
            packager,
            failed: false,
            frame_error_logged: false,
        }
    }

    /// Forgets windows of streams that ended more than `hls.ended_retention` ago.
    pub fn sweep(&self, now: Instant) {
        let keep = self.cfg.ended_retention;
        self.streams.borrow_mut().retain(|_, s| {
            s.ended_at
                .get()
                .is_none_or(|at| now.duration_since(at) < keep)
        });
    }

    /// Starts the periodic sweep on this shard.
    pub fn start_sweeper(self: &Rc<Self>, stop: LocalEvent) {
        let me = self.clone();
        rt::spawn(async move {
            while !stop.is_set() {
                futures_lite::future::or(rt::sleep(Duration::from_secs(5)), stop.wait()).await;
                me.sweep(Instant::now());
            }
        });
    }
}

/// The packager of one stream published on this shard.
pub struct StreamPackager {
    packager: Packager,
    /// Set when the tracks cannot be packaged: the stream stays live without HLS.
    failed: bool,
    frame_error_logged: bool,
}

impl StreamPackager {
    /// Feeds one item the origin applied; `tracks` are the stream's tracks after it.
    pub fn on_item<'a>(
        &mut self,
        name: &str,
        item: &MediaItem,
        tracks: impl Iterator<Item = &'a Track>,
    ) -> Vec<HlsUpdate> {
        if self.failed {
            return Vec::new();
        }
        let result = match item {
            MediaItem::Track(_) => {
                let tracks: Vec<Track> = tracks.cloned().collect();
                self.packager.set_tracks(&tracks)
            }
            MediaItem::Frame(f) => self.packager.push_frame(f, wall_clock_ms(f.ingest)),
            MediaItem::Metadata { .. } | MediaItem::Passthrough { .. } => return Vec::new(),
        };
        match result {
            Ok(updates) => updates,
            // Tracks that cannot be packaged: the stream stays live over the other protocols.
            Err(e @ (HlsError::UnsupportedCodec { .. } | HlsError::NoTracks)) => {
                warn!(stream = name, "LL-HLS off for this stream: {e}");
                self.failed = true;
                self.packager.end()
            }
            // One bad frame is dropped; packaging goes on. Logged once per stream.
            Err(e) => {
                if !self.frame_error_logged {
                    self.frame_error_logged = true;
                    warn!(
                        stream = name,
                        "LL-HLS dropped a frame: {e} (further drops not logged)"
                    );
                }
                Vec::new()
            }
        }
    }

    /// The stream ended: flush and close the playlist.
    pub fn end(&mut self) -> Vec<HlsUpdate> {
        self.packager.end()
    }
}

/// Unix time in milliseconds of `at`, an instant in the recent past.
fn wall_clock_ms(at: Instant) -> u64 {
    let wall = SystemTime::now() - Instant::now().saturating_duration_since(at);
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
