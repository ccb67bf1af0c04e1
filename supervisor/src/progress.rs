//! The progress line of long-running commands (`check --hash`, `export`) on stderr: rewritten
//! in place on a terminal, otherwise one line per tenth of the work so logs stay short.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::size::Size;

/// Shortest time between two redraws on a terminal.
const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct ProgressLine {
    /// What is being done, e.g. "hashing".
    verb: &'static str,
    enabled: bool,
    tty: bool,
    start: Instant,
    last_draw: Option<Instant>,
    /// Non-terminal: the next tenth (0..=10) to print a line at.
    next_tenth: u64,
}

impl ProgressLine {
    pub fn new(verb: &'static str, enabled: bool) -> Self {
        ProgressLine {
            verb,
            enabled,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            last_draw: None,
            next_tenth: 0,
        }
    }

    /// Shows `done_bytes` of `total_bytes`, followed by `detail` (e.g. ", 3/13 files").
    pub fn update(&mut self, done_bytes: u64, total_bytes: u64, detail: &str) {
        if !self.enabled || total_bytes == 0 {
            return;
        }
        if self.tty {
            let now = Instant::now();
            let done = done_bytes >= total_bytes;
            if !done && self.last_draw.is_some_and(|t| now - t < REDRAW_INTERVAL) {
                return;
            }
            self.last_draw = Some(now);
            eprint!("\r{}\x1b[K", self.text(done_bytes, total_bytes, detail));
        } else {
            let tenth = done_bytes * 10 / total_bytes;
            if tenth < self.next_tenth {
                return;
            }
            self.next_tenth = tenth + 1;
            self.last_draw = Some(Instant::now());
            eprintln!("{}", self.text(done_bytes, total_bytes, detail));
        }
    }

    fn text(&self, done_bytes: u64, total_bytes: u64, detail: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            format!("{}/s", Size((done_bytes as f64 / secs) as u64))
        } else {
            "-".to_owned()
        };
        format!(
            "{}: {} / {} ({}%), {rate}{detail}",
            self.verb,
            Size(done_bytes),
            Size(total_bytes),
            done_bytes * 100 / total_bytes
        )
    }

    /// Ends the line on a terminal.
    pub fn finish(&mut self) {
        if self.tty && self.last_draw.is_some() {
            eprintln!();
        }
    }
}
