//! What a live run hands out per frame, as soon as the frame's masks are written: one JSON line
//! (`--stream jsonl`) or the overlay as a y4m frame (`--stream y4m`) on stdout, and the
//! arrival → written latency of every frame for the summary.

use super::feed::FeedLog;
use crate::error::{Error, Result};
use crate::output::{overlay, Rle};
use crate::segment::sink::FrameObserver;
use crate::segment::summary::{Latency, OnlineSummary};
use image::{GrayImage, RgbImage};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What goes to stdout per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamFormat {
    /// One JSON object per line: frame, name, arrival and done times, per prompt its RLE and
    /// foreground pixel count.
    Jsonl,
    /// The overlay video (every prompt's mask over the frame) as YUV4MPEG2 4:4:4, e.g. for
    /// `| ffplay -`.
    Y4m,
}

/// One `--stream jsonl` line.
#[derive(serde::Serialize)]
struct FrameLine {
    /// Frame index in arrival order (dropped frames leave gaps).
    frame: usize,
    /// Output file stem of the frame.
    name: String,
    /// Seconds from the start of reading to the frame's arrival.
    arrived: f64,
    /// Seconds from the start of reading to its masks being written.
    done: f64,
    /// Per prompt.
    prompts: Vec<PromptLine>,
}

/// One prompt's mask in a `--stream jsonl` line.
#[derive(serde::Serialize)]
struct PromptLine {
    /// Foreground pixels.
    foreground: u64,
    /// COCO RLE of the mask.
    rle: Rle,
}

/// The per-frame observer of a live run.
#[derive(Debug)]
pub struct LiveOutput {
    format: Option<StreamFormat>,
    out: std::io::BufWriter<std::io::Stdout>,
    log: Arc<Mutex<FeedLog>>,
    clock: Instant,
    window: usize,
    size: (u32, u32),
    fps: f64,
    header_written: bool,
    /// Why stdout stopped taking the stream (its reader went away), once it has.
    broken: Option<String>,
    latencies: Vec<f64>,
    after_window: Vec<f64>,
    first_done: Option<f64>,
    last_done: f64,
}

impl LiveOutput {
    /// An observer for frames of `size` at `fps`, arrival times in `log`, counted from `clock`;
    /// the first `window` frames are the prompt stage's.
    pub fn new(
        format: Option<StreamFormat>,
        log: Arc<Mutex<FeedLog>>,
        clock: Instant,
        window: usize,
        size: (u32, u32),
        fps: f64,
    ) -> Self {
        LiveOutput {
            format,
            out: std::io::BufWriter::with_capacity(1 << 20, std::io::stdout()),
            log,
            clock,
            window,
            size,
            fps,
            header_written: false,
            broken: None,
            latencies: Vec::new(),
            after_window: Vec::new(),
            first_done: None,
            last_done: 0.0,
        }
    }

    /// Fills the latency and throughput fields of `s`; a warning when stdout went away.
    pub fn report(&self, s: &mut OnlineSummary) -> Option<String> {
        s.latency_ms = Latency::of(&self.latencies);
        s.latency_after_window_ms = Latency::of(&self.after_window);
        s.first_mask_s = self.first_done;
        let span = self.last_done - self.first_done.unwrap_or(0.0);
        s.frames_per_second =
            (self.latencies.len() > 1 && span > 0.0).then(|| (self.latencies.len() - 1) as f64 / span);
        self.broken.clone()
    }

    fn write(
        &mut self,
        index: usize,
        masks: &[GrayImage],
        frame: Option<&RgbImage>,
        arrived: f64,
        done: f64,
    ) -> Result<()> {
        match self.format {
            None => Ok(()),
            Some(StreamFormat::Jsonl) => self.write_line(index, masks, arrived, done),
            Some(StreamFormat::Y4m) => {
                let frame = frame.ok_or_else(|| Error::Internal("the y4m stream needs the frames".into()))?;
                self.write_overlay(masks, frame)
            }
        }
        .or_else(|e| self.stop(e))
    }

    /// Stops streaming when stdout's reader went away; the run and its files go on.
    fn stop(&mut self, e: std::io::Error) -> Result<()> {
        self.broken = Some(format!("stdout stopped taking the --stream output: {e}"));
        self.format = None;
        Ok(())
    }

    fn write_line(
        &mut self,
        index: usize,
        masks: &[GrayImage],
        arrived: f64,
        done: f64,
    ) -> std::io::Result<()> {
        let prompts = masks
            .iter()
            .map(|m| PromptLine {
                foreground: m.as_raw().iter().map(|&v| u64::from(v)).sum(),
                rle: Rle::encode(m),
            })
            .collect();
        let line = FrameLine {
            frame: index,
            name: format!("{index:05}"),
            arrived,
            done,
            prompts,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    fn write_overlay(&mut self, masks: &[GrayImage], frame: &RgbImage) -> std::io::Result<()> {
        let (w, h) = self.size;
        if !self.header_written {
            let rate = (self.fps * 1000.0).round() as u64;
            writeln!(
                self.out,
                "YUV4MPEG2 W{w} H{h} F{rate}:1000 Ip A1:1 C444 XCOLORRANGE=FULL"
            )?;
            self.header_written = true;
        }
        // later prompts are drawn over earlier ones, each in its own colour
        let mut ids = vec![0u8; (w * h) as usize];
        for (k, m) in masks.iter().enumerate() {
            for (id, &v) in ids.iter_mut().zip(m.as_raw()) {
                if v != 0 {
                    *id = (k + 1).min(255) as u8;
                }
            }
        }
        let ids = GrayImage::from_raw(w, h, ids).expect("the frame size");
        let over = overlay(frame, &ids);
        self.out.write_all(b"FRAME\n")?;
        self.out.write_all(&full_range_444(&over))?;
        self.out.flush()
    }
}

/// An RGB picture as full-range BT.601 Y, Cb, Cr planes (what `XCOLORRANGE=FULL C444` means).
fn full_range_444(img: &RgbImage) -> Vec<u8> {
    let n = img.as_raw().len() / 3;
    let mut planes = vec![0u8; 3 * n];
    let (y, rest) = planes.split_at_mut(n);
    let (cb, cr) = rest.split_at_mut(n);
    let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        let l = 0.299 * r + 0.587 * g + 0.114 * b;
        y[i] = q(l);
        cb[i] = q(128.0 + (b - l) / 1.772);
        cr[i] = q(128.0 + (r - l) / 1.402);
    }
    planes
}

impl FrameObserver for LiveOutput {
    fn needs_frames(&self) -> bool {
        self.format == Some(StreamFormat::Y4m)
    }

    fn frame_done(&mut self, index: usize, masks: &[GrayImage], frame: Option<&RgbImage>) -> Result<()> {
        let done = self.clock.elapsed().as_secs_f64();
        let arrived = self.log.lock().expect("never poisoned").arrived.remove(&index);
        let arrived = arrived.unwrap_or(done);
        self.latencies.push(done - arrived);
        if index >= self.window {
            self.after_window.push(done - arrived);
        }
        self.first_done.get_or_insert(done);
        self.last_done = done;
        self.write(index, masks, frame, arrived, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::y4m::Header;

    #[test]
    fn the_overlay_stream_reads_back_within_a_level() {
        let img = RgbImage::from_fn(6, 4, |x, y| {
            image::Rgb([(x * 40) as u8, (y * 60) as u8, 200 - (x * 10) as u8])
        });
        let h = Header::parse(b"YUV4MPEG2 W6 H4 C444 XCOLORRANGE=FULL").unwrap();
        let back = h.to_rgb(&full_range_444(&img));
        for (a, b) in img.as_raw().iter().zip(back.as_raw()) {
            assert!(a.abs_diff(*b) <= 1, "{a} {b}");
        }
    }
}
