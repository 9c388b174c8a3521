//! `zerocast serve`: starts one pinned glommio executor per shard, the listeners on each,
//! the storage thread and signal handling, and stops them all cleanly.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::limits::{ConnectionLimits, Refusal};
use crate::recording::{spawn_recorder_thread, Recorder};
use crate::rt::{self, TcpListener};
use crate::shard::{MeshMsg, Shard, MESH_CHANNEL_CAPACITY};
use crate::store::{spawn_store_thread, Store, StoreHandle};
use crate::transport::Transport;
use crate::{http, metrics, rtmp_conn, tls};

/// Memory each shard registers with io_uring. It is locked memory (RLIMIT_MEMLOCK, often
/// 8 MiB per process in containers), and the engine does no file I/O through it, so keep it
/// small.
pub const SHARD_IO_MEMORY: usize = 512 * 1024;
/// How long shards wait for connections to finish after a stop signal.
const DRAIN_TIME: Duration = Duration::from_secs(3);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A shard's executor could not be created.
    #[error("shard {shard} could not start: {reason}")]
    ShardStart {
        /// The shard.
        shard: usize,
        /// Why.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// RTMPS could not be set up.
    #[error("RTMPS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The HTTPS certificate or key could not be used.
    #[error("HTTPS: {0}")]
    HttpTls(tls::TlsError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A webhook URL cannot be used.
    #[error("{0}")]
    Hooks(#[from] crate::hooks::HooksError),
}

/// What a shard hands back when it stops.
struct ShardReport {
    latency: Histogram<u64>,
    hls_latency: Histogram<u64>,
    dropped: u64,
}

/// Settings every shard shares.
struct Shared {
    cfg: Arc<Config>,
    store: StoreHandle,
    recorder: Recorder,
    /// The webhooks, when any is configured.
    hooks: Option<crate::hooks::Hooks>,
    /// Events from threads that are not shards (the recorder); shard 0 emits them.
    inbox: flume::Receiver<crate::events::Event>,
    tls: Option<Arc<rustls::ServerConfig>>,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    limits: Arc<ConnectionLimits>,
    /// SRT sessions count apart from TCP connections (`srt.max_sessions`).
    srt_limits: Arc<ConnectionLimits>,
    stop: Arc<AtomicBool>,
    next_conn_id: AtomicU64,
}

/// Runs the appliance until SIGINT or SIGTERM.
pub fn serve(mut config: Config, store: Store) -> Result<(), ServeError> {
    let shards = shards_that_fit(&config)?;
    // Shards bind with SO_REUSEPORT, which would also let them join the listeners of another
    // process (a second zerocast) and silently split its connections. A plain bind first
    // proves the address is free. It also resolves port 0: every shard must bind the same port.
    for addr in [
        Some(&mut config.rtmp.listen),
        config.rtmp.tls_listen.as_mut(),
        config.http.listen.as_mut(),
        config.http.tls_listen.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        let probe = std::net::TcpListener::bind(*addr).map_err(|source| ServeError::Bind {
            addr: *addr,
            source,
        })?;
        if addr.port() == 0 {
            // Bound just above; a bound socket has a local address.
            addr.set_port(probe.local_addr().map(|a| a.port()).unwrap_or(0));
        }
    }
    if let Some(addr) = config.srt.listen.as_mut() {
        let probe = std::net::UdpSocket::bind(*addr).map_err(|source| ServeError::Bind {
            addr: *addr,
            source,
        })?;
        if addr.port() == 0 {
            addr.set_port(probe.local_addr().map(|a| a.port()).unwrap_or(0));
        }
    }
    let tls = match config.rtmp.tls_listen {
        Some(_) => Some(tls::server_config(
            config.rtmp.tls_cert.as_deref(),
            config.rtmp.tls_key.as_deref(),
            &config.server.data_dir,
            &[],
        )?),
        None => None,
    };
    let http_tls = match config.http.tls_listen {
        Some(_) => Some(
            tls::server_config(
                config.http.tls_cert.as_deref(),
                config.http.tls_key.as_deref(),
                &config.server.data_dir,
                &[b"http/1.1"],
            )
            .map_err(ServeError::HttpTls)?,
        ),
        None => None,
    };
    let hooks = crate::hooks::spawn_hooks(&config.hooks)?;
    let stop = Arc::new(AtomicBool::new(false));
    install_signals(stop.clone())?;
    let store = spawn_store_thread(store);
    // Next to the store thread: recordings are indexed through it.
    let (inbox_tx, inbox) = flume::bounded(crate::events::INBOX_CAPACITY);
    let (recorder, recorder_thread) = spawn_recorder_thread(
        &config.recording,
        &config.server.data_dir,
        store.clone(),
        Some(inbox_tx),
    );
    let (hooks, hooks_thread) = hooks.unzip();
    let shared = Arc::new(Shared {
        srt_limits: ConnectionLimits::new(
            config.srt.max_sessions,
            config.limits.max_connections_per_ip,
        ),
        limits: ConnectionLimits::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        ),
        cfg: Arc::new(config),
        store,
        recorder,
        hooks,
        inbox,
        tls,
        http_tls,
        stop: stop.clone(),
        next_conn_id: AtomicU64::new(1),
    });
    let cpus = allowed_cpus();
    let mesh = MeshBuilder::<MeshMsg, _>::full(shards, MESH_CHANNEL_CAPACITY);
    let mut handles = Vec::with_capacity(shards);
    for id in 0..shards {
        let placement = match cpus.get(id % cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let shared = shared.clone();
        let mesh = mesh.clone();
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("zc-shard-{id}"))
            .io_memory(SHARD_IO_MEMORY);
        let handle = builder
            .spawn(move || async move { run_shard(id, shards, shared, mesh).await })
            .map_err(|e| ServeError::ShardStart {
                shard: id,
                reason: explain_start_error(&e.to_string()),
            });
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                for h in handles {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("constant histogram bounds are valid");
    let mut hls_latency = latency.clone();
    let mut dropped = 0;
    let mut first_error = None;
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(report)) => {
                let _ = latency.add(&report.latency);
                let _ = hls_latency.add(&report.hls_latency);
                dropped += report.dropped;
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(ServeError::ShardStart {
                    shard: id,
                    reason: explain_start_error(&e.to_string()),
                });
            }
        }
    }
    // After the shards (their last fragments are queued), before the store (it indexes them).
    recorder_thread.stop();
    // Files the recorder closed after the shards stopped: their webhooks still go out.
    if let Some(hooks) = &shared.hooks {
        for event in shared.inbox.try_iter() {
            hooks.notify(&Arc::new(event));
        }
    }
    if let Some(t) = hooks_thread {
        t.stop();
    }
    shared.store.shutdown();
    if let Some(e) = first_error {
        return Err(e);
    }
    print_latency(&latency, dropped);
    if !hls_latency.is_empty() {
        info!(
            parts = hls_latency.len(),
            p50_us = hls_latency.value_at_quantile(0.50),
            p90_us = hls_latency.value_at_quantile(0.90),
            p99_us = hls_latency.value_at_quantile(0.99),
            max_us = hls_latency.max(),
            "LL-HLS ingest-to-part latency (oldest frame of a part entering the engine until the part can be served)"
        );
    }
    info!("stopped");
    Ok(())
}

/// The soft RLIMIT_MEMLOCK in bytes, from /proc (`None` when unlimited or unknown).
/// The online CPUs this process may run on (`taskset`, cgroups), in ascending order, so shard
/// `i` lands on the `i`-th allowed CPU. (glommio's `CpuSet::online()` is a hash set: its order
/// changes between runs, and it ignores the affinity mask.)
fn allowed_cpus() -> Vec<usize> {
    let mut online: Vec<usize> = glommio::CpuSet::online()
        .map(|set| set.into_iter().map(|l| l.cpu).collect())
        .unwrap_or_default();
    online.sort_unstable();
    online.dedup();
    let allowed = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|l| parse_cpu_list(l.trim()))
        })
        .unwrap_or_default();
    if allowed.is_empty() {
        return online;
    }
    let both: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| allowed.contains(c))
        .collect();
    if both.is_empty() {
        online
    } else {
        both
    }
}

/// Parses a kernel CPU list such as `0-3,8,10-11`; malformed parts are skipped.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => a
                .trim()
                .parse::<usize>()
                .ok()
                .zip(b.trim().parse::<usize>().ok()),
            None => part.trim().parse::<usize>().ok().map(|c| (c, c)),
        };
        // 4096 CPUs bounds a malformed huge range.
        if let Some((a, b)) = range.filter(|(a, b)| a <= b && *b < 4096) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

fn memlock_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many shards to start: `server.shards`, or one per core when 0, limited by what the
/// locked-memory limit allows (each shard locks [`SHARD_IO_MEMORY`], glommio's minimum).
fn shards_that_fit(config: &Config) -> Result<usize, ServeError> {
    let wanted = config.shard_count().max(1);
    let Some(limit) = memlock_limit() else {
        return Ok(wanted);
    };
    let fit = usize::try_from(limit / SHARD_IO_MEMORY as u64).unwrap_or(usize::MAX);
    if fit >= wanted {
        return Ok(wanted);
    }
    let advice = format!(
        "each shard locks {} KiB for io_uring and the locked-memory limit is {} KiB, enough \
         for {fit}: raise it (`ulimit -l`, systemd LimitMEMLOCK=) or set server.shards <= {fit}",
        SHARD_IO_MEMORY / 1024,
        limit / 1024
    );
    if fit == 0 || config.server.shards != 0 {
        return Err(ServeError::ShardStart {
            shard: fit,
            reason: advice,
        });
    }
    warn!("starting {fit} shards instead of {wanted}: {advice}");
    Ok(fit)
}

/// Turns glommio's start-up failures into a sentence an operator can act on.
fn explain_start_error(raw: &str) -> String {
    let lower = raw.to_lowercase();
    if ["memlock", "memory", "enomem", "resource"]
        .iter()
        .any(|w| lower.contains(w))
    {
        let limit = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max locked memory"))
                    .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        format!(
            "io_uring could not lock its buffers ({raw}); each shard locks {} KiB and the \
             locked-memory limit is {limit} bytes: raise it (`ulimit -l`, LimitMEMLOCK=) or \
             lower server.shards",
            SHARD_IO_MEMORY / 1024
        )
    } else {
        raw.to_owned()
    }
}

fn install_signals(stop: Arc<AtomicBool>) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(ServeError::Signals)?;
    std::thread::Builder::new()
        .name("zc-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if stop.swap(true, Ordering::SeqCst) {
                    // A second signal while stopping: leave at once.
                    eprintln!("zerocast: second signal {sig}, exiting now");
                    std::process::exit(130);
                }
                info!(signal = sig, "stopping: no new connections, ending streams");
            }
        })
        .map_err(ServeError::Signals)?;
    Ok(())
}

async fn run_shard(
    id: usize,
    count: usize,
    shared: Arc<Shared>,
    mesh: MeshBuilder<MeshMsg, glommio::channels::channel_mesh::Full>,
) -> Result<ShardReport, ServeError> {
    let (senders, receivers) = if count > 1 {
        match mesh.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(_) => {
                return Err(ServeError::ShardStart {
                    shard: id,
                    reason: "could not join the channel mesh".into(),
                })
            }
        }
    } else {
        (None, None)
    };
    let shard = Shard::new(
        id,
        count,
        shared.cfg.clone(),
        shared.store.clone(),
        shared.recorder.clone(),
        senders,
    );
    if let Some(r) = receivers {
        shard.start_mesh_receivers(r);
    }
    {
        // Publish history (`GET /api/v1/streams/NAME/sessions`): starts and ends go to the
        // store thread without waiting; a full queue loses the row, never delays the shard.
        let store = shared.store.clone();
        shard.add_event_sink(Box::new(move |event| {
            if let Some(ev) = crate::store::SessionEvent::from_event(event) {
                if let Err(e) = store.record_session(ev) {
                    warn!(stream = event.stream(), "session history not recorded: {e}");
                }
            }
        }));
    }
    if let Some(hooks) = &shared.hooks {
        let _ = shard.hooks.set(hooks.clone());
        if hooks.notifies() {
            let hooks = hooks.clone();
            shard.add_event_sink(Box::new(move |event| {
                hooks.notify(event);
            }));
        }
    }
    if id == 0 {
        // Events raised by the recorder thread (`recording.done`) are emitted here.
        let inbox = shared.inbox.clone();
        let shard = shard.clone();
        rt::spawn(async move {
            while let Ok(event) = inbox.recv_async().await {
                shard.emit(event);
            }
        });
    }
    let cfg = &shared.cfg;
    shard.hls.start_sweeper(shard.shutdown.clone());
    shard.start_stats_ticker();
    let listeners = [
        (Some(cfg.rtmp.listen), Service::Rtmp(None), "RTMP"),
        (
            cfg.rtmp.tls_listen,
            Service::Rtmp(shared.tls.clone()),
            "RTMPS",
        ),
        (cfg.http.listen, Service::Http(None), "HTTP"),
        (
            cfg.http.tls_listen,
            Service::Http(shared.http_tls.clone()),
            "HTTPS",
        ),
    ];
    for (addr, service, what) in listeners {
        let Some(addr) = addr else { continue };
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(source) => {
                shared.stop.store(true, Ordering::SeqCst);
                return Err(ServeError::Bind { addr, source });
            }
        };
        if id == 0 {
            info!(%addr, shards = count, "{what} listening");
        }
        rt::spawn(accept_loop(
            shard.clone(),
            shared.clone(),
            listener,
            service,
        ));
    }
    if let Some(addr) = cfg.srt.listen {
        let conn_ids: Rc<dyn Fn() -> u64> = {
            let shared = shared.clone();
            Rc::new(move || shared.next_conn_id.fetch_add(1, Ordering::Relaxed))
        };
        match crate::srt::Endpoint::bind(shard.clone(), addr, shared.srt_limits.clone(), conn_ids) {
            Ok(endpoint) => {
                if id == 0 {
                    info!(%addr, shards = count, latency = ?cfg.srt.latency, encrypted = cfg.srt.passphrase.is_some(), "SRT listening (UDP)");
                }
                rt::spawn(endpoint.run());
            }
            Err(source) => {
                shared.stop.store(true, Ordering::SeqCst);
                return Err(ServeError::Bind { addr, source });
            }
        }
    }
    // The signal thread sets a flag; each shard turns it into its own local event.
    while !shared.stop.load(Ordering::SeqCst) {
        rt::sleep(Duration::from_millis(50)).await;
    }
    shard.shutdown.set();
    let deadline = Instant::now() + DRAIN_TIME;
    while shard.connections.get() > 0 && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(20)).await;
    }
    if shard.connections.get() > 0 {
        warn!(
            shard = id,
            open = shard.connections.get(),
            "connections still open at exit"
        );
    }
    let stats = shard.stats.borrow();
    Ok(ShardReport {
        latency: stats.rtmp_egress_latency_us.clone(),
        hls_latency: stats.hls_part_latency_us.clone(),
        dropped: stats.viewer_dropped_frames,
    })
}

/// What a listener serves, with its TLS configuration when it is the TLS variant.
#[derive(Clone)]
enum Service {
    Rtmp(Option<Arc<rustls::ServerConfig>>),
    Http(Option<Arc<rustls::ServerConfig>>),
}

async fn accept_loop(
    shard: Rc<Shard>,
    shared: Arc<Shared>,
    listener: TcpListener,
    service: Service,
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.wait().await;
            None
        })
        .await;
        let conn = match accepted {
            None => return,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // Out of descriptors or memory: back off instead of spinning.
                error!(shard = shard.id, "accept failed: {e}");
                rt::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = conn.peer_addr();
        let guard = match shared.limits.admit(peer.ip()) {
            Ok(g) => g,
            Err(r) => {
                let which = match r {
                    Refusal::TooManyConnections => "limits.max_connections",
                    Refusal::TooManyFromAddress => "limits.max_connections_per_ip",
                };
                warn!(%peer, "connection refused: {which} reached");
                shard.metrics.connection_refused(match r {
                    Refusal::TooManyConnections => metrics::Refused::MaxConnections,
                    Refusal::TooManyFromAddress => metrics::Refused::MaxConnectionsPerIp,
                });
                conn.shutdown(std::net::Shutdown::Both);
                continue;
            }
        };
        let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let shard2 = shard.clone();
        shard.connections.set(shard.connections.get() + 1);
        // Counted in `zerocast_connections` until dropped with the connection's task.
        let open = shard.metrics.connection_opened(match &service {
            Service::Rtmp(tls) => metrics::Protocol::rtmp(tls.is_some()),
            Service::Http(tls) => metrics::Protocol::http(tls.is_some()),
        });
        match service.clone() {
            Service::Rtmp(tls) => {
                let transport = match tls {
                    None => Transport::Plain(conn),
                    Some(cfg) => match Transport::tls(conn, cfg) {
                        Ok(t) => t,
                        Err(e) => {
                            warn!(%peer, "TLS session could not start: {e}");
                            shard.connections.set(shard.connections.get() - 1);
                            continue;
                        }
                    },
                };
                rt::spawn(async move {
                    rtmp_conn::serve(shard2.clone(), transport, id).await;
                    shard2.connections.set(shard2.connections.get() - 1);
                    drop((guard, open));
                });
            }
            Service::Http(tls) => rt::spawn(async move {
                http::serve(shard2.clone(), conn, tls, id).await;
                shard2.connections.set(shard2.connections.get() - 1);
                drop((guard, open));
            }),
        }
    }
}

fn print_latency(h: &Histogram<u64>, dropped: u64) {
    if h.is_empty() {
        info!("no frames were delivered to viewers");
        return;
    }
    info!(
        frames = h.len(),
        p50_us = h.value_at_quantile(0.50),
        p90_us = h.value_at_quantile(0.90),
        p99_us = h.value_at_quantile(0.99),
        max_us = h.max(),
        dropped_frames = dropped,
        "RTMP ingest-to-egress latency (video frames, from entering the engine to the viewer's socket)"
    );
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("1"), vec![1]);
        assert_eq!(parse_cpu_list("x,2-1,0-999999,5"), vec![5]);
    }
}
