//! Flag derivation: known answers, monotonicity, uniformity and independence.

use super::*;
use crate::bucket::buckets;
use crate::policy::Policy;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn policy(json: &str) -> Policy {
    Policy::from_json(json.as_bytes()).unwrap()
}

/// The documented derivation, written out step by step from the raw SHA-256 digest.
fn reference_bucket(salt: &[u8], key: &[u8], name: &str) -> u16 {
    let mut h = Sha256::new();
    h.update(b"knhk bucket key v2\0");
    h.update(salt);
    let sip_key = h.finalize();
    let k0 = u64::from_le_bytes(sip_key[0..8].try_into().unwrap());
    let k1 = u64::from_le_bytes(sip_key[8..16].try_into().unwrap());
    let digest = siphasher::sip128::SipHasher24::new_with_keys(k0, k1)
        .hash(key)
        .as_bytes();
    let seed = u64::from_le_bytes(digest[8..16].try_into().unwrap());
    let mut fnv: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        fnv ^= u64::from(b);
        fnv = fnv.wrapping_mul(0x100000001b3);
    }
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    (mix(seed ^ mix(fnv)) % 10_000) as u16
}

/// FNV-1a-64 matches its published test vectors, so an auditor's implementation agrees.
#[test]
fn fnv1a64_matches_published_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
    assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
}

/// The module's flag bucket equals the documented derivation recomputed from the digest.
#[test]
fn flag_bucket_follows_the_documented_derivation() {
    for i in 0..2_000 {
        let key = format!("user-{i}");
        let b = buckets(b"salt-1", key.as_bytes());
        for name in ["new-checkout", "dark-mode", "a", "0.x_y-z"] {
            assert_eq!(
                flag_bucket(&b, name),
                reference_bucket(b"salt-1", key.as_bytes(), name),
                "{key}/{name}"
            );
        }
    }
}

/// Over 20k keys each flag is on for its share of keys, within ±1.5 percentage points.
#[test]
fn share_of_keys_matches_basis_points() {
    let flags = [
        Flag::new("new-checkout", 500),
        Flag::new("half", 5_000),
        Flag::new("most", 9_000),
    ];
    let n = 20_000u32;
    let mut on = [0u32; 3];
    for i in 0..n {
        let b = buckets(b"s", format!("k{i}").as_bytes());
        for (count, flag) in on.iter_mut().zip(&flags) {
            *count += u32::from(flag.is_on(&b));
        }
    }
    for (count, flag) in on.iter().zip(&flags) {
        let share = f64::from(*count) / f64::from(n);
        let want = f64::from(flag.basis_points) / 10_000.0;
        assert!((share - want).abs() < 0.015, "{}: {share}", flag.name);
    }
}

/// Phi coefficient of two boolean series.
fn phi(pairs: &[(bool, bool)]) -> f64 {
    let mut n = [[0f64; 2]; 2];
    for &(a, b) in pairs {
        n[usize::from(a)][usize::from(b)] += 1.0;
    }
    let (a1, a0) = (n[1][0] + n[1][1], n[0][0] + n[0][1]);
    let (b1, b0) = (n[0][1] + n[1][1], n[0][0] + n[1][0]);
    (n[1][1] * n[0][0] - n[1][0] * n[0][1]) / (a1 * a0 * b1 * b0).sqrt()
}

/// Flags are uncorrelated with canary membership, with the priority bucket and with each other
/// (even for names one character apart): |phi| < 0.03 over 20k keys, and P(on | canary) ≈ P(on).
#[test]
fn flags_are_independent_of_routing_and_of_each_other() {
    let names = ["a", "b", "new-checkout", "new-checkouu", "dark-mode"];
    let n = 20_000u32;
    let rows: Vec<(Buckets, Vec<bool>)> = (0..n)
        .map(|i| {
            let b = buckets(b"rollout", format!("user{i}").as_bytes());
            let on = names
                .iter()
                .map(|name| flag_bucket(&b, name) < 5_000)
                .collect();
            (b, on)
        })
        .collect();
    for (f, name) in names.iter().enumerate() {
        let canary: Vec<(bool, bool)> = rows
            .iter()
            .map(|(b, on)| (b.routing < 5_000, on[f]))
            .collect();
        assert!(
            phi(&canary).abs() < 0.03,
            "{name} vs canary: {}",
            phi(&canary)
        );
        let in_canary: Vec<bool> = rows
            .iter()
            .filter(|(b, _)| b.routing < 2_000)
            .map(|(_, on)| on[f])
            .collect();
        let share = in_canary.iter().filter(|&&x| x).count() as f64 / in_canary.len() as f64;
        assert!((share - 0.5).abs() < 0.035, "P({name} | canary) = {share}");
        let priority: Vec<(bool, bool)> = rows
            .iter()
            .map(|(b, on)| (b.priority < 5_000, on[f]))
            .collect();
        assert!(phi(&priority).abs() < 0.03, "{name} vs priority");
        for (g, other) in names.iter().enumerate().skip(f + 1) {
            let pair: Vec<(bool, bool)> = rows.iter().map(|(_, on)| (on[f], on[g])).collect();
            assert!(phi(&pair).abs() < 0.03, "{name} vs {other}: {}", phi(&pair));
        }
    }
}

proptest! {
    /// Raising a flag's basis points never turns it off for any key (monotonic ramp).
    #[test]
    fn raising_basis_points_only_adds_keys(key in proptest::collection::vec(any::<u8>(), 0..64),
                                           salt in proptest::collection::vec(any::<u8>(), 1..32),
                                           name in "[a-z0-9][a-z0-9._-]{0,20}",
                                           a in 0u16..=10_000, b in 0u16..=10_000) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let bk = buckets(&salt, &key);
        prop_assert!(!Flag::new(&name, low).is_on(&bk) || Flag::new(&name, high).is_on(&bk));
    }

    /// Flag buckets are in range, deterministic, 0 bp is never on and 10000 bp always is.
    #[test]
    fn flag_bucket_in_range_and_extremes(key in proptest::collection::vec(any::<u8>(), 0..128),
                                         name in "[a-z0-9][a-z0-9._-]{0,63}") {
        let bk = buckets(b"s", &key);
        let bucket = flag_bucket(&bk, &name);
        prop_assert!(bucket < 10_000);
        prop_assert_eq!(bucket, flag_bucket(&buckets(b"s", &key), &name));
        prop_assert!(!Flag::new(&name, 0).is_on(&bk));
        prop_assert!(Flag::new(&name, 10_000).is_on(&bk));
    }
}

/// `flags_on` sets exactly the bits of the on-flags, in config order, for up to 64 flags.
#[test]
fn flags_on_sets_the_bits_of_on_flags() {
    let items: Vec<String> = (0..64)
        .map(|i| format!(r#"{{"name":"f{i}","basis_points":{}}}"#, (i * 157) % 10_001))
        .collect();
    let p = policy(&format!(r#"{{"flags":{{"items":[{}]}}}}"#, items.join(",")));
    let flags = p.flags.as_ref().unwrap();
    for k in 0..300 {
        let b = p.bucket_key.buckets(format!("key{k}").as_bytes());
        let set = p.flags_on(Some(&b));
        for (i, flag) in flags.items.iter().enumerate() {
            assert_eq!(
                set.contains(i),
                flag_bucket(&b, &flag.name) < flag.basis_points
            );
        }
        assert_eq!(set.indices().count() as u32, set.len());
    }
    assert_eq!(p.flags_on(None), FlagSet::EMPTY, "no key: all off");
    let none = policy("{}");
    let b = buckets(b"knhk", b"k");
    assert_eq!(none.flags_on(Some(&b)), FlagSet::EMPTY, "no flags section");
}

/// The header value lists on-flags in config order, comma-separated; nothing on gives `None`.
#[test]
fn header_value_lists_on_flags_in_config_order() {
    let flags = Flags {
        header: "x-knhk-flags".into(),
        items: vec![
            Flag::new("zeta", 1),
            Flag::new("alpha", 1),
            Flag::new("mid", 1),
        ],
    };
    let mut set = FlagSet::EMPTY;
    assert_eq!(flags.header_value(set), None);
    set.insert(2);
    set.insert(0);
    assert_eq!(flags.header_value(set).as_deref(), Some("zeta,mid"));
    set.insert(1);
    assert_eq!(flags.header_value(set).as_deref(), Some("zeta,alpha,mid"));
    // Out-of-range bits are ignored rather than panicking.
    set.insert(64);
    assert_eq!(set.len(), 3);
    assert!(!set.contains(64));
    assert_eq!(flags.header_value(FlagSet::from_bits(1 << 40)), None);
}
