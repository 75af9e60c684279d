//! Any container and codec FFmpeg reads, through video-rs (`--features ffmpeg`; needs the
//! FFmpeg development libraries at build time and the shared libraries at run time).

use super::{frame_count_mismatch, Frame, SourceKind, VideoInfo};
use crate::error::{Error, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};
use video_rs::decode::Decoder;

fn start(path: &Path) -> Result<Decoder> {
    video_rs::init().map_err(|e| Error::Runtime(format!("cannot initialise FFmpeg: {e}")))?;
    Decoder::new(path.to_path_buf()).map_err(|e| Error::NotAVideo {
        path: path.to_path_buf(),
        reason: format!("FFmpeg cannot open it: {e}"),
    })
}

/// Opens a video with FFmpeg; counts frames by decoding when the container does not say.
pub(crate) fn open(path: &Path) -> Result<VideoInfo> {
    let dec = start(path)?;
    let (width, height) = dec.size();
    let fps = f64::from(dec.frame_rate());
    let mut frames = dec.frames().unwrap_or(0) as usize;
    drop(dec);
    let mut info = VideoInfo {
        path: path.to_path_buf(),
        kind: SourceKind::Ffmpeg,
        frames,
        width,
        height,
        fps: (fps > 0.0).then_some(fps),
        codec: "ffmpeg".into(),
        frame_names: Vec::new(),
    };
    if frames == 0 {
        info.frames = usize::MAX;
        let mut it = FfmpegFrames::new(&info)?;
        for f in it.by_ref() {
            f?;
            frames += 1;
        }
    }
    if frames == 0 {
        return Err(Error::NoFrames {
            path: path.to_path_buf(),
        });
    }
    info.frames = frames;
    info.frame_names = (0..frames).map(|i| format!("{i:05}")).collect();
    Ok(info)
}

/// Sequential FFmpeg decode of RGB frames.
pub(crate) struct FfmpegFrames {
    decoder: Decoder,
    path: PathBuf,
    declared: usize,
    next: usize,
    done: bool,
}

impl FfmpegFrames {
    /// Starts decoding from the first frame.
    pub(crate) fn new(info: &VideoInfo) -> Result<Self> {
        Ok(FfmpegFrames {
            decoder: start(&info.path)?,
            path: info.path.clone(),
            declared: info.frames,
            next: 0,
            done: false,
        })
    }
}

impl Iterator for FfmpegFrames {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Result<Frame>> {
        if self.done || self.next >= self.declared {
            return None;
        }
        match self.decoder.decode() {
            Ok((_, arr)) => {
                let (h, w, _) = arr.dim();
                let data: Vec<u8> = arr.iter().copied().collect();
                let index = self.next;
                self.next += 1;
                RgbImage::from_raw(w as u32, h as u32, data).map(|image| Ok(Frame { index, image }))
            }
            Err(video_rs::Error::DecodeExhausted) => {
                self.done = true;
                (self.declared != usize::MAX)
                    .then(|| Err(frame_count_mismatch(&self.path, self.declared, self.next)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(Error::CorruptFrame {
                    path: self.path.clone(),
                    index: self.next,
                    reason: e.to_string(),
                }))
            }
        }
    }
}
