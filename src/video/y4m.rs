//! YUV4MPEG2 (y4m): the raw-frame stream `ffmpeg -f yuv4mpegpipe` writes and any program can
//! write. A text header (`YUV4MPEG2 W.. H.. F.. C..`), then per frame a `FRAME` line and the
//! planes. 8-bit 4:2:0 (every chroma siting), 4:2:2, 4:4:4 and mono are read; the range comes
//! from FFmpeg's `XCOLORRANGE` extension (limited when absent), the matrix is BT.601 (y4m names
//! none, so libswscale uses its default). Conversion to RGB is OpenCV's (see [`super::yuv`]):
//! bit-exact for 4:2:0 and 4:2:2 of even height, which libswscale converts with its unscaled
//! converter, and for mono (grey levels unchanged); its general scaler (odd heights, 4:4:4) is
//! approximated with the same arithmetic (README, "Live and piped video").

use super::yuv::YuvToRgb;
use super::{Frame, SourceKind, VideoInfo};
use crate::error::{Error, Result};
use image::RgbImage;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// The stream's first bytes.
pub const MAGIC: &[u8] = b"YUV4MPEG2 ";
/// Longest header or `FRAME` line read before the stream is called garbage.
const MAX_LINE: usize = 4096;
/// Largest side accepted (a header with more is damaged, not a video).
const MAX_SIDE: u32 = 8192;

/// How chroma is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chroma {
    /// 4:2:0 (any siting: `420jpeg`, `420mpeg2`, `420paldv`, `420`).
    C420,
    /// 4:2:2.
    C422,
    /// 4:4:4.
    C444,
    /// Luma only.
    Mono,
}

impl Chroma {
    fn parse(tag: &str) -> std::result::Result<Self, String> {
        match tag {
            "420jpeg" | "420paldv" | "420mpeg2" | "420" => Ok(Chroma::C420),
            "422" => Ok(Chroma::C422),
            "444" => Ok(Chroma::C444),
            "mono" => Ok(Chroma::Mono),
            t if t.contains('p') || t.contains("alpha") => Err(format!(
                "colour space C{t} is not supported (8-bit 4:2:0, 4:2:2, 4:4:4 or mono only; \
                 convert with ffmpeg -pix_fmt yuv420p)"
            )),
            t => Err(format!("unknown colour space C{t}")),
        }
    }

    /// (width, height) of one chroma plane; (0, 0) for mono.
    fn plane(self, w: usize, h: usize) -> (usize, usize) {
        match self {
            Chroma::C420 => (w.div_ceil(2), h.div_ceil(2)),
            Chroma::C422 => (w.div_ceil(2), h),
            Chroma::C444 => (w, h),
            Chroma::Mono => (0, 0),
        }
    }
}

/// What a y4m header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per second (`F` num:den), when given and non-zero.
    pub fps: Option<f64>,
    /// Chroma layout (`C`; 4:2:0 when absent, as the format's default).
    pub chroma: Chroma,
    /// Full-range YUV (`XCOLORRANGE=FULL`).
    pub full_range: bool,
    /// Bytes of the header line, newline included.
    pub len: usize,
}

impl Header {
    /// Parses the header line (`line` without its newline; `len` counts it).
    pub fn parse(line: &[u8]) -> std::result::Result<Header, String> {
        let rest = line
            .strip_prefix(MAGIC)
            .ok_or("it does not start with \"YUV4MPEG2 \" (not a y4m stream)")?;
        if !rest.is_ascii() {
            return Err("the header is not ASCII text".into());
        }
        let text = std::str::from_utf8(rest).map_err(|_| "the header is not ASCII text")?;
        let (mut width, mut height, mut fps) = (None, None, None);
        let (mut chroma, mut full_range) = (Chroma::C420, false);
        for tok in text.split(' ').filter(|t| !t.is_empty()) {
            let (key, val) = tok.split_at(1);
            match key {
                "W" => width = Some(side(val, "W")?),
                "H" => height = Some(side(val, "H")?),
                "F" => fps = ratio(val).ok_or_else(|| format!("bad frame rate F{val}"))?,
                "C" => chroma = Chroma::parse(val)?,
                "X" if val == "COLORRANGE=FULL" => full_range = true,
                "X" if val == "COLORRANGE=LIMITED" => full_range = false,
                "I" | "A" | "X" => {}
                _ => return Err(format!("unknown header field {tok:?}")),
            }
        }
        let (width, height) = match (width, height) {
            (Some(w), Some(h)) => (w, h),
            _ => return Err("the header has no W (width) or H (height)".into()),
        };
        Ok(Header {
            width,
            height,
            fps,
            chroma,
            full_range,
            len: MAGIC.len() + rest.len() + 1,
        })
    }

    /// Bytes of one frame's planes.
    pub fn frame_bytes(&self) -> usize {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma.plane(w, h);
        w * h + 2 * cw * ch
    }

    /// Converts one frame's planes (exactly [`Header::frame_bytes`] long) to RGB.
    pub fn to_rgb(&self, data: &[u8]) -> RgbImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma.plane(w, h);
        let conv = YuvToRgb::new(2, self.full_range);
        let (y, uv) = data.split_at(w * h);
        let (u, v) = uv.split_at(cw * ch);
        let mut rgb = vec![0u8; w * h * 3];
        match self.chroma {
            Chroma::C420 => conv.convert_rows([(y, w), (u, cw), (v, cw)], 2, w, h, &mut rgb),
            Chroma::C422 => conv.convert_rows([(y, w), (u, cw), (v, cw)], 1, w, h, &mut rgb),
            Chroma::C444 => YuvToRgb::convert_444([(y, w), (u, w), (v, w)], self.full_range, w, h, &mut rgb),
            // libswscale hands grey levels over unchanged (measured on cv2.VideoCapture)
            Chroma::Mono => rgb.chunks_exact_mut(3).zip(y).for_each(|(p, &v)| p.fill(v)),
        }
        RgbImage::from_raw(self.width, self.height, rgb).expect("the buffer has the frame size")
    }
}

fn side(val: &str, key: &str) -> std::result::Result<u32, String> {
    match val.parse::<u32>() {
        Ok(v) if (1..=MAX_SIDE).contains(&v) => Ok(v),
        _ => Err(format!("bad {key}{val} (1..={MAX_SIDE} pixels)")),
    }
}

/// `num:den` as a rate; `None` for 0:0 (unknown); an error (outer `None`) when malformed.
fn ratio(val: &str) -> Option<Option<f64>> {
    let (n, d) = val.split_once(':')?;
    let (n, d): (u32, u32) = (n.parse().ok()?, d.parse().ok()?);
    Some((n > 0 && d > 0).then(|| f64::from(n) / f64::from(d)))
}

/// Reads a y4m stream frame by frame from any reader (a file, a pipe, stdin), keeping count of
/// frames and bytes so a damaged stream is reported at its frame and byte offset.
pub struct Reader<R> {
    input: R,
    path: PathBuf,
    header: Header,
    offset: u64,
    next: usize,
    buf: Vec<u8>,
}

impl<R: Read> Reader<R> {
    /// Reads the header; `path` names the stream in messages (`-` for stdin).
    pub fn new(mut input: R, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::NotAVideo {
            path: path.to_path_buf(),
            reason: format!("not a y4m stream: {reason}"),
        };
        let line = read_line(&mut input, path)?
            .ok_or_else(|| bad("the stream is empty (no header before end of input)".into()))?;
        let header = Header::parse(&line).map_err(bad)?;
        Ok(Reader {
            input,
            path: path.to_path_buf(),
            offset: header.len as u64,
            buf: vec![0; header.frame_bytes()],
            header,
            next: 0,
        })
    }

    /// What the header says.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The stream's name in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames read so far.
    pub fn frames_read(&self) -> usize {
        self.next
    }

    /// The next frame's planes, or `None` at the end of the stream (between frames). A frame
    /// cut short or a damaged `FRAME` line is an error naming the frame and byte offset.
    pub fn next_planes(&mut self) -> Result<Option<&[u8]>> {
        if !self.frame_line()? {
            return Ok(None);
        }
        let got = read_full(&mut self.input, &mut self.buf).map_err(|e| Error::io(&self.path, e))?;
        if got < self.buf.len() {
            return Err(self.cut_short(got));
        }
        self.offset += got as u64;
        self.next += 1;
        Ok(Some(&self.buf))
    }

    /// Reads the next `FRAME` line (false at the end of the stream, between frames).
    fn frame_line(&mut self) -> Result<bool> {
        let start = self.offset;
        let line = match read_line(&mut self.input, &self.path)? {
            None => return Ok(false),
            Some(l) => l,
        };
        if !is_frame_line(&line) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(16)]).into_owned();
            return Err(self.corrupt(start, format!("expected a FRAME line, found {shown:?}")));
        }
        self.offset += line.len() as u64 + 1;
        Ok(true)
    }

    /// The error for a frame whose planes end after `got` bytes.
    fn cut_short(&self, got: usize) -> Error {
        let msg = format!(
            "the input ends inside the frame ({got} of {} bytes)",
            self.buf.len()
        );
        self.corrupt(self.offset, msg)
    }

    /// The next frame as RGB (see [`Reader::next_planes`]).
    pub fn next_frame(&mut self) -> Result<Option<RgbImage>> {
        let header = self.header.clone();
        Ok(self.next_planes()?.map(|d| header.to_rgb(d)))
    }

    fn corrupt(&self, at: u64, reason: String) -> Error {
        Error::CorruptFrame {
            path: self.path.clone(),
            index: self.next,
            reason: format!("at byte {at}: {reason}"),
        }
    }
}

/// Whether `line` is a frame header: `FRAME`, alone or followed by space-separated parameters.
fn is_frame_line(line: &[u8]) -> bool {
    line.starts_with(b"FRAME") && line.get(5).is_none_or(|&c| c == b' ')
}

/// One `\n`-terminated line without the newline; `None` at end of input before any byte; an
/// error for a line longer than [`MAX_LINE`] or cut short by the end of input.
fn read_line(input: &mut impl Read, path: &Path) -> Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(0) => {
                return Err(Error::NotAVideo {
                    path: path.to_path_buf(),
                    reason: format!("the y4m stream ends inside a header line ({} bytes)", line.len()),
                })
            }
            Ok(_) if byte[0] == b'\n' => return Ok(Some(line)),
            Ok(_) if line.len() >= MAX_LINE => {
                return Err(Error::NotAVideo {
                    path: path.to_path_buf(),
                    reason: format!("not a y4m stream: no newline in the first {MAX_LINE} bytes of a header"),
                })
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

/// Fills `buf` as far as the input goes; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Opens a y4m file: reads its header and walks its `FRAME` lines to count the frames (the
/// planes are skipped, not read). A frame cut short is an error naming it and its offset.
pub fn open_file(path: &Path) -> Result<(VideoInfo, Header)> {
    let file = std::fs::File::open(path).map_err(|e| Error::input(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = Reader::new(std::io::BufReader::new(file), path)?;
    let skip = r.header.frame_bytes() as u64;
    while r.frame_line()? {
        if r.offset + skip > len {
            return Err(r.cut_short((len - r.offset) as usize));
        }
        r.input
            .seek_relative(skip as i64)
            .map_err(|e| Error::io(path, e))?;
        r.offset += skip;
        r.next += 1;
    }
    if r.next == 0 {
        return Err(Error::NoFrames {
            path: path.to_path_buf(),
        });
    }
    Ok((info(path, &r.header, r.next), r.header))
}

/// What a y4m stream of `frames` frames (as many as are known) looks like to the pipeline.
pub fn info(path: &Path, h: &Header, frames: usize) -> VideoInfo {
    let chroma = match h.chroma {
        Chroma::C420 => "4:2:0",
        Chroma::C422 => "4:2:2",
        Chroma::C444 => "4:4:4",
        Chroma::Mono => "mono",
    };
    VideoInfo {
        path: path.to_path_buf(),
        kind: SourceKind::Y4m,
        frames,
        width: h.width,
        height: h.height,
        fps: h.fps,
        codec: format!("y4m {chroma}{}", if h.full_range { " full range" } else { "" }),
        frame_names: (0..frames).map(|i| format!("{i:05}")).collect(),
    }
}

/// The frames of a y4m file, in order.
pub struct FileFrames {
    reader: Reader<std::io::BufReader<std::fs::File>>,
}

impl FileFrames {
    /// Starts reading `path` from its first frame.
    pub fn new(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::input(path, e))?;
        Ok(FileFrames {
            reader: Reader::new(std::io::BufReader::with_capacity(1 << 20, file), path)?,
        })
    }
}

impl Iterator for FileFrames {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.reader.frames_read();
        self.reader
            .next_frame()
            .transpose()
            .map(|r| r.map(|image| Frame { index, image }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_defaults() {
        let h = Header::parse(b"YUV4MPEG2 W320 H240 F30000:1001 Ip A1:1 C422 XYSCSS=422 XCOLORRANGE=FULL")
            .unwrap();
        assert_eq!(
            (h.width, h.height, h.chroma, h.full_range),
            (320, 240, Chroma::C422, true)
        );
        assert!((h.fps.unwrap() - 29.97).abs() < 1e-3);
        let d = Header::parse(b"YUV4MPEG2 W3 H3").unwrap();
        assert_eq!(
            (d.chroma, d.fps, d.full_range, d.frame_bytes()),
            (Chroma::C420, None, false, 9 + 2 * 4)
        );
        assert_eq!(Header::parse(b"YUV4MPEG2 W3 H3 F0:0").unwrap().fps, None);
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        let cases: [(&[u8], &str); 7] = [
            (b"RIFF", "does not start"),
            (b"YUV4MPEG2 W10", "no W"),
            (b"YUV4MPEG2 W0 H10", "bad W0"),
            (b"YUV4MPEG2 W10 H10 C420p10", "not supported"),
            (b"YUV4MPEG2 W10 H10 F25", "bad frame rate"),
            (b"YUV4MPEG2 W10 H10 Q1", "unknown header field"),
            // found by fuzzing: a field starting with a multi-byte character
            ("YUV4MPEG2 W38 \u{8c3d}H30".as_bytes(), "not ASCII"),
        ];
        for (line, want) in cases {
            let e = Header::parse(line).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn a_frame_cut_short_names_frame_and_offset() {
        let mut s = b"YUV4MPEG2 W2 H2 C444\nFRAME\n".to_vec();
        s.extend([0u8; 12]);
        s.extend(b"FRAME\n\x01\x02");
        let mut r = Reader::new(&s[..], Path::new("-")).unwrap();
        assert!(r.next_frame().unwrap().is_some());
        let e = r.next_frame().unwrap_err().to_string();
        assert!(
            e.contains("frame 1") && e.contains("byte 45") && e.contains("2 of 12"),
            "{e}"
        );
        let mut g = Reader::new(&b"YUV4MPEG2 W2 H2 C444\nFRAMX\n"[..], Path::new("-")).unwrap();
        assert!(g
            .next_frame()
            .unwrap_err()
            .to_string()
            .contains("expected a FRAME line"));
    }

    #[test]
    fn a_file_counts_only_frames_it_can_read() {
        // found by fuzzing: `FRAMEN…` was counted as a frame by the file scan, then refused
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.y4m");
        let mut s = b"YUV4MPEG2 W2 H1 Cmono\nFRAME\n\x01\x02".to_vec();
        s.extend(b"FRAMEN\n\x01\x02");
        std::fs::write(&p, &s).unwrap();
        let e = open_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("frame 1") && e.contains("expected a FRAME line"),
            "{e}"
        );
    }
}
