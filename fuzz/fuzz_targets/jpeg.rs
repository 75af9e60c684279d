//! Frame files (libjpeg-turbo through mozjpeg, EXIF orientation, OpenCV's CMYK rule, PNG) on
//! arbitrary bytes: an RGB frame of the size the header promised, or an error naming the
//! problem; never a panic, a crash in the C decoder, or a huge allocation from a few bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use videolisa::video::Video;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("00000.jpg");
    std::fs::write(&p, data).unwrap();
    let Ok(video) = Video::open(&p) else { return };
    let (w, h) = (video.info().width, video.info().height);
    if let Some(Ok(f)) = video.frames().ok().and_then(|mut f| f.next()) {
        assert_eq!(f.image.dimensions(), (w, h));
        assert_eq!(f.image.as_raw().len(), (w * h * 3) as usize);
    }
});
