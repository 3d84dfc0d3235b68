//! Events a flood repeats — refused requests, failed accepts — are counted, and logged only
//! the first time and at every power of two, so a flood cannot flood the log.

use std::sync::atomic::{AtomicU64, Ordering};

/// Count one more event; `Some(total)` when this one should be logged.
pub fn count(counter: &AtomicU64) -> Option<u64> {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    n.is_power_of_two().then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 1st, 2nd, 4th, 8th … events are logged, the others only counted.
    #[test]
    fn logs_the_first_and_each_power_of_two() {
        let c = AtomicU64::new(0);
        let logged: Vec<u64> = (0..20).filter_map(|_| count(&c)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        assert_eq!(c.load(Ordering::Relaxed), 20);
    }
}
