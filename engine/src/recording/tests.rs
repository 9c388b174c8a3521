//! Sink and writer tests: fragment cutting, file structure, the byte budget, write errors.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use zerocast_codecs::{ByteRope, CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};

use super::mux::duration_fields;
use super::writer::{self, FsFile, FsStorage, Index, RecordFile, Storage, Writer};
use super::*;
use crate::config::{RecordingConfig, RecordingFormat};
use crate::store::{RecordingRow, RecordingStatus};
use crate::stream::MediaItem;

/// The avcC libx264 writes for testsrc2 1280x720 at 30 fps (High, level 3.1).
const X264_720P_AVCC: &str = "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f18319\
    6001000668ebe3cb22c0fdf8f800";

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h264_track(width: u32) -> Track {
    Track {
        kind: MediaKind::Video,
        codec: CodecId::H264,
        config: Bytes::from(hex(X264_720P_AVCC)),
        timescale: 1000,
        info: TrackInfo {
            width: Some(width),
            height: Some(720),
            fps: Some(30.0),
            ..Default::default()
        },
    }
}

fn aac_track() -> Track {
    Track {
        kind: MediaKind::Audio,
        codec: CodecId::Aac,
        config: Bytes::from_static(&[0x11, 0x90]),
        timescale: 1000,
        info: TrackInfo {
            sample_rate: Some(48000),
            channels: Some(2),
            ..Default::default()
        },
    }
}

fn video(dts: i64, key: bool) -> MediaItem {
    let nal: &'static [u8] = if key {
        &[0x65, 1, 2, 3, 4, 5, 6, 7]
    } else {
        &[0x41, 9, 9, 9]
    };
    MediaItem::Frame(Frame {
        kind: MediaKind::Video,
        dts,
        pts: dts,
        keyframe: key,
        ingest: Instant::now(),
        payload: FramePayload::Nalus(vec![ByteRope::from(Bytes::from_static(nal))]),
    })
}

fn audio(dts: i64) -> MediaItem {
    MediaItem::Frame(Frame {
        kind: MediaKind::Audio,
        dts,
        pts: dts,
        keyframe: false,
        ingest: Instant::now(),
        payload: FramePayload::Raw(ByteRope::from(Bytes::from_static(&[0x21, 0x10, 0x04]))),
    })
}

fn config(format: RecordingFormat, budget: usize) -> RecordingConfig {
    RecordingConfig {
        record: true,
        format,
        fragment_duration: Duration::from_secs(2),
        max_queued_bytes: budget,
    }
}

/// 30 fps video with a keyframe every `gop` frames and AAC every 21 ms, from `from_ms` for
/// `ms` milliseconds, in arrival order (audio interleaved by dts).
fn av_items(from_ms: i64, ms: i64, gop: i64) -> Vec<MediaItem> {
    let mut out = Vec::new();
    let (mut v, mut a) = (0i64, 0i64);
    loop {
        let vt = from_ms + v * 1000 / 30;
        let at = from_ms + a * 21;
        if vt >= from_ms + ms && at >= from_ms + ms {
            break;
        }
        if vt <= at {
            out.push(video(vt, v % gop == 0));
            v += 1;
        } else {
            out.push(audio(at));
            a += 1;
        }
    }
    out
}

fn drain(rx: &flume::Receiver<Command>) -> Vec<Command> {
    rx.try_iter().collect()
}

fn top_level_boxes(data: &[u8]) -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(size >= 8 && pos + size <= data.len(), "box at {pos}");
        out.push(data[pos + 4..pos + 8].try_into().unwrap());
        pos += size;
    }
    assert_eq!(pos, data.len(), "boxes tile the file");
    out
}

fn concat(parts: &[Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|b| b.iter().copied()).collect()
}

#[test]
fn fragments_are_cut_before_the_first_keyframe_after_the_duration() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 64);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&MediaItem::Track(aac_track()));
    // Audio before the first keyframe and a GOP that started before the sink: not recorded.
    sink.push(&audio(900));
    sink.push(&video(967, false));
    assert!(!sink.is_recording());
    // Keyframes every second from 1000 ms; 5 s of media.
    for item in av_items(1000, 5000, 30) {
        sink.push(&item);
    }
    sink.finish();
    let cmds = drain(&rx);
    let mut ends = Vec::new();
    let mut total = 0;
    let mut file = Vec::new();
    for c in &cmds {
        match c {
            Command::Open {
                header,
                bytes,
                duration_fields: fields,
                ..
            } => {
                total += bytes;
                file.extend(concat(header));
                assert_eq!(fields.len(), 3, "mvhd and two tkhd");
            }
            Command::Write {
                parts,
                bytes,
                end_ms,
                ..
            } => {
                total += bytes;
                let data = concat(parts);
                assert_eq!(data.len(), *bytes);
                assert_eq!(top_level_boxes(&data), [*b"moof", *b"mdat"]);
                file.extend(data);
                ends.push(*end_ms);
            }
            Command::Close { reason, .. } => assert_eq!(*reason, EndReason::StreamEnded),
            Command::Shutdown => panic!("unexpected shutdown"),
        }
    }
    assert!(matches!(cmds.first(), Some(Command::Open { .. })));
    assert!(matches!(cmds.last(), Some(Command::Close { .. })));
    // Cut at the keyframes of 3000 and 5000 ms (2 s each), then the rest at finish; the
    // timeline starts at the first keyframe. A fragment ends with its longest track (the
    // last 21 ms AAC frame may reach past the keyframe).
    assert_eq!(ends.len(), 3, "{ends:?}");
    assert!((2000..=2021).contains(&ends[0]), "{ends:?}");
    assert!((4000..=4021).contains(&ends[1]), "{ends:?}");
    assert!((4990..=5040).contains(&ends[2]), "{ends:?}");
    assert_eq!(rec.queued_bytes(), total, "nothing was written yet");
    assert_eq!(
        top_level_boxes(&file),
        [*b"ftyp", *b"moov", *b"moof", *b"mdat", *b"moof", *b"mdat", *b"moof", *b"mdat"]
    );
}

#[test]
fn audio_only_streams_start_at_the_first_audio_frame() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 64);
    let mut sink = rec.sink("radio".into());
    sink.push(&MediaItem::Track(aac_track()));
    for i in 0..200 {
        sink.push(&audio(500 + i * 21));
    }
    sink.finish();
    let cmds = drain(&rx);
    let ends: Vec<i64> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Write { end_ms, .. } => Some(*end_ms),
            _ => None,
        })
        .collect();
    assert!(matches!(cmds[0], Command::Open { .. }));
    // 200 frames of 21 ms: 4.2 s, cut every 2 s.
    assert_eq!(ends.len(), 3, "{ends:?}");
    assert!((2000..2030).contains(&ends[0]), "{ends:?}");
    assert!((4180..=4210).contains(&ends[2]), "{ends:?}");
}

#[test]
fn a_changed_track_starts_a_new_file_and_a_repeated_one_does_not() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 64);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&MediaItem::Track(aac_track()));
    for item in av_items(0, 1000, 30) {
        sink.push(&item);
    }
    // The same sequence header again: same file.
    sink.push(&MediaItem::Track(aac_track()));
    assert!(sink.is_recording());
    // A new picture size: the file closes; the next starts at the next keyframe.
    sink.push(&MediaItem::Track(h264_track(640)));
    assert!(!sink.is_recording());
    sink.push(&video(1033, false));
    assert!(!sink.is_recording());
    for item in av_items(2000, 1000, 30) {
        sink.push(&item);
    }
    sink.finish();
    let kinds: Vec<(&str, u64)> = drain(&rx)
        .iter()
        .map(|c| match c {
            Command::Open { id, .. } => ("open", *id),
            Command::Write { id, .. } => ("write", *id),
            Command::Close { id, reason } => {
                let r = if *reason == EndReason::TracksChanged {
                    "close:tracks"
                } else {
                    "close"
                };
                (r, *id)
            }
            Command::Shutdown => ("shutdown", 0),
        })
        .collect();
    let (a, b) = (kinds[0].1, kinds.last().unwrap().1);
    assert_ne!(a, b);
    assert_eq!(
        kinds,
        [
            ("open", a),
            ("write", a),
            ("close:tracks", a),
            ("open", b),
            ("write", b),
            ("close", b)
        ]
    );
}

#[test]
fn timestamps_that_go_back_start_a_new_file() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 64);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    for item in av_items(60_000, 1000, 30) {
        sink.push(&item);
    }
    // The encoder restarted its clock: a keyframe at 0.
    for item in av_items(0, 1000, 30) {
        sink.push(&item);
    }
    sink.finish();
    let reasons: Vec<EndReason> = drain(&rx)
        .into_iter()
        .filter_map(|c| match c {
            Command::Close { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [EndReason::TimestampsWentBack, EndReason::StreamEnded]
    );
}

#[test]
fn over_budget_the_recording_stops_and_the_stream_does_not_notice() {
    // Room for the header and about one fragment; nothing drains the queue.
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 12_000), 64);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&MediaItem::Track(aac_track()));
    for item in av_items(0, 20_000, 60) {
        sink.push(&item);
    }
    assert!(sink.is_stopped());
    assert!(!sink.is_recording());
    let cmds = drain(&rx);
    let accepted: usize = cmds
        .iter()
        .map(|c| match c {
            Command::Open { bytes, .. } | Command::Write { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(rec.queued_bytes(), accepted);
    assert!(accepted <= 12_000);
    match cmds.last() {
        Some(Command::Close {
            reason: EndReason::DiskTooSlow { limit, .. },
            ..
        }) => assert_eq!(*limit, 12_000),
        _ => panic!("no Close for the overflow"),
    }
    assert!(EndReason::DiskTooSlow {
        queued: 1,
        limit: 2
    }
    .to_string()
    .starts_with("disk too slow"));
    // Later items are ignored, and finish sends nothing more.
    sink.push(&video(30_000, true));
    sink.finish();
    assert!(drain(&rx).is_empty());
}

// ------------------------------------------------------------------------------------------
// The writer, with in-memory files and index
// ------------------------------------------------------------------------------------------

/// A file's bytes, shared with the test.
type MemData = Arc<Mutex<Vec<u8>>>;

#[derive(Clone, Default)]
struct MemDisk {
    files: Arc<Mutex<Vec<(PathBuf, MemData)>>>,
    /// Appends fail with ENOSPC once a file would exceed this.
    capacity: Option<usize>,
}

struct MemFile {
    data: MemData,
    capacity: Option<usize>,
    syncs: usize,
}

impl Storage for MemDisk {
    type File = MemFile;
    fn create(
        &mut self,
        stream: &str,
        started_at: SystemTime,
        ext: &str,
    ) -> io::Result<(PathBuf, MemFile)> {
        let mut files = self.files.lock().unwrap();
        let path = PathBuf::from(format!(
            "/mem/{stream}/{}-{}.{ext}",
            writer::recording_file_name(started_at),
            files.len()
        ));
        let data = Arc::new(Mutex::new(Vec::new()));
        files.push((path.clone(), data.clone()));
        Ok((
            path,
            MemFile {
                data,
                capacity: self.capacity,
                syncs: 0,
            },
        ))
    }
}

impl RecordFile for MemFile {
    fn append(&mut self, parts: &[Bytes]) -> io::Result<()> {
        let mut d = self.data.lock().unwrap();
        let len: usize = parts.iter().map(|b| b.len()).sum();
        if self.capacity.is_some_and(|c| d.len() + len > c) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        parts.iter().for_each(|p| d.extend_from_slice(p));
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        Ok(())
    }
    fn patch(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.data.lock().unwrap();
        let at = offset as usize;
        d[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.data.lock().unwrap().truncate(len as usize);
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Rows(Arc<Mutex<Vec<(RecordingRow, bool)>>>);

impl Index for Rows {
    fn update(&self, row: &RecordingRow, last: bool) {
        self.0.lock().unwrap().push((row.clone(), last));
    }
}

impl Rows {
    fn all(&self) -> Vec<(RecordingRow, bool)> {
        self.0.lock().unwrap().clone()
    }
}

fn writer<S: Storage>(storage: S, rec: &Recorder) -> (Writer<S, Rows>, Rows) {
    let rows = Rows::default();
    (
        Writer::new(storage, rows.clone(), rec.inner.queued.clone()),
        rows,
    )
}

/// Hands every queued command to `w`, then syncs, as one batch of the thread's loop.
fn pump<S: Storage>(w: &mut Writer<S, Rows>, rx: &flume::Receiver<Command>) {
    for c in rx.try_iter() {
        w.handle(c);
    }
    w.sync_dirty();
    if rx.is_empty() {
        w.close_abandoned();
    }
}

#[test]
fn the_writer_writes_syncs_indexes_and_finalises() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 64);
    let disk = MemDisk::default();
    let (mut w, rows) = writer(disk.clone(), &rec);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&MediaItem::Track(aac_track()));
    let items = av_items(0, 6000, 60);
    let (first, rest) = items.split_at(items.len() / 2);
    for item in first {
        sink.push(item);
    }
    pump(&mut w, &rx);
    // What a crash would leave now: the row describes the synced fragments.
    let (row, last) = rows.all().last().cloned().unwrap();
    assert!(!last);
    assert_eq!(row.status, RecordingStatus::Recording);
    assert!((2000..=2021).contains(&row.duration_ms), "{row:?}");
    let file = disk.files.lock().unwrap()[0].1.clone();
    assert_eq!(row.bytes as usize, file.lock().unwrap().len());
    for item in rest {
        sink.push(item);
    }
    sink.finish();
    pump(&mut w, &rx);
    assert_eq!(w.open_files(), 0);
    assert_eq!(rec.queued_bytes(), 0, "every queued byte was released");
    let (row, last) = rows.all().last().cloned().unwrap();
    assert!(last);
    assert_eq!(row.status, RecordingStatus::Complete);
    assert_eq!(row.reason.as_deref(), Some("stream ended"));
    assert!(row.ended_at.is_some());
    assert!((5990..=6040).contains(&row.duration_ms), "{row:?}");
    let data = file.lock().unwrap().clone();
    assert_eq!(row.bytes as usize, data.len());
    assert_eq!(row.format, "fmp4");
    assert!(row.path.starts_with("/mem/cam/") && row.path.ends_with(".mp4"));
    // The durations in moov were patched to the recording's length.
    let fields = duration_fields(&data);
    assert_eq!(fields.len(), 3);
    for at in fields {
        let at = at as usize;
        let ms = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
        assert_eq!(i64::from(ms), row.duration_ms);
    }
    let boxes = top_level_boxes(&data);
    assert_eq!(boxes.iter().filter(|b| *b == b"moof").count(), 3);
}

#[test]
fn a_full_disk_stops_the_recording_with_the_os_error() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 64);
    let disk = MemDisk {
        capacity: Some(3000),
        ..Default::default()
    };
    let (mut w, rows) = writer(disk.clone(), &rec);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&MediaItem::Track(aac_track()));
    let items = av_items(0, 20_000, 60);
    for item in &items[..items.len() / 2] {
        sink.push(item);
    }
    pump(&mut w, &rx);
    let (row, last) = rows.all().last().cloned().unwrap();
    assert!(last);
    assert_eq!(row.status, RecordingStatus::Failed);
    let reason = row.reason.unwrap();
    assert!(
        reason.starts_with("write failed") && reason.contains("No space left on device"),
        "{reason}"
    );
    // The file keeps what was written before the failure.
    let file = disk.files.lock().unwrap()[0].1.clone();
    assert_eq!(row.bytes as usize, file.lock().unwrap().len());
    // The sink notices at its next item and stops sending; the stream goes on.
    assert!(!sink.is_stopped());
    for item in &items[items.len() / 2..] {
        sink.push(item);
    }
    assert!(sink.is_stopped());
    sink.finish();
    pump(&mut w, &rx);
    assert_eq!(rec.queued_bytes(), 0);
    assert_eq!(w.open_files(), 0);
}

#[test]
fn dev_full_fails_like_a_full_disk() {
    struct DevFull;
    impl Storage for DevFull {
        type File = FsFile;
        fn create(&mut self, _: &str, _: SystemTime, _: &str) -> io::Result<(PathBuf, FsFile)> {
            let f = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
            Ok((PathBuf::from("/dev/full"), FsFile::from_file(f)))
        }
    }
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Flv, 1 << 30), 64);
    let (mut w, rows) = writer(DevFull, &rec);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&video(0, true));
    pump(&mut w, &rx);
    let (row, last) = rows.all().last().cloned().unwrap();
    assert!(last);
    assert_eq!(row.status, RecordingStatus::Failed);
    assert!(row.reason.unwrap().contains("os error 28"));
    sink.push(&video(33, false));
    assert!(sink.is_stopped());
}

#[test]
fn a_full_queue_stops_the_recording_and_the_thread_closes_the_file() {
    // Two commands fit: Open and the first fragment.
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 2);
    let (mut w, rows) = writer(MemDisk::default(), &rec);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    for item in av_items(0, 10_000, 60) {
        sink.push(&item);
    }
    assert!(sink.is_stopped());
    assert_eq!(rx.len(), 2);
    pump(&mut w, &rx);
    assert_eq!(
        w.open_files(),
        0,
        "closed although its Close was never queued"
    );
    let (row, last) = rows.all().last().cloned().unwrap();
    assert!(last);
    assert_eq!(row.status, RecordingStatus::Failed);
    assert!(row.reason.unwrap().contains("queue is full"));
    assert_eq!(row.duration_ms, 2000);
    assert_eq!(rec.queued_bytes(), 0);
}

#[test]
fn flv_files_are_a_header_then_tags() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Flv, 1 << 30), 64);
    let disk = MemDisk::default();
    let (mut w, rows) = writer(disk.clone(), &rec);
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&MediaItem::Track(aac_track()));
    let items = av_items(10_000, 3000, 60);
    let frames = items.len();
    for item in &items {
        sink.push(item);
    }
    sink.finish();
    pump(&mut w, &rx);
    let data = disk.files.lock().unwrap()[0].1.lock().unwrap().clone();
    assert_eq!(&data[..5], b"FLV\x01\x05");
    let mut pos = 13;
    let mut tags = Vec::new();
    while pos < data.len() {
        let kind = data[pos];
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let prev = u32::from_be_bytes(data[pos + 11 + size..pos + 15 + size].try_into().unwrap());
        assert_eq!(prev as usize, 11 + size, "PreviousTagSize at {pos}");
        tags.push((kind, ts, data[pos + 11]));
        pos += 15 + size;
    }
    assert_eq!(pos, data.len());
    // Sequence headers first (AVC 0x17 0x00, AAC 0xAF 0x00), then every frame, rebased.
    assert_eq!(tags[0], (9, 0, 0x17));
    assert_eq!(tags[1], (8, 0, 0xaf));
    assert_eq!(tags.len(), 2 + frames);
    assert_eq!(
        tags[2],
        (9, 0, 0x17),
        "the first frame is the keyframe at 0"
    );
    let (row, _) = rows.all().last().cloned().unwrap();
    assert_eq!(row.format, "flv");
    assert_eq!(row.bytes as usize, data.len());
    assert!((2990..=3040).contains(&row.duration_ms), "{row:?}");
}

#[test]
fn unrecordable_codecs_are_left_out() {
    let (rec, rx) = Recorder::new(&config(RecordingFormat::Fmp4, 1 << 30), 64);
    let mut sink = rec.sink("cam".into());
    let mp3 = Track {
        kind: MediaKind::Audio,
        codec: CodecId::Mp3,
        config: Bytes::new(),
        timescale: 1000,
        info: TrackInfo::default(),
    };
    sink.push(&MediaItem::Track(mp3));
    sink.push(&audio(0));
    assert!(!sink.is_recording(), "MP3 cannot go into fMP4");
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&video(33, true));
    sink.push(&audio(40));
    assert!(sink.is_recording(), "video alone is recorded");
    sink.finish();
    assert!(matches!(drain(&rx)[0], Command::Open { .. }));
}

// ------------------------------------------------------------------------------------------
// Files on disk and the thread
// ------------------------------------------------------------------------------------------

#[test]
fn file_names_are_utc_and_unique() {
    // 2023-11-14 22:13:20 UTC.
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(recording_file_name(t), "20231114-221320");
    let dir = tempfile::tempdir().unwrap();
    let mut fs = FsStorage::new(dir.path().join("recordings"));
    let (a, _) = fs.create("cam", t, "mp4").unwrap();
    let (b, _) = fs.create("cam", t, "mp4").unwrap();
    let (c, _) = fs.create("cam", t, "mp4").unwrap();
    let name = |p: &PathBuf| p.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        [name(&a), name(&b), name(&c)],
        [
            "20231114-221320.mp4",
            "20231114-221320-2.mp4",
            "20231114-221320-3.mp4"
        ]
    );
    assert_eq!(a.parent().unwrap(), dir.path().join("recordings/cam"));
    assert!(fs.create("../x", t, "mp4").is_err());
}

#[test]
fn vectored_writes_handle_short_writes_and_many_slices() {
    /// Takes at most 7 bytes per call.
    struct Dribble(Vec<u8>);
    impl io::Write for Dribble {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(7);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            self.write(first)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let parts: Vec<Bytes> = (0..3000u32)
        .map(|i| Bytes::from(vec![i as u8; (i % 13) as usize]))
        .collect();
    let mut out = Dribble(Vec::new());
    writer::write_all_parts(&mut out, &parts).unwrap();
    assert_eq!(out.0, concat(&parts));
}

#[test]
fn the_thread_writes_files_and_the_index_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    let handle = crate::store::spawn_store_thread(store);
    let cfg = config(RecordingFormat::Fmp4, 1 << 30);
    let (events, inbox) = flume::bounded(crate::events::INBOX_CAPACITY);
    let (rec, thread) = spawn_recorder_thread(&cfg, dir.path(), handle.clone(), Some(events));
    let mut sink = rec.sink("cam".into());
    sink.push(&MediaItem::Track(h264_track(1280)));
    sink.push(&MediaItem::Track(aac_track()));
    for item in av_items(0, 4500, 60) {
        sink.push(&item);
    }
    // Left open: the thread closes it when stopped.
    thread.stop();
    assert_eq!(rec.queued_bytes(), 0);
    handle.shutdown();
    drop(sink);
    let rows = crate::store::Store::open(dir.path())
        .unwrap()
        .recordings(Some("cam"))
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.status, RecordingStatus::Complete);
    assert_eq!(row.reason.as_deref(), Some("server stopped"));
    // Two fragments reached the thread; the third was still on the shard.
    assert!((4000..=4021).contains(&row.duration_ms), "{row:?}");
    let path = PathBuf::from(&row.path);
    assert!(path.is_absolute());
    assert!(path.starts_with(
        std::fs::canonicalize(dir.path())
            .unwrap()
            .join("recordings/cam")
    ));
    let data = std::fs::read(&path).unwrap();
    assert_eq!(data.len() as i64, row.bytes);
    assert_eq!(
        top_level_boxes(&data),
        [*b"ftyp", *b"moov", *b"moof", *b"mdat", *b"moof", *b"mdat"]
    );
    // The closed file was announced, as the index describes it.
    let events: Vec<crate::events::Event> = inbox.try_iter().collect();
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        crate::events::Event::RecordingDone {
            stream,
            path,
            duration_ms,
            bytes,
            status,
            ..
        } => {
            assert_eq!(&**stream, "cam");
            assert_eq!(path, &row.path);
            assert_eq!(*duration_ms as i64, row.duration_ms);
            assert_eq!(*bytes as i64, row.bytes);
            assert_eq!(status, "server stopped");
        }
        other => panic!("{other:?}"),
    }
}
