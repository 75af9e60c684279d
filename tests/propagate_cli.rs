//! `--propagate` end to end with the committed tiny checkpoints (VideoLISA + XMem.pth):
//! `segment` writes every frame, its seed frames carry SAM's masks exactly (the clip is
//! upscaled, where XMem2's round trip is lossless), the summary says what XMem++ did, and
//! `eval --propagate` runs, scores, and refuses to resume as a run of the other mode.

mod common;

use common::{fixture, text, videolisa};
use std::path::Path;

fn model_args() -> Vec<String> {
    let tiny = fixture("videolisa_tiny");
    vec![
        "--model".into(),
        tiny.join("model").display().to_string(),
        "--clip".into(),
        tiny.join("clip").display().to_string(),
    ]
}

/// `videolisa COMMAND INPUT_FLAG INPUT -p "the red ball" --out OUT` with the tiny model and
/// `extra`.
fn run_on(command: &str, input_flag: &str, input: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut a: Vec<String> = [command, input_flag].map(String::from).to_vec();
    a.push(input.display().to_string());
    a.extend(["--prompt", "the red ball", "--out"].map(String::from));
    a.push(out.display().to_string());
    a.extend(model_args());
    a.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    videolisa(&refs)
}

fn segment(video: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    run_on("segment", "--video", video, out, extra)
}

#[test]
fn segment_propagate_seeds_from_sam_and_writes_every_frame() {
    let frames = fixture("xmem_tiny/frames");
    let xmem = fixture("xmem_tiny/XMem.pth");
    let run = tempfile::tempdir().unwrap();
    let (sam_out, xmem_out) = (run.path().join("sam"), run.path().join("xmem"));
    let o = segment(&frames, &sam_out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let dump = run.path().join("dump");
    let o = segment(
        &frames,
        &xmem_out,
        &[
            "--propagate",
            "--xmem",
            xmem.to_str().unwrap(),
            "--json",
            "--dump",
            dump.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let d = candle_core::safetensors::load(dump.join("xmem.safetensors"), &candle_core::Device::Cpu).unwrap();
    for k in [
        "xmem.frame_0.key",
        "prompt_0.xmem.frame_0.readout",
        "prompt_0.xmem.frame_159.prob",
    ] {
        assert!(
            d.contains_key(k),
            "{k} in the dump: {:?}",
            d.keys().collect::<Vec<_>>()
        );
    }
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &s["propagation"];
    assert_eq!(p["seed_frames"], serde_json::json!([17, 52, 92, 132]), "{p}");
    assert_eq!(
        p["consolidations"],
        serde_json::json!([1]),
        "160 frames consolidate once"
    );
    assert!(s["seconds"]["xmem"].as_f64().unwrap() > 0.0);

    let names: Vec<String> = (0..160).map(|i| format!("frame_{i:06}.png")).collect();
    let mut differ_from_sam = 0;
    for (i, n) in names.iter().enumerate() {
        let ours = std::fs::read(xmem_out.join("prompt_0").join(n)).unwrap();
        let sam = std::fs::read(sam_out.join("prompt_0").join(n)).unwrap();
        if [17, 52, 92, 132].contains(&i) {
            assert_eq!(ours, sam, "seed frame {i} carries SAM's mask");
        } else {
            differ_from_sam += usize::from(ours != sam);
        }
    }
    assert!(
        differ_from_sam > 100,
        "XMem++ made the other frames ({differ_from_sam} differ from SAM's)"
    );

    // `propagate` given the same seeds (segment's output on the seed frames) makes the same
    // masks: VideoLISA's post-optimization is XMem++ alone on SAM's masks.
    let seeds = run.path().join("seeds");
    std::fs::create_dir(&seeds).unwrap();
    for i in [17, 52, 92, 132] {
        std::fs::copy(xmem_out.join("prompt_0").join(&names[i]), seeds.join(&names[i])).unwrap();
    }
    let alone = run.path().join("alone");
    let o = videolisa(&[
        "propagate",
        "--video",
        frames.to_str().unwrap(),
        "--masks",
        seeds.to_str().unwrap(),
        "--out",
        alone.to_str().unwrap(),
        "--xmem",
        xmem.to_str().unwrap(),
        "--binary",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for n in &names {
        let a = std::fs::read(alone.join("object_255").join(n)).unwrap();
        let b = std::fs::read(xmem_out.join("prompt_0").join(n)).unwrap();
        assert_eq!(a, b, "{n}: propagate and segment --propagate differ");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sam_out.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary.get("propagation").is_none() && summary["seconds"].get("xmem").is_none(),
        "default runs report as before: {summary}"
    );
}

#[test]
fn propagate_usage_errors_exit_2() {
    let frames = fixture("xmem_tiny/frames");
    let run = tempfile::tempdir().unwrap();
    let o = segment(&frames, &run.path().join("a"), &["--propagate"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--xmem") && text(&o).contains("XMem.pth"),
        "{}",
        text(&o)
    );
    let missing = run.path().join("nope/XMem.pth");
    let o = segment(
        &frames,
        &run.path().join("b"),
        &["--propagate", "--xmem", missing.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nope/XMem.pth"), "{}", text(&o));
    assert!(
        !run.path().join("b/prompt_0").exists(),
        "nothing is written before the checks"
    );
}

#[test]
fn eval_propagate_scores_and_keeps_modes_apart() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("davis");
    common::synthetic("ref-davis", &root, &["--videos", "2", "--frames", "12"]);
    let out = data.path().join("run");
    let xmem = fixture("xmem_tiny/XMem.pth");
    let mut base: Vec<String> = ["eval", "--dataset", "ref-davis", "--root"]
        .map(String::from)
        .to_vec();
    base.push(root.display().to_string());
    base.extend(["--split", "valid", "--out"].map(String::from));
    base.push(out.display().to_string());
    base.extend(model_args());
    let run = |extra: &[&str]| {
        let mut a = base.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        videolisa(&refs)
    };
    let o = run(&["--propagate", "--xmem", xmem.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("J&F"), "{}", text(&o));
    let o = run(&[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a propagated run is not resumed as a plain one: {}",
        text(&o)
    );
    assert!(text(&o).contains("propagate"), "{}", text(&o));
}

#[test]
fn batch_propagate_matches_segment_and_keeps_modes_apart() {
    let run = tempfile::tempdir().unwrap();
    let videos = run.path().join("videos");
    let clip = videos.join("clip1");
    std::fs::create_dir_all(&clip).unwrap();
    // the first 60 frames: enough for four seeds and propagation between them (the whole clip,
    // with a consolidation, is the first test's)
    let mut frames: Vec<_> = std::fs::read_dir(fixture("xmem_tiny/frames"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    frames.sort();
    for f in &frames[..60] {
        std::fs::copy(f, clip.join(f.file_name().unwrap())).unwrap();
    }
    let xmem = fixture("xmem_tiny/XMem.pth");
    let single = run.path().join("single");
    let o = segment(&clip, &single, &["--propagate", "--xmem", xmem.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = run.path().join("batch");
    let batch = |extra: &[&str]| run_on("batch", "--videos", &videos, &out, extra);
    let o = batch(&["--propagate", "--xmem", xmem.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for i in 0..60 {
        let n = format!("prompt_0/frame_{i:06}.png");
        assert_eq!(
            std::fs::read(out.join("clip1").join(&n)).unwrap(),
            std::fs::read(single.join(&n)).unwrap(),
            "{n}"
        );
    }
    let o = batch(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("propagate"), "{}", text(&o));
}
