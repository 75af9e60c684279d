//! The four benchmark layouts end to end on synthetic datasets written by our own code: reading,
//! scoring predictions whose J&F is known, the tiny checkpoint through `eval` (sharded runs merge
//! to the same numbers as one run, reruns resume), and clear errors for bad input.

mod common;

use std::path::Path;
use videolisa::eval::datasets::{Dataset, DatasetKind, GroundTruth};
use videolisa::eval::metrics::{f_measure, jaccard, BinMask};
use videolisa::eval::run::{eval, EvalOptions};
use videolisa::eval::score::{score, Protocol, ScoreOptions, Status};
use videolisa::eval::synthetic::{object_mask, write, SyntheticSpec};
use videolisa::model::videolisa::{LoadOptions, ModelPaths, VideoLisa};
use videolisa::output::write_mask_png;
use videolisa::segment::SegmentOptions;
use videolisa::shard::Shard;

const KINDS: [DatasetKind; 4] = [
    DatasetKind::RefYtvos,
    DatasetKind::RefDavis,
    DatasetKind::Mevis,
    DatasetKind::Reasonvos,
];

fn spec() -> SyntheticSpec {
    SyntheticSpec {
        videos: 3,
        frames: 5,
        width: 48,
        height: 32,
    }
}

/// Predictions that equal object `obj` of each expression (or nothing, for `obj == 0`).
fn write_preds(ds: &Dataset, pred: &Path, choose: &dyn Fn(usize, &str) -> usize) {
    let s = spec();
    for (vi, v) in ds.videos.iter().enumerate() {
        let vnum: usize = v
            .name
            .trim_start_matches("video")
            .trim_start_matches("vid_")
            .trim_end_matches('x')
            .parse()
            .unwrap();
        let _ = vi;
        for e in &v.expressions {
            let obj = choose(vnum, &e.exp_id);
            for (t, f) in v.frames.iter().enumerate() {
                let m = if obj == 0 {
                    image::GrayImage::new(s.width, s.height)
                } else {
                    object_mask(&s, vnum, obj, t)
                };
                write_mask_png(&pred.join(&e.out_dir).join(format!("{f}.png")), &m, 255).unwrap();
            }
        }
    }
}

fn true_obj(kind: DatasetKind, exp_id: &str) -> usize {
    let i: usize = exp_id.parse().unwrap();
    match kind {
        DatasetKind::RefDavis => i / 4 + 1,
        _ => i + 1,
    }
}

#[test]
fn layouts_read_as_documented() {
    for kind in KINDS {
        let root = tempfile::tempdir().unwrap();
        let split = write(kind, root.path(), &spec()).unwrap();
        let ds = Dataset::load(kind, root.path(), &split).unwrap();
        let names: Vec<&str> = ds.videos.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["vid_1x", "video0", "video2"],
            "{kind:?}: the test video is excluded from Ref-YTVOS valid"
        );
        let per_video = match kind {
            DatasetKind::RefDavis => 8,
            DatasetKind::Mevis => 3,
            _ => 2,
        };
        assert_eq!(ds.expression_count(), 3 * per_video, "{kind:?}");
        assert!(ds
            .videos
            .iter()
            .all(|v| v.frames.len() == 5 && v.frame_paths.iter().all(|p| p.exists())));
        if kind == DatasetKind::Reasonvos {
            let e = &ds.videos[0].expressions[0];
            assert_eq!(e.out_dir, "BURST_vid_1x_1/0");
            assert!(
                matches!(&e.gt, GroundTruth::Folder { dir } if dir.ends_with("Annotations/BURST_vid_1x_1"))
            );
            assert_eq!(e.template, videolisa::tokenizer::Template::ReasonSentence);
        }
    }
}

#[test]
fn scores_of_known_predictions() {
    let s = spec();
    for kind in [DatasetKind::RefDavis, DatasetKind::Mevis, DatasetKind::Reasonvos] {
        let root = tempfile::tempdir().unwrap();
        let split = write(kind, root.path(), &s).unwrap();
        let ds = Dataset::load(kind, root.path(), &split).unwrap();
        // oracle: every expression predicts its own object (MeViS "both boxes" = the union)
        let pred = tempfile::tempdir().unwrap();
        write_preds(&ds, pred.path(), &|_, e| true_obj(kind, e));
        if kind == DatasetKind::Mevis {
            for v in &ds.videos {
                let vnum: usize = v
                    .name
                    .trim_start_matches("video")
                    .trim_start_matches("vid_")
                    .trim_end_matches('x')
                    .parse()
                    .unwrap();
                for (t, f) in v.frames.iter().enumerate() {
                    let mut m = object_mask(&s, vnum, 1, t);
                    for (a, b) in m.pixels_mut().zip(object_mask(&s, vnum, 2, t).pixels()) {
                        a.0[0] |= b.0[0];
                    }
                    write_mask_png(
                        &pred.path().join(&v.name).join("2").join(format!("{f}.png")),
                        &m,
                        255,
                    )
                    .unwrap();
                }
            }
        }
        let protocols: &[Protocol] = if kind == DatasetKind::RefDavis {
            &[Protocol::Referformer, Protocol::PerExpression]
        } else {
            &[Protocol::Default]
        };
        for &p in protocols {
            let r = score(
                &ds,
                pred.path(),
                &ScoreOptions {
                    protocol: p,
                    ..ScoreOptions::default()
                },
                None,
            )
            .unwrap();
            println!("{kind:?} {p:?} oracle: J {} F {}", r.j, r.f);
            assert!(
                (r.j - 1.0).abs() < 1e-12 && (r.f - 1.0).abs() < 1e-12,
                "{kind:?} {p:?}: {} {}",
                r.j,
                r.f
            );
        }
    }
    // MeViS: expression 1 predicts nothing; object 2 is absent from the last frame of odd
    // videos, where an empty prediction scores 1. Expected J = F = mean over expressions.
    let root = tempfile::tempdir().unwrap();
    let split = write(DatasetKind::Mevis, root.path(), &s).unwrap();
    let ds = Dataset::load(DatasetKind::Mevis, root.path(), &split).unwrap();
    let pred = tempfile::tempdir().unwrap();
    write_preds(&ds, pred.path(), &|_, e| {
        if e == "0" {
            1
        } else if e == "1" {
            0
        } else {
            2
        }
    });
    let r = score(&ds, pred.path(), &ScoreOptions::default(), None).unwrap();
    let mut expect_j = Vec::new();
    let mut expect_f = Vec::new();
    for vnum in [1usize, 0, 2] {
        expect_j.push(1.0);
        expect_f.push(1.0);
        let absent = if vnum % 2 == 1 { 1.0 } else { 0.0 };
        expect_j.push(absent / 5.0);
        expect_f.push(absent / 5.0);
        // "both boxes" predicted as box 2 only: per frame J = |2| / |1 ∪ 2|
        let (mut js, mut fs) = (0.0, 0.0);
        for t in 0..5 {
            let to_bin = |m: image::GrayImage| BinMask::from_bytes(48, 32, m.as_raw());
            let mut both = to_bin(object_mask(&s, vnum, 1, t));
            both.union_with(&to_bin(object_mask(&s, vnum, 2, t)));
            let p = to_bin(object_mask(&s, vnum, 2, t));
            js += jaccard(&both, &p, None);
            fs += f_measure(&both, &p, None);
        }
        expect_j.push(js / 5.0);
        expect_f.push(fs / 5.0);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        (r.j - mean(&expect_j)).abs() < 1e-12,
        "{} vs {}",
        r.j,
        mean(&expect_j)
    );
    assert!((r.f - mean(&expect_f)).abs() < 1e-12);
    // a video without predictions counts 0 (MeViS); for ReasonVOS it is excluded
    std::fs::remove_dir_all(pred.path().join("video2")).unwrap();
    let r2 = score(&ds, pred.path(), &ScoreOptions::default(), None).unwrap();
    assert_eq!(
        r2.items
            .iter()
            .filter(|i| i.status == Status::MissingZero)
            .count(),
        3
    );
    assert!(r2.j < r.j);
}

#[test]
fn eval_runs_each_layout_and_shards_merge_to_one_run() {
    let tiny = common::fixture("videolisa_tiny");
    let paths = ModelPaths {
        model: tiny.join("model"),
        clip: tiny.join("clip"),
    };
    let model = VideoLisa::load(&paths, LoadOptions::defaults(candle_core::Device::Cpu)).unwrap();
    let small = SyntheticSpec {
        videos: 2,
        frames: 3,
        width: 48,
        height: 32,
    };
    for kind in KINDS {
        let root = tempfile::tempdir().unwrap();
        let split = write(kind, root.path(), &small).unwrap();
        let ds = Dataset::load(kind, root.path(), &split).unwrap();
        let opts = |shard| EvalOptions {
            shard,
            protocol: Protocol::Default,
            segment: SegmentOptions::default(),
        };
        let one = tempfile::tempdir().unwrap();
        let s1 = eval(&model, &ds, one.path(), &opts(Shard::WHOLE)).unwrap();
        assert_eq!(s1.ran, ds.expression_count());
        let again = eval(&model, &ds, one.path(), &opts(Shard::WHOLE)).unwrap();
        assert_eq!(
            (again.ran, again.resumed),
            (0, ds.expression_count()),
            "{kind:?}: a rerun resumes"
        );
        let sharded = tempfile::tempdir().unwrap();
        let a = eval(&model, &ds, sharded.path(), &opts(Shard { index: 0, count: 2 })).unwrap();
        let b = eval(&model, &ds, sharded.path(), &opts(Shard { index: 1, count: 2 })).unwrap();
        assert_eq!(a.ran + b.ran, ds.expression_count());
        assert!(a.score.is_none() && b.score.is_none());
        let (merged, zip) = videolisa::eval::run::finish(&ds, sharded.path(), Protocol::Default).unwrap();
        match kind {
            DatasetKind::RefYtvos => {
                let z = zip.expect("server split: submission zip");
                let f = std::fs::File::open(&z).unwrap();
                let archive = zip::ZipArchive::new(f).unwrap();
                let names: Vec<&str> = archive.file_names().collect();
                assert_eq!(names.len(), 2 * 2 * 3);
                assert!(names.iter().all(|n| n.starts_with("Annotations/")), "{names:?}");
                assert!(names.contains(&"Annotations/video0/1/00010.png"), "{names:?}");
            }
            _ => {
                let (m, s) = (merged.unwrap(), s1.score.unwrap());
                println!("{kind:?}: one run J&F {:.6}, merged shards {:.6}", s.jf, m.jf);
                assert_eq!(
                    (m.j, m.f),
                    (s.j, s.f),
                    "{kind:?}: shards merge to the same numbers"
                );
                assert!(
                    sharded.path().join("scores/results.json").exists()
                        && sharded.path().join("scores/report.md").exists()
                );
                if kind == DatasetKind::RefDavis {
                    assert!(sharded.path().join("scores/anno_3/video0/00010.png").exists());
                }
            }
        }
    }
}

#[test]
fn bad_inputs_are_named() {
    let root = tempfile::tempdir().unwrap();
    let split = write(DatasetKind::Mevis, root.path(), &spec()).unwrap();
    let meta = root.path().join("valid_u/meta_expressions.json");
    let good = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, good.replace("\"video0\"", "\"../evil\"")).unwrap();
    let e = Dataset::load(DatasetKind::Mevis, root.path(), &split)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("meta_expressions.json") && e.contains("../evil"),
        "{e}"
    );
    std::fs::write(&meta, "{\"videos\": [").unwrap();
    let e = Dataset::load(DatasetKind::Mevis, root.path(), &split)
        .unwrap_err()
        .to_string();
    assert!(e.contains("meta_expressions.json") && e.contains("JSON"), "{e}");
    std::fs::write(&meta, &good).unwrap();
    // malformed RLE
    let md = root.path().join("valid_u/mask_dict.json");
    let text = std::fs::read_to_string(&md).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut v = v.as_object().unwrap().clone();
    let first = v.get_mut("0").unwrap().as_array_mut().unwrap();
    first[0] = serde_json::json!({"size": [32, 48], "counts": "!!!"});
    std::fs::write(&md, serde_json::to_string(&v).unwrap()).unwrap();
    let ds = Dataset::load(DatasetKind::Mevis, root.path(), &split).unwrap();
    let pred = tempfile::tempdir().unwrap();
    write_preds(&ds, pred.path(), &|_, _| 1);
    let e = score(&ds, pred.path(), &ScoreOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mask_dict.json") && e.contains("\"0\""), "{e}");
    std::fs::write(&md, &text).unwrap();
    // a prediction of another size
    let p = pred.path().join("video0/0/00000.png");
    write_mask_png(&p, &image::GrayImage::new(10, 10), 255).unwrap();
    let e = score(&ds, pred.path(), &ScoreOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("video0/0/00000.png") && e.contains("10x10") && e.contains("48x32"),
        "{e}"
    );
}
