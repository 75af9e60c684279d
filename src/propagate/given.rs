//! The masks a user gives `propagate`: index PNGs (palette `P` as DAVIS ships them, or
//! grayscale holding the labels; 0 = background) named like the frames they belong to, read as
//! XMem2 reads them (`Image.open(...).convert('P')`).

use crate::error::{Error, Result};
use crate::video::VideoInfo;
use image::GrayImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A mask's labels and the colours its file gives them.
pub struct IndexMask {
    /// Label per pixel (0 = background).
    pub labels: GrayImage,
    /// Colour of each label: the PNG's palette (black beyond it), or gray levels for a
    /// grayscale PNG, as Pillow converts it; 256 entries.
    pub palette: Vec<[u8; 3]>,
    /// Entries the PNG's palette names (256 for grayscale).
    pub named: usize,
}

/// The given masks of a video.
pub struct GivenMasks {
    /// Frame index → mask.
    pub masks: BTreeMap<usize, GrayImage>,
    /// Frame index → the file it came from.
    pub files: BTreeMap<usize, PathBuf>,
    /// Label colours of the first mask file by name (XMem2's `reference_mask`), 256 entries.
    pub palette: Vec<[u8; 3]>,
    /// Entries that palette names.
    pub named: usize,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{}: {why}", path.display()))
}

/// Reads an index PNG. RGB masks and 16-bit ones are refused: their values are not labels.
pub fn read_index_png(path: &Path) -> Result<IndexMask> {
    let file = std::fs::File::open(path).map_err(|e| Error::input(path, e))?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec
        .read_info()
        .map_err(|e| bad(path, format!("not a readable PNG: {e}")))?;
    let (w, h) = (reader.info().width, reader.info().height);
    let plte = reader.info().palette.as_ref().map(|p| p.to_vec());
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(path, format!("corrupt PNG: {e}")))?;
    let depth = info.bit_depth as usize;
    let (indexed, channels) = match info.color_type {
        png::ColorType::Indexed => (true, 1),
        png::ColorType::Grayscale => (false, 1),
        png::ColorType::GrayscaleAlpha => (false, 2),
        other => {
            return Err(bad(
                path,
                format!(
                "an {other:?} PNG is not an index mask; save the mask as a palette (P) PNG or a grayscale \
                     PNG whose values are the object labels (0 = background)"
            ),
            ))
        }
    };
    if depth == 16 {
        return Err(bad(
            path,
            "a 16-bit PNG is not an index mask; save the labels as an 8-bit palette or grayscale PNG",
        ));
    }
    let row_bytes = (w as usize * depth * channels).div_ceil(8);
    let max = (1u16 << depth) - 1;
    let mut labels = Vec::with_capacity(w as usize * h as usize);
    for row in buf.chunks(row_bytes).take(h as usize) {
        for x in 0..w as usize {
            let bit = x * depth * channels;
            let v = u16::from(row[bit / 8] >> (8 - depth - bit % 8)) & max;
            // Pillow widens low-depth grayscale to 0..255; palette indices stay indices
            labels.push(if indexed { v } else { v * 255 / max } as u8);
        }
    }
    let (palette, named) = match (indexed, plte) {
        (true, Some(p)) => {
            let mut colours: Vec<[u8; 3]> = p.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
            let named = colours.len();
            colours.resize(256, [0, 0, 0]);
            (colours, named)
        }
        _ => ((0..=255u8).map(|v| [v, v, v]).collect(), 256),
    };
    let labels =
        GrayImage::from_raw(w, h, labels).ok_or_else(|| Error::Internal("PNG buffer size".into()))?;
    Ok(IndexMask {
        labels,
        palette,
        named,
    })
}

/// The frame a mask file names: a frame's name (its file stem, or `00042` for a video), or for
/// videos XMem2's `frame_000042` or the bare number.
fn frame_of(stem: &str, info: &VideoInfo, names: &BTreeMap<String, usize>) -> Option<usize> {
    if let Some(&i) = names.get(stem) {
        return Some(i);
    }
    if !info.frame_names.is_empty() {
        return None;
    }
    let number = stem.strip_prefix("frame_").unwrap_or(stem);
    number
        .parse::<usize>()
        .ok()
        .filter(|&i| i < info.frames && number.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads every `*.png` in `dir` as the mask of the frame it is named after. Errors name the
/// file: a name that is no frame of the video, a size other than the frame's, two files for
/// one frame, no mask at all.
pub fn read_given(dir: &Path, info: &VideoInfo) -> Result<GivenMasks> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::input(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(bad(dir, "holds no mask (*.png named like the frames)"));
    }
    let names: BTreeMap<String, usize> = (0..info.frames).map(|i| (info.frame_name(i), i)).collect();
    let mut given = GivenMasks {
        masks: BTreeMap::new(),
        files: BTreeMap::new(),
        palette: Vec::new(),
        named: 0,
    };
    let mut reference = PathBuf::new();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let index = frame_of(&stem, info, &names).ok_or_else(|| {
            bad(
                &path,
                format!(
                    "names no frame of the video ({} frames, named {} … {}); name each mask after its frame",
                    info.frames,
                    info.frame_name(0),
                    info.frame_name(info.frames.saturating_sub(1))
                ),
            )
        })?;
        let mask = read_index_png(&path)?;
        if mask.labels.dimensions() != (info.width, info.height) {
            return Err(bad(
                &path,
                format!(
                    "is {}×{}, its frame ({}) is {}×{}",
                    mask.labels.width(),
                    mask.labels.height(),
                    info.frame_name(index),
                    info.width,
                    info.height
                ),
            ));
        }
        if let Some(other) = given.files.get(&index) {
            return Err(bad(
                &path,
                format!(
                    "is a second mask for frame {} (also {})",
                    info.frame_name(index),
                    other.display()
                ),
            ));
        }
        if given.palette.is_empty() {
            (given.palette, given.named) = (mask.palette, mask.named);
            reference = path.clone();
        }
        if let Some(&l) = mask
            .labels
            .as_raw()
            .iter()
            .filter(|&&l| l as usize >= given.named)
            .max()
        {
            return Err(bad(
                &path,
                format!(
                    "holds object {l}, but the palette of the first mask ({}) names only {} colours (0–{}); \
                     give every mask one palette that names all objects",
                    reference.display(),
                    given.named,
                    given.named - 1
                ),
            ));
        }
        given.masks.insert(index, mask.labels);
        given.files.insert(index, path);
    }
    Ok(given)
}
