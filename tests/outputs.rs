//! Output sets written from the demo clip's true masks, read back and checked.

mod common;

use common::repo;
use videolisa::output::{read_mask_png, FrameOutputs, OutputFormats, Rle};
use videolisa::video::Video;

#[test]
fn demo_masks_round_trip_through_every_format() {
    let video = Video::open(repo("examples/demo/frames")).unwrap();
    let info = video.info().clone();
    let dir = tempfile::tempdir().unwrap();
    let formats = OutputFormats {
        indexed_png: true,
        overlay_png: true,
        overlay_mp4: Some(10.0),
        rle: true,
        ..OutputFormats::default()
    };
    let mut out = FrameOutputs::new(dir.path(), info.width, info.height, formats).unwrap();
    let mut truth = Vec::new();
    for f in video.frames().unwrap() {
        let f = f.unwrap();
        let name = &info.frame_names[f.index];
        let ids = read_mask_png(&repo(&format!("examples/demo/masks/{name}.png"))).unwrap();
        out.push(name, Some(&f.image), &ids).unwrap();
        truth.push(ids);
    }
    out.finish().unwrap();

    for (i, ids) in truth.iter().enumerate() {
        let name = &info.frame_names[i];
        let bin = read_mask_png(&dir.path().join(format!("{name}.png"))).unwrap();
        assert!(bin
            .as_raw()
            .iter()
            .zip(ids.as_raw())
            .all(|(&b, &t)| b == if t > 0 { 255 } else { 0 }));
        assert_eq!(
            &read_mask_png(&dir.path().join(format!("indexed/{name}.png"))).unwrap(),
            ids
        );
        assert!(dir.path().join(format!("overlay/{name}.png")).exists());
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("masks.rle.json")).unwrap()).unwrap();
    let frames = json["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 40);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["frame"], info.frame_names[i]);
        let rle: Rle = serde_json::from_value(f.clone()).unwrap();
        let m = rle.decode().unwrap();
        assert!(m
            .as_raw()
            .iter()
            .zip(truth[i].as_raw())
            .all(|(&a, &t)| (a > 0) == (t > 0)));
    }
    let mp4 = Video::open(dir.path().join("overlay.mp4")).unwrap();
    assert_eq!(
        (mp4.info().frames, mp4.info().width, mp4.info().height),
        (40, 320, 240)
    );
    // No temporary files are left behind.
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[test]
fn committed_demo_masks_are_exact() {
    let clip = videolisa::demo::DemoClip::default();
    for i in 0..clip.frames {
        let ids = read_mask_png(&repo(&format!("examples/demo/masks/{i:05}.png"))).unwrap();
        assert_eq!(ids, clip.render(i).1, "frame {i}");
    }
}

#[test]
fn odd_sized_overlay_video() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("odd.mp4");
    let mut w = videolisa::output::Mp4VideoWriter::create(&p, 33, 17, 7.5).unwrap();
    for i in 0..5u8 {
        w.push(&image::RgbImage::from_pixel(
            33,
            17,
            image::Rgb([i * 40, 100, 200]),
        ))
        .unwrap();
    }
    assert!(!p.exists(), "the file appears only on finish");
    w.finish().unwrap();
    let v = Video::open(&p).unwrap();
    assert_eq!((v.info().frames, v.info().width, v.info().height), (5, 34, 18));
    assert!((v.info().fps.unwrap() - 7.5).abs() < 0.01);
}
