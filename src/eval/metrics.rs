//! Region similarity J and boundary F exactly as davis2017-evaluation computes them
//! (`db_eval_iou`, `db_eval_boundary` with `bound_th = 0.008`), plus the Hungarian assignment
//! its unsupervised evaluation uses.

/// A binary mask, row-major, one byte per pixel, 0 or 1 (the constructors normalise; the
/// metrics rely on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinMask {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// `height * width` bytes, 0 or 1.
    pub data: Vec<u8>,
}

impl BinMask {
    /// An all-background mask.
    pub fn empty(width: usize, height: usize) -> Self {
        BinMask {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    /// From any bytes: nonzero is foreground.
    pub fn from_bytes(width: usize, height: usize, bytes: &[u8]) -> Self {
        debug_assert_eq!(bytes.len(), width * height);
        BinMask {
            width,
            height,
            data: bytes.iter().map(|&v| u8::from(v != 0)).collect(),
        }
    }

    /// Pixels equal to `value` (an object id in an indexed PNG).
    pub fn from_label(width: usize, height: usize, labels: &[u8], value: u8) -> Self {
        BinMask {
            width,
            height,
            data: labels.iter().map(|&v| u8::from(v == value)).collect(),
        }
    }

    /// Number of foreground pixels.
    pub fn count(&self) -> usize {
        self.data.iter().map(|&v| v as usize).sum()
    }

    /// In-place union with `o`.
    pub fn union_with(&mut self, o: &BinMask) {
        for (a, b) in self.data.iter_mut().zip(&o.data) {
            *a |= *b;
        }
    }
}

/// `db_eval_iou`: |pr ∧ gt ∧ ¬void| / |(pr ∨ gt) ∧ ¬void|, 1 when the union is empty.
pub fn jaccard(gt: &BinMask, pr: &BinMask, void: Option<&BinMask>) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    // chunked u32 sums of 0/1 bytes (vectorises)
    match void {
        None => {
            for (g, p) in gt.data.chunks(4096).zip(pr.data.chunks(4096)) {
                let (mut i, mut u) = (0u32, 0u32);
                for (&a, &b) in g.iter().zip(p) {
                    i += u32::from(a & b);
                    u += u32::from(a | b);
                }
                inter += u64::from(i);
                union += u64::from(u);
            }
        }
        Some(v) => {
            for ((&a, &b), &x) in gt.data.iter().zip(&pr.data).zip(&v.data) {
                let keep = u64::from(x == 0);
                let (a, b) = (u64::from(a != 0), u64::from(b != 0));
                inter += (a & b) * keep;
                union += (a | b) * keep;
            }
        }
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Boundary bits of one row pair (`next` = the row below, None for the last row); inputs 0/1.
fn bmap_row(cur: &[u8], next: Option<&[u8]>, out: &mut [u8]) {
    let w = cur.len();
    if w == 0 {
        return;
    }
    match next {
        Some(nx) => {
            let (a, e, s, se) = (&cur[..w - 1], &cur[1..], &nx[..w - 1], &nx[1..]);
            for (((o, &a), (&e, &s)), &se) in out[..w - 1].iter_mut().zip(a).zip(e.iter().zip(s)).zip(se) {
                *o = (a ^ e) | (a ^ s) | (a ^ se);
            }
            out[w - 1] = cur[w - 1] ^ nx[w - 1];
        }
        None => {
            for ((o, &a), &e) in out[..w - 1].iter_mut().zip(&cur[..w - 1]).zip(&cur[1..]) {
                *o = a ^ e;
            }
            out[w - 1] = 0;
        }
    }
}

/// `_seg2bmap`: a pixel is boundary when it differs from its east, south or south-east
/// neighbour; the last row compares east only, the last column south only, the corner never.
pub fn seg2bmap(m: &BinMask) -> BinMask {
    let (w, h) = (m.width, m.height);
    let mut b = BinMask::empty(w, h);
    for r in 0..h {
        let cur = &m.data[r * w..(r + 1) * w];
        let next = (r + 1 < h).then(|| &m.data[(r + 1) * w..(r + 2) * w]);
        bmap_row(cur, next, &mut b.data[r * w..(r + 1) * w]);
    }
    b
}

/// The boundary tolerance in pixels: `ceil(0.008 · sqrt(H² + W²))` in f64.
pub fn bound_pix(height: usize, width: usize) -> usize {
    let d = ((height * height + width * width) as f64).sqrt();
    (0.008f64 * d).ceil() as usize
}

/// Half-widths of skimage's `disk(r)` per row offset dy = -r..=r (offsets with dy² + dx² ≤ r²).
fn disk_half_widths(r: usize) -> Vec<usize> {
    let r = r as i64;
    (-r..=r)
        .map(|dy| {
            let mut hw = 0;
            while (hw + 1) * (hw + 1) + dy * dy <= r * r {
                hw += 1;
            }
            hw as usize
        })
        .collect()
}

/// Boundary pixels of a mask as sorted x lists per row (CSR: `starts[r]..starts[r+1]` in `xs`).
struct Points {
    starts: Vec<usize>,
    xs: Vec<u32>,
}

impl Points {
    /// The boundary of `m` with `void` pixels removed first.
    fn boundary(m: &BinMask, void: Option<&BinMask>) -> Points {
        let (w, h) = (m.width, m.height);
        let masked;
        let src = match void {
            Some(v) => {
                masked = m
                    .data
                    .iter()
                    .zip(&v.data)
                    .map(|(&a, &b)| a & (b ^ 1))
                    .collect::<Vec<u8>>();
                &masked
            }
            None => &m.data,
        };
        let mut row = vec![0u8; w];
        let mut starts = Vec::with_capacity(h + 1);
        let mut xs = Vec::new();
        for r in 0..h {
            starts.push(xs.len());
            let cur = &src[r * w..(r + 1) * w];
            let next = (r + 1 < h).then(|| &src[(r + 1) * w..(r + 2) * w]);
            bmap_row(cur, next, &mut row);
            for (chunk_i, chunk) in row.chunks(8).enumerate() {
                if chunk.iter().all(|&v| v == 0) {
                    continue;
                }
                for (k, &v) in chunk.iter().enumerate() {
                    if v != 0 {
                        xs.push((chunk_i * 8 + k) as u32);
                    }
                }
            }
        }
        starts.push(xs.len());
        Points { starts, xs }
    }

    fn len(&self) -> u64 {
        self.xs.len() as u64
    }

    /// Whether some point lies in row `y`, columns `lo..=hi`.
    fn any_in(&self, y: usize, lo: u32, hi: u32) -> bool {
        let row = &self.xs[self.starts[y]..self.starts[y + 1]];
        let i = row.partition_point(|&x| x < lo);
        i < row.len() && row[i] <= hi
    }
}

/// Points of `a` within the disk of radius `r` of some point of `b` (= |a ∧ dilate(b)|).
fn matched(a: &Points, b: &Points, r: usize, w: usize, h: usize) -> u64 {
    let hws = disk_half_widths(r);
    let mut n = 0;
    for y in 0..h {
        for &x in &a.xs[a.starts[y]..a.starts[y + 1]] {
            let hit = hws.iter().enumerate().any(|(k, &hw)| {
                let yy = y as i64 + k as i64 - r as i64;
                if yy < 0 || yy >= h as i64 {
                    return false;
                }
                let lo = x.saturating_sub(hw as u32);
                let hi = (x as usize + hw).min(w - 1) as u32;
                b.any_in(yy as usize, lo, hi)
            });
            n += u64::from(hit);
        }
    }
    n
}

/// Boundary precision/recall counts of one frame (for reports and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundaryCounts {
    /// Boundary pixels of the prediction.
    pub n_fg: u64,
    /// Boundary pixels of the ground truth.
    pub n_gt: u64,
    /// Prediction boundary pixels near a ground-truth boundary.
    pub fg_match: u64,
    /// Ground-truth boundary pixels near a prediction boundary.
    pub gt_match: u64,
}

/// The counts behind [`f_measure`].
pub fn boundary_counts(gt: &BinMask, pr: &BinMask, void: Option<&BinMask>) -> BoundaryCounts {
    let (w, h) = (pr.width, pr.height);
    let r = bound_pix(h, w);
    let fg_b = Points::boundary(pr, void);
    let gt_b = Points::boundary(gt, void);
    BoundaryCounts {
        n_fg: fg_b.len(),
        n_gt: gt_b.len(),
        fg_match: matched(&fg_b, &gt_b, r, w, h),
        gt_match: matched(&gt_b, &fg_b, r, w, h),
    }
}

/// `db_eval_boundary` of one frame: the boundary F-measure with the DAVIS edge cases.
pub fn f_measure(gt: &BinMask, pr: &BinMask, void: Option<&BinMask>) -> f64 {
    let c = boundary_counts(gt, pr, void);
    let (precision, recall) = match (c.n_fg, c.n_gt) {
        (0, 0) => (1.0, 1.0),
        (0, _) => (1.0, 0.0),
        (_, 0) => (0.0, 1.0),
        _ => (
            c.fg_match as f64 / c.n_fg as f64,
            c.gt_match as f64 / c.n_gt as f64,
        ),
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// J and F of one frame.
pub fn jf(gt: &BinMask, pr: &BinMask, void: Option<&BinMask>) -> (f64, f64) {
    (jaccard(gt, pr, void), f_measure(gt, pr, void))
}

/// Arithmetic mean (0 for an empty slice).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Maximum-weight assignment of rows to columns (`rows ≥ cols`): for each column the row it gets,
/// as scipy's `linear_sum_assignment(-w)` pairs them. Hungarian algorithm, O(n³).
pub fn max_assignment(w: &[Vec<f64>]) -> Vec<usize> {
    let rows = w.len();
    let cols = w.first().map_or(0, Vec::len);
    if cols == 0 {
        return Vec::new();
    }
    // minimise cost[c][r] = -w[r][c] with columns as the (fewer) agents
    let (n, m) = (cols, rows);
    let cost = |i: usize, j: usize| -w[j - 1][i - 1];
    let inf = f64::INFINITY;
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost(i0, j) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![0usize; n];
    for j in 1..=m {
        if p[j] != 0 {
            out[p[j] - 1] = j - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> BinMask {
        let h = rows.len();
        let w = rows[0].len();
        let data = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| u8::from(b == b'1')))
            .collect();
        BinMask {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn seg2bmap_matches_the_documented_examples() {
        let s = grid(&["0000000", "0011100", "0011100", "0011100", "0000000", "0000000"]);
        let b = grid(&["0111100", "0100100", "0100100", "0111100", "0000000", "0000000"]);
        assert_eq!(seg2bmap(&s), b);
        let s = grid(&["1100", "1100", "0000", "0000"]);
        assert_eq!(seg2bmap(&s), grid(&["0100", "1100", "0000", "0000"]));
        let s = grid(&["0000", "0000", "0011", "0011"]);
        assert_eq!(seg2bmap(&s), grid(&["0000", "0111", "0100", "0100"]));
        let full = grid(&["111", "111"]);
        assert_eq!(seg2bmap(&full).count(), 0);
    }

    #[test]
    fn tolerances_and_disks() {
        for (h, w, r) in [
            (480, 854, 8),
            (720, 1280, 12),
            (1080, 1920, 18),
            (480, 640, 7),
            (360, 640, 6),
            (100, 100, 2),
            (10, 10, 1),
            (600, 800, 8),
            (750, 1000, 10),
        ] {
            assert_eq!(bound_pix(h, w), r, "{h}x{w}");
        }
        let count = |r: usize| disk_half_widths(r).iter().map(|&hw| 2 * hw + 1).sum::<usize>();
        assert_eq!(
            (
                count(8),
                count(12),
                count(18),
                count(7),
                count(6),
                count(2),
                count(1)
            ),
            (197, 441, 1009, 149, 113, 13, 5)
        );
    }

    #[test]
    fn hungarian_matches_brute_force() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for rows in 1..=5 {
            for cols in 1..=rows {
                let w: Vec<Vec<f64>> = (0..rows).map(|_| (0..cols).map(|_| rnd()).collect()).collect();
                let got = max_assignment(&w);
                let score = |a: &[usize]| a.iter().enumerate().map(|(c, &r)| w[r][c]).sum::<f64>();
                // brute force over injective maps cols -> rows
                fn best(w: &[Vec<f64>], c: usize, used: &mut Vec<bool>) -> f64 {
                    if c == w[0].len() {
                        return 0.0;
                    }
                    let mut b = f64::NEG_INFINITY;
                    for r in 0..w.len() {
                        if !used[r] {
                            used[r] = true;
                            b = b.max(w[r][c] + best(w, c + 1, used));
                            used[r] = false;
                        }
                    }
                    b
                }
                let mut used = vec![false; rows];
                assert!((score(&got) - best(&w, 0, &mut used)).abs() < 1e-12);
            }
        }
    }
}
