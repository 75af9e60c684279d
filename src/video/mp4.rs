//! H.264 mp4 decoding with the bundled OpenH264 (no system libraries): samples are read one
//! at a time from the file, rewritten from length-prefixed NAL units to Annex-B, decoded,
//! and converted to RGB.

use super::{frame_count_mismatch, Frame, SourceKind, VideoInfo};
use crate::error::{Error, Result};
use image::RgbImage;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;
use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Everything needed to start decoding the video track again.
#[derive(Debug)]
pub(crate) struct Mp4Source {
    path: PathBuf,
    track_id: u32,
    samples: u32,
    nal_length_size: usize,
    parameter_sets: Vec<u8>,
}

fn open_reader(path: &Path) -> Result<::mp4::Mp4Reader<BufReader<File>>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    ::mp4::Mp4Reader::read_header(BufReader::new(f), size).map_err(|e| Error::NotAVideo {
        path: path.to_path_buf(),
        reason: format!("unreadable mp4 structure: {e}"),
    })
}

/// Opens an H.264 mp4: reads the sample tables and decodes the first frame to learn its size.
pub(crate) fn open(path: &Path) -> Result<(VideoInfo, Mp4Source)> {
    let reader = open_reader(path)?;
    let track = reader
        .tracks()
        .values()
        .filter(|t| matches!(t.media_type(), Ok(::mp4::MediaType::H264)))
        .min_by_key(|t| t.track_id())
        .ok_or_else(|| Error::NotAVideo {
            path: path.to_path_buf(),
            reason: "no H.264 video track".into(),
        })?;
    let avc1 = track
        .trak
        .mdia
        .minf
        .stbl
        .stsd
        .avc1
        .as_ref()
        .expect("media type H264 implies avc1");
    let mut parameter_sets = Vec::new();
    for nal in avc1
        .avcc
        .sequence_parameter_sets
        .iter()
        .chain(&avc1.avcc.picture_parameter_sets)
    {
        parameter_sets.extend_from_slice(&START_CODE);
        parameter_sets.extend_from_slice(&nal.bytes);
    }
    let samples = track.sample_count();
    let mdhd = &track.trak.mdia.mdhd;
    let fps = (mdhd.duration > 0 && mdhd.timescale > 0)
        .then(|| f64::from(samples) * f64::from(mdhd.timescale) / mdhd.duration as f64);
    let src = Mp4Source {
        path: path.to_path_buf(),
        track_id: track.track_id(),
        samples,
        nal_length_size: usize::from(avc1.avcc.length_size_minus_one & 3) + 1,
        parameter_sets,
    };
    if samples == 0 {
        return Err(Error::NoFrames {
            path: path.to_path_buf(),
        });
    }
    let mut info = VideoInfo {
        path: path.to_path_buf(),
        kind: SourceKind::Mp4,
        frames: samples as usize,
        width: u32::from(track.width()),
        height: u32::from(track.height()),
        fps,
        codec: "h264".into(),
        frame_names: (0..samples as usize).map(|i| format!("{i:05}")).collect(),
    };
    // The coded size in the sample entry can differ from the cropped picture: trust the decoder.
    let first = src.frames(&info)?.next().ok_or_else(|| Error::NoFrames {
        path: path.to_path_buf(),
    })??;
    info.width = first.image.width();
    info.height = first.image.height();
    Ok((info, src))
}

impl Mp4Source {
    /// Starts a fresh sequential decode.
    pub(crate) fn frames(&self, info: &VideoInfo) -> Result<Mp4Frames> {
        let decoder = Decoder::with_api_config(
            OpenH264API::from_source(),
            DecoderConfig::new().flush_after_decode(Flush::NoFlush),
        )
        .map_err(|e| Error::Runtime(format!("cannot start the H.264 decoder: {e}")))?;
        Ok(Mp4Frames {
            reader: open_reader(&self.path)?,
            path: self.path.clone(),
            track_id: self.track_id,
            samples: self.samples,
            nal_length_size: self.nal_length_size,
            parameter_sets: self.parameter_sets.clone(),
            declared: info.frames,
            size: (info.width, info.height),
            decoder,
            next_sample: 1,
            emitted: 0,
            ready: VecDeque::new(),
            flushed: false,
            failed: false,
            annexb: Vec::new(),
        })
    }
}

/// Sequential frame decoder over an mp4's H.264 track.
pub(crate) struct Mp4Frames {
    reader: ::mp4::Mp4Reader<BufReader<File>>,
    path: PathBuf,
    track_id: u32,
    samples: u32,
    nal_length_size: usize,
    parameter_sets: Vec<u8>,
    declared: usize,
    size: (u32, u32),
    decoder: Decoder,
    next_sample: u32,
    emitted: usize,
    ready: VecDeque<RgbImage>,
    flushed: bool,
    failed: bool,
    annexb: Vec<u8>,
}

fn to_rgb(yuv: &DecodedYUV<'_>) -> RgbImage {
    let (w, h) = yuv.dimensions();
    let mut buf = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut buf);
    RgbImage::from_raw(w as u32, h as u32, buf).expect("full RGB buffer")
}

impl Mp4Frames {
    fn corrupt(&self, index: usize, reason: String) -> Error {
        Error::CorruptFrame {
            path: self.path.clone(),
            index,
            reason,
        }
    }

    /// Rewrites one mp4 sample (length-prefixed NAL units) as an Annex-B packet.
    fn fill_annexb(&mut self, sample: &[u8], sync: bool) -> std::result::Result<(), String> {
        self.annexb.clear();
        if sync || self.next_sample == 1 {
            self.annexb.extend_from_slice(&self.parameter_sets);
        }
        let n = self.nal_length_size;
        let mut pos = 0;
        while pos < sample.len() {
            if pos + n > sample.len() {
                return Err("truncated NAL length".into());
            }
            let len = sample[pos..pos + n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | usize::from(b));
            pos += n;
            if pos + len > sample.len() {
                return Err(format!("NAL unit of {len} bytes overruns the sample"));
            }
            self.annexb.extend_from_slice(&START_CODE);
            self.annexb.extend_from_slice(&sample[pos..pos + len]);
            pos += len;
        }
        Ok(())
    }

    /// Feeds samples until a picture is ready or the track ends.
    fn pump(&mut self) -> Result<()> {
        while self.ready.is_empty() && self.next_sample <= self.samples {
            let idx = self.next_sample as usize - 1;
            let sample = self
                .reader
                .read_sample(self.track_id, self.next_sample)
                .map_err(|e| self.corrupt(idx, format!("cannot read sample: {e}")))?;
            let Some(sample) = sample else {
                self.next_sample += 1;
                continue;
            };
            self.fill_annexb(&sample.bytes, sample.is_sync)
                .map_err(|r| self.corrupt(idx, r))?;
            self.next_sample += 1;
            let decoded = self
                .decoder
                .decode(&self.annexb)
                .map_err(|e| Error::CorruptFrame {
                    path: self.path.clone(),
                    index: idx,
                    reason: e.to_string(),
                })?
                .map(|yuv| to_rgb(&yuv));
            if let Some(img) = decoded {
                self.ready.push_back(img);
            }
        }
        if self.ready.is_empty() && !self.flushed {
            self.flushed = true;
            let rest = self.decoder.flush_remaining().map_err(|e| Error::CorruptFrame {
                path: self.path.clone(),
                index: self.emitted,
                reason: e.to_string(),
            })?;
            self.ready.extend(rest.iter().map(to_rgb));
        }
        Ok(())
    }
}

impl Iterator for Mp4Frames {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Result<Frame>> {
        if self.failed || self.emitted >= self.declared {
            return None;
        }
        if let Err(e) = self.pump() {
            self.failed = true;
            return Some(Err(e));
        }
        let Some(img) = self.ready.pop_front() else {
            self.failed = true;
            return Some(Err(frame_count_mismatch(&self.path, self.declared, self.emitted)));
        };
        if self.emitted > 0 && img.dimensions() != self.size {
            self.failed = true;
            let (w, h) = img.dimensions();
            return Some(Err(self.corrupt(
                self.emitted,
                format!(
                    "picture size changed to {w}x{h} from {}x{}",
                    self.size.0, self.size.1
                ),
            )));
        }
        let index = self.emitted;
        self.emitted += 1;
        Some(Ok(Frame { index, image: img }))
    }
}
