//! y4m files against `cv2.VideoCapture` (fixtures from tools/reference/y4m_fixtures.py, OpenCV
//! 5.1): bit-exact where libswscale uses its unscaled converter (4:2:0 and 4:2:2 of even height,
//! on noise, so every value and every chroma position is reached) and for mono; approximate where
//! it runs its general scaler (4:4:4: within a level or two; 4:2:0 of odd height, whose chroma it
//! interpolates where we repeat it: a few levels on average, more at colour edges), on natural
//! in-gamut pictures.

use std::path::Path;
use videolisa::video::Video;

const DIR: &str = "tests/fixtures/y4m";

/// Largest channel difference to OpenCV allowed for 4:4:4 (measured: see the printed values).
const APPROXIMATE_444: u8 = 1;
/// Largest mean channel difference allowed for 4:2:0 of odd height.
const APPROXIMATE_ODD_MEAN: f64 = 6.0;

#[test]
fn y4m_frames_are_read_as_opencv_reads_them() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(DIR).join("expected.json")).unwrap()).unwrap();
    for (name, case) in expected["cases"].as_object().unwrap() {
        let video = Video::open(Path::new(DIR).join(format!("{name}.y4m"))).unwrap();
        assert_eq!(video.len() as u64, case["frames"].as_u64().unwrap(), "{name}");
        assert_eq!(video.info().fps, case["fps"].as_f64(), "{name}");
        let exact = case["content"] == "noise" || name == "mono";
        let (mut worst, mut differing, mut sum, mut values) = (0u8, 0usize, 0u64, 0usize);
        for frame in video.frames().unwrap() {
            let frame = frame.unwrap();
            let want = image::open(Path::new(DIR).join(format!("{name}_{}.png", frame.index)))
                .unwrap()
                .to_rgb8();
            assert_eq!(want.dimensions(), frame.image.dimensions(), "{name}");
            for (a, b) in want.as_raw().iter().zip(frame.image.as_raw()) {
                worst = worst.max(a.abs_diff(*b));
                differing += usize::from(a != b);
                sum += u64::from(a.abs_diff(*b));
                values += 1;
            }
        }
        let mean = sum as f64 / values as f64;
        println!(
            "{name}: max |ours − OpenCV| = {worst}, mean {mean:.3}, {differing} of {values} values differ"
        );
        if exact {
            assert_eq!(worst, 0, "{name}: {differing} values differ from OpenCV");
        } else if name.starts_with("c444") {
            assert!(worst <= APPROXIMATE_444, "{name}: {worst} levels from OpenCV");
        } else {
            assert!(
                mean <= APPROXIMATE_ODD_MEAN,
                "{name}: {mean} levels from OpenCV on average"
            );
        }
    }
}
