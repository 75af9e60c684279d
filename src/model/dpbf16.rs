//! bf16 matrix products with AVX-512 BF16's `vdpbf16ps` (AMD Zen 4 and later; Intel CPUs with
//! AMX take [`crate::model::amx`]): `x · wᵀ (+ bias)` with f32 accumulators rounded once to
//! bf16, the arithmetic of PyTorch's bf16 `nn.Linear` on such CPUs (oneDNN). candle 0.11 widens
//! both operands to f32 per call and runs its f32 kernel, at half this instruction's rate.
//!
//! Each `vdpbf16ps` adds, per output column (one f32 lane), the products of one pair of
//! consecutive k. Output columns are split into groups of [`GROUP`] (one task each, `w` packed
//! pair-interleaved per task); within a group, blocks of [`KC_PAIRS`] pairs keep the packed
//! `w` in L2, and a 6-row × 64-column kernel keeps its 24 accumulators in registers over a
//! block, continuing them across blocks through an f32 buffer (so every sum runs in k order,
//! whatever the blocking).

use half::bf16;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows of `x` per kernel call.
const MR: usize = 6;
/// Output columns per kernel call (four 16-lane registers).
const NR: usize = 64;
/// Output columns per task.
const GROUP: usize = 512;
/// k pairs per block (packed `w` of a group: 512 KiB).
const KC_PAIRS: usize = 256;

/// Whether this CPU has AVX-512 BF16 (checked once); `VIDEOLISA_DPBF16=0` turns it off.
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var("VIDEOLISA_DPBF16").map_or(true, |v| v != "0") && detect())
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// `out[m, n] = round_bf16(Σ_k x[m, k] · w[n, k] + bias[n])` for row-major `x` (`m × k`) and
/// `w` (`n × k`), accumulated in f32 in k order. Call only when [`available`] is true; `k`
/// must be even (the kernel reads k in pairs).
pub fn linear(x: &[bf16], w: &[bf16], bias: Option<&[f32]>, (m, n, k): (usize, usize, usize)) -> Vec<bf16> {
    assert!(available(), "AVX-512 BF16 kernel called without AVX-512 BF16");
    assert_eq!((x.len(), w.len()), (m * k, n * k), "operand sizes");
    assert!(k.is_multiple_of(2), "k must be even, got {k}");
    assert!(bias.is_none_or(|b| b.len() == n), "bias size");
    let mut out = vec![bf16::ZERO; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let dst = SendPtr(out.as_mut_ptr());
    (0..n.div_ceil(GROUP)).into_par_iter().for_each(|g| {
        let cols = g * GROUP..((g + 1) * GROUP).min(n);
        let task = Task {
            x,
            pairs: k / 2,
            m,
            n,
            packed: pack_w(w, k, cols.clone()),
            bias,
            cols,
        };
        // SAFETY: the CPU has AVX-512F and BF16 (asserted above); each task writes only its
        // own columns of `out`.
        unsafe { task.run(dst) }
    });
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut bf16);
// SAFETY: tasks write disjoint column ranges of the output.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `w` rows `cols` (zero columns up to a whole `NR`) pair-interleaved: per `NR` columns, per k
/// pair, `NR` words of (w[c, 2t] | w[c, 2t + 1] << 16).
fn pack_w(w: &[bf16], k: usize, cols: std::ops::Range<usize>) -> Vec<u32> {
    let pairs = k / 2;
    let panels = cols.len().div_ceil(NR);
    let mut p = vec![0u32; panels * pairs * NR];
    for (i, row) in cols.enumerate() {
        let panel = &mut p[(i / NR) * pairs * NR..];
        let src = &w[row * k..(row + 1) * k];
        for (t, v) in src.chunks_exact(2).enumerate() {
            panel[t * NR + i % NR] = v[0].to_bits() as u32 | (v[1].to_bits() as u32) << 16;
        }
    }
    p
}

/// One column group's share of [`linear`].
struct Task<'a> {
    x: &'a [bf16],
    pairs: usize,
    m: usize,
    n: usize,
    packed: Vec<u32>,
    bias: Option<&'a [f32]>,
    cols: std::ops::Range<usize>,
}

impl Task<'_> {
    /// Every k block, row block and panel; then the sums rounded into `dst`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn run(&self, dst: SendPtr) {
        let panels = self.cols.len().div_ceil(NR);
        let ldc = panels * NR;
        let mut c = vec![0f32; self.m * ldc];
        let x = self.x.as_ptr().cast::<u32>();
        for t0 in (0..self.pairs).step_by(KC_PAIRS) {
            let len = KC_PAIRS.min(self.pairs - t0);
            for r0 in (0..self.m).step_by(MR) {
                let a = x.add(r0 * self.pairs + t0);
                for p in 0..panels {
                    let b = self.packed.as_ptr().add((p * self.pairs + t0) * NR);
                    let cp = c.as_mut_ptr().add(r0 * ldc + p * NR);
                    let k = Kernel {
                        a,
                        lda: self.pairs,
                        b,
                        pairs: len,
                        c: cp,
                        ldc,
                        first: t0 == 0,
                    };
                    match MR.min(self.m - r0) {
                        6 => k.run::<6>(),
                        5 => k.run::<5>(),
                        4 => k.run::<4>(),
                        3 => k.run::<3>(),
                        2 => k.run::<2>(),
                        _ => k.run::<1>(),
                    }
                }
            }
        }
        self.store(&c, ldc, dst);
    }

    /// The group's sums, plus bias, rounded into the output.
    fn store(&self, c: &[f32], ldc: usize, dst: SendPtr) {
        for (r, sums) in c.chunks_exact(ldc).enumerate() {
            for (j, col) in self.cols.clone().enumerate() {
                let v = sums[j] + self.bias.map_or(0.0, |b| b[col]);
                // SAFETY: row r < m, col < n: inside `out`, and only this task writes `col`
                unsafe { *dst.0.add(r * self.n + col) = bf16::from_f32(v) };
            }
        }
    }
}

/// One kernel call: `R` rows of `x` (k pairs as words, `lda` words apart) against one packed
/// panel over `pairs` pairs, into `R × NR` f32 sums `ldc` apart (continued unless `first`).
struct Kernel {
    a: *const u32,
    lda: usize,
    b: *const u32,
    pairs: usize,
    c: *mut f32,
    ldc: usize,
    first: bool,
}

impl Kernel {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn run<const R: usize>(&self) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); NR / 16]; R];
        if !self.first {
            for (r, row) in acc.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(self.c.add(r * self.ldc + 16 * j));
                }
            }
        }
        for t in 0..self.pairs {
            let bp = self.b.add(t * NR);
            let b: [__m512bh; NR / 16] =
                std::array::from_fn(|j| std::mem::transmute(_mm512_loadu_si512(bp.add(16 * j).cast())));
            for (r, row) in acc.iter_mut().enumerate() {
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                    self.a.add(r * self.lda + t).read_unaligned() as i32,
                ));
                for (v, &bj) in row.iter_mut().zip(&b) {
                    *v = _mm512_dpbf16_ps(*v, a, bj);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                _mm512_storeu_ps(self.c.add(r * self.ldc + 16 * j), *v);
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run<const R: usize>(&self) {
        unreachable!("AVX-512 BF16 on a non-x86 CPU")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::bf16_values as values;

    /// Every tail (rows, columns, k blocks) and a bias: each output is the f32 sum of the
    /// exact products taken pair by pair in k order, plus the bias, rounded once — as the
    /// instruction defines it (the odd product of a pair first, then the even one).
    #[test]
    fn sums_pairs_in_k_order_on_every_tail() {
        if !available() {
            eprintln!("no AVX-512 BF16 on this CPU: kernel not run (the candle path is used instead)");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 2),
            (6, 64, 512),
            (7, 65, 514),
            (13, 600, 1030),
            (2, 513, 3072),
            (0, 5, 4),
            (3, 5, 0),
        ] {
            let (x, w) = (values(m * k, 1), values(n * k, 2));
            let bias: Vec<f32> = values(n, 3).iter().map(|v| v.to_f32()).collect();
            let got = linear(&x, &w, Some(&bias), (m, n, k));
            let mut differ = 0;
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f32;
                    for t in (0..k).step_by(2) {
                        s += x[i * k + t + 1].to_f32() * w[j * k + t + 1].to_f32();
                        s += x[i * k + t].to_f32() * w[j * k + t].to_f32();
                    }
                    let want = bf16::from_f32(s + bias[j]);
                    differ += usize::from(got[i * n + j] != want);
                }
            }
            println!(
                "{m}×{n}×{k}: {differ} of {} outputs differ from the pairwise f32 sums",
                m * n
            );
            assert_eq!(differ, 0, "{m}×{n}×{k}");
        }
    }
}
