//! Video input: the demo clip as mp4, frame folder and image; lazy visiting; every bad input
//! gets its own typed error naming the file.

mod common;

use common::repo;
use image::RgbImage;
use std::path::Path;
use videolisa::demo::DemoClip;
use videolisa::video::{SourceKind, Video};
use videolisa::Error;

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let s: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    s as f64 / a.as_raw().len() as f64
}

#[test]
fn demo_mp4_decodes_close_to_source() {
    let v = Video::open(repo("examples/demo/demo.mp4")).unwrap();
    let info = v.info();
    assert_eq!(
        (info.kind, info.frames, info.width, info.height),
        (SourceKind::Mp4, 40, 320, 240)
    );
    assert!((info.fps.unwrap() - 10.0).abs() < 1e-9);
    assert_eq!(info.codec, "h264");
    let clip = DemoClip::default();
    let mut n = 0;
    let mut worst: f64 = 0.0;
    for f in v.frames().unwrap() {
        let f = f.unwrap();
        assert_eq!(f.index, n);
        let d = mean_abs_diff(&f.image, &clip.render(n).0);
        worst = worst.max(d);
        n += 1;
    }
    assert_eq!(n, 40);
    println!("demo.mp4: 40 frames, worst mean |diff| vs source {worst:.2}");
    assert!(
        worst < 4.0,
        "lossy H.264 should stay close to the source: {worst}"
    );
}

#[test]
fn demo_frames_folder_and_image() {
    let v = Video::open(repo("examples/demo/frames")).unwrap();
    let info = v.info();
    assert_eq!(
        (info.kind, info.frames, info.width, info.height),
        (SourceKind::Frames, 40, 320, 240)
    );
    assert_eq!(info.frame_names[0], "00000");
    assert_eq!(info.frame_names[39], "00039");
    let clip = DemoClip::default();
    for f in v.frames().unwrap().take(3) {
        let f = f.unwrap();
        assert!(mean_abs_diff(&f.image, &clip.render(f.index).0) < 2.0);
    }
    let img = Video::open(repo("examples/demo/frames/00007.jpg")).unwrap();
    assert_eq!((img.info().kind, img.info().frames), (SourceKind::Image, 1));
    assert_eq!(img.info().frame_names, vec!["00007".to_string()]);
    let only = img.frames().unwrap().next().unwrap().unwrap();
    let from_folder = v.frames().unwrap().nth(7).unwrap().unwrap();
    assert_eq!(only.image, from_folder.image);
}

#[test]
fn visit_matches_sequential_decode() {
    for path in ["examples/demo/demo.mp4", "examples/demo/frames"] {
        let v = Video::open(repo(path)).unwrap();
        let all: Vec<RgbImage> = v.frames().unwrap().map(|f| f.unwrap().image).collect();
        let want = [33, 3, 3, 12, 0, 39];
        let mut got = Vec::new();
        v.visit(&want, |i, img| {
            assert_eq!(img, &all[i], "{path} frame {i}");
            got.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![0, 3, 12, 33, 39]);
        let err = v.visit(&[40], |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("frame 40"), "{err}");
    }
}

fn open_err(p: &Path) -> Error {
    Video::open(p)
        .err()
        .unwrap_or_else(|| panic!("{} should not open", p.display()))
}

#[test]
fn missing_and_not_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_err(&dir.path().join("nope.mp4"));
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("nope.mp4"));
    assert_eq!(e.exit_code(), 2);

    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello, this is not a video").unwrap();
    let e = open_err(&txt);
    assert!(matches!(e, Error::NotAVideo { .. }), "{e}");
    assert!(e.to_string().contains("notes.txt"), "{e}");

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(open_err(&empty), Error::NotAVideo { .. }));
}

/// A minimal ISO-BMFF file whose only video track uses `fourcc`.
fn fake_mp4(fourcc: &[u8; 4]) -> Vec<u8> {
    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }
    let mut hdlr = vec![0u8; 8];
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0u8; 13]);
    let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1];
    stsd.extend(bx(fourcc, &[0u8; 78]));
    let minf = bx(b"minf", &bx(b"stbl", &bx(b"stsd", &stsd)));
    let mut mdia = bx(b"hdlr", &hdlr);
    mdia.extend(minf);
    let mut file = bx(b"ftyp", b"isom\0\0\x02\0isomiso2mp41");
    file.extend(bx(b"moov", &bx(b"trak", &bx(b"mdia", &mdia))));
    file
}

#[test]
fn codecs_the_default_build_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let hevc = dir.path().join("clip_hevc.mp4");
    std::fs::write(&hevc, fake_mp4(b"hvc1")).unwrap();
    if cfg!(feature = "ffmpeg") {
        // FFmpeg is asked instead; the fake file has no decodable stream.
        assert!(Video::open(&hevc).is_err());
        return;
    }
    let e = open_err(&hevc);
    assert!(
        matches!(
            e,
            Error::UnsupportedCodec {
                feature: "ffmpeg",
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("H.265") && msg.contains("--features ffmpeg") && msg.contains("clip_hevc.mp4"),
        "{msg}"
    );

    let mkv = dir.path().join("clip.mkv");
    std::fs::write(&mkv, [0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 1, 0, 0, 0]).unwrap();
    let e = open_err(&mkv);
    assert!(
        e.to_string().contains("Matroska") && e.to_string().contains("--features ffmpeg"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn zero_frames() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_err(dir.path());
    assert!(matches!(e, Error::NoFrames { .. }), "{e}");
    std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
    assert!(matches!(open_err(dir.path()), Error::NoFrames { .. }));

    // An mp4 with an H.264 track and no samples.
    let p = dir.path().join("empty_track.mp4");
    let mut w = videolisa::output::Mp4VideoWriter::create(&p, 16, 16, 5.0).unwrap();
    w.push(&RgbImage::new(16, 16)).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&p).unwrap();
    // Patch the sample count in stsz (sample_size=0 layout: 'stsz' ver/flags, size, count).
    let pos = bytes.windows(4).position(|w| w == b"stsz").unwrap();
    let mut patched = bytes.clone();
    patched[pos + 12..pos + 16].copy_from_slice(&0u32.to_be_bytes());
    std::fs::write(&p, patched).unwrap();
    let e = open_err(&p);
    assert!(matches!(e, Error::NoFrames { .. }), "{e}");
}

#[test]
fn mixed_frame_sizes() {
    let dir = tempfile::tempdir().unwrap();
    RgbImage::new(8, 6).save(dir.path().join("frame_1.png")).unwrap();
    RgbImage::new(8, 6).save(dir.path().join("frame_2.png")).unwrap();
    RgbImage::new(6, 8).save(dir.path().join("frame_10.png")).unwrap();
    let e = open_err(dir.path());
    assert!(matches!(e, Error::MixedFrameSizes { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("frame_10.png")
            && msg.contains("6x8")
            && msg.contains("8x6")
            && msg.contains("frame_1.png"),
        "{msg}"
    );
}

#[test]
fn corrupt_frames() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(repo("examples/demo/frames/00000.jpg")).unwrap();
    std::fs::write(dir.path().join("00000.jpg"), &src).unwrap();
    // Truncated: the header is intact, the pixel data is not.
    std::fs::write(dir.path().join("00001.jpg"), &src[..src.len() / 3]).unwrap();
    let v = Video::open(dir.path()).unwrap();
    let mut it = v.frames().unwrap();
    assert!(it.next().unwrap().is_ok());
    let e = it.next().unwrap().unwrap_err();
    assert!(matches!(e, Error::CorruptFrame { index: 1, .. }), "{e}");
    assert!(e.to_string().contains("00001.jpg"), "{e}");

    // Garbage behind a .jpg name fails already when the folder is opened.
    std::fs::write(dir.path().join("00002.jpg"), b"definitely not a jpeg").unwrap();
    let e = open_err(dir.path());
    assert!(matches!(e, Error::CorruptFrame { index: 2, .. }), "{e}");
    assert!(e.to_string().contains("00002.jpg"));
}

#[test]
fn corrupt_mp4_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(repo("examples/demo/demo.mp4")).unwrap();
    // Break the NAL length prefixes inside mdat: the sample no longer parses.
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap() + 4;
    let mid = mdat + (bytes.len() - mdat) / 2;
    for b in &mut bytes[mid..mid + 400] {
        *b = 0xFF;
    }
    let p = dir.path().join("broken.mp4");
    std::fs::write(&p, &bytes).unwrap();
    let v = Video::open(&p).unwrap();
    let err = v
        .frames()
        .unwrap()
        .find_map(|f| f.err())
        .expect("a corrupt frame is reported");
    assert!(
        matches!(err, Error::CorruptFrame { index, .. } if index > 0),
        "{err}"
    );
    assert!(matches!(err, Error::CorruptFrame { .. }), "{err}");
    assert!(err.to_string().contains("broken.mp4"), "{err}");
}

#[test]
fn frames_with_one_name_and_two_extensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    RgbImage::new(8, 6).save(dir.path().join("a.png")).unwrap();
    RgbImage::new(8, 6).save(dir.path().join("a.jpg")).unwrap();
    RgbImage::new(8, 6).save(dir.path().join("b.png")).unwrap();
    let e = open_err(dir.path());
    let msg = e.to_string();
    assert!(
        msg.contains("a.jpg") && msg.contains("a.png") && msg.contains("overwrite"),
        "{msg}"
    );
    assert_eq!(e.exit_code(), 2);
}
