//! Progress bars for long work: shown on an interactive stderr, silent with `--quiet` or when
//! stderr is not a terminal (pipes, CI, batch jobs).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences (or re-enables) every progress bar made afterwards.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether bars are drawn at all.
pub fn enabled() -> bool {
    !QUIET.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

/// A bar over `len` items, or a running count when their number is unknown (a live stream).
pub fn bar_or_count(len: Option<u64>, what: &str) -> ProgressBar {
    if let Some(len) = len {
        return bar(len, what);
    }
    if !enabled() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::no_length();
    pb.set_style(ProgressStyle::with_template("{msg:>12} {pos} frames {per_sec}").expect("valid template"));
    pb.set_message(what.to_string());
    pb
}

/// A bar counting `len` items labelled `what`, hidden when progress is disabled.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !enabled() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}
