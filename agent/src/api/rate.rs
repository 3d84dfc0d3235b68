//! [`RateLimiter`]: a token bucket per client address — how many receipt batches one client
//! may post per second, with a burst — so a flood from one filter (authorised or not) cannot
//! take the store from the others or stall sealing. A refusal says when to retry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Clients tracked before idle, full buckets are forgotten.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Batches per second per client address, with a burst of `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `per_second` batches per second and client, at most `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The configured rate, per second.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Take one token for `client` at `now`; when none is left, how long until one is.
    pub fn try_take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client gets its burst, then one batch per 1/rate; another client is not affected;
    /// tokens refill with time, never beyond the burst.
    #[test]
    fn bucket_per_client() {
        let limiter = RateLimiter::new(10, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.try_take(a, t0).unwrap();
        }
        let wait = limiter.try_take(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        limiter.try_take(b, t0).unwrap();
        limiter
            .try_take(a, t0 + Duration::from_millis(100))
            .unwrap();
        assert!(limiter
            .try_take(a, t0 + Duration::from_millis(100))
            .is_err());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.try_take(a, later).unwrap();
        }
        assert!(
            limiter.try_take(a, later).is_err(),
            "refill stops at the burst"
        );
    }
}
