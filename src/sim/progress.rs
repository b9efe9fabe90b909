//! A progress bar for long simulations, on stderr, shown only when stderr is a terminal
//! and the run has lasted more than a second (a short run prints nothing), and never
//! when asked to be quiet. Built on indicatif; safe to update from worker threads.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a run must last before the bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// Counts finished paths and draws a bar once the run is long enough.
#[derive(Debug)]
pub struct PathProgress {
    bar: ProgressBar,
    start: Instant,
    enabled: bool,
    shown: AtomicBool,
}

impl PathProgress {
    /// A bar over `total` paths on stderr: inert when `quiet` or when stderr is not a
    /// terminal.
    pub fn stderr(total: u64, quiet: bool) -> PathProgress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} paths, ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        PathProgress {
            bar,
            start: Instant::now(),
            enabled: !quiet && std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        }
    }

    /// `n` more paths are done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        if self.enabled
            && self.start.elapsed() >= SHOW_AFTER
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Removes the bar (if it was shown).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
