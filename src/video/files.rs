//! Frame folders (`JPEGImages/<video>/` style) and single images.

use super::still::{self, StillHeader};
use super::{Frame, SourceKind, VideoInfo};
use crate::error::{Error, Result};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// File extensions taken as frames in a folder (case-insensitive).
const FRAME_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Natural ("human") order of file names: digit runs compare by value, so `img2` < `img10`.
/// Names with equal value but different zero padding fall back to plain byte order.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let da = trim_zeros(&ab[si..i]);
            let db = trim_zeros(&bb[sj..j]);
            let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if ab[i] != bb[j] {
                return ab[i].cmp(&bb[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j)).then_with(|| a.cmp(b))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().take_while(|&&c| c == b'0').count();
    &d[k.min(d.len().saturating_sub(1))..]
}

/// Whether a folder entry is named like a frame: a frame extension, and not hidden (macOS
/// leaves AppleDouble `._<name>.jpg` metadata beside copied frames).
fn is_frame_name(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
    !hidden
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| FRAME_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Refuses a frame-named entry that cannot be a frame: a name that is not UTF-8 (its mask
/// could not bear the same name), a link to nothing, something other than a file.
fn check_frame_entry(p: &Path) -> Result<()> {
    if p.file_name().and_then(|n| n.to_str()).is_none() {
        return Err(Error::Usage(format!(
            "{}: the frame's name is not UTF-8, so its mask cannot be named after it; rename it",
            p.display()
        )));
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "{}: named like a frame but not a file",
            p.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Usage(format!(
            "{}: a link to a file that does not exist",
            p.display()
        ))),
        Err(e) => Err(Error::input(p, e)),
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads only the header of a frame file: its decoded size and format.
fn header(path: &Path, index: usize) -> Result<StillHeader> {
    still::read_header(path).map_err(|reason| Error::CorruptFrame {
        path: path.to_path_buf(),
        index,
        reason,
    })
}

/// Lists and checks a folder of frames (headers only): natural order, one size for all.
pub(crate) fn open_folder(dir: &Path) -> Result<(VideoInfo, Vec<PathBuf>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if is_frame_name(&p) {
            check_frame_entry(&p)?;
            paths.push(p);
        }
    }
    if paths.is_empty() {
        return Err(Error::NoFrames {
            path: dir.to_path_buf(),
        });
    }
    paths.sort_by(|a, b| {
        let na = a.file_name().unwrap_or_default().to_string_lossy();
        let nb = b.file_name().unwrap_or_default().to_string_lossy();
        natural_cmp(&na, &nb)
    });
    check_distinct_names(&paths)?;
    open_files(dir, paths)
}

/// Outputs are named after the frame's file stem, so two frames with one stem (`a.jpg` and
/// `a.png`) would write the same mask file: refuse them, naming both.
fn check_distinct_names(paths: &[PathBuf]) -> Result<()> {
    let mut seen: std::collections::HashMap<String, &PathBuf> = std::collections::HashMap::new();
    for p in paths {
        if let Some(first) = seen.insert(stem(p), p) {
            return Err(Error::Usage(format!(
                "{} and {} have the same name without extension; their masks would overwrite each \
                 other: rename or remove one",
                first.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

/// Checks an explicit, ordered list of frame files (headers only): one size for all.
pub(crate) fn open_files(dir: &Path, paths: Vec<PathBuf>) -> Result<(VideoInfo, Vec<PathBuf>)> {
    if paths.is_empty() {
        return Err(Error::NoFrames {
            path: dir.to_path_buf(),
        });
    }
    for p in &paths {
        if !p.exists() {
            return Err(Error::NotFound { path: p.clone() });
        }
    }
    let StillHeader {
        width: w,
        height: h,
        format,
    } = header(&paths[0], 0)?;
    for (i, p) in paths.iter().enumerate().skip(1) {
        let StillHeader {
            width: wi,
            height: hi,
            ..
        } = header(p, i)?;
        if (wi, hi) != (w, h) {
            return Err(Error::MixedFrameSizes {
                path: p.clone(),
                first: paths[0].clone(),
                expected_w: w,
                expected_h: h,
                found_w: wi,
                found_h: hi,
            });
        }
    }
    let info = VideoInfo {
        path: dir.to_path_buf(),
        kind: SourceKind::Frames,
        frames: paths.len(),
        width: w,
        height: h,
        fps: None,
        codec: format.name().into(),
        frame_names: paths.iter().map(|p| stem(p)).collect(),
    };
    Ok((info, paths))
}

/// A single image as a one-frame video.
pub(crate) fn open_image(path: &Path) -> Result<VideoInfo> {
    let StillHeader {
        width: w,
        height: h,
        format,
    } = header(path, 0)?;
    Ok(VideoInfo {
        path: path.to_path_buf(),
        kind: SourceKind::Image,
        frames: 1,
        width: w,
        height: h,
        fps: None,
        codec: format.name().into(),
        frame_names: vec![stem(path)],
    })
}

/// Decodes frame `index` from its file and checks it has the video's size.
pub(crate) fn read_frame(path: &Path, index: usize, w: u32, h: u32, first: &Path) -> Result<Frame> {
    let corrupt = |reason: String| Error::CorruptFrame {
        path: path.to_path_buf(),
        index,
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = still::decode(&bytes).map_err(corrupt)?;
    if img.dimensions() != (w, h) {
        return Err(Error::MixedFrameSizes {
            path: path.to_path_buf(),
            first: first.to_path_buf(),
            expected_w: w,
            expected_h: h,
            found_w: img.width(),
            found_h: img.height(),
        });
    }
    Ok(Frame { index, image: img })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["f10.jpg", "f2.jpg", "f1.jpg", "f02.jpg", "a.jpg", "f1b.jpg"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["a.jpg", "f1.jpg", "f1b.jpg", "f02.jpg", "f2.jpg", "f10.jpg"]
        );
        let mut z = vec!["00010.jpg", "00002.jpg", "00000.jpg"];
        z.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(z, vec!["00000.jpg", "00002.jpg", "00010.jpg"]);
    }
}
