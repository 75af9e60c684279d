//! H.264 mp4 writing (overlay videos, the demo clip) with the bundled OpenH264 encoder and the
//! `mp4` muxer: no system libraries. The file appears only when [`Mp4VideoWriter::finish`] succeeds.

use super::atomic::{AtomicFile, TempGuard};
use crate::error::{Error, Result};
use image::RgbImage;
use openh264::encoder::{
    Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange, RateControlMode,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};
use openh264::OpenH264API;
use std::path::Path;

/// Time units per second of the video track.
const TIMESCALE: u32 = 90_000;

/// Streams RGB frames into an H.264 mp4.
pub struct Mp4VideoWriter {
    file: Option<AtomicFile>,
    guard: Option<TempGuard>,
    muxer: Option<::mp4::Mp4Writer<std::io::BufWriter<std::fs::File>>>,
    encoder: Encoder,
    width: u32,
    height: u32,
    frame_ticks: u32,
    frames: u64,
    path: std::path::PathBuf,
}

fn enc_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("{}: H.264 encoding failed: {e}", path.display()))
}

/// Splits an Annex-B buffer into NAL units (without start codes).
fn nal_units(buf: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= buf.len() {
        if buf[i] == 0 && buf[i + 1] == 0 && buf[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(buf.len(), |&n| n - 3);
        while e > s && buf[e - 1] == 0 {
            e -= 1; // trailing zero of a 4-byte start code
        }
        out.push(&buf[s..e]);
    }
    out
}

impl Mp4VideoWriter {
    /// Starts a `width`×`height` video at `fps` frames per second. Odd sizes are padded to even
    /// by repeating the last row/column (H.264 4:2:0 needs even sizes).
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Self> {
        if width == 0 || height == 0 || !(fps > 0.0 && fps.is_finite()) {
            return Err(Error::Invalid(format!(
                "{}: cannot write a {width}x{height} video at {fps} fps",
                path.display()
            )));
        }
        let (ew, eh) = (width + width % 2, height + height % 2);
        let config = EncoderConfig::new()
            .skip_frames(false)
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Off)
            .qp(QpRange::new(16, 22))
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                (fps * 2.0).round().max(1.0) as u32
            ));
        let encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| enc_err(path, e))?;
        Ok(Mp4VideoWriter {
            file: Some(AtomicFile::create(path)?),
            guard: None,
            muxer: None,
            encoder,
            width: ew,
            height: eh,
            frame_ticks: (f64::from(TIMESCALE) / fps).round().max(1.0) as u32,
            frames: 0,
            path: path.to_path_buf(),
        })
    }

    /// Encodes and appends one frame (must have the size given to [`Self::create`]).
    pub fn push(&mut self, frame: &RgbImage) -> Result<()> {
        let (w, h) = frame.dimensions();
        if (w + w % 2, h + h % 2) != (self.width, self.height) {
            return Err(Error::Invalid(format!(
                "{}: frame of {w}x{h} pushed to a {}x{} video",
                self.path.display(),
                self.width,
                self.height
            )));
        }
        let padded;
        let rgb: &[u8] = if (w, h) == (self.width, self.height) {
            frame.as_raw()
        } else {
            padded = RgbImage::from_fn(self.width, self.height, |x, y| {
                *frame.get_pixel(x.min(w - 1), y.min(h - 1))
            });
            padded.as_raw()
        };
        let yuv =
            YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb, (self.width as usize, self.height as usize)));
        let path = self.path.clone();
        let bs = self.encoder.encode(&yuv).map_err(|e| enc_err(&path, e))?;
        let sync = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        let annexb = bs.to_vec();
        let mut sps = None;
        let mut pps = None;
        let mut sample = Vec::with_capacity(annexb.len());
        for nal in nal_units(&annexb) {
            match nal.first().map(|b| b & 0x1f) {
                Some(7) => sps = Some(nal.to_vec()),
                Some(8) => pps = Some(nal.to_vec()),
                Some(_) => {
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
                None => {}
            }
        }
        if sample.is_empty() {
            return Err(enc_err(&self.path, "the encoder produced no picture"));
        }
        if self.muxer.is_none() {
            let (Some(sps), Some(pps)) = (sps, pps) else {
                return Err(enc_err(&self.path, "first frame has no parameter sets"));
            };
            let (out, guard) = self.file.take().expect("opened in create").into_parts();
            self.guard = Some(guard);
            let cfg = ::mp4::Mp4Config {
                major_brand: "isom".parse().expect("fourcc"),
                minor_version: 512,
                compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                    .iter()
                    .map(|b| b.parse().expect("fourcc"))
                    .collect(),
                timescale: 1000,
            };
            let mut mux = ::mp4::Mp4Writer::write_start(out, &cfg).map_err(|e| enc_err(&self.path, e))?;
            mux.add_track(&::mp4::TrackConfig {
                track_type: ::mp4::TrackType::Video,
                timescale: TIMESCALE,
                language: "und".into(),
                media_conf: ::mp4::MediaConfig::AvcConfig(::mp4::AvcConfig {
                    width: self.width as u16,
                    height: self.height as u16,
                    seq_param_set: sps,
                    pic_param_set: pps,
                }),
            })
            .map_err(|e| enc_err(&self.path, e))?;
            self.muxer = Some(mux);
        }
        let mux = self.muxer.as_mut().expect("muxer started");
        mux.write_sample(
            1,
            &::mp4::Mp4Sample {
                start_time: self.frames * u64::from(self.frame_ticks),
                duration: self.frame_ticks,
                rendering_offset: 0,
                is_sync: sync,
                bytes: sample.into(),
            },
        )
        .map_err(|e| enc_err(&self.path, e))?;
        self.frames += 1;
        Ok(())
    }

    /// Number of frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Writes the index and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        let mut mux = self
            .muxer
            .take()
            .ok_or_else(|| Error::Invalid(format!("{}: no frame was written", self.path.display())))?;
        mux.write_end().map_err(|e| enc_err(&self.path, e))?;
        let inner = mux.into_writer();
        self.guard.take().expect("started with the muxer").commit(inner)
    }
}
