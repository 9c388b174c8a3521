//! Hostile RTMP input on raw sockets while a real ffmpeg stream is published and played: each bad
//! connection is closed by the server, the server survives, and the real viewer sees no hiccup.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

const SECS: Duration = Duration::from_secs(1);
/// How long the server has to close a misbehaving connection.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

type Attack = (&'static str, fn(SocketAddr) -> Result<String, String>);

/// (a) 64 KiB of random bytes (first byte not a valid RTMP version).
fn random_bytes(addr: SocketAddr) -> Result<String, String> {
    let mut s = connect(addr, CLOSE_LIMIT).map_err(|e| format!("connect: {e}"))?;
    let mut rng = Rng::new(0xbad_5eed);
    let mut junk = vec![0u8; 64 * 1024];
    rng.fill(&mut junk);
    junk[0] = 0xEE;
    write_lossy(&mut s, &junk);
    let n = expect_closed(&mut s, CLOSE_LIMIT)?;
    Ok(format!("closed after {n} bytes from the server"))
}

/// (b) C0 + half of C1, then the client closes; the server must just survive.
fn truncated_handshake(addr: SocketAddr) -> Result<String, String> {
    let mut s = connect(addr, CLOSE_LIMIT).map_err(|e| format!("connect: {e}"))?;
    let c = c0c1(&mut Rng::new(7));
    write_lossy(&mut s, &c[..1 + HANDSHAKE_SIZE / 2]);
    std::thread::sleep(Duration::from_millis(200));
    close(s);
    Ok("client closed mid-handshake".into())
}

fn after_handshake(addr: SocketAddr, seed: u64) -> Result<std::net::TcpStream, String> {
    let mut s = connect(addr, CLOSE_LIMIT).map_err(|e| format!("connect: {e}"))?;
    handshake(&mut s, &mut Rng::new(seed)).map_err(|e| format!("handshake: {e}"))?;
    Ok(s)
}

/// (c) Valid handshake, then Set Chunk Size 0x7fffffff.
fn huge_chunk_size(addr: SocketAddr) -> Result<String, String> {
    let mut s = after_handshake(addr, 11)?;
    write_lossy(&mut s, &set_chunk_size(0x7fff_ffff));
    // Follow with a message that would be read with that chunk size.
    write_lossy(
        &mut s,
        &chunked_message(3, 0, 20, 0, &[0x05; 300], 0x7fff_ffff),
    );
    let n = expect_closed(&mut s, CLOSE_LIMIT)?;
    Ok(format!("closed after {n} bytes"))
}

/// (d) Valid handshake, Set Chunk Size attempts (a legal 65536, then 0 and one with the top bit
/// set), then a type-0 header announcing the largest expressible message length (0xFFFFFF) with
/// an extended timestamp, followed by data.
fn huge_message(addr: SocketAddr) -> Result<String, String> {
    let mut s = after_handshake(addr, 13)?;
    write_lossy(&mut s, &set_chunk_size(65536));
    let mut msg = Vec::new();
    msg.push(0x04); // fmt 0, csid 4
    msg.extend_from_slice(&[0xFF, 0xFF, 0xFF]); // timestamp: extended follows
    msg.extend_from_slice(&[0xFF, 0xFF, 0xFF]); // message length 16 MiB - 1
    msg.push(9); // video
    msg.extend_from_slice(&1u32.to_le_bytes());
    msg.extend_from_slice(&0x7FFF_FFF0u32.to_be_bytes()); // extended timestamp
    msg.extend_from_slice(&[0x17; 60000]);
    write_lossy(&mut s, &msg);
    // Then more chunk-size abuse on the same connection, in case it is still open.
    write_lossy(&mut s, &set_chunk_size(0));
    write_lossy(&mut s, &set_chunk_size(0xFFFF_FFFF));
    let mut more = vec![0xC4u8];
    more.extend_from_slice(&0x7FFF_FFF0u32.to_be_bytes());
    more.extend_from_slice(&[0x17; 60000]);
    for _ in 0..8 {
        write_lossy(&mut s, &more);
    }
    let n = expect_closed(&mut s, CLOSE_LIMIT)?;
    Ok(format!("closed after {n} bytes"))
}

/// (e) Valid handshake, then a `connect` command nesting 1000 objects / strict arrays.
fn deep_amf(addr: SocketAddr) -> Result<String, String> {
    let mut s = after_handshake(addr, 17)?;
    let payload = deep_connect(1000);
    write_lossy(&mut s, &chunked_message(3, 0, 20, 0, &payload, 128));
    let n = expect_closed(&mut s, CLOSE_LIMIT)?;
    Ok(format!(
        "closed after {n} bytes ({} byte command)",
        payload.len()
    ))
}

#[test]
fn bad_input_closes_only_its_connection() {
    require_ffmpeg();
    let clip = clip(MAIN_CLIP);
    let mut server = Server::start(ServerOpts {
        shards: 2,
        ..Default::default()
    });
    let key = server.create_stream("steady");
    let dir = server.scratch("peers");
    let mut publisher = publish("publisher", &dir, &clip, &server.publish_url(&key));
    server.expect_log(&["publishing", "stream=steady"], 10 * SECS);

    let out = dir.join("play.flv");
    let mut player = record("player", &dir, &server.play_url("steady"), 8.0, &out);
    server.expect_log(&["playing", "stream=steady"], 10 * SECS);
    std::thread::sleep(Duration::from_millis(500));

    let attacks: [Attack; 5] = [
        ("random bytes", random_bytes),
        ("truncated handshake", truncated_handshake),
        ("set chunk size 0x7fffffff", huge_chunk_size),
        ("16 MiB message with extended timestamp", huge_message),
        ("connect with 1000 nested AMF0 values", deep_amf),
    ];
    let addr = server.addr();
    let started = Instant::now();
    // Four rounds one second apart, each attack twice per round, concurrently, while the real
    // player records.
    let mut failures = Vec::new();
    for round in 0..4 {
        if round > 0 {
            std::thread::sleep(SECS);
        }
        let handles: Vec<_> = attacks
            .iter()
            .chain(attacks.iter())
            .map(|&(name, f)| (name, std::thread::spawn(move || f(addr))))
            .collect();
        for (name, h) in handles {
            match h.join() {
                Ok(Ok(what)) => {
                    if round == 0 {
                        eprintln!("{name}: {what}")
                    }
                }
                Ok(Err(e)) => failures.push(format!("round {round}, {name}: {e}")),
                Err(_) => failures.push(format!("round {round}, {name}: attack thread panicked")),
            }
        }
        server.assert_alive();
    }
    eprintln!("attacks done in {:?}", started.elapsed());
    for l in server.log().lines().filter(|l| l.contains("closed")) {
        eprintln!("server: {l}");
    }
    server.assert_alive();
    assert!(
        failures.is_empty(),
        "connections the server did not close:\n{}\n--- server log ---\n{}",
        failures.join("\n"),
        server.log()
    );

    finish_player(&mut player, 30 * SECS);
    let rec = analyze_or_panic(&out, &player);
    assert_eq!((rec.width, rec.height), (Some(1280), Some(720)));
    rec.assert_complete(7.5, 0.5, "player during the attacks");
    assert_running(&mut publisher);
    server.assert_alive();

    // Still serving new viewers after all that.
    let streams = probe(&server.play_url("steady"), 20 * SECS)
        .unwrap_or_else(|e| panic!("ffprobe after the attacks: {e}"));
    assert_av(&streams, 1280, 720, "ffprobe after the attacks");
    drop(publisher);
    server.stop_ok();
}
