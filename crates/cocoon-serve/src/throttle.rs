//! Rate-limited warnings: a flood of refused connections must not become a flood of log lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets at most one log line through per `every`, and counts the ones it held back so the next
/// line can say how many there were.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// One line per `every`.
    pub fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            state: Mutex::new(State::default()),
        }
    }

    /// One line per second: the rate every port's warnings use.
    pub fn per_second() -> Self {
        LogThrottle::new(Duration::from_secs(1))
    }

    /// Whether a line may be written now; if so, how many were held back since the last one.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`admit`](Self::admit) at `now`.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked while counting; the count is
        // still usable.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            state.last = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed = state.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(throttle.admit_at(start), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.admit_at(start + Duration::from_millis(500)), None);
        }
        assert_eq!(throttle.admit_at(start + Duration::from_secs(1)), Some(5));
        assert_eq!(throttle.admit_at(start + Duration::from_millis(1500)), None);
        assert_eq!(throttle.admit_at(start + Duration::from_secs(3)), Some(1));
    }
}
