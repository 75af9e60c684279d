//! Scoring other tools' predictions exactly as the official scripts do: the Ref-DAVIS merge of
//! VideoLISA's `post_process_davis.py` (gray value / 100, below 0.5 is background, argmax
//! against a 0.1 background, ties to the lower id), CSV reports that survive any id, MeViS's
//! treatment of a missing expression folder, and ReasonVOS keys that cannot collide.

use std::path::Path;
use videolisa::eval::datasets::{Dataset, DatasetKind};
use videolisa::eval::score::{
    csv_field, merge_davis, score, write_reports, ItemScore, MissingExpression, Protocol, ScoreOptions,
    Status,
};
use videolisa::eval::synthetic::{object_mask, write, SyntheticSpec};
use videolisa::output::write_mask_png;

const SPEC: SyntheticSpec = SyntheticSpec {
    videos: 2,
    frames: 4,
    width: 48,
    height: 32,
};

fn video_number(name: &str) -> usize {
    name.trim_start_matches("video")
        .trim_start_matches("vid_")
        .trim_end_matches('x')
        .parse()
        .unwrap()
}

/// Writes every expression's true object with foreground `value` (Ref-DAVIS: object = id / 4 + 1).
fn oracle(ds: &Dataset, pred: &Path, value: u8) {
    for v in &ds.videos {
        let n = video_number(&v.name);
        for e in &v.expressions {
            let i: usize = e.exp_id.parse().unwrap();
            let obj = if ds.kind == DatasetKind::RefDavis {
                i / 4 + 1
            } else {
                i + 1
            };
            for (t, f) in v.frames.iter().enumerate() {
                let m = object_mask(&SPEC, n, obj, t);
                write_mask_png(&pred.join(&e.out_dir).join(format!("{f}.png")), &m, value).unwrap();
            }
        }
    }
}

#[test]
fn davis_merge_follows_post_process_davis() {
    let objects =
        |v: &[[u8; 2]]| -> Vec<Vec<u8>> { (0..2).map(|k| v.iter().map(|p| p[k]).collect()).collect() };
    // pixels: both 255 (tie → lower id), 0/1 masks (1/100 < 0.5 → background), 49 vs 50
    // (the threshold), soft 120 vs 200 (higher wins), 200 vs 120, nothing
    let px = [
        [255, 255],
        [1, 1],
        [49, 50],
        [120, 200],
        [200, 120],
        [0, 0],
        [100, 0],
    ];
    assert_eq!(merge_davis(&objects(&px), px.len()), vec![1, 0, 2, 2, 1, 0, 1]);
}

#[test]
fn davis_scores_of_binary_01_and_255_predictions() {
    let root = tempfile::tempdir().unwrap();
    let split = write(DatasetKind::RefDavis, root.path(), &SPEC).unwrap();
    let ds = Dataset::load(DatasetKind::RefDavis, root.path(), &split).unwrap();
    let opts = ScoreOptions {
        protocol: Protocol::Referformer,
        ..ScoreOptions::default()
    };
    let score_with = |value: u8| {
        let pred = tempfile::tempdir().unwrap();
        oracle(&ds, pred.path(), value);
        score(&ds, pred.path(), &opts, None).unwrap()
    };
    let full = score_with(255);
    assert!((full.jf - 1.0).abs() < 1e-12, "{}", full.jf);
    // the official merge reads 0/1 masks as scores of 0.01: every object is background
    let ones = score_with(1);
    let empty = {
        let pred = tempfile::tempdir().unwrap();
        oracle(&ds, pred.path(), 255);
        for v in &ds.videos {
            for e in &v.expressions {
                for f in &v.frames {
                    let m = image::GrayImage::new(SPEC.width, SPEC.height);
                    write_mask_png(&pred.path().join(&e.out_dir).join(format!("{f}.png")), &m, 255).unwrap();
                }
            }
        }
        score(&ds, pred.path(), &opts, None).unwrap()
    };
    println!(
        "ReferFormer protocol: 0/255 oracle {:.4}, 0/1 oracle {:.4}, empty {:.4}",
        full.jf, ones.jf, empty.jf
    );
    assert!((ones.jf - empty.jf).abs() < 1e-12);
    assert!(ones.jf < 0.5);
    // values from 50 up are foreground
    assert!((score_with(50).jf - 1.0).abs() < 1e-12);
}

#[test]
fn mevis_missing_expression_folder_error_or_drop() {
    let root = tempfile::tempdir().unwrap();
    let split = write(DatasetKind::Mevis, root.path(), &SPEC).unwrap();
    let ds = Dataset::load(DatasetKind::Mevis, root.path(), &split).unwrap();
    let pred = tempfile::tempdir().unwrap();
    oracle(&ds, pred.path(), 255);
    // expression 2 ("both boxes") is predicted as box 3, which does not exist: write the union
    for v in &ds.videos {
        let n = video_number(&v.name);
        for (t, f) in v.frames.iter().enumerate() {
            let mut m = object_mask(&SPEC, n, 1, t);
            for (a, b) in m.pixels_mut().zip(object_mask(&SPEC, n, 2, t).pixels()) {
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
    let removed = pred.path().join(&ds.videos[0].name).join("1");
    std::fs::remove_dir_all(&removed).unwrap();
    let e = score(&ds, pred.path(), &ScoreOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&ds.videos[0].name), "{e}");
    let opts = ScoreOptions {
        missing_expression: MissingExpression::Drop,
        ..ScoreOptions::default()
    };
    let r = score(&ds, pred.path(), &opts, None).unwrap();
    assert_eq!(r.counts["excluded"], 1);
    assert_eq!(r.counts["scored"], ds.expression_count() - 1);
    assert!((r.jf - 1.0).abs() < 1e-12, "{}", r.jf);
}

#[test]
fn csv_reports_quote_what_needs_quoting() {
    assert_eq!(csv_field("plain_id"), "plain_id");
    assert_eq!(csv_field("a,b"), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    let root = tempfile::tempdir().unwrap();
    let split = write(DatasetKind::Mevis, root.path(), &SPEC).unwrap();
    let ds = Dataset::load(DatasetKind::Mevis, root.path(), &split).unwrap();
    let pred = tempfile::tempdir().unwrap();
    oracle(&ds, pred.path(), 255);
    let mut r = score(
        &ds,
        pred.path(),
        &ScoreOptions {
            missing_expression: MissingExpression::Drop,
            ..ScoreOptions::default()
        },
        None,
    )
    .unwrap();
    r.items.push(ItemScore {
        video: "cat, \"the\" one".into(),
        id: "0,1".into(),
        j: 0.5,
        f: 0.25,
        frames: 3,
        status: Status::Scored,
    });
    let out = tempfile::tempdir().unwrap();
    write_reports(&r, out.path()).unwrap();
    let csv = std::fs::read_to_string(out.path().join("per_item.csv")).unwrap();
    assert!(
        csv.ends_with("\"cat, \"\"the\"\" one\",\"0,1\",0.500000,0.250000,0.375000,3,scored\n"),
        "{csv}"
    );
    let per_video = std::fs::read_to_string(out.path().join("per_video.csv")).unwrap();
    assert!(per_video.contains("\"cat, \"\"the\"\" one\",1,"), "{per_video}");
}

#[test]
fn reasonvos_keys_that_collide_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let meta = serde_json::json!({"videos": {
        "a_b": {"source": "MOSE", "frames": ["00000"], "expressions": [
            {"obj_id": "1", "exp_id": "0", "exp_text": "the cat", "is_sent": false}]},
        "b": {"source": "MOSE_a", "frames": ["00000"], "expressions": [
            {"obj_id": "1", "exp_id": "0", "exp_text": "the dog", "is_sent": false}]}
    }});
    std::fs::write(root.path().join("meta_expressions.json"), meta.to_string()).unwrap();
    let e = Dataset::load(DatasetKind::Reasonvos, root.path(), "valid")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MOSE_a_b_1/0") && e.contains("\"a_b\"") && e.contains("\"b\""),
        "{e}"
    );
}
