//! `segment --propagate --annotate`: the user's corrections join XMem++'s permanent memory, the
//! prompt stage is kept in the output folder, and a rerun that only changes corrections reuses
//! it (CLIP, the LLM and SAM do not run) with the same masks a full run makes; anything else
//! changed recomputes and says why.

mod common;

use common::{fixture, text, videolisa};
use image::GrayImage;
use std::path::{Path, PathBuf};

/// The first 16 frames of the XMem fixture clip (49×37 PNGs).
fn clip(root: &Path) -> PathBuf {
    common::first_frames("xmem_tiny/frames", 16, root)
}

fn segment(video: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let tiny = fixture("videolisa_tiny");
    let (model, clip, xmem) = (
        tiny.join("model"),
        tiny.join("clip"),
        fixture("xmem_tiny/XMem.pth"),
    );
    let mut a = vec![
        "segment",
        "--video",
        video.to_str().unwrap(),
        "--prompt",
        "the red ball",
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
        "--propagate",
        "--xmem",
        xmem.to_str().unwrap(),
        "--json",
    ];
    a.extend(extra);
    videolisa(&a)
}

fn summary(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn masks(dir: &Path) -> Vec<Vec<u8>> {
    (0..16)
        .map(|i| std::fs::read(dir.join(format!("prompt_0/frame_{i:06}.png"))).unwrap())
        .collect()
}

#[test]
fn a_correction_reruns_only_xmem_and_matches_a_full_run() {
    let run = tempfile::tempdir().unwrap();
    let frames = clip(run.path());
    let out = run.path().join("out");
    let first = summary(&segment(&frames, &out, &[]));
    assert!(
        first["prompt_stage"].as_str().unwrap().starts_with("computed"),
        "{first}"
    );
    assert!(out.join("prompt_stage.safetensors").is_file());
    assert!(first["seconds"]["llm"].as_f64().unwrap() > 0.0);

    // a correction on frame 5: a box in the top-left quarter
    let fix = run.path().join("fix.png");
    GrayImage::from_fn(49, 37, |x, y| {
        image::Luma([if x < 20 && y < 15 { 255 } else { 0 }])
    })
    .save(&fix)
    .unwrap();
    let arg = format!("5={}", fix.display());
    let t = std::time::Instant::now();
    let again = summary(&segment(&frames, &out, &["--annotate", &arg]));
    let rerun_s = t.elapsed().as_secs_f64();
    assert!(
        again["prompt_stage"].as_str().unwrap().starts_with("reused"),
        "{again}"
    );
    for stage in ["clip", "llm", "sam_encode", "sam_decode"] {
        assert_eq!(
            again["seconds"][stage].as_f64(),
            Some(0.0),
            "{stage} ran: {again}"
        );
    }
    assert_eq!(again["propagation"]["annotated"], serde_json::json!([[5]]));
    // the clip is upscaled for XMem, where its round trip of a given mask is exact
    let five = image::open(out.join("prompt_0/frame_000005.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(five.as_raw(), image::open(&fix).unwrap().to_luma8().as_raw());
    let corrected = masks(&out);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("videolisa-run.json")).unwrap()).unwrap();
    assert!(
        m["info"]["prompt_stage"].as_str().unwrap().starts_with("reused"),
        "{m}"
    );
    assert_eq!(m["status"], "complete");

    // the same correction in a fresh folder (everything computed) gives the same masks
    let fresh = run.path().join("fresh");
    let t = std::time::Instant::now();
    let full = summary(&segment(&frames, &fresh, &["--annotate", &arg]));
    let full_s = t.elapsed().as_secs_f64();
    assert!(full["prompt_stage"].as_str().unwrap().starts_with("computed"));
    assert_eq!(masks(&fresh), corrected, "a rerun and a full run differ");
    println!(
        "rerun with one correction: {rerun_s:.1} s (XMem++ {:.1} s); full run {full_s:.1} s",
        again["seconds"]["xmem"].as_f64().unwrap()
    );

    // without the correction the masks change back to the first run's
    let back = summary(&segment(&frames, &out, &[]));
    assert!(back["prompt_stage"].as_str().unwrap().starts_with("reused"));
    assert_ne!(masks(&out), corrected);

    // another setting recomputes, and says which
    let other = summary(&segment(&frames, &out, &["--sparse", "16", "--dense", "2"]));
    let why = other["prompt_stage"].as_str().unwrap();
    assert!(why.starts_with("recomputed") && why.contains("sampling"), "{why}");
    assert!(other["seconds"]["llm"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_corrections_are_refused_before_any_work() {
    let run = tempfile::tempdir().unwrap();
    let frames = clip(run.path());
    let small = run.path().join("small.png");
    GrayImage::new(10, 10).save(&small).unwrap();
    let ok = run.path().join("ok.png");
    GrayImage::new(49, 37).save(&ok).unwrap();
    let cases = [
        (
            format!("5={}", small.display()),
            "is 10×10, frame frame_000005 of the video is 49×37",
        ),
        (
            format!("16={}", ok.display()),
            "frame `16` is not in the video (16 frames",
        ),
        (format!("1:5={}", ok.display()), "there is no prompt 1"),
        ("5".to_string(), "is not [PROMPT:]FRAME=MASK.png"),
    ];
    for (i, (arg, needle)) in cases.iter().enumerate() {
        let out = run.path().join(format!("out{i}"));
        let o = segment(&frames, &out, &["--annotate", arg]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(needle), "expected `{needle}` in: {}", text(&o));
        assert!(!out.join("prompt_0").exists(), "nothing written");
    }
}
