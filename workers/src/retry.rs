//! The retry schedule of deliveries (webhooks and mail): exponential with jitter, capped,
//! for a bounded number of attempts. The delays come from `backon`'s exponential backoff
//! (ADR 0009); this module only asks it for the delay after the n-th attempt, because the
//! schedule is kept in the outbox row (`next_attempt_at`), not in a sleeping task.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// When to try a failed delivery again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySchedule {
    /// The delay after the first failed attempt (before jitter).
    pub first: Duration,
    /// Each delay is the one before times this.
    pub factor: f32,
    /// No delay is longer than this (before jitter).
    pub max_delay: Duration,
    /// Attempts in all; after the last one the delivery has failed for good (an operator
    /// may still retry it).
    pub attempts: u32,
}

impl Default for RetrySchedule {
    /// 10 attempts over about a day: 5 s, 15 s, 45 s, 2¼ min, 7 min, 20 min, 1 h, 3 h,
    /// 9 h (each plus up to as much again of jitter), as Standard Webhooks recommends:
    /// minutes to about a day.
    fn default() -> Self {
        Self {
            first: Duration::from_secs(5),
            factor: 3.0,
            max_delay: Duration::from_secs(10 * 3600),
            attempts: 10,
        }
    }
}

impl RetrySchedule {
    /// A schedule for tests: `first`, doubling, at most `attempts` attempts.
    pub fn quick(first: Duration, attempts: u32) -> Self {
        Self {
            first,
            factor: 2.0,
            max_delay: first * 8,
            attempts,
        }
    }

    /// The delay before the attempt after attempt number `attempt` (from 1) failed;
    /// `None` when that was the last one. Jitter adds up to the delay itself again, so
    /// endpoints that failed together are not all retried together.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_factor(self.factor.max(1.0))
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts as usize)
            .with_jitter()
            .build()
            .nth(attempt.saturating_sub(1) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_end_after_the_last_attempt() {
        let schedule = RetrySchedule::default();
        for attempt in 1..schedule.attempts {
            let delay = schedule.delay_after(attempt).expect("a delay");
            let base = (schedule.first.as_secs_f64()
                * f64::from(schedule.factor).powi(attempt as i32 - 1))
            .min(schedule.max_delay.as_secs_f64());
            let secs = delay.as_secs_f64();
            assert!(
                secs >= base * 0.99 && secs <= base * 2.01,
                "{attempt}: {secs} vs {base}"
            );
        }
        assert_eq!(schedule.delay_after(schedule.attempts), None);
        let total: f64 = (1..schedule.attempts)
            .map(|a| schedule.delay_after(a).map_or(0.0, |d| d.as_secs_f64()))
            .sum();
        assert!(total > 12.0 * 3600.0 && total < 60.0 * 3600.0, "{total}");
    }
}
