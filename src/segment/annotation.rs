//! The user's corrections for XMem++ (`--annotate [PROMPT:]FRAME=MASK.png`, batch rows'
//! `annotate`): which prompt, which frame, and a mask of the frame's size (nonzero = the object).

use crate::error::{Error, Result};
use crate::output::read_mask_png;
use crate::video::VideoInfo;
use image::GrayImage;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One `--annotate [PROMPT:]FRAME=MASK.png`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// The prompt's number.
    pub prompt: usize,
    /// A frame number or a frame name.
    pub frame: String,
    /// The mask file.
    pub mask: PathBuf,
}

impl std::str::FromStr for Annotation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let usage = || format!("`{s}` is not [PROMPT:]FRAME=MASK.png (e.g. 17=fix.png or 1:17=fix.png)");
        let (left, mask) = s.split_once('=').ok_or_else(usage)?;
        let (prompt, frame) = match left.split_once(':') {
            Some((p, f)) => (p.parse().map_err(|_| usage())?, f),
            None => (0, left),
        };
        if frame.is_empty() || mask.is_empty() {
            return Err(usage());
        }
        Ok(Annotation {
            prompt,
            frame: frame.to_string(),
            mask: PathBuf::from(mask),
        })
    }
}

impl Annotation {
    /// The prompt, the frame index and the 0/255 mask (nonzero = the object), checked against
    /// the video and the number of prompts.
    pub fn read(&self, info: &VideoInfo, prompts: usize) -> Result<(usize, usize, GrayImage)> {
        if self.prompt >= prompts {
            return Err(Error::Usage(format!(
                "--annotate {}:{}: there is no prompt {} ({prompts} given, numbered from 0)",
                self.prompt, self.frame, self.prompt
            )));
        }
        let by_name = (0..info.frames).find(|&i| info.frame_name(i) == self.frame);
        let index = by_name
            .or_else(|| self.frame.parse::<usize>().ok().filter(|&i| i < info.frames))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--annotate: frame `{}` is not in the video ({} frames, 0–{}, named {} …)",
                    self.frame,
                    info.frames,
                    info.frames.saturating_sub(1),
                    info.frame_name(0)
                ))
            })?;
        let raw = read_mask_png(&self.mask)?;
        if raw.dimensions() != (info.width, info.height) {
            return Err(Error::Usage(format!(
                "{}: is {}×{}, frame {} of the video is {}×{}",
                self.mask.display(),
                raw.width(),
                raw.height(),
                info.frame_name(index),
                info.width,
                info.height
            )));
        }
        let mask = GrayImage::from_fn(raw.width(), raw.height(), |x, y| {
            image::Luma([if raw.get_pixel(x, y)[0] > 0 { 255 } else { 0 }])
        });
        Ok((self.prompt, index, mask))
    }
}

/// Every annotation read, per prompt (frame → 0/255 mask); a frame given twice for one prompt
/// is refused.
pub fn read_annotations(
    given: &[Annotation],
    info: &VideoInfo,
    prompts: usize,
) -> Result<Vec<BTreeMap<usize, GrayImage>>> {
    let mut out = vec![BTreeMap::new(); prompts];
    for a in given {
        let (k, index, mask) = a.read(info, prompts)?;
        if out[k].insert(index, mask).is_some() {
            return Err(Error::Usage(format!(
                "--annotate gives frame {} of prompt {k} twice",
                info.frame_name(index)
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prompt_frame_and_mask() {
        let a: Annotation = "17=fix.png".parse().unwrap();
        assert_eq!(
            (a.prompt, a.frame.as_str(), a.mask),
            (0, "17", PathBuf::from("fix.png"))
        );
        let b: Annotation = "1:frame_000017=dir/a=b.png".parse().unwrap();
        assert_eq!((b.prompt, b.frame.as_str()), (1, "frame_000017"));
        assert_eq!(b.mask, PathBuf::from("dir/a=b.png"));
        for bad in ["17", "=x.png", "17=", "x:17=a.png"] {
            assert!(bad.parse::<Annotation>().is_err(), "{bad}");
        }
    }
}
