//! `videolisa batch` with the tiny checkpoint: many videos of mixed kinds give exactly the masks
//! of separate `segment` runs; a batch killed with SIGKILL completes on rerun with identical
//! outputs and one result line per job; bad rows are listed before anything runs (or skipped);
//! a failing video is recorded and the batch goes on; changed jobs are recomputed; shards share
//! one folder; the stdin mode answers job by job.

mod common;

use common::{batch, fixture, repo, results, text, tiny_args as tiny, videolisa};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// (id, video, prompts, extra JSON fields) of a mixed batch of 22 videos.
fn mixed_jobs(dir: &Path) -> Vec<(String, PathBuf, Vec<&'static str>, Value)> {
    let mut jobs = Vec::new();
    for f in [
        "high_bframes",
        "baseline",
        "cut_editlist",
        "rotate90",
        "bt709",
        "full_range",
        "cropped_98x62",
    ] {
        jobs.push((
            format!("mp4_{f}"),
            fixture("mp4").join(format!("{f}.mp4")),
            vec!["the moving thing"],
            Value::Null,
        ));
    }
    for (k, start) in [0usize, 10, 33].iter().enumerate() {
        let d = dir.join(format!("frames_{k}"));
        std::fs::create_dir_all(&d).unwrap();
        for i in *start..start + 5 {
            let f = format!("{i:05}.jpg");
            std::fs::copy(repo("examples/demo/frames").join(&f), d.join(&f)).unwrap();
        }
        jobs.push((
            format!("folder_{k}"),
            d,
            vec!["the red ball", "the blue square"],
            Value::Null,
        ));
    }
    for f in [
        "pil_q75_420.jpg",
        "pil_progressive_420.jpg",
        "cjpeg_arithmetic.jpg",
        "pil_cmyk.jpg",
        "libjpeg_ycck.jpg",
        "exif_orientation_6.jpg",
        "pil_gray.jpg",
        "png_rgba.png",
        "png_palette.png",
        "cjpeg_411.jpg",
    ] {
        let id = format!("img_{}", f.replace('.', "_"));
        jobs.push((id, fixture("jpeg").join(f), vec!["the object"], Value::Null));
    }
    jobs.push((
        "demo_mp4".into(),
        repo("examples/demo/demo.mp4"),
        vec!["the red ball"],
        serde_json::json!({"rle": true}),
    ));
    jobs.push((
        "chat".into(),
        repo("examples/demo/frames/00007.jpg"),
        vec!["Where is the ball?"],
        serde_json::json!({"template": "chat", "mask_value": 100}),
    ));
    jobs
}

fn write_jsonl(path: &Path, jobs: &[(String, PathBuf, Vec<&str>, Value)]) {
    let mut s = String::new();
    for (id, video, prompts, extra) in jobs {
        let mut o = serde_json::json!({"id": id, "video": video, "prompt": prompts});
        if let Value::Object(m) = extra {
            o.as_object_mut().unwrap().extend(m.clone());
        }
        s += &format!("{o}\n");
    }
    std::fs::write(path, s).unwrap();
}

/// Every file under `dir` except timing-bearing summaries and markers: relative path → bytes.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if !["summary.json", ".done", "results.jsonl", "videolisa-run.json"]
                .contains(&name.as_str())
            {
                m.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    m
}

#[test]
fn a_batch_equals_separate_segment_runs_and_survives_kill_9() {
    let work = tempfile::tempdir().unwrap();
    let jobs = mixed_jobs(work.path());
    assert!(jobs.len() >= 20);
    let manifest = work.path().join("jobs.jsonl");
    write_jsonl(&manifest, &jobs);
    let out = work.path().join("batch");
    let o = batch(&[
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), jobs.len() + 1);
    assert_eq!(lines.last().unwrap()["summary"]["done"], jobs.len());
    assert_eq!(results(&out).len(), jobs.len());

    // the same masks as one `segment` per video
    let t = tiny();
    for (id, video, prompts, extra) in &jobs {
        let sep = work.path().join("separate").join(id);
        let mut a = vec![
            "segment",
            "--video",
            video.to_str().unwrap(),
            "--out",
            sep.to_str().unwrap(),
        ];
        for p in prompts {
            a.extend(["-p", p]);
        }
        if extra["rle"] == true {
            a.push("--rle");
        }
        if let Some(tpl) = extra["template"].as_str() {
            a.extend(["--template", tpl]);
        }
        let mv = extra["mask_value"].as_u64().map(|v| v.to_string());
        if let Some(v) = &mv {
            a.extend(["--mask-value", v]);
        }
        a.extend(t.iter().map(String::as_str));
        let o = videolisa(&a);
        assert!(o.status.success(), "{id}: {}", text(&o));
        let (b, s) = (outputs(&out.join(id)), outputs(&sep));
        assert!(!b.is_empty());
        assert_eq!(b, s, "{id}: batch and segment outputs differ");
    }
    let clean = outputs(&out);

    // kill -9 in the middle, then rerun: identical outputs, one result line per job
    let killed = work.path().join("killed");
    let mut a: Vec<String> = [
        "batch",
        manifest.to_str().unwrap(),
        "--out",
        killed.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    a.extend(tiny());
    let mut child = Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(&a)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while results(&killed).len() < 6 && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = results(&killed).len();
    assert!(before >= 6 && before < jobs.len(), "killed after {before} jobs");
    let o = batch(&[
        manifest.to_str().unwrap(),
        "--out",
        killed.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert!(
        summary["summary"]["resumed"].as_u64().unwrap() >= before as u64 - 1,
        "{summary}"
    );
    assert_eq!(outputs(&killed), clean);
    let mut ids: Vec<String> = results(&killed)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), jobs.len());
    assert_eq!(results(&killed).len(), jobs.len(), "one line per job");
}

#[test]
fn bad_rows_are_listed_before_anything_runs_or_skipped() {
    let work = tempfile::tempdir().unwrap();
    let img = repo("examples/demo/frames/00003.jpg");
    let csv = work.path().join("jobs.csv");
    std::fs::write(
        &csv,
        format!(
            "video,prompt,id\n{0},the ball,a\nmissing.mp4,the ball,b\n{0},the ball,a\n{0},,c\n{0},the square,d\n",
            img.display()
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let o = batch(&[csv.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    for row in ["line 3", "line 4", "line 5"] {
        assert!(t.contains(row), "{row} not reported: {t}");
    }
    assert!(
        t.contains("missing.mp4") && t.contains("also used by") && t.contains("--skip-invalid"),
        "{t}"
    );
    assert!(!out.exists(), "nothing may run");
    let o = batch(&[
        csv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--skip-invalid",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = results(&out);
    let status = |s: &str| r.iter().filter(|x| x["status"] == s).count();
    assert_eq!((status("done"), status("invalid")), (2, 3), "{r:?}");
    assert!(out.join("a/prompt_0/00003.png").exists() && out.join("d/prompt_0/00003.png").exists());
}

#[test]
fn a_failing_video_is_recorded_and_the_batch_goes_on() {
    let work = tempfile::tempdir().unwrap();
    let broken = work.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(repo("examples/demo/frames/00000.jpg"), broken.join("00000.jpg")).unwrap();
    let bytes = std::fs::read(repo("examples/demo/frames/00001.jpg")).unwrap();
    std::fs::write(broken.join("00001.jpg"), &bytes[..bytes.len() / 2]).unwrap(); // header intact
    let videos = work.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    std::fs::rename(&broken, videos.join("b_broken")).unwrap();
    std::fs::copy(repo("examples/demo/frames/00005.jpg"), videos.join("a_first.jpg")).unwrap();
    std::fs::copy(repo("examples/demo/frames/00009.jpg"), videos.join("c_last.jpg")).unwrap();
    let out = work.path().join("out");
    let args = [
        "--videos",
        videos.to_str().unwrap(),
        "-p",
        "the ball",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let o = batch(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = results(&out);
    let by_id: BTreeMap<&str, &Value> = r.iter().map(|x| (x["id"].as_str().unwrap(), x)).collect();
    assert_eq!(by_id["a_first"]["status"], "done");
    assert_eq!(by_id["c_last"]["status"], "done");
    assert_eq!(by_id["b_broken"]["status"], "failed");
    assert!(by_id["b_broken"]["error"].as_str().unwrap().contains("00001.jpg"));
    assert!(!out.join("b_broken").exists(), "partial outputs are removed");
    // --fail-fast stops at it
    let out2 = work.path().join("out2");
    let mut a = args.to_vec();
    a[5] = out2.to_str().unwrap();
    a.push("--fail-fast");
    let o = batch(&a);
    assert_eq!(o.status.code(), Some(1));
    assert!(!out2.join("c_last").exists(), "{}", text(&o));
}

#[test]
fn changed_jobs_rerun_and_shards_share_a_folder() {
    let work = tempfile::tempdir().unwrap();
    let jobs = |prompt2: &'static str| -> Vec<(String, PathBuf, Vec<&'static str>, Value)> {
        (0..4)
            .map(|i| {
                let video = repo("examples/demo/frames").join(format!("{:05}.jpg", i * 3));
                (
                    format!("f{i}"),
                    video,
                    vec![if i == 2 { prompt2 } else { "the ball" }],
                    Value::Null,
                )
            })
            .collect()
    };
    let manifest = work.path().join("jobs.jsonl");
    write_jsonl(&manifest, &jobs("the ball"));
    let out = work.path().join("out");
    let m = manifest.to_str().unwrap().to_string();
    let shards: Vec<_> = ["0/2", "1/2"]
        .iter()
        .map(|s| {
            let mut a: Vec<String> = ["batch", &m, "--out", out.to_str().unwrap(), "--shard", s]
                .map(String::from)
                .to_vec();
            a.extend(tiny());
            Command::new(env!("CARGO_BIN_EXE_videolisa"))
                .args(&a)
                .output()
                .unwrap()
        })
        .collect();
    for o in &shards {
        assert!(o.status.success(), "{}", text(o));
    }
    assert_eq!(results(&out).len(), 4);
    // one job's prompt changes: only it runs again
    write_jsonl(&manifest, &jobs("the blue square"));
    let o = batch(&[&m, "--out", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            last["summary"]["done"].as_u64(),
            last["summary"]["resumed"].as_u64()
        ),
        (Some(1), Some(3))
    );
    // other model settings: refused, naming them
    let o = batch(&[&m, "--out", out.to_str().unwrap(), "--sparse", "8"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("sampling"), "{}", text(&o));
}

#[test]
fn stdin_jobs_are_answered_in_order_by_one_process() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut a: Vec<String> = ["batch", "-", "--out", out.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    a.extend(tiny());
    let mut child = Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let frames = repo("examples/demo/frames");
    let jobs = [
        serde_json::json!({"id": "one", "video": frames.join("00001.jpg"), "prompt": "the ball"}).to_string(),
        "{\"video\": 3}".to_string(),
        serde_json::json!({"id": "two", "video": frames.join("00002.jpg"), "prompt": ["a", "b"]}).to_string(),
    ];
    let mut answers = Vec::new();
    for j in &jobs {
        writeln!(stdin, "{j}").unwrap();
        stdin.flush().unwrap();
        // each answer arrives before the next job is sent
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        answers.push(line);
    }
    drop(stdin);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(answers[0]["id"], "one");
    assert_eq!(answers[0]["status"], "done");
    assert_eq!(answers[1]["status"], "invalid");
    assert!(answers[1]["origin"].as_str().unwrap().contains("stdin line 2"));
    assert_eq!(
        (
            answers[2]["id"].as_str(),
            answers[2]["foreground"].as_array().map(Vec::len)
        ),
        (Some("two"), Some(2))
    );
    assert!(rest.last().unwrap().contains("\"summary\""));
    assert_eq!(status.code(), Some(1), "one invalid job");
    assert!(out.join("two/prompt_1/00002.png").exists());
}
