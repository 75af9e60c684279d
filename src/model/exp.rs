//! `e^(x − max)` over the scores of a block of query rows and each row's sum, for the softmax
//! in attention: glibc's scalar `expf` was 8 % of CLIP's and SAM's time. Here
//! `e^y = 2^n · e^r` with `n = round(y / ln 2)` and `|r| ≤ ln 2 / 2`, `e^r` by its Taylor
//! series, all in f64 and rounded once: the f32 result is glibc's nearly everywhere (a 1-ulp
//! polynomial in f32 moved the end-to-end parity test past its bound). The loop has no
//! branches and is compiled for AVX-512 or AVX2 when the CPU has them (chosen at run time);
//! the scores are key-major, one SIMD lane per query row, so each row's sum is still added in
//! key order: the end-to-end parity test moved by 30 % when it was not.

/// Below this `e^y` is under f32's smallest normal number: returned as 0.
const LOWEST: f32 = -87.0;
/// `1.5 · 2^52`: adding and subtracting it rounds an f64 to the nearest integer.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// `e^y` evaluated in f64 and rounded once to f32: correctly rounded but for values within
/// about 2^-30 of a rounding boundary, so it gives glibc's `expf` result nearly everywhere.
#[inline(always)]
fn exp_lane(y: f32) -> f32 {
    let y64 = y as f64;
    let t = y64 * std::f64::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = y64 - n * std::f64::consts::LN_2;
    // Horner: Σ r^k / k! for k ≤ 10 (|r| ≤ 0.35: truncation under 1e-11)
    let mut p = 1.0 / 3_628_800.0;
    for k in (0..10).rev() {
        p = p * r + 1.0 / FACTORIALS[k];
    }
    // 2^n from the bits of `t`, whose low mantissa bits hold n (no f64 → i64 conversion,
    // which AVX-512F alone does one lane at a time)
    let scale = f64::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(1023) << 52);
    if y < LOWEST {
        0.0
    } else {
        (p * scale) as f32
    }
}

/// Above this `e^y` overflows f32: returned as +∞ (the range reduction would not hold).
const HIGHEST: f32 = 89.0;

/// `e^y` for any `y` (`exp_lane` is for `y ≤ 0`): +∞ above f32's range, NaN for NaN.
#[inline(always)]
pub(crate) fn exp_f32(y: f32) -> f32 {
    let e = exp_lane(y);
    if y > HIGHEST {
        f32::INFINITY
    } else {
        e
    }
}

/// `k!` for `k < 10`.
const FACTORIALS: [f64; 10] = [1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0, 5040.0, 40320.0, 362_880.0];

/// Columns of `max.len()` values: each lane shifted by its own maximum and summed into `sum`
/// down the columns, so the lanes are independent and the loop vectorises across them.
#[inline(always)]
fn columns(xs: &mut [f32], max: &[f32], sum: &mut [f32]) {
    for col in xs.chunks_exact_mut(max.len()) {
        for ((x, &m), s) in col.iter_mut().zip(max).zip(sum.iter_mut()) {
            *x = exp_lane(*x - m);
            *s += *x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn columns_avx512(xs: &mut [f32], max: &[f32], sum: &mut [f32]) {
    columns(xs, max, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2(xs: &mut [f32], max: &[f32], sum: &mut [f32]) {
    columns(xs, max, sum)
}

/// For scores laid out `[keys][lanes]` (one lane per query row): replaces each `x` by
/// `e^(x − max[lane])` and returns each lane's sum, added in key order — per lane the same
/// values and the same sum as one lane alone over that row.
pub(crate) fn exp_shifted_columns(xs: &mut [f32], max: &[f32]) -> Vec<f32> {
    assert!(
        !max.is_empty() && xs.len().is_multiple_of(max.len()),
        "scores are not whole columns"
    );
    let mut sum = vec![0f32; max.len()];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F
            unsafe { columns_avx512(xs, max, &mut sum) };
            return sum;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA
            unsafe { columns_avx2(xs, max, &mut sum) };
            return sum;
        }
    }
    columns(xs, max, &mut sum);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row as a single lane: `e^(x − max)` in place, and the row's sum.
    fn exp_shifted_sum(xs: &mut [f32], max: f32) -> f32 {
        exp_shifted_columns(xs, &[max])[0]
    }

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

    #[test]
    fn columns_equal_rows_bit_for_bit() {
        // 19 rows (a ragged SIMD tail) of 300 keys, with −∞ for hidden keys
        let (rows, keys) = (19, 300);
        let score = |r: usize, j: usize| match (r * 31 + j * 17) % 97 {
            0 => f32::NEG_INFINITY,
            v => (v as f32 - 60.0) / 7.0 + r as f32,
        };
        let mut by_row: Vec<Vec<f32>> = (0..rows)
            .map(|r| (0..keys).map(|j| score(r, j)).collect())
            .collect();
        let max: Vec<f32> = by_row
            .iter()
            .map(|row| row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)))
            .collect();
        let mut cols: Vec<f32> = (0..keys)
            .flat_map(|j| (0..rows).map(move |r| score(r, j)))
            .collect();
        let sums = exp_shifted_columns(&mut cols, &max);
        for (r, row) in by_row.iter_mut().enumerate() {
            // the scalar definition: each value alone, the sum in key order
            let want: Vec<f32> = row.iter().map(|&x| exp_lane(x - max[r])).collect();
            let want_sum = want.iter().fold(0f32, |s, &v| s + v);
            assert_eq!(
                exp_shifted_sum(row, max[r]).to_bits(),
                want_sum.to_bits(),
                "row {r}"
            );
            assert_eq!(sums[r].to_bits(), want_sum.to_bits(), "row {r}");
            for (j, v) in want.iter().enumerate() {
                assert_eq!(v.to_bits(), row[j].to_bits(), "row {r} key {j}");
                assert_eq!(v.to_bits(), cols[j * rows + r].to_bits(), "row {r} key {j}");
            }
        }
    }
}
