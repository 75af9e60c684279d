//! A SentencePiece BPE model read from `tokenizer.model` (the protobuf `ModelProto`) and its
//! encoder: identity normalisation with the dummy-prefix / extra-whitespace / escape options,
//! score-ordered pair merging (highest score first, leftmost on ties), unused-piece
//! re-segmentation and byte fallback, as the SentencePiece library encodes for Llama models.

use crate::error::{Error, Result};
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// The whitespace mark SentencePiece writes for a space (U+2581).
pub const SPACE: char = '\u{2581}';

/// `SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary piece.
    Normal,
    /// The unknown piece.
    Unknown,
    /// A control symbol (`<s>`, `</s>`): never produced from text.
    Control,
    /// A user-defined symbol: always one piece.
    UserDefined,
    /// A piece kept in the vocabulary but never emitted.
    Unused,
    /// A byte-fallback piece `<0xXX>`.
    Byte,
}

/// One vocabulary entry.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The piece text (`▁the`, `<0x0A>`).
    pub piece: String,
    /// Merge priority (higher merges first).
    pub score: f32,
    /// Kind of piece.
    pub kind: PieceType,
}

/// A loaded SentencePiece BPE model.
#[derive(Debug, Clone)]
pub struct SentencePiece {
    /// The vocabulary in id order.
    pub pieces: Vec<Piece>,
    /// Prepend `▁` to the input (`normalizer_spec.add_dummy_prefix`).
    pub add_dummy_prefix: bool,
    /// Strip and collapse spaces (`normalizer_spec.remove_extra_whitespaces`).
    pub remove_extra_whitespaces: bool,
    /// Write spaces as `▁` (`normalizer_spec.escape_whitespaces`).
    pub escape_whitespaces: bool,
    /// Unknown characters become their UTF-8 bytes (`trainer_spec.byte_fallback`).
    pub byte_fallback: bool,
    /// Id of the unknown piece.
    pub unk_id: u32,
    /// Pieces the merger may form (normal, user-defined, unused).
    mergeable: HashMap<String, u32>,
    /// Every piece by text.
    by_text: HashMap<String, u32>,
    /// Ids of `<0x00>`..`<0xFF>`.
    bytes: [Option<u32>; 256],
    /// User-defined symbols, longest first.
    user_defined: Vec<String>,
}

/// Minimal protobuf reader: (field number, wire type, payload).
struct Proto<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

impl<'a> Proto<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Proto { buf, pos: 0 }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn next_field(&mut self) -> Option<std::result::Result<(u64, Value<'a>), ()>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let Some(key) = self.varint() else {
            return Some(Err(()));
        };
        let value = match key & 7 {
            0 => self.varint().map(Value::Varint),
            1 => {
                self.pos += 8;
                (self.pos <= self.buf.len()).then_some(Value::Fixed64)
            }
            2 => self.varint().and_then(|n| {
                let start = self.pos;
                let end = start.checked_add(usize::try_from(n).ok()?)?;
                let b = self.buf.get(start..end)?;
                self.pos = end;
                Some(Value::Bytes(b))
            }),
            5 => {
                let b = self.buf.get(self.pos..self.pos + 4)?;
                self.pos += 4;
                Some(Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            _ => None,
        };
        Some(value.map(|v| (key >> 3, v)).ok_or(()))
    }
}

/// Agenda entry: a candidate merge of symbols `left` and `right`.
#[derive(PartialEq)]
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // max-heap: higher score first, then the leftmost pair
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl SentencePiece {
    /// Reads `tokenizer.model`.
    pub fn open(path: &Path) -> Result<Self> {
        let buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&buf).map_err(|m| Error::Checkpoint(format!("{}: {m}", path.display())))
    }

    /// Parses a serialized `ModelProto`.
    pub fn from_bytes(buf: &[u8]) -> std::result::Result<Self, String> {
        let bad = || "not a SentencePiece model (malformed protobuf)".to_string();
        let mut pieces = Vec::new();
        let (mut model_type, mut byte_fallback) = (1u64, false);
        let (mut dummy, mut extra_ws, mut escape, mut charsmap) = (true, true, true, false);
        let mut top = Proto::new(buf);
        while let Some(f) = top.next_field() {
            match f.map_err(|()| bad())? {
                (1, Value::Bytes(b)) => {
                    let mut p = Piece {
                        piece: String::new(),
                        score: 0.0,
                        kind: PieceType::Normal,
                    };
                    let mut r = Proto::new(b);
                    while let Some(f) = r.next_field() {
                        match f.map_err(|()| bad())? {
                            (1, Value::Bytes(s)) => {
                                p.piece = String::from_utf8(s.to_vec()).map_err(|_| bad())?
                            }
                            (2, Value::Fixed32(s)) => p.score = f32::from_bits(s),
                            (3, Value::Varint(t)) => {
                                p.kind = match t {
                                    1 => PieceType::Normal,
                                    2 => PieceType::Unknown,
                                    3 => PieceType::Control,
                                    4 => PieceType::UserDefined,
                                    5 => PieceType::Unused,
                                    6 => PieceType::Byte,
                                    _ => return Err(format!("piece {}: unknown type {t}", pieces.len())),
                                }
                            }
                            _ => {}
                        }
                    }
                    pieces.push(p);
                }
                (2, Value::Bytes(b)) => {
                    let mut r = Proto::new(b);
                    while let Some(f) = r.next_field() {
                        match f.map_err(|()| bad())? {
                            (3, Value::Varint(t)) => model_type = t,
                            (35, Value::Varint(v)) => byte_fallback = v != 0,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(b)) => {
                    let mut r = Proto::new(b);
                    while let Some(f) = r.next_field() {
                        match f.map_err(|()| bad())? {
                            (2, Value::Bytes(m)) => charsmap = !m.is_empty(),
                            (3, Value::Varint(v)) => dummy = v != 0,
                            (4, Value::Varint(v)) => extra_ws = v != 0,
                            (5, Value::Varint(v)) => escape = v != 0,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if pieces.is_empty() {
            return Err(bad());
        }
        if model_type != 2 {
            return Err(format!(
                "SentencePiece model type {model_type} is not BPE (2); Llama/Phi-3 tokenizers are BPE"
            ));
        }
        if charsmap {
            return Err(
                "the normalizer has a precompiled character map (e.g. nmt_nfkc); only the \
                        identity normalizer of Llama/Phi-3 tokenizers is supported"
                    .into(),
            );
        }
        Ok(Self::build(pieces, dummy, extra_ws, escape, byte_fallback))
    }

    fn build(pieces: Vec<Piece>, dummy: bool, extra_ws: bool, escape: bool, byte_fallback: bool) -> Self {
        let mut mergeable = HashMap::new();
        let mut by_text = HashMap::new();
        let mut bytes = [None; 256];
        let mut user_defined = Vec::new();
        let mut unk_id = 0;
        for (i, p) in pieces.iter().enumerate() {
            let id = i as u32;
            by_text.entry(p.piece.clone()).or_insert(id);
            match p.kind {
                PieceType::Normal | PieceType::Unused => {
                    mergeable.insert(p.piece.clone(), id);
                }
                PieceType::UserDefined => {
                    mergeable.insert(p.piece.clone(), id);
                    user_defined.push(p.piece.clone());
                }
                PieceType::Unknown => unk_id = id,
                PieceType::Byte => {
                    if let Some(h) = p.piece.strip_prefix("<0x").and_then(|s| s.strip_suffix('>')) {
                        if let Ok(b) = u8::from_str_radix(h, 16) {
                            bytes[b as usize] = Some(id);
                        }
                    }
                }
                PieceType::Control => {}
            }
        }
        user_defined.sort_by_key(|s| std::cmp::Reverse(s.len()));
        SentencePiece {
            pieces,
            add_dummy_prefix: dummy,
            remove_extra_whitespaces: extra_ws,
            escape_whitespaces: escape,
            byte_fallback,
            unk_id,
            mergeable,
            by_text,
            bytes,
            user_defined,
        }
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the vocabulary is empty (never, for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// `piece_to_id`: the id of a piece, the unknown id if absent.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.by_text.get(piece).copied().unwrap_or(self.unk_id)
    }

    /// The normalised text SentencePiece segments.
    fn normalize(&self, text: &str) -> String {
        let mut s: String = if self.remove_extra_whitespaces {
            text.split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            text.to_string()
        };
        if self.add_dummy_prefix && !s.is_empty() {
            s.insert(0, ' ');
        }
        if self.escape_whitespaces {
            s = s.replace(' ', &SPACE.to_string());
        }
        s
    }

    /// `encode(text, out_type=str)` with ids: (piece, id) pairs.
    pub fn encode(&self, text: &str) -> Vec<(String, u32)> {
        let norm = self.normalize(text);
        // initial symbols: user-defined symbols whole, otherwise one character each
        let mut syms: Vec<(usize, usize)> = Vec::new(); // byte ranges into `norm`
        let mut frozen = Vec::new();
        let mut pos = 0;
        while pos < norm.len() {
            let rest = &norm[pos..];
            let (len, freeze) = match self.user_defined.iter().find(|u| rest.starts_with(u.as_str())) {
                Some(u) => (u.len(), true),
                None => (rest.chars().next().map_or(1, char::len_utf8), false),
            };
            syms.push((pos, pos + len));
            frozen.push(freeze);
            pos += len;
        }
        let n = syms.len();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|i| (i + 1 < n).then_some(i + 1)).collect();
        let mut alive = vec![true; n];
        let mut rev_merge: HashMap<String, (String, String)> = HashMap::new();
        let mut agenda = BinaryHeap::new();
        let add = |l: usize,
                   r: usize,
                   syms: &Vec<(usize, usize)>,
                   agenda: &mut BinaryHeap<Candidate>,
                   rev: &mut HashMap<String, (String, String)>| {
            if frozen[l] || frozen[r] {
                return;
            }
            let merged = &norm[syms[l].0..syms[r].1];
            if let Some(&id) = self.mergeable.get(merged) {
                let p = &self.pieces[id as usize];
                agenda.push(Candidate {
                    score: p.score,
                    left: l,
                    right: r,
                    len: merged.len(),
                });
                if p.kind == PieceType::Unused {
                    rev.insert(
                        merged.to_string(),
                        (
                            norm[syms[l].0..syms[l].1].to_string(),
                            norm[syms[r].0..syms[r].1].to_string(),
                        ),
                    );
                }
            }
        };
        for i in 1..n {
            add(i - 1, i, &syms, &mut agenda, &mut rev_merge);
        }
        while let Some(c) = agenda.pop() {
            let (l, r) = (c.left, c.right);
            if !alive[l] || !alive[r] || next[l] != Some(r) || syms[r].1 - syms[l].0 != c.len {
                continue;
            }
            syms[l].1 = syms[r].1;
            alive[r] = false;
            next[l] = next[r];
            if let Some(nn) = next[r] {
                prev[nn] = Some(l);
            }
            if let Some(p) = prev[l] {
                add(p, l, &syms, &mut agenda, &mut rev_merge);
            }
            if let Some(nn) = next[l] {
                add(l, nn, &syms, &mut agenda, &mut rev_merge);
            }
        }
        let mut out = Vec::new();
        let mut i = if n > 0 { Some(0) } else { None };
        while let Some(k) = i {
            self.resegment(&norm[syms[k].0..syms[k].1], &rev_merge, &mut out);
            i = next[k];
        }
        out
    }

    /// Emits `piece`, splitting merged unused pieces back into their parts and unknown pieces
    /// into bytes.
    fn resegment(&self, piece: &str, rev: &HashMap<String, (String, String)>, out: &mut Vec<(String, u32)>) {
        match self.mergeable.get(piece) {
            Some(&id) if self.pieces[id as usize].kind == PieceType::Unused => {
                if let Some((a, b)) = rev.get(piece) {
                    self.resegment(a, rev, out);
                    self.resegment(b, rev, out);
                } else {
                    out.push((piece.to_string(), id));
                }
            }
            Some(&id) => out.push((piece.to_string(), id)),
            None if self.byte_fallback => {
                for b in piece.bytes() {
                    match self.bytes[b as usize] {
                        Some(id) => out.push((self.pieces[id as usize].piece.clone(), id)),
                        None => out.push((self.pieces[self.unk_id as usize].piece.clone(), self.unk_id)),
                    }
                }
            }
            None => {
                // consecutive unknown characters form one unknown piece
                if let Some(last) = out.last_mut() {
                    if last.1 == self.unk_id && !self.mergeable.contains_key(&last.0) {
                        last.0.push_str(piece);
                        return;
                    }
                }
                out.push((piece.to_string(), self.unk_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pieces: &[(&str, f32, PieceType)]) -> SentencePiece {
        let p = pieces
            .iter()
            .map(|&(s, score, kind)| Piece {
                piece: s.into(),
                score,
                kind,
            })
            .collect();
        SentencePiece::build(p, true, false, true, true)
    }

    #[test]
    fn merges_by_score_then_leftmost_with_byte_fallback() {
        use PieceType::*;
        let mut v = vec![("<unk>", 0.0, Unknown), ("<s>", 0.0, Control)];
        let bytes: Vec<String> = (0..256).map(|b| format!("<0x{b:02X}>")).collect();
        for b in &bytes {
            v.push((b.as_str(), 0.0, Byte));
        }
        v.extend([
            ("▁", -1.0, Normal),
            ("a", -2.0, Normal),
            ("b", -3.0, Normal),
            ("ab", -4.0, Normal),
            ("▁a", -5.0, Normal),
            ("▁ab", -6.0, Normal),
        ]);
        let m = model(&v);
        // "▁ab": "ab" (-4) beats "▁a" (-5), then "▁"+"ab" → "▁ab"
        let e = m.encode("ab");
        assert_eq!(e, vec![("▁ab".to_string(), 263)]);
        // "é" is unknown → its two UTF-8 bytes
        let e: Vec<u32> = m.encode("é").into_iter().map(|p| p.1).collect();
        assert_eq!(e, vec![258, 2 + 0xC3, 2 + 0xA9]);
    }
}
