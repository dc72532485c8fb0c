//! Restart pacing: exponential backoff with jitter, and the crash-loop window.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use crate::manifest::RestartConfig;

/// Remembers recent restarts of one plugin and decides the next delay.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    config: RestartConfig,
    recent: VecDeque<Instant>,
    consecutive: u32,
}

/// What to do after a plugin ended abnormally.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RestartDecision {
    /// Start again after this delay.
    After(Duration),
    /// Too many restarts within the window: stop trying until an operator acts.
    CrashLoop {
        /// How many restarts were counted in the window.
        restarts: usize,
    },
}

impl RestartTracker {
    pub(crate) fn new(config: RestartConfig) -> Self {
        Self {
            config,
            recent: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Records a restart at `now` and says when it may happen. `random` is a
    /// uniform sample in `[0, 1)` for the jitter (injected, so tests are exact).
    pub(crate) fn next(&mut self, now: Instant, random: f64) -> RestartDecision {
        let window = self.config.restart_window;
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.config.max_restarts as usize {
            return RestartDecision::CrashLoop {
                restarts: self.recent.len(),
            };
        }
        self.recent.push_back(now);
        let delay = backoff_delay(&self.config, self.consecutive, random);
        self.consecutive = self.consecutive.saturating_add(1);
        RestartDecision::After(delay)
    }

    /// The plugin stayed up: the next crash starts again from the initial delay.
    pub(crate) fn reset_backoff(&mut self) {
        self.consecutive = 0;
    }

    /// An operator acted: forget the crash history.
    pub(crate) fn clear(&mut self) {
        self.recent.clear();
        self.consecutive = 0;
    }
}

/// `initial * 2^attempt`, capped at `max`, spread by ±`jitter/2` of itself.
pub(crate) fn backoff_delay(config: &RestartConfig, attempt: u32, random: f64) -> Duration {
    let base = config
        .backoff_initial
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(config.backoff_max);
    let spread = config.backoff_jitter * (random - 0.5);
    base.mul_f64((1.0 + spread).max(0.0))
        .min(config.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RestartConfig {
        RestartConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            backoff_jitter: 0.0,
            max_restarts: 3,
            restart_window: Duration::from_secs(10),
            ..RestartConfig::default()
        }
    }

    #[test]
    fn delay_doubles_up_to_the_maximum() {
        let config = config();
        let delays: Vec<_> = (0..6)
            .map(|attempt| backoff_delay(&config, attempt, 0.5).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_spreads_around_the_base() {
        let config = RestartConfig {
            backoff_jitter: 0.2,
            ..config()
        };
        assert_eq!(backoff_delay(&config, 0, 0.0), Duration::from_millis(90));
        assert_eq!(backoff_delay(&config, 0, 1.0), Duration::from_millis(110));
    }

    #[tokio::test(start_paused = true)]
    async fn crash_loop_after_max_restarts_within_the_window() {
        let mut tracker = RestartTracker::new(config());
        let start = Instant::now();
        assert_eq!(
            tracker.next(start, 0.5),
            RestartDecision::After(Duration::from_millis(100))
        );
        assert!(matches!(
            tracker.next(start, 0.5),
            RestartDecision::After(_)
        ));
        assert!(matches!(
            tracker.next(start, 0.5),
            RestartDecision::After(_)
        ));
        assert_eq!(
            tracker.next(start, 0.5),
            RestartDecision::CrashLoop { restarts: 3 }
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(
            tracker.next(Instant::now(), 0.5),
            RestartDecision::After(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn clear_forgets_the_history() {
        let mut tracker = RestartTracker::new(config());
        for _ in 0..3 {
            tracker.next(Instant::now(), 0.5);
        }
        tracker.clear();
        assert_eq!(
            tracker.next(Instant::now(), 0.5),
            RestartDecision::After(Duration::from_millis(100))
        );
    }
}
