//! mp4 decoding parity with the reference's reader, `cv2.VideoCapture` + `cvtColor(BGR2RGB)`
//! (fixtures from tools/reference/mp4_fixtures.py): the same number of frames and every frame's
//! RGB buffer identical (SHA-256), through edit lists (a cut that starts mid-GOP, an empty edit,
//! B-frame composition offsets), rotation metadata, BT.709 and full-range streams, a cropped
//! size and a faststart layout. One clip keeps x264's deblocking: OpenH264 deblocks a few B-frame
//! edges differently from FFmpeg, so there the frames that differ are measured against the
//! stored reference frames and must stay within a few levels on a few pixels. Streams the built-in decoder cannot read are refused up front
//! with a message naming the profile and the feature that reads them; damaged files say what is
//! damaged.

mod common;

use common::{fixture, sha256};
use serde_json::Value;
use videolisa::video::Video;
use videolisa::Error;

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("mp4/expected.json")).unwrap()).unwrap()
}

/// Frames of a stored reference strip (frames stacked vertically, BGR as OpenCV wrote them).
fn strip_frames(name: &str, w: u32, h: u32) -> Vec<Vec<u8>> {
    let img = image::open(fixture("mp4").join(name)).unwrap().into_rgb8();
    let frame = (w * h * 3) as usize;
    img.as_raw().chunks(frame).map(<[u8]>::to_vec).collect()
}

/// (max |diff|, differing pixels) between two RGB buffers.
fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    let d = a
        .chunks(3)
        .zip(b.chunks(3))
        .map(|(p, q)| p.iter().zip(q).map(|(x, y)| x.abs_diff(*y)).max().unwrap());
    d.fold((0, 0), |(m, n), v| (m.max(v), n + usize::from(v > 0)))
}

#[test]
fn frames_match_cv2_videocapture() {
    let doc = expected();
    let (mut frames, mut differing, mut decoder_diffs) = (0, Vec::new(), Vec::new());
    for clip in doc["clips"].as_array().unwrap() {
        let name = clip["file"].as_str().unwrap();
        let video = Video::open(fixture("mp4").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Vec<&str> = clip["sha256"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(video.len(), want.len(), "{name}: frame count");
        let size = (
            clip["size"][0].as_u64().unwrap() as u32,
            clip["size"][1].as_u64().unwrap() as u32,
        );
        assert_eq!((video.info().width, video.info().height), size, "{name}: size");
        let strip = clip["strip"].as_str().map(|s| strip_frames(s, size.0, size.1));
        for (frame, hash) in video.frames().unwrap().zip(&want) {
            let frame = frame.unwrap_or_else(|e| panic!("{name}: {e}"));
            frames += 1;
            if sha256(frame.image.as_raw()) == *hash {
                continue;
            }
            match strip.as_ref().and_then(|s| s.get(frame.index)) {
                Some(reference) => {
                    decoder_diffs.push((name, frame.index, diff(frame.image.as_raw(), reference)))
                }
                None => differing.push(format!("{name}#{}", frame.index)),
            }
        }
    }
    println!(
        "{frames} frames of {} clips against {}: {} differ; OpenH264 deblocking differences: {decoder_diffs:?}",
        doc["clips"].as_array().unwrap().len(),
        doc["reference"].as_str().unwrap(),
        differing.len() + decoder_diffs.len()
    );
    assert!(frames > 200);
    assert!(differing.is_empty(), "frames that differ from cv2: {differing:?}");
    for (name, i, (max, pixels)) in decoder_diffs {
        assert!(
            max <= 8 && pixels <= 200,
            "{name}#{i}: {pixels} pixels differ by up to {max}"
        );
    }
}

#[test]
fn unsupported_streams_name_profile_and_feature() {
    for (name, what) in [
        ("high10.mp4", "10-bit"),
        ("high444.mp4", "4:4:4"),
        ("interlaced.mp4", "interlaced"),
    ] {
        let opened = Video::open(fixture("mp4").join(name));
        if cfg!(feature = "ffmpeg") {
            // the build that has FFmpeg hands these streams to it
            let v = opened.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.info().kind, videolisa::video::SourceKind::Ffmpeg);
            continue;
        }
        let e = opened.unwrap_err();
        assert!(matches!(e, Error::UnsupportedCodec { .. }), "{name}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(what) && msg.contains("--features ffmpeg"), "{msg}");
        assert!(!msg.contains("Backtrace") && !msg.contains("Native"), "{msg}");
        assert_eq!(e.exit_code(), 2);
    }
}

/// Fuzzing found the `mp4` crate looping forever on damaged metadata (`udta`/`meta`/`ilst`),
/// which the decoder never needs: such a file opens and decodes as if the metadata were absent.
#[test]
fn damaged_metadata_is_ignored() {
    let good = std::fs::read(fixture("mp4/high_bframes.mp4")).unwrap();
    let data = good
        .windows(4)
        .rposition(|w| w == b"data")
        .expect("ffmpeg writes an encoder tag");
    let mut bad = good.clone();
    bad[data - 4..data].copy_from_slice(&[0, 0, 0, 0]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad_metadata.mp4");
    std::fs::write(&p, &bad).unwrap();
    let v = Video::open(&p).unwrap();
    assert_eq!(v.len(), 30);
    assert_eq!(v.frames().unwrap().count(), 30);
}

#[test]
fn damaged_files_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("mp4/high_bframes.mp4")).unwrap();
    let fast = std::fs::read(fixture("mp4/faststart.mp4")).unwrap();
    let moov = good.windows(4).position(|w| w == b"moov").unwrap() - 4;
    // moov at the end (ffmpeg's default): cut inside the media data → no movie header
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &good[..moov / 2]).unwrap();
    // faststart: the movie header survives, the media data is cut short
    let cut_fast = dir.path().join("cut_fast.mp4");
    std::fs::write(&cut_fast, &fast[..fast.len() / 2]).unwrap();
    // one byte of the first trak's size flipped
    let mut bad = good.clone();
    let trak = good[moov..].windows(4).position(|w| w == b"trak").unwrap() + moov;
    bad[trak - 2] ^= 0x40;
    let flipped = dir.path().join("flipped.mp4");
    std::fs::write(&flipped, &bad).unwrap();
    // fuzzing found this: a nested box of size 0 made the mp4 crate loop forever
    let mut zero = good.clone();
    let stss = good[moov..].windows(4).position(|w| w == b"stss").unwrap() + moov;
    zero[stss - 4..stss].copy_from_slice(&[0, 0, 0, 0]);
    let zero_size = dir.path().join("zero_size_box.mp4");
    std::fs::write(&zero_size, &zero).unwrap();
    // and this: a constant sample size lets a few bytes declare 2^27 samples
    let mut many = good.clone();
    let stsz = good[moov..].windows(4).position(|w| w == b"stsz").unwrap() + moov;
    many[stsz + 8..stsz + 12].copy_from_slice(&1u32.to_be_bytes());
    many[stsz + 12..stsz + 16].copy_from_slice(&(1u32 << 27).to_be_bytes());
    let many_samples = dir.path().join("many_samples.mp4");
    std::fs::write(&many_samples, &many).unwrap();
    // and this: zero samples per chunk made the mp4 crate divide by zero
    let mut stsc0 = good.clone();
    let stsc = good[moov..].windows(4).position(|w| w == b"stsc").unwrap() + moov;
    stsc0[stsc + 16..stsc + 20].copy_from_slice(&0u32.to_be_bytes());
    let zero_per_chunk = dir.path().join("zero_per_chunk.mp4");
    std::fs::write(&zero_per_chunk, &stsc0).unwrap();
    // and this: samples without a time made the mp4 crate unwrap an error
    let mut stts0 = good.clone();
    let stts = good[moov..].windows(4).position(|w| w == b"stts").unwrap() + moov;
    stts0[stts + 8..stts + 12].copy_from_slice(&0u32.to_be_bytes());
    let no_times = dir.path().join("no_times.mp4");
    std::fs::write(&no_times, &stts0).unwrap();
    for (path, needle) in [
        (&zero_per_chunk, "0 samples per chunk"),
        (&many_samples, "134217728 samples"),
        (&no_times, "covers 0 of 30 samples"),
        (&cut, "truncated"),
        (&cut_fast, "truncated"),
        (&flipped, "damaged movie header"),
        (&zero_size, "declares a size of 0"),
    ] {
        let e = Video::open(path).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::CorruptVideo { .. }), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert!(
            !msg.contains("without a video track") && !msg.contains("fill whole buffer"),
            "{msg}"
        );
    }
}
