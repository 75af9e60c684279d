//! `videolisa propagate` from the command line on the first 16 frames of the multi-object
//! fixture (xmem_joint; masks of frames 0 and 10, two objects): every output it promises, a
//! rerun replacing the folder, and the clear errors (exit 2, file named, nothing written) for
//! masks that do not fit the video.

mod common;

use common::{fixture, text, videolisa};
use image::GrayImage;
use std::path::{Path, PathBuf};
use videolisa::propagate::given::read_index_png;

/// The first 16 frames of the fixture clip.
fn clip(root: &Path) -> PathBuf {
    common::first_frames("xmem_joint/frames", 16, root)
}

fn propagate(masks: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let root = out.parent().unwrap().join("clip");
    let frames = if root.join("frames").is_dir() {
        root.join("frames")
    } else {
        clip(&root)
    };
    let xmem = fixture("xmem_joint/XMem.pth");
    let mut a = vec![
        "propagate",
        "--video",
        frames.to_str().unwrap(),
        "--masks",
        masks.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--xmem",
        xmem.to_str().unwrap(),
        "--mem-every",
        "3",
    ];
    a.extend(extra);
    videolisa(&a)
}

/// The fixture's masks of frames 0 and 10 in a fresh folder.
fn masks_copy(root: &Path) -> PathBuf {
    let dir = root.join("masks");
    std::fs::create_dir_all(&dir).unwrap();
    for n in ["frame_000000.png", "frame_000010.png"] {
        std::fs::copy(fixture("xmem_joint/masks").join(n), dir.join(n)).unwrap();
    }
    dir
}

#[test]
fn writes_labels_in_the_palette_and_every_extra() {
    let run = tempfile::tempdir().unwrap();
    let out = run.path().join("out");
    let masks = masks_copy(&run.path().join("given"));
    let o = propagate(&masks, &out, &["--binary", "--rle", "--overlay", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["objects"], serde_json::json!([1, 2]), "{s}");
    assert_eq!(s["given_frames"], serde_json::json!([0, 10]));
    assert_eq!(s["config"]["mem_every"], 3);
    assert_eq!(s["frames"], 16);
    for t in 0..16 {
        let name = format!("frame_{t:06}.png");
        let labels = read_index_png(&out.join("masks").join(&name)).unwrap();
        // DAVIS colours from the first mask's palette
        assert_eq!(
            &labels.palette[..4],
            &[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
        );
        for l in 1..=2u8 {
            let one = image::open(out.join(format!("object_{l}")).join(&name))
                .unwrap()
                .to_luma8();
            assert_eq!(one.dimensions(), labels.labels.dimensions());
            for (b, &v) in one.as_raw().iter().zip(labels.labels.as_raw()) {
                assert_eq!(*b, if v == l { 255 } else { 0 }, "{name}: object {l}");
            }
        }
        assert!(out.join("overlay").join(&name).is_file());
    }
    let rle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("object_2/masks.rle.json")).unwrap()).unwrap();
    assert_eq!(rle["frames"].as_array().unwrap().len(), 16);
    assert!(out.join("overlay.mp4").is_file() && out.join("summary.json").is_file());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("videolisa-run.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "complete");

    // a rerun without the extras replaces the folder: no stale object folders or overlays
    let o = propagate(&masks, &out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!out.join("object_1").exists() && !out.join("overlay").exists());
    assert_eq!(std::fs::read_dir(out.join("masks")).unwrap().count(), 16);
}

/// Runs with `masks` and expects exit 2 naming `needle`, and nothing written.
fn refused(root: &Path, masks: &Path, needle: &str) {
    let out = root.join(format!("out-{}", needle.len()));
    let o = propagate(masks, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(needle), "expected `{needle}` in: {}", text(&o));
    assert!(!out.join("masks").exists(), "nothing written: {}", text(&o));
}

#[test]
fn masks_that_do_not_fit_are_refused_by_name() {
    let run = tempfile::tempdir().unwrap();
    let root = run.path();
    let small = GrayImage::new(10, 10);

    let dir = masks_copy(&root.join("size"));
    small.save(dir.join("frame_000005.png")).unwrap();
    refused(
        root,
        &dir,
        "frame_000005.png: is 10×10, its frame (frame_000005) is 49×37",
    );

    let dir = masks_copy(&root.join("nonexistent"));
    GrayImage::new(49, 37).save(dir.join("frame_000077.png")).unwrap();
    refused(
        root,
        &dir,
        "frame_000077.png: names no frame of the video (16 frames",
    );

    // the first mask's palette names 5 colours (0–4); label 9 has none
    let dir = masks_copy(&root.join("palette"));
    let first = read_index_png(&dir.join("frame_000000.png")).unwrap();
    let pal: Vec<u8> = first.palette.iter().take(5).flatten().copied().collect();
    write_indexed(&dir.join("frame_000000.png"), &first.labels, &pal);
    let mut m = read_index_png(&dir.join("frame_000010.png")).unwrap().labels;
    m.put_pixel(0, 0, image::Luma([9]));
    write_indexed(&dir.join("frame_000010.png"), &m, &pal);
    refused(root, &dir, "holds object 9, but the palette of the first mask");

    let dir = root.join("empty/masks");
    std::fs::create_dir_all(&dir).unwrap();
    GrayImage::new(49, 37).save(dir.join("frame_000003.png")).unwrap();
    GrayImage::new(49, 37).save(dir.join("frame_000012.png")).unwrap();
    refused(root, &dir, "No valid masks provided!");

    let dir = root.join("rgb/masks");
    std::fs::create_dir_all(&dir).unwrap();
    image::RgbImage::new(49, 37)
        .save(dir.join("frame_000000.png"))
        .unwrap();
    refused(root, &dir, "is not an index mask");

    let dir = root.join("none/masks");
    std::fs::create_dir_all(&dir).unwrap();
    refused(root, &dir, "holds no mask");
}

fn write_indexed(path: &Path, ids: &GrayImage, palette: &[u8]) {
    let f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut enc = png::Encoder::new(f, ids.width(), ids.height());
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette.to_vec());
    let mut w = enc.write_header().unwrap();
    w.write_image_data(ids.as_raw()).unwrap();
}
