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
    /// Size of the frames pushed.
    source: (u32, u32),
    /// Shrink factor and the shrunk size.
    factor: u32,
    shrunk: (u32, u32),
    /// Encoded (padded) size.
    width: u32,
    height: u32,
    frame_ticks: u32,
    frames: u64,
    path: std::path::PathBuf,
}

fn enc_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("{}: H.264 encoding failed: {e}", path.display()))
}

fn openh264_err(path: &Path, e: &openh264::Error) -> Error {
    enc_err(
        path,
        format_args!("the encoder (OpenH264) returned error code {}", e.native_code()),
    )
}

/// Whether the encoder takes a picture of this size (OpenH264: up to 3840×2160 or 2160×3840).
fn encodable(w: u32, h: u32) -> bool {
    (w <= 3840 && h <= 2160) || (w <= 2160 && h <= 3840)
}

/// How a `width`×`height` frame is fitted to the encoder: shrunk by the smallest integer factor
/// that fits its maximum size, then padded (edge pixels repeated) to even sizes of at least 16.
/// Returns (factor, shrunk size, encoded size).
fn geometry(width: u32, height: u32) -> (u32, (u32, u32), (u32, u32)) {
    let even = |v: u32| (v + v % 2).max(16);
    let factor = (1..=4096)
        .find(|&k| encodable(even(width.div_ceil(k)), even(height.div_ceil(k))))
        .unwrap_or(4096);
    let (sw, sh) = (width.div_ceil(factor), height.div_ceil(factor));
    (factor, (sw, sh), (even(sw), even(sh)))
}

/// Averages `factor`×`factor` blocks (the last ones may be partial).
fn shrink(frame: &RgbImage, factor: u32, (sw, sh): (u32, u32)) -> RgbImage {
    let (w, h) = frame.dimensions();
    RgbImage::from_fn(sw, sh, |x, y| {
        let (x0, y0) = (x * factor, y * factor);
        let (x1, y1) = ((x0 + factor).min(w), (y0 + factor).min(h));
        let mut sum = [0u32; 3];
        for yy in y0..y1 {
            for xx in x0..x1 {
                for (s, v) in sum.iter_mut().zip(frame.get_pixel(xx, yy).0) {
                    *s += u32::from(v);
                }
            }
        }
        let n = (x1 - x0) * (y1 - y0);
        image::Rgb(sum.map(|s| ((s + n / 2) / n) as u8))
    })
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
    /// Starts a video of `width`×`height` frames at `fps` frames per second. Odd sizes are
    /// padded to even by repeating the last row/column (H.264 4:2:0 needs even sizes), sides
    /// under 16 pixels are padded to 16, and frames larger than the encoder takes (3840×2160)
    /// are shrunk by an integer factor.
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Self> {
        if width == 0 || height == 0 || !(fps > 0.0 && fps.is_finite()) {
            return Err(Error::Runtime(format!(
                "{}: cannot write a {width}x{height} video at {fps} fps",
                path.display()
            )));
        }
        let (factor, shrunk, (ew, eh)) = geometry(width, height);
        let config = EncoderConfig::new()
            .skip_frames(false)
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Off)
            .qp(QpRange::new(16, 22))
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                (fps * 2.0).round().max(1.0) as u32
            ));
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| openh264_err(path, &e))?;
        Ok(Mp4VideoWriter {
            file: Some(AtomicFile::create(path)?),
            guard: None,
            muxer: None,
            encoder,
            source: (width, height),
            factor,
            shrunk,
            width: ew,
            height: eh,
            frame_ticks: (f64::from(TIMESCALE) / fps).round().max(1.0) as u32,
            frames: 0,
            path: path.to_path_buf(),
        })
    }

    /// Encodes and appends one frame (must have the size given to [`Self::create`]).
    pub fn push(&mut self, frame: &RgbImage) -> Result<()> {
        if frame.dimensions() != self.source {
            let (w, h) = frame.dimensions();
            return Err(Error::Internal(format!(
                "{}: frame of {w}x{h} pushed to a video of {}x{} frames",
                self.path.display(),
                self.source.0,
                self.source.1
            )));
        }
        let shrunk;
        let frame = if self.factor > 1 {
            shrunk = shrink(frame, self.factor, self.shrunk);
            &shrunk
        } else {
            frame
        };
        let (w, h) = frame.dimensions();
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
        let bs = self.encoder.encode(&yuv).map_err(|e| openh264_err(&path, &e))?;
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
            .ok_or_else(|| Error::Internal(format!("{}: no frame was written", self.path.display())))?;
        mux.write_end().map_err(|e| enc_err(&self.path, e))?;
        let inner = mux.into_writer();
        self.guard.take().expect("started with the muxer").commit(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_fitted_to_the_encoder() {
        assert_eq!(geometry(640, 360), (1, (640, 360), (640, 360)));
        assert_eq!(geometry(1, 1), (1, (1, 1), (16, 16)));
        assert_eq!(geometry(321, 9), (1, (321, 9), (322, 16)));
        assert_eq!(geometry(3840, 2160), (1, (3840, 2160), (3840, 2160)));
        assert_eq!(geometry(4000, 16), (2, (2000, 8), (2000, 16)));
        assert_eq!(geometry(2160, 3841), (2, (1080, 1921), (1080, 1922)));
        let img = RgbImage::from_fn(3, 2, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        assert_eq!(shrink(&img, 2, (2, 1)).get_pixel(0, 0).0[0], 5);
        assert_eq!(shrink(&img, 2, (2, 1)).get_pixel(1, 0).0[0], 20);
    }
}
