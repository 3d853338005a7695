//! When to retry a Graph request and how long to wait: `Retry-After` (seconds, fractional
//! seconds or an HTTP date), exponential backoff with jitter, and a cap on the total wait.
//! Pure functions; the HTTP loop lives in `client.rs`.

use std::time::{Duration, SystemTime};

/// Retry limits for one logical request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff step when Graph gives no `Retry-After`; doubled per retry.
    pub base_delay: Duration,
    /// Longest single backoff step (without `Retry-After`).
    pub max_delay: Duration,
    /// Cap on the sum of all waits of one request; a wait that would exceed it is not taken.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total_wait: Duration::from_secs(180),
        }
    }
}

/// What failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An HTTP status with Graph's `Retry-After`, if any.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No response: connection refused, reset, timed out.
    Transport,
}

/// Whether a failure may be retried. 429 means the request was not processed, so it is retried
/// for every method; 503/504 and transport failures only for requests safe to repeat.
pub fn is_retryable(failure: Failure, idempotent: bool) -> bool {
    match failure {
        Failure::Status { status: 429, .. } => true,
        Failure::Status {
            status: 503 | 504, ..
        } => idempotent,
        Failure::Status { .. } => false,
        Failure::Transport => idempotent,
    }
}

/// The wait before retry number `retry` (1-based), or `None` to give up: not retryable, out of
/// retries, or the wait would push the total past the cap. `jitter` in [0, 1) scales the
/// backoff between 50% and 100% so that many clients do not retry in step; a `Retry-After` from
/// Graph is honoured as sent.
pub fn next_wait(
    policy: &RetryPolicy,
    failure: Failure,
    idempotent: bool,
    retry: u32,
    waited: Duration,
    jitter: f64,
) -> Option<Duration> {
    if retry > policy.max_retries || !is_retryable(failure, idempotent) {
        return None;
    }
    let wait = match failure {
        Failure::Status {
            retry_after: Some(after),
            ..
        } => after,
        _ => backoff(policy, retry, jitter),
    };
    (waited.saturating_add(wait) <= policy.max_total_wait).then_some(wait)
}

/// Exponential backoff for retry number `retry` (1-based), capped at `max_delay`, jittered.
pub fn backoff(policy: &RetryPolicy, retry: u32, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    let full = policy
        .base_delay
        .saturating_mul(factor)
        .min(policy.max_delay);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Parses a `Retry-After` value: delay seconds (Graph also sends fractions such as `2.128`) or
/// an HTTP date (a date in the past means "now"). Garbage gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        // Reject negative, NaN and absurd values rather than panicking in Duration.
        return (0.0..1.0e9)
            .contains(&secs)
            .then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // Tue, 15 Nov 1994 08:12:31 GMT, the RFC 9110 example date.
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_887_151)
    }

    #[test]
    fn retry_after_integer_seconds() {
        assert_eq!(
            parse_retry_after("10", now()),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_fractional_seconds() {
        assert_eq!(
            parse_retry_after("2.128", now()),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(
            parse_retry_after("0.5", now()),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn retry_after_http_date() {
        assert_eq!(
            parse_retry_after("Tue, 15 Nov 1994 08:12:41 GMT", now()),
            Some(Duration::from_secs(10))
        );
        // A date already past means retry now.
        assert_eq!(
            parse_retry_after("Tue, 15 Nov 1994 08:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage() {
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-3", now()), None);
        assert_eq!(parse_retry_after("NaN", now()), None);
        assert_eq!(parse_retry_after("inf", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_cap() {
        let p = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            max_total_wait: Duration::from_secs(60),
        };
        assert_eq!(backoff(&p, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&p, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&p, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&p, 4, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&p, 40, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&p, 2, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn decisions() {
        let p = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_total_wait: Duration::from_secs(20),
        };
        let throttled = Failure::Status {
            status: 429,
            retry_after: Some(Duration::from_millis(2128)),
        };
        // Retry-After is honoured as sent, also for non-idempotent requests.
        assert_eq!(
            next_wait(&p, throttled, false, 1, Duration::ZERO, 0.3),
            Some(Duration::from_millis(2128))
        );
        // Out of retries.
        assert_eq!(next_wait(&p, throttled, true, 4, Duration::ZERO, 0.3), None);
        // The cap on the total wait.
        assert_eq!(
            next_wait(&p, throttled, true, 2, Duration::from_secs(18), 0.3),
            None
        );
        // 503 without Retry-After: backoff, only when safe to repeat.
        let unavailable = Failure::Status {
            status: 503,
            retry_after: None,
        };
        assert_eq!(
            next_wait(&p, unavailable, true, 2, Duration::ZERO, 1.0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            next_wait(&p, unavailable, false, 1, Duration::ZERO, 1.0),
            None
        );
        // 503 with Retry-After honours it.
        let with_after = Failure::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            next_wait(&p, with_after, true, 1, Duration::ZERO, 1.0),
            Some(Duration::from_secs(7))
        );
        let gateway = Failure::Status {
            status: 504,
            retry_after: None,
        };
        assert!(next_wait(&p, gateway, true, 1, Duration::ZERO, 0.0).is_some());
        // Never retried.
        for status in [400, 401, 403, 404, 410, 500, 502] {
            let f = Failure::Status {
                status,
                retry_after: Some(Duration::from_secs(1)),
            };
            assert_eq!(
                next_wait(&p, f, true, 1, Duration::ZERO, 0.0),
                None,
                "status {status}"
            );
        }
        assert!(next_wait(&p, Failure::Transport, true, 1, Duration::ZERO, 0.0).is_some());
        assert_eq!(
            next_wait(&p, Failure::Transport, false, 1, Duration::ZERO, 0.0),
            None
        );
    }
}
