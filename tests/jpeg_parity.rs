//! Frame decoding parity with the reference's reader, `cv2.imread(path)` + `cvtColor(BGR2RGB)`
//! (fixtures from tools/reference/jpeg_fixtures.py): every file's whole RGB buffer must have
//! the same SHA-256. The set covers 4:4:4/4:2:2/4:2:0/4:4:0/4:1:1/4:1:0 and mixed subsampling,
//! odd sizes down to 1×1, progressive, arithmetic coding, restart markers, grayscale, RGB,
//! CMYK and YCCK, EXIF orientations 1–8, and PNG (RGB, RGBA, gray, 16-bit, palette).

mod common;

use common::{fixture, sha256};
use serde_json::Value;
use videolisa::video::Video;

#[test]
fn frames_decode_like_cv2_imread() {
    let dir = fixture("jpeg");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files = doc["files"].as_array().unwrap();
    assert!(files.len() >= 40, "{} fixtures", files.len());
    let mut failures = Vec::new();
    let mut jpegs = 0;
    for f in files {
        let name = f["file"].as_str().unwrap();
        jpegs += usize::from(name.ends_with(".jpg"));
        let video = Video::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = video.info();
        let (w, h) = (
            f["width"].as_u64().unwrap() as u32,
            f["height"].as_u64().unwrap() as u32,
        );
        assert_eq!((info.width, info.height), (w, h), "{name}: header size");
        let frame = video.frames().unwrap().next().unwrap().unwrap();
        assert_eq!(frame.image.dimensions(), (w, h), "{name}: decoded size");
        if sha256(frame.image.as_raw()) != f["sha256"].as_str().unwrap() {
            failures.push(name.to_string());
        }
    }
    println!(
        "{} files ({jpegs} JPEG) against {}: {} differ",
        files.len(),
        doc["reference"].as_str().unwrap(),
        failures.len()
    );
    assert!(jpegs >= 40);
    assert!(
        failures.is_empty(),
        "decoded differently from cv2.imread: {failures:?}"
    );
}
