//! Admission behaviour with simulated latencies and injected time: shed, cap, hysteresis,
//! recovery, and agreement between workers through shared data.

use super::*;
use crate::host::MemoryShared;

const MS: u64 = 1_000_000;

/// R1: 10 ms budget, 1 s window, 20 samples; step 10 %, cap 50 %, recover below 8 ms, eval 100 ms.
fn policy() -> Policy {
    Policy::from_json(
        br#"{"admission":{"classes":{"R1":{"p99_max_ms":10,"window_ms":1000,"min_samples":20}},"evaluation_interval_ms":100}}"#,
    )
    .unwrap()
}

/// Feed `n` samples of `latency_ns` to R1 and sync at `now_ms`; return R1's level.
fn feed(
    c: &mut AdmissionCoordinator,
    store: &MemoryShared,
    p: &Policy,
    n: u32,
    latency_ns: u64,
    now_ms: u64,
) -> u16 {
    for _ in 0..n {
        c.record(p, Class::R1, latency_ns);
    }
    c.sync(store, p, now_ms).unwrap();
    c.levels()[Class::R1.index()]
}

/// Over budget, the level rises one step per evaluation and stops at the cap.
#[test]
fn sheds_gradually_up_to_the_cap() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    let mut levels = Vec::new();
    for tick in 1..=8u64 {
        levels.push(feed(&mut c, &store, &p, 50, 30 * MS, tick * 100));
    }
    assert_eq!(
        levels,
        vec![1_000, 2_000, 3_000, 4_000, 5_000, 5_000, 5_000, 5_000]
    );
    assert_eq!(c.levels(), [5_000, 0, 0], "only R1 is over budget");
}

/// Fewer samples than min_samples never shed, however slow.
#[test]
fn no_shedding_below_min_samples() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    // 19 very slow samples in the window: under min_samples (20), no evidence.
    for tick in 1..=19u64 {
        assert_eq!(feed(&mut c, &store, &p, 1, 900 * MS, tick * 100 / 2), 0);
    }
}

/// 1 % slow samples keep p99 within budget; 2 % break it.
#[test]
fn one_percent_slow_is_within_p99() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    for tick in 1..=10u64 {
        c.record(&p, Class::R1, 50 * MS);
        assert_eq!(feed(&mut c, &store, &p, 99, MS, tick * 100), 0);
    }
    // Two percent slow is over p99.
    for _ in 0..3 {
        c.record(&p, Class::R1, 50 * MS);
    }
    assert_eq!(feed(&mut c, &store, &p, 10, MS, 1_100), 1_000);
}

/// Between the recovery line and the budget the level holds; below it, it falls one step at a time.
#[test]
fn hysteresis_holds_between_recover_and_budget_then_recovers() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    let mut t = 0;
    for _ in 0..3 {
        t += 100;
        feed(&mut c, &store, &p, 50, 30 * MS, t);
    }
    assert_eq!(c.levels()[0], 3_000);
    // Latency now 9 ms: under the 10 ms budget but above the 8 ms recovery line. While the slow
    // samples are still in the 1 s window the level keeps rising; after that it must hold.
    let mut band = Vec::new();
    for _ in 0..30 {
        t += 100;
        band.push(feed(&mut c, &store, &p, 50, 9 * MS, t));
    }
    let held = band[10];
    assert!(held > 0, "{band:?}");
    assert!(
        band[10..].iter().all(|&l| l == held),
        "held in the hysteresis band: {band:?}"
    );
    // 5 ms: recovered once the 9 ms samples leave the window; one step down per evaluation.
    let mut recovery = Vec::new();
    for _ in 0..30 {
        t += 100;
        recovery.push(feed(&mut c, &store, &p, 50, 5 * MS, t));
    }
    assert_eq!(
        *recovery.last().unwrap(),
        0,
        "fully recovered: {recovery:?}"
    );
    let mut steps = vec![held];
    steps.extend(recovery.iter().copied());
    assert!(
        steps
            .windows(2)
            .all(|w| w[0] == w[1] || w[0] - w[1] == p.shed_step_bp),
        "gradual, one step per evaluation: {steps:?}"
    );
}

/// With no traffic the level decays monotonically to zero.
#[test]
fn silence_lowers_the_level() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    for tick in 1..=5u64 {
        feed(&mut c, &store, &p, 50, 30 * MS, tick * 100);
    }
    assert_eq!(c.levels()[0], 5_000);
    // No traffic at all (everything shed or clients gone): the window empties, level decays.
    let mut t = 500;
    let mut seen = Vec::new();
    for _ in 0..20 {
        t += 100;
        seen.push(feed(&mut c, &store, &p, 0, 0, t));
    }
    assert_eq!(*seen.last().unwrap(), 0, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[1] <= w[0]),
        "monotone decay: {seen:?}"
    );
}

/// The controller acts at most once per evaluation interval, however often workers sync.
#[test]
fn evaluation_happens_at_most_once_per_interval() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    assert_eq!(feed(&mut c, &store, &p, 50, 30 * MS, 100), 1_000);
    // Many syncs within the same interval: no further raise.
    for t in 101..199 {
        assert_eq!(feed(&mut c, &store, &p, 5, 30 * MS, t), 1_000);
    }
    assert_eq!(feed(&mut c, &store, &p, 5, 30 * MS, 200), 2_000);
}

/// Two workers' samples add up in shared data and both apply the same level.
#[test]
fn workers_agree_through_shared_data() {
    let (p, store) = (policy(), MemoryShared::default());
    let mut workers = [AdmissionCoordinator::new(), AdmissionCoordinator::new()];
    // Each worker alone sees only 15 slow samples per tick (under min_samples); together 30.
    for tick in 1..=3u64 {
        for w in workers.iter_mut() {
            for _ in 0..15 {
                w.record(&p, Class::R1, 30 * MS);
            }
            w.sync(&store, &p, tick * 100).unwrap();
        }
    }
    // The second worker syncs after the first evaluated, so both read the same level.
    let levels: Vec<u16> = workers.iter().map(|w| w.levels()[0]).collect();
    assert!(levels[0] >= 2_000, "{levels:?}");
    workers[0].sync(&store, &p, 301).unwrap();
    assert_eq!(workers[0].levels(), workers[1].levels());
}

/// CAS conflicts are retried, and when retries run out no sample is lost.
#[test]
fn cas_conflicts_are_retried_and_counts_are_not_lost() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    c.sync(&store, &p, 1).unwrap(); // create entries
    for _ in 0..20 {
        c.record(&p, Class::R1, 30 * MS);
    }
    *store.forced_conflicts.borrow_mut() = 3;
    let report = c.sync(&store, &p, 10).unwrap();
    assert_eq!(report.contended, 0);
    assert_eq!(report.classes[0].totals.total, 20);

    // Exhausting every attempt keeps the samples local for the next tick.
    for _ in 0..5 {
        c.record(&p, Class::R1, 30 * MS);
    }
    *store.forced_conflicts.borrow_mut() = MAX_CAS_ATTEMPTS;
    let report = c.sync(&store, &p, 20).unwrap();
    assert_eq!(report.contended, 1);
    let report = c.sync(&store, &p, 30).unwrap();
    assert_eq!(
        report.classes[0].totals.total, 25,
        "no sample lost to contention"
    );
}

/// Corrupt shared state is replaced by a fresh window, not decoded.
#[test]
fn corrupt_shared_state_is_replaced_not_trusted() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    store
        .set(shared_key(Class::R1), b"\x01garbage", None)
        .unwrap();
    let level = feed(&mut c, &store, &p, 50, 30 * MS, 100);
    assert_eq!(level, 1_000);
}

/// A budget change starts a fresh window instead of reusing the old level.
#[test]
fn a_budget_change_resets_the_window() {
    let (p, store, mut c) = (
        policy(),
        MemoryShared::default(),
        AdmissionCoordinator::new(),
    );
    for tick in 1..=3u64 {
        feed(&mut c, &store, &p, 50, 30 * MS, tick * 100);
    }
    assert_eq!(c.levels()[0], 3_000);
    let relaxed = Policy::from_json(
        br#"{"admission":{"classes":{"R1":{"p99_max_ms":100,"window_ms":1000,"min_samples":20}},"evaluation_interval_ms":100}}"#,
    )
    .unwrap();
    // Under the new budget the old state does not apply: fresh window, level 0.
    c.sync(&store, &relaxed, 400).unwrap();
    assert_eq!(c.levels()[0], 0);
}
