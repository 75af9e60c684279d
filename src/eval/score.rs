//! Scoring predictions the way each official script does (benchmarks.md §2.5): per-expression
//! means for MeViS, ReasonVOS and the VISA-style Ref-DAVIS protocol; the ReferFormer Ref-DAVIS
//! protocol (per-annotator indexed merge, DAVIS unsupervised evaluation with Hungarian matching,
//! mean of the four runs). Missing predictions are counted the way each script counts them.

use super::datasets::{Dataset, DatasetKind, Expression, GroundTruth, VideoEntry};
use super::metrics::{f_measure, jaccard, max_assignment, mean, BinMask};
use crate::error::{Error, Result};
use crate::output::{decode_png, read_mask_png, write_atomic, write_indexed_png, Rle};
use image::GrayImage;
use rayon::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How Ref-DAVIS17 is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
pub enum Protocol {
    /// The dataset's own protocol: ReferFormer for Ref-DAVIS, per-expression for the others.
    #[default]
    Default,
    /// Mean over frames per expression, then over expressions (MeViS, ReasonVOS, VISA-style).
    PerExpression,
    /// Ref-DAVIS ReferFormer protocol (4 annotator runs, Hungarian matching, object-weighted).
    Referformer,
}

/// What to do with a MeViS expression whose prediction folder is missing while its video folder
/// exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingExpression {
    /// Refuse to score (a missing folder is most likely a broken run).
    #[default]
    Error,
    /// Leave it out of the mean, as the official `eval_mevis.py` does (its worker fails on the
    /// missing `00000.png` and the expression never reaches the results).
    Drop,
}

/// How predictions are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScoreOptions {
    /// Ref-DAVIS protocol.
    pub protocol: Protocol,
    /// MeViS: a missing expression folder.
    pub missing_expression: MissingExpression,
}

/// What happened to one expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Scored on its frames.
    Scored,
    /// Prediction missing; counted as J = F = 0 (MeViS and VISA-style scripts).
    MissingZero,
    /// Prediction or ground truth missing; left out (the ReasonVOS script).
    Excluded,
}

impl Status {
    /// The name used in reports (`scored`, `missing_zero`, `excluded`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Scored => "scored",
            Status::MissingZero => "missing_zero",
            Status::Excluded => "excluded",
        }
    }
}

/// Score of one expression (or one ground-truth object under the ReferFormer protocol).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemScore {
    /// Video.
    pub video: String,
    /// Expression id (or `anno_<a>/object_<k>`).
    pub id: String,
    /// Mean J over frames.
    pub j: f64,
    /// Mean F over frames.
    pub f: f64,
    /// Frames scored.
    pub frames: usize,
    /// Scored, missing or excluded.
    pub status: Status,
}

/// The result of scoring a prediction folder.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreReport {
    /// Benchmark.
    pub dataset: DatasetKind,
    /// Split.
    pub split: String,
    /// Protocol used.
    pub protocol: Protocol,
    /// J (0–1).
    pub j: f64,
    /// F (0–1).
    pub f: f64,
    /// (J + F) / 2.
    pub jf: f64,
    /// How missing predictions were counted.
    pub missing_policy: String,
    /// Items scored / counted as zero / excluded.
    pub counts: BTreeMap<String, usize>,
    /// Per annotator run (ReferFormer protocol): J, F, J&F.
    pub per_annotator: Vec<[f64; 3]>,
    /// Frames compared.
    pub frames: usize,
    /// Per expression or per object.
    pub items: Vec<ItemScore>,
}

/// Reads a PNG as OpenCV's `IMREAD_GRAYSCALE` would: the gray level, or the luminance of RGB
/// and palette colours (so a black palette entry is 0 whatever its index). Returns (width,
/// height, values).
pub fn read_gray(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let (info, px) = decode_png(
        path,
        png::Transformations::EXPAND | png::Transformations::STRIP_16,
    )?;
    let (w, h) = (info.width as usize, info.height as usize);
    let luma = |r: u8, g: u8, b: u8| {
        ((u32::from(r) * 4899 + u32::from(g) * 9617 + u32::from(b) * 1868 + 8192) >> 14) as u8
    };
    let data: Vec<u8> = match info.color_type {
        png::ColorType::Grayscale => px,
        png::ColorType::GrayscaleAlpha => px.chunks(2).map(|c| c[0]).collect(),
        png::ColorType::Rgb => px.chunks(3).map(|c| luma(c[0], c[1], c[2])).collect(),
        png::ColorType::Rgba => px.chunks(4).map(|c| luma(c[0], c[1], c[2])).collect(),
        png::ColorType::Indexed => {
            return Err(Error::Internal(format!(
                "{}: palette not expanded",
                path.display()
            )));
        }
    };
    if data.len() != w * h {
        return Err(Error::Internal(format!(
            "{}: unexpected PNG buffer size",
            path.display()
        )));
    }
    Ok((w, h, data))
}

/// Reads a prediction as OpenCV's `IMREAD_GRAYSCALE` would, then binarises (nonzero), as the
/// per-expression scorers do.
pub fn read_prediction(path: &Path) -> Result<BinMask> {
    let (width, height, gray) = read_gray(path)?;
    Ok(BinMask {
        width,
        height,
        data: gray.iter().map(|&v| u8::from(v != 0)).collect(),
    })
}

fn same_size(a: &BinMask, b: &BinMask, pred: &Path, gt: &str) -> Result<()> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(Error::Usage(format!(
            "{}: prediction is {}x{} but the ground truth ({gt}) is {}x{}",
            pred.display(),
            a.width,
            a.height,
            b.width,
            b.height
        )));
    }
    Ok(())
}

/// MeViS `mask_dict.json`, parsed once.
pub struct MaskDict {
    path: PathBuf,
    map: serde_json::Map<String, Value>,
}

impl MaskDict {
    /// Reads the file.
    pub fn open(path: &Path) -> Result<Self> {
        match crate::json::read_json(path, Error::Dataset)? {
            Value::Object(map) => Ok(MaskDict {
                path: path.to_path_buf(),
                map,
            }),
            _ => Err(Error::Dataset(format!(
                "{}: expected an object of anno ids",
                path.display()
            ))),
        }
    }

    /// The union of `anno_ids` in frame `t` (None when every entry is null).
    pub fn union(&self, anno_ids: &[String], t: usize) -> Result<Option<BinMask>> {
        let mut out: Option<BinMask> = None;
        for a in anno_ids {
            let list = self.map.get(a).and_then(Value::as_array).ok_or_else(|| {
                Error::Dataset(format!(
                    "{}: anno id {a:?} is missing or not a list",
                    self.path.display()
                ))
            })?;
            let entry = list.get(t).ok_or_else(|| {
                Error::Dataset(format!(
                    "{}: anno id {a:?} has no entry for frame {t}",
                    self.path.display()
                ))
            })?;
            if entry.is_null() {
                continue;
            }
            let rle: Rle = serde_json::from_value(entry.clone()).map_err(|e| {
                Error::Dataset(format!(
                    "{}: anno id {a:?} frame {t}: malformed RLE: {e}",
                    self.path.display()
                ))
            })?;
            let m = rle.decode().map_err(|e| {
                Error::Dataset(format!("{}: anno id {a:?} frame {t}: {e}", self.path.display()))
            })?;
            let m = BinMask::from_bytes(m.width() as usize, m.height() as usize, m.as_raw());
            match &mut out {
                Some(o) if (o.width, o.height) != (m.width, m.height) => {
                    return Err(Error::Dataset(format!(
                        "{}: frame {t}: anno ids of one expression have different sizes",
                        self.path.display()
                    )));
                }
                Some(o) => o.union_with(&m),
                None => out = Some(m),
            }
        }
        Ok(out)
    }
}

/// Scores one expression under the per-expression protocol.
fn score_expression(
    ds: &Dataset,
    v: &VideoEntry,
    e: &Expression,
    pred: &Path,
    md: Option<&MaskDict>,
    missing: MissingExpression,
) -> Result<ItemScore> {
    let item = |j, f, frames, status| ItemScore {
        video: v.name.clone(),
        id: e.exp_id.clone(),
        j,
        f,
        frames,
        status,
    };
    let pdir = pred.join(&e.out_dir);
    let (mut js, mut fs) = (Vec::new(), Vec::new());
    match &e.gt {
        GroundTruth::None => {
            return Err(Error::Usage(format!(
                "{:?} {} has no local ground truth (Ref-YouTube-VOS valid and MeViS valid are scored on \
                 their servers: upload the submission zip `videolisa eval` writes)",
                ds.kind, ds.split
            )))
        }
        GroundTruth::Folder { dir } => {
            // ReasonVOS: only frames with a GT PNG; a missing GT or prediction folder is excluded
            if !dir.is_dir() || !pdir.is_dir() {
                return Ok(item(0.0, 0.0, 0, Status::Excluded));
            }
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|er| Error::io(dir, er))?
                .filter_map(|d| d.ok().map(|d| d.file_name().to_string_lossy().into_owned()))
                .filter(|n| n.ends_with(".png"))
                .collect();
            names.sort();
            for n in names {
                let g = read_prediction(&dir.join(&n))?;
                let pp = pdir.join(&n);
                let p = read_prediction(&pp)?;
                same_size(&p, &g, &pp, &dir.join(&n).display().to_string())?;
                js.push(jaccard(&g, &p, None));
                fs.push(f_measure(&g, &p, None));
            }
        }
        GroundTruth::Palette { dir, id } => {
            if !pred.join(&v.name).is_dir() {
                return Ok(item(0.0, 0.0, v.frames.len(), Status::MissingZero));
            }
            for f in &v.frames {
                let gp = dir.join(format!("{f}.png"));
                let labels = read_mask_png(&gp)?;
                let g = BinMask::from_label(
                    labels.width() as usize,
                    labels.height() as usize,
                    labels.as_raw(),
                    *id,
                );
                let pp = pdir.join(format!("{f}.png"));
                let p = read_prediction(&pp)?;
                same_size(&p, &g, &pp, &gp.display().to_string())?;
                js.push(jaccard(&g, &p, None));
                fs.push(f_measure(&g, &p, None));
            }
        }
        GroundTruth::MaskDict { anno_ids } => {
            let md = md.ok_or_else(|| Error::Dataset("mask_dict.json is missing".into()))?;
            if !pred.join(&v.name).is_dir() {
                return Ok(item(0.0, 0.0, v.frames.len(), Status::MissingZero));
            }
            if missing == MissingExpression::Drop && !pdir.is_dir() {
                return Ok(item(0.0, 0.0, 0, Status::Excluded));
            }
            for (t, f) in v.frames.iter().enumerate() {
                let pp = pdir.join(format!("{f}.png"));
                let p = read_prediction(&pp)?;
                let g = md
                    .union(anno_ids, t)?
                    .unwrap_or_else(|| BinMask::empty(p.width, p.height));
                same_size(&p, &g, &pp, &format!("{} frame {t}", md.path.display()))?;
                js.push(jaccard(&g, &p, None));
                fs.push(f_measure(&g, &p, None));
            }
        }
    }
    Ok(item(mean(&js), mean(&fs), js.len(), Status::Scored))
}

/// Scores the predictions under `pred` against `ds`.
pub fn score(
    ds: &Dataset,
    pred: &Path,
    options: &ScoreOptions,
    merged_out: Option<&Path>,
) -> Result<ScoreReport> {
    let protocol = match (options.protocol, ds.kind) {
        (Protocol::Default, DatasetKind::RefDavis) => Protocol::Referformer,
        (Protocol::Default, _) => Protocol::PerExpression,
        (Protocol::Referformer, k) if k != DatasetKind::RefDavis => {
            return Err(Error::Usage(
                "--protocol referformer applies to ref-davis only".into(),
            ))
        }
        (p, _) => p,
    };
    if protocol == Protocol::Referformer {
        return score_referformer(ds, pred, merged_out);
    }
    let md = match &ds.mask_dict {
        Some(p) if ds.kind == DatasetKind::Mevis => Some(MaskDict::open(p)?),
        _ => None,
    };
    let work: Vec<(&VideoEntry, &Expression)> = ds
        .videos
        .iter()
        .flat_map(|v| v.expressions.iter().map(move |e| (v, e)))
        .collect();
    let bar = crate::progress::bar(work.len() as u64, "scoring");
    let items: Vec<ItemScore> = work
        .par_iter()
        .map(|(v, e)| {
            let r = score_expression(ds, v, e, pred, md.as_ref(), options.missing_expression);
            bar.inc(1);
            r
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let counted: Vec<&ItemScore> = items.iter().filter(|i| i.status != Status::Excluded).collect();
    let j = mean(&counted.iter().map(|i| i.j).collect::<Vec<_>>());
    let f = mean(&counted.iter().map(|i| i.f).collect::<Vec<_>>());
    let policy = match ds.kind {
        DatasetKind::Reasonvos => "as eval_reason_vos.py: an expression whose prediction or ground-truth folder is missing is excluded",
        DatasetKind::Mevis if options.missing_expression == MissingExpression::Drop => "as MeViS eval_mevis.py: a video without a prediction folder scores J = F = 0 for each of its expressions; an expression folder missing from a present video is left out of the mean",
        DatasetKind::Mevis => "as MeViS eval_mevis.py: a video without a prediction folder scores J = F = 0 for each of its expressions (a missing expression folder in a present video is an error)",
        _ => "as the VISA-style scripts: a video without a prediction folder scores J = F = 0",
    };
    Ok(report(ds, protocol, j, f, policy.into(), Vec::new(), items))
}

fn report(
    ds: &Dataset,
    protocol: Protocol,
    j: f64,
    f: f64,
    missing_policy: String,
    per_annotator: Vec<[f64; 3]>,
    items: Vec<ItemScore>,
) -> ScoreReport {
    let mut counts = BTreeMap::new();
    for s in [Status::Scored, Status::MissingZero, Status::Excluded] {
        let key = s.name().to_string();
        counts.insert(key, items.iter().filter(|i| i.status == s).count());
    }
    ScoreReport {
        dataset: ds.kind,
        split: ds.split.clone(),
        protocol,
        j,
        f,
        jf: (j + f) / 2.0,
        missing_policy,
        counts,
        per_annotator,
        frames: items.iter().map(|i| i.frames).sum(),
        items,
    }
}

/// Ref-DAVIS, ReferFormer protocol.
fn score_referformer(ds: &Dataset, pred: &Path, merged_out: Option<&Path>) -> Result<ScoreReport> {
    let mut per_annotator = Vec::new();
    let mut all_items = Vec::new();
    for a in 0..4usize {
        let results: Vec<Vec<ItemScore>> = ds
            .videos
            .par_iter()
            .map(|v| davis_video(v, a, pred, merged_out))
            .collect::<Result<_>>()?;
        let objs: Vec<ItemScore> = results.into_iter().flatten().collect();
        let j = mean(&objs.iter().map(|o| o.j).collect::<Vec<_>>());
        let f = mean(&objs.iter().map(|o| o.f).collect::<Vec<_>>());
        per_annotator.push([j, f, (j + f) / 2.0]);
        all_items.extend(objs);
    }
    let j = mean(&per_annotator.iter().map(|x| x[0]).collect::<Vec<_>>());
    let f = mean(&per_annotator.iter().map(|x| x[1]).collect::<Vec<_>>());
    let policy =
        "as the ReferFormer protocol: every ground-truth frame needs a prediction (a missing file is an \
                  error); objects without any predicted pixel are empty proposals";
    Ok(report(
        ds,
        Protocol::Referformer,
        j,
        f,
        policy.into(),
        per_annotator,
        all_items,
    ))
}

/// Merges the predictions of one frame as VideoLISA's `post_process_davis.py` does: each
/// object's gray value / 100 is its score, scores below 0.5 count as 0, the background scores
/// 0.1, and each pixel takes the argmax (ties to the lower object id). `preds[k]` is object
/// k + 1's gray image.
pub fn merge_davis(preds: &[Vec<u8>], len: usize) -> Vec<u8> {
    let mut merged = vec![0u8; len];
    for (i, m) in merged.iter_mut().enumerate() {
        // v / 100 ≥ 0.5 ⇔ v ≥ 50 (exact in f32); any such score beats the background's 0.1
        let mut best = 49u8;
        for (k, p) in preds.iter().enumerate() {
            if p[i] > best {
                best = p[i];
                *m = (k + 1) as u8;
            }
        }
    }
    merged
}

/// One video, one annotator run: merge the expressions `4k + a` into labels as VideoLISA's
/// post-processing does ([`merge_davis`]), then DAVIS unsupervised evaluation.
fn davis_video(v: &VideoEntry, a: usize, pred: &Path, merged_out: Option<&Path>) -> Result<Vec<ItemScore>> {
    let mut exps: Vec<(usize, &Expression)> = v
        .expressions
        .iter()
        .filter_map(|e| {
            e.exp_id
                .parse::<usize>()
                .ok()
                .filter(|i| i % 4 == a)
                .map(|i| (i / 4, e))
        })
        .collect();
    exps.sort_by_key(|(k, _)| *k);
    let gt_dir = match v.expressions.iter().find_map(|e| match &e.gt {
        GroundTruth::Palette { dir, .. } => Some(dir.clone()),
        _ => None,
    }) {
        Some(d) => d,
        None => return Err(Error::Dataset(format!("video {}: no Annotations folder", v.name))),
    };
    let mut gt_frames: Vec<String> = std::fs::read_dir(&gt_dir)
        .map_err(|e| Error::io(&gt_dir, e))?
        .filter_map(|d| d.ok().map(|d| d.file_name().to_string_lossy().into_owned()))
        .filter_map(|n| n.strip_suffix(".png").map(str::to_string))
        .collect();
    gt_frames.sort();
    let mut gts = Vec::new();
    let mut voids = Vec::new();
    let mut preds = Vec::new();
    for f in &gt_frames {
        let g = read_mask_png(&gt_dir.join(format!("{f}.png")))?;
        let (w, h) = (g.width() as usize, g.height() as usize);
        voids.push(BinMask::from_label(w, h, g.as_raw(), 255));
        let labels: Vec<u8> = g.as_raw().iter().map(|&x| if x == 255 { 0 } else { x }).collect();
        gts.push((w, h, labels));
        let mut objects = vec![vec![0u8; w * h]; exps.last().map_or(0, |(k, _)| k + 1)];
        for (k, e) in &exps {
            let pp = pred.join(&e.out_dir).join(format!("{f}.png"));
            let (pw, ph, gray) = read_gray(&pp)?;
            if (pw, ph) != (w, h) {
                return Err(Error::Usage(format!(
                    "{}: prediction is {pw}x{ph} but the ground truth is {w}x{h}",
                    pp.display()
                )));
            }
            objects[*k] = gray;
        }
        let merged = merge_davis(&objects, w * h);
        if let Some(o) = merged_out {
            let path = o.join(format!("anno_{a}")).join(&v.name).join(format!("{f}.png"));
            write_indexed_png(
                &path,
                &GrayImage::from_raw(w as u32, h as u32, merged.clone()).expect("size"),
            )?;
        }
        preds.push(merged);
    }
    let n_gt = gts.first().map_or(0, |g| g.2.iter().copied().max().unwrap_or(0)) as usize;
    let n_pred = (preds.iter().flat_map(|p| p.iter().copied()).max().unwrap_or(0) as usize).max(n_gt);
    if n_pred > 20 {
        return Err(Error::Usage(format!(
            "video {}: more than 20 predicted objects",
            v.name
        )));
    }
    let t = gt_frames.len();
    // J[p][g][t], F[p][g][t]
    let mut jm = vec![vec![vec![0.0; t]; n_gt]; n_pred];
    let mut fm = jm.clone();
    for ti in 0..t {
        let (w, h, labels) = &gts[ti];
        for gi in 0..n_gt {
            let g = BinMask::from_label(*w, *h, labels, (gi + 1) as u8);
            for pi in 0..n_pred {
                let p = BinMask::from_label(*w, *h, &preds[ti], (pi + 1) as u8);
                jm[pi][gi][ti] = jaccard(&g, &p, Some(&voids[ti]));
                fm[pi][gi][ti] = f_measure(&g, &p, Some(&voids[ti]));
            }
        }
    }
    let cost: Vec<Vec<f64>> = (0..n_pred)
        .map(|p| {
            (0..n_gt)
                .map(|g| (mean(&jm[p][g]) + mean(&fm[p][g])) / 2.0)
                .collect()
        })
        .collect();
    let assign = max_assignment(&cost);
    // davis2017 lists matched pairs in prediction-row order
    let mut pairs: Vec<(usize, usize)> = assign.iter().enumerate().map(|(g, &p)| (p, g)).collect();
    pairs.sort();
    Ok(pairs
        .into_iter()
        .map(|(p, g)| ItemScore {
            video: v.name.clone(),
            id: format!("anno_{a}/object_{}", g + 1),
            j: mean(&jm[p][g]),
            f: mean(&fm[p][g]),
            frames: t,
            status: Status::Scored,
        })
        .collect())
}

/// A CSV field as RFC 4180 writes it: quoted (with quotes doubled) when it holds a comma, a
/// quote or a line break.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// Writes `results.json`, `per_item.csv`, `per_video.csv` and `report.md` into `dir`.
pub fn write_reports(r: &ScoreReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let put = |name: &str, body: String| -> Result<()> {
        let path = dir.join(name);
        write_atomic(&path, |w| {
            std::io::Write::write_all(w, body.as_bytes()).map_err(|e| Error::io(&path, e))
        })
    };
    crate::json::write_json(&dir.join("results.json"), r)?;
    let mut csv = String::from("video,id,J,F,JF,frames,status\n");
    for i in &r.items {
        csv += &format!(
            "{},{},{:.6},{:.6},{:.6},{},{}\n",
            csv_field(&i.video),
            csv_field(&i.id),
            i.j,
            i.f,
            (i.j + i.f) / 2.0,
            i.frames,
            i.status.name()
        );
    }
    put("per_item.csv", csv)?;
    let mut by_video: Vec<(String, Vec<&ItemScore>)> = Vec::new();
    for i in r.items.iter().filter(|i| i.status != Status::Excluded) {
        match by_video.iter_mut().find(|(v, _)| *v == i.video) {
            Some((_, l)) => l.push(i),
            None => by_video.push((i.video.clone(), vec![i])),
        }
    }
    let mut csv = String::from("video,items,J,F,JF\n");
    for (v, l) in &by_video {
        let j = mean(&l.iter().map(|i| i.j).collect::<Vec<_>>());
        let f = mean(&l.iter().map(|i| i.f).collect::<Vec<_>>());
        csv += &format!(
            "{},{},{j:.6},{f:.6},{:.6}\n",
            csv_field(v),
            l.len(),
            (j + f) / 2.0
        );
    }
    put("per_video.csv", csv)?;
    put("report.md", render_markdown(r))
}

/// A short Markdown report.
pub fn render_markdown(r: &ScoreReport) -> String {
    let mut s = format!(
        "# {:?} {} ({:?} protocol)\n\n| J&F | J | F |\n|---|---|---|\n| {:.2} | {:.2} | {:.2} |\n\n",
        r.dataset,
        r.split,
        r.protocol,
        100.0 * r.jf,
        100.0 * r.j,
        100.0 * r.f
    );
    if !r.per_annotator.is_empty() {
        s += "| annotator run | J&F | J | F |\n|---|---|---|---|\n";
        for (a, x) in r.per_annotator.iter().enumerate() {
            s += &format!(
                "| {a} | {:.2} | {:.2} | {:.2} |\n",
                100.0 * x[2],
                100.0 * x[0],
                100.0 * x[1]
            );
        }
        s += "\n";
    }
    s += &format!(
        "Items: {}. Frames compared: {}. Missing predictions: {}.\n",
        r.counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.frames,
        r.missing_policy
    );
    s
}
