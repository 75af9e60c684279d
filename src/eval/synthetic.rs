//! Small synthetic datasets in each benchmark's layout (moving rectangles over a texture), for
//! tests and for trying `eval`/`score` without downloading a benchmark.

use super::datasets::DatasetKind;
use crate::error::{Error, Result};
use crate::output::{write_indexed_png, write_mask_png, Rle};
use image::{GrayImage, RgbImage};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Size of a synthetic dataset.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticSpec {
    /// Videos.
    pub videos: usize,
    /// Frames per video.
    pub frames: usize,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            videos: 3,
            frames: 6,
            width: 64,
            height: 48,
        }
    }
}

/// Object `k` (1 or 2) of video `v` in frame `t`: a rectangle, absent from some frames.
pub fn object_mask(spec: &SyntheticSpec, v: usize, k: usize, t: usize) -> GrayImage {
    let (w, h) = (spec.width, spec.height);
    let mut m = GrayImage::new(w, h);
    // object 2 leaves the scene in the last frame of odd videos
    if k == 2 && v % 2 == 1 && t + 1 == spec.frames {
        return m;
    }
    // heights vary by video, cycling so that any number of videos fits the frame
    let (bw, bh) = (w / 4 + k as u32 * 2, h / 4 + (v as u32) % (h / 4).max(1));
    let x0 = ((t as u32 * 3 + k as u32 * w / 3 + v as u32 * 5) % (w - bw)).min(w - bw);
    let y0 = ((k as u32 * h / 3 + t as u32 * 2) % (h - bh)).min(h - bh);
    for y in y0..y0 + bh {
        for x in x0..x0 + bw {
            m.put_pixel(x, y, image::Luma([1]));
        }
    }
    m
}

fn frame_image(spec: &SyntheticSpec, v: usize, t: usize) -> RgbImage {
    let mut img = RgbImage::from_fn(spec.width, spec.height, |x, y| {
        image::Rgb([
            ((x * 4 + t as u32) % 256) as u8,
            ((y * 5 + v as u32 * 40) % 256) as u8,
            90,
        ])
    });
    for k in 1..=2 {
        let m = object_mask(spec, v, k, t);
        for (x, y, p) in m.enumerate_pixels() {
            if p.0[0] != 0 {
                img.put_pixel(
                    x,
                    y,
                    if k == 1 {
                        image::Rgb([220, 30, 30])
                    } else {
                        image::Rgb([30, 30, 220])
                    },
                );
            }
        }
    }
    img
}

fn save_frames(spec: &SyntheticSpec, dir: &Path, v: usize) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for t in 0..spec.frames {
        let name = format!("{:05}", t * 5);
        let p = dir.join(format!("{name}.jpg"));
        frame_image(spec, v, t)
            .save(&p)
            .map_err(|e| Error::Runtime(format!("{}: {e}", p.display())))?;
        names.push(name);
    }
    Ok(names)
}

/// Video names (one with an underscore, which ReasonVOS keys must survive).
pub fn video_name(v: usize) -> String {
    if v == 1 {
        format!("vid_{v}x")
    } else {
        format!("video{v}")
    }
}

/// Writes a synthetic dataset of `kind` under `root` (split `valid`, `valid_u` for MeViS). The
/// files are written to a sibling folder that is renamed to `root` when complete, so a failure
/// leaves nothing behind; `root` must not exist or be empty.
pub fn write(kind: DatasetKind, root: &Path, spec: &SyntheticSpec) -> Result<String> {
    if spec.videos == 0 || spec.frames == 0 || spec.width < 16 || spec.height < 16 {
        return Err(Error::Usage(format!(
            "a synthetic dataset needs at least 1 video and 1 frame of at least 16x16 (got {} videos, {} \
             frames, {}x{})",
            spec.videos, spec.frames, spec.width, spec.height
        )));
    }
    if std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Usage(format!(
            "{}: the folder is not empty; choose a new one",
            root.display()
        )));
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = root.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let written = match kind {
        DatasetKind::RefYtvos => write_ytvos(&staging, spec),
        DatasetKind::RefDavis => write_davis(&staging, spec),
        DatasetKind::Mevis => write_mevis(&staging, spec),
        DatasetKind::Reasonvos => write_reasonvos(&staging, spec),
    };
    match written {
        Ok(split) => {
            std::fs::rename(&staging, root).map_err(|e| Error::io(root, e))?;
            Ok(split)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn write_ytvos(root: &Path, spec: &SyntheticSpec) -> Result<String> {
    let mut valid = Map::new();
    let mut test = Map::new();
    for v in 0..spec.videos + 1 {
        let name = video_name(v);
        let frames = save_frames(spec, &root.join("valid/JPEGImages").join(&name), v)?;
        let exps = json!({"0": {"exp": "the red box", "obj_id": "1"}, "1": {"exp": "a blue box moving", "obj_id": "2"}});
        let entry = json!({"expressions": exps, "frames": frames});
        // the competition file lists valid and test videos together; the last one is "test"
        if v == spec.videos {
            test.insert(name.clone(), entry.clone());
        }
        valid.insert(name, entry);
    }
    crate::json::write_json(
        &root.join("meta_expressions/valid/meta_expressions.json"),
        &json!({"videos": valid}),
    )?;
    crate::json::write_json(
        &root.join("meta_expressions/test/meta_expressions.json"),
        &json!({"videos": test}),
    )?;
    Ok("valid".into())
}

fn write_davis(root: &Path, spec: &SyntheticSpec) -> Result<String> {
    let mut videos = Map::new();
    for v in 0..spec.videos {
        let name = video_name(v);
        let frames = save_frames(spec, &root.join("valid/JPEGImages").join(&name), v)?;
        for (t, f) in frames.iter().enumerate() {
            let mut ids = GrayImage::new(spec.width, spec.height);
            for k in 1..=2u8 {
                for (x, y, p) in object_mask(spec, v, k as usize, t).enumerate_pixels() {
                    if p.0[0] != 0 {
                        ids.put_pixel(x, y, image::Luma([k]));
                    }
                }
            }
            // void pixels (255) on the background of the top row, as DAVIS marks uncertain areas
            for x in 0..spec.width {
                if ids.get_pixel(x, 0).0[0] == 0 {
                    ids.put_pixel(x, 0, image::Luma([255]));
                }
            }
            write_indexed_png(
                &root
                    .join("valid/Annotations")
                    .join(&name)
                    .join(format!("{f}.png")),
                &ids,
            )?;
        }
        let mut exps = Map::new();
        for (k, obj) in ["1", "2"].iter().enumerate() {
            let colour = if k == 0 { "red" } else { "blue" };
            for a in 0..4 {
                let text = match a {
                    0 => format!("a {colour} box"),
                    1 => format!("the {colour} box moving right"),
                    2 => format!("{colour} rectangle"),
                    _ => format!("the {colour} rectangle sliding"),
                };
                exps.insert((4 * k + a).to_string(), json!({"exp": text, "obj_id": obj}));
            }
        }
        videos.insert(name, json!({"expressions": exps, "frames": frames}));
    }
    crate::json::write_json(
        &root.join("meta_expressions/valid/meta_expressions.json"),
        &json!({"videos": videos}),
    )?;
    Ok("valid".into())
}

fn write_mevis(root: &Path, spec: &SyntheticSpec) -> Result<String> {
    let dir = root.join("valid_u");
    let mut videos = Map::new();
    let mut mask_dict = Map::new();
    let mut anno = 0usize;
    for v in 0..spec.videos {
        let name = video_name(v);
        let frames = save_frames(spec, &dir.join("JPEGImages").join(&name), v)?;
        let mut ids = Vec::new();
        for k in 1..=2 {
            let rles: Vec<Value> = (0..spec.frames)
                .map(|t| {
                    let m = object_mask(spec, v, k, t);
                    if m.pixels().all(|p| p.0[0] == 0) {
                        Value::Null
                    } else {
                        serde_json::to_value(Rle::encode(&m)).unwrap_or(Value::Null)
                    }
                })
                .collect();
            mask_dict.insert(anno.to_string(), Value::Array(rles));
            ids.push(anno);
            anno += 1;
        }
        let exps = json!({
            "0": {"exp": "the red box", "obj_id": [1], "anno_id": [ids[0]]},
            "1": {"exp": "the blue box", "obj_id": [2], "anno_id": [ids[1]]},
            "2": {"exp": "both boxes", "obj_id": [1, 2], "anno_id": [ids[0], ids[1]]},
        });
        videos.insert(name, json!({"expressions": exps, "frames": frames}));
    }
    crate::json::write_json(&dir.join("meta_expressions.json"), &json!({"videos": videos}))?;
    crate::json::write_json(&dir.join("mask_dict.json"), &Value::Object(mask_dict))?;
    Ok("valid_u".into())
}

fn write_reasonvos(root: &Path, spec: &SyntheticSpec) -> Result<String> {
    let mut videos = Map::new();
    for v in 0..spec.videos {
        let name = video_name(v);
        let frames = save_frames(spec, &root.join("JPEGImages").join(&name), v)?;
        let source = if v % 2 == 0 { "MOSE" } else { "BURST" };
        for k in 1..=2 {
            let key = format!("{source}_{name}_{k}");
            // ground truth on every other frame only
            for (t, f) in frames.iter().enumerate().step_by(2) {
                write_mask_png(
                    &root.join("Annotations").join(&key).join(format!("{f}.png")),
                    &object_mask(spec, v, k, t),
                    255,
                )?;
            }
        }
        let exps = json!([
            {"obj_id": 1, "exp_id": "0", "exp_text": "Which object is red", "is_sent": true},
            {"obj_id": 2, "exp_id": "1", "exp_text": "blue box", "is_sent": false},
        ]);
        videos.insert(
            name,
            json!({"source": source, "frames": frames, "expressions": exps}),
        );
    }
    crate::json::write_json(&root.join("meta_expressions.json"), &json!({"videos": videos}))?;
    Ok("all".into())
}
