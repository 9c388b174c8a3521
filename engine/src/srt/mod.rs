//! SRT on a shard: the UDP endpoint that owns this shard's SRT sessions.
//!
//! Every shard binds `srt.listen` with SO_REUSEPORT, so the kernel sends all datagrams of one
//! peer address to the same shard, which keeps that peer's session. The endpoint task reads
//! the socket and hands each datagram to its session's task, or, for an address without a
//! session, to the stateless [`Listener`] (inductions are answered from a SYN cookie; a
//! conclusion with a valid cookie becomes an admission task). Admission reads the stream ID:
//! a publish goes through the same checks as RTMP ([`crate::admission`]); a request needs the
//! stream to be live. Refusals go back as SRT rejection codes.

mod session;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, info, warn};
use zerocast_srt::{
    ConnectRequest, Entropy, Listener, ListenerOutput, Mode, RejectReason, SessionConfig, StreamId,
};

use crate::admission::{admit_publish, PublishRequest, Refusal};
use crate::config::Config;
use crate::limits::ConnectionLimits;
use crate::metrics::Protocol;
use crate::rt::{self, UdpSocket};
use crate::shard::Shard;

pub use session::SessionInbox;

/// The application name in stream IDs (`live/KEY`), as in RTMP URLs.
const APP: &str = "live";
/// Datagrams queued for one session before further ones are dropped.
const INBOX_LIMIT: usize = 4096;

/// The session settings `[srt]` gives.
pub fn session_config(cfg: &Config) -> SessionConfig {
    SessionConfig {
        latency: cfg.srt.latency,
        peer_idle_timeout: cfg.srt.peer_idle_timeout,
        max_bandwidth: cfg.srt.max_bandwidth,
        passphrase: cfg
            .srt
            .passphrase
            .as_deref()
            // Validated when the configuration was loaded.
            .and_then(|p| zerocast_srt::crypto::Passphrase::new(p).ok()),
        key_len: zerocast_srt::crypto::KeyLen::from_bytes(cfg.srt.pbkeylen as usize)
            .unwrap_or(zerocast_srt::crypto::KeyLen::Aes128),
        ..SessionConfig::default()
    }
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    seed
}

/// The SRT endpoint of one shard.
pub struct Endpoint {
    shard: Rc<Shard>,
    socket: Rc<UdpSocket>,
    listener: Listener,
    cfg: SessionConfig,
    sessions: RefCell<HashMap<SocketAddr, Rc<SessionInbox>>>,
    /// Addresses whose conclusion is being decided (ignore their repeats meanwhile).
    pending: RefCell<HashSet<SocketAddr>>,
    limits: Arc<ConnectionLimits>,
    entropy: RefCell<Entropy>,
    max_pending: usize,
    conn_ids: Rc<dyn Fn() -> u64>,
}

impl Endpoint {
    /// Binds `addr` on this shard.
    pub fn bind(
        shard: Rc<Shard>,
        addr: SocketAddr,
        limits: Arc<ConnectionLimits>,
        conn_ids: Rc<dyn Fn() -> u64>,
    ) -> std::io::Result<Rc<Endpoint>> {
        let socket = Rc::new(UdpSocket::bind(addr)?);
        let cfg = session_config(&shard.cfg);
        let max_pending = (shard.cfg.srt.max_pending_handshakes / shard.count.max(1)).max(4);
        Ok(Rc::new(Endpoint {
            listener: Listener::new(&cfg, random_seed(), rt::now()),
            entropy: RefCell::new(Entropy::new(random_seed())),
            socket,
            cfg,
            sessions: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashSet::new()),
            limits,
            max_pending,
            conn_ids,
            shard,
        }))
    }

    /// Reads the socket until the shard stops.
    pub async fn run(self: Rc<Self>) {
        loop {
            let recv = async { Some(self.socket.recv_from().await) };
            let stop = async {
                self.shard.shutdown.wait().await;
                None
            };
            let Some(result) = futures_lite::future::or(recv, stop).await else {
                return;
            };
            let (datagram, from) = match result {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from an earlier send surface here; keep serving.
                    debug!("srt receive error: {e}");
                    continue;
                }
            };
            self.dispatch(datagram, from).await;
        }
    }

    async fn dispatch(self: &Rc<Self>, datagram: Bytes, from: SocketAddr) {
        let inbox = self.sessions.borrow().get(&from).cloned();
        if let Some(inbox) = inbox {
            if !inbox.push(datagram, INBOX_LIMIT) {
                debug!(%from, "srt session inbox full: datagram dropped");
            }
            return;
        }
        if self.pending.borrow().contains(&from) {
            return;
        }
        match self.listener.handle(rt::now(), from, datagram) {
            ListenerOutput::Reply(reply) => self.send(&[reply], from).await,
            ListenerOutput::Connect(req) => {
                if self.pending.borrow().len() >= self.max_pending {
                    warn!(%from, "srt handshake refused: srt.max_pending_handshakes reached");
                    self.refuse(&req, RejectReason::Backlog).await;
                    return;
                }
                self.pending.borrow_mut().insert(from);
                let this = self.clone();
                rt::spawn(async move {
                    this.admit(*req).await;
                    this.pending.borrow_mut().remove(&from);
                });
            }
            ListenerOutput::Drop(why) => {
                debug!(%from, ?why, "srt datagram from an unknown address dropped");
            }
        }
    }

    async fn send(&self, slices: &[Bytes], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(slices, to).await {
            debug!(%to, "srt send failed: {e}");
        }
    }

    async fn refuse(&self, req: &ConnectRequest, reason: RejectReason) {
        self.shard.metrics.handshake_failed(Protocol::Srt);
        let refused = req.reject(reason);
        self.send(&[refused.response], req.peer()).await;
    }

    /// Decides a conclusion: stream ID, protocol checks, then publish or play admission.
    async fn admit(self: &Rc<Self>, req: ConnectRequest) {
        let peer = req.peer();
        let sid = match StreamId::parse(req.stream_id().unwrap_or_default()) {
            Ok(s) => s,
            Err(e) => {
                info!(%peer, "srt connection refused: {e}");
                return self.refuse(&req, RejectReason::BadRequest).await;
            }
        };
        if let Err(reason) = req.check(&self.cfg) {
            warn!(%peer, %reason, "srt connection refused");
            if matches!(reason, RejectReason::BadSecret | RejectReason::Unsecure) {
                self.shard
                    .metrics
                    .auth_failed(crate::metrics::AuthFailure::StreamKey);
            }
            return self.refuse(&req, reason).await;
        }
        let resource = sid.resource.split('?').next().unwrap_or_default();
        let Some(name) = resource
            .strip_prefix(APP)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|n| !n.is_empty() && !n.contains('/'))
        else {
            info!(%peer, "srt connection refused: resource must be {APP}/NAME");
            return self.refuse(&req, RejectReason::NotFound).await;
        };
        let guard = match self.limits.admit(peer.ip()) {
            Ok(g) => g,
            Err(why) => {
                warn!(%peer, ?why, "srt connection refused: srt.max_sessions or limits.max_connections_per_ip");
                return self.refuse(&req, RejectReason::Overload).await;
            }
        };
        let conn_id = (self.conn_ids)();
        match sid.mode {
            Mode::Publish => {
                let admitted = admit_publish(
                    &self.shard,
                    PublishRequest {
                        protocol: "srt",
                        remote: peer,
                        key: name,
                        app: APP,
                        conn: conn_id,
                    },
                )
                .await;
                let admitted = match admitted {
                    Ok(a) => a,
                    Err(refusal) => return self.refuse(&req, reject_reason(refusal)).await,
                };
                let Some(conn) = self.accept(req).await else {
                    self.shard
                        .end_origin(&admitted.origin, "error: SRT handshake failed");
                    return;
                };
                info!(conn = conn_id, stream = %admitted.name, %peer, latency = ?conn.recv_latency(), encrypted = conn.is_encrypted(), "srt publishing");
                let inbox = self.register(peer);
                let driver = session::Driver::new(self.clone(), conn, inbox, peer, conn_id, guard);
                session::run_publisher(driver, admitted).await;
            }
            Mode::Request => {
                if crate::store::validate_name(name).is_err() {
                    return self.refuse(&req, RejectReason::NotFound).await;
                }
                let Some(player) = session::Player::subscribe(&self.shard, name).await else {
                    debug!(%peer, stream = name, "srt play of a stream that is not live");
                    return self.refuse(&req, RejectReason::NotFound).await;
                };
                let Some(conn) = self.accept(req).await else {
                    player.leave(&self.shard);
                    return;
                };
                info!(conn = conn_id, stream = name, %peer, latency = ?conn.send_latency(), encrypted = conn.is_encrypted(), "srt playing");
                let inbox = self.register(peer);
                let driver = session::Driver::new(self.clone(), conn, inbox, peer, conn_id, guard);
                session::run_player(driver, player).await;
            }
        }
        self.sessions.borrow_mut().remove(&peer);
    }

    async fn accept(&self, req: ConnectRequest) -> Option<Box<zerocast_srt::Connection>> {
        let peer = req.peer();
        let socket_id = self.entropy.borrow_mut().next_u32();
        let seed = random_seed();
        match req.accept(&self.cfg, socket_id, rt::now(), Entropy::new(seed)) {
            Ok(a) => {
                self.send(&[a.response], peer).await;
                Some(a.connection)
            }
            Err(refused) => {
                warn!(%peer, reason = %refused.reason, "srt connection refused");
                self.shard.metrics.handshake_failed(Protocol::Srt);
                self.send(&[refused.response], peer).await;
                None
            }
        }
    }

    /// Routes `peer`'s datagrams to a new session from now on; its handshake is decided.
    fn register(&self, peer: SocketAddr) -> Rc<SessionInbox> {
        let inbox = Rc::new(SessionInbox::default());
        self.sessions.borrow_mut().insert(peer, inbox.clone());
        self.pending.borrow_mut().remove(&peer);
        inbox
    }
}

/// The SRT rejection code for an admission refusal (SRT access control "REJX" codes).
fn reject_reason(r: Refusal) -> RejectReason {
    match r {
        Refusal::RateLimited => RejectReason::Overload,
        Refusal::InvalidName => RejectReason::BadRequest,
        Refusal::Disabled | Refusal::HookRefused => RejectReason::Forbidden,
        Refusal::BadKey => RejectReason::Unauthorized,
        Refusal::StoreUnavailable => RejectReason::InternalServerError,
        Refusal::HookUnanswered => RejectReason::Down,
        Refusal::AlreadyLive => RejectReason::Conflict,
    }
}
