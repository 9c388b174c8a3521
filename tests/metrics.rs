//! `GET /metrics` end to end: while ffmpeg publishes, an ffmpeg RTMP player plays and LL-HLS
//! files are fetched, two scrapes a few seconds apart are parsed by Prometheus' own Python
//! parsers (`prometheus_client`, OpenMetrics and classic text), and the counters and
//! histograms must have moved. Also: `metrics.require_token` protects the endpoint.
//!
//! The parsers live in the test virtualenv that `./scripts/test` creates
//! (`$ZEROCAST_VENV`, default `~/.cache/zerocast/venv`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::http::{get, request, HttpResponse};
use common::*;
use serde_json::Value;

/// The pinned parser package (see `scripts/test`).
const PROMETHEUS_CLIENT: &str = "prometheus-client==0.26.0";

/// Parses an exposition with both of prometheus_client's parsers; prints every family as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic
text = open(sys.argv[1], encoding="utf-8").read()
out = {}
for key, parse in (("openmetrics", openmetrics), ("classic", classic)):
    out[key] = [
        {
            "name": f.name,
            "type": f.type,
            "unit": getattr(f, "unit", ""),
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples
            ],
        }
        for f in parse(text)
    ]
print(json.dumps(out))
"#;

/// One scrape, as the parsers read it.
struct Scrape {
    text: String,
    /// The OpenMetrics parser's families.
    families: Vec<Value>,
    /// The classic (Prometheus 0.0.4) parser's families.
    classic: Vec<Value>,
}

impl Scrape {
    fn parse(text: String, dir: &std::path::Path, n: u32) -> Scrape {
        let file = dir.join(format!("metrics-{n}.txt"));
        std::fs::write(&file, &text).unwrap();
        let mut cmd = Command::new(venv_program("bin/python", PROMETHEUS_CLIENT));
        cmd.arg("-c").arg(PARSE).arg(&file);
        let (st, out, err) = run_bounded(cmd, Duration::from_secs(30));
        assert!(
            st.map(|s| s.success()).unwrap_or(false),
            "prometheus_client could not parse /metrics ({st:?}): {err}\n\
             (missing module? run ./scripts/test or pip install {PROMETHEUS_CLIENT})\n{text}"
        );
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("parser printed non-JSON ({e}): {out}"));
        let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
        Scrape {
            families: list("openmetrics"),
            classic: list("classic"),
            text,
        }
    }

    fn family(&self, name: &str) -> &Value {
        self.families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name} in\n{}", self.text))
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let f = self.family(family);
        f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{}", self.text))
    }

    /// A counter family's `_total` sample.
    fn counter(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(family, &format!("{family}_total"), labels)
    }

    /// A gauge's sample.
    fn gauge(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(family, family, labels)
    }

    /// A histogram's `_count`, after checking that its buckets are cumulative and end with
    /// `+Inf` equal to `_count`.
    fn histogram_count(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        let f = self.family(family);
        assert_eq!(f["type"], "histogram", "{family}");
        assert_eq!(f["unit"], "seconds", "{family}");
        let mut buckets: Vec<(f64, f64)> = f["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["name"] == format!("{family}_bucket")
                    && labels.iter().all(|(k, v)| s["labels"][*k] == *v)
            })
            .map(|s| {
                let le = s["labels"]["le"].as_str().unwrap();
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (bound, s["value"].as_f64().unwrap())
            })
            .collect();
        assert!(buckets.len() >= 10, "{family}{labels:?}: {buckets:?}");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in buckets.windows(2) {
            assert!(
                w[1].1 >= w[0].1,
                "{family}{labels:?} buckets are not cumulative: {buckets:?}"
            );
        }
        let count = self.value(family, &format!("{family}_count"), labels);
        let inf = buckets.last().unwrap();
        assert!(inf.0.is_infinite(), "{family}: no +Inf bucket");
        assert_eq!(inf.1, count, "{family}{labels:?}: +Inf bucket != _count");
        let sum = self.value(family, &format!("{family}_sum"), labels);
        assert!(
            sum >= 0.0 && (count == 0.0 || sum > 0.0),
            "{family} sum {sum}"
        );
        count
    }
}

fn scrape(server: &Server, n: u32) -> Scrape {
    let r = get(server.http_port, "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    check_headers(&r);
    Scrape::parse(r.text(), server.dir.path(), n)
}

fn check_headers(r: &HttpResponse) {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "content-type {ct:?}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

/// A few LL-HLS fetches: the playlist, the init segment and the newest part.
fn fetch_hls(server: &Server, name: &str) {
    let playlist = get(server.http_port, &format!("/hls/{name}/media.m3u8"));
    assert_eq!(playlist.status, 200, "{}", playlist.text());
    let text = playlist.text();
    let init = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.split('"').next())
        .expect("EXT-X-MAP in the playlist")
        .to_owned();
    let part = text
        .lines()
        .rev()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .filter_map(|l| l.split("URI=\"").nth(1))
        .find_map(|l| l.split('"').next())
        .expect("a part in the playlist")
        .to_owned();
    for file in [init, part] {
        let r = get(server.http_port, &format!("/hls/{name}/{file}"));
        assert_eq!(r.status, 200, "GET {file}: {}", r.text());
        assert!(!r.body.is_empty(), "{file} is empty");
    }
}

#[test]
fn metrics_parse_and_move_while_a_stream_plays() {
    let _serial = serial();
    require_ffmpeg();
    // Two shards: a scrape sums both (the player may land on either).
    let server = Server::start(ServerOpts {
        shards: 2,
        ..ServerOpts::default()
    });
    let key = server.create_stream("cam");
    let clip = clip(MAIN_CLIP);

    // A wrong key first: an authentication failure to count.
    let mut bad = publish(
        "bad-key",
        server.dir.path(),
        &clip,
        &server.publish_url("not-the-key-0123456789abcdef"),
    );
    let st = bad
        .wait_for(Duration::from_secs(15))
        .expect("a publisher with a wrong key is refused");
    assert!(!st.success(), "wrong-key publisher exited {st}");

    // Before any stream: the endpoint answers and parses, with zero live streams.
    let empty = scrape(&server, 0);
    assert_eq!(empty.gauge("zerocast_live_streams", &[]), 0.0);

    let _publisher = publish("pub", server.dir.path(), &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=cam"], Duration::from_secs(15));
    let out = server.dir.path().join("player.flv");
    let mut player = record(
        "player",
        server.dir.path(),
        &server.play_url("cam"),
        20.0,
        &out,
    );
    server.expect_log(&["playing", "stream=cam"], Duration::from_secs(15));
    server.wait_hls("cam", 1, Duration::from_secs(20));
    fetch_hls(&server, "cam");
    std::thread::sleep(Duration::from_secs(1));

    let first = scrape(&server, 1);
    std::thread::sleep(Duration::from_secs(3));
    fetch_hls(&server, "cam");
    let second = scrape(&server, 2);
    assert_running(&mut player);

    // Every family, as both parsers read it, is zerocast's.
    for s in [&first, &second] {
        assert!(s.families.len() >= 15, "{}", s.text);
        assert!(!s.classic.is_empty(), "the classic parser read nothing");
        for f in s.families.iter().chain(&s.classic) {
            let name = f["name"].as_str().unwrap();
            assert!(name.starts_with("zerocast_"), "family {name}");
        }
    }

    // Gauges of what is happening now.
    assert_eq!(second.gauge("zerocast_live_streams", &[]), 1.0);
    assert_eq!(
        second.gauge("zerocast_publishers", &[("protocol", "rtmp")]),
        1.0
    );
    assert!(second.gauge("zerocast_viewers", &[("protocol", "rtmp")]) >= 1.0);
    assert!(second.gauge("zerocast_viewers", &[("protocol", "hls")]) >= 1.0);
    assert!(second.gauge("zerocast_connections", &[("protocol", "rtmp")]) >= 2.0);

    // Counters moved while the stream played.
    let grew = |family: &str, labels: &[(&str, &str)]| {
        let (a, b) = (
            first.counter(family, labels),
            second.counter(family, labels),
        );
        assert!(b > a, "{family}{labels:?} did not grow: {a} -> {b}");
    };
    grew("zerocast_ingest_bytes", &[("protocol", "rtmp")]);
    grew(
        "zerocast_ingest_frames",
        &[("protocol", "rtmp"), ("kind", "video")],
    );
    grew(
        "zerocast_ingest_frames",
        &[("protocol", "rtmp"), ("kind", "audio")],
    );
    grew("zerocast_egress_bytes", &[("protocol", "rtmp")]);
    grew("zerocast_egress_bytes", &[("protocol", "hls")]);
    grew(
        "zerocast_http_requests",
        &[("route", "hls"), ("status_class", "2xx")],
    );
    assert!(second.counter("zerocast_connections_accepted", &[("protocol", "rtmp")]) >= 3.0);
    assert!(
        second.counter("zerocast_auth_failures", &[("reason", "stream_key")]) >= 1.0,
        "the wrong-key publish is counted"
    );
    assert_eq!(
        second.counter("zerocast_dropped_frames", &[]),
        0.0,
        "a local player keeps up"
    );

    // Histograms moved, and their buckets are cumulative.
    let hist_grew = |family: &str, labels: &[(&str, &str)]| {
        let (a, b) = (
            first.histogram_count(family, labels),
            second.histogram_count(family, labels),
        );
        assert!(b > a, "{family}{labels:?} count did not grow: {a} -> {b}");
    };
    hist_grew("zerocast_ingest_to_egress_seconds", &[("protocol", "rtmp")]);
    hist_grew("zerocast_queue_wait_seconds", &[("protocol", "rtmp")]);
    hist_grew("zerocast_hls_part_latency_seconds", &[]);

    // For the record (`-- --nocapture`): the latency families of the second scrape.
    for line in second.text.lines().filter(|l| l.contains("seconds_")) {
        println!("{line}");
    }
}

#[test]
fn metrics_require_the_api_token_when_configured() {
    let _serial = serial();
    let server = Server::start(ServerOpts {
        metrics: vec!["require_token = true".into()],
        ..ServerOpts::default()
    });
    let anonymous = get(server.http_port, "/metrics");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let wrong = request(
        server.http_port,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong-token-0123456789\r\n\
         Connection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let ok = request(
        server.http_port,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_TOKEN}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    check_headers(&ok);
    let s = Scrape::parse(ok.text(), server.dir.path(), 0);
    assert_eq!(
        s.counter("zerocast_auth_failures", &[("reason", "api_token")]),
        2.0,
        "both refused scrapes are counted"
    );
    assert_eq!(
        s.counter(
            "zerocast_http_requests",
            &[("route", "metrics"), ("status_class", "4xx")]
        ),
        2.0
    );
}
