//! 3×3 stride-1 convolutions with one pixel of zero padding (XMem's ResNet blocks, fuser and
//! decoder, which prepare their filters at load) by Winograd's minimal filtering F(2×2, 3×3).
//! Each 2×2 block of output pixels reads a 4×4 input tile; after the tile and the filter are transformed, its 36 products per
//! input channel become 16 elementwise ones (2.25× less arithmetic), i.e. 16 independent matrix
//! products `U[ξν] [C_out, C_in] · V[ξν] [C_in, tiles] = M[ξν] [C_out, tiles]`, and the
//! output transform sums each block out of the 16. The transforms only add, subtract and
//! halve: f32 end to end, with a rounding error of the order of the summation's.

use super::OutPtr;
use crate::model::{matmul_into, Strided};
use rayon::prelude::*;

/// Elements of `V` plus `M` per band of tile rows (128 MB of f32: one band per image at XMem's
/// sizes; the bound keeps very large inputs from taking memory without limit).
const BAND_ELEMENTS: usize = 1 << 25;

/// The `co` planes `[co, h, w]` of one image `[c, h, w]` convolved with the filters `u`
/// (see [`filters`]), into `dst` (written once each, bias not added).
///
/// # Safety
/// `dst` must be valid for `co · h · w` writes and not be accessed by anyone else meanwhile.
pub(super) unsafe fn conv3x3(img: &[f32], dims: (usize, usize, usize), u: &[f32], co: usize, dst: *mut f32) {
    conv3x3_in_bands(img, dims, u, co, dst, BAND_ELEMENTS)
}

/// [`conv3x3`] in bands of tile rows whose `V` and `M` hold about `band_elements` elements.
unsafe fn conv3x3_in_bands(
    img: &[f32],
    (c, h, w): (usize, usize, usize),
    u: &[f32],
    co: usize,
    dst: *mut f32,
    band_elements: usize,
) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let rows = (band_elements / (16 * (c + co) * tw)).clamp(1, th);
    let dst = OutPtr(dst);
    for ty0 in (0..th).step_by(rows) {
        let band = Band {
            c,
            h,
            w,
            tw,
            ty0,
            ty1: (ty0 + rows).min(th),
        };
        let v = band.inputs(img);
        let n = band.tiles();
        let mut m: Vec<f32> = Vec::with_capacity(16 * co * n);
        let mp = OutPtr(m.as_mut_ptr());
        // 16 products on all threads, each on one: their sizes are those of one band
        (0..16).into_par_iter().for_each(|k| {
            let dst = Strided {
                ptr: mp.at(k * co * n),
                row: n,
                col: 1,
            };
            let lhs = Strided {
                ptr: u[k * co * c..].as_ptr(),
                row: c,
                col: 1,
            };
            let rhs = Strided {
                ptr: v[k * c * n..].as_ptr(),
                row: n,
                col: 1,
            };
            // SAFETY: product k writes its own `co · n` elements of `m`'s capacity
            unsafe { matmul_into((co, n, c), dst, lhs, rhs, gemm::Parallelism::None) };
        });
        // SAFETY: the 16 products wrote every element
        m.set_len(16 * co * n);
        band.outputs(&m, co, &dst);
    }
}

/// `U[ξν][o][ch] = (G g G^T)[ξ][ν]` for the 3×3 filter `g` of output `o`, input channel `ch`
/// of a weight laid out `[co, 3, 3, c]` (see `patch_layout`), with
/// `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`.
pub(super) fn filters(wd: &[f32], co: usize, c: usize) -> Vec<f32> {
    let mut u: Vec<f32> = Vec::with_capacity(16 * co * c);
    let up = OutPtr(u.as_mut_ptr());
    let g3 = |a: f32, b: f32, d: f32| [a, (a + b + d) * 0.5, (a - b + d) * 0.5, d];
    (0..co).into_par_iter().for_each(|o| {
        let taps = &wd[o * 9 * c..(o + 1) * 9 * c];
        for ch in 0..c {
            let g = |ky: usize, kx: usize| taps[(ky * 3 + kx) * c + ch];
            // columns of G g, then rows of (G g) G^T
            let cols: [[f32; 4]; 3] = std::array::from_fn(|kx| g3(g(0, kx), g(1, kx), g(2, kx)));
            let rows: [[f32; 4]; 4] = std::array::from_fn(|xi| g3(cols[0][xi], cols[1][xi], cols[2][xi]));
            for (xi, row) in rows.iter().enumerate() {
                for (nu, &val) in row.iter().enumerate() {
                    // SAFETY: element (ξν, o, ch) is written by output o's task alone
                    unsafe { up.at(((xi * 4 + nu) * co + o) * c + ch).write(val) };
                }
            }
        }
    });
    // SAFETY: all 16 · co · c elements were written above
    unsafe { u.set_len(16 * co * c) };
    u
}

/// Tile rows `ty0..ty1` (of `tw` tiles each) of an image `[c, h, w]`.
struct Band {
    c: usize,
    h: usize,
    w: usize,
    tw: usize,
    ty0: usize,
    ty1: usize,
}

impl Band {
    fn tiles(&self) -> usize {
        (self.ty1 - self.ty0) * self.tw
    }

    /// `V[ξν][ch][tile] = (B^T d B)[ξ][ν]` for the 4×4 input tile `d` at rows `2ty − 1..`,
    /// columns `2tx − 1..` (zero outside the image), `B^T = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`.
    fn inputs(&self, img: &[f32]) -> Vec<f32> {
        let (c, h, w, tw) = (self.c, self.h, self.w, self.tw);
        let n = self.tiles();
        let mut v: Vec<f32> = Vec::with_capacity(16 * c * n);
        let vp = OutPtr(v.as_mut_ptr());
        // a padded row: column j holds input column j − 1, zeros around
        let len = 2 * tw + 2;
        (0..c).into_par_iter().for_each(|ch| {
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            let mut d = vec![0f32; 4 * len];
            let mut t = vec![0f32; 4 * len];
            for ty in self.ty0..self.ty1 {
                for (i, row) in d.chunks_exact_mut(len).enumerate() {
                    let iy = (2 * ty + i).wrapping_sub(1);
                    let inner = &mut row[1..=w];
                    if iy < h {
                        inner.copy_from_slice(&plane[iy * w..(iy + 1) * w]);
                    } else {
                        inner.fill(0.0);
                    }
                }
                // rows: B^T d
                let (d0, rest) = d.split_at(len);
                let (d1, rest) = rest.split_at(len);
                let (d2, d3) = rest.split_at(len);
                let (t0, rest) = t.split_at_mut(len);
                let (t1, rest) = rest.split_at_mut(len);
                let (t2, t3) = rest.split_at_mut(len);
                for j in 0..len {
                    t0[j] = d0[j] - d2[j];
                    t1[j] = d1[j] + d2[j];
                    t2[j] = d2[j] - d1[j];
                    t3[j] = d1[j] - d3[j];
                }
                // columns: (B^T d) B, into the 16 rows of V
                let base = (ty - self.ty0) * tw;
                for (xi, ti) in t.chunks_exact(len).enumerate() {
                    let at = |nu: usize| vp.at(((xi * 4 + nu) * c + ch) * n + base);
                    let (o0, o1, o2, o3) = (at(0), at(1), at(2), at(3));
                    for tx in 0..tw {
                        let q = &ti[2 * tx..2 * tx + 4];
                        // SAFETY: tile tx of this band row, channel ch: this task's alone
                        unsafe {
                            o0.add(tx).write(q[0] - q[2]);
                            o1.add(tx).write(q[1] + q[2]);
                            o2.add(tx).write(q[2] - q[1]);
                            o3.add(tx).write(q[1] - q[3]);
                        }
                    }
                }
            }
        });
        // SAFETY: every (ξν, channel, tile) element was written above
        unsafe { v.set_len(16 * c * n) };
        v
    }

    /// Output rows `2·ty0..2·ty1` of the `co` planes from `M[ξν][o][tile]`:
    /// `A^T m A` with `A^T = [1 1 1 0; 0 1 −1 −1]`, clipped to the image.
    fn outputs(&self, m: &[f32], co: usize, dst: &OutPtr) {
        let (h, w, tw, n) = (self.h, self.w, self.tw, self.tiles());
        let scratch = || vec![0f32; 6 * tw];
        (0..co).into_par_iter().for_each_init(scratch, |buf, o| {
            let (s, row) = buf.split_at_mut(4 * tw);
            for ty in self.ty0..self.ty1 {
                let base = (ty - self.ty0) * tw;
                let q = |k: usize| &m[(k * co + o) * n + base..][..tw];
                for dy in 0..2.min(h - 2 * ty) {
                    // row dy of A^T m, column j, for every tile of the row
                    for (j, sj) in s.chunks_exact_mut(tw).enumerate() {
                        let (a, b, c) = match dy {
                            0 => (q(j), q(4 + j), q(8 + j)),
                            _ => (q(4 + j), q(8 + j), q(12 + j)),
                        };
                        for (((v, &a), &b), &c) in sj.iter_mut().zip(a).zip(b).zip(c) {
                            *v = if dy == 0 { a + b + c } else { a - b - c };
                        }
                    }
                    // its two columns, interleaved into the output row
                    let (s0, rest) = s.split_at(tw);
                    let (s1, rest) = rest.split_at(tw);
                    let (s2, s3) = rest.split_at(tw);
                    for (tx, pair) in row.chunks_exact_mut(2).enumerate() {
                        pair[0] = s0[tx] + s1[tx] + s2[tx];
                        pair[1] = s1[tx] - s2[tx] - s3[tx];
                    }
                    // SAFETY: plane o is written by this task alone; `w ≤ 2·tw`
                    unsafe {
                        let out = dst.at((o * h + 2 * ty + dy) * w);
                        std::ptr::copy_nonoverlapping(row.as_ptr(), out, w);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn whole_images_and_bands_of_one_tile_row_equal_candle_conv2d() {
        let dev = Device::Cpu;
        // (C_in, C_out, H, W): one pixel, odd and even sides, a last tile row or column half
        // outside the image
        for (c, co, h, w) in [
            (3, 4, 1, 1),
            (4, 3, 2, 5),
            (5, 6, 7, 9),
            (2, 3, 8, 3),
            (16, 8, 6, 6),
        ] {
            let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (co, c, 3, 3), &dev).unwrap();
            let want = values(&x.conv2d(&wt, 1, 1, 1, 1).unwrap());
            let img = values(&x);
            let u = filters(&values(&wt.permute((0, 2, 3, 1)).unwrap()), co, c);
            for band in [1, usize::MAX] {
                let mut out = vec![f32::NAN; co * h * w];
                // SAFETY: `out` holds the co·h·w outputs
                unsafe { conv3x3_in_bands(&img, (c, h, w), &u, co, out.as_mut_ptr(), band) };
                let worst = out.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                println!("{:?}, band {band}: max difference {worst:.2e}", (c, co, h, w));
                assert!(worst < 1e-4, "{:?}, band {band}: {worst}", (c, co, h, w));
            }
        }
    }
}
