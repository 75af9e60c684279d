//! `InferenceCore` for one object (XMem2 `inference/inference_core.py`) with XMem++'s
//! permanent memory, driven the way `run_on_video._inference_on_video` drives it: the given
//! frames are preloaded into permanent memory, then every frame is stepped in order.

use super::memory::{MemoryConfig, MemoryManager};
use super::{aggregate, FrameKey, XMem};
use crate::Result;
use candle_core::{DType, Tensor};

/// What one step computed, for dumps and parity checks.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// `[2, H, W]` background/object probabilities at working resolution (padded).
    pub prob: Tensor,
    /// The memory readout `[C_v, HW]` (frames that were segmented).
    pub readout: Option<Tensor>,
    /// 1/4-scale logits (frames that were segmented).
    pub logits4: Option<Tensor>,
    /// The value written to memory (memory frames).
    pub value: Option<Tensor>,
}

/// One object's propagation state: its memory, its hidden state and the frame counters.
#[derive(Debug, Clone)]
pub struct InferenceCore {
    /// The three memories.
    pub memory: MemoryManager,
    /// `[1, C_h, h, w]`, created by the first given mask.
    pub hidden: Option<Tensor>,
    curr_ti: i64,
    last_mem_ti: i64,
}

impl InferenceCore {
    /// A fresh state for values of `net.value_dim` channels.
    pub fn new(net: &XMem, config: MemoryConfig) -> Self {
        InferenceCore {
            memory: MemoryManager::new(config, net.value_dim),
            hidden: None,
            curr_ti: -1,
            last_mem_ti: 0,
        }
    }

    fn hidden_for(&mut self, net: &XMem, fk: &FrameKey) -> Result<Tensor> {
        if self.hidden.is_none() {
            let (_, _, h, w) = fk.f16.dims4()?;
            self.hidden = Some(Tensor::zeros((1, net.hidden_dim, h, w), DType::F32, &net.device)?);
        }
        Ok(self.hidden.clone().expect("just created"))
    }

    /// `put_to_permanent_memory`: a given frame and its padded mask `[1, 1, H, W]` into
    /// permanent memory (no deep update). Returns the value written.
    pub fn put_to_permanent_memory(&mut self, net: &XMem, fk: &FrameKey, mask: &Tensor) -> Result<Tensor> {
        let prob = aggregate(&mask.squeeze(0)?)?.narrow(0, 1, 1)?.unsqueeze(0)?;
        let hidden = self.hidden_for(net, fk)?;
        let (value, _) = net.encode_value(fk, &hidden, &prob, false)?;
        self.add(fk, &value, true)?;
        Ok(value)
    }

    fn add(&mut self, fk: &FrameKey, value: &Tensor, permanent: bool) -> Result<()> {
        let v = value.squeeze(0)?.flatten_from(1)?;
        self.memory
            .add_memory(&fk.key, &fk.shrinkage, &fk.selection, &v, permanent)
    }

    /// `step`: segments the next frame from memory, or takes its given mask (already in
    /// permanent memory, so not stored again); every `mem_every` frames, and on given frames,
    /// the frame's value is encoded with a deep hidden update and (unless given) stored in
    /// working memory. The last frame (`end`) updates nothing.
    pub fn step(
        &mut self,
        net: &XMem,
        fk: &FrameKey,
        mask: Option<&Tensor>,
        end: bool,
    ) -> Result<StepOutput> {
        self.curr_ti += 1;
        let every = self.memory.config.mem_every as i64;
        let is_mem_frame = (self.curr_ti - self.last_mem_ti >= every || mask.is_some()) && !end;
        let is_deep_update = is_mem_frame;
        let is_normal_update = !is_deep_update && !end;
        let mut out = StepOutput {
            prob: Tensor::zeros(1, DType::F32, &net.device)?,
            readout: None,
            logits4: None,
            value: None,
        };
        out.prob = match mask {
            Some(m) => {
                self.hidden_for(net, fk)?;
                aggregate(&m.squeeze(0)?)?
            }
            None => {
                let readout = self.memory.match_memory(&fk.key, &fk.selection)?;
                let (_, _, h, w) = fk.f16.dims4()?;
                let r = readout.reshape((1, net.value_dim, h, w))?;
                let hidden = self.hidden_for(net, fk)?;
                let s = net.segment(fk, &r, &hidden, is_normal_update)?;
                if let Some(h) = s.hidden {
                    self.hidden = Some(h);
                }
                out.readout = Some(readout);
                out.logits4 = Some(s.logits4);
                s.prob
            }
        };
        if is_mem_frame {
            let hidden = self.hidden_for(net, fk)?;
            let prob = out.prob.narrow(0, 1, 1)?.unsqueeze(0)?;
            let (value, hidden) = net.encode_value(fk, &hidden, &prob, is_deep_update)?;
            if mask.is_none() {
                self.add(fk, &value, false)?;
            }
            self.last_mem_ti = self.curr_ti;
            self.hidden = Some(hidden);
            out.value = Some(value);
        }
        Ok(out)
    }
}

/// The order CPython iterates a `set` of small non-negative ints in (hash = value; open
/// addressing, 9 linear probes where the table allows, then perturbed probing; the table
/// starts at 8 slots and grows ×4 when 3/5 full): XMem2 preloads its given frames in this
/// order.
pub fn python_set_order(items: &[usize]) -> Vec<usize> {
    fn insert(table: &mut [Option<usize>], v: usize) {
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
    let mut table: Vec<Option<usize>> = vec![None; 8];
    let mut used = 0usize;
    for &v in items {
        if table.contains(&Some(v)) {
            continue;
        }
        insert(&mut table, v);
        used += 1;
        if used * 5 >= (table.len() - 1) * 3 {
            let mut size = 8;
            while size <= used * 4 {
                size <<= 1;
            }
            let old: Vec<usize> = table.iter().flatten().copied().collect();
            table = vec![None; size];
            for o in old {
                insert(&mut table, o);
            }
        }
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
