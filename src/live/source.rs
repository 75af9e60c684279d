//! A live stream as a [`FrameSource`]: the window's frames (what the prompt stage samples),
//! then each later frame as the reader hands it over. The stream ends at the input's end, at
//! an input error (kept for the summary; the frames before it are segmented), or at Ctrl-C.

use super::interrupted;
use crate::error::{Error, Result};
use crate::video::{Frame, FrameIter, FrameSource, VideoInfo};
use image::RgbImage;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

/// How a live stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The input ended (EOF).
    Complete,
    /// Ctrl-C.
    Interrupted,
    /// The input failed; the message names the frame and byte offset.
    InputError(String),
}

/// How often a waiting reader looks at the interrupt flag.
const POLL: Duration = Duration::from_millis(50);

/// Receives the next frame, or how the stream ended.
pub fn next_frame(rx: &Receiver<Result<Frame>>) -> std::result::Result<Frame, Ending> {
    loop {
        if interrupted() {
            return Err(Ending::Interrupted);
        }
        match rx.recv_timeout(POLL) {
            Ok(Ok(f)) => return Ok(f),
            Ok(Err(e)) => return Err(Ending::InputError(e.to_string())),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err(Ending::Complete),
        }
    }
}

/// The window plus the frames still to come.
pub struct LiveSource {
    info: VideoInfo,
    window: Vec<Frame>,
    rest: Mutex<Option<Receiver<Result<Frame>>>>,
    ending: Mutex<Option<Ending>>,
}

impl LiveSource {
    /// A source whose known frames are `window` (indices 0..n, never dropped) and whose later
    /// frames come from `rx`; `ended` is how the stream ended already while the window filled.
    pub fn new(
        mut info: VideoInfo,
        window: Vec<Frame>,
        rx: Receiver<Result<Frame>>,
        ended: Option<Ending>,
    ) -> Self {
        info.frames = window.len();
        info.frame_names = (0..window.len()).map(|i| format!("{i:05}")).collect();
        LiveSource {
            info,
            window,
            rest: Mutex::new(Some(rx)),
            ending: Mutex::new(ended),
        }
    }

    /// How the stream ended (`None` while it has not).
    pub fn ending(&self) -> Option<Ending> {
        self.ending.lock().expect("never poisoned").clone()
    }
}

impl FrameSource for LiveSource {
    fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn is_live(&self) -> bool {
        true
    }

    fn frames(&self) -> Result<FrameIter<'_>> {
        let rx = self
            .rest
            .lock()
            .expect("never poisoned")
            .take()
            .ok_or_else(|| Error::Internal("a live stream can be read only once".into()))?;
        let mut known = self.window.iter();
        // the input may have ended already while the window filled
        let mut over = self.ending().is_some();
        let next = move || -> Option<Result<Frame>> {
            let got = match known.next() {
                // Ctrl-C stops the buffered window frames too, not only those still to come
                Some(_) if interrupted() => Err(Ending::Interrupted),
                Some(f) => return Some(Ok(f.clone())),
                None if over => return None,
                None => next_frame(&rx),
            };
            match got {
                Ok(f) => Some(Ok(f)),
                Err(end) => {
                    over = true;
                    known = self.window[..0].iter();
                    let mut slot = self.ending.lock().expect("never poisoned");
                    if slot.is_none() || end == Ending::Interrupted {
                        *slot = Some(end);
                    }
                    None
                }
            }
        };
        Ok(Box::new(std::iter::from_fn(next)))
    }

    fn visit(&self, indices: &[usize], f: &mut dyn FnMut(usize, &RgbImage) -> Result<()>) -> Result<()> {
        let mut wanted = indices.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        for i in wanted {
            let frame = self
                .window
                .get(i)
                .ok_or_else(|| Error::Internal(format!("frame {i} is not among the window's frames")))?;
            f(i, &frame.image)?;
        }
        Ok(())
    }
}
