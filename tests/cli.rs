//! The `videolisa` binary: help, probe on each input kind, --json, --dump, exit codes and
//! error messages.

mod common;

use common::repo;
use std::process::{Command, Output};

fn videolisa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_videolisa"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_subcommands() {
    let o = videolisa(&["--help"]);
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(s.contains("probe") && s.contains("Show a video's frames"), "{s}");
}

#[test]
fn probe_each_input_kind() {
    let mp4 = repo("examples/demo/demo.mp4");
    let o = videolisa(&["probe", mp4.to_str().unwrap(), "--json", "--decode"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "no progress output when stderr is not a terminal: {}",
        stderr(&o)
    );
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["kind"], "mp4");
    assert_eq!(j["codec"], "h264");
    assert_eq!(j["frames"], 40);
    assert_eq!(j["width"], 320);
    assert_eq!(j["height"], 240);
    assert_eq!(j["fps"], 10.0);
    assert_eq!(j["dense_indices"], serde_json::json!([3, 10, 18, 26]));
    assert_eq!(j["dense_frames"], serde_json::json!([3, 12, 22, 32]));
    assert_eq!(j["sparse_indices"].as_array().unwrap().len(), 32);
    assert_eq!(j["decode"]["frames"], 40);

    let o = videolisa(&["probe", repo("examples/demo/frames").to_str().unwrap()]);
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(
        s.contains("frames:  40") && s.contains("320x240") && s.contains("Frames (jpeg)"),
        "{s}"
    );

    let o = videolisa(&[
        "probe",
        repo("examples/demo/frames/00000.jpg").to_str().unwrap(),
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["kind"], "image");
    assert_eq!(j["sparse_indices"], serde_json::json!(vec![0; 32]));
}

#[test]
fn probe_dump_writes_model_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = repo("examples/demo/demo.mp4");
    let o = videolisa(&[
        "probe",
        mp4.to_str().unwrap(),
        "--dump",
        dir.path().to_str().unwrap(),
        "--frames",
        "0,39,3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let video = videolisa::video::Video::open(&mp4).unwrap();
    let mut seen = 0;
    video
        .visit(&[0, 3, 39], |i, img| {
            let bytes = std::fs::read(dir.path().join(format!("frame_{i:05}.safetensors"))).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let clip = st.tensor("clip.pixel_values").unwrap();
            assert_eq!(clip.shape(), &[3, 336, 336]);
            let sam = st.tensor("sam.pixel_values").unwrap();
            assert_eq!(sam.shape(), &[3, 1024, 1024]);
            assert_eq!(st.tensor("sam.resized").unwrap().shape(), &[768, 1024, 3]);
            assert_eq!(st.tensor("clip.resized").unwrap().shape(), &[336, 448, 3]);
            assert_eq!(st.tensor("rgb").unwrap().data(), img.as_raw().as_slice());
            let expect = videolisa::preprocess::ClipTransform::default().apply(img);
            assert_eq!(clip.data(), common::f32_bytes(&expect.data).as_slice());
            seen += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, 3);
}

#[test]
fn bad_input_exit_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mp4");
    let o = videolisa(&["probe", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("missing.mp4") && stderr(&o).contains("no such file"),
        "{}",
        stderr(&o)
    );

    let txt = dir.path().join("x.txt");
    std::fs::write(&txt, "plain text").unwrap();
    let o = videolisa(&["probe", txt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a video"), "{}", stderr(&o));

    let o = videolisa(&["probe", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("zero frames"), "{}", stderr(&o));

    let o = videolisa(&["probe", "--no-such-flag", "x"]);
    assert_eq!(o.status.code(), Some(2));

    let mp4 = repo("examples/demo/demo.mp4");
    let o = videolisa(&[
        "probe",
        mp4.to_str().unwrap(),
        "--dump",
        dir.path().to_str().unwrap(),
        "--frames",
        "40",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("frame 40 is out of range"), "{}", stderr(&o));

    let o = videolisa(&["probe", mp4.to_str().unwrap(), "--sparse", "0"]);
    assert_eq!(o.status.code(), Some(2));
}
