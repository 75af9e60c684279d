//! `propagate` (XMem++ alone, every object in one memory) against XMem2's own `run_on_video`
//! (tools/reference/xmem_fixtures.py --case …) on a tiny random checkpoint in the `XMem.pth`
//! layout: three objects with the third first given in a later mask (a second object group),
//! a stressed memory (small working memory, few prototypes, a long-term cap so consolidation
//! and the removal of obsolete features both run), and JPEG frames whose short side is exactly
//! 480. The output files are compared too: our palette PNGs shown as RGB equal XMem2's saved
//! RGB masks.

mod common;

use common::fixture;
use image::GrayImage;
use std::path::Path;
use videolisa::model::xmem::memory::MemoryConfig;
use videolisa::model::xmem::XMem;
use videolisa::propagate::given::{read_given, read_index_png};
use videolisa::propagate::{propagate, PropagateOptions};
use videolisa::video::Video;

/// The values of an index PNG (palette indices, not colours).
fn gray(path: &Path) -> GrayImage {
    read_index_png(path).unwrap().labels
}

fn config(meta: &serde_json::Value) -> MemoryConfig {
    let mut c = MemoryConfig::default();
    let get = |k: &str, d: usize| meta["config"][k].as_u64().map_or(d, |v| v as usize);
    c.mem_every = get("mem_every", c.mem_every);
    c.max_mid_term_frames = get("max_mid_term_frames", c.max_mid_term_frames);
    c.min_mid_term_frames = get("min_mid_term_frames", c.min_mid_term_frames);
    c.num_prototypes = get("num_prototypes", c.num_prototypes);
    c.max_long_term_elements = get("max_long_term_elements", c.max_long_term_elements);
    c
}

/// Runs one case and compares every frame; returns a line of numbers.
fn check(case: &str, objects: &[u8]) {
    let dir = fixture(&format!("xmem_{case}"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let net = XMem::open(&fixture("xmem_joint/XMem.pth"), &common::device()).unwrap();
    let video = Video::open(dir.join("frames")).unwrap();
    let given = read_given(&dir.join("masks"), video.info()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = PropagateOptions {
        config: config(&meta),
        ..PropagateOptions::default()
    };
    let t = std::time::Instant::now();
    let s = propagate(&net, &video, &given, out.path(), &opts).unwrap();
    let seconds = t.elapsed().as_secs_f64();
    assert_eq!(s.objects, objects, "{case}: object labels in XMem2's order");
    let n = meta["frames"].as_u64().unwrap() as usize;
    assert_eq!(s.frames, n);
    let count = |k: &str| meta[k].as_array().unwrap().len();
    assert_eq!(
        s.consolidations,
        count("consolidated_at"),
        "{case}: consolidations"
    );
    assert_eq!(
        s.removals,
        count("removed_at"),
        "{case}: removals of obsolete features"
    );
    let (mut differing, mut tied, mut near, mut unexplained, mut pixels) = (0, 0, 0, 0, 0);
    let mut min_iou: f64 = 1.0;
    for t in 0..n {
        let name = video.info().frame_name(t);
        let ours = gray(&out.path().join("masks").join(format!("{name}.png")));
        let want = gray(&dir.join(format!("expected/frame_{t:06}.png")));
        let close = gray(&dir.join(format!("expected/ties_{t:06}.png")));
        pixels += want.as_raw().len();
        let before = differing;
        for ((o, w), c) in ours.as_raw().iter().zip(want.as_raw()).zip(close.as_raw()) {
            // expected holds XMem2's channel; channel k is label objects[k - 1]
            let w = if *w == 0 { 0 } else { objects[*w as usize - 1] };
            if *o != w {
                differing += 1;
                tied += usize::from(*c == 2);
                near += usize::from(*c == 1);
                unexplained += usize::from(*c == 0);
            }
        }
        if differing > before {
            println!("{case}: frame {t}: {} pixels differ", differing - before);
        }
        for &l in objects {
            let (mut inter, mut union) = (0usize, 0usize);
            for (o, w) in ours.as_raw().iter().zip(want.as_raw()) {
                let w = *w != 0 && objects[*w as usize - 1] == l;
                inter += usize::from(*o == l && w);
                union += usize::from(*o == l || w);
            }
            if union > 0 {
                min_iou = min_iou.min(inter as f64 / union as f64);
            }
        }
    }
    println!(
        "{case}: {n} frames {}x{}, objects {objects:?}: {differing} of {pixels} pixels differ ({tied} where \
         XMem2 ties within 1e-4, {near} within 1e-3, {unexplained} further apart), min IoU per object \
         {min_iou:.6}; consolidations {}, removals {}; {:.2} s/frame here, {:.2} s/frame in XMem2 ({} threads)",
        video.info().width,
        video.info().height,
        s.consolidations,
        s.removals,
        seconds / n as f64,
        meta["step_seconds_per_frame"].as_f64().unwrap_or(f64::NAN),
        meta["torch_threads"]
    );
    for file in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some(frame) = stem.strip_prefix("xmem2_") else {
            continue;
        };
        let theirs = image::open(&file).unwrap().to_rgb8();
        let ours = image::open(out.path().join("masks").join(format!("{frame}.png")))
            .unwrap()
            .to_rgb8();
        let off = theirs.pixels().zip(ours.pixels()).filter(|(a, b)| a != b).count();
        println!("{case}: {frame} shown as RGB: {off} pixels differ from XMem2's saved mask");
        assert!(
            off <= differing,
            "{case}: {frame}: colours differ beyond the differing labels"
        );
    }
    // With several objects most pixels have two or three close contenders, and a still
    // background keeps a pixel's keys close from frame to frame, so top-k choices that f32
    // rounding decides are far more common than in xmem_tiny's clip: our probabilities are
    // 5e-6 – 4e-5 from XMem2's on average (max 3e-3, at such pixels; measured on the joint
    // clip), which flips about one pixel per frame. Beyond 1e-3 of a tie: at most 1 in 50,000.
    assert!(
        unexplained * 50_000 <= pixels,
        "{case}: {unexplained} pixels differ away from ties"
    );
    // one pixel of the smallest object (~230 pixels of a 49×37 frame) is 0.4 %
    assert!(min_iou >= 0.99, "{case}: min IoU {min_iou}");
    assert!(
        differing as f64 <= 1e-3 * pixels as f64,
        "{case}: {differing} pixels differ"
    );
}

#[test]
fn three_objects_one_entering_later_match_xmem2() {
    check("joint", &[1, 2, 3]);
}

#[test]
fn stressed_memory_matches_xmem2() {
    check("stressed", &[1, 2]);
}

#[test]
fn jpeg_frames_of_short_side_480_match_xmem2() {
    check("jpeg480", &[1, 2]);
}
