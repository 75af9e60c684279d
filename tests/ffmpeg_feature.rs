//! `--features ffmpeg`: containers and codecs beyond H.264 mp4. Needs the FFmpeg development
//! libraries to build and the `ffmpeg` command to make the test clips; skipped otherwise.
#![cfg(feature = "ffmpeg")]

use std::process::Command;
use videolisa::video::{SourceKind, Video};

fn make_clip(path: &std::path::Path, codec: &[&str]) -> bool {
    let mut args = vec![
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=duration=2:size=320x240:rate=10",
    ];
    args.extend_from_slice(codec);
    args.push(path.to_str().unwrap());
    Command::new("ffmpeg")
        .args(&args)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn decodes_hevc_and_vp9() {
    let dir = tempfile::tempdir().unwrap();
    for (name, codec) in [
        ("hevc.mp4", &["-pix_fmt", "yuv420p", "-c:v", "libx265"][..]),
        ("vp9.webm", &["-c:v", "libvpx-vp9"][..]),
    ] {
        let p = dir.path().join(name);
        if !make_clip(&p, codec) {
            eprintln!("skipping {name}: the ffmpeg command could not make it");
            continue;
        }
        let v = Video::open(&p).unwrap();
        assert_eq!(
            (v.info().kind, v.info().frames, v.info().width, v.info().height),
            (SourceKind::Ffmpeg, 20, 320, 240)
        );
        assert_eq!(v.frames().unwrap().filter(|f| f.is_ok()).count(), 20, "{name}");
    }
}
