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
    /// A YUV4MPEG2 file.
    Y4m,
    /// A video the default build cannot decode (description for the message).
    OtherVideo(String),
    /// An mp4/mov whose box structure is damaged or cut short (what and where).
    Corrupt(String),
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
    if head.starts_with(super::y4m::MAGIC) {
        return Ok(Sniffed::Y4m);
    }
    if n >= 8 && &head[4..8] == b"ftyp" {
        let moov = match read_moov(&mut f).map_err(|e| Error::io(path, e))? {
            Ok(moov) => moov,
            Err(reason) => return Ok(Sniffed::Corrupt(reason)),
        };
        return Ok(match moov_video_codec(&moov) {
            Some(c) if c == *b"avc1" => Sniffed::Mp4H264,
            Some(c) => Sniffed::OtherVideo(format!("{} video in an mp4/mov container", codec_name(&c))),
            None => Sniffed::Unknown("an mp4/mov file without a video track".into()),
        });
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

/// Printable name of a box type (escaped when it is not ASCII, as in damaged files).
fn fourcc(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&c| std::ascii::escape_default(c).to_string())
        .collect()
}

/// Boxes whose body holds boxes (after this many bytes of their own fields): walked to check
/// the structure before the `mp4` crate parses it (which loops forever on a nested box of size 0).
const CONTAINERS: [(&[u8; 4], usize); 13] = [
    (b"moov", 0),
    (b"trak", 0),
    (b"mdia", 0),
    (b"minf", 0),
    (b"stbl", 0),
    (b"edts", 0),
    (b"dinf", 0),
    (b"mvex", 0),
    (b"moof", 0),
    (b"traf", 0),
    (b"dref", 8),
    (b"stsd", 8),
    (b"avc1", 78),
];

/// File offsets of the type fields of the metadata boxes (`udta`, `meta`) directly inside
/// `moov` and its `trak`s. The demuxer needs nothing in them and the `mp4` crate's parsers of
/// their contents loop forever on some damage, so the mp4 reader presents them as `free` boxes.
pub(crate) fn metadata_box_types(path: &Path) -> std::io::Result<Vec<u64>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut pos = 0u64;
    let mut found = Vec::new();
    while len - pos >= 8 {
        f.seek(SeekFrom::Start(pos))?;
        let (size, kind, header) = box_header(&mut f, len - pos)?;
        if size < header || size > len - pos {
            break;
        }
        if &kind == b"moov" {
            let mut body = vec![0u8; usize::try_from(size - header).unwrap_or(0).min(256 << 20)];
            f.read_exact(&mut body)?;
            metadata_in(&body, pos + header, &mut found);
        }
        pos += size;
    }
    Ok(found)
}

/// Adds the `udta`/`meta` type offsets among the children of `buf` (at file offset `at`),
/// looking into `trak`s.
fn metadata_in(buf: &[u8], at: u64, found: &mut Vec<u64>) {
    let mut pos = 0usize;
    while pos + 8 <= buf.len() {
        let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = buf[pos + 4..pos + 8].try_into().expect("4 bytes");
        if size < 8 || pos + size > buf.len() {
            return;
        }
        match &kind {
            b"udta" | b"meta" => found.push(at + pos as u64 + 4),
            b"trak" => metadata_in(&buf[pos + 8..pos + size], at + pos as u64 + 8, found),
            _ => {}
        }
        pos += size;
    }
}

/// The offset of the child boxes inside `kind`'s body, if it is a container.
fn children_offset(kind: &[u8; 4]) -> Option<usize> {
    CONTAINERS.iter().find(|(k, _)| *k == kind).map(|&(_, o)| o)
}

/// Walks the top-level boxes and returns the body of `moov`, its nested boxes checked to fit
/// their parents. `Ok(Err(reason))` describes a truncated or damaged file.
fn read_moov(f: &mut File) -> std::io::Result<std::result::Result<Vec<u8>, String>> {
    let len = f.metadata()?.len();
    let (mut pos, mut moov, mut saw_mdat) = (0u64, None, false);
    while len - pos >= 8 {
        f.seek(SeekFrom::Start(pos))?;
        if len - pos < 16 && peek_largesize(f)? {
            return Ok(Err(format!(
                "the file ends inside the header of the box at offset {pos}"
            )));
        }
        f.seek(SeekFrom::Start(pos))?;
        let (size, kind, header) = box_header(f, len - pos)?;
        if size < header {
            return Ok(Err(format!(
                "box `{}` at offset {pos} declares an impossible size of {size} bytes",
                fourcc(&kind)
            )));
        }
        if size > len - pos {
            return Ok(Err(if &kind == b"mdat" {
                format!(
                    "the file is truncated: its media data (the mdat box at offset {pos}) declares {size} \
                     bytes but the file ends {} bytes into it",
                    len - pos
                )
            } else {
                format!(
                    "box `{}` at offset {pos} declares {size} bytes but the file ends {} bytes into it",
                    fourcc(&kind),
                    len - pos
                )
            }));
        }
        if &kind == b"moov" || &kind == b"moof" {
            let len = usize::try_from(size - header)
                .unwrap_or(usize::MAX)
                .min(256 << 20);
            let mut body = vec![0u8; len];
            f.read_exact(&mut body)?;
            if let Err(reason) = check_children(&body, &kind, pos + header) {
                return Ok(Err(reason));
            }
            if &kind == b"moov" {
                moov = Some(body);
            }
        }
        saw_mdat |= &kind == b"mdat";
        pos += size;
    }
    Ok(moov.ok_or_else(|| {
        if saw_mdat {
            "there is no movie header (moov box) after the media data: the file is truncated or its \
             recording was never finalised"
                .to_string()
        } else {
            "there is no movie header (moov box)".to_string()
        }
    }))
}

fn peek_largesize(f: &mut File) -> std::io::Result<bool> {
    let mut h = [0u8; 4];
    f.read_exact(&mut h)?;
    Ok(u32::from_be_bytes(h) == 1)
}

/// Checks that the boxes in `buf` (the body of `parent`, found at file offset `offset`) tile it
/// exactly, recursing into container boxes.
fn check_children(buf: &[u8], parent: &[u8; 4], offset: u64) -> std::result::Result<(), String> {
    let mut pos = 0usize;
    while pos < buf.len() {
        let at = offset + pos as u64;
        let rest = buf.len() - pos;
        let bad = |what: String| {
            Err(format!(
                "damaged movie header: {what}, inside `{}` which has {rest} bytes left at offset {at}",
                fourcc(parent)
            ))
        };
        if rest < 8 {
            return bad(format!("{rest} stray bytes"));
        }
        let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = buf[pos + 4..pos + 8].try_into().expect("4 bytes");
        let (size, header) = match size {
            0 => return bad(format!("box `{}` declares a size of 0", fourcc(&kind))),
            1 if rest >= 16 => {
                let l = u64::from_be_bytes(buf[pos + 8..pos + 16].try_into().expect("8 bytes"));
                (usize::try_from(l).unwrap_or(usize::MAX), 16)
            }
            1 => return bad(format!("box `{}` is cut off", fourcc(&kind))),
            s => (s, 8),
        };
        if size < header || size > rest {
            return bad(format!("box `{}` declares {size} bytes", fourcc(&kind)));
        }
        if let Some(skip) = children_offset(&kind) {
            let body = &buf[pos + header..pos + size];
            if body.len() >= skip {
                check_children(&body[skip..], &kind, at + (header + skip) as u64)?;
            }
        }
        pos += size;
    }
    Ok(())
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
