//! Recognises an input file from its first bytes, and walks the boxes of an ISO-BMFF
//! (mp4/mov) file far enough to name the codec of its first video track.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What a file looks like.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A still image (JPEG or PNG).
    Image,
    /// An mp4 whose first video track is H.264 (avc1).
    Mp4H264,
    /// A video the default build cannot decode (description for the message).
    OtherVideo(String),
    /// Not recognised (reason for the message).
    Unknown(String),
}

/// Classifies `path` by its magic bytes (and, for mp4, its sample description).
pub(crate) fn sniff(path: &Path) -> Result<Sniffed> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 16];
    let n = read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if n == 0 {
        return Ok(Sniffed::Unknown("the file is empty".into()));
    }
    if super::still::StillFormat::sniff(head).is_some() {
        return Ok(Sniffed::Image);
    }
    if n >= 8 && &head[4..8] == b"ftyp" {
        return match video_codec(&mut f).map_err(|e| Error::io(path, e))? {
            Some(c) if c == *b"avc1" => Ok(Sniffed::Mp4H264),
            Some(c) => Ok(Sniffed::OtherVideo(format!(
                "{} video in an mp4/mov container",
                codec_name(&c)
            ))),
            None => Ok(Sniffed::Unknown("an mp4/mov file without a video track".into())),
        };
    }
    let other = if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("a Matroska/WebM file")
    } else if n >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"AVI " {
        Some("an AVI file")
    } else if head.starts_with(b"FLV") {
        Some("an FLV file")
    } else if head.starts_with(b"OggS") {
        Some("an Ogg file")
    } else if head.starts_with(&[0, 0, 1, 0xBA]) {
        Some("an MPEG program stream")
    } else if head[0] == 0x47 && is_transport_stream(&mut f) {
        Some("an MPEG transport stream")
    } else if head.starts_with(&[0, 0, 0, 1]) || head.starts_with(&[0, 0, 1]) {
        Some("a raw H.264/H.265 elementary stream")
    } else if head.starts_with(b"GIF8") {
        Some("a GIF file")
    } else if n >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("a WebP image")
    } else if head.starts_with(b"BM") {
        Some("a BMP image")
    } else {
        None
    };
    Ok(match other {
        Some(what) => Sniffed::OtherVideo(what.into()),
        None => Sniffed::Unknown("unrecognised file signature".into()),
    })
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn is_transport_stream(f: &mut File) -> bool {
    let mut b = [0u8; 1];
    [188u64, 376]
        .iter()
        .all(|&off| f.seek(SeekFrom::Start(off)).is_ok() && f.read_exact(&mut b).is_ok() && b[0] == 0x47)
}

/// Human name of a sample-entry fourcc.
fn codec_name(c: &[u8; 4]) -> String {
    let s = String::from_utf8_lossy(c).into_owned();
    let name = match c {
        b"hvc1" | b"hev1" => "H.265/HEVC",
        b"av01" => "AV1",
        b"vp09" => "VP9",
        b"vp08" => "VP8",
        b"mp4v" => "MPEG-4 Part 2",
        b"avc3" => "H.264 with in-band parameter sets",
        b"jpeg" | b"mjpa" | b"mjpb" => "Motion JPEG",
        b"apch" | b"apcn" | b"apcs" | b"apco" | b"ap4h" => "Apple ProRes",
        _ => "unknown",
    };
    format!("{name} ({s})")
}

/// Fourcc of the first sample entry of the first `vide` track, or None.
fn video_codec(f: &mut File) -> std::io::Result<Option<[u8; 4]>> {
    let len = f.metadata()?.len();
    let mut pos = 0u64;
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos))?;
        let (size, kind, header) = box_header(f, len - pos)?;
        if size < header {
            return Ok(None);
        }
        if &kind == b"moov" {
            let body_len = usize::try_from(size - header)
                .unwrap_or(usize::MAX)
                .min(256 << 20);
            let mut body = vec![0u8; body_len];
            f.read_exact(&mut body)?;
            return Ok(moov_video_codec(&body));
        }
        pos += size;
    }
    Ok(None)
}

/// Reads a box header at the current position: (total size, type, header length).
fn box_header(f: &mut File, remaining: u64) -> std::io::Result<(u64, [u8; 4], u64)> {
    let mut h = [0u8; 8];
    f.read_exact(&mut h)?;
    let size32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let kind = [h[4], h[5], h[6], h[7]];
    Ok(match size32 {
        0 => (remaining, kind, 8),
        1 => {
            let mut l = [0u8; 8];
            f.read_exact(&mut l)?;
            (u64::from_be_bytes(l), kind, 16)
        }
        s => (u64::from(s), kind, 8),
    })
}

/// Iterates the child boxes of `buf` as (type, body).
fn children(buf: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos + 8 > buf.len() {
            return None;
        }
        let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().ok()?) as usize;
        let kind: [u8; 4] = buf[pos + 4..pos + 8].try_into().ok()?;
        let (size, header) = match size {
            0 => (buf.len() - pos, 8),
            1 => {
                let l = u64::from_be_bytes(buf.get(pos + 8..pos + 16)?.try_into().ok()?);
                (usize::try_from(l).ok()?, 16)
            }
            s => (s, 8),
        };
        if size < header || pos + size > buf.len() {
            return None;
        }
        let body = &buf[pos + header..pos + size];
        pos += size;
        Some((kind, body))
    })
}

fn child<'a>(buf: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(buf).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn moov_video_codec(moov: &[u8]) -> Option<[u8; 4]> {
    for (kind, trak) in children(moov) {
        if &kind != b"trak" {
            continue;
        }
        let mdia = child(trak, b"mdia")?;
        let hdlr = child(mdia, b"hdlr")?;
        // version/flags (4) + pre_defined (4) + handler_type (4)
        if hdlr.get(8..12) != Some(b"vide") {
            continue;
        }
        let stsd = child(child(child(mdia, b"minf")?, b"stbl")?, b"stsd")?;
        // version/flags (4) + entry_count (4) + first entry: size (4) + type (4)
        let fourcc: [u8; 4] = stsd.get(12..16)?.try_into().ok()?;
        return Some(fourcc);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_nested_boxes() {
        fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.extend_from_slice(body);
            v
        }
        let mut hdlr_body = vec![0u8; 8];
        hdlr_body.extend_from_slice(b"vide");
        let mut stsd_body = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8];
        stsd_body.extend_from_slice(b"hvc1");
        let stbl = bx(b"stbl", &bx(b"stsd", &stsd_body));
        let minf = bx(b"minf", &stbl);
        let mut mdia_body = bx(b"hdlr", &hdlr_body);
        mdia_body.extend(minf);
        let moov_body = bx(b"trak", &bx(b"mdia", &mdia_body));
        assert_eq!(moov_video_codec(&moov_body), Some(*b"hvc1"));
        assert!(codec_name(b"hvc1").contains("HEVC"));
    }
}
