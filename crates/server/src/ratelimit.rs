//! Rate limiting (token buckets, in memory, per process) on the token, PAR and login endpoints:
//! per source address for every request, and per client once the client is known. A refused
//! request gets `429 Too Many Requests` with `Retry-After` (RFC 6585 §4, RFC 9126 §2.3).
//!
//! The source address is the TCP peer: behind a reverse proxy that is the proxy, so either
//! rate-limit at the proxy or give each proxy its own budget. Limits are per process; with N
//! processes behind a balancer the effective limit is up to N times the configured one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys a limiter tracks before it forgets idle ones.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One family of token buckets (e.g. per source address).
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// `rate` requests per second on average, up to `burst` at once; `rate` 0 disables.
    pub fn new(rate: f64, burst: f64) -> Limiter {
        Limiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; on refusal says how long until one is available.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            // Forget buckets that have refilled: they carry no information.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= MAX_KEYS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// The limits of one server process.
#[derive(Debug)]
pub struct Limits {
    /// Per source address.
    pub address: Limiter,
    /// Per authenticated client.
    pub client: Limiter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_and_cap_at_the_burst() {
        let l = Limiter::new(2.0, 3.0);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t).is_ok());
        }
        let wait = l.check("a", t).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        assert!(l.check("b", t).is_ok(), "keys are independent");
        assert!(l.check("a", t + Duration::from_millis(500)).is_ok());
        assert!(l.check("a", t + Duration::from_millis(500)).is_err());
        // A long pause refills only up to the burst.
        let later = t + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.check("a", later).is_ok());
        }
        assert!(l.check("a", later).is_err());
        assert!(
            Limiter::new(0.0, 1.0).check("x", t).is_ok(),
            "rate 0 disables"
        );
    }
}
