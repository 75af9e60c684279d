//! Video input: an H.264 mp4 (default build), a y4m file, a folder of frames, a single image,
//! or any FFmpeg-readable file (`--features ffmpeg`). Frames are RGB u8 and decoded lazily, one at
//! a time, so memory does not grow with the length of the video.

mod container;
#[cfg(feature = "ffmpeg")]
mod ffmpeg;
mod files;
mod h264;
mod mp4;
mod still;
pub mod y4m;
mod yuv;

use crate::error::{Error, Result};
use image::RgbImage;
use std::path::{Path, PathBuf};

pub use files::natural_cmp;

/// What kind of input a [`Video`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An mp4 with an H.264 video track, decoded by the built-in OpenH264.
    Mp4,
    /// A folder of jpg/png frames, natural-sorted by file name.
    Frames,
    /// A single image: a one-frame video.
    Image,
    /// Any container FFmpeg reads (video-rs, `--features ffmpeg`).
    Ffmpeg,
    /// A YUV4MPEG2 file or stream.
    Y4m,
}

/// What is known about a video before decoding it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VideoInfo {
    /// The input path.
    pub path: PathBuf,
    /// Which reader handles it.
    pub kind: SourceKind,
    /// Number of frames.
    pub frames: usize,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second, when the container says.
    pub fps: Option<f64>,
    /// Codec (or image format) name.
    pub codec: String,
    /// Output name of each frame (file stem for frame folders, `00000`… for videos).
    #[serde(skip)]
    pub frame_names: Vec<String>,
}

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Zero-based index in the video.
    pub index: usize,
    /// RGB pixels.
    pub image: RgbImage,
}

/// An opened video; frames are decoded on demand by [`Video::frames`].
#[derive(Debug)]
pub struct Video {
    info: VideoInfo,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Files(Vec<PathBuf>),
    Mp4(mp4::Mp4Source),
    Y4m(PathBuf),
    #[cfg(feature = "ffmpeg")]
    Ffmpeg,
}

/// Streaming iterator over the frames of a [`Video`], in order.
pub struct Frames<'a> {
    inner: FramesInner<'a>,
}

enum FramesInner<'a> {
    Files {
        video: &'a Video,
        paths: &'a [PathBuf],
        next: usize,
    },
    Mp4(Box<mp4::Mp4Frames>),
    Y4m(Box<y4m::FileFrames>),
    #[cfg(feature = "ffmpeg")]
    Ffmpeg(Box<ffmpeg::FfmpegFrames>),
}

impl Iterator for Frames<'_> {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            FramesInner::Files { video, paths, next } => {
                let i = *next;
                let path = paths.get(i)?;
                *next += 1;
                Some(files::read_frame(
                    path,
                    i,
                    video.info.width,
                    video.info.height,
                    &paths[0],
                ))
            }
            FramesInner::Mp4(m) => m.next(),
            FramesInner::Y4m(y) => y.next(),
            #[cfg(feature = "ffmpeg")]
            FramesInner::Ffmpeg(f) => f.next(),
        }
    }
}

impl Video {
    /// Opens `path`: a folder of frames, an image, or a video file. Only headers are read.
    pub fn open(path: impl AsRef<Path>) -> Result<Video> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_path_buf(),
            },
            _ => Error::io(path, e),
        })?;
        if meta.is_dir() {
            let (info, paths) = files::open_folder(path)?;
            return Ok(Video {
                info,
                backend: Backend::Files(paths),
            });
        }
        if !meta.is_file() {
            // a FIFO or device would block or never end when read as a file
            return Err(Error::NotAVideo {
                path: path.to_path_buf(),
                reason: "not a regular file (a FIFO, socket or device)".into(),
            });
        }
        match container::sniff(path)? {
            container::Sniffed::Image => {
                let info = files::open_image(path)?;
                Ok(Video {
                    info,
                    backend: Backend::Files(vec![path.to_path_buf()]),
                })
            }
            container::Sniffed::Mp4H264 => match mp4::open(path) {
                Ok((info, src)) => Ok(Video {
                    info,
                    backend: Backend::Mp4(src),
                }),
                // a stream the built-in decoder refuses goes to FFmpeg when the build has it
                Err(Error::UnsupportedCodec { what, .. }) if cfg!(feature = "ffmpeg") => {
                    Self::open_other(path, what)
                }
                Err(e) => Err(e),
            },
            container::Sniffed::Y4m => {
                let (info, _) = y4m::open_file(path)?;
                Ok(Video {
                    info,
                    backend: Backend::Y4m(path.to_path_buf()),
                })
            }
            container::Sniffed::OtherVideo(what) => Self::open_other(path, what),
            container::Sniffed::Corrupt(reason) => Err(Error::CorruptVideo {
                path: path.to_path_buf(),
                reason,
            }),
            container::Sniffed::Unknown(reason) => Self::open_unknown(path, reason),
        }
    }

    /// A video made of these frame files, in this order (a dataset's `frames` list); `label`
    /// names it in messages. Only headers are read.
    pub fn from_files(label: &Path, paths: Vec<PathBuf>) -> Result<Video> {
        let (info, paths) = files::open_files(label, paths)?;
        Ok(Video {
            info,
            backend: Backend::Files(paths),
        })
    }

    #[cfg(not(feature = "ffmpeg"))]
    fn open_other(path: &Path, what: String) -> Result<Video> {
        Err(Error::UnsupportedCodec {
            path: path.to_path_buf(),
            what,
            feature: "ffmpeg",
        })
    }

    #[cfg(feature = "ffmpeg")]
    fn open_other(path: &Path, _what: String) -> Result<Video> {
        let info = ffmpeg::open(path)?;
        Ok(Video {
            info,
            backend: Backend::Ffmpeg,
        })
    }

    #[cfg(not(feature = "ffmpeg"))]
    fn open_unknown(path: &Path, reason: String) -> Result<Video> {
        Err(Error::NotAVideo {
            path: path.to_path_buf(),
            reason,
        })
    }

    #[cfg(feature = "ffmpeg")]
    fn open_unknown(path: &Path, reason: String) -> Result<Video> {
        ffmpeg::open(path)
            .map(|info| Video {
                info,
                backend: Backend::Ffmpeg,
            })
            .map_err(|_| Error::NotAVideo {
                path: path.to_path_buf(),
                reason,
            })
    }

    /// The same video, named `path` in summaries (a stream read into a temporary file).
    pub fn labelled(mut self, path: &Path) -> Video {
        #[cfg(feature = "ffmpeg")]
        if matches!(self.backend, Backend::Ffmpeg) {
            return self; // FFmpeg reopens the file by this path
        }
        self.info.path = path.to_path_buf();
        self
    }

    /// What the headers say about the video.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.info.frames
    }

    /// True when the video has no frame (never for an opened video).
    pub fn is_empty(&self) -> bool {
        self.info.frames == 0
    }

    /// Decodes every frame in order, one at a time.
    pub fn frames(&self) -> Result<Frames<'_>> {
        let inner = match &self.backend {
            Backend::Files(paths) => FramesInner::Files {
                video: self,
                paths,
                next: 0,
            },
            Backend::Mp4(src) => FramesInner::Mp4(Box::new(src.frames(&self.info)?)),
            Backend::Y4m(p) => FramesInner::Y4m(Box::new(y4m::FileFrames::new(p)?)),
            #[cfg(feature = "ffmpeg")]
            Backend::Ffmpeg => FramesInner::Ffmpeg(Box::new(ffmpeg::FfmpegFrames::new(&self.info)?)),
        };
        Ok(Frames { inner })
    }

    /// Calls `f(index, frame)` once for each distinct index in `indices` (ascending), decoding
    /// the video once and keeping only the current frame in memory.
    pub fn visit(&self, indices: &[usize], mut f: impl FnMut(usize, &RgbImage) -> Result<()>) -> Result<()> {
        let mut wanted: Vec<usize> = indices.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if let Some(&last) = wanted.last() {
            if last >= self.info.frames {
                return Err(Error::Internal(format!(
                    "{}: frame {last} requested but the video has {} frames",
                    self.info.path.display(),
                    self.info.frames
                )));
            }
        }
        if let Backend::Files(paths) = &self.backend {
            for &i in &wanted {
                let frame = files::read_frame(&paths[i], i, self.info.width, self.info.height, &paths[0])?;
                f(i, &frame.image)?;
            }
            return Ok(());
        }
        let mut next = wanted.iter().peekable();
        for frame in self.frames()? {
            let frame = frame?;
            match next.peek() {
                Some(&&i) if i == frame.index => {
                    f(i, &frame.image)?;
                    next.next();
                }
                None => break,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Frames in order from anything the pipeline reads: a [`Video`] (every frame known before the
/// first is used) or a live stream (`crate::live`), whose later frames arrive while earlier
/// ones are segmented.
pub trait FrameSource: Sync {
    /// What is known of the input: size, rate, and the frames known now (for a live stream the
    /// buffered window, which the prompt stage samples).
    fn info(&self) -> &VideoInfo;
    /// Whether more frames than `info().frames` may follow (their number is unknown).
    fn is_live(&self) -> bool {
        false
    }
    /// Every frame in order; for a live stream the known ones, then each as it arrives.
    fn frames(&self) -> Result<FrameIter<'_>>;
    /// Calls `f(index, frame)` once per distinct index in `indices` (ascending), each among the
    /// known frames.
    fn visit(&self, indices: &[usize], f: &mut dyn FnMut(usize, &RgbImage) -> Result<()>) -> Result<()>;
}

/// The frames of a [`FrameSource`], in order.
pub type FrameIter<'a> = Box<dyn Iterator<Item = Result<Frame>> + 'a>;

impl FrameSource for Video {
    fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn frames(&self) -> Result<FrameIter<'_>> {
        Ok(Box::new(Video::frames(self)?))
    }

    fn visit(&self, indices: &[usize], f: &mut dyn FnMut(usize, &RgbImage) -> Result<()>) -> Result<()> {
        Video::visit(self, indices, f)
    }
}

impl VideoInfo {
    /// The output name of frame `index`: the frame file's stem, or its number (`00042`) for
    /// videos and for frames of a stream beyond those known when it was opened.
    pub fn frame_name(&self, index: usize) -> String {
        match self.frame_names.get(index) {
            Some(n) => n.clone(),
            None => format!("{index:05}"),
        }
    }
}

/// Error for a decoder that produced a different number of frames than its container declared.
fn frame_count_mismatch(path: &Path, declared: usize, decoded: usize) -> Error {
    Error::CorruptFrame {
        path: path.to_path_buf(),
        index: decoded,
        reason: format!("the container declares {declared} frames but only {decoded} could be decoded"),
    }
}
