//! XMem's memory for one object (XMem2 `inference/kv_memory_store.py`, `memory_manager.py`,
//! `model/memory_util.py`): permanent memory (XMem++'s given frames, never consolidated),
//! temporary working memory, and long-term prototypes, read with the anisotropic L2
//! similarity and a top-k softmax over the memory axis.
//!
//! Keys, shrinkage and selection stay tensors (the similarity is two matrix products); values
//! and usage counters live on the host, because a top-k affinity has `k` non-zeros per query
//! pixel and reading it out as a gather costs `k·C_v` per pixel where the reference's dense
//! product costs `N·C_v`.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// Query pixels whose similarities to the whole memory are computed at once.
const QUERY_BLOCK: usize = 256;

/// The memory settings of XMem2's `VIDEO_INFERENCE_CONFIG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryConfig {
    /// Elements each query pixel reads (`top_k`, 30).
    pub top_k: usize,
    /// A working-memory frame every this many frames (`mem_every`, 10).
    pub mem_every: usize,
    /// Working memory is consolidated when it holds this many frames (`max_mid_term_frames`, 10).
    pub max_mid_term_frames: usize,
    /// Frames kept in working memory by a consolidation (`min_mid_term_frames`, 5).
    pub min_mid_term_frames: usize,
    /// Prototypes made by one consolidation (`num_prototypes`, 128).
    pub num_prototypes: usize,
    /// Long-term memory cap (`max_long_term_elements`, 10000).
    pub max_long_term_elements: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            top_k: 30,
            mem_every: 10,
            max_mid_term_frames: 10,
            min_mid_term_frames: 5,
            num_prototypes: 128,
            max_long_term_elements: 10000,
        }
    }
}

/// One key/value store (`KeyValueMemoryStore`): keys shared by every object, values per object.
#[derive(Debug, Clone, Default)]
pub struct KvStore {
    /// `[C_k, N]`.
    pub key: Option<Tensor>,
    /// `[1, N]`.
    pub shrinkage: Option<Tensor>,
    /// `[C_k, N]`; long-term memory has none.
    pub selection: Option<Tensor>,
    /// Per object, rows of `C_v` values for the store's last elements: an object that entered
    /// after the store held elements has no value for those (XMem2's object groups).
    pub values: Vec<Vec<f32>>,
    /// Summed affinity each element received (usage-counting stores only).
    pub use_count: Vec<f32>,
    /// Reads each element took part in, from 1e-7.
    pub life_count: Vec<f32>,
}

fn cat_opt(a: &Option<Tensor>, b: &Tensor) -> candle_core::Result<Tensor> {
    match a {
        Some(a) => Tensor::cat(&[a, b], 1),
        None => Ok(b.clone()),
    }
}

impl KvStore {
    /// Elements held.
    pub fn size(&self) -> usize {
        self.use_count.len()
    }

    /// Appends `n` elements (`add`): keys `[C_k, n]`, and per object `n` rows of values; objects
    /// beyond those held so far start here.
    pub fn add(
        &mut self,
        key: &Tensor,
        shrinkage: &Tensor,
        selection: Option<&Tensor>,
        values: &[Vec<f32>],
    ) -> Result<()> {
        if values.len() < self.values.len() {
            return Err(Error::Internal(format!(
                "XMem memory: {} objects' values added to a store holding {}",
                values.len(),
                self.values.len()
            )));
        }
        let n = key.dim(1)?;
        self.key = Some(cat_opt(&self.key, key)?);
        self.shrinkage = Some(cat_opt(&self.shrinkage, shrinkage)?);
        if let Some(s) = selection {
            self.selection = Some(cat_opt(&self.selection, s)?);
        }
        self.values.resize(values.len(), Vec::new());
        for (held, new) in self.values.iter_mut().zip(values) {
            held.extend_from_slice(new);
        }
        self.use_count.extend(std::iter::repeat_n(0.0, n));
        self.life_count.extend(std::iter::repeat_n(1e-7, n));
        Ok(())
    }

    /// Object `o`'s value of element `i` (`None` where the object had not entered yet).
    fn value(&self, o: usize, i: usize, cv: usize) -> Option<&[f32]> {
        let v = &self.values[o];
        let first = self.size() - v.len() / cv;
        (i >= first).then(|| &v[(i - first) * cv..(i - first + 1) * cv])
    }

    /// Keeps the elements whose `keep` is true, in order (every object must cover them all).
    fn retain(&mut self, keep: &[bool], cv: usize) -> Result<()> {
        let idx: Vec<u32> = (0..keep.len() as u32).filter(|&i| keep[i as usize]).collect();
        let dev = self
            .key
            .as_ref()
            .map(|k| k.device().clone())
            .unwrap_or(Device::Cpu);
        let ids = Tensor::new(idx.as_slice(), &dev)?;
        let pick = |t: &Option<Tensor>| -> candle_core::Result<Option<Tensor>> {
            t.as_ref().map(|t| t.index_select(&ids, 1)).transpose()
        };
        self.key = pick(&self.key)?;
        self.shrinkage = pick(&self.shrinkage)?;
        self.selection = pick(&self.selection)?;
        for v in &mut self.values {
            if v.len() != keep.len() * cv {
                return Err(Error::Internal(
                    "XMem memory: elements removed from a store an object covers only in part".into(),
                ));
            }
            let mut kept = Vec::with_capacity(idx.len() * cv);
            for &i in &idx {
                kept.extend_from_slice(&v[i as usize * cv..(i as usize + 1) * cv]);
            }
            *v = kept;
        }
        self.use_count = idx.iter().map(|&i| self.use_count[i as usize]).collect();
        self.life_count = idx.iter().map(|&i| self.life_count[i as usize]).collect();
        Ok(())
    }

    /// `use_count / life_count`.
    fn usage(&self) -> Vec<f32> {
        self.use_count
            .iter()
            .zip(&self.life_count)
            .map(|(u, l)| u / l)
            .collect()
    }

    /// `update_usage`: adds each element's affinity sum, and one read to every element.
    fn update_usage(&mut self, usage: &[f32]) {
        for ((u, l), a) in self.use_count.iter_mut().zip(&mut self.life_count).zip(usage) {
            *u += a;
            *l += 1.0;
        }
    }
}

/// `get_similarity` with selection, laid out `[queries, memory]`:
/// `(−(mk²)ᵀqe + 2·mkᵀ(qk⊙qe) − Σ qe⊙qk²) · ms / √C_k`.
pub fn similarity(mk: &Tensor, ms: &Tensor, qk: &Tensor, qe: &Tensor) -> candle_core::Result<Tensor> {
    let ck = mk.dim(0)?;
    let qe_t = qe.t()?.contiguous()?;
    let a_sq = qe_t.matmul(&mk.sqr()?)?;
    let two_ab = (qk.mul(qe)?.t()?.contiguous()?.matmul(mk)? * 2.0)?;
    let b_sq = qe.mul(&qk.sqr()?)?.sum_keepdim(0)?.t()?;
    let s = two_ab.sub(&a_sq)?.broadcast_sub(&b_sq)?;
    s.broadcast_mul(ms)? / (ck as f64).sqrt()
}

/// The top-k softmax of one query row of similarities (`do_softmax` with `top_k`: no maximum
/// subtracted, the similarities are ≤ 0): the `k` largest entries and their weights.
fn top_k_row(sims: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(sims.len());
    // The k best so far and the position of the worst of them; a later element enters only
    // when it beats that worst one, which after the first few hundred elements is rare: blocks
    // of 16 whose maximum does not beat it are passed over whole (a vectorised maximum).
    let mut best: Vec<(u32, f32)> = sims[..k]
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let worst = |b: &[(u32, f32)]| {
        (0..b.len())
            .min_by(|&x, &y| b[x].1.total_cmp(&b[y].1))
            .expect("k ≥ 1")
    };
    let mut w = worst(&best);
    let mut i = k;
    while i < sims.len() {
        let end = (i + 16).min(sims.len());
        let block = &sims[i..end];
        if block.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) > best[w].1 {
            for (j, &v) in block.iter().enumerate() {
                if v > best[w].1 {
                    best[w] = ((i + j) as u32, v);
                    w = worst(&best);
                }
            }
        }
        i = end;
    }
    let exps: Vec<f32> = best.iter().map(|&(_, v)| v.exp()).collect();
    let sum: f32 = exps.iter().sum();
    best.iter().zip(exps).map(|(&(i, _), e)| (i, e / sum)).collect()
}

/// Objects that entered memory with the same given frame (XMem2's object group): they read
/// the same memory elements, so they share one top-k affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The objects (indices into the per-object values).
    pub objects: std::ops::Range<usize>,
    /// Permanent-memory elements before the group entered (it has no values for them).
    pub perm_start: usize,
}

/// A query pixel's top-k elements and weights, per group.
type Rows = Vec<Vec<(u32, f32)>>;

/// `MemoryManager`: the three stores shared by a run's objects, and the consolidation between
/// them.
#[derive(Debug, Clone)]
pub struct MemoryManager {
    /// Settings.
    pub config: MemoryConfig,
    /// XMem++'s permanent working memory (the given frames).
    pub permanent: KvStore,
    /// Temporary working memory (every `mem_every`-th frame).
    pub temporary: KvStore,
    /// Long-term prototypes.
    pub long: KvStore,
    /// The object groups, in the order they entered.
    pub groups: Vec<Group>,
    /// Value channels.
    pub cv: usize,
    /// Key pixels of one frame.
    pub hw: usize,
    /// Consolidations so far (reported in dumps and tests).
    pub consolidations: usize,
    /// Times obsolete long-term elements were removed.
    pub removals: usize,
}

impl MemoryManager {
    /// Empty memory for values of `cv` channels.
    pub fn new(config: MemoryConfig, cv: usize) -> Self {
        MemoryManager {
            config,
            permanent: KvStore::default(),
            temporary: KvStore::default(),
            long: KvStore::default(),
            groups: Vec::new(),
            cv,
            hw: 0,
            consolidations: 0,
            removals: 0,
        }
    }

    /// Objects in memory.
    pub fn objects(&self) -> usize {
        self.groups.last().map_or(0, |g| g.objects.end)
    }

    /// The top-k rows of query pixels `start..start+len` for every group: each group reads
    /// long-term and working memory and the permanent elements from its entry on.
    fn top_k_rows(&self, raw: &Tensor, b: &[f32], ms: &[f32], scale: f32) -> Result<Vec<Rows>> {
        let (k, n) = (self.config.top_k, ms.len());
        let shared = self.long.size() + self.temporary.size();
        Ok(crate::model::with_host_slice(raw, |sim| {
            sim.par_chunks(n)
                .zip(b)
                .map_init(Vec::new, |buf: &mut Vec<f32>, (r, &b)| {
                    self.groups
                        .iter()
                        .map(|g| {
                            // the group's elements: the shared stores, then permanent memory
                            // from the group's entry on
                            let skip = g.perm_start;
                            buf.clear();
                            let at = |i: usize| (r[i] - b) * ms[i] * scale;
                            buf.extend((0..shared).map(at));
                            buf.extend((shared + skip..n).map(at));
                            let mut row = top_k_row(buf, k);
                            for e in row.iter_mut() {
                                if e.0 as usize >= shared {
                                    e.0 += skip as u32;
                                }
                            }
                            row
                        })
                        .collect()
                })
                .collect()
        })?)
    }

    /// Object `o`'s value of element `i` of the concatenated memory (long ‖ temporary ‖
    /// permanent).
    fn value(&self, o: usize, i: usize) -> &[f32] {
        let (nl, nt, cv) = (self.long.size(), self.temporary.size(), self.cv);
        let v = if i < nl {
            self.long.value(o, i, cv)
        } else if i < nl + nt {
            self.temporary.value(o, i - nl, cv)
        } else {
            self.permanent.value(o, i - nl - nt, cv)
        };
        v.expect("top-k reads only the elements its group has values for")
    }

    /// `match_memory`: reads the memory for a query key `[C_k, HW]` with selection, updates
    /// working and long-term usage (from the first group, which every element has values
    /// for), and returns each object's readout `[C_v, HW]`.
    pub fn match_memory(&mut self, qk: &Tensor, qe: &Tensor) -> Result<Vec<Tensor>> {
        let stores = [&self.long, &self.temporary, &self.permanent];
        let keys: Vec<&Tensor> = stores.iter().filter_map(|s| s.key.as_ref()).collect();
        let shr: Vec<&Tensor> = stores.iter().filter_map(|s| s.shrinkage.as_ref()).collect();
        let mk = Tensor::cat(&keys, 1)?;
        let ms: Vec<f32> = Tensor::cat(&shr, 1)?.flatten_all()?.to_vec1()?;
        // One product gives −(mk²)ᵀqe + 2·mkᵀ(qk⊙qe) for every (query, memory) pair; the
        // query's Σ qe⊙qk², the shrinkage and 1/√C_k are applied while scanning each row.
        let lhs = Tensor::cat(&[qe, &qk.mul(qe)?], 0)?.t()?.contiguous()?;
        let rhs = Tensor::cat(&[&mk.sqr()?.neg()?, &(&mk * 2.0)?], 0)?.contiguous()?;
        let b_sq: Vec<f32> = qe.mul(&qk.sqr()?)?.sum(0)?.to_vec1()?;
        let scale = 1.0 / (mk.dim(0)? as f32).sqrt();
        let (n, hw) = (ms.len(), b_sq.len());
        // Blocks of query pixels, so the similarities held at once do not grow with the memory
        // (up to ~27k elements) times the frame's pixels.
        let mut rows: Vec<Rows> = Vec::with_capacity(hw);
        for start in (0..hw).step_by(QUERY_BLOCK) {
            let len = QUERY_BLOCK.min(hw - start);
            let raw = lhs.narrow(0, start, len)?.matmul(&rhs)?;
            rows.extend(self.top_k_rows(&raw, &b_sq[start..start + len], &ms, scale)?);
        }
        let (nl, nt) = (self.long.size(), self.temporary.size());
        let mut usage = vec![0f32; n];
        for row in &rows {
            for &(i, w) in &row[0] {
                usage[i as usize] += w;
            }
        }
        let readouts = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| group.objects.clone().map(move |o| (g, o)))
            .map(|(g, o)| self.readout(&rows, g, o, qk.device()))
            .collect::<Result<Vec<_>>>()?;
        self.temporary.update_usage(&usage[nl..nl + nt]);
        if nl > 0 {
            self.long.update_usage(&usage[..nl]);
        }
        Ok(readouts)
    }

    /// Object `o`'s readout `[C_v, HW]` through its group `g`'s affinities.
    fn readout(&self, rows: &[Rows], g: usize, o: usize, dev: &Device) -> Result<Tensor> {
        let cv = self.cv;
        let mut out = vec![0f32; rows.len() * cv];
        out.par_chunks_mut(cv).zip(rows).for_each(|(out, row)| {
            for &(i, w) in &row[g] {
                for (x, v) in out.iter_mut().zip(self.value(o, i as usize)) {
                    *x += w * v;
                }
            }
        });
        let out = Tensor::from_vec(out, (rows.len(), cv), dev)?;
        Ok(out.t()?.contiguous()?)
    }

    /// `add_memory`: key `[C_k, HW]`, shrinkage `[1, HW]`, selection `[C_k, HW]`, each object's
    /// value `[C_v, HW]`; into permanent or working memory, then consolidation when working
    /// memory is full. Objects beyond those in memory form a new group; they can enter only
    /// through permanent memory before any frame was segmented (as `run_on_video` preloads).
    pub fn add_memory(
        &mut self,
        key: &Tensor,
        shrinkage: &Tensor,
        selection: &Tensor,
        values: &[Tensor],
        permanent: bool,
    ) -> Result<()> {
        self.hw = key.dim(1)?;
        let known = self.objects();
        if values.len() < known {
            return Err(Error::Internal(format!(
                "XMem memory: values of {} objects for a memory of {known}",
                values.len()
            )));
        }
        if values.len() > known {
            if !permanent || self.temporary.size() + self.long.size() > 0 {
                return Err(Error::Internal(
                    "XMem memory: new objects enter through permanent memory, before any frame is segmented"
                        .into(),
                ));
            }
            self.groups.push(Group {
                objects: known..values.len(),
                perm_start: self.permanent.size(),
            });
        }
        let rows = values
            .iter()
            .map(|v| Ok(v.to_dtype(DType::F32)?.t()?.flatten_all()?.to_vec1()?))
            .collect::<Result<Vec<Vec<f32>>>>()?;
        let store = if permanent {
            &mut self.permanent
        } else {
            &mut self.temporary
        };
        store.add(key, shrinkage, Some(selection), &rows)?;
        if self.temporary.size() >= self.config.max_mid_term_frames * self.hw {
            let cap = self.config.max_long_term_elements - self.config.num_prototypes;
            if self.long.size() >= cap {
                self.remove_obsolete_features(cap)?;
            }
            self.compress_features()?;
        }
        Ok(())
    }

    /// `remove_obsolete_features`: drops the least used long-term elements, keeping those
    /// used strictly more than the `size − max`-th least used. (XMem2 refuses this when there
    /// are several object groups; every group has a value for every long-term element here,
    /// so the same elements are dropped for all.)
    fn remove_obsolete_features(&mut self, max: usize) -> Result<()> {
        let usage = self.long.usage();
        let k = usage.len() - max;
        if k == 0 {
            return Ok(());
        }
        let mut sorted = usage.clone();
        sorted.sort_by(f32::total_cmp);
        let threshold = sorted[k - 1];
        let keep: Vec<bool> = usage.iter().map(|&u| u > threshold).collect();
        self.removals += 1;
        self.long.retain(&keep, self.cv)
    }

    /// `compress_features` + `consolidation`: all but the newest `min_mid_term_frames` of
    /// working memory become `num_prototypes` prototypes (the most used elements, their values
    /// and shrinkage "potentiated" by a softmax readout over the candidates) appended to
    /// long-term memory; working memory keeps its newest frames.
    fn compress_features(&mut self) -> Result<()> {
        let keep = self.config.min_mid_term_frames * self.hw;
        let t = &self.temporary;
        let nc = t.size() - keep;
        let usage = t.usage();
        let mut order: Vec<u32> = (0..nc as u32).collect();
        order.sort_by(|&a, &b| usage[b as usize].total_cmp(&usage[a as usize]));
        order.truncate(self.config.num_prototypes);
        let key = t.key.as_ref().expect("working memory has keys");
        let dev = key.device().clone();
        let ids = Tensor::new(order.as_slice(), &dev)?;
        let ck = key.narrow(1, 0, nc)?.contiguous()?;
        let cs = t
            .shrinkage
            .as_ref()
            .expect("working memory has shrinkage")
            .narrow(1, 0, nc)?
            .contiguous()?;
        let ce = t
            .selection
            .as_ref()
            .expect("working memory has selection")
            .narrow(1, 0, nc)?
            .contiguous()?;
        let pk = ck.index_select(&ids, 1)?;
        let pe = ce.index_select(&ids, 1)?;
        let aff = candle_nn::ops::softmax_last_dim(&similarity(&ck, &cs, &pk, &pe)?)?;
        let pv = t
            .values
            .iter()
            .map(|v| {
                let cv = Tensor::from_slice(&v[..nc * self.cv], (nc, self.cv), &dev)?;
                Ok(aff.matmul(&cv)?.flatten_all()?.to_vec1()?)
            })
            .collect::<Result<Vec<Vec<f32>>>>()?;
        let ps = aff.matmul(&cs.t()?)?.t()?.contiguous()?;
        let mut sieve = vec![false; t.size()];
        sieve[nc..].iter_mut().for_each(|s| *s = true);
        self.temporary.retain(&sieve, self.cv)?;
        self.long.add(&pk, &ps, None, &pv)?;
        self.consolidations += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_softmax_keeps_the_largest() {
        let row = [-5.0f32, -0.5, -3.0, -0.1, -9.0];
        let r = top_k_row(&row, 2);
        let mut ids: Vec<u32> = r.iter().map(|p| p.0).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 3]);
        let total: f32 = r.iter().map(|p| p.1).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let w3 = r.iter().find(|p| p.0 == 3).unwrap().1;
        let expect = (-0.1f32).exp() / ((-0.1f32).exp() + (-0.5f32).exp());
        assert!((w3 - expect).abs() < 1e-6);
        assert_eq!(top_k_row(&row[..1], 30).len(), 1);
        // past blocks of 16 that hold nothing better; an equal value does not displace, and the
        // first of equal worst ones is the one replaced
        let long: Vec<f32> = (0..100)
            .map(|i| if i == 77 { -0.01 } else { -1.0 - (i % 7) as f32 })
            .collect();
        let r = top_k_row(&long, 3);
        let mut ids: Vec<u32> = r.iter().map(|p| p.0).collect();
        ids.sort();
        assert_eq!(ids, vec![7, 14, 77]);
    }

    #[test]
    fn similarity_is_the_negative_weighted_distance() {
        let dev = Device::Cpu;
        let mk = Tensor::new(&[[1.0f32, 0.0], [2.0, 1.0]], &dev).unwrap();
        let ms = Tensor::new(&[[1.0f32, 2.0]], &dev).unwrap();
        let qk = Tensor::new(&[[0.5f32], [1.0]], &dev).unwrap();
        let qe = Tensor::new(&[[1.0f32], [0.5]], &dev).unwrap();
        let s: Vec<Vec<f32>> = similarity(&mk, &ms, &qk, &qe).unwrap().to_vec2().unwrap();
        let d0 = -(0.25 + 0.5 * 1.0) / 2f32.sqrt();
        let d1 = -(0.25 + 0.0) * 2.0 / 2f32.sqrt();
        assert!(
            (s[0][0] - d0).abs() < 1e-6 && (s[0][1] - d1).abs() < 1e-6,
            "{s:?}"
        );
    }
}
