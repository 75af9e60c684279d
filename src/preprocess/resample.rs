//! Pillow-compatible resampling of 8-bit images (`Image.resize` with BILINEAR or BICUBIC).
//!
//! Our own port of the algorithm Pillow documents for its `Resample.c`: per output pixel a
//! filter window whose support widens with the downscale factor (antialiasing), weights
//! normalised in f64, turned into 22-bit fixed point, a horizontal pass then a vertical pass,
//! each rounding with a half-unit bias and clipping to 0..=255. Bit-exact with Pillow.

/// Fractional bits of the fixed-point weights (32 bits − 8 bits of pixel − 2 bits of headroom).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A resampling filter of Pillow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1 (`Image.BILINEAR`).
    Bilinear,
    /// Cubic convolution with a = −0.5, support 2 (`Image.BICUBIC`).
    Bicubic,
}

impl Filter {
    /// Half-width of the filter at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    /// Filter weight at distance `x`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point weights of one axis: for output index `i`, input pixels
/// `first[i] .. first[i] + count[i]` weighted by `weights[i * ksize ..]`.
struct AxisCoeffs {
    ksize: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
}

impl AxisCoeffs {
    /// Weights mapping `in_size` pixels onto `out_size` pixels over the whole axis.
    fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut first = Vec::with_capacity(out_size);
        let mut count = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut window = vec![0f64; ksize];
        let inv = 1.0 / filterscale;
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero; negative starts are clamped to 0 anyway
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut total = 0.0;
            for (x, w) in window.iter_mut().enumerate().take(n) {
                *w = filter.weight(((x + xmin) as f64 - center + 0.5) * inv);
                total += *w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for x in 0..n {
                let w = if total != 0.0 {
                    window[x] / total
                } else {
                    window[x]
                };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                row[x] = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            first.push(xmin);
            count.push(n);
        }
        AxisCoeffs {
            ksize,
            first,
            count,
            weights,
        }
    }

    /// First and one-past-last input index used by any output pixel.
    fn span(&self) -> (usize, usize) {
        let lo = self.first.iter().copied().min().unwrap_or(0);
        let hi = self
            .first
            .iter()
            .zip(&self.count)
            .map(|(f, c)| f + c)
            .max()
            .unwrap_or(0);
        (lo, hi)
    }
}

/// Rounds a fixed-point accumulator to a clipped 8-bit value.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved 8-bit image of `channels` channels from `width`×`height`
/// to `out_w`×`out_h` exactly as Pillow's `Image.resize(size, filter)`.
///
/// Panics if `src.len() != width * height * channels` or a size is zero.
pub fn resize(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(src.len(), width * height * channels, "buffer size mismatch");
    assert!(
        width > 0 && height > 0 && out_w > 0 && out_h > 0,
        "zero-sized image"
    );
    if width == out_w && height == out_h {
        return src.to_vec();
    }
    let need_h = width != out_w;
    let need_v = height != out_h;
    let horiz = AxisCoeffs::new(width, out_w, filter);
    let vert = AxisCoeffs::new(height, out_h, filter);

    // Horizontal pass over the rows the vertical pass will read.
    let (row_lo, row_hi) = if need_v { vert.span() } else { (0, height) };
    let (tmp, tmp_w, tmp_row0) = if need_h {
        let rows = row_hi - row_lo;
        let mut tmp = vec![0u8; rows * out_w * channels];
        let half = 1i32 << (PRECISION_BITS - 1);
        for r in 0..rows {
            let in_row = &src[(r + row_lo) * width * channels..(r + row_lo + 1) * width * channels];
            let out_row = &mut tmp[r * out_w * channels..(r + 1) * out_w * channels];
            for xx in 0..out_w {
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + horiz.count[xx]];
                let x0 = horiz.first[xx];
                let window = &in_row[x0 * channels..(x0 + k.len()) * channels];
                if channels == 3 {
                    // the common case: one pass with three accumulators, like Pillow's RGB loop
                    let (mut a0, mut a1, mut a2) = (half, half, half);
                    for (px, &w) in window.chunks_exact(3).zip(k) {
                        a0 += i32::from(px[0]) * w;
                        a1 += i32::from(px[1]) * w;
                        a2 += i32::from(px[2]) * w;
                    }
                    out_row[xx * 3] = clip8(a0);
                    out_row[xx * 3 + 1] = clip8(a1);
                    out_row[xx * 3 + 2] = clip8(a2);
                } else {
                    for c in 0..channels {
                        let mut acc = half;
                        for (px, &w) in window.chunks_exact(channels).zip(k) {
                            acc += i32::from(px[c]) * w;
                        }
                        out_row[xx * channels + c] = clip8(acc);
                    }
                }
            }
        }
        (tmp, out_w, row_lo)
    } else {
        (src.to_vec(), width, 0)
    };
    if !need_v {
        return tmp;
    }

    let mut out = vec![0u8; out_h * tmp_w * channels];
    let half = 1i32 << (PRECISION_BITS - 1);
    let stride = tmp_w * channels;
    let mut acc = vec![0i32; stride];
    for yy in 0..out_h {
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + vert.count[yy]];
        let y0 = vert.first[yy] - tmp_row0;
        acc.iter_mut().for_each(|a| *a = half);
        for (i, &w) in k.iter().enumerate() {
            let row = &tmp[(y0 + i) * stride..(y0 + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_same_size() {
        let src: Vec<u8> = (0..48).map(|v| v as u8).collect();
        assert_eq!(resize(&src, 4, 4, 3, 4, 4, Filter::Bicubic), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 13 * 7 * 3];
        for f in [Filter::Bilinear, Filter::Bicubic] {
            for (w, h) in [(1, 1), (5, 9), (40, 3), (26, 14)] {
                let out = resize(&src, 13, 7, 3, w, h, f);
                assert!(out.iter().all(|&v| v == 77), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for f in [Filter::Bilinear, Filter::Bicubic] {
            let c = AxisCoeffs::new(100, 37, f);
            for i in 0..37 {
                let s: i32 = c.weights[i * c.ksize..i * c.ksize + c.count[i]].iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= c.count[i] as i32, "{s}");
            }
        }
    }
}
