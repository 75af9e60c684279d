//! The input side of a live run: a thread reads frames as they come (a y4m stream from stdin
//! or a FIFO, or any video played frame by frame) into a bounded queue. By default a full queue
//! blocks the reader, so the producer waits (lossless); with `drop`, a frame that arrives while
//! the queue is full is skipped and recorded. The window's frames are never dropped.

use crate::error::{Error, Result};
use crate::video::y4m;
use crate::video::{Frame, Video, VideoInfo};
use image::RgbImage;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a live run's frames come from.
pub enum Input {
    /// A y4m stream: stdin (`-`), a FIFO, or a y4m file read as a stream.
    Y4m(y4m::Reader<Box<dyn Read + Send>>),
    /// Any input the offline path reads, handed over frame by frame.
    Video(Box<Video>),
}

impl Input {
    /// Opens `path`: `-` is stdin and a FIFO is read as it is written (both y4m); anything
    /// else is opened as for an offline run. A y4m header is read here (it blocks until the
    /// producer writes it).
    pub fn open(path: &Path) -> Result<Input> {
        if let Some(stream) = open_stream(path)? {
            return Ok(Input::Y4m(y4m::Reader::new(stream, path)?));
        }
        Ok(Input::Video(Box::new(Video::open(path)?)))
    }

    /// What is known before the first frame (for a stream: no frame yet).
    pub fn info(&self) -> VideoInfo {
        match self {
            Input::Y4m(r) => y4m::info(r.path(), r.header(), 0),
            Input::Video(v) => v.info().clone(),
        }
    }
}

/// Whether `path` names a stream rather than a file: `-` (stdin) or a FIFO.
pub fn is_stream(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    path == Path::new("-") || std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// stdin for `-`, the opened FIFO for a FIFO, `None` for anything else.
fn open_stream(path: &Path) -> Result<Option<Box<dyn Read + Send>>> {
    if path == Path::new("-") {
        return Ok(Some(Box::new(std::io::stdin())));
    }
    if !is_stream(path) {
        return Ok(None);
    }
    let f = std::fs::File::open(path).map_err(|e| Error::input(path, e))?;
    Ok(Some(Box::new(f)))
}

/// What the reader thread saw, shared with the run.
#[derive(Debug, Default)]
pub struct FeedLog {
    /// Arrival time (seconds since the run's clock) of each frame not yet finished.
    pub arrived: BTreeMap<usize, f64>,
    /// Frames skipped because the queue was full (`--drop`).
    pub dropped: Vec<usize>,
    /// Frames read from the input.
    pub received: usize,
}

/// The receiving end of the reader thread.
pub struct Feed {
    /// Frames in arrival order; an error ends the stream.
    pub rx: Receiver<Result<Frame>>,
    /// What the reader saw.
    pub log: Arc<Mutex<FeedLog>>,
}

/// How the reader hands frames over.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Frames the queue holds.
    pub queue: usize,
    /// Frames never dropped at the start (the prompt stage's window).
    pub window: usize,
    /// Skip frames that arrive while the queue is full.
    pub drop: bool,
}

/// Starts the reader thread on `input`; arrival times count from `clock`.
pub fn start(input: Input, opts: FeedOptions, clock: Instant) -> Feed {
    let (tx, rx) = sync_channel(opts.queue.max(1));
    let log = Arc::new(Mutex::new(FeedLog::default()));
    let shared = log.clone();
    // not scoped: a reader blocked on a silent producer must not hold up an interrupted run
    std::thread::spawn(move || match input {
        Input::Y4m(mut r) => {
            let frames = std::iter::from_fn(move || r.next_frame().transpose());
            hand_over(frames, &tx, &shared, opts, clock)
        }
        Input::Video(v) => match v.frames() {
            Ok(frames) => hand_over(frames.map(|f| f.map(|f| f.image)), &tx, &shared, opts, clock),
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        },
    });
    Feed { rx, log }
}

/// Reads `frames` into `tx` until the input ends, fails, or the run stops listening.
fn hand_over(
    frames: impl Iterator<Item = Result<RgbImage>>,
    tx: &SyncSender<Result<Frame>>,
    log: &Mutex<FeedLog>,
    opts: FeedOptions,
    clock: Instant,
) {
    let lock = || log.lock().expect("the feed log is never poisoned");
    for (index, item) in frames.enumerate() {
        let at = clock.elapsed().as_secs_f64();
        let image = match item {
            Ok(image) => image,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        {
            let mut l = lock();
            l.received += 1;
            l.arrived.insert(index, at);
        }
        let frame = Ok(Frame { index, image });
        let sent = if opts.drop && index >= opts.window {
            match tx.try_send(frame) {
                Err(TrySendError::Full(_)) => {
                    let mut l = lock();
                    l.arrived.remove(&index);
                    l.dropped.push(index);
                    Ok(())
                }
                Err(TrySendError::Disconnected(_)) => Err(()),
                Ok(()) => Ok(()),
            }
        } else {
            tx.send(frame).map_err(|_| ())
        };
        if sent.is_err() {
            return;
        }
    }
}
