//! Publish admission, the same for every ingest protocol: may this peer publish with this key,
//! and if so, under which name?
//!
//! [`admit_publish`] runs the whole sequence a publish goes through once the protocol driver
//! has the key in hand, in this order:
//!
//! 1. the per-address rate limit of failed attempts (`auth.max_failed_publish_per_minute`),
//!    checked before the key is looked at;
//! 2. the key: with `auth.publish = "open"` it is the stream name and must be a valid one;
//!    with `"keys"` the store must know it (constant-time comparison) and the stream must be
//!    enabled;
//! 3. the `on_publish` webhook, when configured (`hooks.fail_open` decides when it does not
//!    answer);
//! 4. the arbiter's claim on the name (`streams.takeover`);
//! 5. the stream's origin on this shard (`stream.live`) and, when it records, its recording.
//!
//! A wrong key and a hook refusal count as failed attempts of the address. The driver turns a
//! [`Refusal`] into its protocol's answer (RTMP `onStatus` codes, SRT reject reasons) and
//! tells the peer [`Refusal::message`]. Checks that only make sense in one protocol (RTMP's
//! application name, one stream per connection) stay in its driver.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

use tracing::{debug, info, warn};

use crate::config::PublishAuth;
use crate::metrics::AuthFailure;
use crate::shard::{Origin, PublishInfo, Shard};

/// A peer's request to publish.
pub struct PublishRequest<'a> {
    /// Ingest protocol (`rtmp`, `rtmps`, `srt`): the label of events, hooks and metrics.
    pub protocol: &'static str,
    /// The publisher's address.
    pub remote: SocketAddr,
    /// The stream key, or with `auth.publish = "open"` the stream name. Secret: never logged.
    pub key: &'a str,
    /// The application the peer named (RTMP `live`), passed to the `on_publish` hook.
    pub app: &'a str,
    /// The connection's id, for log lines.
    pub conn: u64,
}

impl fmt::Debug for PublishRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishRequest")
            .field("protocol", &self.protocol)
            .field("remote", &self.remote)
            .field("key", &"<redacted>")
            .field("app", &self.app)
            .field("conn", &self.conn)
            .finish()
    }
}

/// A publish that was let in: the stream is live on this shard from now on.
///
/// The driver feeds the origin with [`Shard::publish_item`] and ends it with
/// [`Shard::end_origin`] when the publisher leaves.
pub struct Admitted {
    /// The stream's origin on this shard (recording attached when `record`).
    pub origin: Rc<RefCell<Origin>>,
    /// The stream's public name.
    pub name: String,
    /// The generation the arbiter granted.
    pub generation: u64,
    /// Whether the stream records.
    pub record: bool,
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failed attempts from this address within a minute
    /// (`auth.max_failed_publish_per_minute`); the key was not checked.
    RateLimited,
    /// `auth.publish = "open"` and the key is not a valid stream name.
    InvalidName,
    /// The key belongs to a stream an operator disabled.
    Disabled,
    /// The key matches no stream.
    BadKey,
    /// The store could not check the key (busy or failing).
    StoreUnavailable,
    /// The `on_publish` hook refused.
    HookRefused,
    /// The `on_publish` hook did not answer and `hooks.fail_open` is false.
    HookUnanswered,
    /// Another publisher has the stream and `streams.takeover` is false (or the arbiter did
    /// not answer).
    AlreadyLive,
}

impl Refusal {
    /// What the peer is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::RateLimited => "too many failed attempts; try again later",
            Refusal::InvalidName => "invalid stream name",
            Refusal::Disabled => "stream is disabled",
            Refusal::BadKey => "invalid stream key",
            Refusal::StoreUnavailable => "stream database unavailable",
            Refusal::HookRefused => "refused by on_publish hook",
            Refusal::HookUnanswered => "publish authorization unavailable",
            Refusal::AlreadyLive => "stream is already being published",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Decides whether `req` may publish and, if so, starts the stream's origin on `shard` (see
/// the module docs for the order of the checks). Every refusal is logged and counted here;
/// the caller only tells the peer.
pub async fn admit_publish(
    shard: &Rc<Shard>,
    req: PublishRequest<'_>,
) -> Result<Admitted, Refusal> {
    let conn = req.conn;
    let peer = req.remote;
    if crate::limits::publish_blocked(peer.ip(), shard.cfg.auth.max_failed_publish_per_minute) {
        warn!(conn, %peer, "publish refused: too many failed attempts from this address (auth.max_failed_publish_per_minute)");
        shard.metrics.auth_failed(AuthFailure::RateLimited);
        return Err(Refusal::RateLimited);
    }
    // The key is secret: never log `req.key`.
    let key = req.key;
    let record_default = shard.cfg.recording.record;
    // `record`: the stream's own flag, else `recording.record`.
    let (name, record) = match shard.cfg.auth.publish {
        PublishAuth::Open => {
            if crate::store::validate_name(key).is_err() {
                return Err(Refusal::InvalidName);
            }
            (key.to_owned(), record_default)
        }
        PublishAuth::Keys => match shard.store.authorize_publish(key.to_owned()).await {
            Ok(Some(grant)) if !grant.enabled => {
                warn!(conn, stream = %grant.name, %peer, "publish refused: the stream is disabled");
                return Err(Refusal::Disabled);
            }
            Ok(Some(grant)) => (grant.name, grant.record.unwrap_or(record_default)),
            Ok(None) => {
                crate::limits::note_failed_publish(peer.ip());
                warn!(conn, %peer, "publish refused: invalid stream key");
                shard.metrics.auth_failed(AuthFailure::StreamKey);
                return Err(Refusal::BadKey);
            }
            Err(e) => {
                warn!(conn, "publish refused: key check failed: {e}");
                return Err(Refusal::StoreUnavailable);
            }
        },
    };
    ask_publish_hook(shard, &req, &name).await?;
    let takeover = shard.cfg.streams.takeover;
    let Some(generation) = shard.claim(&name, takeover).await else {
        warn!(conn, stream = %name, "publish refused: stream already live");
        return Err(Refusal::AlreadyLive);
    };
    let origin = shard.start_origin(
        &name,
        generation,
        PublishInfo {
            protocol: req.protocol,
            remote: peer,
        },
    );
    if record {
        let mut o = origin.borrow_mut();
        o.recording = Some(shard.recorder.sink(o.name.clone()));
    }
    info!(conn, stream = %name, shard = shard.id, generation, record, %peer, "publishing");
    Ok(Admitted {
        origin,
        name,
        generation,
        record,
    })
}

/// Asks the `on_publish` hook, when configured, whether `name` may be published by `req`.
async fn ask_publish_hook(
    shard: &Rc<Shard>,
    req: &PublishRequest<'_>,
    name: &str,
) -> Result<(), Refusal> {
    let Some(hooks) = shard.hooks.get().cloned() else {
        return Ok(());
    };
    let (conn, peer) = (req.conn, req.remote);
    let request = crate::hooks::PublishRequest {
        stream: name,
        protocol: req.protocol,
        remote: peer,
        app: req.app,
    };
    use crate::hooks::PublishVerdict as V;
    let Some(verdict) = hooks.check_publish(request).await else {
        return Ok(());
    };
    match verdict {
        V::Allowed(status) => {
            debug!(conn, stream = %name, status, "on_publish hook allowed the publish");
            Ok(())
        }
        V::Refused(status) => {
            crate::limits::note_failed_publish(peer.ip());
            warn!(conn, stream = %name, %peer, status, "publish refused by on_publish hook");
            shard.metrics.auth_failed(AuthFailure::Hook);
            Err(Refusal::HookRefused)
        }
        V::Unanswered { error, allowed } if allowed => {
            warn!(conn, stream = %name, %peer, "on_publish hook did not answer ({error}); publish allowed: hooks.fail_open = true");
            Ok(())
        }
        V::Unanswered { error, .. } => {
            warn!(conn, stream = %name, %peer, "publish refused: on_publish hook did not answer ({error}) and hooks.fail_open = false");
            shard.metrics.auth_failed(AuthFailure::Hook);
            Err(Refusal::HookUnanswered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_messages_are_todays_texts() {
        assert_eq!(
            Refusal::RateLimited.message(),
            "too many failed attempts; try again later"
        );
        assert_eq!(Refusal::BadKey.to_string(), "invalid stream key");
        assert_eq!(
            Refusal::HookUnanswered.message(),
            "publish authorization unavailable"
        );
    }

    #[test]
    fn the_key_is_never_in_debug_output() {
        let req = PublishRequest {
            protocol: "srt",
            remote: "192.0.2.1:5000".parse().unwrap(),
            key: "s3cret-key",
            app: "live",
            conn: 7,
        };
        let text = format!("{req:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("srt"), "{text}");
    }
}
