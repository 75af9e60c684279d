//! `videolisa segment` end to end with the tiny checkpoint: outputs, summary, dump, several
//! prompts, and precise errors for missing/partial checkpoints and offline cache misses.

mod common;

use common::{fixture, repo};
use std::path::Path;
use std::process::{Command, Output};

fn videolisa(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_videolisa"));
    c.args(args).env_remove("HF_HUB_OFFLINE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn segments_the_demo_clip_with_two_prompts() {
    let out = tempfile::tempdir().unwrap();
    let tiny = fixture("videolisa_tiny");
    let demo = repo("examples/demo/demo.mp4");
    let dump = out.path().join("dump");
    let o = videolisa(
        &[
            "segment",
            "--video",
            demo.to_str().unwrap(),
            "--prompt",
            "the red ball",
            "--prompt",
            "the blue square",
            "--out",
            out.path().to_str().unwrap(),
            "--model",
            tiny.join("model").to_str().unwrap(),
            "--clip",
            tiny.join("clip").to_str().unwrap(),
            "--rle",
            "--overlay",
            "--dump",
            dump.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["frames"], 40);
    assert_eq!(summary["dtypes"]["llm"], "bf16");
    assert_eq!(summary["dense"], serde_json::json!([3, 10, 18, 26]));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(on_disk["prompts"], summary["prompts"]);
    for k in 0..2 {
        let d = out.path().join(format!("prompt_{k}"));
        for f in 0..40 {
            let m = image::open(d.join(format!("{f:05}.png"))).unwrap().to_luma8();
            assert_eq!(m.dimensions(), (320, 240));
            assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        }
        assert!(d.join("overlay.mp4").exists() && d.join("overlay/00039.png").exists());
        assert!(d.join("masks.rle.json").exists());
    }
    let t = common::load_tensors(&dump.join("dump.safetensors"));
    assert_eq!(t["visual_tokens"].dims(), &[32 + 4 * 16, 64]);
    assert_eq!(t["prompt_1.embedding"].dims(), &[1, 32]);
    assert_eq!(t["prompt_0.logits"].dims(), &[40, 240, 320]);
    // the masks on disk are the dumped logits thresholded at 0
    let logits: Vec<f32> = t["prompt_0.logits"]
        .get(7)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let m = image::open(out.path().join("prompt_0/00007.png"))
        .unwrap()
        .to_luma8();
    assert!(logits
        .iter()
        .zip(m.pixels())
        .all(|(l, p)| (*l > 0.0) == (p.0[0] == 255)));
}

#[test]
fn missing_and_partial_checkpoints_are_precise_errors() {
    let tiny = fixture("videolisa_tiny");
    let demo = repo("examples/demo/demo.mp4");
    let out = tempfile::tempdir().unwrap();
    let run = |model: &Path| {
        videolisa(
            &[
                "segment",
                "--video",
                demo.to_str().unwrap(),
                "-p",
                "x",
                "--out",
                out.path().to_str().unwrap(),
                "--model",
                model.to_str().unwrap(),
                "--clip",
                tiny.join("clip").to_str().unwrap(),
            ],
            &[],
        )
    };
    let o = run(&out.path().join("no-such-dir"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no-such-dir"), "{}", stderr(&o));

    let partial = tempfile::tempdir().unwrap();
    copy_dir(&tiny.join("model"), partial.path());
    std::fs::remove_file(partial.path().join("model-00002-of-00002.safetensors")).unwrap();
    let o = run(partial.path());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("model-00002-of-00002.safetensors"),
        "{}",
        stderr(&o)
    );

    copy_dir(&tiny.join("model"), partial.path());
    std::fs::remove_file(partial.path().join("tokenizer.model")).unwrap();
    let o = run(partial.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("tokenizer.model"), "{}", stderr(&o));

    copy_dir(&tiny.join("model"), partial.path());
    std::fs::remove_file(partial.path().join("config.json")).unwrap();
    let o = run(partial.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));
}

#[test]
fn offline_hub_ids_resolve_from_the_cache_or_say_what_is_missing() {
    let tiny = fixture("videolisa_tiny");
    let demo = repo("examples/demo/demo.mp4");
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "segment",
            "--video",
            demo.to_str().unwrap(),
            "-p",
            "x",
            "--out",
            out.to_str().unwrap(),
            "--model",
            "ZechenBai/VideoLISA-3.8B",
            "--offline",
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    let a = args(out.path());
    let o = videolisa(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("HF_HOME", home.path())],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("models--ZechenBai--VideoLISA-3.8B")
            && e.contains("config.json")
            && e.contains("tokenizer.model"),
        "{e}"
    );
    // a populated cache: refs/main + snapshots/<commit>/ for both repositories
    for (id, src) in [
        ("ZechenBai--VideoLISA-3.8B", "model"),
        ("openai--clip-vit-large-patch14-336", "clip"),
    ] {
        let repo_dir = home.path().join("hub").join(format!("models--{id}"));
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "0123abcd").unwrap();
        copy_dir(&tiny.join(src), &repo_dir.join("snapshots/0123abcd"));
    }
    let o = videolisa(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("HF_HOME", home.path())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.path().join("prompt_0/00039.png").exists());
}
