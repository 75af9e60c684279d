//! Preprocessing parity with the Python reference (Pillow, transformers 4.41 CLIPImageProcessor,
//! torchvision resize of PIL images + SAM normalisation): fixtures from
//! tools/reference/preprocess_fixtures.py. Resized u8 must match byte for byte (SHA-256 of the
//! whole buffer), normalised f32 must match within 1e-6 (checked by hash = exact, and on samples).

mod common;

use common::{f32_bytes, fixture, sha256, test_image};
use serde_json::Value;
use videolisa::preprocess::{resize, ClipTransform, Filter, SamTransform};

fn load() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("preprocess.json")).unwrap()).unwrap()
}

/// Max |a - b| over the reference samples `[[flat_index, value], ...]`.
fn sample_err(data: &[f32], samples: &Value) -> f64 {
    samples
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (f64::from(data[s[0].as_u64().unwrap() as usize]) - s[1].as_f64().unwrap()).abs())
        .fold(0.0, f64::max)
}

fn check_u8_samples(data: &[u8], samples: &Value, what: &str) {
    for s in samples.as_array().unwrap() {
        let i = s[0].as_u64().unwrap() as usize;
        assert_eq!(u64::from(data[i]), s[1].as_u64().unwrap(), "{what}: byte {i}");
    }
}

#[test]
fn clip_and_sam_transforms_match_reference() {
    let doc = load();
    let clip = ClipTransform::default();
    let sam = SamTransform::default();
    let mut worst: f64 = 0.0;
    let images = doc["images"].as_array().unwrap();
    assert!(images.len() >= 20);
    for im in images {
        let (w, h, seed) = (
            im["width"].as_u64().unwrap() as u32,
            im["height"].as_u64().unwrap() as u32,
            im["seed"].as_u64().unwrap(),
        );
        let img = test_image(w, h, seed);
        assert_eq!(
            sha256(img.as_raw()),
            im["input_sha256"].as_str().unwrap(),
            "{w}x{h}: test image generator"
        );
        for (name, t) in [("clip", &im["clip"]), ("sam", &im["sam"])] {
            let (resized, planar) = if name == "clip" {
                (clip.resize(&img), clip.apply(&img))
            } else {
                (sam.resize(&img), sam.apply(&img))
            };
            let what = format!("{name} {w}x{h}");
            assert_eq!(
                [u64::from(resized.width()), u64::from(resized.height())],
                [
                    t["resized"][0].as_u64().unwrap(),
                    t["resized"][1].as_u64().unwrap()
                ],
                "{what}: resized size"
            );
            check_u8_samples(resized.as_raw(), &t["resized_samples"], &what);
            assert_eq!(
                sha256(resized.as_raw()),
                t["resized_sha256"].as_str().unwrap(),
                "{what}: resized bytes"
            );
            let err = sample_err(&planar.data, &t["pixel_values_samples"]);
            assert!(err <= 1e-6, "{what}: normalized max error {err}");
            worst = worst.max(err);
            assert_eq!(
                sha256(&f32_bytes(&planar.data)),
                t["pixel_values_sha256"].as_str().unwrap(),
                "{what}: normalized tensor differs (sampled max error {err})"
            );
        }
    }
    println!("preprocess parity: {} images, resized u8 identical, normalized f32 identical (sampled max error {worst:e})", images.len());
}

#[test]
fn pil_resize_grid_matches_pillow() {
    let doc = load();
    let src = &doc["pil_resize"]["src"];
    let img = test_image(
        src[0].as_u64().unwrap() as u32,
        src[1].as_u64().unwrap() as u32,
        src[2].as_u64().unwrap(),
    );
    let cases = doc["pil_resize"]["cases"].as_array().unwrap();
    for c in cases {
        let (w, h) = (
            c["w"].as_u64().unwrap() as usize,
            c["h"].as_u64().unwrap() as usize,
        );
        let f = if c["filter"] == "bilinear" {
            Filter::Bilinear
        } else {
            Filter::Bicubic
        };
        let out = resize(
            img.as_raw(),
            img.width() as usize,
            img.height() as usize,
            3,
            w,
            h,
            f,
        );
        let what = format!("{f:?} 23x17 -> {w}x{h}");
        check_u8_samples(&out, &c["samples"], &what);
        assert_eq!(sha256(&out), c["sha256"].as_str().unwrap(), "{what}");
    }
    println!("PIL resize grid: {} cases identical", cases.len());
}
