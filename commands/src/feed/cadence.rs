//! How long a background reader lingers between steps, by the flow it sees.
//!
//! Lingering makes batches larger: under a heavy flow each step (several round trips and a
//! commit, whatever its size) then carries many events, which is most of what keeps the
//! readers' cost per event down at the peak rate. Under a lighter flow the machine has time
//! to spare, and a long linger would only add to the time an event takes to reach its
//! worker: two background readers in a row (the relay, then a worker), each lingering
//! [`super::LINGER_BACKGROUND`], held events at 1,000/s for 110 ms at p99, where the target
//! from commit to a worker's handler is 50 ms.

use std::time::{Duration, Instant};

use super::{LINGER, LINGER_BACKGROUND};

/// From this many events per second a reader counts the flow as heavy and lingers
/// [`LINGER_BACKGROUND`]; twice the rate at which events must reach the workers within
/// 50 ms.
pub const HEAVY_FLOW: f64 = 2_000.0;

/// Below this many events per second a heavy flow counts as light again (a gap below
/// [`HEAVY_FLOW`], so that a rate near it does not switch the linger at every window).
pub const LIGHT_FLOW: f64 = 1_500.0;

/// How long the flow is counted before the rate is judged again.
const WINDOW: Duration = Duration::from_millis(250);

/// A reader's count of the events it read over the current window, and the flow it judged
/// from the last one. A new reader starts light: the first window shows it a heavy flow.
#[derive(Debug, Clone)]
pub struct Cadence {
    since: Instant,
    events: u64,
    heavy: bool,
}

impl Default for Cadence {
    fn default() -> Self {
        Self::starting_at(Instant::now())
    }
}

impl Cadence {
    fn starting_at(now: Instant) -> Self {
        Self {
            since: now,
            events: 0,
            heavy: false,
        }
    }

    /// Count the `events` a step just read, and return how long to linger before the next.
    pub fn after(&mut self, events: usize) -> Duration {
        self.after_at(events, Instant::now())
    }

    /// How long to linger now, without counting a step (a worker before it fills a batch).
    pub fn linger(&self) -> Duration {
        if self.heavy {
            LINGER_BACKGROUND
        } else {
            LINGER
        }
    }

    fn after_at(&mut self, events: usize, now: Instant) -> Duration {
        self.events += events as u64;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= WINDOW {
            let rate = self.events as f64 / elapsed.as_secs_f64();
            if rate >= HEAVY_FLOW {
                self.heavy = true;
            } else if rate < LIGHT_FLOW {
                self.heavy = false;
            }
            self.since = now;
            self.events = 0;
        }
        self.linger()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps of `per_step` events every `every`, for `steps` steps from `start`; the linger
    /// after the last.
    fn flow(
        cadence: &mut Cadence,
        start: Instant,
        per_step: usize,
        every: Duration,
        steps: u32,
    ) -> (Duration, Instant) {
        let mut now = start;
        let mut linger = cadence.linger();
        for _ in 0..steps {
            now += every;
            linger = cadence.after_at(per_step, now);
        }
        (linger, now)
    }

    #[test]
    fn a_reader_starts_light_and_lingers_short() {
        let start = Instant::now();
        let cadence = Cadence::starting_at(start);
        assert_eq!(cadence.linger(), LINGER);
    }

    #[test]
    fn a_thousand_events_a_second_stay_light() {
        let start = Instant::now();
        let mut cadence = Cadence::starting_at(start);
        // 10 events every 10 ms for 2 s: 1,000/s.
        let (linger, _) = flow(&mut cadence, start, 10, Duration::from_millis(10), 200);
        assert_eq!(linger, LINGER);
    }

    #[test]
    fn a_heavy_flow_lingers_long_once_a_window_shows_it() {
        let start = Instant::now();
        let mut cadence = Cadence::starting_at(start);
        // 50 events every 10 ms: 5,000/s. Not judged before the window ends.
        let (linger, now) = flow(&mut cadence, start, 50, Duration::from_millis(10), 10);
        assert_eq!(linger, LINGER, "judged after 100 ms of a 250 ms window");
        let (linger, _) = flow(&mut cadence, now, 50, Duration::from_millis(10), 20);
        assert_eq!(linger, LINGER_BACKGROUND);
    }

    #[test]
    fn a_rate_between_the_thresholds_keeps_what_was_judged() {
        let start = Instant::now();
        let mut cadence = Cadence::starting_at(start);
        // 1,800/s: not heavy from light...
        let (linger, now) = flow(&mut cadence, start, 18, Duration::from_millis(10), 60);
        assert_eq!(linger, LINGER);
        // ...heavy at 3,000/s...
        let (linger, now) = flow(&mut cadence, now, 30, Duration::from_millis(10), 60);
        assert_eq!(linger, LINGER_BACKGROUND);
        // ...and 1,800/s does not make it light again; 1,000/s does.
        let (linger, now) = flow(&mut cadence, now, 18, Duration::from_millis(10), 60);
        assert_eq!(linger, LINGER_BACKGROUND);
        let (linger, _) = flow(&mut cadence, now, 10, Duration::from_millis(10), 60);
        assert_eq!(linger, LINGER);
    }

    #[test]
    fn a_quiet_spell_after_a_heavy_flow_makes_it_light() {
        let start = Instant::now();
        let mut cadence = Cadence::starting_at(start);
        let (linger, now) = flow(&mut cadence, start, 50, Duration::from_millis(10), 60);
        assert_eq!(linger, LINGER_BACKGROUND);
        // The next event comes two seconds later: the window it closes held one step.
        let linger = cadence.after_at(1, now + Duration::from_secs(2));
        assert_eq!(linger, LINGER);
    }
}
