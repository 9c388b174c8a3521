//! Webhooks: an external backend allows or refuses publishes and hears about what happened.
//!
//! Two kinds of hook, both `POST`s of a JSON body (see the README, "Webhooks"):
//!
//! - **`on_publish`** is a question. The publisher's shard asks it after the stream key was
//!   checked and before the name is claimed, and waits (without blocking: it awaits a oneshot)
//!   at most `hooks.timeout`. A 2xx answer allows the publish; any other status refuses it; no
//!   answer in time (or no connection) lets `hooks.fail_open` decide. Questions go to a small
//!   pool of threads (`zc-hooks-pub-N`), so one slow answer does not hold up the next publisher,
//!   and a question that waited for a free thread past its deadline is not sent at all.
//! - **Notifications** (`on_publish_done` ← `stream.ended`, `on_play` ← `viewer.joined`,
//!   `on_play_done` ← `viewer.left`, `on_recording_done` ← `recording.done`) are facts. Each
//!   shard's event sink hands the event to one bounded queue with `try_send`; when it is full
//!   the notification is dropped and counted (a WARN at most once a second), so the media path
//!   never waits for a backend. One thread (`zerocast-hooks`) delivers them, attempting each up
//!   to `hooks.attempts` times with exponential backoff (500 ms, 1 s, 2 s, ... at most 30 s).
//!   Waiting notifications sit in a heap ordered by due time and the thread always takes the
//!   earliest, so a notification waiting for its retry never delays a fresh one.
//!
//! ```text
//! shard ── on_publish: oneshot ──▶ (bounded) ──▶ zc-hooks-pub-0..3 ── POST ──▶ backend
//!   │  ◀──────── 2xx / other / error ───────────────┘
//!   └─ event sink: try_send ─▶ (bounded) ─▶ zerocast-hooks: retry heap ── POST ──▶ backend
//! recorder thread ─ recording.done ─▶ EventInbox ─▶ shard 0 emits it like any other event
//! ```
//!
//! Every body is signed when `hooks.secret` is set: `X-Zerocast-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes keyed with the secret. The secret and the stream key
//! are never logged and never sent; URLs are logged without their `user:password@`.

mod client;

#[doc(hidden)]
pub use client::fuzz_hook_response;

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tracing::{debug, warn};

pub use client::{Client, ClientError, HookUrl};

use crate::config::HooksConfig;
use crate::events::{unix_ms, Event};
use crate::rt;

/// Notifications waiting for the delivery thread to take them; beyond, they are dropped.
pub const NOTIFY_QUEUE: usize = 1024;
/// Notifications the delivery thread holds (due now or waiting for a retry); while it holds
/// this many it takes no new ones from the queue.
pub const MAX_PENDING: usize = 4096;
/// `on_publish` questions waiting for a free thread; beyond, the question goes unanswered.
pub const PUBLISH_QUEUE: usize = 256;
/// Threads answering `on_publish` questions.
pub const PUBLISH_WORKERS: usize = 4;
/// Delay before the second attempt of a notification; it doubles with each attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest delay between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How much longer than `hooks.timeout` a shard waits for a worker to report a timeout.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);
/// On shutdown, time left to notifications still waiting (one last attempt each).
const STOP_BUDGET: Duration = Duration::from_secs(2);
/// Longest sleep of the delivery thread while it cannot take new work (checks for a stop).
const TICK: Duration = Duration::from_millis(100);

/// A configured hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Allow or refuse a publish.
    OnPublish,
    /// A publish ended (`stream.ended`).
    OnPublishDone,
    /// A viewer started (`viewer.joined`).
    OnPlay,
    /// A viewer stopped (`viewer.left`).
    OnPlayDone,
    /// A recording file was closed (`recording.done`).
    OnRecordingDone,
}

impl Hook {
    const ALL: [Hook; 5] = [
        Hook::OnPublish,
        Hook::OnPublishDone,
        Hook::OnPlay,
        Hook::OnPlayDone,
        Hook::OnRecordingDone,
    ];

    /// The configuration key (`on_publish`, ...), also sent as `hook` in the body.
    pub fn name(self) -> &'static str {
        match self {
            Hook::OnPublish => "on_publish",
            Hook::OnPublishDone => "on_publish_done",
            Hook::OnPlay => "on_play",
            Hook::OnPlayDone => "on_play_done",
            Hook::OnRecordingDone => "on_recording_done",
        }
    }

    /// The notification an event triggers, if any.
    pub fn for_event(event: &Event) -> Option<Hook> {
        match event {
            Event::StreamEnded { .. } => Some(Hook::OnPublishDone),
            Event::ViewerJoined { .. } => Some(Hook::OnPlay),
            Event::ViewerLeft { .. } => Some(Hook::OnPlayDone),
            Event::RecordingDone { .. } => Some(Hook::OnRecordingDone),
            _ => None,
        }
    }

    fn url(self, cfg: &HooksConfig) -> Option<&String> {
        match self {
            Hook::OnPublish => cfg.on_publish.as_ref(),
            Hook::OnPublishDone => cfg.on_publish_done.as_ref(),
            Hook::OnPlay => cfg.on_play.as_ref(),
            Hook::OnPlayDone => cfg.on_play_done.as_ref(),
            Hook::OnRecordingDone => cfg.on_recording_done.as_ref(),
        }
    }
}

/// The `event` (and `type`) of an `on_publish` body.
pub const PUBLISH_EVENT: &str = "stream.publish";

/// A hook URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("hooks.{hook}: {source}")]
pub struct HooksError {
    /// The hook's key.
    pub hook: &'static str,
    /// What is wrong with its URL.
    #[source]
    pub source: ClientError,
}

/// Delay after failed attempt `attempt` (1 = the first) before the next one.
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// The `X-Zerocast-Signature` value: `sha256=` and the hex HMAC-SHA256 of `body` keyed with
/// `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// The body of a notification: the event as `/api/v1/events` serialises it (with its `type`),
/// plus `event` (the same type) and `hook` (the hook's key).
pub fn notification_body(hook: Hook, event: &Event) -> Vec<u8> {
    let mut value = match serde_json::to_value(event) {
        Ok(v) => v,
        // Events hold strings, numbers and addresses only; kept total rather than unwrapped.
        Err(e) => json!({ "type": event.kind(), "stream": event.stream(), "error": e.to_string() }),
    };
    if let Value::Object(map) = &mut value {
        map.insert("event".into(), Value::from(event.kind()));
        map.insert("hook".into(), Value::from(hook.name()));
    }
    value.to_string().into_bytes()
}

/// What an `on_publish` question is about. The stream key is not part of it, by design.
#[derive(Debug, Clone)]
pub struct PublishRequest<'a> {
    /// The stream's public name.
    pub stream: &'a str,
    /// Ingest protocol (`rtmp`, `rtmps`, `srt`).
    pub protocol: &'static str,
    /// The publisher's address.
    pub remote: SocketAddr,
    /// The RTMP application (`live`).
    pub app: &'a str,
}

/// The body of an `on_publish` question.
pub fn publish_body(req: &PublishRequest<'_>, at_ms: u64) -> Vec<u8> {
    json!({
        "type": PUBLISH_EVENT,
        "event": PUBLISH_EVENT,
        "hook": Hook::OnPublish.name(),
        "stream": req.stream,
        "protocol": req.protocol,
        "remote": req.remote.to_string(),
        "app": req.app,
        "at_ms": at_ms,
    })
    .to_string()
    .into_bytes()
}

/// The outcome of an `on_publish` question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishVerdict {
    /// The hook answered 2xx.
    Allowed(u16),
    /// The hook answered another status.
    Refused(u16),
    /// No answer (timeout, unreachable, malformed); `hooks.fail_open` decided `allowed`.
    Unanswered {
        /// Why there is no answer.
        error: String,
        /// `hooks.fail_open`.
        allowed: bool,
    },
}

impl PublishVerdict {
    /// Whether the publish may go on.
    pub fn allows(&self) -> bool {
        match self {
            PublishVerdict::Allowed(_) => true,
            PublishVerdict::Refused(_) => false,
            PublishVerdict::Unanswered { allowed, .. } => *allowed,
        }
    }
}

/// State the shards' handles and the threads share.
struct Shared {
    cfg: HooksConfig,
    /// Parsed URLs, indexed by `Hook as usize`.
    urls: [Option<HookUrl>; 5],
    client: Client,
    stop: AtomicBool,
    dropped: AtomicU64,
    last_drop_log_ms: AtomicU64,
}

impl Shared {
    fn url(&self, hook: Hook) -> Option<&HookUrl> {
        self.urls[hook as usize].as_ref()
    }

    /// One `POST`; the status, or why there is none.
    fn post(
        &self,
        url: &HookUrl,
        kind: &str,
        body: &[u8],
        signature: Option<&str>,
        attempt: u32,
        timeout: Duration,
    ) -> Result<u16, ClientError> {
        let attempt = attempt.to_string();
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("X-Zerocast-Event", kind),
            ("X-Zerocast-Attempt", attempt.as_str()),
        ];
        if let Some(sig) = signature {
            headers.push(("X-Zerocast-Signature", sig));
        }
        self.client.post(url, &headers, body, timeout)
    }

    fn sign(&self, body: &[u8]) -> Option<String> {
        self.cfg
            .secret
            .as_ref()
            .map(|s| signature(s.as_bytes(), body))
    }
}

enum Msg {
    Notify {
        hook: Hook,
        event: Arc<Event>,
    },
    /// Look at the stop flag.
    Wake,
}

struct PublishJob {
    body: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<Result<u16, String>>,
}

/// The shards' handle to the hook threads: cheap to clone, `Send` and `Sync`.
#[derive(Clone)]
pub struct Hooks {
    shared: Arc<Shared>,
    notify_tx: flume::Sender<Msg>,
    publish_tx: flume::Sender<PublishJob>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("queued", &self.notify_tx.len())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// The hook threads, to stop after the shards and the recorder.
pub struct HooksThread {
    shared: Arc<Shared>,
    wake: flume::Sender<Msg>,
    notifier: Option<JoinHandle<()>>,
}

impl HooksThread {
    /// Gives waiting notifications one last attempt (for at most 2 s in all), then stops the
    /// delivery thread and waits for it. `on_publish` threads end on their own.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        // A full queue means the thread is awake and will see the flag.
        let _ = self.wake.try_send(Msg::Wake);
        if let Some(h) = self.notifier {
            if h.join().is_err() {
                tracing::error!("hooks thread panicked");
            }
        }
    }
}

/// Parses the hook URLs and starts the threads: `None` when no hook is configured.
///
/// # Panics
/// If the OS cannot create a thread, as [`std::thread::spawn`] does.
pub fn spawn_hooks(cfg: &HooksConfig) -> Result<Option<(Hooks, HooksThread)>, HooksError> {
    let Some((hooks, notify_rx, publish_rx)) = handle(cfg, NOTIFY_QUEUE)? else {
        return Ok(None);
    };
    let shared = hooks.shared.clone();
    let notifies = Hook::ALL[1..].iter().any(|h| shared.url(*h).is_some());
    let notifier = notifies.then(|| {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("zerocast-hooks".to_owned())
            .spawn(move || run_notifier(&shared, &notify_rx))
            // Failing to create one thread at startup leaves nothing sensible to run.
            .expect("cannot spawn the hooks thread")
    });
    if shared.url(Hook::OnPublish).is_some() {
        for n in 0..PUBLISH_WORKERS {
            let shared = shared.clone();
            let rx = publish_rx.clone();
            std::thread::Builder::new()
                .name(format!("zc-hooks-pub-{n}"))
                .spawn(move || run_publish_worker(&shared, &rx))
                .expect("cannot spawn an on_publish hook thread");
        }
    }
    let thread = HooksThread {
        wake: hooks.notify_tx.clone(),
        shared,
        notifier,
    };
    Ok(Some((hooks, thread)))
}

type Handle = (Hooks, flume::Receiver<Msg>, flume::Receiver<PublishJob>);

/// The handle and the threads' ends of its queues, without threads.
fn handle(cfg: &HooksConfig, notify_capacity: usize) -> Result<Option<Handle>, HooksError> {
    let mut urls: [Option<HookUrl>; 5] = Default::default();
    for hook in Hook::ALL {
        if let Some(url) = hook.url(cfg) {
            urls[hook as usize] = Some(HookUrl::parse(url).map_err(|source| HooksError {
                hook: hook.name(),
                source,
            })?);
        }
    }
    if urls.iter().all(Option::is_none) {
        return Ok(None);
    }
    let (notify_tx, notify_rx) = flume::bounded(notify_capacity);
    let (publish_tx, publish_rx) = flume::bounded(PUBLISH_QUEUE);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        urls,
        client: Client::default(),
        stop: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        last_drop_log_ms: AtomicU64::new(0),
    });
    Ok(Some((
        Hooks {
            shared,
            notify_tx,
            publish_tx,
        },
        notify_rx,
        publish_rx,
    )))
}

impl Hooks {
    /// Whether any notification hook is configured (then shards register an event sink).
    pub fn notifies(&self) -> bool {
        Hook::ALL[1..].iter().any(|h| self.shared.url(*h).is_some())
    }

    /// Whether `on_publish` is configured.
    pub fn checks_publish(&self) -> bool {
        self.shared.url(Hook::OnPublish).is_some()
    }

    /// Notifications dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Queues the notification `event` triggers, if its hook is configured. Never blocks: a
    /// full queue drops it (counted, logged at most once a second). True when queued.
    pub fn notify(&self, event: &Arc<Event>) -> bool {
        let Some(hook) = Hook::for_event(event) else {
            return false;
        };
        if self.shared.url(hook).is_none() {
            return false;
        }
        let msg = Msg::Notify {
            hook,
            event: event.clone(),
        };
        if self.notify_tx.try_send(msg).is_ok() {
            return true;
        }
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = unix_ms();
        let last = self.shared.last_drop_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .shared
                .last_drop_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                hook = hook.name(),
                stream = event.stream(),
                dropped_total = total,
                "webhook notification dropped: {NOTIFY_QUEUE} are already waiting (the endpoint is slow or down)"
            );
        }
        false
    }

    /// Asks `on_publish` whether `req` may publish: `None` when the hook is not configured.
    /// Waits at most `hooks.timeout` (plus a small margin) and never blocks the executor.
    pub async fn check_publish(&self, req: PublishRequest<'_>) -> Option<PublishVerdict> {
        self.shared.url(Hook::OnPublish)?;
        let cfg = &self.shared.cfg;
        let unanswered = |error: String| PublishVerdict::Unanswered {
            error,
            allowed: cfg.fail_open,
        };
        let (reply, answer) = oneshot::channel();
        let job = PublishJob {
            body: publish_body(&req, unix_ms()),
            deadline: Instant::now() + cfg.timeout,
            reply,
        };
        if self.publish_tx.try_send(job).is_err() {
            return Some(unanswered(format!(
                "{PUBLISH_QUEUE} publish checks are already waiting for the hook"
            )));
        }
        Some(
            match rt::timeout(cfg.timeout + ANSWER_MARGIN, answer).await {
                Some(Ok(Ok(status))) if (200..300).contains(&status) => {
                    PublishVerdict::Allowed(status)
                }
                Some(Ok(Ok(status))) => PublishVerdict::Refused(status),
                Some(Ok(Err(error))) => unanswered(error),
                Some(Err(_canceled)) => unanswered("the hook threads have stopped".into()),
                None => unanswered(format!(
                    "no answer within hooks.timeout ({:?})",
                    cfg.timeout
                )),
            },
        )
    }
}

/// An `on_publish` thread: one question at a time, each within its own deadline.
fn run_publish_worker(shared: &Shared, rx: &flume::Receiver<PublishJob>) {
    let Some(url) = shared.url(Hook::OnPublish) else {
        return;
    };
    while let Ok(job) = rx.recv() {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let left = job.deadline.saturating_duration_since(Instant::now());
        let result = if left.is_zero() {
            Err(format!(
                "waited hooks.timeout ({:?}) for a free hook thread",
                shared.cfg.timeout
            ))
        } else {
            let sig = shared.sign(&job.body);
            shared
                .post(url, PUBLISH_EVENT, &job.body, sig.as_deref(), 1, left)
                .map_err(|e| format!("{url}: {e}"))
        };
        // A shard that gave up has dropped its receiver; nothing to do then.
        let _ = job.reply.send(result);
    }
}

/// A notification the delivery thread holds.
struct Pending {
    due: Instant,
    /// Order of arrival, to keep FIFO among equal due times.
    seq: u64,
    /// Attempts made.
    attempts: u32,
    hook: Hook,
    kind: &'static str,
    stream: Arc<str>,
    body: Vec<u8>,
    signature: Option<String>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed, so that `BinaryHeap` (a max-heap) yields the earliest due first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The delivery thread's state: notifications by due time.
struct Notifier<'a> {
    shared: &'a Shared,
    heap: BinaryHeap<Pending>,
    seq: u64,
}

impl<'a> Notifier<'a> {
    fn new(shared: &'a Shared) -> Self {
        Notifier {
            shared,
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Holds a new notification as due now (a `Wake` holds nothing).
    fn admit(&mut self, msg: Msg, now: Instant) {
        let Msg::Notify { hook, event } = msg else {
            return;
        };
        let body = notification_body(hook, &event);
        self.seq += 1;
        self.heap.push(Pending {
            due: now,
            seq: self.seq,
            attempts: 0,
            hook,
            kind: event.kind(),
            stream: Arc::from(event.stream()),
            signature: self.shared.sign(&body),
            body,
        });
    }

    /// Attempts `p` once; schedules its retry or gives up. True when delivered.
    fn attempt(&mut self, mut p: Pending, timeout: Duration, last_chance: bool) -> bool {
        let Some(url) = self.shared.url(p.hook) else {
            return false;
        };
        p.attempts += 1;
        let result = self.shared.post(
            url,
            p.kind,
            &p.body,
            p.signature.as_deref(),
            p.attempts,
            timeout,
        );
        let error = match result {
            Ok(status) if (200..300).contains(&status) => {
                debug!(hook = p.hook.name(), stream = %p.stream, status, attempt = p.attempts, "webhook delivered");
                return true;
            }
            Ok(status) => format!("HTTP status {status}"),
            Err(e) => e.to_string(),
        };
        let allowed = self.shared.cfg.attempts;
        if p.attempts < allowed && !last_chance {
            let delay = backoff(p.attempts);
            debug!(hook = p.hook.name(), stream = %p.stream, attempt = p.attempts, retry_in = ?delay, "webhook attempt failed: {error}");
            p.due = Instant::now() + delay;
            self.heap.push(p);
        } else {
            warn!(
                hook = p.hook.name(),
                url = %url,
                event = p.kind,
                stream = %p.stream,
                attempts = p.attempts,
                "webhook notification given up: {error}"
            );
        }
        false
    }
}

/// The delivery thread's loop.
fn run_notifier(shared: &Shared, rx: &flume::Receiver<Msg>) {
    let mut n = Notifier::new(shared);
    let timeout = shared.cfg.timeout;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        // New notifications join the heap as due now, while there is room.
        let mut gone = false;
        while n.heap.len() < MAX_PENDING {
            match rx.try_recv() {
                Ok(msg) => n.admit(msg, Instant::now()),
                Err(flume::TryRecvError::Empty) => break,
                Err(flume::TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            break;
        }
        let now = Instant::now();
        match n.heap.peek().map(|p| p.due) {
            Some(due) if due <= now => {
                if let Some(p) = n.heap.pop() {
                    n.attempt(p, timeout, false);
                }
            }
            Some(due) if n.heap.len() >= MAX_PENDING => std::thread::sleep((due - now).min(TICK)),
            Some(due) => match rx.recv_timeout(due - now) {
                Ok(msg) => n.admit(msg, Instant::now()),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(msg) => n.admit(msg, Instant::now()),
                Err(flume::RecvError::Disconnected) => break,
            },
        }
    }
    // Stopping: what is still queued or waiting for a retry gets one last attempt.
    for msg in rx.try_iter() {
        n.admit(msg, Instant::now());
    }
    let deadline = Instant::now() + STOP_BUDGET;
    let mut abandoned = 0;
    while let Some(p) = n.heap.pop() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            abandoned += 1;
            continue;
        }
        n.attempt(p, timeout.min(left), true);
    }
    if abandoned > 0 {
        warn!(
            abandoned,
            "webhook notifications not delivered: the server stopped"
        );
    }
    debug!("hooks thread stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;

    fn cfg() -> HooksConfig {
        HooksConfig {
            timeout: Duration::from_secs(2),
            ..HooksConfig::default()
        }
    }

    fn ended(n: u64) -> Arc<Event> {
        Arc::new(Event::StreamEnded {
            stream: Arc::from("cam"),
            protocol: "rtmp",
            remote: ([10, 0, 0, 1], 5000).into(),
            generation: n,
            started_at_ms: 1,
            at_ms: 2,
            reason: "publisher disconnected".into(),
            stats: crate::events::IngestStats {
                frames: 300,
                bytes: 123_456,
                ..Default::default()
            },
        })
    }

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(signature(b"k", b"{}"), signature(b"k", b"{ }"));
        assert_ne!(signature(b"k", b"{}"), signature(b"K", b"{}"));
    }

    #[test]
    fn backoff_doubles_from_500ms_to_30s() {
        let ms: Vec<u128> = (1..=10).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn bodies_carry_the_event_and_the_hook() {
        let body: Value =
            serde_json::from_slice(&notification_body(Hook::OnPublishDone, &ended(3))).unwrap();
        assert_eq!(body["event"], "stream.ended");
        assert_eq!(body["type"], "stream.ended");
        assert_eq!(body["hook"], "on_publish_done");
        assert_eq!(body["stream"], "cam");
        assert_eq!(body["remote"], "10.0.0.1:5000");
        assert_eq!(body["stats"]["frames"], 300);
        assert_eq!(body["reason"], "publisher disconnected");
        let req = PublishRequest {
            stream: "cam",
            protocol: "rtmps",
            remote: ([127, 0, 0, 1], 4444).into(),
            app: "live",
        };
        let body: Value = serde_json::from_slice(&publish_body(&req, 77)).unwrap();
        assert_eq!(body["event"], PUBLISH_EVENT);
        assert_eq!(body["hook"], "on_publish");
        assert_eq!(
            (
                &body["stream"],
                &body["protocol"],
                &body["remote"],
                &body["app"],
                &body["at_ms"]
            ),
            (
                &json!("cam"),
                &json!("rtmps"),
                &json!("127.0.0.1:4444"),
                &json!("live"),
                &json!(77)
            )
        );
    }

    #[test]
    fn only_configured_hooks_are_queued_and_a_full_queue_drops() {
        assert!(handle(&cfg(), 4).unwrap().is_none(), "no URL, no hooks");
        let mut c = cfg();
        c.on_publish_done = Some("http://127.0.0.1:9/done".into());
        let (hooks, rx, _) = handle(&c, 4).unwrap().unwrap();
        assert!(hooks.notifies() && !hooks.checks_publish());
        let joined = Arc::new(Event::ViewerJoined {
            stream: Arc::from("cam"),
            protocol: "rtmp",
            remote: ([127, 0, 0, 1], 1).into(),
            at_ms: 1,
        });
        assert!(!hooks.notify(&joined), "on_play is not configured");
        for n in 0..4 {
            assert!(hooks.notify(&ended(n)));
        }
        assert!(!hooks.notify(&ended(4)));
        assert!(!hooks.notify(&ended(5)));
        assert_eq!(hooks.dropped(), 2);
        assert_eq!(rx.len(), 4);
        c.on_play = Some("ftp://x".into());
        let e = match handle(&c, 4) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a bad URL must be refused"),
        };
        assert!(e.starts_with("hooks.on_play:"), "{e}");
    }

    /// Requests a test server saw: path and arrival time.
    type Seen = Arc<Mutex<Vec<(String, Instant)>>>;

    /// A tiny HTTP server: answers each request with the next status of `statuses` (the last
    /// one repeats) and records (path, arrival time).
    fn hook_server(statuses: Vec<(&'static str, Vec<u16>)>) -> (u16, Seen) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // Bodies here are small: the head and body arrive together.
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let path = text.split(' ').nth(1).unwrap_or_default().to_owned();
                let mut seen = seen.lock().unwrap();
                let nth = seen.iter().filter(|(p, _)| *p == path).count();
                seen.push((path.clone(), Instant::now()));
                drop(seen);
                let list = &statuses.iter().find(|(p, _)| *p == path).unwrap().1;
                let status = list[nth.min(list.len() - 1)];
                let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        (port, log)
    }

    #[test]
    fn a_retry_waits_without_holding_up_fresh_notifications() {
        let (port, log) = hook_server(vec![("/done", vec![500, 500, 200]), ("/play", vec![204])]);
        let mut c = cfg();
        c.on_publish_done = Some(format!("http://127.0.0.1:{port}/done"));
        c.on_play = Some(format!("http://127.0.0.1:{port}/play"));
        c.secret = Some("s3cret".into());
        let (hooks, thread) = spawn_hooks(&c).unwrap().unwrap();
        assert!(hooks.notify(&ended(1)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(hooks.notify(&Arc::new(Event::ViewerJoined {
            stream: Arc::from("cam"),
            protocol: "rtmp",
            remote: ([127, 0, 0, 1], 1).into(),
            at_ms: 1,
        })));
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.lock().unwrap().len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.stop();
        let log = log.lock().unwrap().clone();
        let paths: Vec<&str> = log.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/done", "/play", "/done", "/done"], "{log:?}");
        // The play notification went out during the first retry's wait; the retries kept
        // the backoff: 500 ms, then 1 s.
        let gap1 = log[2].1 - log[0].1;
        let gap2 = log[3].1 - log[2].1;
        assert!(
            gap1 >= Duration::from_millis(480) && gap1 < Duration::from_millis(1500),
            "{gap1:?}"
        );
        assert!(
            gap2 >= Duration::from_millis(980) && gap2 < Duration::from_millis(2500),
            "{gap2:?}"
        );
    }

    #[test]
    fn attempts_stop_at_the_configured_number() {
        let (port, log) = hook_server(vec![("/x", vec![503])]);
        let mut c = cfg();
        c.on_play_done = Some(format!("http://127.0.0.1:{port}/x"));
        c.attempts = 2;
        let (hooks, thread) = spawn_hooks(&c).unwrap().unwrap();
        assert!(hooks.notify(&Arc::new(Event::ViewerLeft {
            stream: Arc::from("cam"),
            protocol: "rtmp",
            remote: ([127, 0, 0, 1], 1).into(),
            joined_at_ms: 1,
            at_ms: 2,
            bytes: 3,
            dropped_frames: 0,
        })));
        std::thread::sleep(Duration::from_millis(1500));
        thread.stop();
        assert_eq!(log.lock().unwrap().len(), 2);
    }
}
