//! bf16 matrix products on Intel AMX tiles (Sapphire Rapids and later): `x · wᵀ (+ bias)` with
//! f32 accumulators rounded once to bf16 — the arithmetic of PyTorch's bf16 `nn.Linear` on the
//! CPU (oneDNN), which candle 0.11 only reaches by widening both operands to f32 per call.
//!
//! Tiles: C in `tmm0..tmm3` (a 32 × 32 f32 block), two 16 × 32 bf16 row tiles of `x` in
//! `tmm4`/`tmm5`, two 16-pair × 16-column tiles of `w` in `tmm6`/`tmm7`. `x` is read in place;
//! `w` is repacked per call, one L2-sized column group per task, into the pair-interleaved
//! layout `tdpbf16ps` reads. Used only after CPUID reports AMX and Linux grants the tile data
//! permission (`arch_prctl`); `VIDEOLISA_AMX=0` turns it off.

use half::bf16;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Columns of `x` (k values) one tile row holds.
const TILE_K: usize = 32;
/// Rows (of `x`) and columns (of the output) one tile holds.
const TILE_MN: usize = 16;
/// Rows and columns of the output block one kernel call computes.
const BLOCK: usize = 2 * TILE_MN;
/// Bytes of packed `w` one task keeps in L2 across all row blocks.
const GROUP_BYTES: usize = 1 << 20;

/// Whether this process can run the AMX kernel (checked once).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var("VIDEOLISA_AMX").map_or(true, |v| v != "0") && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // CPUID exists on every x86_64 CPU; leaf 7 is read only when reported.
    if __get_cpuid_max(0).0 < 7 {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    let (amx_bf16, amx_tile) = (leaf7.edx >> 22 & 1 == 1, leaf7.edx >> 24 & 1 == 1);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; it fails cleanly on older kernels.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `out[m, n] = round_bf16(Σ_k x[m, k] · w[n, k] + bias[n])` for row-major `x` (`m × k`) and
/// `w` (`n × k`), accumulated in f32. Call only when [`available`] is true.
pub fn linear(x: &[bf16], w: &[bf16], bias: Option<&[f32]>, (m, n, k): (usize, usize, usize)) -> Vec<bf16> {
    assert!(available(), "AMX kernel called without AMX");
    assert_eq!((x.len(), w.len()), (m * k, n * k), "operand sizes");
    assert!(bias.is_none_or(|b| b.len() == n), "bias size");
    let mut out = vec![bf16::ZERO; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let kp = k.div_ceil(TILE_K) * TILE_K;
    let group_cols = (GROUP_BYTES / (2 * kp)).max(1).div_ceil(BLOCK) * BLOCK;
    let dst = SendPtr(out.as_mut_ptr());
    (0..n.div_ceil(group_cols)).into_par_iter().for_each(|g| {
        let cols = g * group_cols..((g + 1) * group_cols).min(n);
        let packed = pack_w(w, k, kp, cols.clone());
        let mut task = Task {
            x,
            k,
            kp,
            m,
            n,
            packed: &packed,
            bias,
            cols,
            dst,
        };
        // SAFETY: tiles are configured per task; each task writes only its own columns.
        unsafe { task.run() }
    });
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut bf16);
// SAFETY: tasks write disjoint column ranges of the output.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `w` rows `cols` (padded with zeros to whole blocks) in `tdpbf16ps` order: per 16 columns,
/// per 32 k, 16 rows of (16 columns × a k pair).
fn pack_w(w: &[bf16], k: usize, kp: usize, cols: std::ops::Range<usize>) -> Vec<u32> {
    let tiles = (cols.len()).div_ceil(BLOCK) * 2;
    let kb = kp / TILE_K;
    let mut p = vec![0u32; tiles * kb * TILE_MN * TILE_MN];
    for (t, dst) in p.chunks_exact_mut(kb * TILE_MN * TILE_MN).enumerate() {
        for c in 0..TILE_MN {
            let row = cols.start + t * TILE_MN + c;
            if row >= cols.end {
                break;
            }
            let src = &w[row * k..(row + 1) * k];
            for (pair, v) in src.chunks(2).enumerate() {
                let lo = v[0].to_bits() as u32;
                let hi = v.get(1).map_or(0, |h| h.to_bits() as u32);
                dst[(pair / TILE_MN) * TILE_MN * TILE_MN + (pair % TILE_MN) * TILE_MN + c] = lo | hi << 16;
            }
        }
    }
    p
}

/// One column group's share of [`linear`].
struct Task<'a> {
    x: &'a [bf16],
    k: usize,
    kp: usize,
    m: usize,
    n: usize,
    packed: &'a [u32],
    bias: Option<&'a [f32]>,
    cols: std::ops::Range<usize>,
    dst: SendPtr,
}

impl Task<'_> {
    /// All row blocks against this group's packed columns.
    unsafe fn run(&mut self) {
        let cfg = TileConfig::all_full();
        tile_load_config(&cfg);
        let mut padded = Vec::new();
        let mut c = [0f32; BLOCK * BLOCK];
        let kb = self.kp / TILE_K;
        for r0 in (0..self.m).step_by(BLOCK) {
            let rows = BLOCK.min(self.m - r0);
            let a = if rows == BLOCK && self.k == self.kp {
                self.x[r0 * self.k..].as_ptr()
            } else {
                self.pad_rows(&mut padded, r0, rows)
            };
            for b in 0..self.cols.len().div_ceil(BLOCK) {
                let b0 = self.packed.as_ptr().add(2 * b * kb * TILE_MN * TILE_MN);
                let b1 = b0.add(kb * TILE_MN * TILE_MN);
                block_32x32(a.cast(), 2 * self.kp, b0.cast(), b1.cast(), kb, c.as_mut_ptr());
                self.store(&c, r0, rows, self.cols.start + b * BLOCK);
            }
        }
        tile_release();
    }

    /// Rows `r0..r0 + rows` of `x` copied into a zeroed `BLOCK × kp` buffer.
    fn pad_rows(&self, buf: &mut Vec<bf16>, r0: usize, rows: usize) -> *const bf16 {
        buf.clear();
        buf.resize(BLOCK * self.kp, bf16::ZERO);
        for r in 0..rows {
            let src = &self.x[(r0 + r) * self.k..(r0 + r + 1) * self.k];
            buf[r * self.kp..r * self.kp + self.k].copy_from_slice(src);
        }
        buf.as_ptr()
    }

    /// The valid part of one f32 block, plus bias, rounded into the output.
    unsafe fn store(&self, c: &[f32; BLOCK * BLOCK], r0: usize, rows: usize, c0: usize) {
        let cols = BLOCK.min(self.cols.end - c0);
        for r in 0..rows {
            let out = self.dst.0.add((r0 + r) * self.n + c0);
            for j in 0..cols {
                let v = c[r * BLOCK + j] + self.bias.map_or(0.0, |b| b[c0 + j]);
                *out.add(j) = bf16::from_f32(v);
            }
        }
    }
}

/// The 64-byte tile configuration (palette 1): every tile 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn all_full() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = TILE_MN as u8;
        }
        TileConfig(c)
    }
}

unsafe fn tile_load_config(cfg: &TileConfig) {
    std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
}

unsafe fn tile_release() {
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// `c (32 × 32 f32, row-major) = a · b` over `kb` steps of 32 k: `a` two 16-row tiles of bf16
/// rows `lda` bytes apart, `b0`/`b1` the packed 16-column tiles (1 KiB per step).
unsafe fn block_32x32(a: *const u8, lda: usize, b0: *const u8, b1: *const u8, kb: usize, c: *mut f32) {
    let a2 = a.add(TILE_MN * lda);
    let c = c.cast::<u8>();
    std::arch::asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        "2:",
        "tileloadd tmm4, [{a} + {lda} * 1]",
        "tileloadd tmm6, [{b0} + {s64} * 1]",
        "tileloadd tmm7, [{b1} + {s64} * 1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tileloadd tmm5, [{a2} + {lda} * 1]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, 64",
        "add {a2}, 64",
        "add {b0}, 1024",
        "add {b1}, 1024",
        "dec {kb}",
        "jnz 2b",
        "tilestored [{c0} + {s128} * 1], tmm0",
        "tilestored [{c1} + {s128} * 1], tmm1",
        "tilestored [{c2} + {s128} * 1], tmm2",
        "tilestored [{c3} + {s128} * 1], tmm3",
        a = inout(reg) a => _,
        a2 = inout(reg) a2 => _,
        b0 = inout(reg) b0 => _,
        b1 = inout(reg) b1 => _,
        kb = inout(reg) kb => _,
        lda = in(reg) lda,
        s64 = in(reg) 64usize,
        s128 = in(reg) 128usize,
        c0 = in(reg) c,
        c1 = in(reg) c.add(64),
        c2 = in(reg) c.add(16 * 128),
        c3 = in(reg) c.add(16 * 128 + 64),
        options(nostack),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::bf16_values as values;

    fn reference(x: &[bf16], w: &[bf16], bias: Option<&[f32]>, (m, n, k): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|t| x[i * k + t].to_f64() * w[j * k + t].to_f64())
                    .sum();
                out[i * n + j] = s + bias.map_or(0.0, |b| b[j] as f64);
            }
        }
        out
    }

    /// Every tail (rows, columns, k) and a bias against an f64 sum of the same bf16 inputs:
    /// within one bf16 rounding of the result plus f32 accumulation error.
    #[test]
    fn matches_f64_sums_on_every_tail() {
        if !available() {
            eprintln!("no AMX on this CPU: kernel not run (the candle path is used instead)");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (32, 32, 32),
            (45, 70, 100),
            (100, 33, 64),
            (7, 300, 3072),
        ] {
            let (x, w) = (values(m * k, 1), values(n * k, 2));
            let bias: Vec<f32> = values(n, 3).iter().map(|v| v.to_f32()).collect();
            let got = linear(&x, &w, Some(&bias), (m, n, k));
            let want = reference(&x, &w, Some(&bias), (m, n, k));
            let mut worst = 0f64;
            for (g, w) in got.iter().zip(&want) {
                let err = (g.to_f64() - w).abs() / (w.abs() + k as f64 * 1e-6).max(1e-3);
                worst = worst.max(err);
            }
            println!("{m}×{n}×{k}: max relative error {worst:.2e}");
            assert!(worst <= 2f64.powi(-8) + 1e-5, "{m}×{n}×{k}: {worst}");
        }
    }
}
