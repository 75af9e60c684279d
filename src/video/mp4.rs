//! H.264 mp4 decoding with the bundled OpenH264 (no system libraries), presenting frames as
//! OpenCV's `VideoCapture` (FFmpeg) does: samples are decoded in order, pictures that the track's
//! edit list leaves out are dropped, YUV becomes RGB with libswscale's arithmetic
//! ([`super::yuv`]), and the track's rotation is applied. Streams the built-in decoder cannot
//! read (10-bit, 4:2:2/4:4:4, interlaced) are refused before decoding, naming the feature that
//! reads them.

use super::h264::{parse_sps, Sps};
use super::yuv::YuvToRgb;
use super::{frame_count_mismatch, Frame, SourceKind, VideoInfo};
use crate::error::{Error, Result};
use ::mp4::Mp4Track;
use image::RgbImage;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
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
    /// Per picture in presentation order: shown (inside the edit list) or dropped.
    shown: Vec<bool>,
    /// Clockwise rotation in degrees (0, 90, 180, 270).
    rotation: u32,
    color: YuvToRgb,
}

fn corrupt(path: &Path, reason: String) -> Error {
    Error::CorruptVideo {
        path: path.to_path_buf(),
        reason,
    }
}

/// An mp4 file read with some 4-byte ranges replaced by `free`: the metadata boxes the
/// `mp4` crate would otherwise parse (see `container::metadata_box_types`).
pub(crate) struct Masked {
    inner: BufReader<File>,
    pos: u64,
    masks: Vec<u64>,
}

impl Read for Masked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.pos, self.pos + n as u64);
        for &m in &self.masks {
            for (k, &b) in b"free".iter().enumerate() {
                let at = m + k as u64;
                if at >= start && at < end {
                    buf[(at - start) as usize] = b;
                }
            }
        }
        self.pos = end;
        Ok(n)
    }
}

impl Seek for Masked {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

fn open_reader(path: &Path) -> Result<::mp4::Mp4Reader<Masked>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let masks = super::container::metadata_box_types(path).map_err(|e| Error::io(path, e))?;
    let reader = Masked {
        inner: BufReader::new(f),
        pos: 0,
        masks,
    };
    ::mp4::Mp4Reader::read_header(reader, size)
        .map_err(|e| corrupt(path, format!("unreadable mp4 structure: {e}")))
}

/// Presentation time (decode time + composition offset) of every sample (as many as the
/// sample size table lists), in media timescale.
fn presentation_times(track: &Mp4Track) -> Vec<i64> {
    let stbl = &track.trak.mdia.minf.stbl;
    let samples = track.sample_count() as usize;
    let mut pts = Vec::with_capacity(samples);
    let (mut dts, mut delta) = (0i64, 0i64);
    'table: for e in &stbl.stts.entries {
        delta = i64::from(e.sample_delta);
        for _ in 0..e.sample_count {
            if pts.len() == samples {
                break 'table;
            }
            pts.push(dts);
            dts += delta;
        }
    }
    while pts.len() < samples {
        pts.push(dts);
        dts += delta;
    }
    if let Some(ctts) = &stbl.ctts {
        let offsets = ctts
            .entries
            .iter()
            .flat_map(|e| std::iter::repeat_n(i64::from(e.sample_offset), e.sample_count as usize));
        for (p, o) in pts.iter_mut().zip(offsets) {
            *p += o;
        }
    }
    pts
}

/// Which pictures, in presentation order, the edit list shows: those whose presentation time
/// falls in `[media_time, media_time + duration)` of a non-empty edit (FFmpeg's rule; empty
/// edits only delay the start). Without an edit list every picture is shown.
fn shown_pictures(track: &Mp4Track, movie_timescale: u32) -> Vec<bool> {
    let trak = &track.trak;
    let mut pts = presentation_times(track);
    pts.sort_unstable();
    let media_timescale = i128::from(trak.mdia.mdhd.timescale.max(1));
    let movie_timescale = i128::from(movie_timescale.max(1));
    let ranges: Vec<(i64, i64)> = trak
        .edts
        .as_ref()
        .and_then(|e| e.elst.as_ref())
        .map(|elst| {
            elst.entries
                .iter()
                .filter_map(|e| {
                    let start = if elst.version == 1 {
                        e.media_time as i64
                    } else {
                        i64::from(e.media_time as u32 as i32)
                    };
                    if start < 0 {
                        return None; // an empty edit
                    }
                    // av_rescale: nearest, halves away from zero
                    let d = i128::from(e.segment_duration) * media_timescale;
                    let dur = ((d + movie_timescale / 2) / movie_timescale) as i64;
                    Some((
                        start,
                        if dur == 0 {
                            i64::MAX
                        } else {
                            start.saturating_add(dur)
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if ranges.is_empty() {
        return vec![true; pts.len()];
    }
    pts.iter()
        .map(|&p| ranges.iter().any(|&(s, e)| p >= s && p < e))
        .collect()
}

/// The track's display rotation, clockwise, as OpenCV applies it: the angle of the `tkhd`
/// matrix (FFmpeg's `av_display_rotation_get`), rounded, when it is a multiple of 90°.
fn rotation(track: &Mp4Track) -> u32 {
    let m = &track.trak.tkhd.matrix;
    let (a, b, c, d) = (f64::from(m.a), f64::from(m.b), f64::from(m.c), f64::from(m.d));
    let (s0, s1) = (a.hypot(c), b.hypot(d));
    if s0 == 0.0 || s1 == 0.0 {
        return 0;
    }
    let degrees = (b / s1).atan2(a / s0).to_degrees().round() as i64;
    match degrees.rem_euclid(360) {
        r @ (90 | 180 | 270) => r as u32,
        _ => 0,
    }
}

/// Checks the sample tables the `mp4` crate reads samples with, which it trusts: it divides by
/// `samples_per_chunk`, subtracts 1 from chunk numbers, unwraps a sample's time, and allocates
/// each sample's declared size.
fn check_sample_tables(track: &Mp4Track, file_len: u64) -> std::result::Result<(), String> {
    let stbl = &track.trak.mdia.minf.stbl;
    let samples = u64::from(stbl.stsz.sample_count);
    let timed: u64 = stbl.stts.entries.iter().map(|e| u64::from(e.sample_count)).sum();
    if timed < samples {
        return Err(format!(
            "the time-to-sample table (stts) covers {timed} of {samples} samples"
        ));
    }
    let bytes = if stbl.stsz.sample_size > 0 {
        u64::from(stbl.stsz.sample_size) * samples
    } else {
        stbl.stsz.sample_sizes.iter().map(|&s| u64::from(s)).sum()
    };
    if bytes > file_len {
        return Err(format!(
            "the samples declare {bytes} bytes in a file of {file_len} bytes"
        ));
    }
    let entries = &stbl.stsc.entries;
    if entries.is_empty() {
        return Err("the sample-to-chunk table (stsc) is empty".into());
    }
    let mut previous = 0;
    for (i, e) in entries.iter().enumerate() {
        if e.samples_per_chunk == 0 || e.first_chunk <= previous {
            return Err(format!(
                "sample-to-chunk entry {i} (first chunk {}, {} samples per chunk) is impossible",
                e.first_chunk, e.samples_per_chunk
            ));
        }
        previous = e.first_chunk;
    }
    let chunks = stbl
        .stco
        .as_ref()
        .map(|b| b.entries.len())
        .or(stbl.co64.as_ref().map(|b| b.entries.len()))
        .unwrap_or(0);
    if chunks == 0 {
        return Err("the chunk offset table (stco/co64) is missing or empty".into());
    }
    Ok(())
}

/// Opens an H.264 mp4: sample tables, parameter sets, edit list and rotation; decodes the first
/// frame to learn the picture size.
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
    let sps = avc1
        .avcc
        .sequence_parameter_sets
        .first()
        .ok_or_else(|| corrupt(path, "the H.264 track has no sequence parameter set".into()))
        .and_then(|nal| parse_sps(&nal.bytes).map_err(|r| corrupt(path, r)))?;
    refuse_unsupported(path, &sps)?;
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
    if !track.trafs.is_empty() {
        return Err(Error::UnsupportedCodec {
            path: path.to_path_buf(),
            what: "a fragmented mp4 (moof boxes)".into(),
            feature: "ffmpeg",
        });
    }
    let file_len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    check_sample_tables(track, file_len).map_err(|r| corrupt(path, r))?;
    let samples = track.sample_count();
    if u64::from(samples) > file_len {
        // every sample takes at least a byte; a few table bytes can declare billions
        return Err(corrupt(
            path,
            format!("the video track declares {samples} samples in a file of {file_len} bytes"),
        ));
    }
    let shown = shown_pictures(track, reader.moov.mvhd.timescale);
    let frames = shown.iter().filter(|&&s| s).count();
    let mdhd = &track.trak.mdia.mdhd;
    let fps = (mdhd.duration > 0 && mdhd.timescale > 0)
        .then(|| f64::from(samples) * f64::from(mdhd.timescale) / mdhd.duration as f64);
    let src = Mp4Source {
        path: path.to_path_buf(),
        track_id: track.track_id(),
        samples,
        nal_length_size: usize::from(avc1.avcc.length_size_minus_one & 3) + 1,
        parameter_sets,
        shown,
        rotation: rotation(track),
        color: YuvToRgb::new(sps.matrix_coefficients, sps.full_range),
    };
    if frames == 0 {
        return Err(Error::NoFrames {
            path: path.to_path_buf(),
        });
    }
    let mut info = VideoInfo {
        path: path.to_path_buf(),
        kind: SourceKind::Mp4,
        frames,
        width: u32::from(track.width()),
        height: u32::from(track.height()),
        fps,
        codec: "h264".into(),
        frame_names: (0..frames).map(|i| format!("{i:05}")).collect(),
    };
    // The coded size in the sample entry can differ from the cropped, rotated picture: trust
    // the decoder.
    let first = src.frames(&info)?.next().ok_or_else(|| Error::NoFrames {
        path: path.to_path_buf(),
    })??;
    info.width = first.image.width();
    info.height = first.image.height();
    Ok((info, src))
}

fn refuse_unsupported(path: &Path, sps: &Sps) -> Result<()> {
    match sps.unsupported() {
        Some(what) => Err(Error::UnsupportedCodec {
            path: path.to_path_buf(),
            what,
            feature: "ffmpeg",
        }),
        None => Ok(()),
    }
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
            shown: self.shown.clone(),
            rotation: self.rotation,
            color: self.color,
            declared: info.frames,
            size: (info.width, info.height),
            decoder,
            next_sample: 1,
            pictures: 0,
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
    reader: ::mp4::Mp4Reader<Masked>,
    path: PathBuf,
    track_id: u32,
    samples: u32,
    nal_length_size: usize,
    parameter_sets: Vec<u8>,
    shown: Vec<bool>,
    rotation: u32,
    color: YuvToRgb,
    declared: usize,
    size: (u32, u32),
    decoder: Decoder,
    next_sample: u32,
    /// Pictures out of the decoder so far (shown or not).
    pictures: usize,
    emitted: usize,
    ready: VecDeque<RgbImage>,
    flushed: bool,
    failed: bool,
    annexb: Vec<u8>,
}

/// One decoded picture as RGB, rotated for display.
fn to_rgb(yuv: &DecodedYUV<'_>, color: &YuvToRgb, rotation: u32) -> RgbImage {
    let (w, h) = yuv.dimensions();
    let (ys, us, vs) = yuv.strides();
    let mut buf = vec![0u8; w * h * 3];
    color.convert([(yuv.y(), ys), (yuv.u(), us), (yuv.v(), vs)], w, h, &mut buf);
    let img = RgbImage::from_raw(w as u32, h as u32, buf).expect("full RGB buffer");
    match rotation {
        90 => image::imageops::rotate90(&img),
        180 => image::imageops::rotate180(&img),
        270 => image::imageops::rotate270(&img),
        _ => img,
    }
}

fn decoder_error(e: &openh264::Error) -> String {
    format!(
        "the H.264 decoder (OpenH264) failed with error code {}",
        e.native_code()
    )
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
            if len > sample.len() - pos {
                return Err(format!("NAL unit of {len} bytes overruns the sample"));
            }
            self.annexb.extend_from_slice(&START_CODE);
            self.annexb.extend_from_slice(&sample[pos..pos + len]);
            pos += len;
        }
        Ok(())
    }

    /// Feeds samples until a shown picture is ready or the track ends.
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
            let path = self.path.clone();
            let (color, rotation) = (self.color, self.rotation);
            let decoded = self
                .decoder
                .decode(&self.annexb)
                .map_err(|e| Error::CorruptFrame {
                    path,
                    index: idx,
                    reason: decoder_error(&e),
                })?
                .map(|yuv| to_rgb(&yuv, &color, rotation));
            if let Some(img) = decoded {
                let shown = self.shown.get(self.pictures).copied().unwrap_or(false);
                self.pictures += 1;
                if shown {
                    self.ready.push_back(img);
                }
            }
        }
        if self.ready.is_empty() && !self.flushed {
            self.flushed = true;
            let index = self.emitted;
            let rest = self.decoder.flush_remaining().map_err(|e| Error::CorruptFrame {
                path: self.path.clone(),
                index,
                reason: decoder_error(&e),
            })?;
            let (shown, start, color, rotation) = (&self.shown, self.pictures, self.color, self.rotation);
            let imgs: Vec<RgbImage> = rest
                .iter()
                .enumerate()
                .filter(|(k, _)| shown.get(start + k).copied().unwrap_or(false))
                .map(|(_, yuv)| to_rgb(yuv, &color, rotation))
                .collect();
            self.pictures += rest.len();
            self.ready.extend(imgs);
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
