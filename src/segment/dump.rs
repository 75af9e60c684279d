//! `--dump`: the intermediates of a `segment` call as safetensors, for comparing stage by stage
//! with the reference (sampled indices, visual tokens, per prompt the input ids, the hidden
//! row, the prompt embedding and the per-frame logits).

use crate::error::Result;
use crate::model::videolisa::PromptEmbedding;
use crate::sampling::Sampling;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Writes `dump.safetensors` in `dir`; `logits` per prompt when they were kept.
pub fn write_dump(
    dir: &Path,
    sampling: &Sampling,
    visual_tokens: &Tensor,
    prompts: &[PromptEmbedding],
    logits: Option<&[Tensor]>,
) -> Result<()> {
    let cpu = Device::Cpu;
    let idx = |v: &[usize]| Tensor::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), &cpu);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert("sparse_indices".into(), idx(&sampling.sparse)?);
    t.insert("dense_indices".into(), idx(&sampling.dense)?);
    t.insert(
        "visual_tokens".into(),
        visual_tokens.to_dtype(DType::F32)?.to_device(&cpu)?,
    );
    for (k, p) in prompts.iter().enumerate() {
        t.insert(
            format!("prompt_{k}.input_ids"),
            Tensor::new(p.input_ids.as_slice(), &cpu)?,
        );
        t.insert(format!("prompt_{k}.hidden"), p.hidden.to_device(&cpu)?);
        t.insert(format!("prompt_{k}.embedding"), p.embedding.to_device(&cpu)?);
        if let Some(l) = logits {
            t.insert(format!("prompt_{k}.logits"), l[k].to_device(&cpu)?);
        }
    }
    crate::output::write_safetensors(&dir.join("dump.safetensors"), &t)
}
