//! The GELUs: erf GELU (SAM's blocks and mask path, the projector) and CLIP's quick GELU, in one
//! pass over f32 CPU tensors on all threads, with the loops compiled for AVX-512 or AVX2 when
//! the CPU has them (chosen at run time). candle maps `gelu_erf` one value at a time on one
//! thread through libm's `erff`: ~8 % of SAM encode's wall time, one core idle meanwhile.

use super::exp;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

/// `(erf(x/√2) + 1) · ½ · x`, bit for bit candle's f32 `gelu_erf` (the same rational
/// approximations in the same f32 operations, libm's `erff` itself where that needs `expf`).
/// Other dtypes, devices and layouts go through candle.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if is_host_f32(x) {
        return x.apply_op1_no_bwd(&Map::<Gelu>(std::marker::PhantomData));
    }
    x.gelu_erf()
}

/// `x · sigmoid(1.702 · x)` (CLIP's quick GELU) with the same operations as the tensor form;
/// on f32 CPU tensors `e^y` is the vectorised one of the attention softmax (glibc's `expf`
/// result nearly everywhere, at most half an ulp from the exact value).
pub fn quick_gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    if is_host_f32(x) {
        return x.apply_op1_no_bwd(&Map::<QuickGelu>(std::marker::PhantomData));
    }
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

fn is_host_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous()
}

/// An elementwise f32 map: `run` writes `out[i] = f(x[i])` for a chunk.
trait Kernel {
    const NAME: &'static str;
    fn run(x: &[f32], out: &mut [f32]);
}

/// `K` over a tensor in chunks on all threads.
struct Map<K>(std::marker::PhantomData<K>);

impl<K: Kernel> CustomOp1 for Map<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (a, b) = l.contiguous_offsets().expect("checked contiguous");
        let x = &s.as_slice::<f32>()?[a..b];
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(o, x)| dispatch::<K>(x, o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<K: Kernel>(x: &[f32], out: &mut [f32]) {
    K::run(x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(x: &[f32], out: &mut [f32]) {
    K::run(x, out)
}

fn dispatch<K: Kernel>(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F
            return unsafe { run_avx512::<K>(x, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA
            return unsafe { run_avx2::<K>(x, out) };
        }
    }
    K::run(x, out)
}

struct QuickGelu;

impl Kernel for QuickGelu {
    const NAME: &'static str = "quick-gelu";
    #[inline(always)]
    fn run(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v * (1.0 / (1.0 + exp::exp_f32(-(v * 1.702))));
        }
    }
}

struct Gelu;

impl Kernel for Gelu {
    const NAME: &'static str = "gelu-erf";
    #[inline(always)]
    fn run(x: &[f32], out: &mut [f32]) {
        const FRAC: f32 = std::f32::consts::FRAC_1_SQRT_2;
        // every lane through the forms below |u| = 1.25 (one division), then the lanes at or
        // above it gathered and put through `erfc`'s (five divisions, two `expf`), then the
        // lanes neither covers (∞, NaN) through libm
        for (o, &v) in out.iter_mut().zip(x) {
            *o = gelu_of(erf_below_erfc(v * FRAC), v);
        }
        const BLOCK: usize = 1024;
        let (mut at, mut vals, mut res) = ([0u16; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
        for (o, x) in out.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
            let mut n = 0;
            for (i, &v) in x.iter().enumerate() {
                if abs_bits(v * FRAC) >= ERFC_FROM {
                    (at[n], vals[n]) = (i as u16, v);
                    n += 1;
                }
            }
            for (r, &v) in res[..n].iter_mut().zip(&vals[..n]) {
                *r = gelu_of(erf_from_erfc(v * FRAC), v);
            }
            for (&i, &r) in at[..n].iter().zip(&res[..n]) {
                o[i as usize] = r;
            }
        }
        for (o, &v) in out.iter_mut().zip(x) {
            if !v.is_finite() {
                *o = gelu_of(candle_core::cpu::erf::erf_f32(v * FRAC), v);
            }
        }
    }
}

/// candle's f32 GELU given `erf(v/√2)`.
#[inline(always)]
fn gelu_of(erf: f32, v: f32) -> f32 {
    (erf + 1.) * 0.5 * v
}

#[inline(always)]
fn abs_bits(u: f32) -> u32 {
    u.to_bits() & 0x7fff_ffff
}

// libm's `erff` and `expf` (FreeBSD's s_erff.c and e_expf.c) for finite arguments: the same
// coefficients, operations and branch points (on the bits of |u|), so the same f32 results;
// every branch is computed and one selected per lane.
/// |u| from which `erff` is `1 − erfc(|u|)` through `expf` (1.25).
const ERFC_FROM: u32 = 0x3fa0_0000;
/// |u| from which `erfc` takes its second pair of rational functions (1/0.35).
const ERFC_FAR: u32 = 0x4036_db6d;
/// |u| from which `erff` is ±(1 − 2^-120).
const ONE_FROM: u32 = 0x40c0_0000;
/// |u| from which `erff` is `1 − erfc(|u|)` on `[0.84375, 1.25)`.
const MID_FROM: u32 = 0x3f58_0000;
/// |u| below which `erff(u) = u · (1 + efx)`, evaluated as `⅛ · (8u + 8·efx·u)` (2^-28).
const TINY_BELOW: u32 = 0x3180_0000;
const ERX: f32 = f32::from_bits(0x3f58_560b);
const EFX8: f32 = f32::from_bits(0x3f83_75d4);
const PP: [f32; 5] = [
    f32::from_bits(0x3e03_75d4),
    f32::from_bits(0xbea6_6beb),
    f32::from_bits(0xbce9_528f),
    f32::from_bits(0xbbbd_1489),
    f32::from_bits(0xb7c7_56b1),
];
const QQ: [f32; 5] = [
    f32::from_bits(0x3ecb_bbce),
    f32::from_bits(0x3d85_2a63),
    f32::from_bits(0x3ba6_8116),
    f32::from_bits(0x390a_ee49),
    f32::from_bits(0xb684_e21a),
];
const PA: [f32; 7] = [
    f32::from_bits(0xbb1a_cdc6),
    f32::from_bits(0x3ed4_6805),
    f32::from_bits(0xbebe_9208),
    f32::from_bits(0x3ea2_fe54),
    f32::from_bits(0xbde3_1cc2),
    f32::from_bits(0x3d11_51b3),
    f32::from_bits(0xbb0d_f9c0),
];
const QA: [f32; 6] = [
    f32::from_bits(0x3dd9_f331),
    f32::from_bits(0x3f0a_5785),
    f32::from_bits(0x3d93_1ae7),
    f32::from_bits(0x3e01_3307),
    f32::from_bits(0x3c5f_6e13),
    f32::from_bits(0x3c44_5aa3),
];

const RA: [f32; 8] = [
    f32::from_bits(0xbc21_a093),
    f32::from_bits(0xbf31_a0b7),
    f32::from_bits(0xc128_f022),
    f32::from_bits(0xc279_8057),
    f32::from_bits(0xc322_658c),
    f32::from_bits(0xc338_9ae7),
    f32::from_bits(0xc2a2_932b),
    f32::from_bits(0xc11d_077e),
];
const SA: [f32; 8] = [
    f32::from_bits(0x419d_35ce),
    f32::from_bits(0x4309_a863),
    f32::from_bits(0x43d9_486f),
    f32::from_bits(0x4421_58c9),
    f32::from_bits(0x43d6_810b),
    f32::from_bits(0x42d9_451f),
    f32::from_bits(0x40d2_3f7c),
    f32::from_bits(0xbd77_7f97),
];
const RB: [f32; 7] = [
    f32::from_bits(0xbc21_a092),
    f32::from_bits(0xbf4c_9dd4),
    f32::from_bits(0xc18e_104b),
    f32::from_bits(0xc320_a2ea),
    f32::from_bits(0xc41f_6441),
    f32::from_bits(0xc480_230b),
    f32::from_bits(0xc3f1_c275),
];
const SB: [f32; 7] = [
    f32::from_bits(0x41f2_b459),
    f32::from_bits(0x43a2_e571),
    f32::from_bits(0x44c0_1759),
    f32::from_bits(0x4547_fdbb),
    f32::from_bits(0x451f_90ce),
    f32::from_bits(0x43ed_43a7),
    f32::from_bits(0xc1b3_8712),
];
const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
const EXP_P1: f32 = f32::from_bits(0x3e2a_aa8f);
const EXP_P2: f32 = f32::from_bits(0xbb35_5215);

/// `c[0] + t·(c[1] + t·(…))`, nested from the last coefficient as written in s_erff.c.
#[inline(always)]
fn horner(c: &[f32], t: f32) -> f32 {
    c.iter().rev().fold(0.0, |acc, &k| k + t * acc)
}

/// `1 + t·(c[0] + t·(…))`.
#[inline(always)]
fn one_plus(c: &[f32], t: f32) -> f32 {
    1.0 + t * horner(c, t)
}

/// `erff(u)` for `|u| < 1.25`: `u·(1 + efx)` for tiny `u`, `u + u·P(u²)/Q(u²)` below 0.84375,
/// `±(1 − (1 − erx − P(|u| − 1)/Q(|u| − 1)))` above (the two quotients share one division).
#[inline(always)]
fn erf_below_erfc(u: f32) -> f32 {
    let ix = abs_bits(u);
    let tiny = 0.125 * (8.0 * u + EFX8 * u);
    let z = u * u;
    let s = f32::from_bits(ix) - 1.0;
    let (num, den) = if ix < MID_FROM {
        (horner(&PP, z), one_plus(&QQ, z))
    } else {
        (horner(&PA, s), one_plus(&QA, s))
    };
    let q = num / den;
    let near = u + u * q;
    let mid = with_sign_of(1.0 - (1.0 - ERX - q), u);
    if ix < TINY_BELOW {
        tiny
    } else if ix < MID_FROM {
        near
    } else {
        mid
    }
}

/// `erff(u)` for finite `|u| ≥ 1.25`: `±(1 − erfc(|u|))`, `±(1 − 2^-120)` from 6 on.
#[inline(always)]
fn erf_from_erfc(u: f32) -> f32 {
    let ix = abs_bits(u);
    let y = if ix < ONE_FROM {
        1.0 - erfc_tail(f32::from_bits(ix))
    } else {
        1.0 - f32::from_bits(0x0380_0000)
    };
    with_sign_of(y, u)
}

/// `y` (positive) with the sign of `u`.
#[inline(always)]
fn with_sign_of(y: f32, u: f32) -> f32 {
    f32::from_bits(y.to_bits() | (u.to_bits() & 0x8000_0000))
}

/// `erff(u)` for finite `u`.
#[cfg(test)]
fn erf_lanes(u: f32) -> f32 {
    if abs_bits(u) < ERFC_FROM {
        erf_below_erfc(u)
    } else {
        erf_from_erfc(u)
    }
}

/// `erfc(a)` for `1.25 ≤ a < 6`: `e^(−z² − 0.5625) · e^((z − a)(z + a) + R/S) / a` with `z` the
/// top 10 mantissa bits of `a` and `R/S` a rational function of `1/a²`.
#[inline(always)]
fn erfc_tail(a: f32) -> f32 {
    let s = 1.0 / (a * a);
    let (r, q) = if a.to_bits() < ERFC_FAR {
        (horner(&RA, s), one_plus(&SA, s))
    } else {
        (horner(&RB, s), one_plus(&SB, s))
    };
    let z = f32::from_bits(a.to_bits() & 0xffff_e000);
    expf_lanes(-z * z - 0.5625) * expf_lanes((z - a) * (z + a) + r / q) / a
}

/// libm's `expf(x)` for `−87 < x < 88` (no overflow, a normal result).
#[inline(always)]
fn expf_lanes(x: f32) -> f32 {
    let hx = abs_bits(x);
    let negative = x.to_bits() >> 31 == 1;
    let half = if negative { -0.5 } else { 0.5 };
    // k as a float: truncation toward zero as `as i32` does (a float → int conversion would
    // go one lane at a time; |k| < 128 here)
    let kf = if hx > 0x3f85_1592 {
        (INV_LN2 * x + half).trunc()
    } else if hx > 0x3eb1_7218 {
        if negative {
            -1.0
        } else {
            1.0
        }
    } else {
        0.0
    };
    // for k = 0 the reduction leaves x as it is (x − 0, 0 · ln2_lo = 0), as its own branch does
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (EXP_P1 + rr * EXP_P2);
    let y = 1. + (r * c / (2. - c) - lo + hi);
    // 2^k, exact for the normal results here: k + 127 in the exponent bits, k read from the
    // low mantissa bits of k + 1.5 · 2^23
    let k_bits = (kf + 12_582_912.0).to_bits().wrapping_sub(0x4b40_0000);
    let scaled = y * f32::from_bits(k_bits.wrapping_add(0x7f) << 23);
    if hx > 0x3900_0000 {
        scaled
    } else {
        1. + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every 509th f32 bit pattern (both signs, all exponents: zeros, subnormals, ∞, NaN), a
    /// dense sweep of the range activations live in, and a ragged length.
    fn sweep() -> Vec<f32> {
        let mut v: Vec<f32> = (0..=u32::MAX / 509).map(|i| f32::from_bits(i * 509)).collect();
        v.extend((-12 * 8192..=12 * 8192).map(|i| i as f32 / 8192.0));
        v.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1e-40,
        ]);
        // |x/√2| near 1.25 and 0.84375, where erff changes branch
        v.extend([1.767_767, -1.767_767, 1.193_243, -1.193_243]);
        v
    }

    #[test]
    fn gelu_is_candles_bit_for_bit() {
        let xs = sweep();
        let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let ours: Vec<f32> = gelu_erf(&x).unwrap().to_vec1().unwrap();
        let candle: Vec<f32> = x.gelu_erf().unwrap().to_vec1().unwrap();
        let differ = ours
            .iter()
            .zip(&candle)
            .zip(&xs)
            .filter(|((a, b), _)| a.to_bits() != b.to_bits())
            .map(|(_, &x)| x)
            .collect::<Vec<_>>();
        println!("gelu: {} values, {} differ from candle", xs.len(), differ.len());
        assert!(
            differ.is_empty(),
            "differ at {:?}",
            &differ[..differ.len().min(8)]
        );
        // the lanes alone (no libm) on every finite input
        for &v in xs.iter().filter(|v| v.is_finite()) {
            let u = v * std::f32::consts::FRAC_1_SQRT_2;
            assert_eq!(
                erf_lanes(u).to_bits(),
                candle_core::cpu::erf::erf_f32(u).to_bits(),
                "erf({u})"
            );
        }
    }

    #[test]
    fn quick_gelu_as_accurate_as_glibcs_and_exact_at_the_edges() {
        let xs = sweep();
        let x = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let ours: Vec<f32> = quick_gelu(&x).unwrap().to_vec1().unwrap();
        let scalar = |v: f32| v * (1.0 / (1.0 + (-(v * 1.702)).exp()));
        // relative error against the f64 value of the same formula (`1.702 · v` in f32), where
        // the result is a normal f32
        let rel = |got: f32, v: f32| {
            let exact = v as f64 / (1.0 + (-(v * 1.702) as f64).exp());
            if exact.abs() < f32::MIN_POSITIVE as f64 || !exact.is_finite() {
                0.0
            } else {
                ((got as f64 - exact) / exact).abs()
            }
        };
        let (mut differ, mut worst, mut worst_glibc) = (0, 0f64, 0f64);
        for (&v, &o) in xs.iter().zip(&ours) {
            let want = scalar(v);
            if want.is_nan() || want.is_infinite() || want == 0.0 {
                assert!(
                    o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()),
                    "quick_gelu({v}) = {o}, not {want}"
                );
                continue;
            }
            differ += usize::from(o.to_bits() != want.to_bits());
            worst = worst.max(rel(o, v));
            worst_glibc = worst_glibc.max(rel(want, v));
        }
        println!(
            "quick gelu: {} values, {differ} differ from glibc's expf form; worst relative error {worst:.2e} (glibc form {worst_glibc:.2e})",
            xs.len()
        );
        assert!(worst <= 4.0 * f32::EPSILON as f64, "relative error {worst:.2e}");
        assert!(differ * 1000 <= xs.len(), "{differ} differ");
        // the tensor form on other dtypes
        let h = x.to_dtype(DType::F64).unwrap();
        assert_eq!(quick_gelu(&h).unwrap().dtype(), DType::F64);
    }

    #[test]
    fn empty_and_offset_inputs() {
        let x = Tensor::zeros((0, 5), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(gelu_erf(&x).unwrap().dims(), &[0, 5]);
        assert_eq!(quick_gelu(&x).unwrap().dims(), &[0, 5]);
        // a narrowed (offset, still contiguous) view
        let x = Tensor::arange(-40f32, 40., &Device::Cpu)
            .unwrap()
            .affine(0.1, 0.0)
            .unwrap();
        let y = x.narrow(0, 13, 50).unwrap();
        let ours: Vec<f32> = gelu_erf(&y).unwrap().to_vec1().unwrap();
        let candle: Vec<f32> = y.gelu_erf().unwrap().to_vec1().unwrap();
        assert_eq!(ours, candle);
    }
}
