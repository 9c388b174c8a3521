//! Enhanced RTMP (FourCC video and audio) through the server.
//!
//! No third-party peer on this machine speaks Enhanced RTMP (Debian's ffmpeg 5.1 predates it),
//! so zerocast's own RTMP client publishes and plays here, over real sockets, against the real
//! server binary; the frames the player parses must equal the frames the publisher sent.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use zerocast_codecs::flv::{self, FlvTag};
use zerocast_codecs::{ByteRope, CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};
use zerocast_rtmp::{
    ClientEvent, ClientParams, ClientSession, Input, MediaMessage, Output, SessionConfig,
};

/// VPS, SPS and PPS of a libx265 1280x720 Main profile record.
const HVCC_720P: &str = "0101600000009000000000005df000fcfdf8f800000f03\
    a00001001840010c01ffff01600000030090000003000003005d959809\
    a10001002b42010101600000030090000003000003005da00280802d165959a4932bc05a020000030002000003003c10\
    a2000100074401c172b46240";

fn hex(h: &str) -> Bytes {
    Bytes::from(
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    )
}

/// An RTMP client session on a blocking socket.
struct Peer {
    sock: TcpStream,
    session: ClientSession,
    buf: Vec<u8>,
    /// Events that arrived together with the one `until` waited for.
    backlog: Vec<ClientEvent>,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let params = ClientParams {
            app: "live".into(),
            tc_url: format!("rtmp://{addr}/live"),
            flash_ver: None,
        };
        Peer {
            sock,
            session: ClientSession::new(SessionConfig::default(), Instant::now(), params),
            buf: vec![0; 64 * 1024],
            backlog: Vec::new(),
        }
    }

    /// Sends what the session has to send and returns its events; reads once.
    fn pump(&mut self) -> Vec<ClientEvent> {
        let mut events = std::mem::take(&mut self.backlog);
        loop {
            match self.session.poll_output() {
                Output::Transmit(rope) => {
                    for p in rope.parts() {
                        self.sock.write_all(p).expect("write");
                    }
                }
                Output::Event(e) => events.push(e),
                Output::Timeout(_) => break,
            }
        }
        match self.sock.read(&mut self.buf) {
            Ok(0) => events.push(ClientEvent::StreamEof { stream_id: 0 }),
            Ok(n) => self
                .session
                .handle_input(Input::Receive(
                    Instant::now(),
                    Bytes::copy_from_slice(&self.buf[..n]),
                ))
                .expect("client session"),
            Err(_) => {}
        }
        events
    }

    fn until(&mut self, what: &str, mut pred: impl FnMut(&ClientEvent) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let events = self.pump();
            if let Some(i) = events.iter().position(&mut pred) {
                self.backlog = events.into_iter().skip(i + 1).collect();
                return;
            }
        }
        panic!("no {what} within 10 s");
    }
}

fn media(kind: MediaKind, timestamp: u32, payload: ByteRope) -> MediaMessage {
    MediaMessage {
        kind,
        timestamp,
        stream_id: 1,
        payload,
    }
}

fn video_track(codec: CodecId, config: Bytes) -> Track {
    Track {
        kind: MediaKind::Video,
        codec,
        config,
        timescale: 1000,
        info: TrackInfo::default(),
    }
}

/// Publishes `frames` of `video` (and Opus audio) and checks that a player gets them back.
fn roundtrip(video: Track, nal_header: fn(bool) -> Vec<u8>) {
    let server = Server::start(ServerOpts {
        shards: 2,
        publish: "open",
        ..ServerOpts::default()
    });
    let addr = server.addr();
    let opus = Track {
        kind: MediaKind::Audio,
        codec: CodecId::Opus,
        // OpusHead: version 1, 2 channels, pre-skip 312, 48 kHz, gain 0, family 0.
        config: Bytes::from_static(b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"),
        timescale: 1000,
        info: TrackInfo::default(),
    };
    let mut frames: Vec<Frame> = Vec::new();
    for i in 0..60u32 {
        let key = i % 30 == 0;
        let ts = i64::from(i) * 33;
        let mut nal = nal_header(key);
        nal.extend((0..(500 + i * 37)).map(|b| (b * 7 + i) as u8));
        let payload = if video.codec.is_nal_based() {
            FramePayload::Nalus(vec![Bytes::from(nal).into()])
        } else {
            FramePayload::Raw(Bytes::from(nal).into())
        };
        frames.push(Frame {
            kind: MediaKind::Video,
            dts: ts,
            pts: ts,
            keyframe: key,
            ingest: Instant::now(),
            payload,
        });
        frames.push(Frame {
            kind: MediaKind::Audio,
            dts: ts + 5,
            pts: ts + 5,
            keyframe: true,
            ingest: Instant::now(),
            payload: FramePayload::Raw(Bytes::from(vec![0xfc, i as u8, 1, 2, 3]).into()),
        });
    }

    let (playing_tx, playing_rx) = mpsc::channel::<()>();
    let (video2, opus2, frames2) = (video.clone(), opus.clone(), frames.clone());
    let publisher = std::thread::spawn(move || {
        let mut p = Peer::connect(addr);
        p.session.publish("enhanced");
        p.until("PublishStarted", |e| {
            matches!(e, ClientEvent::PublishStarted { .. })
        });
        let vh = flv::video_sequence_header(&video2);
        let ah = flv::audio_sequence_header(&opus2);
        p.session.send_media(&media(MediaKind::Video, 0, vh.into()));
        p.session.send_media(&media(MediaKind::Audio, 0, ah.into()));
        p.pump();
        playing_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("player started");
        for f in &frames2 {
            let mut body = ByteRope::new();
            let track = if f.kind == MediaKind::Video {
                &video2
            } else {
                &opus2
            };
            if f.kind == MediaKind::Video {
                flv::video_body(track, f, &mut body);
            } else {
                flv::audio_body(track, f, &mut body);
            }
            p.session.send_media(&media(f.kind, f.dts as u32, body));
            p.pump();
        }
        // Stay connected until the player has everything.
        for _ in 0..200 {
            p.pump();
        }
    });

    server.expect_log(&["publishing", "stream=enhanced"], Duration::from_secs(10));
    let mut player = Peer::connect(addr);
    player.session.play("enhanced");
    player.until("PlayStarted", |e| {
        matches!(e, ClientEvent::PlayStarted { .. })
    });
    let mut tracks = Vec::new();
    let mut got: Vec<Frame> = Vec::new();
    let mut told = Some(playing_tx);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut nalu_len = 4;
    while got.len() < frames.len() && Instant::now() < deadline {
        for ev in player.pump() {
            let ClientEvent::Media(m) = ev else { continue };
            let tag = match m.kind {
                MediaKind::Video => {
                    flv::parse_video(&m.payload, m.timestamp.into(), Instant::now(), nalu_len)
                }
                MediaKind::Audio => {
                    flv::parse_audio(&m.payload, m.timestamp.into(), Instant::now())
                }
                MediaKind::Data => continue,
            }
            .expect("player parses what the server sent");
            match tag {
                FlvTag::SequenceHeader(t) => {
                    if t.kind == MediaKind::Video {
                        nalu_len = flv::nalu_length_size(&t);
                    }
                    tracks.push(t);
                    if tracks.len() == 2 {
                        if let Some(tx) = told.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                FlvTag::Frame { frame, .. } => got.push(frame),
                other => panic!("unexpected tag {other:?}"),
            }
        }
    }
    publisher.join().expect("publisher thread");
    let codecs: Vec<CodecId> = tracks.iter().map(|t| t.codec).collect();
    assert!(codecs.contains(&video.codec), "video track {codecs:?}");
    assert!(codecs.contains(&CodecId::Opus), "opus track {codecs:?}");
    let vt = tracks.iter().find(|t| t.codec == video.codec).unwrap();
    assert_eq!(
        vt.config, video.config,
        "codec configuration record unchanged"
    );
    assert_eq!(got.len(), frames.len(), "every frame arrives");
    for (sent, recv) in frames.iter().zip(&got) {
        assert_eq!(
            (sent.kind, sent.dts, sent.pts, sent.keyframe),
            (recv.kind, recv.dts, recv.pts, recv.keyframe)
        );
        let flat = |p: &FramePayload| match p {
            FramePayload::Nalus(n) => n.iter().map(|r| r.to_contiguous()).collect::<Vec<_>>(),
            FramePayload::Raw(r) => vec![r.to_contiguous()],
        };
        assert_eq!(
            flat(&sent.payload),
            flat(&recv.payload),
            "payload of frame at {}",
            sent.dts
        );
    }
}

#[test]
fn hevc_and_opus_pass_through() {
    let _serial = serial();
    // HEVC NAL header: type 19 (IDR_W_RADL) or 1 (TRAIL_R), layer 0, tid 1.
    roundtrip(video_track(CodecId::H265, hex(HVCC_720P)), |key| {
        vec![if key { 19 << 1 } else { 1 << 1 }, 1]
    });
}

#[test]
fn av1_and_opus_pass_through() {
    let _serial = serial();
    // av1C: marker/version, profile 0 level 8 (4.0), 8-bit 4:2:0, no config OBUs.
    roundtrip(
        video_track(CodecId::Av1, Bytes::from_static(&[0x81, 0x08, 0x0c, 0x00])),
        |_| vec![0x12, 0x00],
    );
}
