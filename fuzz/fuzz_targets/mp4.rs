//! The mp4 demuxer (our box walker, the `mp4` crate's tables, edit lists, rotation), the SPS
//! parser and the H.264 decoder on arbitrary files: a video or an error naming the problem,
//! never a panic, a hang or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use videolisa::video::Video;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clip.mp4");
    std::fs::write(&p, data).unwrap();
    let Ok(video) = Video::open(&p) else { return };
    let (w, h) = (video.info().width, video.info().height);
    let Ok(frames) = video.frames() else { return };
    for frame in frames.take(6) {
        match frame {
            Ok(f) => assert_eq!(f.image.dimensions(), (w, h)),
            Err(_) => break,
        }
    }
});
