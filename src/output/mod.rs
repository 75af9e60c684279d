//! Mask outputs: 0/255 PNGs named after the input frames, DAVIS-palette indexed PNGs, overlays
//! (PNG frames and an H.264 mp4), COCO RLE JSON. Every file is written atomically.

pub mod atomic;
pub mod frames;
pub mod mp4;
pub mod rle;

use crate::error::{Error, Result};
use candle_core::Tensor;
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use std::path::Path;

pub use atomic::{write_atomic, AtomicFile};
pub use frames::{overlay_fps, FrameOutputs, OutputFormats};
pub use mp4::Mp4VideoWriter;
pub use rle::Rle;

/// The DAVIS / PASCAL VOC palette: colour of object id `i` (bit-interleaved id bits).
pub fn davis_palette() -> [[u8; 3]; 256] {
    let mut pal = [[0u8; 3]; 256];
    for (i, entry) in pal.iter_mut().enumerate() {
        let mut c = i;
        for j in 0..8 {
            for (ch, v) in entry.iter_mut().enumerate() {
                *v |= (((c >> ch) & 1) as u8) << (7 - j);
            }
            c >>= 3;
        }
    }
    pal
}

/// Writes named tensors as one safetensors file, atomically (the format orders the tensors,
/// so the same tensors always give the same bytes).
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let bytes = safetensors::serialize(tensors.iter(), None)
        .map_err(|e| Error::Internal(format!("{}: safetensors: {e}", path.display())))?;
    write_atomic(path, |w| {
        std::io::Write::write_all(w, &bytes).map_err(|e| Error::io(path, e))
    })
}

/// Rewrites a serialized safetensors file's JSON header with its keys in sorted order (the same
/// length, so the data offsets stay valid): the crate writes `__metadata__` in hash order, and
/// the same file should always be the same bytes.
pub fn sort_safetensors_header(bytes: &mut [u8]) -> Result<()> {
    let bad = |what: &str| Error::Internal(format!("safetensors header: {what}"));
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or_else(|| bad("too short"))?;
    let header = bytes
        .get_mut(8..8 + n)
        .ok_or_else(|| bad("longer than the file"))?;
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let sorted = serde_json::to_vec(&value).map_err(|e| bad(&e.to_string()))?;
    if sorted.len() > n {
        return Err(bad("grew when sorted"));
    }
    header[..sorted.len()].copy_from_slice(&sorted);
    header[sorted.len()..].fill(b' ');
    Ok(())
}

fn png_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("{}: cannot encode PNG: {e}", path.display()))
}

/// Writes a binary mask as an 8-bit grayscale PNG: 0 where `mask` is 0, `value` elsewhere
/// (255 for the usual layout, 100 for the Ref-DAVIS raw layout).
pub fn write_mask_png(path: &Path, mask: &GrayImage, value: u8) -> Result<()> {
    let (w, h) = mask.dimensions();
    let data: Vec<u8> = mask
        .as_raw()
        .iter()
        .map(|&v| if v != 0 { value } else { 0 })
        .collect();
    write_png(path, w, h, png::ColorType::Grayscale, None, &data)
}

/// Writes an indexed (palette) PNG with the DAVIS palette: each value is an object id.
pub fn write_indexed_png(path: &Path, ids: &GrayImage) -> Result<()> {
    let pal: Vec<u8> = davis_palette().iter().flatten().copied().collect();
    let (w, h) = ids.dimensions();
    write_png(path, w, h, png::ColorType::Indexed, Some(&pal), ids.as_raw())
}

/// Writes an indexed PNG with `palette` (RGB triples): each value is a label, coloured as
/// the palette says.
pub fn write_palette_png(path: &Path, ids: &GrayImage, palette: &[u8]) -> Result<()> {
    let (w, h) = ids.dimensions();
    write_png(path, w, h, png::ColorType::Indexed, Some(palette), ids.as_raw())
}

/// Writes an RGB image as PNG.
pub fn write_rgb_png(path: &Path, img: &RgbImage) -> Result<()> {
    let (w, h) = img.dimensions();
    write_png(path, w, h, png::ColorType::Rgb, None, img.as_raw())
}

fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    palette: Option<&[u8]>,
    data: &[u8],
) -> Result<()> {
    write_atomic(path, |f| {
        let mut enc = png::Encoder::new(f, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        if let Some(p) = palette {
            enc.set_palette(p.to_vec());
        }
        let mut wr = enc.write_header().map_err(|e| png_err(path, e))?;
        wr.write_image_data(data).map_err(|e| png_err(path, e))?;
        wr.finish().map_err(|e| png_err(path, e))?;
        Ok(())
    })
}

/// Decodes a PNG with `transformations`: its frame info and exactly its pixel bytes. Errors
/// name the file.
pub fn decode_png(path: &Path, transformations: png::Transformations) -> Result<(png::OutputInfo, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ => Error::io(path, e),
    })?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(transformations);
    let mut reader = dec
        .read_info()
        .map_err(|e| Error::Usage(format!("{}: not a readable PNG: {e}", path.display())))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| Error::Usage(format!("{}: corrupt PNG: {e}", path.display())))?;
    buf.truncate(info.buffer_size());
    Ok((info, buf))
}

/// Reads a mask PNG (grayscale, indexed or RGB) as raw values: palette indices for indexed
/// PNGs, the gray level otherwise (RGB masks are reduced to "any channel nonzero" → 255).
pub fn read_mask_png(path: &Path) -> Result<GrayImage> {
    let (info, buf) = decode_png(path, png::Transformations::STRIP_16)?;
    let (w, h) = (info.width, info.height);
    let n = (w * h) as usize;
    let bytes = &buf[..];
    let data: Vec<u8> = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale | png::ColorType::Indexed, png::BitDepth::Eight) => bytes.to_vec(),
        (png::ColorType::Grayscale | png::ColorType::Indexed, depth) => {
            let bits = depth as usize;
            let per_row = (w as usize * bits).div_ceil(8);
            let mut v = Vec::with_capacity(n);
            for y in 0..h as usize {
                let row = &bytes[y * per_row..(y + 1) * per_row];
                for x in 0..w as usize {
                    let bit = x * bits;
                    let byte = row[bit / 8];
                    let shift = 8 - bits - (bit % 8);
                    v.push((byte >> shift) & ((1u16 << bits) - 1) as u8);
                }
            }
            v
        }
        (png::ColorType::GrayscaleAlpha, _) => bytes.chunks(2).map(|c| c[0]).collect(),
        (png::ColorType::Rgb, _) => bytes
            .chunks(3)
            .map(|c| if c.iter().any(|&v| v != 0) { 255 } else { 0 })
            .collect(),
        (png::ColorType::Rgba, _) => bytes
            .chunks(4)
            .map(|c| if c[..3].iter().any(|&v| v != 0) { 255 } else { 0 })
            .collect(),
    };
    GrayImage::from_raw(w, h, data)
        .ok_or_else(|| Error::Internal(format!("{}: unexpected PNG buffer size", path.display())))
}

/// Blends object colours onto a frame: each pixel with a nonzero id is mixed 50/50 with the
/// DAVIS colour of that id (id 1 = red-ish; `chat.py` uses pure red for its single mask).
pub fn overlay(frame: &RgbImage, ids: &GrayImage) -> RgbImage {
    let pal = davis_palette();
    let mut out = frame.clone();
    for (p, &id) in out.pixels_mut().zip(ids.as_raw()) {
        if id != 0 {
            let c = if id == 1 { [255, 0, 0] } else { pal[id as usize] };
            for (v, &cv) in p.0.iter_mut().zip(&c) {
                *v = ((u16::from(*v) + u16::from(cv)) / 2) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_matches_davis() {
        let p = davis_palette();
        assert_eq!(p[0], [0, 0, 0]);
        assert_eq!(p[1], [128, 0, 0]);
        assert_eq!(p[2], [0, 128, 0]);
        assert_eq!(p[3], [128, 128, 0]);
        assert_eq!(p[4], [0, 0, 128]);
        assert_eq!(p[8], [64, 0, 0]);
        assert_eq!(p[255], [224, 224, 192]);
    }

    #[test]
    fn png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = GrayImage::new(7, 5);
        m.put_pixel(2, 3, image::Luma([1]));
        m.put_pixel(6, 4, image::Luma([3]));
        let p = dir.path().join("m.png");
        write_mask_png(&p, &m, 255).unwrap();
        let r = read_mask_png(&p).unwrap();
        assert_eq!(r.get_pixel(2, 3).0[0], 255);
        assert_eq!(r.get_pixel(6, 4).0[0], 255);
        assert_eq!(r.get_pixel(0, 0).0[0], 0);
        let q = dir.path().join("i.png");
        write_indexed_png(&q, &m).unwrap();
        assert_eq!(read_mask_png(&q).unwrap(), m);
        let o = overlay(&RgbImage::new(7, 5), &m);
        assert_eq!(o.get_pixel(2, 3).0, [127, 0, 0]);
    }
}
