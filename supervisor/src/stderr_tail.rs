//! A child's stderr passed through to the supervisor's, keeping the line that says why the
//! child failed, so that `nvr run` giving up on a failing syncer can name the cause in one line
//! instead of only an exit status.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// The prefix of the one line `nvr-syncer` prints to stderr when it stops on an error.
const FATAL_PREFIX: &str = "nvr-syncer: ";

/// A line forwarded at most this long; the rest is cut (a child cannot grow our memory).
const MAX_LINE_BYTES: usize = 4096;

/// The reason kept so far, delivered once the child's stderr is closed.
pub struct StderrTail {
    done: Receiver<Option<String>>,
}

impl StderrTail {
    /// Forwards `stderr` to this process's stderr from a thread of its own until it ends.
    pub fn forward(stderr: impl Read + Send + 'static) -> std::io::Result<StderrTail> {
        let (tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("syncer-stderr".into())
            .spawn(move || {
                let _ = tx.send(pass_through(BufReader::new(stderr), &mut std::io::stderr()));
            })?;
        Ok(StderrTail { done })
    }

    /// Why the child failed, once its stderr has closed (waiting at most `wait` for that):
    /// its fatal line if it printed one, else its last error-level log line.
    pub fn reason(self, wait: Duration) -> Option<String> {
        self.done.recv_timeout(wait).ok().flatten()
    }
}

/// Copies lines from `input` to `output` until end of input; returns the reason line.
fn pass_through(mut input: impl BufRead, output: &mut impl Write) -> Option<String> {
    let mut fatal = None;
    let mut last_error = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input
            .by_ref()
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let _ = output.write_all(&buf);
        if buf.last() != Some(&b'\n') {
            let _ = output.write_all(b"\n");
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
        if line.starts_with(FATAL_PREFIX) {
            fatal = Some(line);
        } else if let Some((_, rest)) = line.split_once(" ERROR ") {
            last_error = Some(rest.to_owned());
        }
    }
    fatal.or(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(input: &str) -> (Option<String>, String) {
        let mut out = Vec::new();
        let r = pass_through(input.as_bytes(), &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_fatal_line_wins_and_everything_is_forwarded() {
        let input = "2026-12-04T00:00:00Z  INFO nvr-syncer: recovery done\n\
                     2026-12-04T00:00:01Z ERROR nvr-syncer: failed error=x\n\
                     nvr-syncer: /d: the sample dir was removed\n";
        let (r, out) = reason(input);
        assert_eq!(
            r.as_deref(),
            Some("nvr-syncer: /d: the sample dir was removed")
        );
        assert_eq!(out, input);
    }

    #[test]
    fn without_a_fatal_line_the_last_error_is_kept() {
        let (r, _) =
            reason("t ERROR a: first\nt  WARN b: not this\nt ERROR c: second\nthread panicked\n");
        assert_eq!(r.as_deref(), Some("c: second"));
        assert_eq!(reason("t  INFO a: fine\n").0, None);
    }

    #[test]
    fn a_long_line_is_cut_and_an_unterminated_one_ended() {
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 10);
        let (_, out) = reason(&long);
        assert_eq!(out.lines().count(), 3);
        assert!(out.ends_with('\n'));
        assert!(out.lines().all(|l| l.len() <= MAX_LINE_BYTES));
    }
}
