//! Stream ownership and slow players, end to end with ffmpeg: takeover, a refused second
//! publisher, and a player that stops reading.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use zerocast_rtmp::{ClientEvent, ClientParams, ClientSession, Input, Output, SessionConfig};

/// A second publisher of a live stream is refused, and the first one goes on.
#[test]
fn second_publisher_refused() {
    let _serial = serial();
    let server = Server::start(ServerOpts::default());
    let key = server.create_stream("cam");
    let clip = clip(MAIN_CLIP);
    let mut first = publish("pub1", server.dir.path(), &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=cam"], Duration::from_secs(10));
    let mut second = publish("pub2", server.dir.path(), &clip, &server.publish_url(&key));
    let st = second
        .wait_for(Duration::from_secs(10))
        .expect("second publisher must be refused and exit");
    assert!(!st.success(), "second publisher exited with {st}");
    assert!(
        second.stderr().contains("already being published"),
        "ffmpeg should print the refusal: {}",
        second.stderr()
    );
    server.expect_log(
        &["publish refused: stream already live"],
        Duration::from_secs(2),
    );
    assert!(first.try_status().is_none(), "first publisher must go on");
    let out = server.dir.path().join("play.flv");
    let mut rec = record(
        "play",
        server.dir.path(),
        &server.play_url("cam"),
        3.0,
        &out,
    );
    rec.wait_for(Duration::from_secs(20)).expect("player ends");
    analyze(&out)
        .unwrap()
        .assert_complete(2.0, 0.5, "player of the first publisher");
}

/// With `streams.takeover = true` the newest publisher wins and the old one is ended.
#[test]
fn takeover_lets_newest_publisher_win() {
    let _serial = serial();
    let server = Server::start(ServerOpts {
        shards: 2,
        streams: vec!["takeover = true".into()],
        ..ServerOpts::default()
    });
    let key = server.create_stream("cam");
    let old_clip = clip(small_clip(640, 360, 500));
    let new_clip = clip(small_clip(320, 240, 700));
    let mut old = publish(
        "old",
        server.dir.path(),
        &old_clip,
        &server.publish_url(&key),
    );
    server.expect_log(
        &["publishing", "stream=cam", "generation=1"],
        Duration::from_secs(10),
    );
    let _new = publish(
        "new",
        server.dir.path(),
        &new_clip,
        &server.publish_url(&key),
    );
    server.expect_log(
        &["publishing", "stream=cam", "generation=2"],
        Duration::from_secs(10),
    );
    old.wait_for(Duration::from_secs(10))
        .expect("the replaced publisher is disconnected");
    let out = server.dir.path().join("play.flv");
    let mut rec = record(
        "play",
        server.dir.path(),
        &server.play_url("cam"),
        3.0,
        &out,
    );
    rec.wait_for(Duration::from_secs(20)).expect("player ends");
    let r = analyze(&out).unwrap();
    assert_eq!(
        (r.width, r.height),
        (Some(320), Some(240)),
        "the player must see the new publisher's stream"
    );
    r.assert_complete(2.0, 0.5, "player after takeover");
}

/// Plays `url` with zerocast's own RTMP client until the server says Play.Start, then
/// returns the socket without reading any more.
fn start_playing_then_stall(addr: std::net::SocketAddr, name: &str) -> TcpStream {
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let params = ClientParams {
        app: "live".into(),
        tc_url: format!("rtmp://{addr}/live"),
        flash_ver: None,
    };
    let mut client = ClientSession::new(SessionConfig::default(), Instant::now(), params);
    client.play(name);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        assert!(Instant::now() < deadline, "no Play.Start within 10 s");
        let mut started = false;
        loop {
            match client.poll_output() {
                Output::Transmit(rope) => {
                    for part in rope.parts() {
                        sock.write_all(part).expect("write");
                    }
                }
                Output::Event(ClientEvent::PlayStarted { .. }) => started = true,
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
        if started {
            return sock;
        }
        match sock.read(&mut buf) {
            Ok(0) => panic!("server closed the player before Play.Start"),
            Ok(n) => client
                .handle_input(Input::Receive(
                    Instant::now(),
                    Bytes::copy_from_slice(&buf[..n]),
                ))
                .expect("client session"),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A player that stops reading loses frames (counted), is dropped after `limits.viewer_stall`
/// with a logged reason, and neither the publisher nor another player notices.
#[test]
fn stalled_player_is_dropped_without_disturbing_others() {
    let _serial = serial();
    let server = Server::start(ServerOpts {
        limits: vec![
            "viewer_stall = \"2s\"".into(),
            "viewer_queue_bytes = 262144".into(),
        ],
        ..ServerOpts::default()
    });
    let key = server.create_stream("cam");
    let clip = clip(MAIN_CLIP);
    let mut publisher = publish("pub", server.dir.path(), &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=cam"], Duration::from_secs(10));
    let stalled = start_playing_then_stall(server.addr(), "cam");
    // Small receive buffer: the kernel's buffers fill after a few seconds of video.
    let _ = socket_shrink(&stalled);
    let out = server.dir.path().join("healthy.flv");
    let mut healthy = record(
        "healthy",
        server.dir.path(),
        &server.play_url("cam"),
        8.0,
        &out,
    );
    let line = server.expect_log(
        &["viewer dropped: it took nothing for limits.viewer_stall"],
        Duration::from_secs(40),
    );
    assert!(
        line.contains("WARN"),
        "the drop is logged as a warning: {line}"
    );
    server.expect_log(
        &["frames dropped because it was slow"],
        Duration::from_secs(5),
    );
    healthy
        .wait_for(Duration::from_secs(30))
        .expect("healthy player ends");
    analyze(&out)
        .unwrap()
        .assert_complete(6.0, 0.5, "player next to a stalled one");
    assert!(
        publisher.try_status().is_none(),
        "publisher must not be disturbed"
    );
    drop(stalled);
}

/// Shrinks the socket's receive buffer so a non-reading client backs up quickly.
fn socket_shrink(s: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(s).set_recv_buffer_size(4096)
}
