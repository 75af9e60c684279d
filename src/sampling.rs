//! Sparse/dense frame sampling exactly as VideoLISA's `chat.py` (`uniform_sample`,
//! `get_sparse_indices`, `get_dense_indices`), numpy `linspace` rounding included.

use crate::error::{Error, Result};

/// Default number of sparse frames (mean-pooled CLIP tokens), as trained.
pub const DEFAULT_SPARSE: usize = 32;
/// Default number of dense frames (full 576-token CLIP grids), as trained.
pub const DEFAULT_DENSE: usize = 4;
/// Most sparse frames a run may sample: each is at least one LLM token, and no model this tool
/// loads has a context of more than 4096 positions.
pub const MAX_SPARSE: usize = 4096;

/// The frames one video contributes to the LLM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sampling {
    /// Video frame index of each sparse slot (sorted, may repeat for short videos).
    pub sparse: Vec<usize>,
    /// Index into `sparse` of each dense slot (not a video frame index).
    pub dense: Vec<usize>,
}

impl Sampling {
    /// Samples `n_sparse` sparse and `n_dense` dense frames from a video of `total` frames.
    pub fn new(total: usize, n_sparse: usize, n_dense: usize) -> Result<Self> {
        if total == 0 {
            return Err(Error::Usage(
                "cannot sample frames from a video with zero frames".into(),
            ));
        }
        Self::check(n_sparse, n_dense)?;
        Ok(Sampling {
            sparse: sparse_indices(total, n_sparse),
            dense: dense_indices(n_sparse, n_dense),
        })
    }

    /// Checks a `--sparse`/`--dense` pair: both at least 1, and the dense frames are a subset of
    /// the sparse ones, so there cannot be more of them.
    pub fn check(n_sparse: usize, n_dense: usize) -> Result<()> {
        if n_sparse == 0 || n_dense == 0 {
            return Err(Error::Usage(format!(
                "frame counts must be at least 1 (got --sparse {n_sparse}, --dense {n_dense})"
            )));
        }
        if n_sparse > MAX_SPARSE {
            return Err(Error::Usage(format!(
                "--sparse {n_sparse} is more than {MAX_SPARSE}: every sparse frame takes a position of \
                 the model's context"
            )));
        }
        if n_dense > n_sparse {
            return Err(Error::Usage(format!(
                "--dense {n_dense} is more than --sparse {n_sparse}: the dense frames are chosen among \
                 the sparse ones"
            )));
        }
        Ok(())
    }

    /// Video frame index of each dense slot: `sparse[dense[k]]`.
    pub fn dense_frames(&self) -> Vec<usize> {
        self.dense.iter().map(|&d| self.sparse[d]).collect()
    }
}

/// numpy's `linspace(start, stop, num)` (endpoint included) in f64, element by element:
/// `i * ((stop - start) / (num - 1)) + start`, the last element set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let div = num - 1;
    let delta = stop - start;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64).collect();
    if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            // numpy divides first when the step underflows to zero
            for v in &mut y {
                *v = *v / div as f64 * delta;
            }
        } else {
            for v in &mut y {
                *v *= step;
            }
        }
    } else {
        for v in &mut y {
            *v *= delta;
        }
    }
    for v in &mut y {
        *v += start;
    }
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// Python floor division of two integers.
fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

/// `uniform_sample`: midpoints of `n` equal intervals of `0..total` (truncated linspace).
/// Returns Python integers, which may be negative for degenerate intervals.
fn uniform_sample(total: usize, n: usize) -> Vec<i64> {
    let iv: Vec<i64> = linspace(0.0, total as f64, n + 1)
        .into_iter()
        .map(|v| v as i64) // `.astype(int)`: truncation toward zero
        .collect();
    (0..n).map(|i| floor_div(iv[i] + (iv[i + 1] - 1), 2)).collect()
}

/// Resolves a Python index (negative counts from the end) into `0..len`.
fn py_index(i: i64, len: usize) -> usize {
    if i < 0 {
        (i + len as i64).max(0) as usize
    } else {
        (i as usize).min(len.saturating_sub(1))
    }
}

/// `get_sparse_indices`: `n_sparse` sorted video frame indices; short videos repeat frames.
pub fn sparse_indices(total: usize, n_sparse: usize) -> Vec<usize> {
    let mut out: Vec<usize> = if total > n_sparse {
        uniform_sample(total, n_sparse)
            .into_iter()
            .map(|i| py_index(i, total))
            .collect()
    } else {
        let rep = n_sparse / total;
        let rem = n_sparse % total;
        let mut v: Vec<usize> = Vec::with_capacity(n_sparse);
        for _ in 0..rep {
            v.extend(0..total);
        }
        v.extend(uniform_sample(total, rem).into_iter().map(|i| py_index(i, total)));
        v
    };
    out.sort_unstable();
    out
}

/// `get_dense_indices`: `n_dense` positions in the sparse list (Python negative indices
/// resolved the way torch indexing resolves them).
pub fn dense_indices(n_sparse: usize, n_dense: usize) -> Vec<usize> {
    let iv: Vec<i64> = linspace(0.0, (n_sparse as f64) - 1.0, n_dense + 1)
        .into_iter()
        .map(|v| v as i64)
        .collect();
    (0..n_dense)
        .map(|i| py_index(floor_div(iv[i] + (iv[i + 1] - 1), 2), n_sparse))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_examples() {
        let s = Sampling::new(100, 32, 4).unwrap();
        assert_eq!(
            &s.sparse[..17],
            &[1, 4, 7, 10, 13, 16, 19, 22, 26, 29, 32, 35, 38, 41, 44, 47, 51]
        );
        assert_eq!(*s.sparse.last().unwrap(), 97);
        assert_eq!(s.dense, vec![3, 10, 18, 26]);
        assert_eq!(s.dense_frames(), vec![10, 32, 57, 82]);

        let s = Sampling::new(20, 32, 4).unwrap();
        assert_eq!(&s.sparse[..10], &[0, 0, 1, 1, 2, 3, 3, 4, 5, 5]);
        assert_eq!(&s.sparse[29..], &[18, 18, 19]);
        assert_eq!(s.dense_frames(), vec![1, 6, 11, 16]);

        let s = Sampling::new(1, 32, 4).unwrap();
        assert_eq!(s.sparse, vec![0; 32]);
    }

    #[test]
    fn linspace_matches_numpy_shape() {
        assert_eq!(linspace(0.0, 31.0, 5), vec![0.0, 7.75, 15.5, 23.25, 31.0]);
        assert_eq!(linspace(0.0, 10.0, 1), vec![0.0]);
        assert!(linspace(0.0, 1.0, 0).is_empty());
    }

    #[test]
    fn rejects_zero() {
        assert!(Sampling::new(0, 32, 4).is_err());
        assert!(Sampling::new(10, 0, 4).is_err());
        assert!(Sampling::new(10, 32, 0).is_err());
    }
}
