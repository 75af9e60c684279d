//! Every run is honest about what it computed, and refuses bad input before expensive work:
//! output folders carry a run manifest (stale results are never reported as new, a used folder is
//! replaced cleanly, a foreign one is refused), prompts and options are checked up front, and
//! every error is said once with its cause. One test per measured problem of the issue.

mod common;

use common::{fixture, repo, text, tiny_args, videolisa};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn tiny() -> (String, String) {
    let [_, model, _, clip] = tiny_args();
    (model, clip)
}

/// `segment` with the tiny checkpoint; `extra` goes last.
fn segment(video: &Path, out: &Path, prompts: &[&str], extra: &[&str]) -> Output {
    let (model, clip) = tiny();
    let mut a = vec![
        "segment",
        "--video",
        video.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for p in prompts {
        a.extend(["-p", p]);
    }
    a.extend(["--model", &model, "--clip", &clip]);
    a.extend(extra);
    videolisa(&a)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A folder with the first `n` demo frames.
fn demo_frames(n: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for i in 0..n {
        let f = format!("{i:05}.jpg");
        std::fs::copy(repo("examples/demo/frames").join(&f), d.path().join(&f)).unwrap();
    }
    d
}

#[test]
fn segment_twice_into_one_folder_leaves_nothing_stale() {
    let out = tempfile::tempdir().unwrap();
    let o = segment(
        &repo("examples/demo/frames"),
        out.path(),
        &["the red ball", "the blue square"],
        &["--rle"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(names(&out.path().join("prompt_1")).len(), 41); // 40 masks + masks.rle.json
    let short = demo_frames(5);
    let o = segment(short.path(), out.path(), &["the red ball"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        names(out.path()),
        ["prompt_0", "summary.json", "videolisa-run.json"]
    );
    assert_eq!(names(&out.path().join("prompt_0")).len(), 5);
    assert_eq!(json(&out.path().join("summary.json"))["frames"], 5);
    let m = json(&out.path().join("videolisa-run.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["command"], "segment");
    assert!(m["settings"]["model"].is_string() && m["settings"]["dtypes"].is_string());
}

#[test]
fn foreign_output_folders_are_refused_before_any_work_unless_forced() {
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("thesis.pdf"), b"mine").unwrap();
    let demo = repo("examples/demo/demo.mp4");
    // a model that does not exist: the folder is refused first, before anything is loaded
    let o = videolisa(&[
        "segment",
        "--video",
        demo.to_str().unwrap(),
        "-p",
        "x",
        "--out",
        out.path().to_str().unwrap(),
        "--model",
        "/nonexistent/model",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("thesis.pdf") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    assert_eq!(names(out.path()), ["thesis.pdf"]);
    let o = segment(&demo, out.path(), &["x"], &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.path().join("thesis.pdf").exists() && out.path().join("prompt_0/00039.png").exists());
}

#[test]
fn unwritable_output_is_found_first_and_the_os_error_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file").unwrap();
    let out = blocker.join("out");
    let o = segment(&repo("examples/demo/demo.mp4"), &out, &["x"], &[]);
    // a place that cannot be an output folder is bad input (exit 2), said once
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("blocker"), "{err}");
    assert_eq!(err.matches("a file").count(), 1, "{err}");
}

/// `eval` of the MeViS `valid_u` split under `root` with the tiny checkpoint; `extra` goes last.
fn mevis_eval(root: &Path, out: &Path, extra: &[&str]) -> Output {
    let (model, clip) = tiny();
    let mut a = vec![
        "eval",
        "--dataset",
        "mevis",
        "--root",
        root.to_str().unwrap(),
        "--split",
        "valid_u",
    ];
    a.extend(["--out", out.to_str().unwrap(), "--model", &model, "--clip", &clip]);
    a.extend(extra);
    videolisa(&a)
}

#[test]
fn eval_resumes_only_the_same_computation() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("mevis");
    common::synthetic("mevis", &root, &["--videos", "2", "--frames", "3"]);
    let run = tempfile::tempdir().unwrap();
    let out = run.path().join("run");
    let eval = |extra: &[&str]| {
        let mut a = vec!["--json"];
        a.extend(extra);
        mevis_eval(&root, &out, &a)
    };
    let o = eval(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let first: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(first["ran"].as_u64().unwrap() > 0);
    // the same command resumes everything, and says it was checked
    let again: Value = serde_json::from_slice(&eval(&[]).stdout).unwrap();
    assert_eq!(
        (again["ran"].as_u64(), again["resumed"].clone()),
        (Some(0), first["ran"].clone())
    );
    assert!(again["resumed_run"].is_u64());
    // other sampling or dtypes: refused, naming what differs, with no score printed as new
    for (extra, what) in [
        (&["--sparse", "8"][..], "sampling"),
        (&["--dtype", "f32"][..], "dtypes"),
    ] {
        let o = eval(extra);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains(what) && text(&o).contains("--fresh"),
            "{}",
            text(&o)
        );
        assert!(o.stdout.is_empty());
    }
    // --fresh discards and recomputes
    let o = eval(&["--sparse", "8", "--fresh"]);
    assert!(o.status.success(), "{}", text(&o));
    let fresh: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(fresh["ran"], first["ran"]);
    assert_eq!(
        json(&out.join("videolisa-run.json"))["settings"]["sampling"],
        "sparse=8,dense=4"
    );
    // results without a manifest (another tool, an older videolisa) are not trusted
    std::fs::remove_file(out.join("videolisa-run.json")).unwrap();
    let o = eval(&["--sparse", "8"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no run manifest"), "{}", text(&o));
}

#[test]
fn prompts_and_options_are_checked_before_any_work() {
    let out = tempfile::tempdir().unwrap();
    let demo = repo("examples/demo/demo.mp4");
    let long = "the small red ball that rolls ".repeat(700);
    for (prompts, extra, needle) in [
        (vec![long.as_str()], vec![], "max_position_embeddings"),
        (vec!["the dog [SEG] now"], vec!["--template", "chat"], "[SEG]"),
        (vec!["<image> the dog"], vec![], "<image>"),
        (
            vec!["x"],
            vec!["--dense", "33"],
            "--dense 33 is more than --sparse 32",
        ),
        (vec!["x"], vec!["--mask-value", "0"], "mask-value"),
        (vec!["x"], vec!["--sam-batch", "0"], "sam-batch"),
    ] {
        let t = std::time::Instant::now();
        let o = segment(&demo, out.path(), &prompts, &extra);
        assert_eq!(o.status.code(), Some(2), "{needle}: {}", text(&o));
        assert!(text(&o).contains(needle), "{needle}: {}", text(&o));
        assert!(!out.path().join("summary.json").exists());
        assert!(t.elapsed().as_secs() < 30);
    }
    let o = videolisa(&["probe", demo.to_str().unwrap(), "--frames", "0,1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--dump"), "{}", text(&o));
}

/// A copy of the tiny checkpoint with `edit` applied to its config.json.
fn edited_model(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src = fixture("videolisa_tiny/model");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
    }
    let p = d.path().join("config.json");
    let mut cfg = json(&p);
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    d
}

#[test]
fn the_attention_window_is_explicit_and_reported() {
    let (_, clip) = tiny();
    let out = tempfile::tempdir().unwrap();
    let demo = demo_frames(3);
    let missing = edited_model(|c| {
        c.remove("sliding_window");
    });
    let args = |model: &Path| -> Vec<String> {
        [
            "segment",
            "--video",
            demo.path().to_str().unwrap(),
            "-p",
            "x",
            "--out",
            out.path().to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--clip",
            &clip,
            "--json",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |model: &Path| videolisa(&args(model).iter().map(String::as_str).collect::<Vec<_>>());
    let o = run(missing.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`sliding_window` is missing"), "{}", text(&o));
    let null = edited_model(|c| {
        c.insert("sliding_window".into(), Value::Null);
    });
    let o = run(null.path());
    assert!(o.status.success(), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["sliding_window"].is_null());
    let o = run(Path::new(&tiny().0));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["sliding_window"], 40);
}

#[test]
fn wrong_checkpoints_say_what_they_are() {
    let (model, clip) = tiny();
    let out = tempfile::tempdir().unwrap();
    let demo = repo("examples/demo/demo.mp4");
    let o = videolisa(&[
        "segment",
        "--video",
        demo.to_str().unwrap(),
        "-p",
        "x",
        "--out",
        out.path().to_str().unwrap(),
        "--model",
        &clip,
        "--clip",
        &model,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("swapped") && !text(&o).contains("num_attention_heads"),
        "{}",
        text(&o)
    );
    // a mistyped local path (its parent folder exists here) is not sent to the hub
    let o = videolisa(&[
        "segment",
        "--video",
        demo.to_str().unwrap(),
        "-p",
        "x",
        "--out",
        out.path().to_str().unwrap(),
        "--model",
        "tests/videolisa_tyny",
        "--clip",
        &clip,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no such checkpoint folder"), "{}", text(&o));
}

#[test]
fn overlays_of_any_frame_size_and_masks_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    for (w, h) in [(1u32, 1u32), (4000, 16)] {
        let img = dir.path().join(format!("f_{w}x{h}.png"));
        image::RgbImage::from_fn(w, h, |x, _| image::Rgb([(x % 256) as u8, 40, 90]))
            .save(&img)
            .unwrap();
        let out = dir.path().join(format!("out_{w}x{h}"));
        let o = segment(&img, &out, &["x"], &["--overlay"]);
        assert!(o.status.success(), "{w}x{h}: {}", text(&o));
        let p = out.join("prompt_0");
        assert!(p.join(format!("f_{w}x{h}.png")).exists() && p.join("overlay.mp4").exists());
        let v = videolisa::video::Video::open(p.join("overlay.mp4")).unwrap();
        assert_eq!(v.len(), 1);
        assert!(json(&out.join("summary.json"))["warnings"]
            .as_array()
            .unwrap()
            .is_empty());
    }
}

#[test]
fn dataset_problems_are_found_before_any_video_runs() {
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("mevis");
    common::synthetic("mevis", &root, &[]);
    let last = root.join("valid_u/JPEGImages/video2/00010.jpg");
    std::fs::remove_file(&last).unwrap();
    let out = data.path().join("run");
    let o = mevis_eval(&root, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("video2/00010.jpg"), "{}", text(&o));
    assert!(!out.exists(), "nothing may run before the dataset is checked");
    // an expression id too long to be a file name fails when the dataset is read
    let meta = root.join("valid_u/meta_expressions.json");
    let mut m = json(&meta);
    let exps = m["videos"]["video0"]["expressions"].as_object_mut().unwrap();
    let e = exps.remove("0").unwrap();
    exps.insert("7".repeat(300), e);
    std::fs::write(&meta, serde_json::to_vec(&m).unwrap()).unwrap();
    let o = videolisa(&[
        "score",
        "--dataset",
        "mevis",
        "--root",
        root.to_str().unwrap(),
        "--split",
        "valid_u",
        "--pred",
        data.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("300 bytes long"), "{}", text(&o));
}

#[test]
fn synthetic_handles_many_videos_and_leaves_nothing_on_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("many");
    common::synthetic("ref-davis", &root, &["--videos", "37"]);
    assert_eq!(names(&root.join("valid/JPEGImages")).len(), 37);
    let o = videolisa(&["synthetic", "--dataset", "mevis", "--out", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(names(dir.path()), ["many"]);
    let o = videolisa(&[
        "synthetic",
        "--dataset",
        "mevis",
        "--out",
        dir.path().join("none").to_str().unwrap(),
        "--videos",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(names(dir.path()), ["many"]);
}
