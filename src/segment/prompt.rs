//! The prompts of a run: what the user wrote, how it is worded for the model and where its
//! masks go, tokenized and checked against the model's context before any frame is decoded.

use crate::error::{Error, Result};
use crate::model::videolisa::VideoLisa;
use crate::sampling::Sampling;
use crate::tokenizer::{check_instruction, Template};

/// One prompt: the user's text, how it is worded for the model, where its masks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSpec {
    /// The user's text.
    pub text: String,
    /// Instruction template.
    pub template: Template,
    /// Output sub-directory (relative to `out`).
    pub dir: String,
}

impl PromptSpec {
    /// `prompt_<k>` specs for `texts` with one template.
    pub fn numbered(texts: &[String], template: Template) -> Vec<PromptSpec> {
        texts
            .iter()
            .enumerate()
            .map(|(k, t)| PromptSpec {
                text: t.clone(),
                template,
                dir: prompt_dir(k),
            })
            .collect()
    }
}

/// Output sub-directory of prompt `k`.
pub fn prompt_dir(k: usize) -> String {
    format!("prompt_{k}")
}

/// A prompt worded, tokenized and checked, before any model work.
pub struct PreparedPrompt {
    /// The instruction the template made of the text.
    pub instruction: String,
    /// Its input ids, with the image placeholder.
    pub ids: Vec<i64>,
}

/// Words, tokenizes and checks every prompt: no typed `<image>`/`[SEG]`, and the whole
/// sequence within the model's context.
pub fn prepare_prompts(
    model: &VideoLisa,
    prompts: &[PromptSpec],
    sampling: &Sampling,
) -> Result<Vec<PreparedPrompt>> {
    if prompts.is_empty() {
        return Err(Error::Usage("give at least one prompt".into()));
    }
    let n_visual = model.visual_token_count(sampling.sparse.len(), sampling.dense.len());
    prompts
        .iter()
        .map(|spec| {
            let instruction = spec.template.instruction(&spec.text);
            check_instruction(&instruction)?;
            let ids = model.input_ids(&instruction)?;
            model.check_sequence(&ids, n_visual)?;
            Ok(PreparedPrompt { instruction, ids })
        })
        .collect()
}
