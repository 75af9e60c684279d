//! `e^(x − max)` over a row of scores and its sum, for the softmax in attention: glibc's scalar
//! `expf` was 8 % of CLIP's and SAM's time. Here `e^y = 2^n · e^r` with `n = round(y / ln 2)`
//! and `|r| ≤ ln 2 / 2`, `e^r` by its Taylor series, all in f64 and rounded once: the f32
//! result is glibc's nearly everywhere (a 1-ulp polynomial in f32 moved the end-to-end parity
//! test past its bound). The loop has no branches and is compiled for AVX-512 or AVX2 when
//! the CPU has them (chosen at run time). The sum is added in order, as before: the
//! end-to-end parity test moved by 30 % when it was not.

/// Below this `e^y` is under f32's smallest normal number: returned as 0.
const LOWEST: f32 = -87.0;
/// `1.5 · 2^52`: adding and subtracting it rounds an f64 to the nearest integer.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// `e^y` evaluated in f64 and rounded once to f32: correctly rounded but for values within
/// about 2^-30 of a rounding boundary, so it gives glibc's `expf` result nearly everywhere.
#[inline(always)]
fn exp_lane(y: f32) -> f32 {
    let y64 = y as f64;
    let n = (y64 * std::f64::consts::LOG2_E + ROUND) - ROUND;
    let r = y64 - n * std::f64::consts::LN_2;
    // Horner: Σ r^k / k! for k ≤ 10 (|r| ≤ 0.35: truncation under 1e-11)
    let mut p = 1.0 / 3_628_800.0;
    for k in (0..10).rev() {
        p = p * r + 1.0 / FACTORIALS[k];
    }
    let scale = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    if y < LOWEST {
        0.0
    } else {
        (p * scale) as f32
    }
}

/// `k!` for `k < 10`.
const FACTORIALS: [f64; 10] = [1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0, 5040.0, 40320.0, 362_880.0];

#[inline(always)]
fn body(xs: &mut [f32], max: f32) {
    for x in xs.iter_mut() {
        *x = exp_lane(*x - max);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn body_avx512(xs: &mut [f32], max: f32) {
    body(xs, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(xs: &mut [f32], max: f32) {
    body(xs, max)
}

/// Replaces each `x` by `e^(x − max)` and returns their sum (`max` ≥ every `x`), added in
/// order as the scalar loop did.
pub(crate) fn exp_shifted_sum(xs: &mut [f32], max: f32) -> f32 {
    exp_shifted(xs, max);
    xs.iter().sum()
}

fn exp_shifted(xs: &mut [f32], max: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F
            return unsafe { body_avx512(xs, max) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA
            return unsafe { body_avx2(xs, max) };
        }
    }
    body(xs, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correctly_rounded_but_near_ties_and_summed_in_order() {
        // every score from −90 to 0 in steps of 1/4096: the row maximum is 0
        let ys: Vec<f32> = (0..=90 * 4096).map(|i| -(i as f32) / 4096.0).collect();
        let exact: Vec<f64> = ys.iter().map(|&y| (y as f64).exp()).collect();
        let mut xs = ys.clone();
        exp_shifted_sum(&mut xs, 0.0);
        let mut worst_ulp = 0f64;
        for ((&x, &e), &y) in xs.iter().zip(&exact).zip(&ys) {
            if y < LOWEST {
                assert_eq!(x, 0.0, "e^{y}");
                continue;
            }
            let ulp = f32::EPSILON as f64 * 2f64.powi((e as f32).log2().floor() as i32);
            worst_ulp = worst_ulp.max((x as f64 - e).abs() / ulp);
        }
        let unlike_expf = xs
            .iter()
            .zip(&ys)
            .filter(|(&x, &y)| y >= LOWEST && x != y.exp())
            .count();
        println!(
            "worst error {worst_ulp:.3} ulp; {unlike_expf} of {} values differ from expf",
            xs.len()
        );
        assert!(worst_ulp <= 0.501, "{worst_ulp} ulp");
        assert!(unlike_expf * 1_000 <= xs.len(), "{unlike_expf} differ from expf");
        // the sum of a SAM-sized row: the values added in order
        let mut row: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 4099) as f32 / -200.0).collect();
        let sum = exp_shifted_sum(&mut row, 0.0);
        assert_eq!(sum, row.iter().fold(0f32, |s, &v| s + v));
        // a shifted row: e^(x − max), the maximum becoming 1
        let mut row = [3.0f32, 1.5, 3.0, -20.0];
        let s = exp_shifted_sum(&mut row, 3.0);
        assert_eq!(row[0], 1.0);
        assert!((row[1] as f64 - (-1.5f64).exp()).abs() < 1e-7);
        assert!((s as f64 - (2.0 + (-1.5f64).exp() + (-23f64).exp())).abs() < 1e-6);
        // a NaN score stays NaN, as with expf
        let mut row = [0.0f32, f32::NAN];
        assert!(exp_shifted_sum(&mut row, 0.0).is_nan() && row[1].is_nan() && row[0] == 1.0);
    }
}
