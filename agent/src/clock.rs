//! The process clock: nanoseconds since the Unix epoch. A leaf every subsystem may import.
//!
//! Time-dependent logic takes the time as an argument (`ReceiptLog::seal(now_ns)`,
//! `Gates::evaluate(now_ns)`, `Retention::run(now_ns)`, `Hold::active(now_ns)`), so tests
//! control time by passing it; only the background tasks and request handlers read this clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, from the system clock (0 before 1970, `u64::MAX` after
/// 2554).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    /// The clock reads the system time in nanoseconds and does not go backwards between reads.
    #[test]
    fn reads_system_time_in_ns() {
        let a = super::now_ns();
        let b = super::now_ns();
        assert!(b >= a);
        // After 2020-01-01 and before 2100-01-01.
        assert!(
            a > 1_577_836_800_000_000_000 && a < 4_102_444_800_000_000_000,
            "{a}"
        );
    }
}
