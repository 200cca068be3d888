//! Progress people can read: a bar with events/s and ETA on a terminal, plain progress lines
//! otherwise. Shared by the commands that fold the whole log.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress on the terminal: a bar with events/s and ETA; when stderr is not a terminal,
/// a log line every 2 s instead.
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    completed: bool,
}

impl Progress {
    pub fn new(label: impl Into<String>) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label.clone());
            bar
        });
        Self {
            label,
            bar,
            last_line: None,
            completed: false,
        }
    }

    /// `done` of `total` events; `rate` in events/s when the work reports its own (else the
    /// bar measures it; log lines then leave it out).
    pub fn show(&mut self, done: i64, total: i64, rate: Option<(f64, Option<f64>)>) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(0) as u64);
            bar.set_position(done.max(0) as u64);
            return;
        }
        // Every 2 s, and once more when all is done.
        let complete = total > 0 && done >= total;
        if complete && self.completed {
            return;
        }
        self.completed = complete;
        if !complete
            && self
                .last_line
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let percent = if total > 0 {
            (done as f64 * 100.0 / total as f64).min(100.0)
        } else {
            0.0
        };
        tracing::info!(
            task = %self.label,
            done,
            total,
            percent = percent.round(),
            events_per_second = rate.map(|(eps, _)| eps.round()),
            eta_seconds = rate.and_then(|(_, eta)| eta).map(f64::round),
            "progress"
        );
    }

    pub fn finish(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(message.to_owned());
        }
    }
}
