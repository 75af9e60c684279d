//! Still frames (JPEG, PNG) decoded exactly as the reference reads them: `cv2.imread(path)`
//! (IMREAD_COLOR) followed by `cvtColor(BGR2RGB)`.
//!
//! * JPEG goes through libjpeg-turbo's decoder (as mozjpeg ships it), the library OpenCV and
//!   Pillow link: accurate integer IDCT, fancy upsampling, arithmetic coding, progressive,
//!   restart markers. Grayscale is replicated to three channels; four-channel files (CMYK, or
//!   YCCK which libjpeg turns into CMYK) are converted with OpenCV's integer formula; the EXIF
//!   orientation is applied as OpenCV applies it.
//! * PNG: 16-bit samples keep their high byte, alpha is dropped, palettes and low bit depths are
//!   expanded (libpng's `strip_16`, `strip_alpha`, `palette_to_rgb`, `expand_gray_1_2_4_to_8`).

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use mozjpeg::{ColorSpace, Decompress, Marker};
use std::path::Path;

/// The container of a still frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StillFormat {
    /// JPEG/JFIF.
    Jpeg,
    /// PNG.
    Png,
}

impl StillFormat {
    /// Recognises a still image by its magic bytes.
    pub(crate) fn sniff(head: &[u8]) -> Option<StillFormat> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(StillFormat::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(StillFormat::Png)
        } else {
            None
        }
    }

    /// Lower-case name for reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StillFormat::Jpeg => "jpeg",
            StillFormat::Png => "png",
        }
    }
}

/// Largest frame decoded (2^28 pixels, e.g. 16384×16384): a few header bytes can declare a
/// 4-gigapixel image, which would otherwise be allocated before the data runs out.
pub(crate) const MAX_PIXELS: u64 = 1 << 28;

fn check_size(w: u64, h: u64) -> Result<(), String> {
    if w * h > MAX_PIXELS {
        return Err(format!(
            "the image declares {w}x{h} pixels, more than the {MAX_PIXELS} this reader decodes"
        ));
    }
    Ok(())
}

/// Size of a frame as it will be decoded (after the EXIF orientation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StillHeader {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Container.
    pub format: StillFormat,
}

/// Reads only what is needed to know the decoded size. The error is a reason for the message.
pub(crate) fn read_header(path: &Path) -> Result<StillHeader, String> {
    let mut head = [0u8; 8];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        f.read(&mut head).map_err(|e| e.to_string())?
    };
    let (w, h, format) = match StillFormat::sniff(&head[..n]) {
        Some(StillFormat::Jpeg) => {
            let d = guarded(|| {
                Decompress::with_markers(&[Marker::APP(1)])
                    .from_path(path)
                    .map_err(|e| e.to_string())
            })?;
            let (w, h) = (d.width() as u32, d.height() as u32);
            if orientation(&d).is_some_and(swaps_axes) {
                (h, w, StillFormat::Jpeg)
            } else {
                (w, h, StillFormat::Jpeg)
            }
        }
        Some(StillFormat::Png) => {
            let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let r = png::Decoder::new(std::io::BufReader::new(f))
                .read_info()
                .map_err(|e| e.to_string())?;
            let i = r.info();
            (i.width, i.height, StillFormat::Png)
        }
        None => return Err("not a jpg or png image".into()),
    };
    if w == 0 || h == 0 {
        return Err(format!("empty image ({w}x{h})"));
    }
    check_size(u64::from(w), u64::from(h))?;
    Ok(StillHeader {
        width: w,
        height: h,
        format,
    })
}

/// Decodes a whole JPEG or PNG file held in memory to RGB, as the reference does.
pub(crate) fn decode(bytes: &[u8]) -> Result<RgbImage, String> {
    match StillFormat::sniff(bytes) {
        Some(StillFormat::Jpeg) => {
            if !jpeg_complete(bytes) {
                return Err("truncated JPEG (no end-of-image marker)".into());
            }
            decode_jpeg(bytes)
        }
        Some(StillFormat::Png) => decode_png(bytes),
        None => Err("not a jpg or png image".into()),
    }
}

/// True when a JPEG stream has its end-of-image marker after the last start-of-scan marker.
/// (Entropy-coded data never holds 0xFF 0xD9, byte stuffing guarantees it.) libjpeg fills a
/// truncated file with grey and only warns, so this is how a cut-off frame is caught.
pub(crate) fn jpeg_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap_or(0);
    bytes[last_sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Runs libjpeg code, turning its fatal errors (which unwind) into `Err`.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libjpeg failed".into())),
    }
}

/// The EXIF orientation of a JPEG (its first `Exif` APP1 segment), when present and valid.
fn orientation<R>(d: &Decompress<R>) -> Option<Orientation> {
    d.markers()
        .filter(|m| m.marker == Marker::APP(1))
        .find_map(|m| m.data.strip_prefix(b"Exif\0\0"))
        .and_then(Orientation::from_exif_chunk)
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    let (w, h, rgb, orient) = guarded(|| {
        let d = Decompress::with_markers(&[Marker::APP(1)])
            .from_mem(bytes)
            .map_err(|e| e.to_string())?;
        let orient = orientation(&d);
        check_size(d.width() as u64, d.height() as u64)?;
        let four = d.components().len() == 4;
        let mut started = if four {
            // OpenCV asks libjpeg for CMYK (libjpeg converts YCCK) and converts it itself
            d.to_colorspace(ColorSpace::JCS_CMYK)
        } else {
            d.rgb()
        }
        .map_err(|e| e.to_string())?;
        let (w, h) = (started.width(), started.height());
        let px: Vec<u8> = started.read_scanlines::<u8>().map_err(|e| e.to_string())?;
        started.finish().map_err(|e| e.to_string())?;
        let rgb = if four { cmyk_to_rgb(&px) } else { px };
        Ok((w as u32, h as u32, rgb, orient))
    })?;
    let img = RgbImage::from_raw(w, h, rgb).ok_or("libjpeg returned a short buffer")?;
    Ok(apply_orientation(img, orient))
}

/// OpenCV's `icvCvt_CMYK2BGR_8u_C4C3R`: each channel is `k - ((255 - c)·k >> 8)`. libjpeg hands
/// Adobe files over as stored (inverted), which this formula expects.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for p in cmyk.chunks_exact(4) {
        let k = i32::from(p[3]);
        for &c in &p[..3] {
            out.push((k - (((255 - i32::from(c)) * k) >> 8)) as u8);
        }
    }
    out
}

fn apply_orientation(img: RgbImage, o: Option<Orientation>) -> RgbImage {
    match o {
        None | Some(Orientation::NoTransforms) => img,
        Some(o) => {
            let mut d = DynamicImage::ImageRgb8(img);
            d.apply_orientation(o);
            d.into_rgb8()
        }
    }
}

fn decode_png(bytes: &[u8]) -> Result<RgbImage, String> {
    let limits = png::Limits {
        bytes: (MAX_PIXELS * 8) as usize,
    };
    let mut dec = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| e.to_string())?;
    check_size(u64::from(reader.info().width), u64::from(reader.info().height))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    buf.truncate(info.buffer_size());
    let rgb: Vec<u8> = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        png::ColorType::Indexed => return Err("palette PNG was not expanded".into()),
    };
    RgbImage::from_raw(info.width, info.height, rgb).ok_or_else(|| "short PNG buffer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_formula_matches_opencv_corners() {
        // k = 255 (Adobe-inverted "no black"): c passes through up to the >> 8 rounding; k = 0:
        // black whatever c is
        assert_eq!(cmyk_to_rgb(&[10, 128, 255, 255]), vec![11, 129, 255]);
        assert_eq!(cmyk_to_rgb(&[10, 128, 255, 0]), vec![0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 200]), vec![1, 1, 1]);
    }

    #[test]
    fn truncated_jpeg_is_detected() {
        assert!(jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9]));
        assert!(!jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 3]));
    }
}
