//! Live and piped video (`segment --online`): the prompt stage waits for the first `window`
//! frames, samples them exactly as the offline pipeline samples a video of that length, computes
//! each prompt's `[SEG]` embedding once, then the mask stage (SAM on every frame, or XMem++ seeded
//! by the window's dense frames) segments the window and every later frame as it arrives. Masks
//! are written in frame order as soon as they exist; `--stream` hands each frame to stdout too.
//!
//! The parts: [`feed`] (the reader thread and its bounded queue), [`source`] (the stream as a
//! frame source), [`stream`] (per-frame output and latency).

pub mod feed;
pub mod source;
pub mod stream;

use crate::error::{Error, Result};
use crate::model::videolisa::VideoLisa;
use crate::segment::summary::OnlineSummary;
use crate::segment::{segment_prepared, PromptSpec, SegmentOptions, SegmentSummary};
use feed::{Feed, FeedLog, FeedOptions, Input};
use source::{next_frame, Ending, LiveSource};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use stream::{LiveOutput, StreamFormat};

pub use feed::is_stream;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C was pressed during a live run.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Makes the first Ctrl-C end a live run cleanly (what is finished is flushed, the summary says
/// `interrupted`); a second one exits at once with 130.
pub fn catch_interrupts() -> Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupted: finishing the frames in hand (Ctrl-C again to quit at once)");
    })
    .map_err(|e| Error::Runtime(format!("cannot catch Ctrl-C: {e}")))
}

/// How a live run reads and reports.
#[derive(Debug, Clone)]
pub struct OnlineOptions {
    /// Frames the prompt stage waits for and samples.
    pub window: usize,
    /// Frames the input queue holds.
    pub queue: usize,
    /// Skip frames that arrive while the queue is full (live sources) instead of blocking.
    pub drop: bool,
    /// What goes to stdout per frame.
    pub stream: Option<StreamFormat>,
}

/// Segments `input` as it arrives, for each of `prompts`, into `out`; the summary's `online`
/// says how the input ended.
pub fn segment_online(
    model: &VideoLisa,
    input: Input,
    prompts: &[PromptSpec],
    out: &Path,
    opts: &SegmentOptions,
    online: &OnlineOptions,
) -> Result<SegmentSummary> {
    let clock = Instant::now();
    let info = input.info();
    let feed_opts = FeedOptions {
        queue: online.queue,
        window: online.window,
        drop: online.drop,
    };
    let Feed { rx, log } = feed::start(input, feed_opts, clock);
    let (window, ended) = fill_window(&rx, online.window);
    if window.is_empty() {
        return Err(match ended {
            Some(Ending::InputError(e)) => Error::Usage(e),
            Some(Ending::Interrupted) => Error::Interrupted,
            _ => Error::NoFrames { path: info.path },
        });
    }
    let n = window.len();
    let fps = crate::output::overlay_fps(info.fps);
    let output = LiveOutput::new(
        online.stream,
        log.clone(),
        clock,
        n,
        (info.width, info.height),
        fps,
    );
    let observer = Arc::new(Mutex::new(output));
    let source = LiveSource::new(info, window, rx, ended);
    let run_opts = SegmentOptions {
        observer: Some(observer.clone()),
        write_summary: false,
        ..opts.clone()
    };
    let mut summary = segment_prepared(model, &source, None, prompts, Some(out), &run_opts)?.summary;
    let ending = source.ending().unwrap_or(Ending::Complete);
    let mut online_summary = report(n, &log.lock().expect("never poisoned"), summary.frames, ending);
    let output = observer.lock().expect("never poisoned");
    summary.warnings.extend(output.report(&mut online_summary));
    summary.online = Some(online_summary);
    if opts.write_summary {
        crate::json::write_json(&out.join("summary.json"), &summary)?;
    }
    Ok(summary)
}

/// What the feed saw and how the stream ended, for `segmented` frames after a window of `n`.
fn report(n: usize, log: &FeedLog, segmented: usize, ending: Ending) -> OnlineSummary {
    let (status, error) = match ending {
        Ending::Complete => ("complete", None),
        Ending::Interrupted => ("interrupted", None),
        Ending::InputError(e) => ("input_error", Some(e)),
    };
    OnlineSummary {
        status: status.into(),
        error,
        window: n,
        received: log.received,
        segmented,
        dropped: log.dropped.clone(),
        unprocessed: log.received.saturating_sub(segmented + log.dropped.len()),
        ..OnlineSummary::default()
    }
}

/// Receives the first `n` frames (fewer when the input ends first); how it ended, if it did.
fn fill_window(
    rx: &std::sync::mpsc::Receiver<Result<crate::video::Frame>>,
    n: usize,
) -> (Vec<crate::video::Frame>, Option<Ending>) {
    let mut window = Vec::with_capacity(n);
    while window.len() < n {
        match next_frame(rx) {
            Ok(f) => window.push(f),
            Err(end) => return (window, Some(end)),
        }
    }
    (window, None)
}
