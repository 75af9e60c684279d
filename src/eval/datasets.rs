//! Readers for the four benchmark layouts (benchmarks.md §1): Ref-YouTube-VOS, Ref-DAVIS17,
//! MeViS and ReasonVOS. Each becomes a list of videos (frame files in order) with their
//! expressions, the instruction template the reference uses, where predictions go, and where
//! the ground truth is.

use crate::error::{Error, Result};
use crate::shard::Shard;
use crate::tokenizer::Template;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum DatasetKind {
    /// Ref-YouTube-VOS (valid is scored on the CodaLab server).
    RefYtvos,
    /// Ref-DAVIS17 (ReferFormer layout; 4 expressions per object).
    RefDavis,
    /// MeViS (valid_u has local ground truth in mask_dict.json).
    Mevis,
    /// ReasonVOS.
    Reasonvos,
}

impl DatasetKind {
    /// The name used on the command line (`ref-ytvos`, `ref-davis`, `mevis`, `reasonvos`).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::RefYtvos => "ref-ytvos",
            DatasetKind::RefDavis => "ref-davis",
            DatasetKind::Mevis => "mevis",
            DatasetKind::Reasonvos => "reasonvos",
        }
    }
}

/// Where an expression's ground truth is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroundTruth {
    /// None in this split (server-scored).
    None,
    /// Indexed PNGs `dir/<frame>.png`; the object is the pixels equal to `id` (255 = void).
    Palette {
        /// `Annotations/<video>`.
        dir: PathBuf,
        /// Object id (palette index).
        id: u8,
    },
    /// MeViS: the union of these `mask_dict.json` entries.
    MaskDict {
        /// Annotation ids.
        anno_ids: Vec<String>,
    },
    /// ReasonVOS: binary PNGs `dir/*.png`; only those frames are scored.
    Folder {
        /// `Annotations/<source>_<video>_<obj_id>`.
        dir: PathBuf,
    },
}

/// One referring expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    /// `exp_id` as in the JSON.
    pub exp_id: String,
    /// The expression text.
    pub text: String,
    /// Instruction template of the reference script.
    pub template: Template,
    /// Prediction folder relative to the prediction root (`<video or key>/<exp_id>`).
    pub out_dir: String,
    /// Object id(s), as strings.
    pub obj_ids: Vec<String>,
    /// Ground truth.
    pub gt: GroundTruth,
}

/// One video with its expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoEntry {
    /// Video name (folder under `JPEGImages`).
    pub name: String,
    /// Frame names in order (no extension).
    pub frames: Vec<String>,
    /// Frame files, in the same order.
    pub frame_paths: Vec<PathBuf>,
    /// Expressions.
    pub expressions: Vec<Expression>,
}

impl VideoEntry {
    /// A video whose frames are `<images>/<name>/<frame>.jpg`.
    fn new(name: &str, images: &Path, frames: Vec<String>, expressions: Vec<Expression>) -> Self {
        let frame_paths = frames
            .iter()
            .map(|f| images.join(name).join(format!("{f}.jpg")))
            .collect();
        VideoEntry {
            name: name.to_string(),
            frames,
            frame_paths,
            expressions,
        }
    }
}

/// A loaded benchmark split.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Which benchmark.
    pub kind: DatasetKind,
    /// Dataset root.
    pub root: PathBuf,
    /// Split name.
    pub split: String,
    /// Videos sorted by name.
    pub videos: Vec<VideoEntry>,
    /// MeViS `mask_dict.json`, when the split has one.
    pub mask_dict: Option<PathBuf>,
}

fn read_json(path: &Path) -> Result<Value> {
    crate::json::read_json(path, Error::Dataset)
}

/// [`check_name`] as a dataset error.
fn check_name(file: &Path, what: &str, s: &str) -> Result<()> {
    crate::names::check_name(file, what, s).map_err(Error::Dataset)
}

/// A string or number as a string (ids are written both ways in the wild).
fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn ids_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(id_string).collect(),
        Some(x) => id_string(x).into_iter().collect(),
        None => Vec::new(),
    }
}

fn frames_of(file: &Path, video: &str, v: &Value) -> Result<Vec<String>> {
    let a = v.get("frames").and_then(Value::as_array).ok_or_else(|| {
        Error::Dataset(format!(
            "{}: video {video:?} has no `frames` list",
            file.display()
        ))
    })?;
    let mut out = Vec::with_capacity(a.len());
    for f in a {
        let s = f.as_str().ok_or_else(|| {
            Error::Dataset(format!(
                "{}: video {video:?}: frame name {f} is not a string",
                file.display()
            ))
        })?;
        check_name(file, "frame name", s)?;
        out.push(s.to_string());
    }
    Ok(out)
}

fn videos_obj<'a>(file: &Path, v: &'a Value) -> Result<&'a serde_json::Map<String, Value>> {
    v.get("videos")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::Dataset(format!("{}: no `videos` object", file.display())))
}

impl Dataset {
    /// Reads `split` of `kind` under `root`.
    pub fn load(kind: DatasetKind, root: &Path, split: &str) -> Result<Self> {
        crate::names::check_name(Path::new("--split"), "split", split).map_err(Error::Usage)?;
        let mut ds = Dataset {
            kind,
            root: root.to_path_buf(),
            split: split.to_string(),
            videos: Vec::new(),
            mask_dict: None,
        };
        match kind {
            DatasetKind::RefYtvos | DatasetKind::RefDavis => ds.load_ytvos_like()?,
            DatasetKind::Mevis => ds.load_mevis()?,
            DatasetKind::Reasonvos => ds.load_reasonvos()?,
        }
        ds.videos.sort_by(|a, b| a.name.cmp(&b.name));
        ds.check_distinct_outputs()?;
        Ok(ds)
    }

    /// Two expressions must never write the same prediction folder (ReasonVOS keys
    /// `<source>_<video>_<obj_id>` can collide when names hold underscores).
    fn check_distinct_outputs(&self) -> Result<()> {
        let mut seen: std::collections::HashMap<&str, (&str, &str)> = std::collections::HashMap::new();
        for v in &self.videos {
            for e in &v.expressions {
                if let Some((video, exp)) = seen.insert(&e.out_dir, (&v.name, &e.exp_id)) {
                    return Err(Error::Dataset(format!(
                        "{}: video {video:?} expression {exp:?} and video {:?} expression {:?} would both write \
                         predictions to `{}`",
                        self.root.display(),
                        v.name,
                        e.exp_id,
                        e.out_dir
                    )));
                }
            }
        }
        Ok(())
    }

    /// Checks that every frame file of `videos` exists, before any model work.
    pub fn check_frames(videos: &[&VideoEntry]) -> Result<()> {
        let mut missing = videos
            .iter()
            .flat_map(|v| v.frame_paths.iter())
            .filter(|p| !p.is_file());
        if let Some(first) = missing.next() {
            let more = missing.count();
            return Err(Error::MissingFile {
                path: first.clone(),
                what: format!(
                    "a frame listed in the dataset's meta_expressions.json{}",
                    if more > 0 {
                        format!("; {more} more frames are missing")
                    } else {
                        String::new()
                    }
                ),
            });
        }
        Ok(())
    }

    /// Ref-YouTube-VOS and Ref-DAVIS (ReferFormer layout): `meta_expressions/<split>/…`.
    fn load_ytvos_like(&mut self) -> Result<()> {
        let file = self
            .root
            .join("meta_expressions")
            .join(&self.split)
            .join("meta_expressions.json");
        let mut exclude = BTreeSet::new();
        if self.kind == DatasetKind::RefYtvos && self.split == "valid" {
            // the competition's valid file also lists the test videos
            let test = self.root.join("meta_expressions/test/meta_expressions.json");
            if test.exists() {
                exclude.extend(videos_obj(&test, &read_json(&test)?)?.keys().cloned());
            }
        }
        let images = self.root.join(&self.split).join("JPEGImages");
        let annotations = self.root.join(&self.split).join("Annotations");
        self.load_dict_style(&file, &images, &exclude, &|name, _, obj_ids| {
            let dir = annotations.join(name);
            match obj_ids.first().and_then(|o| o.parse::<u8>().ok()) {
                Some(id) if dir.is_dir() => GroundTruth::Palette { dir, id },
                _ => GroundTruth::None,
            }
        })
    }

    /// MeViS: `<split>/meta_expressions.json`, `<split>/mask_dict.json`.
    fn load_mevis(&mut self) -> Result<()> {
        let dir = self.root.join(&self.split);
        let md = dir.join("mask_dict.json");
        self.mask_dict = md.exists().then_some(md);
        let has_gt = self.mask_dict.is_some();
        self.load_dict_style(
            &dir.join("meta_expressions.json"),
            &dir.join("JPEGImages"),
            &BTreeSet::new(),
            &|_, e, _| {
                let anno_ids = ids_of(e.get("anno_id"));
                if has_gt && !anno_ids.is_empty() {
                    GroundTruth::MaskDict { anno_ids }
                } else {
                    GroundTruth::None
                }
            },
        )
    }

    /// The dict-of-expressions schema shared by Ref-YouTube-VOS, Ref-DAVIS and MeViS
    /// (`{"videos": {v: {"expressions": {id: {"exp", "obj_id", …}}, "frames": […]}}}`); `gt_of`
    /// says where an expression's ground truth is (video name, expression JSON, object ids).
    fn load_dict_style(
        &mut self,
        file: &Path,
        images: &Path,
        exclude: &BTreeSet<String>,
        gt_of: &dyn Fn(&str, &Value, &[String]) -> GroundTruth,
    ) -> Result<()> {
        let meta = read_json(file)?;
        for (name, v) in videos_obj(file, &meta)? {
            if exclude.contains(name) {
                continue;
            }
            check_name(file, "video name", name)?;
            let frames = frames_of(file, name, v)?;
            let exps = v.get("expressions").and_then(Value::as_object).ok_or_else(|| {
                Error::Dataset(format!(
                    "{}: video {name:?} has no `expressions` object",
                    file.display()
                ))
            })?;
            let mut expressions = Vec::new();
            for (exp_id, e) in exps {
                check_name(file, "exp_id", exp_id)?;
                let text = e.get("exp").and_then(Value::as_str).ok_or_else(|| {
                    Error::Dataset(format!("{}: {name}/{exp_id} has no `exp` text", file.display()))
                })?;
                let obj_ids = ids_of(e.get("obj_id"));
                expressions.push(Expression {
                    exp_id: exp_id.clone(),
                    text: text.to_string(),
                    template: Template::Referring,
                    out_dir: format!("{name}/{exp_id}"),
                    gt: gt_of(name, e, &obj_ids),
                    obj_ids,
                });
            }
            expressions.sort_by_key(|e| natural_key(&e.exp_id));
            self.videos
                .push(VideoEntry::new(name, images, frames, expressions));
        }
        Ok(())
    }

    /// ReasonVOS: `meta_expressions.json` with list-valued expressions and
    /// `<source>_<video>_<obj_id>` ground-truth folders.
    fn load_reasonvos(&mut self) -> Result<()> {
        let file = self.root.join("meta_expressions.json");
        let meta = read_json(&file)?;
        let images = self.root.join("JPEGImages");
        for (name, v) in videos_obj(&file, &meta)? {
            check_name(&file, "video name", name)?;
            let frames = frames_of(&file, name, v)?;
            let source = v.get("source").and_then(Value::as_str).ok_or_else(|| {
                Error::Dataset(format!("{}: video {name:?} has no `source`", file.display()))
            })?;
            let exps = v.get("expressions").and_then(Value::as_array).ok_or_else(|| {
                Error::Dataset(format!(
                    "{}: video {name:?}: `expressions` must be a list",
                    file.display()
                ))
            })?;
            let mut expressions = Vec::new();
            for (i, e) in exps.iter().enumerate() {
                let field = |k: &str| {
                    e.get(k).and_then(id_string).ok_or_else(|| {
                        Error::Dataset(format!(
                            "{}: video {name:?} expression {i}: no `{k}`",
                            file.display()
                        ))
                    })
                };
                let (obj_id, exp_id) = (field("obj_id")?, field("exp_id")?);
                let text = e.get("exp_text").and_then(Value::as_str).ok_or_else(|| {
                    Error::Dataset(format!(
                        "{}: video {name:?} expression {i}: no `exp_text`",
                        file.display()
                    ))
                })?;
                let key = format!("{source}_{name}_{obj_id}");
                check_name(&file, "ground-truth key", &key)?;
                check_name(&file, "exp_id", &exp_id)?;
                let is_sent = e.get("is_sent").and_then(Value::as_bool).unwrap_or(false);
                expressions.push(Expression {
                    exp_id: exp_id.clone(),
                    text: text.to_string(),
                    template: if is_sent {
                        Template::ReasonSentence
                    } else {
                        Template::ReasonPhrase
                    },
                    out_dir: format!("{key}/{exp_id}"),
                    obj_ids: vec![obj_id],
                    gt: GroundTruth::Folder {
                        dir: self.root.join("Annotations").join(&key),
                    },
                });
            }
            self.videos
                .push(VideoEntry::new(name, &images, frames, expressions));
        }
        Ok(())
    }

    /// Number of expressions.
    pub fn expression_count(&self) -> usize {
        self.videos.iter().map(|v| v.expressions.len()).sum()
    }

    /// The videos of `shard` (every n-th video by name, deterministic).
    pub fn shard(&self, shard: Shard) -> Vec<&VideoEntry> {
        shard.take(&self.videos)
    }
}

/// Sort key that orders "2" before "10".
pub fn natural_key(s: &str) -> (usize, String) {
    match s.parse::<u64>() {
        Ok(_) => (s.trim_start_matches('0').len(), s.to_string()),
        Err(_) => (usize::MAX, s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["10", "2", "1", "x"];
        v.sort_by_key(|s| natural_key(s));
        assert_eq!(v, vec!["1", "2", "10", "x"]);
    }
}
