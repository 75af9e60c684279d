//! `videolisa probe`: what a video is (frames, size, fps, codec), which frames VideoLISA
//! samples from it, optionally the decode speed and the model input tensors of chosen frames.

use super::{frames, print_json};
use crate::error::{Error, Result};
use crate::output::write_atomic;
use crate::preprocess::{ClipTransform, Planar, SamTransform};
use crate::sampling::Sampling;
use crate::video::{Video, VideoInfo};
use clap::Args;
use image::RgbImage;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which frames `--dump` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameSelection {
    /// The dense frames (the default).
    Dense,
    /// The distinct sparse frames.
    Sparse,
    /// Every frame.
    All,
    /// Explicit frame indices.
    List(Vec<usize>),
}

impl std::str::FromStr for FrameSelection {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "dense" => Ok(FrameSelection::Dense),
            "sparse" => Ok(FrameSelection::Sparse),
            "all" => Ok(FrameSelection::All),
            _ => s
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<usize>()
                        .map_err(|_| format!("'{p}' is not a frame index"))
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(FrameSelection::List),
        }
    }
}

/// Show a video's frames, size, fps, codec and the frames VideoLISA samples from it.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// An mp4, a folder of jpg/png frames, or a single image.
    pub video: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// What to show and dump.
    #[command(flatten)]
    pub options: ProbeOptions,
}

impl ProbeArgs {
    /// Probes the video and prints the report.
    pub fn run(&self) -> Result<()> {
        let report = probe(&self.video, &self.options)?;
        if self.json {
            return print_json(&report);
        }
        print!("{}", render_text(&report));
        Ok(())
    }
}

/// Options of `probe`.
#[derive(Args, Debug, Clone)]
pub struct ProbeOptions {
    /// Decode every frame (checks the whole file, measures decode speed).
    #[arg(long)]
    pub decode: bool,
    /// Write the CLIP and SAM input tensors of the chosen frames to DIR as safetensors.
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,
    /// Frames to dump (with --dump): `dense`, `sparse`, `all` or a list such as `0,5,9`.
    #[arg(long, default_value = "dense", requires = "dump")]
    pub frames: FrameSelection,
    /// Number of sparse frames (T_sparse).
    #[arg(long, default_value_t = crate::sampling::DEFAULT_SPARSE, value_parser = frames)]
    pub sparse: usize,
    /// Number of dense frames (T_dense; at most --sparse).
    #[arg(long, default_value_t = crate::sampling::DEFAULT_DENSE, value_parser = frames)]
    pub dense: usize,
}

/// Result of a full decode pass.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeStats {
    /// Frames decoded.
    pub frames: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Frames per second.
    pub fps: f64,
}

/// Everything `probe` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    /// Header information.
    #[serde(flatten)]
    pub info: VideoInfo,
    /// Sparse frame indices (video frames).
    pub sparse_indices: Vec<usize>,
    /// Dense indices (positions in the sparse list).
    pub dense_indices: Vec<usize>,
    /// Dense frames as video frame indices.
    pub dense_frames: Vec<usize>,
    /// Present with `--decode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode: Option<DecodeStats>,
    /// Files written by `--dump`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dumped: Vec<PathBuf>,
}

/// What `probe` reports on `input`.
pub fn probe(input: &Path, opts: &ProbeOptions) -> Result<ProbeReport> {
    let video = Video::open(input)?;
    let info = video.info().clone();
    let sampling = Sampling::new(info.frames, opts.sparse, opts.dense)?;
    let decode = if opts.decode {
        Some(decode_all(&video)?)
    } else {
        None
    };
    let mut dumped = Vec::new();
    if let Some(dir) = &opts.dump {
        crate::run_manifest::check_writable(dir)?;
        let frames: Vec<usize> = match &opts.frames {
            FrameSelection::Dense => sampling.dense_frames(),
            FrameSelection::Sparse => sampling.sparse.clone(),
            FrameSelection::All => (0..info.frames).collect(),
            FrameSelection::List(l) => l.clone(),
        };
        if let Some(&bad) = frames.iter().find(|&&f| f >= info.frames) {
            return Err(Error::Usage(format!(
                "frame {bad} is out of range: the video has {} frames (0..{})",
                info.frames,
                info.frames - 1
            )));
        }
        let clip = ClipTransform::default();
        let sam = SamTransform::default();
        let mut uniq = frames.clone();
        uniq.sort_unstable();
        uniq.dedup();
        let pb = crate::progress::bar(uniq.len() as u64, "dump");
        video.visit(&frames, |i, img| {
            let path = dir.join(format!("frame_{i:05}.safetensors"));
            write_dump(&path, i, img, &clip, &sam)?;
            dumped.push(path);
            pb.inc(1);
            Ok(())
        })?;
        pb.finish_and_clear();
    }
    Ok(ProbeReport {
        info,
        dense_frames: sampling.dense_frames(),
        sparse_indices: sampling.sparse,
        dense_indices: sampling.dense,
        decode,
        dumped,
    })
}

/// Decodes every frame once, timing it.
pub fn decode_all(video: &Video) -> Result<DecodeStats> {
    let pb = crate::progress::bar(video.len() as u64, "decode");
    let start = Instant::now();
    let mut n = 0;
    for frame in video.frames()? {
        frame?;
        n += 1;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    Ok(DecodeStats {
        frames: n,
        seconds,
        fps: n as f64 / seconds.max(1e-9),
    })
}

fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>> {
    TensorView::new(dtype, shape, data).map_err(|e| Error::Internal(format!("safetensors: {e}")))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes one frame's model inputs: `clip.pixel_values` [3,336,336] f32, `sam.pixel_values`
/// [3,1024,1024] f32, the u8 resizes `clip.resized` / `sam.resized` [h,w,3], and the frame
/// `rgb` [H,W,3]; metadata holds the frame index and the sizes.
pub fn write_dump(
    path: &Path,
    index: usize,
    img: &RgbImage,
    clip: &ClipTransform,
    sam: &SamTransform,
) -> Result<()> {
    let clip_resized = clip.resize(img);
    let sam_resized = sam.resize(img);
    let clip_in: Planar = clip.apply(img);
    let sam_in: Planar = sam.apply(img);
    let clip_bytes = f32_bytes(&clip_in.data);
    let sam_bytes = f32_bytes(&sam_in.data);
    let hwc = |i: &RgbImage| vec![i.height() as usize, i.width() as usize, 3];
    let tensors = vec![
        (
            "clip.pixel_values",
            view(Dtype::F32, clip_in.shape().to_vec(), &clip_bytes)?,
        ),
        (
            "sam.pixel_values",
            view(Dtype::F32, sam_in.shape().to_vec(), &sam_bytes)?,
        ),
        (
            "clip.resized",
            view(Dtype::U8, hwc(&clip_resized), clip_resized.as_raw())?,
        ),
        (
            "sam.resized",
            view(Dtype::U8, hwc(&sam_resized), sam_resized.as_raw())?,
        ),
        ("rgb", view(Dtype::U8, hwc(img), img.as_raw())?),
    ];
    let meta: HashMap<String, String> = [
        ("frame".to_string(), index.to_string()),
        (
            "original_size".to_string(),
            format!("{},{}", img.height(), img.width()),
        ),
        (
            "sam_input_size".to_string(),
            format!("{},{}", sam_resized.height(), sam_resized.width()),
        ),
    ]
    .into_iter()
    .collect();
    let mut bytes = safetensors::serialize(tensors, Some(meta))
        .map_err(|e| Error::Internal(format!("safetensors: {e}")))?;
    crate::output::sort_safetensors_header(&mut bytes)?;
    write_atomic(path, |w| {
        std::io::Write::write_all(w, &bytes).map_err(|e| Error::io(path, e))
    })
}

/// Human-readable report.
pub fn render_text(r: &ProbeReport) -> String {
    let i = &r.info;
    let mut s = String::new();
    s += &format!("input:   {}\n", i.path.display());
    s += &format!("kind:    {:?} ({})\n", i.kind, i.codec);
    s += &format!("frames:  {}\n", i.frames);
    s += &format!("size:    {}x{}\n", i.width, i.height);
    match i.fps {
        Some(f) => s += &format!("fps:     {f:.3}\n"),
        None => s += "fps:     -\n",
    }
    s += &format!("sparse:  {:?}\n", r.sparse_indices);
    s += &format!(
        "dense:   {:?} (sparse positions) = frames {:?}\n",
        r.dense_indices, r.dense_frames
    );
    if let Some(d) = &r.decode {
        s += &format!(
            "decode:  {} frames in {:.2} s = {:.1} frames/s\n",
            d.frames, d.seconds, d.fps
        );
    }
    for p in &r.dumped {
        s += &format!("dumped:  {}\n", p.display());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selection() {
        assert_eq!("dense".parse::<FrameSelection>().unwrap(), FrameSelection::Dense);
        assert_eq!(
            "1, 5,9".parse::<FrameSelection>().unwrap(),
            FrameSelection::List(vec![1, 5, 9])
        );
        assert!("x".parse::<FrameSelection>().is_err());
    }
}
