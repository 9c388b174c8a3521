//! In-memory client/server pairs with virtual time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_rtmp::{
    amf0, encode_message, Amf0Value, ByteRope, ClientEvent, ClientParams, ClientSession, Error,
    Input, MediaKind, MediaMessage, Output, ServerEvent, ServerSession, SessionConfig,
};

/// Moves transmits between a client and a server; `mtu` splits every transmit into pieces.
struct Pair {
    client: ClientSession,
    server: ServerSession,
    now: Instant,
    mtu: usize,
    client_events: Vec<ClientEvent>,
    server_events: Vec<ServerEvent>,
    client_timeout: Instant,
    server_timeout: Instant,
}

fn params() -> ClientParams {
    ClientParams {
        app: "live".into(),
        tc_url: "rtmp://example.com/live".into(),
        flash_ver: None,
    }
}

impl Pair {
    fn new(mtu: usize) -> Self {
        let now = Instant::now();
        Pair {
            client: ClientSession::new(SessionConfig::default(), now, params()),
            server: ServerSession::new(SessionConfig::default(), now),
            now,
            mtu,
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_timeout: now,
            server_timeout: now,
        }
    }

    fn deliver(rope: ByteRope, mtu: usize, now: Instant, mut to: impl FnMut(Input)) {
        let all = rope.to_contiguous();
        for piece in all.chunks(mtu) {
            to(Input::Receive(now, Bytes::copy_from_slice(piece)));
        }
    }

    /// Runs until neither side has anything to send.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            loop {
                match self.client.poll_output() {
                    Output::Transmit(r) => {
                        moved = true;
                        let (now, mtu, server) = (self.now, self.mtu, &mut self.server);
                        Self::deliver(r, mtu, now, |i| server.handle_input(i).expect("server"));
                    }
                    Output::Event(e) => self.client_events.push(e),
                    Output::Timeout(t) => {
                        self.client_timeout = t;
                        break;
                    }
                }
            }
            loop {
                match self.server.poll_output() {
                    Output::Transmit(r) => {
                        moved = true;
                        let (now, mtu, client) = (self.now, self.mtu, &mut self.client);
                        Self::deliver(r, mtu, now, |i| client.handle_input(i).expect("client"));
                    }
                    Output::Event(e) => self.server_events.push(e),
                    Output::Timeout(t) => {
                        self.server_timeout = t;
                        break;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

fn media(kind: MediaKind, ts: u32, len: usize, seed: u8) -> MediaMessage {
    // A payload made of several parts, like a frame cut out of receive buffers.
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
    let mut payload = ByteRope::new();
    for p in data.chunks(1000) {
        payload.push(Bytes::copy_from_slice(p));
    }
    MediaMessage {
        kind,
        timestamp: ts,
        stream_id: 1,
        payload,
    }
}

fn metadata_body() -> ByteRope {
    ByteRope::from(amf0::encode_all(&[
        Amf0Value::string("onMetaData"),
        Amf0Value::EcmaArray(vec![
            ("width".into(), Amf0Value::Number(1920.0)),
            ("height".into(), Amf0Value::Number(1080.0)),
        ]),
    ]))
}

fn publish_flow(mtu: usize) {
    let mut p = Pair::new(mtu);
    p.client.publish("key?token=abc");
    p.drive();
    assert_eq!(
        p.server_events,
        vec![
            ServerEvent::Connect {
                app: "live".into(),
                tc_url: Some("rtmp://example.com/live".into())
            },
            ServerEvent::Publish {
                stream_id: 1,
                name: "key?token=abc".into(),
                kind: "live".into()
            }
        ]
    );
    assert!(p.server.is_established());
    assert_eq!(p.server.out_chunk_size(), 4096);
    p.server_events.clear();
    p.server.accept_publish(1);
    p.drive();
    assert!(p.client_events.contains(&ClientEvent::Connected));
    assert!(p
        .client_events
        .contains(&ClientEvent::PublishStarted { stream_id: 1 }));

    p.client.send_metadata(&metadata_body());
    let sent = vec![
        media(MediaKind::Video, 0, 40, 3),
        media(MediaKind::Audio, 0, 300, 5),
        media(MediaKind::Video, 33, 100_000, 7),
        media(MediaKind::Video, 66, 4096, 11),
        media(MediaKind::Video, 0x00ff_ffff, 9000, 13),
        media(MediaKind::Audio, 0x8000_0000, 4097, 17),
        media(MediaKind::Video, 0x8000_0010, 0, 19),
    ];
    for m in &sent {
        p.client.send_media(m);
    }
    p.drive();
    assert_eq!(
        p.server_events[0].clone().normalized(),
        ServerEvent::Metadata {
            stream_id: 1,
            timestamp: 0,
            payload: metadata_body()
        }
    );
    let got: Vec<MediaMessage> = p.server_events[1..]
        .iter()
        .map(|e| match e {
            ServerEvent::Media(m) => m.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got.len(), sent.len());
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!((g.kind, g.timestamp, g.stream_id), (s.kind, s.timestamp, 1));
        assert_eq!(g.payload.to_contiguous(), s.payload.to_contiguous());
    }
    p.server_events.clear();
    p.client.close();
    p.drive();
    assert_eq!(
        p.server_events,
        vec![ServerEvent::Unpublish { stream_id: 1 }]
    );
}

trait Normalized {
    fn normalized(self) -> Self;
}

impl Normalized for ServerEvent {
    /// Ropes compare by parts; flatten for comparisons.
    fn normalized(self) -> Self {
        match self {
            ServerEvent::Metadata {
                stream_id,
                timestamp,
                payload,
            } => ServerEvent::Metadata {
                stream_id,
                timestamp,
                payload: ByteRope::from(payload.to_contiguous()),
            },
            e => e,
        }
    }
}

#[test]
fn client_publishes_server_accepts() {
    publish_flow(64 * 1024);
}

#[test]
fn client_publishes_in_tiny_segments() {
    publish_flow(7);
}

#[test]
fn client_plays() {
    let mut p = Pair::new(1500);
    p.client.play("cam1");
    p.drive();
    assert_eq!(
        p.server_events.last(),
        Some(&ServerEvent::Play {
            stream_id: 1,
            name: "cam1".into()
        })
    );
    p.server.accept_play(1);
    p.drive();
    assert!(p
        .client_events
        .contains(&ClientEvent::PlayStarted { stream_id: 1 }));
    p.client_events.clear();

    // Per-connection chunking, and one shared encoding sent through send_encoded.
    let m1 = media(MediaKind::Video, 1000, 20_000, 23);
    p.server.send_media(&m1);
    let m2 = media(MediaKind::Audio, 1010, 500, 29);
    let mut shared = ByteRope::new();
    encode_message(
        zerocast_rtmp::CSID_AUDIO,
        8,
        1,
        1010,
        &m2.payload,
        p.server.out_chunk_size(),
        &mut shared,
    );
    p.server.send_encoded(&shared);
    p.drive();
    let got: Vec<&MediaMessage> = p
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Media(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].payload.to_contiguous(), m1.payload.to_contiguous());
    assert_eq!((got[0].kind, got[0].timestamp), (MediaKind::Video, 1000));
    assert_eq!(got[1].payload.to_contiguous(), m2.payload.to_contiguous());
    assert_eq!((got[1].kind, got[1].timestamp), (MediaKind::Audio, 1010));

    p.client_events.clear();
    p.server.end_play(1);
    p.drive();
    assert!(p
        .client_events
        .contains(&ClientEvent::StreamEof { stream_id: 1 }));

    // No idle timeout while playing, even after a long silence.
    p.now += Duration::from_secs(120);
    p.server.handle_input(Input::Timeout(p.now)).unwrap();

    p.server_events.clear();
    p.client.close();
    p.drive();
    assert_eq!(
        p.server_events,
        vec![ServerEvent::PlayStop { stream_id: 1 }]
    );
}

#[test]
fn wrong_publish_is_rejected() {
    let mut p = Pair::new(4096);
    p.client.publish("bad");
    p.drive();
    p.server
        .reject_publish(1, "NetStream.Publish.BadName", "no such key");
    p.drive();
    assert!(p.client_events.contains(&ClientEvent::Status {
        level: "error".into(),
        code: "NetStream.Publish.BadName".into(),
        description: "no such key".into()
    }));
    assert!(!p
        .client_events
        .iter()
        .any(|e| matches!(e, ClientEvent::PublishStarted { .. })));
    p.server_events.clear();
    // Media on a stream that is not publishing is ignored.
    p.client.send_media(&media(MediaKind::Video, 0, 100, 1));
    p.drive();
    assert!(p.server_events.is_empty());
}

#[test]
fn handshake_timeout_fires_in_virtual_time() {
    let t0 = Instant::now();
    let mut s = ServerSession::new(SessionConfig::default(), t0);
    let Output::Timeout(at) = s.poll_output() else {
        panic!("expected a timeout")
    };
    assert_eq!(at, t0 + Duration::from_secs(10));
    // Spurious tick.
    s.handle_input(Input::Timeout(t0 + Duration::from_secs(5)))
        .unwrap();
    // Some handshake bytes, but not all.
    s.handle_input(Input::Receive(t0, Bytes::from_static(&[3, 0, 0])))
        .unwrap();
    assert_eq!(
        s.handle_input(Input::Timeout(at)),
        Err(Error::HandshakeTimeout)
    );
    assert_eq!(
        s.handle_input(Input::Receive(at, Bytes::from_static(&[0]))),
        Err(Error::SessionDead)
    );
}

#[test]
fn idle_timeout_after_connect() {
    let mut p = Pair::new(4096);
    p.client.publish("k");
    p.drive();
    let idle_at = p.server_timeout;
    assert_eq!(idle_at, p.now + Duration::from_secs(30));
    assert_eq!(
        p.server.handle_input(Input::Timeout(idle_at)),
        Err(Error::IdleTimeout)
    );
}

/// A server that has completed a plain handshake; returns it and the offset of the next byte.
fn handshaken_server() -> (ServerSession, Instant, u64) {
    let t0 = Instant::now();
    let mut s = ServerSession::new(SessionConfig::default(), t0);
    let mut hs = vec![3u8];
    hs.extend_from_slice(&[0u8; 1536 * 2]);
    s.handle_input(Input::Receive(t0, Bytes::from(hs))).unwrap();
    assert!(matches!(s.poll_output(), Output::Transmit(r) if r.len() == 3073));
    (s, t0, 3073)
}

#[test]
fn garbage_after_handshake_names_the_offset() {
    let (mut s, t0, off) = handshaken_server();
    let err = s
        .handle_input(Input::Receive(
            t0,
            Bytes::from_static(&[0x45, 1, 2, 3, 4, 5, 6, 7]),
        ))
        .unwrap_err();
    assert_eq!(
        err,
        Error::UnknownChunkStream {
            csid: 5,
            fmt: 1,
            offset: off
        }
    );
    assert!(err.to_string().contains("3073"), "{err}");
}

#[test]
fn command_before_connect_is_an_error() {
    let (mut s, t0, _) = handshaken_server();
    let mut wire = ByteRope::new();
    let body = ByteRope::from(amf0::encode_all(&[
        Amf0Value::string("createStream"),
        Amf0Value::Number(2.0),
        Amf0Value::Null,
    ]));
    encode_message(3, 20, 0, 0, &body, 128, &mut wire);
    let err = s
        .handle_input(Input::Receive(t0, wire.to_contiguous()))
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { offset: 3073, .. }), "{err}");
}

#[test]
fn limits_refuse_hostile_sizes() {
    // Chunk size 0x7fffffff.
    let (mut s, t0, _) = handshaken_server();
    let mut wire = ByteRope::new();
    encode_message(
        2,
        1,
        0,
        0,
        &ByteRope::from(vec![0x7f, 0xff, 0xff, 0xff]),
        128,
        &mut wire,
    );
    assert!(matches!(
        s.handle_input(Input::Receive(t0, wire.to_contiguous())),
        Err(Error::ChunkSizeTooLarge {
            size: 0x7fff_ffff,
            max: 65536,
            offset: 3073
        })
    ));

    // The largest message length a header can say (16 MiB) against the 8 MiB limit; refused
    // at the header, before any payload is buffered.
    let (mut s, t0, _) = handshaken_server();
    let hdr = [0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
    assert!(matches!(
        s.handle_input(Input::Receive(t0, Bytes::copy_from_slice(&hdr))),
        Err(Error::MessageTooLarge { offset: 3073, .. })
    ));

    // A connect whose command object nests 1000 deep.
    let (mut s, t0, _) = handshaken_server();
    let mut body = amf0::encode_all(&[Amf0Value::string("connect"), Amf0Value::Number(1.0)]);
    for _ in 0..1000 {
        body.extend_from_slice(b"\x03\x00\x01a");
    }
    let mut wire = ByteRope::new();
    encode_message(3, 20, 0, 0, &ByteRope::from(body), 128, &mut wire);
    let err = s
        .handle_input(Input::Receive(t0, wire.to_contiguous()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Amf0 {
                offset: 3073,
                source: zerocast_rtmp::Amf0Error::TooDeep { max: 16, .. }
            }
        ),
        "{err}"
    );

    // A connect with a string announcing 2 GiB.
    let (mut s, t0, _) = handshaken_server();
    let mut body = amf0::encode_all(&[Amf0Value::string("connect"), Amf0Value::Number(1.0)]);
    body.extend_from_slice(&[0x0c, 0x80, 0, 0, 0, b'x']);
    let mut wire = ByteRope::new();
    encode_message(3, 20, 0, 0, &ByteRope::from(body), 128, &mut wire);
    assert!(matches!(
        s.handle_input(Input::Receive(t0, wire.to_contiguous())),
        Err(Error::Amf0 {
            source: zerocast_rtmp::Amf0Error::StringTooLong { .. },
            ..
        })
    ));
}

#[test]
fn ping_request_is_answered() {
    let (mut s, t0, _) = handshaken_server();
    let mut wire = ByteRope::new();
    encode_message(
        2,
        4,
        0,
        0,
        &ByteRope::from(vec![0, 6, 0, 0, 0x12, 0x34]),
        128,
        &mut wire,
    );
    s.handle_input(Input::Receive(t0, wire.to_contiguous()))
        .unwrap();
    let Output::Transmit(r) = s.poll_output() else {
        panic!("expected a ping response")
    };
    let b = r.to_contiguous();
    assert_eq!(&b[b.len() - 6..], &[0, 7, 0, 0, 0x12, 0x34]);
}

#[test]
fn unknown_command_gets_error_not_disconnect() {
    let mut p = Pair::new(4096);
    p.client.publish("k");
    p.drive();
    // Hand-made command from the client side: inject raw chunks into the server.
    let body = ByteRope::from(amf0::encode_all(&[
        Amf0Value::string("whatIsThis"),
        Amf0Value::Number(42.0),
        Amf0Value::Null,
    ]));
    let mut wire = ByteRope::new();
    encode_message(3, 20, 0, 0, &body, 4096, &mut wire);
    p.server
        .handle_input(Input::Receive(p.now, wire.to_contiguous()))
        .unwrap();
    let Output::Transmit(r) = p.server.poll_output() else {
        panic!("expected _error")
    };
    let b = r.to_contiguous();
    assert!(b.windows(6).any(|w| w == b"_error"));
}

#[test]
fn receiver_acknowledges_its_window() {
    let mut p = Pair::new(64 * 1024);
    p.client.play("big");
    p.drive();
    p.server.accept_play(1);
    p.drive();
    // 3 MB toward the client: more than the 2.5 MB window the server announced.
    for i in 0..3 {
        p.server
            .send_media(&media(MediaKind::Video, i * 40, 1_000_000, 3));
    }
    let Output::Transmit(r) = p.server.poll_output() else {
        panic!("expected media")
    };
    p.client
        .handle_input(Input::Receive(p.now, r.to_contiguous()))
        .unwrap();
    let mut acks = Vec::new();
    loop {
        let r = match p.client.poll_output() {
            Output::Transmit(r) => r,
            Output::Event(_) => continue,
            Output::Timeout(_) => break,
        };
        let mut d = zerocast_rtmp::ChunkDecoder::new(&Default::default(), 0);
        let mut msgs = Vec::new();
        d.push(r.to_contiguous(), &mut msgs).unwrap();
        acks.extend(msgs.into_iter().filter(|m| m.msg_type == 3));
    }
    assert_eq!(acks.len(), 1);
    let seq = acks[0].payload.reader().u32().unwrap();
    assert!(seq >= 2_500_000, "{seq}");
}
