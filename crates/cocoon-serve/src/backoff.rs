//! Exponential backoff with jitter (reconnects, accept failures), so that many nodes losing the
//! same peer do not reconnect in lockstep.

use std::time::Duration;

/// Delays between reconnect attempts: doubling from `initial` up to `max`, with ±20 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::random::<f64>() * 0.4 - 0.2;
        base.mul_f64(1.0 + jitter)
    }

    /// Start again from the initial delay (after a link worked).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        let within = |d: Duration, base: u64| {
            d >= Duration::from_millis(base * 8 / 10) && d <= Duration::from_millis(base * 12 / 10)
        };
        assert!(within(delays[0], 100));
        assert!(within(delays[1], 200));
        assert!(within(delays[2], 400));
        assert!(within(delays[3], 400));
        backoff.reset();
        assert!(within(backoff.next_delay(), 100));
    }
}
