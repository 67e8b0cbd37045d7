//! How fast one client may go, decided in its reader before a request
//! reaches the hub: its request rate (`--client-rate`) and its control-frame
//! rate (`--client-control-rate`). What it may do at all (the publish switch,
//! its token's claims) is [`crate::auth::claims`].

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::time::{Duration, Instant};

/// One client's control frames (pings, pongs) in the current second,
/// against `--client-control-rate`: a fixed window, cheap enough to keep
/// for every connection.
#[derive(Debug)]
pub struct ControlRate {
    window: Instant,
    count: u32,
}

impl ControlRate {
    pub fn new(now: Instant) -> ControlRate {
        ControlRate { window: now, count: 0 }
    }

    /// Counts one control frame arrived at `now`; `false` when it is one
    /// more than `limit` in the same second (`limit` 0: no limit).
    pub fn take(&mut self, now: Instant, limit: u32) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            (self.window, self.count) = (now, 0);
        }
        self.count = self.count.saturating_add(1);
        limit == 0 || self.count <= limit
    }
}

/// Refusals closer together than this belong to one stretch over the limit.
const OVER_GAP: Duration = Duration::from_secs(1);

/// One client's request rate: a token bucket (governor's GCRA), and how
/// long the client has stayed over it.
pub struct Rate {
    limiter: DefaultDirectRateLimiter,
    grace: Duration,
    /// Start of the current stretch of refusals, and the last refusal.
    over: Option<(Instant, Instant)>,
}

/// What to do with a request under the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Answer `rate_limited`; `first` on the client's first refusal (log it once).
    Refuse {
        first: bool,
    },
    /// The client stayed over the limit for the grace period: close with 4029.
    Close,
}

impl Rate {
    pub fn new(quota: Quota, grace: Duration) -> Rate {
        Rate {
            limiter: governor::RateLimiter::direct(quota),
            grace,
            over: None,
        }
    }

    /// A quota of `per_second` requests with bursts of `burst`.
    pub fn quota(per_second: NonZeroU32, burst: NonZeroU32) -> Quota {
        Quota::per_second(per_second).allow_burst(burst)
    }

    /// Takes one request. A client "stays over" the limit while its refusals
    /// come less than a second apart; once such a stretch lasts `grace`, it is closed.
    pub fn take(&mut self) -> Verdict {
        if self.limiter.check().is_ok() {
            return Verdict::Allow;
        }
        let now = Instant::now();
        let first = self.over.is_none();
        let start = match self.over {
            Some((start, last)) if now.duration_since(last) < OVER_GAP => start,
            _ => now,
        };
        self.over = Some((start, now));
        if now.duration_since(start) >= self.grace {
            Verdict::Close
        } else {
            Verdict::Refuse { first }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_refuses_then_closes_after_the_grace() {
        let quota = Rate::quota(NonZeroU32::new(10).unwrap(), NonZeroU32::new(2).unwrap());
        let mut rate = Rate::new(quota, Duration::from_secs(3));
        assert_eq!(rate.take(), Verdict::Allow);
        assert_eq!(rate.take(), Verdict::Allow);
        assert_eq!(rate.take(), Verdict::Refuse { first: true });
        assert_eq!(rate.take(), Verdict::Refuse { first: false });
        // Paused tokio time moves the grace clock, not the bucket's: the
        // client stays over the limit as far as the bucket knows.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(500)).await;
            assert_eq!(rate.take(), Verdict::Refuse { first: false });
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(rate.take(), Verdict::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_starts_a_new_stretch() {
        let quota = Rate::quota(NonZeroU32::new(1).unwrap(), NonZeroU32::new(1).unwrap());
        let mut rate = Rate::new(quota, Duration::from_secs(2));
        assert_eq!(rate.take(), Verdict::Allow);
        assert_eq!(rate.take(), Verdict::Refuse { first: true });
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            rate.take(),
            Verdict::Refuse { first: false },
            "a 1.5 s pause ends the stretch"
        );
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(rate.take(), Verdict::Refuse { first: false });
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(
            rate.take(),
            Verdict::Refuse { first: false },
            "1.8 s into the new stretch"
        );
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(rate.take(), Verdict::Close);
    }
}
