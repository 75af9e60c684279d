//! The prompt stage: CLIP and the projector on the sampled sparse frames, then the LLM once per
//! prompt for its `[SEG]` embedding. Used once per video, and again at every `--refresh` of a
//! live run.

use super::prompt::PreparedPrompt;
use super::stage::StageSeconds;
use crate::error::Result;
use crate::model::videolisa::{PromptEmbedding, VideoLisa};
use crate::preprocess::{ClipTransform, Planar};
use crate::sampling::Sampling;
use crate::video::FrameSource;
use candle_core::Tensor;
use std::collections::HashMap;
use std::time::Instant;

/// The CLIP inputs of a video's sparse frames, decoded and preprocessed (no model needed, so
/// a batch prepares the next video's while the current one is on the model).
pub struct SparseInputs {
    /// The sampling they were made for.
    pub sampling: Sampling,
    /// Preprocessed CLIP input of each distinct sparse frame, by frame index.
    pub frames: HashMap<usize, Planar>,
    /// Seconds spent decoding and preprocessing.
    pub decode: f64,
    /// Seconds spent preprocessing.
    pub preprocess: f64,
}

impl SparseInputs {
    /// Samples `video` and decodes and preprocesses each distinct sparse frame once.
    pub fn read(
        transform: &ClipTransform,
        video: &dyn FrameSource,
        n_sparse: usize,
        n_dense: usize,
    ) -> Result<Self> {
        let sampling = Sampling::new(video.info().frames, n_sparse, n_dense)?;
        let (mut decode, mut preprocess) = (0.0, 0.0);
        let mut frames = HashMap::new();
        let mut last = Instant::now();
        video.visit(&sampling.sparse, &mut |i, img| {
            decode += last.elapsed().as_secs_f64();
            let t = Instant::now();
            frames.insert(i, transform.apply(img));
            preprocess += t.elapsed().as_secs_f64();
            last = Instant::now();
            Ok(())
        })?;
        Ok(SparseInputs {
            sampling,
            frames,
            decode,
            preprocess,
        })
    }
}

/// The visual tokens of a video's sparse frames (CLIP + projector); charges the inputs'
/// decoding and the CLIP time to `sec`.
pub fn encode_sparse_frames(
    model: &VideoLisa,
    inputs: SparseInputs,
    sec: &mut StageSeconds,
) -> Result<Tensor> {
    sec.decode += inputs.decode;
    sec.preprocess += inputs.preprocess;
    let dev = model.options.device.clone();
    let pixels = inputs
        .sampling
        .sparse
        .iter()
        .map(|i| {
            let p = &inputs.frames[i];
            Tensor::from_slice(&p.data, (p.channels, p.height, p.width), &dev)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let pixels = Tensor::stack(&pixels, 0)?;
    let t = Instant::now();
    let tokens = model.visual_tokens(&pixels, &inputs.sampling.dense)?;
    dev.synchronize()?; // GPU work is asynchronous: charge it to this stage
    sec.clip = t.elapsed().as_secs_f64();
    Ok(tokens)
}

/// Each prompt's `[SEG]` answer from the LLM.
pub fn prompt_embeddings(
    model: &VideoLisa,
    prepared: &[PreparedPrompt],
    visual_tokens: &Tensor,
    sec: &mut StageSeconds,
) -> Result<Vec<PromptEmbedding>> {
    let t = Instant::now();
    let embeddings = prepared
        .iter()
        .map(|p| model.prompt_embedding(&p.ids, visual_tokens))
        .collect::<Result<Vec<_>>>()?;
    model.options.device.synchronize()?;
    sec.llm = t.elapsed().as_secs_f64();
    Ok(embeddings)
}
