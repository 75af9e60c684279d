//! Live and piped y4m through a real pipe into the binary (`segment --online`): the masks equal
//! offline `segment` where the reference defines them, they arrive before the input ends, the
//! queue is lossless by default and drops (and says which) with `--drop`, and a damaged,
//! cut or killed stream keeps what was done and says where it broke.

mod common;

use common::{fixture, text, tiny_args};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const W: usize = 64;
const H: usize = 48;

/// A y4m 4:2:0 stream of `n` frames: a bright square moving over a gradient.
fn y4m(n: usize) -> Vec<u8> {
    y4m_range(0, n)
}

/// The frames `from..to` of the test stream as a stream of their own.
fn y4m_range(from: usize, to: usize) -> Vec<u8> {
    let mut s = format!("YUV4MPEG2 W{W} H{H} F10:1 Ip A1:1 C420jpeg\n").into_bytes();
    for i in from..to {
        s.extend(frame(i));
    }
    s
}

/// One `FRAME` and its planes.
fn frame(i: usize) -> Vec<u8> {
    let mut f = b"FRAME\n".to_vec();
    for y in 0..H {
        for x in 0..W {
            let inside = (x + 64 - (3 * i) % 64) % 64 < 20 && (10..30).contains(&y);
            f.push(if inside { 220 } else { (40 + x + y) as u8 });
        }
    }
    f.extend((0..W * H / 4).map(|k| (100 + k % 50) as u8));
    f.extend((0..W * H / 4).map(|k| (150 - k % 40) as u8));
    f
}

fn header_len() -> usize {
    y4m(0).len()
}

/// `videolisa segment` with the tiny checkpoint into `out`, stdin piped, stdout captured.
fn spawn(out: &Path, extra: &[&str]) -> Child {
    let mut args: Vec<String> = ["segment", "--video", "-", "-p", "the bright square", "--out"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(out.display().to_string());
    args.extend(tiny_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Feeds `bytes` into `child`'s stdin and waits for it.
fn feed(mut child: Child, bytes: &[u8]) -> std::process::Output {
    let mut stdin = child.stdin.take().unwrap();
    let bytes = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    o
}

/// Feeds `bytes` to `segment --video - ARGS --out out`, which must succeed.
fn fed_ok(out: &Path, args: &[&str], bytes: &[u8]) {
    let o = feed(spawn(out, args), bytes);
    assert!(o.status.success(), "{}", text(&o));
}

/// `videolisa segment` offline (no pipe) on `video`.
fn offline(video: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "segment".to_string(),
        "--video".into(),
        video.display().to_string(),
        "-p".into(),
        "the bright square".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(tiny_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::videolisa(&a);
    assert!(o.status.success(), "{}", text(&o));
}

fn masks(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("prompt_0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

fn online_summary(out: &Path) -> serde_json::Value {
    summary(out)["online"].clone()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn xmem() -> String {
    fixture("xmem_tiny/XMem.pth").display().to_string()
}

#[test]
fn a_y4m_file_and_its_frames_as_pngs_give_identical_masks() {
    let t = tmp();
    let file = t.path().join("clip.y4m");
    std::fs::write(&file, y4m(6)).unwrap();
    let pngs = t.path().join("frames");
    std::fs::create_dir(&pngs).unwrap();
    for f in videolisa::video::Video::open(&file).unwrap().frames().unwrap() {
        let f = f.unwrap();
        f.image.save(pngs.join(format!("{:05}.png", f.index))).unwrap();
    }
    offline(&file, &t.path().join("a"), &[]);
    offline(&pngs, &t.path().join("b"), &[]);
    let (a, b) = (masks(&t.path().join("a")), masks(&t.path().join("b")));
    assert_eq!(a.len(), 6);
    assert!(a == b, "masks differ");
}

/// `--online --window T` on a T-frame stream equals offline `segment`; with a smaller window
/// the first `window` frames equal offline `segment` of that prefix.
fn online_matches_offline(extra: &[&str], frames: usize, window: usize) {
    let t = tmp();
    let file = t.path().join("clip.y4m");
    std::fs::write(&file, y4m(frames)).unwrap();
    offline(&file, &t.path().join("offline"), extra);
    let w = frames.to_string();
    let mut args = vec!["--online", "--window", &w];
    args.extend(extra);
    fed_ok(&t.path().join("online"), &args, &y4m(frames));
    assert!(
        masks(&t.path().join("offline")) == masks(&t.path().join("online")),
        "full window"
    );

    let prefix = t.path().join("prefix.y4m");
    std::fs::write(&prefix, y4m(window)).unwrap();
    offline(&prefix, &t.path().join("offline_prefix"), extra);
    let w = window.to_string();
    let mut args = vec!["--online", "--window", &w];
    args.extend(extra);
    fed_ok(&t.path().join("online_w"), &args, &y4m(frames));
    let online = masks(&t.path().join("online_w"));
    assert_eq!(online.len(), frames);
    assert!(
        masks(&t.path().join("offline_prefix"))[..] == online[..window],
        "prefix"
    );
    let s = online_summary(&t.path().join("online_w"));
    assert_eq!(
        (s["status"].as_str(), s["window"].as_u64()),
        (Some("complete"), Some(window as u64))
    );
}

#[test]
fn online_sam_equals_offline_bit_for_bit() {
    online_matches_offline(&[], 12, 5);
}

#[test]
fn online_propagate_equals_offline_bit_for_bit() {
    let x = xmem();
    online_matches_offline(&["--propagate", "--xmem", &x], 7, 4);
}

#[test]
fn jsonl_lines_arrive_while_the_producer_is_still_writing() {
    let t = tmp();
    let out = t.path().join("o");
    let mut child = spawn(&out, &["--online", "--window", "3", "--stream", "jsonl"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut all = y4m(0);
    for i in 0..5 {
        all.extend(frame(i));
    }
    stdin.write_all(&all).unwrap();
    stdin.flush().unwrap();
    // the producer keeps its end open: frames 0..5 must come back before any EOF
    for want in 0..5u64 {
        let line = lines.next().expect("a line per frame").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["frame"].as_u64(), Some(want), "{line}");
        assert!(v["done"].as_f64() >= v["arrived"].as_f64());
        let p = &v["prompts"][0];
        assert!(
            p["rle"]["counts"].is_string() && p["foreground"].is_u64(),
            "{line}"
        );
        assert_eq!(p["rle"]["size"], serde_json::json!([H, W]));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running: the input has not ended"
    );
    stdin.write_all(&frame(5)).unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(rest.len(), 1, "{rest:?}");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let s = online_summary(&out);
    assert_eq!(s["segmented"].as_u64(), Some(6));
    assert!(s["latency_after_window_ms"]["p95"].is_f64(), "{s}");
}

#[test]
fn a_fast_producer_loses_nothing_by_default_and_drops_with_drop() {
    let t = tmp();
    let lossless = t.path().join("lossless");
    fed_ok(
        &lossless,
        &["--online", "--window", "2", "--queue", "1"],
        &y4m(40),
    );
    let s = online_summary(&lossless);
    assert_eq!(
        (s["segmented"].as_u64(), s["dropped"].as_array().unwrap().len()),
        (Some(40), 0)
    );
    assert_eq!(masks(&lossless).len(), 40);

    let dropping = t.path().join("drop");
    fed_ok(
        &dropping,
        &["--online", "--window", "2", "--queue", "1", "--drop"],
        &y4m(40),
    );
    let s = online_summary(&dropping);
    let dropped: Vec<u64> = s["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        !dropped.is_empty(),
        "a consumer slower than the pipe drops frames: {s}"
    );
    assert!(
        dropped.iter().all(|&i| i >= 2),
        "the window is never dropped: {dropped:?}"
    );
    assert_eq!(s["received"].as_u64(), Some(40));
    assert_eq!(s["segmented"].as_u64().unwrap() + dropped.len() as u64, 40);
    let written = masks(&dropping);
    assert_eq!(written.len() + dropped.len(), 40);
    for i in dropped {
        assert!(
            !dropping.join(format!("prompt_0/{i:05}.png")).exists(),
            "frame {i} was dropped"
        );
    }
}

#[test]
fn a_stream_cut_inside_a_frame_keeps_the_frames_before_and_names_the_break() {
    let t = tmp();
    let out = t.path().join("o");
    let mut bytes = y4m(5);
    bytes.extend(&frame(5)[..1000]);
    let o = feed(spawn(&out, &["--online", "--window", "3"]), &bytes);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let offset = header_len() + 5 * frame(0).len() + 6;
    assert!(
        text(&o).contains("frame 5") && text(&o).contains(&format!("byte {offset}")),
        "{}",
        text(&o)
    );
    assert_eq!(masks(&out).len(), 5);
    let s = online_summary(&out);
    assert_eq!(s["status"], "input_error");
    assert!(
        s["error"].as_str().unwrap().contains("ends inside the frame"),
        "{s}"
    );
}

#[test]
fn a_garbage_header_is_refused_before_any_work() {
    let t = tmp();
    let out = t.path().join("o");
    let o = feed(spawn(&out, &["--online"]), b"GIF89a this is not a y4m stream\n");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a y4m stream"), "{}", text(&o));
    assert!(!out.join("summary.json").exists());
}

/// Waits until `n` masks are in `out` (or panics after a minute).
fn wait_for_masks(out: &Path, n: usize) {
    let t0 = Instant::now();
    while !out.join("prompt_0").exists() || masks(out).len() < n {
        assert!(t0.elapsed() < Duration::from_secs(60), "no masks after a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_producer_killed_mid_stream_keeps_what_was_done() {
    let t = tmp();
    let file = t.path().join("clip.y4m");
    std::fs::write(&file, y4m(8)).unwrap();
    let cut = header_len() + 6 * frame(0).len() + 500;
    // a real producer process: writes six frames and part of the seventh, then hangs
    let mut producer = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {cut} {}; exec sleep 120", file.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = t.path().join("o");
    let mut args: Vec<String> = vec![
        "segment".into(),
        "--video".into(),
        "-".into(),
        "-p".into(),
        "x".into(),
    ];
    args.extend([
        "--out".into(),
        out.display().to_string(),
        "--online".into(),
        "--window".into(),
        "2".into(),
    ]);
    args.extend(tiny_args());
    let child = Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::from(producer.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_masks(&out, 6);
    producer.kill().unwrap();
    producer.wait().unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("frame 6"), "{}", text(&o));
    assert_eq!(masks(&out).len(), 6);
    assert_eq!(online_summary(&out)["status"], "input_error");
}

#[test]
fn ctrl_c_flushes_what_is_done_and_says_interrupted() {
    let t = tmp();
    let out = t.path().join("o");
    let mut child = spawn(&out, &["--online", "--window", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&y4m(4)).unwrap();
    stdin.flush().unwrap();
    wait_for_masks(&out, 4);
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let s = online_summary(&out);
    assert_eq!(
        (s["status"].as_str(), s["segmented"].as_u64()),
        (Some("interrupted"), Some(4)),
        "{s}"
    );
}

#[test]
fn offline_reads_a_piped_stream_to_its_end() {
    let t = tmp();
    let file = t.path().join("clip.y4m");
    std::fs::write(&file, y4m(5)).unwrap();
    offline(&file, &t.path().join("file"), &[]);
    fed_ok(&t.path().join("pipe"), &[], &y4m(5));
    assert!(masks(&t.path().join("file")) == masks(&t.path().join("pipe")));
    assert_eq!(summary(&t.path().join("pipe"))["video"]["path"], "-");
}

#[test]
fn refresh_recomputes_the_prompt_from_the_last_window() {
    // window 4, refresh every 3: new prompts at frame 6 (from frames 3..=6) and 9 (6..=9); a
    // stream that starts at frame 6 and has the window 6..=9 gets the prompt of refresh 9
    let t = tmp();
    let out = t.path().join("o");
    fed_ok(&out, &["--online", "--window", "4", "--refresh", "3"], &y4m(12));
    let s = summary(&out);
    assert_eq!(s["refreshes"], serde_json::json!([6, 9]), "{s}");
    let refreshed = masks(&out);
    assert_eq!(refreshed.len(), 12);

    // frames 0..6 keep the first window's prompt: as without --refresh
    let plain = t.path().join("plain");
    fed_ok(&plain, &["--online", "--window", "4"], &y4m(12));
    assert!(masks(&plain)[..6] == refreshed[..6]);

    // frames 9..12 are segmented with the prompt of frames 6..=9, exactly as a run whose first
    // window is those frames segments them (mask files are named by arrival index there)
    let later = t.path().join("later");
    fed_ok(&later, &["--online", "--window", "4"], &y4m_range(6, 12));
    let later: Vec<Vec<u8>> = masks(&later).into_iter().map(|(_, m)| m).collect();
    let tail: Vec<Vec<u8>> = refreshed[9..].iter().map(|(_, m)| m.clone()).collect();
    assert!(later[3..] == tail[..], "frames 9..12");
}

#[test]
fn refresh_with_propagate_adds_the_new_seeds_to_memory() {
    let t = tmp();
    let out = t.path().join("o");
    let x = xmem();
    let args = [
        "--online",
        "--window",
        "3",
        "--refresh",
        "2",
        "--propagate",
        "--xmem",
        &x,
    ];
    fed_ok(&out, &args, &y4m(6));
    let s = summary(&out);
    assert_eq!(s["refreshes"], serde_json::json!([4]), "{s}");
    let plain = t.path().join("plain");
    fed_ok(
        &plain,
        &["--online", "--window", "3", "--propagate", "--xmem", &x],
        &y4m(6),
    );
    // up to the refresh nothing changes
    assert!(masks(&plain)[..4] == masks(&out)[..4]);
}

#[test]
fn a_fifo_is_read_as_it_is_written_online_and_offline() {
    let t = tmp();
    let file = t.path().join("clip.y4m");
    std::fs::write(&file, y4m(6)).unwrap();
    offline(&file, &t.path().join("file"), &[]);
    for (name, extra) in [("online", vec!["--online", "--window", "6"]), ("offline", vec![])] {
        let fifo = t.path().join(format!("{name}.y4m"));
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let path = fifo.clone();
        // the producer opens the FIFO for writing, which waits for the reader to open it
        let producer = std::thread::spawn(move || std::fs::write(&path, y4m(6)).unwrap());
        let out = t.path().join(name);
        let mut args = vec![
            "segment",
            "--video",
            fifo.to_str().unwrap(),
            "-p",
            "the bright square",
        ];
        args.extend(["--out", out.to_str().unwrap()]);
        let tiny = tiny_args();
        args.extend(tiny.iter().map(String::as_str));
        args.extend(extra);
        let o = common::videolisa(&args);
        producer.join().unwrap();
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(masks(&out) == masks(&t.path().join("file")), "{name}");
    }
}

#[test]
fn a_bad_piped_stream_is_named_as_given_not_by_its_temporary_copy() {
    // found by trying: offline, stdin is read into a temporary file, and errors named that file
    let t = tmp();
    let mut cut = y4m(3);
    cut.truncate(cut.len() - 100);
    let cases: [(&[u8], &[&str], &str); 4] = [
        (b"", &[], "-: not a video"),
        (b"YUV4MPEG2 W4 H4\n", &[], "-: the video has zero frames"),
        (&cut, &[], "-: frame 2 could not be decoded"),
        (
            b"YUV4MPEG2 W4 H4\n",
            &["--online"],
            "-: the video has zero frames",
        ),
    ];
    for (k, (bytes, args, want)) in cases.into_iter().enumerate() {
        let o = feed(spawn(&t.path().join(format!("o{k}")), args), bytes);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "case {k}: {}", text(&o));
        assert!(!text(&o).contains("/tmp"), "case {k}: {}", text(&o));
    }
}
