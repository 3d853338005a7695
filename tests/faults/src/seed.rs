//! Seeded randomness: every random choice of a fault test comes from one seed, printed at the
//! start, so a failure can be replayed with `FAULTS_SEED=<seed>`.

use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that fixes the seed.
pub const SEED_VAR: &str = "FAULTS_SEED";

/// The variable that sets how many fault points a test tries (the CI default is small;
/// `randomised.sh` sets more).
pub const POINTS_VAR: &str = "FAULTS_POINTS";

/// `FAULTS_POINTS`, else `default`.
pub fn points(default: usize) -> usize {
    match std::env::var(POINTS_VAR) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<usize>()
            .unwrap_or_else(|e| panic!("{POINTS_VAR}={v:?} is not a count: {e}")),
        _ => default,
    }
}

/// splitmix64: small, good enough for picking delays, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// Seeded from `FAULTS_SEED`, else from the clock; the seed is printed with `test`'s name.
    pub fn for_test(test: &str) -> Rng {
        let seed = match std::env::var(SEED_VAR) {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{SEED_VAR}={v:?} is not a number: {e}")),
            _ => {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    ^ u64::from(std::process::id())
            }
        };
        eprintln!("{test}: seed {seed} (replay with {SEED_VAR}={seed})");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_numbers_within_the_range() {
        let a: Vec<u64> = (0..50)
            .scan(Rng::new(7), |r, _| Some(r.range(10, 20)))
            .collect();
        let b: Vec<u64> = (0..50)
            .scan(Rng::new(7), |r, _| Some(r.range(10, 20)))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| (10..20).contains(x)), "{a:?}");
        assert!(a.iter().any(|x| *x != a[0]), "{a:?}");
    }
}
