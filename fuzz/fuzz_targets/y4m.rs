//! The y4m reader on arbitrary streams: as a pipe (frame by frame until the end or an error
//! naming the frame and byte offset) and as a file (frame count, then every frame), never a
//! panic, never a frame of the wrong size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use videolisa::video::y4m::Reader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = Reader::new(data, Path::new("-")) {
        let (w, h) = (r.header().width, r.header().height);
        for _ in 0..64 {
            match r.next_frame() {
                Ok(Some(img)) => assert_eq!(img.dimensions(), (w, h)),
                Ok(None) => break,
                Err(e) => {
                    assert!(e.to_string().contains("byte"), "{e}");
                    break;
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clip.y4m");
    std::fs::write(&p, data).unwrap();
    if let Ok(v) = videolisa::video::Video::open(&p) {
        let n = v.frames().unwrap().take(64).map(|f| f.unwrap()).count();
        assert_eq!(n, v.len().min(64));
    }
});
