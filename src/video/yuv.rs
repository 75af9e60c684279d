//! YUV 4:2:0 → RGB exactly as OpenCV's `VideoCapture` hands H.264 frames over: libswscale's
//! unscaled YUV→BGR24 converter in its x86 SIMD form (the one OpenCV's FFmpeg runs):
//! chroma taken from the nearest sample (no interpolation), 13-bit fixed-point coefficients
//! applied with `pmulhw` (products shifted right by 16, rounding toward −∞), then saturated to
//! u8. Coefficients follow the stream's matrix (BT.601 when unspecified) and range (limited or
//! full), as FFmpeg's `ff_yuv2rgb_coeffs` table and `ff_yuv2rgb_c_init_tables` derive them.
//! Measured against `cv2.VideoCapture` (OpenCV 5.0 and 4.10): identical on every pixel of the
//! test clips; OpenCV 4.x ignores a BT.709 flag and converts with BT.601 (see README).

/// Fixed-point coefficients of one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct YuvToRgb {
    y_coeff: i32,
    v2r: i32,
    u2g: i32,
    v2g: i32,
    u2b: i32,
    y_offset: i32,
}

/// `(crv, cbu, cgu, cgv)` in 16.16 for an H.264 `matrix_coefficients` value (FFmpeg's table,
/// indexed by the same numbers; unknown and YCgCo fall back to BT.601 as `sws_getCoefficients`).
fn inverse_table(matrix: u8) -> [i64; 4] {
    const BT709: [i64; 4] = [117489, 138438, 13975, 34925];
    const BT601: [i64; 4] = [104597, 132201, 25675, 53279];
    match matrix {
        0 | 1 => BT709,
        4 => [104448, 132798, 24759, 53109],
        7 => [117579, 136230, 16907, 35559],
        9 | 10 => [110013, 140363, 12277, 42626],
        _ => BT601,
    }
}

/// libswscale's `roundToInt16`: a 16.16 value times 2^13, rounded to the nearest integer by
/// adding half and shifting (toward −∞).
fn round_to_i16(x: i64) -> i32 {
    ((x + (1 << 15)) >> 16).clamp(-0x7FFF, 0x7FFF) as i32
}

impl YuvToRgb {
    /// The conversion for a stream's `matrix_coefficients` and `video_full_range_flag`.
    pub(crate) fn new(matrix: u8, full_range: bool) -> Self {
        let [mut crv, mut cbu, cgu, cgv] = inverse_table(matrix);
        let (mut cgu, mut cgv) = (-cgu, -cgv);
        let mut cy: i64 = 1 << 16;
        if full_range {
            crv = crv * 224 / 255;
            cbu = cbu * 224 / 255;
            cgu = cgu * 224 / 255;
            cgv = cgv * 224 / 255;
        } else {
            cy = cy * 255 / 219;
        }
        YuvToRgb {
            y_coeff: round_to_i16(cy << 13),
            v2r: round_to_i16(crv << 13),
            u2g: round_to_i16(cgu << 13),
            v2g: round_to_i16(cgv << 13),
            u2b: round_to_i16(cbu << 13),
            y_offset: if full_range { 0 } else { 16 },
        }
    }

    /// Converts one 4:2:0 picture: planes with their strides, `width`×`height` luma samples,
    /// into packed RGB (`width·height·3` bytes).
    pub(crate) fn convert(&self, planes: [(&[u8], usize); 3], width: usize, height: usize, rgb: &mut [u8]) {
        self.convert_rows(planes, 2, width, height, rgb);
    }

    /// [`YuvToRgb::convert`] for chroma halved horizontally and shared by `chroma_rows` luma
    /// rows (2: 4:2:0, 1: 4:2:2). Each `pmulhw` product depends on one sample only: a row's
    /// luma terms and a chroma row's terms are computed once each, in loops the compiler
    /// vectorises, then summed and saturated two pixels (one chroma sample) at a time.
    pub(crate) fn convert_rows(
        &self,
        planes: [(&[u8], usize); 3],
        chroma_rows: usize,
        width: usize,
        height: usize,
        rgb: &mut [u8],
    ) {
        let [(y, ys), (u, us), (v, vs)] = planes;
        let cw = width.div_ceil(2);
        let mul = |a: i32, c: i32| ((a * c) >> 16) as i16;
        let mut luma = vec![0i16; 2 * cw];
        let (mut cr, mut cg, mut cb) = (vec![0i16; cw], vec![0i16; cw], vec![0i16; cw]);
        let clip = |x: i16| x.clamp(0, 255) as u8;
        for row in 0..height {
            for (l, &s) in luma.iter_mut().zip(&y[row * ys..row * ys + width]) {
                *l = mul((i32::from(s) - self.y_offset) * 8, self.y_coeff);
            }
            if row % chroma_rows == 0 {
                let c = row / chroma_rows;
                let (ur, vr) = (&u[c * us..][..cw], &v[c * vs..][..cw]);
                for i in 0..cw {
                    let (su, sv) = ((i32::from(ur[i]) - 128) * 8, (i32::from(vr[i]) - 128) * 8);
                    cr[i] = mul(sv, self.v2r);
                    cg[i] = mul(su, self.u2g) + mul(sv, self.v2g);
                    cb[i] = mul(su, self.u2b);
                }
            }
            let dst = &mut rgb[row * width * 3..(row + 1) * width * 3];
            let pairs = width / 2;
            for (i, (p, l)) in dst[..pairs * 6]
                .chunks_exact_mut(6)
                .zip(luma.chunks_exact(2))
                .enumerate()
            {
                let (r, g, b) = (cr[i], cg[i], cb[i]);
                p.copy_from_slice(&[
                    clip(l[0] + r),
                    clip(l[0] + g),
                    clip(l[0] + b),
                    clip(l[1] + r),
                    clip(l[1] + g),
                    clip(l[1] + b),
                ]);
            }
            if width % 2 == 1 {
                let (l, i) = (luma[width - 1], cw - 1);
                dst[pairs * 6..].copy_from_slice(&[clip(l + cr[i]), clip(l + cg[i]), clip(l + cb[i])]);
            }
        }
    }

    /// Converts a 4:4:4 picture: libswscale's general scaler runs here, with more precision
    /// than the unscaled converter; BT.601 in floating point, rounded, comes within one level
    /// of it (tests/y4m_parity.rs).
    pub(crate) fn convert_444(
        planes: [(&[u8], usize); 3],
        full_range: bool,
        width: usize,
        height: usize,
        rgb: &mut [u8],
    ) {
        let [(y, ys), (u, us), (v, vs)] = planes;
        let (y0, ky, kc) = if full_range {
            (0.0, 1.0, 1.0)
        } else {
            (16.0, 255.0 / 219.0, 255.0 / 224.0)
        };
        let clip = |x: f32| x.round().clamp(0.0, 255.0) as u8;
        for row in 0..height {
            let rows = (
                &y[row * ys..][..width],
                &u[row * us..][..width],
                &v[row * vs..][..width],
            );
            let dst = &mut rgb[row * width * 3..(row + 1) * width * 3];
            for (i, p) in dst.chunks_exact_mut(3).enumerate() {
                let l = (f32::from(rows.0[i]) - y0) * ky;
                let (cb, cr) = (
                    (f32::from(rows.1[i]) - 128.0) * kc,
                    (f32::from(rows.2[i]) - 128.0) * kc,
                );
                p[0] = clip(l + 1.402 * cr);
                p[1] = clip(l - 0.344_136 * cb - 0.714_136 * cr);
                p[2] = clip(l + 1.772 * cb);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_as_swscale_derives_them() {
        let bt601 = YuvToRgb::new(2, false);
        assert_eq!(
            (bt601.y_coeff, bt601.v2r, bt601.u2b, bt601.u2g, bt601.v2g),
            (9539, 13075, 16525, -3209, -6660)
        );
        let bt709 = YuvToRgb::new(1, false);
        assert_eq!(
            (bt709.v2r, bt709.u2b, bt709.u2g, bt709.v2g),
            (14686, 17305, -1747, -4366)
        );
        let full = YuvToRgb::new(5, true);
        assert_eq!(
            (
                full.y_coeff,
                full.v2r,
                full.u2b,
                full.u2g,
                full.v2g,
                full.y_offset
            ),
            (8192, 11485, 14516, -2819, -5850, 0)
        );
    }

    #[test]
    fn grey_levels_truncate_like_pmulhw() {
        // measured on cv2.VideoCapture output: Y 21 → 5, 28 → 13, 228 → 246, 235 → 255
        let c = YuvToRgb::new(2, false);
        let mut out = [0u8; 12];
        let y = [21u8, 28, 228, 235];
        c.convert([(&y, 4), (&[128, 128], 2), (&[128, 128], 2)], 4, 1, &mut out);
        assert_eq!(out, [5, 5, 5, 13, 13, 13, 246, 246, 246, 255, 255, 255]);
    }
}
