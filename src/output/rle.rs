//! COCO run-length encoding (the `mask_dict.json` format of MeViS): column-major runs starting
//! with background, serialised as pycocotools' compressed counts string.

use crate::error::{Error, Result};
use image::GrayImage;

/// A COCO RLE: `{"size": [h, w], "counts": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rle {
    /// `[height, width]`.
    pub size: [u32; 2],
    /// Compressed counts string.
    pub counts: String,
}

/// Largest mask an RLE may describe (16384 × 16384): a few bytes of counts must not be able to
/// ask for gigabytes.
pub const MAX_PIXELS: u64 = 1 << 28;

/// Run lengths of a mask read column by column, alternating 0-runs and 1-runs, 0 first.
pub fn mask_to_counts(mask: &GrayImage) -> Vec<u32> {
    let (w, h) = mask.dimensions();
    let raw = mask.as_raw();
    let mut counts = Vec::new();
    let mut current = false;
    let mut run = 0u32;
    for x in 0..w as usize {
        for y in 0..h as usize {
            let v = raw[y * w as usize + x] != 0;
            if v != current {
                counts.push(run);
                run = 0;
                current = v;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

/// Rebuilds a 0/1 mask of `w`×`h` from run lengths.
pub fn counts_to_mask(counts: &[u32], h: u32, w: u32) -> Result<GrayImage> {
    if u64::from(h) * u64::from(w) > MAX_PIXELS {
        return Err(Error::Usage(format!(
            "RLE size {h}x{w} is larger than any video frame this tool accepts ({MAX_PIXELS} pixels)"
        )));
    }
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total != u64::from(h) * u64::from(w) {
        return Err(Error::Usage(format!(
            "RLE runs cover {total} pixels but the mask is {h}x{w} = {}",
            u64::from(h) * u64::from(w)
        )));
    }
    let mut img = GrayImage::new(w, h);
    let mut pos = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if i % 2 == 1 {
            for p in pos..pos + u64::from(c) {
                let (x, y) = ((p / u64::from(h)) as u32, (p % u64::from(h)) as u32);
                img.put_pixel(x, y, image::Luma([1]));
            }
        }
        pos += u64::from(c);
    }
    Ok(img)
}

/// pycocotools' string form: delta against the run two back (from the fourth run on),
/// 5-bit little-endian groups, continuation bit 0x20, sign in bit 0x10 of the last group.
pub fn counts_to_string(counts: &[u32]) -> String {
    let mut s = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = i64::from(c);
        if i > 2 {
            x -= i64::from(counts[i - 2]);
        }
        loop {
            let mut group = (x & 0x1f) as u8;
            x >>= 5;
            let more = if group & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                group |= 0x20;
            }
            s.push(char::from(group + 48));
            if !more {
                break;
            }
        }
    }
    s
}

/// Parses a compressed counts string back into run lengths.
pub fn string_to_counts(s: &str) -> Result<Vec<u32>> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0u32;
        loop {
            let b = *bytes
                .get(p)
                .ok_or_else(|| Error::Usage(format!("RLE counts string ends inside a value at byte {p}")))?;
            if !(48..48 + 64).contains(&b) {
                return Err(Error::Usage(format!(
                    "RLE counts string has an invalid character {:?} at byte {p}",
                    b as char
                )));
            }
            // 12 groups of 5 bits fill 60 bits; a 13th would shift past the i64 (and, with
            // overflow checks, panic)
            if k >= 12 {
                return Err(Error::Usage(format!("RLE value too long at byte {p}")));
            }
            let c = i64::from(b - 48);
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let m = counts.len();
        if m > 2 {
            x += i64::from(counts[m - 2]);
        }
        let v = u32::try_from(x).map_err(|_| Error::Usage(format!("RLE run {m} is out of range ({x})")))?;
        counts.push(v);
    }
    Ok(counts)
}

impl Rle {
    /// Encodes a mask (nonzero = foreground).
    pub fn encode(mask: &GrayImage) -> Rle {
        Rle {
            size: [mask.height(), mask.width()],
            counts: counts_to_string(&mask_to_counts(mask)),
        }
    }

    /// Decodes to a 0/1 mask.
    pub fn decode(&self) -> Result<GrayImage> {
        counts_to_mask(&string_to_counts(&self.counts)?, self.size[0], self.size[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(m: &GrayImage) -> Vec<Vec<u8>> {
        m.rows().map(|r| r.map(|p| p.0[0]).collect()).collect()
    }

    #[test]
    fn overlong_values_are_errors_not_shift_overflows() {
        // 13 continuation groups: used to shift by 65 bits
        let s = "o".repeat(12) + "0";
        assert!(string_to_counts(&s).is_err());
        assert!(string_to_counts(&s).unwrap_err().to_string().contains("too long"));
        // 12 groups still parse, and a value beyond u32 is reported as such
        let s = "o".repeat(11) + "0";
        assert!(string_to_counts(&s)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        let huge = Rle {
            size: [65535, 65535],
            counts: "0".into(),
        };
        assert!(huge.decode().unwrap_err().to_string().contains("larger"));
    }

    #[test]
    fn reference_vectors() {
        let r = Rle {
            size: [4, 5],
            counts: "5220003".into(),
        };
        assert_eq!(string_to_counts(&r.counts).unwrap(), vec![5, 2, 2, 2, 2, 2, 5]);
        let m = r.decode().unwrap();
        assert_eq!(
            rows(&m),
            vec![
                vec![0, 0, 0, 0, 0],
                vec![0, 1, 1, 1, 0],
                vec![0, 1, 1, 1, 0],
                vec![0, 0, 0, 0, 0]
            ]
        );
        assert_eq!(Rle::encode(&m), r);

        let r = Rle {
            size: [6, 6],
            counts: "01=1G09O".into(),
        };
        let m = r.decode().unwrap();
        assert_eq!(
            rows(&m),
            vec![
                vec![1, 0, 0, 0, 0, 0],
                vec![0, 0, 0, 0, 0, 0],
                vec![0, 0, 1, 1, 0, 0],
                vec![0, 0, 1, 1, 0, 0],
                vec![0, 0, 0, 0, 0, 0],
                vec![0, 0, 0, 0, 0, 1],
            ]
        );
        assert_eq!(Rle::encode(&m), r);

        let counts = format!("Tkm2X6h8{}ljU5", "0".repeat(597));
        assert_eq!(counts.len(), 609);
        let r = Rle {
            size: [480, 854],
            counts,
        };
        let m = r.decode().unwrap();
        let mut expect = GrayImage::new(854, 480);
        for y in 100..300 {
            for x in 200..500 {
                expect.put_pixel(x, y, image::Luma([1]));
            }
        }
        assert_eq!(m, expect);
        assert_eq!(m.as_raw().iter().filter(|&&v| v == 1).count(), 60_000);
        assert_eq!(Rle::encode(&m), r);
    }

    #[test]
    fn empty_and_full() {
        let e = GrayImage::new(3, 2);
        assert_eq!(Rle::encode(&e).decode().unwrap(), e);
        let f = GrayImage::from_pixel(3, 2, image::Luma([1]));
        assert_eq!(mask_to_counts(&f), vec![0, 6]);
        assert_eq!(Rle::encode(&f).decode().unwrap(), f);
    }

    #[test]
    fn rejects_garbage() {
        assert!(string_to_counts("5 2").is_err());
        assert!(string_to_counts("\u{7f}").is_err());
        assert!(Rle {
            size: [2, 2],
            counts: "5".into()
        }
        .decode()
        .is_err());
        assert!(string_to_counts("o").is_err()); // continuation bit with nothing after
    }
}
