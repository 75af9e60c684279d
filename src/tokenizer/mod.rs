//! The VideoLISA tokenizer: `tokenizer.json` through the `tokenizers` crate when the checkpoint
//! has one, otherwise HF's slow `LlamaTokenizer` rebuilt from `tokenizer.model` +
//! `tokenizer_config.json` + `added_tokens.json` + `special_tokens_map.json`; the `phi3_instruct`
//! prompt template, the instruction templates of the reference scripts, and LLaVA's `<image>`
//! splice (`tokenizer_image_token`).

pub mod sentencepiece;

use crate::error::{Error, Result};
use sentencepiece::{SentencePiece, SPACE};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// LLaVA's placeholder id for the visual tokens (never embedded).
pub const IMAGE_TOKEN_INDEX: i64 = -200;
/// The text placeholder replaced by the visual tokens.
pub const IMAGE_PLACEHOLDER: &str = "<image>";
/// The segmentation token VideoLISA adds (the paper's `<TRK>`).
pub const SEG_TOKEN: &str = "[SEG]";

/// An added token with HF's `AddedToken` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    /// Token text.
    pub content: String,
    /// Its id.
    pub id: u32,
    /// Swallows whitespace on its left.
    pub lstrip: bool,
    /// Swallows whitespace on its right.
    pub rstrip: bool,
    /// Only matches as a whole word.
    pub single_word: bool,
}

/// HF's slow `LlamaTokenizer` (transformers 4.41 semantics).
#[derive(Debug, Clone)]
pub struct SlowLlama {
    /// The SentencePiece model (with `add_dummy_prefix` off in non-legacy mode).
    pub sp: SentencePiece,
    /// Added tokens, split out of the text before SentencePiece sees it.
    pub added: Vec<AddedToken>,
    /// `legacy` (None in the config means true).
    pub legacy: bool,
    /// `add_prefix_space` (default true).
    pub add_prefix_space: bool,
    /// `add_bos_token` (default true).
    pub add_bos_token: bool,
    /// `add_eos_token` (default false).
    pub add_eos_token: bool,
    /// `<s>` id.
    pub bos_id: Option<u32>,
    /// `</s>` id.
    pub eos_id: Option<u32>,
    /// The unknown token text (for the non-legacy prefix trick).
    pub unk_token: String,
    /// `all_special_tokens` (bos, eos, unk, pad, additional_special_tokens).
    pub special: HashSet<String>,
}

/// Python's `str.isspace` for one character.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// A token text from a config value (`"<s>"` or `{"content": "<s>", …}`).
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A tokenizer side file (`tokenizer_config.json`, ...), when the checkpoint has it.
fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    crate::json::read_json(path, Error::Checkpoint).map(Some)
}

impl SlowLlama {
    /// Loads the slow tokenizer files of `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let model = dir.join("tokenizer.model");
        if !model.exists() {
            return Err(Error::MissingFile {
                path: model,
                what: "the checkpoint's tokenizer: tokenizer.json or tokenizer.model".into(),
            });
        }
        let mut sp = SentencePiece::open(&model)?;
        let cfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let map = read_json(&dir.join("special_tokens_map.json"))?.unwrap_or(Value::Null);
        let flag = |k: &str, d: bool| cfg.get(k).and_then(Value::as_bool).unwrap_or(d);
        let legacy = flag("legacy", true);
        if !legacy {
            sp.add_dummy_prefix = false;
        }
        let special_of =
            |k: &str| token_text(map.get(k).unwrap_or(&Value::Null)).or_else(|| token_text(cfg.get(k)?));
        let bos = special_of("bos_token").unwrap_or_else(|| "<s>".into());
        let eos = special_of("eos_token").unwrap_or_else(|| "</s>".into());
        let unk = special_of("unk_token").unwrap_or_else(|| "<unk>".into());
        let pad = special_of("pad_token");
        let mut special: HashSet<String> = [bos.clone(), eos.clone(), unk.clone()].into();
        special.extend(pad);
        for src in [&map, &cfg] {
            if let Some(a) = src.get("additional_special_tokens").and_then(Value::as_array) {
                special.extend(a.iter().filter_map(token_text));
            }
        }
        // added tokens: tokenizer_config.json's added_tokens_decoder (with flags), then
        // added_tokens.json, then the special tokens themselves (plain flags)
        let mut added: BTreeMap<u32, AddedToken> = BTreeMap::new();
        if let Some(d) = cfg.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, t) in d {
                let id: u32 = id.parse().map_err(|_| {
                    Error::Checkpoint(format!(
                        "{}: added token id {id:?} is not a number",
                        dir.display()
                    ))
                })?;
                let b = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
                let content = token_text(t).ok_or_else(|| {
                    Error::Checkpoint(format!("{}: added token {id} has no content", dir.display()))
                })?;
                added.insert(
                    id,
                    AddedToken {
                        content,
                        id,
                        lstrip: b("lstrip"),
                        rstrip: b("rstrip"),
                        single_word: b("single_word"),
                    },
                );
            }
        }
        let path = dir.join("added_tokens.json");
        if let Some(v) = read_json(&path)? {
            let o = v
                .as_object()
                .ok_or_else(|| Error::Checkpoint(format!("{}: expected an object", path.display())))?;
            for (content, id) in o {
                let id = id.as_u64().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| {
                    Error::Checkpoint(format!("{}: id of {content:?} is not a number", path.display()))
                })?;
                added.entry(id).or_insert_with(|| AddedToken {
                    content: content.clone(),
                    id,
                    lstrip: false,
                    rstrip: false,
                    single_word: false,
                });
            }
        }
        let known: HashSet<String> = added.values().map(|t| t.content.clone()).collect();
        let mut extra: Vec<String> = special.iter().filter(|s| !known.contains(*s)).cloned().collect();
        extra.sort();
        for s in extra {
            let id = sp.piece_to_id(&s);
            if id == sp.unk_id && s != unk {
                continue;
            }
            added.entry(id).or_insert(AddedToken {
                content: s,
                id,
                lstrip: false,
                rstrip: false,
                single_word: false,
            });
        }
        let id_of = |s: &str| added.values().find(|t| t.content == s).map(|t| t.id);
        Ok(SlowLlama {
            legacy,
            add_prefix_space: flag("add_prefix_space", true),
            add_bos_token: flag("add_bos_token", true),
            add_eos_token: flag("add_eos_token", false),
            bos_id: id_of(&bos),
            eos_id: id_of(&eos),
            unk_token: unk,
            special,
            added: added.into_values().collect(),
            sp,
        })
    }

    /// The added token starting at `s`, longest first.
    fn added_at(&self, s: &str) -> Option<&AddedToken> {
        self.added
            .iter()
            .filter(|t| !t.content.is_empty() && s.starts_with(t.content.as_str()))
            .max_by_key(|t| t.content.len())
    }

    /// Splits `text` into plain chunks and added tokens (`tokens_trie.split`).
    fn split_added(&self, text: &str) -> Vec<(String, Option<&AddedToken>)> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            if let Some(t) = self.added_at(&text[i..]) {
                if i > start {
                    out.push((text[start..i].to_string(), None));
                }
                out.push((t.content.clone(), Some(t)));
                i += t.content.len();
                start = i;
            } else {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            out.push((text[start..].to_string(), None));
        }
        out
    }

    /// `tokenize(text)`: the token strings, added tokens included.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        if self.legacy || text.is_empty() {
            return self.tokenize_inner(text);
        }
        let mut t = text.replace(SPACE, " ");
        if self.add_prefix_space {
            t.insert(0, SPACE);
        }
        let mut toks = self.tokenize_inner(&t);
        if toks.len() > 1 && toks[0] == SPACE.to_string() && self.special.contains(&toks[1]) {
            toks.remove(0);
        }
        toks
    }

    /// `PreTrainedTokenizer.tokenize`: split on added tokens honouring their strip flags, then
    /// SentencePiece on each plain chunk.
    fn tokenize_inner(&self, text: &str) -> Vec<String> {
        let mut parts = self.split_added(text);
        for i in 0..parts.len() {
            let Some(tok) = parts[i].1 else { continue };
            if tok.rstrip && i + 1 < parts.len() && !parts[i + 1].0.is_empty() {
                parts[i + 1].0 = parts[i + 1].0.trim_start_matches(py_space).to_string();
            }
            if tok.lstrip && i > 0 && !parts[i - 1].0.is_empty() {
                parts[i - 1].0 = parts[i - 1].0.trim_end_matches(py_space).to_string();
            }
            if tok.single_word && i > 0 && !parts[i - 1].0.is_empty() && !parts[i - 1].0.ends_with(' ') {
                let c = std::mem::take(&mut parts[i].0);
                parts[i - 1].0.push_str(&c);
            } else if tok.single_word
                && i + 1 < parts.len()
                && !parts[i + 1].0.is_empty()
                && !parts[i + 1].0.starts_with(' ')
            {
                let c = std::mem::take(&mut parts[i].0);
                parts[i + 1].0.insert_str(0, &c);
            }
        }
        let mut out = Vec::new();
        for (s, tok) in parts {
            if s.is_empty() {
                continue;
            }
            if tok.is_some() && self.added.iter().any(|t| t.content == s) {
                out.push(s);
            } else {
                out.extend(self.sp_tokenize(&s));
            }
        }
        out
    }

    /// `_tokenize`: SentencePiece pieces of a plain chunk (non-legacy: encode `unk + text` and
    /// drop the unknown token's pieces, so a leading space survives).
    fn sp_tokenize(&self, text: &str) -> Vec<String> {
        let pieces = |s: &str| self.sp.encode(s).into_iter().map(|p| p.0).collect::<Vec<_>>();
        if self.legacy || !(text.starts_with(SPACE) || text.starts_with(' ')) {
            return pieces(text);
        }
        let unk_len = pieces(&self.unk_token).len();
        let toks = pieces(&format!("{}{text}", self.unk_token));
        if toks.len() >= unk_len {
            toks[unk_len..].to_vec()
        } else {
            toks
        }
    }

    /// Id of one token string (added tokens first, then the vocabulary).
    pub fn token_to_id(&self, token: &str) -> u32 {
        self.added
            .iter()
            .find(|t| t.content == token)
            .map_or_else(|| self.sp.piece_to_id(token), |t| t.id)
    }

    /// `tokenizer(text).input_ids` (with or without BOS/EOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        let mut ids: Vec<u32> = self.tokenize(text).iter().map(|t| self.token_to_id(t)).collect();
        if add_special_tokens {
            if self.add_bos_token {
                if let Some(b) = self.bos_id {
                    ids.insert(0, b);
                }
            }
            if self.add_eos_token {
                ids.extend(self.eos_id);
            }
        }
        ids
    }
}

/// The checkpoint's tokenizer.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// `tokenizer.json` (HF fast tokenizer).
    Fast(Box<tokenizers::Tokenizer>),
    /// `tokenizer.model` + config files (HF slow `LlamaTokenizer`).
    Slow(Box<SlowLlama>),
}

impl Tokenizer {
    /// Loads `tokenizer.json` when `dir` has one, otherwise the slow-tokenizer files.
    pub fn open(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.exists() {
            let t = tokenizers::Tokenizer::from_file(&json)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", json.display())))?;
            return Ok(Tokenizer::Fast(Box::new(t)));
        }
        Ok(Tokenizer::Slow(Box::new(SlowLlama::open(dir)?)))
    }

    /// Which kind was loaded (`"tokenizer.json"` or `"tokenizer.model"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Fast(_) => "tokenizer.json",
            Tokenizer::Slow(_) => "tokenizer.model",
        }
    }

    /// `tokenizer(text, add_special_tokens=…).input_ids`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Fast(t) => Ok(t
                .encode(text, add_special_tokens)
                .map_err(|e| Error::Runtime(format!("tokenizer: {e}")))?
                .get_ids()
                .to_vec()),
            Tokenizer::Slow(t) => Ok(t.encode(text, add_special_tokens)),
        }
    }

    /// Vocabulary size including added tokens (`len(tokenizer)`).
    pub fn len(&self) -> usize {
        match self {
            Tokenizer::Fast(t) => t.get_vocab_size(true),
            Tokenizer::Slow(t) => {
                let max_added = t.added.iter().map(|a| a.id as usize + 1).max().unwrap_or(0);
                t.sp.len().max(max_added)
            }
        }
    }

    /// Whether the vocabulary is empty (never, for a loaded tokenizer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `[SEG]` id: `tokenizer("[SEG]", add_special_tokens=False).input_ids[-1]`, checked
    /// to be an added token (a checkpoint without `[SEG]` cannot segment).
    pub fn seg_token_id(&self) -> Result<u32> {
        let ids = self.encode(SEG_TOKEN, false)?;
        let id = *ids
            .last()
            .ok_or_else(|| Error::Checkpoint("the tokenizer encodes [SEG] to nothing".into()))?;
        let is_added = match self {
            Tokenizer::Fast(t) => t.token_to_id(SEG_TOKEN) == Some(id),
            Tokenizer::Slow(t) => t.added.iter().any(|a| a.content == SEG_TOKEN && a.id == id),
        };
        if !is_added {
            return Err(Error::Checkpoint(
                "the tokenizer has no [SEG] token: not a VideoLISA checkpoint (added_tokens.json / \
                 tokenizer_config.json should list \"[SEG]\")"
                    .into(),
            ));
        }
        Ok(id)
    }

    /// LLaVA's `tokenizer_image_token`: tokenizes the chunks around `<image>` (each with special
    /// tokens), drops the second chunk's BOS when the first starts with BOS, and puts
    /// [`IMAGE_TOKEN_INDEX`] between them.
    pub fn tokenizer_image_token(&self, prompt: &str) -> Result<Vec<i64>> {
        let chunks: Vec<Vec<i64>> = prompt
            .split(IMAGE_PLACEHOLDER)
            .map(|c| Ok(self.encode(c, true)?.into_iter().map(i64::from).collect()))
            .collect::<Result<_>>()?;
        let bos = self.encode("", true)?.first().map(|&b| i64::from(b));
        let mut ids = Vec::new();
        let mut offset = 0;
        if let (Some(first), Some(b)) = (chunks[0].first(), bos) {
            if *first == b {
                offset = 1;
                ids.push(b);
            }
        }
        for (i, c) in chunks.iter().enumerate() {
            if i > 0 {
                ids.push(IMAGE_TOKEN_INDEX);
            }
            ids.extend_from_slice(&c[offset.min(c.len())..]);
        }
        Ok(ids)
    }
}

/// Which instruction the user's text is wrapped in (the reference scripts differ).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Template {
    /// `chat.py`: the text as typed.
    Chat,
    /// MeViS / Ref-YouTube-VOS / Ref-DAVIS: `Please segment the {text.lower()} in this image.`
    #[default]
    Referring,
    /// ReasonVOS sentence: `{text}. Please output the segmentation masks.`
    ReasonSentence,
    /// ReasonVOS phrase: `Please segment the {text.lower()} in this scene.`
    ReasonPhrase,
}

impl Template {
    /// The instruction for `text`.
    pub fn instruction(self, text: &str) -> String {
        match self {
            Template::Chat => text.to_string(),
            Template::Referring => format!("Please segment the {} in this image.", text.to_lowercase()),
            Template::ReasonSentence => format!("{text}. Please output the segmentation masks."),
            Template::ReasonPhrase => format!("Please segment the {} in this scene.", text.to_lowercase()),
        }
    }
}

/// Refuses an instruction that holds `<image>` or `[SEG]`: the prompt must have exactly the one
/// `<image>` and the one `[SEG]` of the template, or the visual tokens and the hidden row read
/// would silently be the wrong ones.
pub fn check_instruction(instruction: &str) -> Result<()> {
    for special in [IMAGE_PLACEHOLDER, SEG_TOKEN] {
        if instruction.contains(special) {
            return Err(Error::Usage(format!(
                "the prompt {instruction:?} contains `{special}`, which the model's prompt template \
                 places itself; remove it from the text"
            )));
        }
    }
    Ok(())
}

/// The `phi3_instruct` conversation with `<image>\n{instruction}` from the user and the
/// hard-coded answer `Sure, [SEG].`.
pub fn phi3_prompt(instruction: &str) -> String {
    format!(
        "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n{IMAGE_PLACEHOLDER}\n{instruction}<|end|>\n\
         <|assistant|>\nSure, {SEG_TOKEN}.<|end|>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_special_tokens_are_refused() {
        assert!(check_instruction("the dog").is_ok());
        assert!(check_instruction("the dog [SEG]")
            .unwrap_err()
            .to_string()
            .contains("[SEG]"));
        assert!(check_instruction("<image> the dog").is_err());
        // the referring template lowercases, so `[SEG]` cannot survive it, but `<image>` can
        assert!(check_instruction(&Template::Referring.instruction("A [SEG] dog")).is_ok());
    }

    #[test]
    fn prompt_and_templates() {
        assert_eq!(
            phi3_prompt("X"),
            "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n<image>\nX<|end|>\n<|assistant|>\nSure, [SEG].<|end|>"
        );
        assert_eq!(
            Template::Referring.instruction("The Red CAR"),
            "Please segment the the red car in this image."
        );
        assert_eq!(
            Template::ReasonSentence.instruction("Which one runs?"),
            "Which one runs?. Please output the segmentation masks."
        );
    }
}
