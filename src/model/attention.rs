//! Attention on the CPU in f32 without the full score matrix: for each head and block of
//! query rows, the scores of that block only (`q·kᵀ` through the `gemm` crate, reading q, k
//! and v in place through their strides), their softmax with the bias added on the fly, and
//! `p·v` written straight into `[B, N, heads, d]` — the layout every caller reshapes to next.
//! CLIP, SAM's windowed and global blocks (with the decomposed relative positions) and Phi-3
//! (causal, sliding window: key ranges outside the window are never computed) share it. The
//! arithmetic per element is the unfused path's: the same dot products, scale, bias and
//! softmax, only in other memory. A block's scores are kept key-major (one SIMD lane per
//! query row): the row maxima and sums then vectorise across rows while each row's sum is
//! still added in key order, and neither product repacks the keys or the probabilities.

use crate::model::{matmul_into, Strided};
use candle_core::{DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

/// Query rows per task: a block's scores stay in L2 (64 × 4096 f32 = 1 MB at SAM's global
/// blocks) and blocks give both cores work even with few heads.
const QUERY_BLOCK: usize = 64;

/// What is added to the scores before the softmax.
#[derive(Debug, Clone, Copy)]
pub enum Bias<'a> {
    /// Nothing (CLIP).
    None,
    /// SAM's decomposed relative positions: `rel_h` `[B·heads, Nq, kh]` and `rel_w`
    /// `[B·heads, Nq, kw]`, key `j` being `(j / kw, j % kw)`.
    RelPos {
        /// Per query, per key row.
        rel_h: &'a Tensor,
        /// Per query, per key column.
        rel_w: &'a Tensor,
    },
    /// Causal with an optional sliding window: query row `r` is position `first_row + r` and
    /// sees keys `j` with `j ≤ i` and `j + window ≥ i` (Phi-3's mask).
    Causal {
        /// Position of the first query row.
        first_row: usize,
        /// Sliding window, if any.
        window: Option<usize>,
    },
}

/// How the scores and probabilities are formed.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Multiplies `q·kᵀ` (Phi-3); `None` when q arrives scaled (CLIP, SAM).
    pub scale: Option<f32>,
    /// Added before the softmax.
    pub bias: Bias<'a>,
    /// Rounds the probabilities to bf16 before `p·v` (a bf16 v, as PyTorch multiplies).
    pub bf16_probs: bool,
}

/// A `[B, N, heads, d]` view of CPU f32 data: strides for the first three axes, the last
/// contiguous.
struct View<'a> {
    data: &'a [f32],
    start: usize,
    strides: [usize; 3],
    dims: [usize; 4],
}

impl<'a> View<'a> {
    fn new(data: &'a [f32], l: &Layout, what: &str) -> candle_core::Result<Self> {
        let (dims, s) = (l.dims(), l.stride());
        if dims.len() != 4 || s[3] != 1 {
            candle_core::bail!("attention: {what} must be [B, N, heads, d] with a contiguous last axis, got {:?} strides {s:?}", dims);
        }
        Ok(View {
            data,
            start: l.start_offset(),
            strides: [s[0], s[1], s[2]],
            dims: [dims[0], dims[1], dims[2], dims[3]],
        })
    }

    fn at(&self, b: usize, n: usize, h: usize) -> *const f32 {
        let o = self.start + b * self.strides[0] + n * self.strides[1] + h * self.strides[2];
        self.data[o..].as_ptr()
    }
}

/// The output buffer, written by disjoint tasks.
struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

fn cpu_f32(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

fn slice(s: &Storage) -> candle_core::Result<&[f32]> {
    match s {
        Storage::Cpu(c) => c.as_slice::<f32>(),
        _ => candle_core::bail!("attention: CPU storage expected"),
    }
}

/// `softmax(q·kᵀ [· scale] + bias) · v` for q `[B, Nq, H, d]`, k `[B, Nk, Hk, d]`, v
/// `[B, Nk, Hk, dv]` (H a multiple of Hk: grouped heads share a key/value head) as
/// `[B, Nq, H, dv]`; `None` unless all are f32 CPU tensors (other devices take the plain path).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, o: &Options) -> candle_core::Result<Option<Tensor>> {
    let rel = match o.bias {
        Bias::RelPos { rel_h, rel_w } => Some((rel_h.contiguous()?, rel_w.contiguous()?)),
        _ => None,
    };
    if ![q, k, v].iter().all(|t| cpu_f32(t)) || rel.as_ref().is_some_and(|(h, w)| !cpu_f32(h) || !cpu_f32(w))
    {
        return Ok(None);
    }
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (qv, kv, vv) = (
        View::new(slice(&qs)?, ql, "q")?,
        View::new(slice(&ks)?, kl, "k")?,
        View::new(slice(&vs)?, vl, "v")?,
    );
    let [b, nq, h, d] = qv.dims;
    let [_, nk, hk, dv] = vv.dims;
    if kv.dims != [b, nk, hk, d] || vv.dims[0] != b || hk == 0 || h % hk != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit together",
            qv.dims,
            kv.dims,
            vv.dims
        );
    }
    let rel_guards = rel
        .as_ref()
        .map(|(rh, rw)| (rh.storage_and_layout(), rw.storage_and_layout()));
    let rel_slices = match &rel_guards {
        Some(((hs, hl), (ws, wl))) => {
            let (kh, kw) = (hl.dims()[2], wl.dims()[2]);
            if kh * kw != nk || hl.dims()[..2] != [b * h, nq] || wl.dims()[..2] != [b * h, nq] {
                candle_core::bail!(
                    "attention: rel-pos terms {:?} / {:?} do not fit {nk} keys",
                    hl.dims(),
                    wl.dims()
                );
            }
            let (ho, wo) = (hl.start_offset(), wl.start_offset());
            Some((&slice(hs)?[ho..], &slice(ws)?[wo..], kh, kw))
        }
        None => None,
    };
    let mut out = vec![0f32; b * nq * h * dv];
    let ptr = OutPtr(out.as_mut_ptr());
    let blocks = nq.div_ceil(QUERY_BLOCK);
    (0..b * h * blocks)
        .into_par_iter()
        .for_each_init(Vec::new, |buf, task| {
            let (g, blk) = (task / blocks, task % blocks);
            let (bi, hi) = (g / h, g % h);
            let r0 = blk * QUERY_BLOCK;
            let rows = QUERY_BLOCK.min(nq - r0);
            let t = Task {
                bi,
                hi,
                kvh: hi / (h / hk),
                r0,
                rows,
                g,
            };
            let ctx = Ctx {
                q: &qv,
                k: &kv,
                v: &vv,
                o,
                rel: rel_slices,
                heads: h,
                out: &ptr,
            };
            ctx.run(&t, buf);
        });
    drop((qs, ks, vs, rel_guards));
    Ok(Some(Tensor::from_vec(out, (b, nq, h, dv), &Device::Cpu)?))
}

struct Task {
    bi: usize,
    hi: usize,
    kvh: usize,
    r0: usize,
    rows: usize,
    g: usize,
}

struct Ctx<'a> {
    q: &'a View<'a>,
    k: &'a View<'a>,
    v: &'a View<'a>,
    o: &'a Options<'a>,
    rel: Option<(&'a [f32], &'a [f32], usize, usize)>,
    heads: usize,
    out: &'a OutPtr,
}

impl Ctx<'_> {
    /// Keys `lo..hi` any row of the block sees.
    fn key_range(&self, t: &Task) -> (usize, usize) {
        match self.o.bias {
            Bias::Causal { first_row, window } => {
                let first = first_row + t.r0;
                let lo = window.map_or(0, |w| first.saturating_sub(w));
                (lo, (first + t.rows).min(self.k.dims[1]))
            }
            _ => (0, self.k.dims[1]),
        }
    }

    /// One block: scores key-major (`s[j · rows + r]`, so the softmax runs across the rows
    /// in SIMD lanes), softmax in place, then `p·v` into the output. `s` is the thread's
    /// reused buffer: both products write every element they cover.
    fn run(&self, t: &Task, s: &mut Vec<f32>) {
        let (lo, hi) = self.key_range(t);
        let (keys, rows, d) = (hi - lo, t.rows, self.q.dims[3]);
        if s.len() < rows * keys {
            s.resize(rows * keys, 0.0);
        }
        let s = &mut s[..rows * keys];
        // S = q_block · k[lo..hi]ᵀ, stored transposed
        unsafe {
            matmul_into(
                (rows, keys, d),
                Strided {
                    ptr: s.as_mut_ptr(),
                    row: 1,
                    col: rows,
                },
                Strided {
                    ptr: self.q.at(t.bi, t.r0, t.hi),
                    row: self.q.strides[1],
                    col: 1,
                },
                Strided {
                    ptr: self.k.at(t.bi, lo, t.kvh),
                    row: 1,
                    col: self.k.strides[1],
                },
                gemm::Parallelism::None,
            );
        }
        self.softmax_block(t, lo, s);
        let dv = self.v.dims[3];
        let dst = self
            .out
            .0
            .wrapping_add(((t.bi * self.q.dims[1] + t.r0) * self.heads + t.hi) * dv);
        // out_block = P · v[lo..hi]
        unsafe {
            matmul_into(
                (rows, dv, keys),
                Strided {
                    ptr: dst,
                    row: self.heads * dv,
                    col: 1,
                },
                Strided {
                    ptr: s.as_ptr(),
                    row: 1,
                    col: rows,
                },
                Strided {
                    ptr: self.v.at(t.bi, lo, t.kvh),
                    row: self.v.strides[1],
                    col: 1,
                },
                gemm::Parallelism::None,
            );
        }
    }

    /// Scale, bias and mask (hidden keys become −∞, so e^… is 0 and adds nothing), then the
    /// softmax of every row of the key-major block `s` (keys from `lo`), in place.
    fn softmax_block(&self, t: &Task, lo: usize, s: &mut [f32]) {
        let rows = t.rows;
        let rel = self.rel.map(|rel| self.rel_rows(t, rel));
        let mut max = vec![f32::NEG_INFINITY; rows];
        for (j, col) in s.chunks_exact_mut(rows).enumerate() {
            if let Some(sc) = self.o.scale {
                col.iter_mut().for_each(|x| *x *= sc);
            }
            if let Some((rh, rw, kw)) = &rel {
                let (y, x) = ((lo + j) / kw, (lo + j) % kw);
                let (rh, rw) = (&rh[y * rows..(y + 1) * rows], &rw[x * rows..(x + 1) * rows]);
                for ((v, &h), &w) in col.iter_mut().zip(rh).zip(rw) {
                    *v = *v + h + w;
                }
            }
            let (a, b) = self.rows_seeing(t, lo + j);
            col[..a].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
            col[b..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
            for (m, &x) in max.iter_mut().zip(col.iter()) {
                *m = m.max(x);
            }
        }
        let sum = crate::model::exp::exp_shifted_columns(s, &max);
        for col in s.chunks_exact_mut(rows) {
            for (x, &sm) in col.iter_mut().zip(&sum) {
                *x /= sm;
                if self.o.bf16_probs {
                    *x = half::bf16::from_f32(*x).to_f32();
                }
            }
        }
    }

    /// The block's rows `a..b` that see key `j` (all but under Phi-3's mask).
    fn rows_seeing(&self, t: &Task, j: usize) -> (usize, usize) {
        match self.o.bias {
            Bias::Causal { first_row, window } => {
                let base = first_row + t.r0;
                let a = j.saturating_sub(base).min(t.rows);
                let b = window.map_or(t.rows, |w| (j + w + 1).saturating_sub(base).min(t.rows));
                (a, b.max(a))
            }
            _ => (0, t.rows),
        }
    }

    /// The block's rel-pos terms key-major: `rh[y · rows + r]`, `rw[x · rows + r]`, and `kw`.
    fn rel_rows(
        &self,
        t: &Task,
        (rh, rw, kh, kw): (&[f32], &[f32], usize, usize),
    ) -> (Vec<f32>, Vec<f32>, usize) {
        let first = t.g * self.q.dims[1] + t.r0;
        let gather = |src: &[f32], n: usize| {
            let mut out = vec![0f32; n * t.rows];
            for r in 0..t.rows {
                for (y, &v) in src[(first + r) * n..(first + r + 1) * n].iter().enumerate() {
                    out[y * t.rows + r] = v;
                }
            }
            out
        };
        (gather(rh, kh), gather(rw, kw), kw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_diff;

    /// The plain path: `[B·H, N, d]` heads, full scores.
    fn plain(q: &Tensor, k: &Tensor, v: &Tensor, scale: Option<f32>, mask: Option<&Tensor>) -> Tensor {
        let (b, n, h, d) = q.dims4().unwrap();
        let heads = |t: &Tensor| {
            let (b, n, hh, d) = t.dims4().unwrap();
            let t = t.transpose(1, 2).unwrap().contiguous().unwrap();
            let rep = h / hh;
            t.unsqueeze(2)
                .unwrap()
                .broadcast_as((b, hh, rep, n, d))
                .unwrap()
                .reshape((b * h, n, d))
                .unwrap()
        };
        let mut s = heads(q).matmul(&heads(k).t().unwrap()).unwrap();
        if let Some(sc) = scale {
            s = (s * sc as f64).unwrap();
        }
        if let Some(m) = mask {
            s = s.broadcast_add(m).unwrap();
        }
        let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
        let dv = v.dim(3).unwrap();
        p.matmul(&heads(v))
            .unwrap()
            .reshape((b, h, n, dv))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, n, h, dv))
            .unwrap()
            .narrow(3, 0, d.min(dv))
            .unwrap()
    }

    #[test]
    fn equals_full_scores_with_strided_inputs_and_grouped_heads() {
        let dev = Device::Cpu;
        let (b, n, h, d) = (2, 150, 4, 16);
        let qkv = Tensor::randn(0f32, 1.0, (b, n, 3, h, d), &dev).unwrap();
        let (q, k, v) = (
            qkv.narrow(2, 0, 1).unwrap().squeeze(2).unwrap(),
            qkv.narrow(2, 1, 1).unwrap().squeeze(2).unwrap(),
            qkv.narrow(2, 2, 1).unwrap().squeeze(2).unwrap(),
        );
        let o = Options {
            scale: Some(0.25),
            bias: Bias::None,
            bf16_probs: false,
        };
        let ours = attention(&q, &k, &v, &o).unwrap().unwrap();
        let m = max_diff(&ours, &plain(&q, &k, &v, Some(0.25), None));
        assert!(m < 1e-5, "{m}");
        // two query heads per key/value head
        let (k2, v2) = (k.narrow(2, 0, 2).unwrap(), v.narrow(2, 0, 2).unwrap());
        let ours = attention(&q, &k2, &v2, &o).unwrap().unwrap();
        let m = max_diff(&ours, &plain(&q, &k2, &v2, Some(0.25), None));
        assert!(m < 1e-5, "{m}");
    }

    #[test]
    fn causal_sliding_window_equals_the_masked_scores() {
        let dev = Device::Cpu;
        let (n, h, d, window) = (200, 2, 8, 70);
        let q = Tensor::randn(0f32, 1.0, (1, n, h, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, n, h, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, n, h, d), &dev).unwrap();
        let mask: Vec<f32> = (0..n * n)
            .map(|x| {
                let (i, j) = (x / n, x % n);
                if j <= i && j + window >= i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (1, n, n), &dev).unwrap();
        let full = plain(&q, &k, &v, Some(0.3), Some(&mask));
        let o = Options {
            scale: Some(0.3),
            bias: Bias::Causal {
                first_row: 0,
                window: Some(window),
            },
            bf16_probs: false,
        };
        let ours = attention(&q, &k, &v, &o).unwrap().unwrap();
        assert!(max_diff(&ours, &full) < 1e-5);
        // only the last 30 query rows
        let tail = attention(
            &q.narrow(1, n - 30, 30).unwrap(),
            &k,
            &v,
            &Options {
                bias: Bias::Causal {
                    first_row: n - 30,
                    window: Some(window),
                },
                ..o
            },
        )
        .unwrap()
        .unwrap();
        assert!(max_diff(&tail, &full.narrow(1, n - 30, 30).unwrap()) < 1e-5);
    }

    #[test]
    fn rel_pos_bias_equals_the_broadcast_sums() {
        let dev = Device::Cpu;
        let (b, hh, ww, h, d) = (1, 5, 7, 2, 8);
        let n = hh * ww;
        let q = Tensor::randn(0f32, 1.0, (b, n, h, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, n, h, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, n, h, d), &dev).unwrap();
        let rel_h = Tensor::randn(0f32, 1.0, (b * h, n, hh), &dev).unwrap();
        let rel_w = Tensor::randn(0f32, 1.0, (b * h, n, ww), &dev).unwrap();
        let bias = rel_h
            .unsqueeze(3)
            .unwrap()
            .broadcast_add(&rel_w.unsqueeze(2).unwrap())
            .unwrap()
            .reshape((b * h, n, n))
            .unwrap();
        let full = plain(&q, &k, &v, None, Some(&bias));
        let o = Options {
            scale: None,
            bias: Bias::RelPos {
                rel_h: &rel_h,
                rel_w: &rel_w,
            },
            bf16_probs: false,
        };
        let ours = attention(&q, &k, &v, &o).unwrap().unwrap();
        assert!(max_diff(&ours, &full) < 1e-5);
    }
}
