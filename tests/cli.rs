//! The command line: stream management, the default config, and the first-start banner.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn zerocast(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG");
    let (st, out, err) = run_bounded(cmd, Duration::from_secs(20));
    (st.map(|s| s.success()).unwrap_or(false), out, err)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[test]
fn streams_create_list_rotate_delete() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("z.toml");
    std::fs::write(
        &config,
        format!("[server]\ndata_dir = {:?}\n", dir.path().join("data")),
    )
    .unwrap();

    let (ok, out, err) = zerocast(&["streams", "create", "studio-a", "--json"], &config);
    assert!(ok, "create failed: {err}");
    let created = json(&out);
    let key = created["key"].as_str().unwrap().to_owned();
    // At least 128 random bits, URL-safe.
    assert!(key.len() >= 22, "key too short: {key}");
    assert!(key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));

    let (ok, _, err) = zerocast(&["streams", "create", "studio-a"], &config);
    assert!(!ok, "a duplicate name must be refused");
    assert!(
        err.contains("studio-a"),
        "the error names the stream: {err}"
    );
    let (ok, _, err) = zerocast(&["streams", "create", "../etc"], &config);
    assert!(!ok && !err.is_empty(), "an invalid name must be refused");

    let (ok, out, _) = zerocast(&["streams", "list", "--json"], &config);
    assert!(ok);
    assert!(out.contains("studio-a"));
    assert!(!out.contains(&key), "list must not show keys");

    let (ok, out, err) = zerocast(&["streams", "rotate-key", "studio-a", "--json"], &config);
    assert!(ok, "rotate failed: {err}");
    let rotated = json(&out)["key"].as_str().unwrap().to_owned();
    assert_ne!(rotated, key);

    let (ok, _, err) = zerocast(&["streams", "delete", "studio-a"], &config);
    assert!(ok, "delete failed: {err}");
    let (_, out, _) = zerocast(&["streams", "list", "--json"], &config);
    assert!(!out.contains("studio-a"));
    let (ok, _, _) = zerocast(&["streams", "delete", "studio-a"], &config);
    assert!(!ok, "deleting a missing stream is an error");
}

#[test]
fn default_config_is_complete_and_unknown_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (st, out, err) = run_bounded(
        {
            let mut c = Command::new(BIN);
            c.args(["config", "default"]);
            c
        },
        Duration::from_secs(10),
    );
    assert!(st.unwrap().success(), "{err}");
    for section in [
        "[server]",
        "[rtmp]",
        "[auth]",
        "[streams]",
        "[limits]",
        "[log]",
    ] {
        assert!(out.contains(section), "default config lacks {section}");
    }
    let config = dir.path().join("default.toml");
    std::fs::write(&config, &out).unwrap();
    let (ok, _, err) = zerocast(&["config", "check"], &config);
    assert!(ok, "the printed default config must be valid: {err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[rtmp]\nlisen = \"0.0.0.0:1935\"\n").unwrap();
    let (ok, _, err) = zerocast(&["config", "check"], &bad);
    assert!(!ok);
    assert!(
        err.contains("lisen"),
        "the error names the unknown key: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

/// First start creates `demo` and prints its key with the OBS settings; a restart does not show
/// the key again (keys are shown on create and rotate only); a rotated key stops working at once.
#[test]
fn first_start_banner_and_key_rotation() {
    let _serial = serial();
    let mut server = Server::start(ServerOpts::default());
    let banner = server.stdout();
    assert!(banner.contains("/live"), "OBS server URL: {banner}");
    let key_line = banner
        .lines()
        .find(|l| l.contains("Stream Key:"))
        .unwrap_or_else(|| panic!("no stream key in banner: {banner}"));
    let key = key_line
        .split_whitespace()
        .nth(2)
        .expect("key after 'Stream Key:'")
        .to_owned();
    assert!(banner.contains("/live/demo"), "play URL: {banner}");
    server.stop_ok();
    let mut again = Server::restart(server);
    assert!(
        !again.stdout().contains(&key) && again.stdout().contains("rotate-key demo"),
        "a restart does not show the key, and says how to get a new one: {}",
        again.stdout()
    );

    let (ok, out, err) = zerocast(&["streams", "rotate-key", "demo", "--json"], &again.config);
    assert!(ok, "{err}");
    let new_key = json(&out)["key"].as_str().unwrap().to_owned();
    let clip = clip(small_clip(320, 240, 440));
    let mut old = publish("old", again.dir.path(), &clip, &again.publish_url(&key));
    let st = old
        .wait_for(Duration::from_secs(10))
        .expect("publishing with the old key must be refused");
    assert!(!st.success());
    let _new = publish("new", again.dir.path(), &clip, &again.publish_url(&new_key));
    again.expect_log(&["publishing", "stream=demo"], Duration::from_secs(10));
    assert!(
        !again.log().contains(&key) && !again.log().contains(&new_key),
        "keys never logged"
    );
    again.stop_ok();
}
