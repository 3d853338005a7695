//! Fault injection: throttling (429 + Retry-After), 503/504 and added latency, each drawn
//! deterministically from the seed and the request's sequence number.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::errors::GraphError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability that a Graph request is answered 429.
    pub rate429: f64,
    /// Probability that a Graph request is answered 503 or 504.
    pub rate5xx: f64,
    /// Added to every Graph request.
    pub latency_ms: u64,
    pub seed: u64,
    /// Seconds in `Retry-After` (fractions allowed, as in Graph's doc sample 2.128).
    pub retry_after: f64,
    /// The next N Graph requests get 429 regardless of the rate.
    pub next429: u64,
    /// The next N Graph requests get 503 regardless of the rate.
    pub next503: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate429: 0.0,
            rate5xx: 0.0,
            latency_ms: 0,
            seed: 0,
            retry_after: 1.0,
            next429: 0,
            next503: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttled,
    Unavailable,
    GatewayTimeout,
}

#[derive(Debug, Default)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    counter: AtomicU64,
    injected: AtomicU64,
}

/// splitmix64: a tiny seeded generator, one fresh state per request number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults {
            config: Mutex::new(config),
            counter: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the configuration; the request counter restarts so a seed replays the same faults.
    pub fn set(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
        self.counter.store(0, Ordering::SeqCst);
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.config().latency_ms)
    }

    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    /// Decide the fate of the next Graph request.
    pub fn draw(&self) -> Option<(Fault, f64)> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let mut cfg = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let fault = if cfg.next429 > 0 {
            cfg.next429 -= 1;
            Some(Fault::Throttled)
        } else if cfg.next503 > 0 {
            cfg.next503 -= 1;
            Some(Fault::Unavailable)
        } else {
            let r = mix(cfg.seed ^ mix(n));
            let p429 = unit(r);
            let p5xx = unit(mix(r));
            if p429 < cfg.rate429 {
                Some(Fault::Throttled)
            } else if p5xx < cfg.rate5xx {
                if mix(r ^ 1) & 1 == 0 {
                    Some(Fault::Unavailable)
                } else {
                    Some(Fault::GatewayTimeout)
                }
            } else {
                None
            }
        };
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fault.map(|f| (f, cfg.retry_after))
    }
}

/// `Retry-After` value: whole seconds print without a fraction.
pub fn retry_after_value(secs: f64) -> String {
    if secs.fract() == 0.0 {
        format!("{}", secs as u64)
    } else {
        format!("{secs}")
    }
}

/// The error Graph sends for a fault (bodies from the throttling and errors pages).
pub fn fault_error(fault: Fault, retry_after: f64) -> GraphError {
    let ra = retry_after_value(retry_after);
    match fault {
        Fault::Throttled => GraphError::new(429, "TooManyRequests", "Please retry again later.")
            .with_inner("code", json!("429"))
            .with_inner("message", json!("Please retry after"))
            .with_inner("status", json!("429"))
            .with_header("Retry-After", ra)
            .with_header("x-ms-throttle-information", "ResourceUnitLimitExceeded"),
        Fault::Unavailable => GraphError::new(
            503,
            "serviceNotAvailable",
            "The service is temporarily unavailable for maintenance or is overloaded. You may repeat the request after a delay, which can be specified in a Retry-After header.",
        )
        .with_header("Retry-After", ra),
        Fault::GatewayTimeout => GraphError::new(
            504,
            "gatewayTimeout",
            "The server, while acting as a proxy, did not receive a timely response from the upstream server it needed to access in attempting to complete the request.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let cfg = FaultConfig {
            rate429: 0.3,
            rate5xx: 0.2,
            seed: 7,
            ..Default::default()
        };
        let a = Faults::new(cfg.clone());
        let b = Faults::new(cfg);
        let xs: Vec<_> = (0..200).map(|_| a.draw().map(|f| f.0)).collect();
        let ys: Vec<_> = (0..200).map(|_| b.draw().map(|f| f.0)).collect();
        assert_eq!(xs, ys);
        let throttled = xs.iter().filter(|f| **f == Some(Fault::Throttled)).count();
        assert!((30..90).contains(&throttled), "{throttled}");
    }

    #[test]
    fn next429_is_forced() {
        let f = Faults::new(FaultConfig {
            next429: 2,
            ..Default::default()
        });
        assert_eq!(f.draw().map(|x| x.0), Some(Fault::Throttled));
        assert_eq!(f.draw().map(|x| x.0), Some(Fault::Throttled));
        assert_eq!(f.draw(), None);
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(retry_after_value(10.0), "10");
        assert_eq!(retry_after_value(2.128), "2.128");
    }
}
