//! A small progress bar for the terminal (no dependency): redraws one line on a terminal,
//! prints a line every 10% otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Receives progress of a long operation (bytes of a download, steps of a sampler).
pub trait Progress {
    /// A new task begins; `total` when known, `done` already finished (resumed bytes).
    fn start(&mut self, label: &str, total: Option<u64>, done: u64);
    /// `done` units are finished so far.
    fn update(&mut self, done: u64);
    /// The task ended (successfully or not).
    fn finish(&mut self);
}

/// Discards every report.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: Option<u64>, _: u64) {}
    fn update(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// Formats a byte count as `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A stderr progress bar; `bytes` chooses byte units (downloads) or plain counts (steps).
pub struct ProgressBar {
    label: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    start_done: u64,
    last_draw: Option<Instant>,
    last_decile: u64,
    tty: bool,
    bytes: bool,
}

impl ProgressBar {
    /// A bar for byte transfers.
    pub fn bytes() -> Self {
        Self::new(true)
    }
    /// A bar for counted steps.
    pub fn steps() -> Self {
        Self::new(false)
    }
    fn new(bytes: bool) -> Self {
        ProgressBar {
            label: String::new(),
            total: None,
            done: 0,
            started: Instant::now(),
            start_done: 0,
            last_draw: None,
            last_decile: 0,
            tty: std::io::stderr().is_terminal(),
            bytes,
        }
    }

    fn amount(&self, n: u64) -> String {
        if self.bytes {
            human_bytes(n)
        } else {
            n.to_string()
        }
    }

    /// The text of the bar line (without carriage return).
    pub fn render(&self) -> String {
        let rate = {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            (self.done.saturating_sub(self.start_done)) as f64 / secs
        };
        match self.total {
            Some(t) if t > 0 => {
                let frac = (self.done as f64 / t as f64).clamp(0.0, 1.0);
                let width = 30;
                let filled = (frac * width as f64).round() as usize;
                let mut s = format!(
                    "{} [{}{}] {:>3.0}% {}/{}",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    frac * 100.0,
                    self.amount(self.done),
                    self.amount(t)
                );
                if self.bytes {
                    s.push_str(&format!(" {}/s", human_bytes(rate as u64)));
                    if rate > 0.0 && self.done < t {
                        let eta = ((t - self.done) as f64 / rate) as u64;
                        s.push_str(&format!(" eta {}:{:02}", eta / 60, eta % 60));
                    }
                }
                s
            }
            _ => format!("{} {}", self.label, self.amount(self.done)),
        }
    }

    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if self.tty {
            if !force && self.last_draw.is_some_and(|t| now - t < Duration::from_millis(100)) {
                return;
            }
            self.last_draw = Some(now);
            let mut e = std::io::stderr();
            let _ = write!(e, "\r{}\x1b[K", self.render());
            let _ = e.flush();
        } else {
            let decile = match self.total {
                Some(t) if t > 0 => self.done.saturating_mul(10) / t,
                _ => 0,
            };
            if force || decile > self.last_decile {
                self.last_decile = decile;
                eprintln!("{}", self.render());
            }
        }
    }
}

impl Progress for ProgressBar {
    fn start(&mut self, label: &str, total: Option<u64>, done: u64) {
        self.label = label.to_string();
        self.total = total;
        self.done = done;
        self.start_done = done;
        self.started = Instant::now();
        self.last_draw = None;
        self.last_decile = match total {
            Some(t) if t > 0 => done.saturating_mul(10) / t,
            _ => 0,
        };
        self.draw(true);
    }
    fn update(&mut self, done: u64) {
        self.done = done;
        self.draw(false);
    }
    fn finish(&mut self) {
        if self.tty {
            self.draw(true);
            eprintln!();
        } else if self.total.is_some_and(|t| self.done * 10 / t.max(1) > self.last_decile) || self.total.is_none() {
            self.draw(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bars() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        let mut b = ProgressBar::steps();
        b.tty = false;
        b.label = "KSampler".into();
        b.total = Some(20);
        b.done = 10;
        assert!(b.render().starts_with("KSampler [###############---------------]  50% 10/20"), "{}", b.render());
    }
}
