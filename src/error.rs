//! Typed errors of the library: callers branch on the variant, the CLI maps them to exit codes.

use std::path::{Path, PathBuf};

/// Everything that can go wrong inside the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input path does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// The input exists but is neither a video, an image nor a folder of frames.
    #[error("{}: not a video, an image or a folder of frames ({reason})", path.display())]
    NotAVideo {
        /// The offending input.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// The container or codec needs a feature this build lacks.
    #[error("{}: {what} is not supported by this build; rebuild with `--features {feature}` to read it", path.display())]
    UnsupportedCodec {
        /// The offending input.
        path: PathBuf,
        /// The container/codec found (e.g. "H.265 (hvc1) in mp4").
        what: String,
        /// The cargo feature that adds support.
        feature: &'static str,
    },
    /// A video file whose structure is damaged or cut short.
    #[error("{}: corrupt or truncated video file: {reason}", path.display())]
    CorruptVideo {
        /// The offending input.
        path: PathBuf,
        /// What is wrong, where.
        reason: String,
    },
    /// The input holds no frame at all.
    #[error("{}: the video has zero frames", path.display())]
    NoFrames {
        /// The empty input.
        path: PathBuf,
    },
    /// Frames of one video differ in size (the reference assumes one size per video).
    #[error("{}: frame size {found_w}x{found_h} differs from {expected_w}x{expected_h} of {}", path.display(), first.display())]
    MixedFrameSizes {
        /// The first frame whose size differs.
        path: PathBuf,
        /// The frame the size was taken from.
        first: PathBuf,
        /// Width of `first`.
        expected_w: u32,
        /// Height of `first`.
        expected_h: u32,
        /// Width of `path`.
        found_w: u32,
        /// Height of `path`.
        found_h: u32,
    },
    /// A frame could not be decoded.
    #[error("{}: frame {index} could not be decoded: {reason}", path.display())]
    CorruptFrame {
        /// The file holding the frame (the frame file itself for folders).
        path: PathBuf,
        /// Zero-based frame index.
        index: usize,
        /// Decoder message.
        reason: String,
    },
    /// No weight files where a checkpoint was expected.
    #[error("{}: no weights found (expected {expected})", path.display())]
    NoWeights {
        /// The file or folder searched.
        path: PathBuf,
        /// What was looked for.
        expected: String,
    },
    /// A file a checkpoint needs is absent.
    #[error("{}: missing ({what})", path.display())]
    MissingFile {
        /// Where the file was expected.
        path: PathBuf,
        /// What it is and how to get it.
        what: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{file}: tensor `{tensor}` is missing")]
    MissingTensor {
        /// The checkpoint file(s).
        file: String,
        /// Full tensor name.
        tensor: String,
    },
    /// A tensor has another shape than the model expects.
    #[error("{file}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The file holding the tensor.
        file: String,
        /// Full tensor name.
        tensor: String,
        /// Shape the model needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// The checkpoint's files disagree with each other or with what the model supports
    /// (config.json, tokenizer, tensor layout); the message names the file.
    #[error("{0}")]
    Checkpoint(String),
    /// A benchmark dataset's files are malformed or inconsistent; the message names the file.
    #[error("{0}")]
    Dataset(String),
    /// A bad argument, option combination or input the user gave (prompt, output folder, job,
    /// mask, RLE string): what is wrong and how to fix it.
    #[error("{0}")]
    Usage(String),
    /// A model computation failed; candle's error is the source.
    #[error("model computation failed")]
    Candle(#[from] candle_core::Error),
    /// An I/O failure while reading or writing `path`. The OS message is part of the text (and
    /// deliberately not an error `source`, so that a cause chain prints it once).
    #[error("{}: {err}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },
    /// Any other runtime failure (encoder, serialization, jobs that failed, ...).
    #[error("{0}")]
    Runtime(String),
    /// Ctrl-C stopped a live run; what was finished is written (exit 130, as a shell reports
    /// SIGINT).
    #[error("interrupted (Ctrl-C)")]
    Interrupted,
    /// A broken internal invariant: a bug in videolisa, never a problem with the user's input.
    #[error("internal error (a bug in videolisa): {0}")]
    Internal(String),
}

impl Error {
    /// Process exit code for this error: 2 for bad usage or input, 1 for runtime failures,
    /// 130 for Ctrl-C.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted => 130,
            Error::Io { .. } | Error::Runtime(_) | Error::Candle(_) | Error::Internal(_) => 1,
            _ => 2,
        }
    }

    /// The same error naming the input `to` where it named `from` (a stream read into a
    /// temporary file is reported under the name the user gave).
    pub fn relabel(mut self, from: &Path, to: &Path) -> Self {
        match &mut self {
            Error::NotFound { path }
            | Error::NotAVideo { path, .. }
            | Error::UnsupportedCodec { path, .. }
            | Error::CorruptVideo { path, .. }
            | Error::NoFrames { path }
            | Error::CorruptFrame { path, .. }
            | Error::Io { path, .. }
                if path == from =>
            {
                *path = to.to_path_buf();
            }
            _ => {}
        }
        self
    }

    /// Wraps an `std::io::Error` with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }

    /// An I/O failure on a path the user gave (an input, the output folder): a missing path is
    /// [`Error::NotFound`]; a folder where a file belongs (or the reverse), text that is not
    /// UTF-8, or a place the user may not write are bad input; anything else stays an I/O
    /// failure.
    pub fn input(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let path = path.into();
        let why = match err.kind() {
            K::NotFound => return Error::NotFound { path },
            K::IsADirectory => "is a folder, not a file".to_string(),
            K::NotADirectory | K::AlreadyExists => "is (or lies under) a file, not a folder".to_string(),
            K::InvalidData => "is not UTF-8 text".to_string(),
            K::PermissionDenied | K::ReadOnlyFilesystem => format!("cannot be written here ({err})"),
            _ => return Error::Io { path, err },
        };
        Error::Usage(format!("{}: {why}", path.display()))
    }

    /// The message with its causes, `: `-separated (for logs that hold one line per failure).
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text += &format!(": {c}");
            cause = c.source();
        }
        text
    }
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_errors_exit_2_and_ours_exit_1_with_their_causes() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::Checkpoint("x".into()).exit_code(), 2);
        assert_eq!(Error::Dataset("x".into()).exit_code(), 2);
        assert_eq!(Error::Internal("x".into()).exit_code(), 1);
        let e: Error = candle_core::Error::Msg("shape mismatch".into()).into();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "model computation failed");
        assert_eq!(e.report(), "model computation failed: shape mismatch");
    }
}
