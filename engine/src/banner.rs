//! The "ready" banner printed on stdout when `zerocast serve` starts: where to point OBS and a
//! player, ready to copy.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use crate::config::{Config, PublishAuth};
// The URLs shown must name the application the server accepts.
use crate::rtmp_conn::APP_NAME as APP;
use crate::store::StreamRecord;

/// Prints the banner for `cfg` on stdout.
///
/// `demo` is the stream to show (see [`crate::store::Store::ensure_demo`]); `created_now` says
/// whether it was created this run: only then is its key shown (keys are shown on create and
/// rotate only, and never logged). `token_file` is where the API token was generated, if it was.
pub fn print_banner(
    cfg: &Config,
    demo: Option<&StreamRecord>,
    created_now: bool,
    token_file: Option<&std::path::Path>,
) {
    let host = url_host(public_ip(cfg.rtmp.listen.ip()));
    print!("{}", render(cfg, demo, created_now, &host, token_file));
}

/// The banner text, with `host` already formatted for a URL.
fn render(
    cfg: &Config,
    demo: Option<&StreamRecord>,
    created_now: bool,
    host: &str,
    token_file: Option<&std::path::Path>,
) -> String {
    let server = format!("rtmp://{host}:{}/{APP}", cfg.rtmp.listen.port());
    let mut out = format!("zerocast {} ready\n", env!("CARGO_PKG_VERSION"));
    // `write!` into a String cannot fail, so its results are ignored throughout.
    let _ = writeln!(out, "  OBS  Server:      {server}");
    match (cfg.auth.publish, demo) {
        (PublishAuth::Open, _) => {
            let _ = writeln!(
                out,
                "       Stream Key:  any name (publishing is open: the key is the stream name)"
            );
            let _ = writeln!(
                out,
                "  Play:             {server}/NAME     (ffplay {server}/NAME)"
            );
        }
        (PublishAuth::Keys, Some(demo)) => {
            if created_now {
                let _ = writeln!(
                    out,
                    "       Stream Key:  {}     (stream `{}`, created now: keep it, it is shown only once)",
                    demo.key, demo.name
                );
            } else {
                let _ = writeln!(
                    out,
                    "       Stream Key:  the key of `{0}` (shown when it was created; \
                     `zerocast streams rotate-key {0}` prints a new one)",
                    demo.name
                );
            }
            let play = format!("{server}/{}", demo.name);
            let _ = writeln!(out, "  Play:             {play}     (ffplay {play})");
        }
        (PublishAuth::Keys, None) => {
            let _ = writeln!(
                out,
                "       Stream Key:  see `zerocast streams list`; create one with `zerocast streams create NAME`"
            );
            let _ = writeln!(
                out,
                "  Play:             {server}/NAME     (ffplay {server}/NAME)"
            );
        }
    }
    if let Some(http) = cfg.http.listen {
        let http_host = url_host(public_ip(http.ip()));
        let base = format!("http://{http_host}:{}", http.port());
        if cfg.hls.enabled {
            let name = match (cfg.auth.publish, demo) {
                (PublishAuth::Keys, Some(d)) => d.name.as_str(),
                _ => "NAME",
            };
            let _ = writeln!(out, "  LL-HLS:           {base}/hls/{name}/index.m3u8");
        }
        let token = match token_file {
            Some(path) => format!("     (bearer token in {})", path.display()),
            None => String::new(),
        };
        let _ = writeln!(out, "  API:              {base}/api/v1{token}");
    }
    if let Some(srt) = cfg.srt.listen {
        let srt_host = url_host(public_ip(srt.ip()));
        let base = format!("srt://{srt_host}:{}?streamid=#!::r={APP}/", srt.port());
        // The key appears only where the banner shows it anyway (created now).
        let (key, name) = match (cfg.auth.publish, demo) {
            (PublishAuth::Open, _) => ("NAME", "NAME"),
            (PublishAuth::Keys, Some(d)) if created_now => (d.key.as_str(), d.name.as_str()),
            (PublishAuth::Keys, Some(d)) => ("KEY", d.name.as_str()),
            (PublishAuth::Keys, None) => ("KEY", "NAME"),
        };
        let _ = writeln!(
            out,
            "  SRT:              {base}{key},m=publish     (play: {base}{name},m=request)"
        );
    }
    if let Some(tls) = cfg.rtmp.tls_listen {
        let tls_host = url_host(public_ip(tls.ip()));
        let note = if cfg.rtmp.tls_cert.is_none() {
            "     (self-signed certificate)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  RTMPS:            rtmps://{tls_host}:{}/{APP}{note}",
            tls.port()
        );
    }
    out
}

/// The address to show for a listener bound to `ip`: `ip` itself, or for a wildcard bind the
/// address this machine would use to reach the internet.
fn public_ip(ip: IpAddr) -> IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    let v6 = ip
        .is_ipv6()
        .then(|| route_source("[::]:0", "[2001:4860:4860::8888]:53"))
        .flatten();
    v6.or_else(|| route_source("0.0.0.0:0", "8.8.8.8:53"))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The local address the kernel picks to reach `target`. Connecting a UDP socket only consults
/// the routing table; no packet is sent.
fn route_source(bind: &str, target: &str) -> Option<IpAddr> {
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// `ip` as it appears in a URL's host part (IPv6 in brackets).
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn shown_host(addr: SocketAddr) -> String {
        url_host(public_ip(addr.ip()))
    }

    fn demo() -> StreamRecord {
        StreamRecord {
            name: "demo".into(),
            key: "K3y".into(),
            created_at: 0,
        }
    }

    #[test]
    fn keys_banner_shows_server_key_and_play_url() {
        let cfg = Config::default();
        let text = render(&cfg, Some(&demo()), true, "10.0.0.5", None);
        assert!(text.contains("rtmp://10.0.0.5:1935/live\n"), "{text}");
        assert!(text.contains("K3y"), "{text}");
        assert!(text.contains("created now"), "{text}");
        assert!(text.contains("/hls/demo/index.m3u8"), "{text}");
        assert!(
            text.contains("ffplay rtmp://10.0.0.5:1935/live/demo"),
            "{text}"
        );
        assert!(!text.contains("rtmps"), "{text}");
        let srt = "srt://";
        assert!(
            text.lines().any(|l| l.contains(srt)
                && l.contains("#!::r=live/K3y,m=publish")
                && l.contains("#!::r=live/demo,m=request")),
            "{text}"
        );
        let again = render(
            &cfg,
            Some(&demo()),
            false,
            "h",
            Some("/d/api-token".as_ref()),
        );
        assert!(
            !again.contains("K3y"),
            "a restart does not show the key: {again}"
        );
        assert!(again.contains("rotate-key demo"), "{again}");
        assert!(again.contains("#!::r=live/KEY,m=publish"), "{again}");
        assert!(
            again.contains("/api/v1     (bearer token in /d/api-token)"),
            "{again}"
        );
    }

    #[test]
    fn open_banner_and_rtmps_line() {
        let mut cfg = Config::default();
        cfg.auth.publish = PublishAuth::Open;
        cfg.rtmp.tls_listen = Some("127.0.0.1:1936".parse().unwrap());
        let text = render(&cfg, Some(&demo()), false, "h", None);
        assert!(!text.contains("K3y"), "{text}");
        assert!(text.contains("open"), "{text}");
        assert!(text.contains("rtmps://127.0.0.1:1936/live"), "{text}");
        assert!(text.contains("#!::r=live/NAME,m=publish"), "{text}");
        cfg.srt.listen = Some("127.0.0.1:9000".parse().unwrap());
        let text = render(&cfg, None, false, "h", None);
        assert!(
            text.contains("srt://127.0.0.1:9000?streamid=#!::r=live/NAME,m=request"),
            "{text}"
        );
        cfg.srt.listen = None;
        assert!(!render(&cfg, None, false, "h", None).contains("srt://"));
    }

    #[test]
    fn hosts() {
        assert_eq!(shown_host("192.0.2.7:1935".parse().unwrap()), "192.0.2.7");
        assert_eq!(shown_host("[::1]:1935".parse().unwrap()), "[::1]");
        // Wildcard: some concrete address, whatever the test machine's routes are.
        assert!(!shown_host("0.0.0.0:1935".parse().unwrap()).starts_with("0.0.0.0"));
    }
}
