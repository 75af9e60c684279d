//! Runs that never lie or lose work under hostile use (issue 18): done markers that notice
//! every change of settings or input, ids that cannot collide, rows that are never dropped
//! silently, outputs that are never half-made yet reported done, folders that are never taken
//! from the user, one run per folder (or shard) at a time, bounded options, bad input named
//! with exit code 2 before any model work.

mod common;

use common::{batch, repo, results, text, tiny_args, videolisa};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The status of the last result line of each id, in the order the ids first appear.
fn statuses(out: &Path) -> Vec<(String, String)> {
    let mut last: Vec<(String, String)> = Vec::new();
    for r in results(out) {
        let id = r["id"].as_str().unwrap().to_string();
        let st = r["status"].as_str().unwrap().to_string();
        match last.iter_mut().find(|(i, _)| *i == id) {
            Some(e) => e.1 = st,
            None => last.push((id, st)),
        }
    }
    last
}

/// The statuses of the job lines a `--json` run printed.
fn job_statuses(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["status"].as_str().map(str::to_string))
        .collect()
}

/// A folder of `n` copies of demo frames as single-image videos `v0.jpg`, `v1.jpg`, ….
fn image_videos(dir: &Path, n: usize) -> PathBuf {
    let v = dir.join("videos");
    std::fs::create_dir_all(&v).unwrap();
    for i in 0..n {
        let src = repo(&format!("examples/demo/frames/{:05}.jpg", i * 3));
        std::fs::copy(src, v.join(format!("v{i}.jpg"))).unwrap();
    }
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_fresh_shard_with_other_settings_never_leaves_the_other_shards_stale() {
    let work = tempfile::tempdir().unwrap();
    let videos = image_videos(work.path(), 3);
    let out = work.path().join("out");
    let base = [
        "--videos",
        s(&videos),
        "-p",
        "the ball",
        "--out",
        s(&out),
        "--json",
    ];
    let o = batch(&base);
    assert!(o.status.success(), "{}", text(&o));
    let sparse_of = |id: &str| -> usize {
        let summary: Value =
            serde_json::from_slice(&std::fs::read(out.join(id).join("summary.json")).unwrap()).unwrap();
        summary["sparse"].as_array().unwrap().len()
    };
    assert_eq!(sparse_of("v1"), 32);
    for shard in ["0/3", "1/3", "2/3"] {
        let mut a = base.to_vec();
        a.extend(["--shard", shard, "--sparse", "8"]);
        if shard == "0/3" {
            a.push("--fresh");
        }
        let o = batch(&a);
        assert!(o.status.success(), "{shard}: {}", text(&o));
        assert_eq!(
            job_statuses(&o),
            ["done"],
            "{shard}: a job made with --sparse 32 was taken as done"
        );
    }
    for id in ["v0", "v1", "v2"] {
        assert_eq!(sparse_of(id), 8, "{id} holds masks of the old settings");
    }
}

#[test]
fn a_frame_folder_changed_in_place_is_recomputed() {
    let work = tempfile::tempdir().unwrap();
    let videos = work.path().join("videos");
    let clip = videos.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for i in 0..3 {
        let f = format!("{i:05}.jpg");
        std::fs::copy(repo("examples/demo/frames").join(&f), clip.join(&f)).unwrap();
    }
    let out = work.path().join("out");
    let args = [
        "--videos",
        s(&videos),
        "-p",
        "the ball",
        "--out",
        s(&out),
        "--json",
    ];
    assert!(batch(&args).status.success());
    assert!(batch(&args).status.success());
    assert_eq!(statuses(&out), vec![("clip".into(), "done".into())]);
    // same names, new content (and a new modification time)
    std::fs::copy(repo("examples/demo/frames/00030.jpg"), clip.join("00001.jpg")).unwrap();
    let o = batch(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(job_statuses(&o), ["done"], "a changed frame went unnoticed");
}

#[test]
fn colliding_and_reserved_ids_are_refused_never_overwritten() {
    let work = tempfile::tempdir().unwrap();
    let videos = work.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    std::fs::copy(repo("examples/demo/frames/00001.jpg"), videos.join("a.jpg")).unwrap();
    let png = image::open(repo("examples/demo/frames/00020.jpg")).unwrap();
    png.save(videos.join("a.png")).unwrap();
    // the two default ids collide even when the files land in different shards
    let out = work.path().join("out");
    for (shard, code) in [("0/2", 0), ("1/2", 1)] {
        let o = batch(&[
            "--videos",
            s(&videos),
            "-p",
            "x",
            "--out",
            s(&out),
            "--shard",
            shard,
            "--skip-invalid",
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(code), "{shard}: {}", text(&o));
    }
    let r = results(&out);
    let st: Vec<(&str, &str)> = r
        .iter()
        .map(|x| (x["origin"].as_str().unwrap(), x["status"].as_str().unwrap()))
        .collect();
    assert_eq!(st, [("a.jpg", "done"), ("a.png", "invalid")], "{r:?}");
    // two stdin jobs with one id: the second is refused
    let img = repo("examples/demo/frames/00005.jpg");
    let job = |id: &str| {
        format!(
            "{{\"video\": \"{}\", \"prompt\": \"x\", \"id\": \"{id}\"}}\n",
            img.display()
        )
    };
    let stdin_out = work.path().join("stdin");
    let answers = stdin_batch(&stdin_out, &[job("same").as_bytes(), job("same").as_bytes()]);
    assert_eq!(answers[0]["status"], "done", "{answers:?}");
    assert_eq!(answers[1]["status"], "invalid", "{answers:?}");
    assert!(
        answers[1]["error"].as_str().unwrap().contains("also used"),
        "{answers:?}"
    );
    // our own file names are not job ids
    for reserved in ["results.jsonl", "videolisa-run.json"] {
        let answers = stdin_batch(
            &work.path().join(format!("r_{reserved}")),
            &[job(reserved).as_bytes()],
        );
        assert_eq!(answers[0]["status"], "invalid", "{reserved}: {answers:?}");
    }
}

/// Runs `batch -` with `lines` on stdin; returns the answers (not the summary line).
fn stdin_batch(out: &Path, lines: &[&[u8]]) -> Vec<Value> {
    let t = tiny_args();
    let mut child = Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(["batch", "-", "--out", s(out)])
        .args(&t)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        stdin.write_all(l).unwrap();
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("summary").is_none())
        .collect()
}

#[test]
fn rows_not_run_are_each_reported_by_line() {
    let work = tempfile::tempdir().unwrap();
    let img = repo("examples/demo/frames/00003.jpg");
    let csv = work.path().join("jobs.csv");
    let i = img.display();
    std::fs::write(
        &csv,
        format!("video,prompt,id\n{i},the ball,a\n{i},\"the ball,b\n{i},the cube,c\n{i},the cone,d\n"),
    )
    .unwrap();
    let out = work.path().join("out");
    let o = batch(&[s(&csv), "--out", s(&out), "--skip-invalid", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = results(&out);
    let origins: Vec<String> = r
        .iter()
        .filter(|x| x["status"] == "invalid")
        .map(|x| x["origin"].as_str().unwrap().to_string())
        .collect();
    for line in ["line 3", "line 4", "line 5"] {
        assert!(
            origins.iter().any(|o| o.ends_with(line)),
            "{line} not reported: {origins:?}"
        );
    }
    assert_eq!(r.iter().filter(|x| x["status"] == "done").count(), 1, "{r:?}");
    // a line of stdin that is not UTF-8 is answered, and the run goes on
    let job = |id: &str| format!("{{\"video\": \"{i}\", \"prompt\": \"x\", \"id\": \"{id}\"}}\n");
    let answers = stdin_batch(
        &work.path().join("stdin"),
        &[
            job("a").as_bytes(),
            b"{\"video\": \"\xff\"}\n",
            job("c").as_bytes(),
        ],
    );
    let st: Vec<&str> = answers.iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(st, ["done", "invalid", "done"], "{answers:?}");
    assert!(
        answers[1]["origin"].as_str().unwrap().contains("stdin line 2"),
        "{answers:?}"
    );
}

#[test]
fn an_overlay_that_cannot_be_written_fails_its_job() {
    let work = tempfile::tempdir().unwrap();
    // 40 noisy frames: every mask and overlay PNG and every JSON stays small, the overlay
    // video grows past a 48 KiB file-size limit (the write fails as on a full disk)
    let videos = work.path().join("videos");
    let clip = videos.join("noise");
    std::fs::create_dir_all(&clip).unwrap();
    for i in 0..40u32 {
        image::RgbImage::from_fn(64, 64, |x, y| {
            let v = common::h32(u64::from(x), u64::from(y), 0, u64::from(i)) as u8;
            image::Rgb([v, v.wrapping_mul(3), v ^ 0x5a])
        })
        .save(clip.join(format!("{i:05}.png")))
        .unwrap();
    }
    let out = work.path().join("out");
    let t = tiny_args();
    let cmd = format!(
        "trap '' XFSZ; ulimit -f 48; exec \"$0\" batch --videos {} -p x --out {} --overlay --json {}",
        s(&videos),
        s(&out),
        t.join(" ")
    );
    let o = Command::new("bash")
        .args(["-c", &cmd, env!("CARGO_BIN_EXE_videolisa")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        statuses(&out),
        vec![("noise".into(), "failed".into())],
        "{}",
        text(&o)
    );
    assert!(
        !out.join("noise/.done").exists(),
        "a job without its overlay was marked done"
    );
}

#[test]
fn segment_never_deletes_its_own_input() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let t = tiny_args();
    let run = |video: &Path| {
        let mut a = vec!["segment", "--video", s(video), "-p", "x", "--out", s(&out)];
        a.extend(t.iter().map(String::as_str));
        videolisa(&a)
    };
    assert!(run(&repo("examples/demo/demo.mp4")).status.success());
    let o = run(&out.join("prompt_0"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("prompt_0"), "{}", text(&o));
    assert!(out.join("prompt_0/00000.png").exists(), "the input was deleted");
}

#[test]
fn a_users_folder_named_like_a_job_is_kept_unless_forced() {
    let work = tempfile::tempdir().unwrap();
    let videos = image_videos(work.path(), 1);
    let out = work.path().join("out");
    let args = ["--videos", s(&videos), "-p", "x", "--out", s(&out), "--json"];
    assert!(batch(&args).status.success());
    // the user keeps notes in the output folder, then a video of that name joins the batch
    std::fs::create_dir_all(out.join("v1")).unwrap();
    std::fs::write(out.join("v1/notes.txt"), b"mine").unwrap();
    std::fs::copy(repo("examples/demo/frames/00011.jpg"), videos.join("v1.jpg")).unwrap();
    let o = batch(&args);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("v1") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    assert!(out.join("v1/notes.txt").exists(), "the user's folder was deleted");
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = batch(&forced);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("v1/prompt_0").exists());
}

#[test]
fn two_runs_on_one_folder_at_once_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let t = tiny_args();
    // a stdin batch holds the folder while it waits for jobs
    let mut holder = Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(["batch", "-", "--out", s(&out)])
        .args(&t)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lock_held(&out) {
        assert!(Instant::now() < deadline, "the first run never took the folder");
        std::thread::sleep(Duration::from_millis(50));
    }
    let videos = image_videos(work.path(), 1);
    let o = batch(&["--videos", s(&videos), "-p", "x", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let pid = holder.id().to_string();
    assert!(
        text(&o).contains(&pid),
        "the message names the holder: {}",
        text(&o)
    );
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    // once the holder is gone the folder is free again
    let o = batch(&["--videos", s(&videos), "-p", "x", "--out", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Whether a lock file under `out` names a holder.
fn lock_held(out: &Path) -> bool {
    std::fs::read_dir(out).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".videolisa-lock"))
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("pid")))
    })
}

#[test]
fn odd_names_and_huge_counts_are_refused_not_panics() {
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().unwrap();
    let videos = work.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let odd = videos.join(std::ffi::OsStr::from_bytes(b"\xffclip.jpg"));
    std::fs::copy(repo("examples/demo/frames/00002.jpg"), &odd).unwrap();
    let out = work.path().join("out");
    let o = batch(&["--videos", s(&videos), "-p", "x", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("UTF-8"), "{}", text(&o));
    for n in ["18446744073709551615", "1000000000"] {
        let t = Instant::now();
        let o = batch(&["--videos", s(&videos), "-p", "x", "--out", s(&out), "--sparse", n]);
        assert_eq!(o.status.code(), Some(2), "--sparse {n}: {}", text(&o));
        assert!(t.elapsed() < Duration::from_secs(20));
    }
    let o = videolisa(&[
        "synthetic",
        "--dataset",
        "mevis",
        "--out",
        s(&work.path().join("syn")),
        "--frames",
        "1000000000",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn options_that_do_not_apply_and_ambiguous_columns_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let img = repo("examples/demo/frames/00003.jpg");
    let out = work.path().join("out");
    let csv = work.path().join("jobs.csv");
    std::fs::write(&csv, format!("video,prompt,prompt\n{},a,b\n", img.display())).unwrap();
    let o = batch(&[s(&csv), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("prompt") && text(&o).contains("twice"),
        "{}",
        text(&o)
    );
    std::fs::write(&csv, format!("video,prompt\n{},a\n", img.display())).unwrap();
    let o = batch(&[s(&csv), "--out", s(&out), "-p", "foo"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = batch(&["-", "--out", s(&out), "--shard", "1/2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!out.exists(), "nothing may run");
}

#[test]
fn frame_folders_say_what_is_odd_in_them() {
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().unwrap();
    let frames = |name: &str| -> PathBuf {
        let d = work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..2 {
            let f = format!("{i:05}.jpg");
            std::fs::copy(repo("examples/demo/frames").join(&f), d.join(&f)).unwrap();
        }
        d
    };
    let probe = |d: &Path| videolisa(&["probe", s(d), "--json"]);
    // AppleDouble files are not frames
    let apple = frames("apple");
    std::fs::write(apple.join("._00000.jpg"), b"\x00\x05\x16\x07 metadata").unwrap();
    let o = probe(&apple);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["frames"], 2, "{v}");
    // a frame name that is not UTF-8 cannot name its mask
    let odd = frames("odd");
    std::fs::copy(
        repo("examples/demo/frames/00002.jpg"),
        odd.join(std::ffi::OsStr::from_bytes(b"0000\xff.jpg")),
    )
    .unwrap();
    let o = probe(&odd);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("UTF-8"), "{}", text(&o));
    // a dangling link is named, not skipped
    let link = frames("link");
    std::os::unix::fs::symlink(work.path().join("gone.jpg"), link.join("00005.jpg")).unwrap();
    let o = probe(&link);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("00005.jpg"), "{}", text(&o));
}

#[test]
fn a_fifo_among_the_videos_is_reported_not_waited_for() {
    let work = tempfile::tempdir().unwrap();
    let videos = image_videos(work.path(), 1);
    let fifo = videos.join("live.mp4");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = work.path().join("out");
    let t = tiny_args();
    let mut child = Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args([
            "batch",
            "--videos",
            s(&videos),
            "-p",
            "x",
            "--out",
            s(&out),
            "--skip-invalid",
            "--json",
        ])
        .args(&t)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("batch hangs on a FIFO named like a video");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let st = statuses(&out);
    assert!(
        st.contains(&("v0".into(), "done".into())) && st.contains(&("live".into(), "invalid".into())),
        "{st:?}"
    );
}

#[test]
fn bad_paths_are_bad_input_named_before_any_model_work() {
    let work = tempfile::tempdir().unwrap();
    let videos = image_videos(work.path(), 1);
    let file = work.path().join("a_file");
    std::fs::write(&file, b"x").unwrap();
    let not_utf8 = work.path().join("jobs.jsonl");
    std::fs::write(&not_utf8, b"{\"video\": \"\xff\xfe\"}\n").unwrap();
    let (none, o1, o2, o3) = (
        work.path().join("none"),
        work.path().join("o1"),
        work.path().join("o2"),
        work.path().join("o3"),
    );
    let proc_out = Path::new("/proc/videolisa-out");
    let cases: Vec<(Vec<&str>, &Path)> = vec![
        (vec!["--videos", s(&videos), "-p", "x", "--out", s(&file)], &file),
        (
            vec!["--videos", s(&videos), "-p", "x", "--out", s(proc_out)],
            proc_out,
        ),
        (vec!["--videos", s(&none), "-p", "x", "--out", s(&o1)], &none),
        (vec![s(&videos), "--out", s(&o2)], &videos),
        (vec![s(&not_utf8), "--out", s(&o3)], &not_utf8),
    ];
    // the other subcommands' output folders too
    let img = repo("examples/demo/frames/00000.jpg");
    for args in [
        vec!["probe", s(&img), "--dump", s(proc_out)],
        vec!["synthetic", "--dataset", "mevis", "--out", s(&file)],
    ] {
        let o = videolisa(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
    for (args, named) in cases {
        let t = Instant::now();
        let o = batch(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let name = named.file_name().unwrap().to_string_lossy();
        assert!(
            text(&o).contains(&*name),
            "{args:?} does not name {name}: {}",
            text(&o)
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{args:?}: checked late");
    }
}

#[test]
fn merge_reports_what_a_shard_did_not_finish() {
    let work = tempfile::tempdir().unwrap();
    let videos = image_videos(work.path(), 3);
    let out = work.path().join("out");
    let args = |extra: &[&str]| {
        let mut a = vec!["--videos", s(&videos), "-p", "x", "--out", s(&out), "--json"];
        a.extend(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        batch(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(run(&["--shard", "0/2"]).status.success());
    let o = run(&["--merge"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(job_statuses(&o), ["resumed", "failed", "resumed"], "{}", text(&o));
    assert!(text(&o).contains("not done"), "{}", text(&o));
    let manifest = || -> Value {
        serde_json::from_slice(&std::fs::read(out.join("videolisa-run.json")).unwrap()).unwrap()
    };
    assert_eq!(manifest()["status"], "running");
    assert!(run(&["--shard", "1/2"]).status.success());
    let o = run(&["--merge"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(job_statuses(&o), ["resumed", "resumed", "resumed"]);
    assert_eq!(manifest()["status"], "complete");
}
