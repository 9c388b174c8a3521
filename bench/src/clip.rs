//! The pre-encoded clip the publisher loops: an FLV file read into memory once.
//!
//! Only what the publisher needs is parsed (FLV spec, Annex E.2 and E.4):
//!
//! ```text
//! header:  'F' 'L' 'V' version(1) flags(1) header_size(4, = 9)
//! body:    PreviousTagSize0(4) { tag PreviousTagSize(4) }*
//! tag:     type(1) data_size(3) timestamp(3) timestamp_ext(1) stream_id(3) data(data_size)
//! ```
//!
//! Tag types: 8 audio, 9 video, 18 script data (`onMetaData`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use bytes::Bytes;

/// FLV tag type of audio.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type of video.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type of script data.
pub const TAG_SCRIPT: u8 = 18;

/// One FLV tag of the clip.
#[derive(Debug, Clone)]
pub struct ClipTag {
    /// 8, 9 or 18.
    pub tag_type: u8,
    /// Milliseconds from the start of the file.
    pub timestamp: u32,
    /// The tag body (audio/video data or AMF0 script data).
    pub body: Bytes,
}

impl ClipTag {
    /// True for an AVC sequence header or an AAC AudioSpecificConfig: sent once, not per loop.
    pub fn is_sequence_header(&self) -> bool {
        match self.tag_type {
            TAG_VIDEO => self.body.len() >= 2 && self.body[0] & 0x0f == 7 && self.body[1] == 0,
            TAG_AUDIO => self.body.len() >= 2 && self.body[0] >> 4 == 10 && self.body[1] == 0,
            _ => false,
        }
    }

    /// True for an AVC NALU packet (a coded H.264 frame in legacy FLV framing).
    pub fn is_avc_frame(&self) -> bool {
        self.tag_type == TAG_VIDEO
            && self.body.len() >= 5
            && self.body[0] & 0x0f == 7
            && self.body[1] == 1
    }
}

/// A clip loaded in memory.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Where it was read from.
    pub path: PathBuf,
    /// Audio, video and script tags in file order.
    pub tags: Vec<ClipTag>,
    /// Loop period in milliseconds: the last video timestamp plus one frame interval.
    pub duration_ms: u64,
    /// Video frames per loop.
    pub video_frames: usize,
    /// Bytes of audio and video tag bodies per loop.
    pub media_bytes: u64,
}

impl Clip {
    /// Reads and indexes an FLV file. H.264 must use 4-byte NAL unit lengths (what ffmpeg's
    /// libx264 writes), because the publisher inserts its SEI with a 4-byte length.
    pub fn load(path: &Path) -> Result<Clip> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let tags = parse_flv(Bytes::from(data))
            .with_context(|| format!("parsing FLV file {}", path.display()))?;
        let video: Vec<&ClipTag> = tags.iter().filter(|t| t.is_avc_frame()).collect();
        if video.len() < 2 {
            bail!("{}: fewer than 2 H.264 frames", path.display());
        }
        if let Some(sh) = tags
            .iter()
            .find(|t| t.tag_type == TAG_VIDEO && t.is_sequence_header())
        {
            // body: 5-byte FLV/AVC header, then the avcC record; byte 4 of avcC holds the
            // NAL unit length size minus one.
            let nls = sh.body.get(9).map(|b| (b & 3) + 1);
            if nls != Some(4) {
                bail!(
                    "{}: H.264 NAL unit length size {nls:?}, the publisher needs 4",
                    path.display()
                );
            }
        } else {
            bail!("{}: no AVC sequence header", path.display());
        }
        let last = video[video.len() - 1].timestamp;
        let prev = video[video.len() - 2].timestamp;
        let interval = u64::from(last.saturating_sub(prev)).max(1);
        let media_bytes = tags
            .iter()
            .filter(|t| t.tag_type != TAG_SCRIPT)
            .map(|t| t.body.len() as u64)
            .sum();
        Ok(Clip {
            path: path.to_owned(),
            video_frames: video.len(),
            duration_ms: u64::from(last) + interval,
            media_bytes,
            tags,
        })
    }

    /// Average media bit rate of the clip in Mbit/s.
    pub fn mbps(&self) -> f64 {
        self.media_bytes as f64 * 8.0 / (self.duration_ms as f64 / 1000.0) / 1e6
    }

    /// The line each mode prints about its clip: path, bit rate, loop length, frames.
    pub fn summary(&self) -> String {
        format!(
            "clip: {} ({:.2} Mbit/s, {} ms loop, {} video frames)",
            self.path.display(),
            self.mbps(),
            self.duration_ms,
            self.video_frames
        )
    }
}

/// Splits an FLV file into tags. Stops quietly at a truncated last tag (a file cut short
/// by an interrupted encoder still plays).
fn parse_flv(data: Bytes) -> Result<Vec<ClipTag>> {
    if data.len() < 9 || &data[..3] != b"FLV" {
        bail!("not an FLV file (no 'FLV' signature)");
    }
    let header_size = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    if header_size < 9 || header_size > data.len() {
        bail!("bad FLV header size {header_size}");
    }
    // Skip the header and PreviousTagSize0.
    let mut pos = header_size + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let h = &data[pos..pos + 11];
        let tag_type = h[0] & 0x1f;
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let timestamp = (u32::from(h[7]) << 24)
            | (u32::from(h[4]) << 16)
            | (u32::from(h[5]) << 8)
            | u32::from(h[6]);
        let body_start = pos + 11;
        let body_end = body_start + size;
        if body_end > data.len() {
            break;
        }
        if matches!(tag_type, TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) && size > 0 {
            tags.push(ClipTag {
                tag_type,
                timestamp,
                body: data.slice(body_start..body_end),
            });
        }
        // The tag, then its PreviousTagSize.
        pos = body_end + 4;
    }
    if tags.is_empty() {
        bail!("no tags");
    }
    Ok(tags)
}

/// The cache directory of the harness: `$XDG_CACHE_HOME/zerocast-bench` or
/// `~/.cache/zerocast-bench`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("zerocast-bench")
}

/// The clip to use: `explicit` when given, else the cached 720p clip, encoded with ffmpeg on
/// first use.
pub fn resolve(explicit: Option<&Path>) -> Result<Clip> {
    if let Some(p) = explicit {
        return Clip::load(p);
    }
    let dir = cache_dir();
    let path = dir.join("clip-720p.flv");
    if !path.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        encode_clip(&path)?;
    }
    Clip::load(&path)
}

/// The ffmpeg arguments that encode the reference clip (10 s, 720p30 H.264 at 2.5 Mbit/s with
/// a 2 s GOP, 128 kbit/s stereo AAC).
pub const FFMPEG_CLIP_ARGS: &[&str] = &[
    "-hide_banner",
    "-loglevel",
    "error",
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=1280x720:rate=30",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=1000:sample_rate=48000",
    "-t",
    "10",
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-tune",
    "zerolatency",
    "-pix_fmt",
    "yuv420p",
    "-g",
    "60",
    "-b:v",
    "2500k",
    "-c:a",
    "aac",
    "-b:a",
    "128k",
    "-ac",
    "2",
    "-y",
];

fn encode_clip(path: &Path) -> Result<()> {
    // Encode to a temporary name and rename, so an interrupted run leaves no half clip.
    let tmp = path.with_extension("partial.flv");
    eprintln!("encoding the benchmark clip into {} (once)", path.display());
    let status = Command::new("ffmpeg")
        .args(FFMPEG_CLIP_ARGS)
        .arg(&tmp)
        .status();
    match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("ffmpeg not found: run ./scripts/test (it installs ffmpeg), or pass --clip")
        }
        Err(e) => bail!("running ffmpeg: {e}"),
        Ok(s) if !s.success() => bail!("ffmpeg failed to encode the clip ({s})"),
        Ok(_) => {}
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
