//! Progress of a long apply on a terminal: one line rewritten in place on stderr, at most four
//! times a second. Silent when stderr is not a terminal (logs, services) or the work is small.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Below this many steps a phase is quick enough to need no progress line.
const MIN_STEPS: usize = 50;
const EVERY: Duration = Duration::from_millis(250);

pub struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    last: Option<Instant>,
    enabled: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: usize) -> Progress {
        Progress {
            label,
            total,
            done: 0,
            last: None,
            enabled: total >= MIN_STEPS && std::io::stderr().is_terminal(),
        }
    }

    pub fn tick(&mut self) {
        self.done += 1;
        if !self.enabled {
            return;
        }
        let due = self.last.is_none_or(|t| t.elapsed() >= EVERY);
        if due || self.done == self.total {
            self.last = Some(Instant::now());
            let pct = self.done * 100 / self.total.max(1);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{}: {}/{} ({pct}%)",
                self.label, self.done, self.total
            );
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_stays_quiet_off_a_terminal() {
        // Test runs capture stderr, so the line is disabled; the count still advances.
        let mut p = Progress::new("creating", 100);
        for _ in 0..100 {
            p.tick();
        }
        assert_eq!(p.done, 100);
        assert!(!Progress::new("x", 10).enabled, "small phases never print");
    }
}
