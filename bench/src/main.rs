//! `zerocast-bench`: end-to-end latency and fan-out harness for RTMP servers.
//!
//! One publisher loops a pre-encoded 720p30 clip in real time and stamps every H.264 frame
//! with an SEI (user_data_unregistered) holding the wall-clock send time and a sequence
//! number; N players read the stream back and record, per frame, receive time minus send
//! time (same machine, same clock). Everything runs on loopback; the publisher has its own
//! thread, all players share one current-thread runtime.
//!
//! Modes: `fanout` (steps of N viewers against a running server), `latency` (1 publisher,
//! 1 viewer, the full distribution), `compare` (starts zerocast and the peer servers one
//! after the other, pinned, and writes a Markdown report), `smoke` (CI: starts zerocast and
//! checks that frames flow), `chaos`, `hls` (N LL-HLS clients doing blocking reloads) and
//! `srt latency` / `srt fanout` (MPEG-TS over SRT, the same SEI stamps). See bench/README.md.
#![forbid(unsafe_code)]

mod chaos;
mod clip;
mod fanout;
mod hls;
mod procstat;
mod publisher;
mod report;
mod rtmp;
mod servers;
mod srt;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::fanout::{run_step, StepPlan, StepResult};
use crate::publisher::Publisher;
use crate::servers::{Placement, ServerProc};

#[derive(Debug, Parser)]
#[command(
    name = "zerocast-bench",
    version,
    about = "Latency and fan-out harness for RTMP servers"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Steps of N viewers against a running server: throughput, latency, losses, CPU.
    Fanout(FanoutArgs),
    /// One publisher, one viewer: the glass-to-glass latency distribution.
    Latency(LatencyArgs),
    /// zerocast vs nginx-rtmp, Node-Media-Server and xiu, one after the other, pinned.
    Compare(CompareArgs),
    /// CI smoke run: starts zerocast, 3 viewers for 3 s, fails when frames do not flow.
    Smoke(SmokeArgs),
    /// Fault injection between publisher, server and players.
    Chaos(chaos::ChaosArgs),
    /// Steps of N LL-HLS clients doing blocking reloads: parts/s, requests/s, latency, CPU.
    Hls(hls::HlsArgs),
    /// MPEG-TS over SRT: glass-to-glass latency per path, and SRT vs RTMP players per core.
    Srt(srt::SrtArgs),
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// Pre-encoded FLV clip (H.264 + AAC); default: the cached 720p clip, encoded with ffmpeg
    /// on first use.
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Viewers started per second before each window.
    #[arg(long, default_value_t = 100.0)]
    connect_rate: f64,
    /// Seconds between the last viewer's start and the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Pin the harness (publisher and viewers) to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// Where to publish, e.g. rtmp://127.0.0.1:1935/live/bench.
    #[arg(long)]
    publish_url: String,
    /// Where the viewers play (usually the same URL).
    #[arg(long)]
    play_url: String,
    /// Viewer counts, one step each (fresh viewers per step, same publisher).
    #[arg(long, value_delimiter = ',', default_value = "1,50,200,500,1000")]
    viewers: Vec<usize>,
    /// Measured window per step, seconds.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Server PID, for CPU% and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Plot latency and server CPU against viewers (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct LatencyArgs {
    /// Where to publish.
    #[arg(long)]
    publish_url: String,
    /// Where the viewer plays.
    #[arg(long)]
    play_url: String,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Server PID, for CPU% and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Viewer counts, the same for every server.
    #[arg(long, value_delimiter = ',', default_value = "200,500,1000")]
    viewers: Vec<usize>,
    /// Measured window per step, seconds.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Servers to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "zerocast,nginx,nms,xiu")]
    servers: Vec<String>,
    /// Directory for `<date>-fanout.md`, `.svg` and `.json`.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// zerocast binary (default: target/release/zerocast, built when missing).
    #[arg(long)]
    zerocast_bin: Option<PathBuf>,
    /// CPU for the servers (`taskset -c`).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the harness.
    #[arg(long, default_value_t = 1)]
    harness_cpu: usize,
    /// Longest time `cargo install xiu` may take, seconds.
    #[arg(long, default_value_t = 1500)]
    xiu_install_timeout: u64,
    #[arg(long)]
    clip: Option<PathBuf>,
    #[arg(long, default_value_t = 100.0)]
    connect_rate: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

#[derive(Debug, Args)]
struct SmokeArgs {
    /// The zerocast binary to start.
    #[arg(long)]
    zerocast_bin: PathBuf,
    /// Viewers.
    #[arg(long, default_value_t = 3)]
    viewers: usize,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    #[arg(long)]
    clip: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    let r = match cli.mode {
        Mode::Fanout(a) => fanout_mode(a),
        Mode::Latency(a) => latency_mode(a),
        Mode::Compare(a) => compare_mode(a),
        Mode::Smoke(a) => smoke_mode(a),
        Mode::Chaos(a) => chaos::run(a),
        Mode::Hls(a) => hls::run(a),
        Mode::Srt(a) => srt::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zerocast-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Thousands of sockets: lift the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The command line as typed (shell-quoted where needed).
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn pin_harness(cpu: Option<usize>) -> Result<()> {
    if let Some(cpu) = cpu {
        procstat::pin_to_cpu(cpu).with_context(|| format!("pinning the harness to CPU {cpu}"))?;
    }
    Ok(())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Publisher + a series of steps against one server.
struct Series {
    results: Vec<StepResult>,
    clip_mbps: f64,
}

#[allow(clippy::too_many_arguments)]
fn run_series(
    publish_url: &str,
    play_url: &str,
    viewers: &[usize],
    duration: f64,
    server_pid: Option<u32>,
    common: &Common,
    clip: Arc<clip::Clip>,
    mut on_step: impl FnMut(&StepResult),
) -> Result<Series> {
    let publisher = Publisher::start(publish_url, clip.clone())?;
    let mut results = Vec::new();
    for &n in viewers {
        let plan = StepPlan {
            viewers: n,
            connect_rate: common.connect_rate,
            warmup: secs(common.warmup),
            window: secs(duration),
            grace: Duration::from_secs(1),
            server_pid,
        };
        let r = run_step(play_url, &plan, &publisher.state)?;
        if let Some(e) = publisher.state.error() {
            bail!("publisher failed during the N={n} step: {e}");
        }
        on_step(&r);
        results.push(r);
    }
    Ok(Series {
        results,
        clip_mbps: clip.mbps(),
    })
}

fn print_header() {
    println!("{}", report::TABLE_HEADER);
}

fn fanout_mode(a: FanoutArgs) -> Result<()> {
    println!("$ {}", command_line());
    pin_harness(a.common.cpu)?;
    let clip = Arc::new(clip::resolve(a.common.clip.as_deref())?);
    println!("{}", clip.summary());
    print_header();
    let series = run_series(
        &a.publish_url,
        &a.play_url,
        &a.viewers,
        a.duration,
        a.server_pid,
        &a.common,
        clip,
        |r| println!("{}", report::table_row(r)),
    )?;
    print!("{}", report::failure_notes(&series.results));
    for r in &series.results {
        if let Some(h) = &r.histogram {
            println!("\nlatency, N={}:\n{}", r.viewers, report::distribution(h));
        }
    }
    if let Some(p) = &a.json {
        let v = serde_json::json!({
            "command": command_line(),
            "clip_mbps": series.clip_mbps,
            "steps": series.results,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
        println!("JSON: {}", p.display());
    }
    if let Some(p) = &a.svg {
        report::plot(p, "RTMP fan-out", &[("server".to_owned(), series.results)])?;
        println!("SVG: {}", p.display());
    }
    Ok(())
}

fn latency_mode(a: LatencyArgs) -> Result<()> {
    println!("$ {}", command_line());
    pin_harness(a.common.cpu)?;
    let clip = Arc::new(clip::resolve(a.common.clip.as_deref())?);
    let series = run_series(
        &a.publish_url,
        &a.play_url,
        &[1],
        a.duration,
        a.server_pid,
        &a.common,
        clip,
        |_| {},
    )?;
    let r = &series.results[0];
    println!(
        "RTMP -> RTMP glass-to-glass (publisher send -> player receive), {} s, {} of {} frames",
        r.window_s, r.frames_received, r.frames_sent
    );
    if let Some(h) = &r.histogram {
        print!("{}", report::distribution(h));
    }
    print!("{}", report::failure_notes(&series.results));
    if r.frames_received == 0 {
        bail!("no frames received");
    }
    Ok(())
}

/// Why a server produced no results.
enum Outcome {
    Ran {
        version: String,
        results: Vec<StepResult>,
        notes: Vec<String>,
    },
    Skipped(String),
}

fn compare_mode(a: CompareArgs) -> Result<()> {
    let cmd = command_line();
    println!("$ {cmd}");
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = ncpu >= 2;
    if pinned {
        pin_harness(Some(a.harness_cpu))?;
    } else {
        eprintln!("warning: fewer than 2 CPUs; not pinning");
    }
    let placement = Placement {
        cpu: pinned.then_some(a.server_cpu),
    };
    let common = Common {
        clip: a.clip.clone(),
        connect_rate: a.connect_rate,
        warmup: a.warmup,
        cpu: None,
    };
    let clip = Arc::new(clip::resolve(a.clip.as_deref())?);
    let max_n = a.viewers.iter().copied().max().unwrap_or(1);
    let load_before = loadavg();
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for name in &a.servers {
        println!("\n== {name} ==");
        let started: Result<ServerProc> = match name.as_str() {
            "zerocast" => a
                .zerocast_bin
                .clone()
                .map_or_else(servers::zerocast_release_bin, Ok)
                .and_then(|b| servers::start_zerocast(&b, placement, max_n)),
            "nginx" => servers::start_nginx(placement),
            "nms" => servers::start_nms(placement),
            "xiu" => servers::start_xiu(placement, Duration::from_secs(a.xiu_install_timeout)),
            other => Err(anyhow::anyhow!("unknown server {other:?}")),
        };
        let mut srv = match started {
            Ok(s) => s,
            Err(e) => {
                let why = format!("could not be installed or started: {e:#}");
                println!("{name}: {why}");
                outcomes.push((name.clone(), Outcome::Skipped(why)));
                continue;
            }
        };
        println!(
            "{} on 127.0.0.1:{} (pid {}), {}",
            srv.name,
            srv.port,
            srv.pid(),
            srv.version
        );
        print_header();
        let url = srv.url("bench");
        let r = run_series(
            &url,
            &url,
            &a.viewers,
            a.duration,
            Some(srv.pid()),
            &common,
            clip.clone(),
            |r| println!("{}", report::table_row(r)),
        );
        let mut notes = Vec::new();
        if !srv.alive() {
            notes.push("the server process exited during the run".to_owned());
        }
        match r {
            Ok(s) => {
                print!("{}", report::failure_notes(&s.results));
                outcomes.push((
                    srv.name.clone(),
                    Outcome::Ran {
                        version: srv.version.clone(),
                        results: s.results,
                        notes,
                    },
                ));
            }
            Err(e) => {
                let why = format!("run failed: {e:#}");
                println!("{}: {why}", srv.name);
                outcomes.push((srv.name.clone(), Outcome::Skipped(why)));
            }
        }
        drop(srv);
        // Let TIME_WAIT sockets and the server's exit settle before the next one.
        std::thread::sleep(Duration::from_secs(2));
    }
    for known in ["zerocast", "nginx", "nms", "xiu"] {
        if !a.servers.iter().any(|s| s == known) {
            outcomes.push((
                known.to_owned(),
                Outcome::Skipped("not run: not in --servers".to_owned()),
            ));
        }
    }
    let load = format!("{load_before} before, {} after", loadavg());
    write_compare_report(&a, &cmd, &clip, &outcomes, pinned, &load)
}

/// `/proc/loadavg`'s three averages: how busy the machine was (other tenants included).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    // Online CPUs of the machine (not of our affinity mask: the harness may be pinned).
    let ncpu = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or_else(String::new, |k| {
            format!(", {:.1} GiB RAM", k as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("nproc {ncpu}, CPU {cpu}{mem}, Linux {kernel}")
}

fn write_compare_report(
    a: &CompareArgs,
    cmd: &str,
    clip: &clip::Clip,
    outcomes: &[(String, Outcome)],
    pinned: bool,
    load: &str,
) -> Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let date = report::today();
    let md_path = a.out.join(format!("{date}-fanout.md"));
    let svg_path = a.out.join(format!("{date}-fanout.svg"));
    let json_path = a.out.join(format!("{date}-fanout.json"));
    let mut md = String::new();
    let _ = writeln!(md, "# RTMP fan-out: zerocast and peers ({date})\n");
    let _ = writeln!(md, "Command:\n\n```\n{cmd}\n```\n");
    let _ = writeln!(
        md,
        "Machine: {}. Load average (1/5/15 min): {load}: other tenants share these cores, \
         so compare servers within this run, not across runs.\n",
        machine()
    );
    let _ =
        writeln!(
        md,
        "Setup: one publisher loops `{}` ({:.2} Mbit/s audio+video, H.264 720p30 + AAC) in real \
         time with a send-time SEI in every video frame; N RTMP players on 127.0.0.1 (fresh \
         players per step, started at {}/s, {} s warm-up, then a {} s window). {}. Latency = \
         player receive time − publisher send time, per video frame sent in the window. \
         \"≥95% frames\" counts players that received at least 95% of the video frames sent in \
         the window; CPU is utime+stime of the server process over the window.\n",
        clip.path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
        clip.mbps(),
        a.connect_rate,
        a.warmup,
        a.duration,
        if pinned {
            format!(
                "Server pinned to CPU {} (`taskset -c {}`), harness to CPU {}",
                a.server_cpu, a.server_cpu, a.harness_cpu
            )
        } else {
            "Not pinned (fewer than 2 CPUs)".to_owned()
        }
    );
    let mut plot_series = Vec::new();
    let mut json = Vec::new();
    for (name, o) in outcomes {
        let _ = writeln!(md, "## {name}\n");
        match o {
            Outcome::Skipped(why) => {
                let _ = writeln!(md, "{name}: {why}\n");
                json.push(serde_json::json!({"server": name, "skipped": why}));
            }
            Outcome::Ran {
                version,
                results,
                notes,
            } => {
                let _ = writeln!(md, "Version: {version}\n");
                let _ = writeln!(md, "{}", report::TABLE_HEADER);
                for r in results {
                    let _ = writeln!(md, "{}", report::table_row(r));
                }
                md.push('\n');
                let f = report::failure_notes(results);
                if !f.is_empty() {
                    let _ = writeln!(md, "{f}");
                }
                for n in notes {
                    let _ = writeln!(md, "- {n}");
                }
                json.push(
                    serde_json::json!({"server": name, "version": version, "steps": results}),
                );
                plot_series.push((name.clone(), results.clone()));
            }
        }
    }
    // The ratio table: CPU per delivered Gbit/s at equal N, relative to nginx-rtmp.
    let find = |n: &str| {
        outcomes.iter().find_map(|(name, o)| match o {
            Outcome::Ran { results, .. } if name == n => Some(results),
            _ => None,
        })
    };
    if let (Some(zc), Some(ng)) = (find("zerocast"), find("nginx-rtmp")) {
        let _ = writeln!(
            md,
            "## zerocast vs nginx-rtmp (same run)\n\n| viewers | CPU %/Gbit/s zerocast | nginx-rtmp | ratio | p99 ms zerocast | nginx-rtmp | frames zerocast | nginx-rtmp |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for z in zc {
            if let Some(g) = ng.iter().find(|g| g.viewers == z.viewers) {
                let ratio = match (z.server_cpu_per_gbps, g.server_cpu_per_gbps) {
                    (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
                    _ => "-".to_owned(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {:.2} | {:.2} | {}/{} | {}/{} |",
                    z.viewers,
                    z.server_cpu_per_gbps
                        .map_or("-".into(), |v| format!("{v:.1}")),
                    g.server_cpu_per_gbps
                        .map_or("-".into(), |v| format!("{v:.1}")),
                    ratio,
                    z.latency.p99_us as f64 / 1000.0,
                    g.latency.p99_us as f64 / 1000.0,
                    z.frames_received,
                    z.frames_sent * z.viewers as u64,
                    g.frames_received,
                    g.frames_sent * g.viewers as u64,
                );
            }
        }
        md.push('\n');
    }
    if !plot_series.is_empty() {
        report::plot(&svg_path, &format!("RTMP fan-out, {date}"), &plot_series)?;
        let _ = writeln!(
            md,
            "![latency and server CPU against viewers]({})\n",
            svg_path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        );
    }
    std::fs::write(&md_path, &md)?;
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&serde_json::json!({"command": cmd, "servers": json}))?,
    )?;
    println!("\nreport: {}", md_path.display());
    Ok(())
}

fn smoke_mode(a: SmokeArgs) -> Result<()> {
    println!("$ {}", command_line());
    let clip = Arc::new(clip::resolve(a.clip.as_deref())?);
    let srv = servers::start_zerocast(&a.zerocast_bin, Placement { cpu: None }, a.viewers)?;
    let url = srv.url("smoke");
    let common = Common {
        clip: None,
        connect_rate: 100.0,
        warmup: 1.0,
        cpu: None,
    };
    print_header();
    let series = run_series(
        &url,
        &url,
        &[a.viewers],
        a.duration,
        Some(srv.pid()),
        &common,
        clip,
        |r| println!("{}", report::table_row(r)),
    )?;
    let r = &series.results[0];
    print!("{}", report::failure_notes(&series.results));
    let mut problems = Vec::new();
    if r.delivered_mbps <= 0.0 || r.frames_received == 0 {
        problems.push("nothing was delivered".to_owned());
    }
    if r.worst_viewer_share < 0.5 {
        problems.push(format!(
            "a viewer got only {:.0}% of the frames",
            r.worst_viewer_share * 100.0
        ));
    }
    if r.latency.p50_us > 1_000_000 {
        problems.push(format!("latency p50 {} ms > 1 s", r.latency.p50_us / 1000));
    }
    if !problems.is_empty() {
        bail!(
            "smoke failed: {} (server log: {})",
            problems.join("; "),
            srv.dir.join("server.log").display()
        );
    }
    println!("smoke: ok");
    Ok(())
}
