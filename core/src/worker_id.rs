//! Worker ids that differ between the VMs of one Envoy by construction: a counter in shared data.

use crate::host::{CasOutcome, SharedStore};

/// Shared-data key of the id counter: 4 bytes of base, then 4 bytes of ids handed out.
pub const WORKER_IDS_KEY: &str = "knhk.worker.ids";

/// Attempts at the compare-and-swap before giving up on the counter.
const ATTEMPTS: usize = 64;

/// Claim this VM's worker id. The first VM of the process stores `seed` (derived from its
/// start time, so two Envoys are unlikely to share a base) as the base; every VM then takes
/// `base + n` for the next `n`, so ids of VMs sharing the store never repeat (until 2³² VMs).
/// Without a usable store, the seed itself is the id: unique with high probability only.
pub fn claim(store: &dyn SharedStore, seed: u32) -> u32 {
    for _ in 0..ATTEMPTS {
        let Ok((value, cas)) = store.get(WORKER_IDS_KEY) else {
            return seed;
        };
        let (base, taken) = match value.as_deref().and_then(decode) {
            Some(pair) => pair,
            None => (seed, 0),
        };
        let next = encode(base, taken.wrapping_add(1));
        match store.set(WORKER_IDS_KEY, &next, cas) {
            Ok(CasOutcome::Stored) => return base.wrapping_add(taken),
            Ok(CasOutcome::Conflict) => continue,
            Err(_) => return seed,
        }
    }
    seed
}

fn decode(bytes: &[u8]) -> Option<(u32, u32)> {
    let bytes: &[u8; 8] = bytes.try_into().ok()?;
    let base = u32::from_be_bytes(bytes[..4].try_into().ok()?);
    let taken = u32::from_be_bytes(bytes[4..].try_into().ok()?);
    Some((base, taken))
}

fn encode(base: u32, taken: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&base.to_be_bytes());
    out[4..].copy_from_slice(&taken.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{MemoryShared, RefusingShared};
    use std::collections::BTreeSet;

    #[test]
    fn vms_sharing_a_store_get_distinct_ids_even_with_equal_seeds() {
        let store = MemoryShared::default();
        let ids: BTreeSet<u32> = (0..100).map(|_| claim(&store, 7)).collect();
        assert_eq!(ids.len(), 100);
        assert_eq!(
            ids.iter().next(),
            Some(&7),
            "the first VM's seed is the base"
        );
    }

    #[test]
    fn racing_writers_retry_and_still_differ() {
        let store = MemoryShared::default();
        let first = claim(&store, u32::MAX);
        *store.forced_conflicts.borrow_mut() = 5;
        let second = claim(&store, 1);
        assert_eq!((first, second), (u32::MAX, 0), "base wraps, no repeat");
    }

    #[test]
    fn a_corrupt_counter_is_replaced_not_trusted() {
        let store = MemoryShared::default();
        store.set(WORKER_IDS_KEY, b"junk", None).unwrap();
        assert_eq!(claim(&store, 40), 40);
        assert_eq!(claim(&store, 99), 41);
    }

    #[test]
    fn without_a_store_the_seed_is_the_id() {
        assert_eq!(claim(&RefusingShared, 12345), 12345);
    }
}
