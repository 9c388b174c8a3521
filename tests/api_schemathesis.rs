//! schemathesis (property-based API testing from the OpenAPI document) against a running
//! server: every operation of `/api/v1/openapi.json` is called with generated valid and invalid
//! input (examples, coverage, fuzzing and stateful phases, `--checks all`), with the token. It
//! must find no 5xx and no response that breaks the document (status, content type, headers,
//! body schema), invalid input must be refused, valid input accepted, and requests without the
//! token refused.
//!
//! The server has a finished recording (so downloads and `Range` are exercised) and a live
//! publisher (so live statistics and stop are). schemathesis is pinned and installed by
//! `scripts/test` into its virtualenv (`$ZEROCAST_VENV`, default `~/.cache/zerocast/venv`), or
//! set `ZEROCAST_SCHEMATHESIS` to an `st` binary. The run is bounded: `--max-time 60` and at most 50 examples per operation and
//! phase.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::send;
use common::*;

const SECS: Duration = Duration::from_secs(1);

/// The `st` binary: `ZEROCAST_SCHEMATHESIS`, else the one in the virtualenv `scripts/test`
/// creates (`$ZEROCAST_VENV`, default `~/.cache/zerocast/venv`).
fn schemathesis() -> PathBuf {
    match std::env::var_os("ZEROCAST_SCHEMATHESIS") {
        Some(st) => PathBuf::from(st),
        None => venv_program("bin/st", "schemathesis==4.32.5"),
    }
}

fn post_json(server: &Server, path: &str, body: &str) -> serde_json::Value {
    let auth = format!("Bearer {API_TOKEN}");
    let r = send(
        server.http_port,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{path}: {}", r.text());
    r.json()
}

#[test]
fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let _serial = serial();
    require_ffmpeg();
    let st = schemathesis();
    let server = Server::start(ServerOpts {
        shards: 2,
        ..ServerOpts::default()
    });
    let auth = format!("Bearer {API_TOKEN}");

    // A finished recording.
    let rec = post_json(
        &server,
        "/api/v1/streams",
        r#"{"name":"rec","record":true}"#,
    );
    let clip = clip(small_clip(320, 240, 440));
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-i",
    ])
    .arg(&clip)
    .args([
        "-c",
        "copy",
        "-f",
        "flv",
        &server.publish_url(rec["key"].as_str().unwrap()),
    ]);
    let (status, _, err) = run_bounded(cmd, 30 * SECS);
    assert!(status.is_some_and(|s| s.success()), "publish: {err}");
    let deadline = Instant::now() + 10 * SECS;
    loop {
        let r = send(
            server.http_port,
            "GET",
            "/api/v1/recordings",
            &[("Authorization", &auth)],
            b"",
        );
        if r.json()["recordings"][0]["status"] == "complete" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no complete recording: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A live stream (schemathesis may stop, disable, rotate or delete it; then it just ends).
    let live = post_json(&server, "/api/v1/streams", r#"{"name":"live"}"#);
    let dir = server.scratch("peers");
    let _publisher = publish(
        "live",
        &dir,
        &clip,
        &server.publish_url(live["key"].as_str().unwrap()),
    );
    server.expect_log(&["publishing", "stream=live"], 10 * SECS);

    let url = format!("http://127.0.0.1:{}/api/v1/openapi.json", server.http_port);
    let mut cmd = Command::new(&st);
    cmd.args(["run", &url, "--header"])
        .arg(format!("Authorization: {auth}"))
        .args([
            "--checks",
            "all",
            "--max-time",
            "60",
            "--max-examples",
            "50",
            "--request-timeout",
            "15",
            "--workers",
            "2",
        ])
        // schemathesis and hypothesis keep their caches in the working directory.
        .current_dir(server.scratch("schemathesis"))
        .env("NO_COLOR", "1");
    let (status, out, err) = run_bounded(cmd, 150 * SECS);
    // Its report without the progress noise: phases, warnings, summary.
    let report: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .skip_while(|l| !l.contains("Examples"))
        .collect();
    eprintln!("schemathesis report:\n{}", report.join("\n"));
    assert!(
        status.is_some_and(|s| s.success()),
        "schemathesis failed ({status:?})\n--- stdout ---\n{out}\n--- stderr ---\n{err}\n--- server log (tail) ---\n{}",
        server
            .log()
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.contains("Operations:") && out.contains("11 selected / 11 total"),
        "schemathesis did not test all 11 operations:\n{out}"
    );
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    assert!(!log.contains(" ERROR "), "the server logged errors:\n{log}");
    // Still serving.
    let r = send(
        server.http_port,
        "GET",
        "/api/v1/streams",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
}
