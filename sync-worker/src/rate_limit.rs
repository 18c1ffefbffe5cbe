//! A per-process token bucket for requests toward the portal: at most `rate`
//! requests per second on average, bursts up to `burst`. Waiters are served
//! in arrival order because each reserves its slot before sleeping.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The request rate limit; `acquire` before every portal request.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

impl RateLimiter {
    /// `rate` requests per second (must be > 0), bursts of `burst` (at least 1).
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// Waits until one request may go out.
    pub async fn acquire(&self) {
        let wait = {
            let mut b = self.bucket.lock().await;
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.last = now;
            b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
            // Reserve the token even if it is not there yet (tokens go
            // negative): the deficit is this caller's place in the line.
            b.tokens -= 1.0;
            if b.tokens >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-b.tokens / self.rate))
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_beyond_the_burst_are_spaced_by_the_rate() {
        let limiter = RateLimiter::new(100.0, 2);
        let start = Instant::now();
        for _ in 0..12 {
            limiter.acquire().await;
        }
        // 2 from the burst, 10 more at 100/s: at least 100 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(95), "{took:?}");
        assert!(took <= Duration::from_millis(600), "{took:?}");
    }
}
