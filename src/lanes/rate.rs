//! A token bucket per lane: `streaming.lanes.<PRIORITY>.maxEventsPerSecond`.
//!
//! A throttled lane only makes the scheduler skip it: the other lanes keep dispatching.
//! The bucket holds at most a tenth of a second's tokens (at least one), so a lane that
//! was quiet sends a short burst, not a second's worth at once, and the rate over any
//! window longer than that stays at the limit. Time is passed in, so the tests drive it
//! with a fake clock.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Tokens are counted in nanotokens, so that refills of any rate are exact integers.
const NANOS_PER_TOKEN: u128 = 1_000_000_000;

/// A token bucket of `rate` events per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Events per second.
    rate: u128,
    /// Nanotokens the bucket holds at most.
    burst: u128,
    /// Nanotokens in the bucket at `updated`.
    level: u128,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` events per second, as of `now`.
    pub fn new(rate: NonZeroU32, now: Instant) -> TokenBucket {
        let rate = u128::from(rate.get());
        let burst = (rate / 10).max(1) * NANOS_PER_TOKEN;
        TokenBucket {
            rate,
            burst,
            level: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        // One token per second / rate: elapsed nanoseconds times rate, in nanotokens.
        self.level = (self.level + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }

    /// Whether a token is there at `now` (without taking it).
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= NANOS_PER_TOKEN
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let ready = self.ready(now);
        if ready {
            self.level -= NANOS_PER_TOKEN;
        }
        ready
    }

    /// When the next token is there (`now` if one is).
    pub fn next_token_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let missing = NANOS_PER_TOKEN.saturating_sub(self.level);
        let nanos = missing.div_ceil(self.rate);
        now + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
    }

    #[test]
    fn a_full_bucket_gives_a_tenth_of_a_second_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate(100), start);
        let burst = (0..100).take_while(|_| bucket.take(start)).count();
        assert_eq!(burst, 10);
        assert_eq!(
            bucket.next_token_at(start),
            start + Duration::from_millis(10)
        );
        assert!(!bucket.take(start + Duration::from_micros(9_999)));
        assert!(bucket.take(start + Duration::from_millis(10)));
        // Over the next second exactly 100 more.
        let mut taken = 0;
        for ms in 11..=1010 {
            while bucket.take(start + Duration::from_millis(ms)) {
                taken += 1;
            }
        }
        assert_eq!(taken, 100);
    }

    #[test]
    fn a_quiet_bucket_fills_only_to_its_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate(50), start);
        while bucket.take(start) {}
        let later = start + Duration::from_secs(3600);
        let burst = (0..1000).take_while(|_| bucket.take(later)).count();
        assert_eq!(burst, 5);
    }

    #[test]
    fn a_slow_rate_has_a_burst_of_one() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate(2), start);
        assert!(bucket.take(start));
        assert!(!bucket.ready(start));
        assert_eq!(
            bucket.next_token_at(start),
            start + Duration::from_millis(500)
        );
        assert!(bucket.take(start + Duration::from_millis(500)));
        assert!(!bucket.take(start + Duration::from_millis(999)));
    }
}
