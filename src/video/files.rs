//! Frame folders (`JPEGImages/<video>/` style) and single images.

use super::{Frame, SourceKind, VideoInfo};
use crate::error::{Error, Result};
use image::{ImageFormat, ImageReader};
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

fn is_frame_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| FRAME_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads only the header of an image file: (width, height, format).
fn header(path: &Path, index: usize) -> Result<(u32, u32, ImageFormat)> {
    let corrupt = |reason: String| Error::CorruptFrame {
        path: path.to_path_buf(),
        index,
        reason,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let format = reader
        .format()
        .ok_or_else(|| corrupt("not a jpg or png image".into()))?;
    let (w, h) = reader.into_dimensions().map_err(|e| corrupt(e.to_string()))?;
    if w == 0 || h == 0 {
        return Err(corrupt(format!("empty image ({w}x{h})")));
    }
    Ok((w, h, format))
}

fn format_name(f: ImageFormat) -> String {
    match f {
        ImageFormat::Jpeg => "jpeg".into(),
        ImageFormat::Png => "png".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Lists and checks a folder of frames (headers only): natural order, one size for all.
pub(crate) fn open_folder(dir: &Path) -> Result<(VideoInfo, Vec<PathBuf>)> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if is_frame_file(&p) {
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
    open_files(dir, paths)
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
    let (w, h, format) = header(&paths[0], 0)?;
    for (i, p) in paths.iter().enumerate().skip(1) {
        let (wi, hi, _) = header(p, i)?;
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
        codec: format_name(format),
        frame_names: paths.iter().map(|p| stem(p)).collect(),
    };
    Ok((info, paths))
}

/// A single image as a one-frame video.
pub(crate) fn open_image(path: &Path, format: ImageFormat) -> Result<VideoInfo> {
    let (w, h, _) = header(path, 0)?;
    Ok(VideoInfo {
        path: path.to_path_buf(),
        kind: SourceKind::Image,
        frames: 1,
        width: w,
        height: h,
        fps: None,
        codec: format_name(format),
        frame_names: vec![stem(path)],
    })
}

/// True when a JPEG stream has its end-of-image marker after the last start-of-scan marker.
/// (Entropy-coded data never holds 0xFF 0xD9, byte stuffing guarantees it.) Decoders
/// silently grey-fill truncated files, so this is how a cut-off frame is caught.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap_or(0);
    bytes[last_sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Decodes frame `index` from its file and checks it has the video's size.
pub(crate) fn read_frame(path: &Path, index: usize, w: u32, h: u32, first: &Path) -> Result<Frame> {
    let corrupt = |reason: String| Error::CorruptFrame {
        path: path.to_path_buf(),
        index,
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format = image::guess_format(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if format == ImageFormat::Jpeg && !jpeg_complete(&bytes) {
        return Err(corrupt("truncated JPEG (no end-of-image marker)".into()));
    }
    let img = image::load_from_memory_with_format(&bytes, format)
        .map_err(|e| corrupt(e.to_string()))?
        .into_rgb8();
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
