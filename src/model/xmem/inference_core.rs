//! `InferenceCore` for the objects of one run (XMem2 `inference/inference_core.py`) with
//! XMem++'s permanent memory, driven the way `run_on_video._inference_on_video` drives it: the given
//! frames are preloaded into permanent memory, then every frame is stepped in order.

use super::memory::{MemoryConfig, MemoryManager};
use super::{aggregate, FrameKey, XMem};
use crate::Result;
use candle_core::{DType, Tensor};

/// What one step computed, for dumps and parity checks.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// `[1 + n, H, W]` background and object probabilities at working resolution (padded).
    pub prob: Tensor,
    /// Per object, the memory readout `[C_v, HW]` (frames that were segmented).
    pub readout: Vec<Tensor>,
    /// Per object, the 1/4-scale logits (frames that were segmented).
    pub logits4: Vec<Tensor>,
    /// Per object, the value written to memory (memory frames).
    pub value: Vec<Tensor>,
}

/// A run's propagation state: the memory its objects share, each object's hidden state, and
/// the frame counters.
#[derive(Debug, Clone)]
pub struct InferenceCore {
    /// The three memories.
    pub memory: MemoryManager,
    /// Per object, `[1, C_h, h, w]`, created when the object's first given mask is stored.
    pub hidden: Vec<Tensor>,
    curr_ti: i64,
    last_mem_ti: i64,
}

impl InferenceCore {
    /// A fresh state for values of `net.value_dim` channels.
    pub fn new(net: &XMem, config: MemoryConfig) -> Self {
        InferenceCore {
            memory: MemoryManager::new(config, net.value_dim),
            hidden: Vec::new(),
            curr_ti: -1,
            last_mem_ti: 0,
        }
    }

    /// `create_hidden_state`: zero hidden states for objects up to `n`.
    fn create_hidden(&mut self, net: &XMem, fk: &FrameKey, n: usize) -> Result<()> {
        let (_, _, h, w) = fk.f16.dims4()?;
        while self.hidden.len() < n {
            self.hidden
                .push(Tensor::zeros((1, net.hidden_dim, h, w), DType::F32, &net.device)?);
        }
        Ok(())
    }

    /// `encode_value` for every object of the aggregated probabilities `[1 + n, H, W]` (each
    /// object sees the others' summed probability); returns the values and hidden states.
    fn encode_values(
        &self,
        net: &XMem,
        fk: &FrameKey,
        prob: &Tensor,
        deep: bool,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let n = prob.dim(0)? - 1;
        let object = |o: usize| prob.narrow(0, 1 + o, 1)?.unsqueeze(0);
        let (mut values, mut hidden) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for o in 0..n {
            let mut others: Option<Tensor> = None;
            for j in (0..n).filter(|&j| j != o) {
                let p = object(j)?;
                others = Some(match others {
                    Some(sum) => (sum + p)?,
                    None => p,
                });
            }
            let (v, h) = net.encode_value(fk, &self.hidden[o], &object(o)?, others.as_ref(), deep)?;
            values.push(v);
            hidden.push(h);
        }
        Ok((values, hidden))
    }

    /// `put_to_permanent_memory`: a given frame and its padded one-hot masks `[n, H, W]` (one
    /// plane per object known so far) into permanent memory (no deep update). Returns the
    /// values written.
    pub fn put_to_permanent_memory(
        &mut self,
        net: &XMem,
        fk: &FrameKey,
        masks: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let prob = aggregate(masks)?;
        self.create_hidden(net, fk, masks.dim(0)?)?;
        let (values, _) = self.encode_values(net, fk, &prob, false)?;
        self.add(fk, &values, true)?;
        Ok(values)
    }

    fn add(&mut self, fk: &FrameKey, values: &[Tensor], permanent: bool) -> Result<()> {
        let v = values
            .iter()
            .map(|v| v.squeeze(0)?.flatten_from(1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.memory
            .add_memory(&fk.key, &fk.shrinkage, &fk.selection, &v, permanent)
    }

    /// Segments the frame from memory: every object's readout through the decoder, their
    /// probabilities aggregated; the hidden states are updated when `update`.
    fn segment(&mut self, net: &XMem, fk: &FrameKey, update: bool, out: &mut StepOutput) -> Result<Tensor> {
        let readouts = self.memory.match_memory(&fk.key, &fk.selection)?;
        let (_, _, h, w) = fk.f16.dims4()?;
        let mut probs = Vec::with_capacity(readouts.len());
        for (o, readout) in readouts.into_iter().enumerate() {
            let r = readout.reshape((1, net.value_dim, h, w))?;
            let s = net.segment(fk, &r, &self.hidden[o], update)?;
            if let Some(h) = s.hidden {
                self.hidden[o] = h;
            }
            probs.push(s.prob);
            out.readout.push(readout);
            out.logits4.push(s.logits4);
        }
        Ok(aggregate(&Tensor::cat(&probs, 0)?)?)
    }

    /// `step`: segments the next frame from memory, or takes its given masks `[n, H, W]`
    /// (already in permanent memory, so not stored again); every `mem_every` frames, and on
    /// given frames, the frame's values are encoded with a deep hidden update and (unless
    /// given) stored in working memory. The last frame (`end`) updates nothing.
    pub fn step(
        &mut self,
        net: &XMem,
        fk: &FrameKey,
        masks: Option<&Tensor>,
        end: bool,
    ) -> Result<StepOutput> {
        self.curr_ti += 1;
        let every = self.memory.config.mem_every as i64;
        let is_mem_frame = (self.curr_ti - self.last_mem_ti >= every || masks.is_some()) && !end;
        let is_deep_update = is_mem_frame;
        let is_normal_update = !is_deep_update && !end;
        let mut out = StepOutput {
            prob: Tensor::zeros(1, DType::F32, &net.device)?,
            readout: Vec::new(),
            logits4: Vec::new(),
            value: Vec::new(),
        };
        out.prob = match masks {
            Some(m) => {
                self.create_hidden(net, fk, m.dim(0)?)?;
                aggregate(m)?
            }
            None => self.segment(net, fk, is_normal_update, &mut out)?,
        };
        if is_mem_frame {
            let (values, hidden) = self.encode_values(net, fk, &out.prob, is_deep_update)?;
            if masks.is_none() {
                self.add(fk, &values, false)?;
            }
            self.last_mem_ti = self.curr_ti;
            self.hidden = hidden;
            out.value = values;
        }
        Ok(out)
    }
}

/// Inserts the small non-negative int `v` into a CPython set table (hash = value; open
/// addressing: 9 linear probes where the table allows, then perturbed probing).
fn set_insert(table: &mut [Option<usize>], v: usize) {
    let mask = table.len() - 1;
    let mut perturb = v;
    let mut i = v & mask;
    loop {
        if table[i].is_none() {
            table[i] = Some(v);
            return;
        }
        if i + 9 <= mask {
            for j in 1..=9 {
                if table[i + j].is_none() {
                    table[i + j] = Some(v);
                    return;
                }
            }
        }
        perturb >>= 5;
        i = (i * 5 + 1 + perturb) & mask;
    }
}

/// The smallest CPython set table (from 8 slots) larger than `min_used`.
fn set_table_size(min_used: usize) -> usize {
    let mut size = 8;
    while size <= min_used {
        size <<= 1;
    }
    size
}

/// The order CPython iterates a `set` of small non-negative ints built by adding `items` one by
/// one (the table starts at 8 slots and grows to hold 4× its elements when 3/5 full): XMem2
/// preloads its given frames in this order.
pub fn python_set_order(items: &[usize]) -> Vec<usize> {
    let mut table: Vec<Option<usize>> = vec![None; 8];
    let mut used = 0usize;
    for &v in items {
        if table.contains(&Some(v)) {
            continue;
        }
        set_insert(&mut table, v);
        used += 1;
        if used * 5 >= (table.len() - 1) * 3 {
            let old: Vec<usize> = table.iter().flatten().copied().collect();
            table = vec![None; set_table_size(used * 4)];
            for o in old {
                set_insert(&mut table, o);
            }
        }
    }
    table.into_iter().flatten().collect()
}

/// The order CPython iterates a copy of a set whose iteration order is `items` (`set_merge`
/// into an empty set: one table sized for twice the elements when they would fill 3/5 of 8
/// slots, filled in `items`' order).
pub fn python_set_copy_order(items: &[usize]) -> Vec<usize> {
    let n = items.len();
    let size = if n * 5 >= 7 * 3 { set_table_size(n * 2) } else { 8 };
    let mut table: Vec<Option<usize>> = vec![None; size];
    for &v in items {
        set_insert(&mut table, v);
    }
    table.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_order_is_cpythons() {
        assert_eq!(python_set_order(&[13, 41, 74, 106]), vec![41, 74, 13, 106]);
        assert_eq!(python_set_order(&[17, 52, 92, 132]), vec![17, 52, 132, 92]);
        assert_eq!(python_set_order(&[0, 0, 0, 0]), vec![0]);
        assert_eq!(python_set_order(&[3, 1, 2]), vec![1, 2, 3]);
    }
}
