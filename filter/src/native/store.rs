//! Cross-worker shared data in process memory, with the semantics the wasm build gets from
//! Envoy's shared data: values under keys, each write bumps the key's CAS token, and a
//! conditional write with a stale token conflicts. The admission windows, the worker-id claims
//! and the last good configuration live here, so the same `knhk-core` code coordinates the
//! workers of both builds.
//!
//! One mutex guards the map. It is taken by the timer (once per worker and tick) and at
//! configuration, never on a request's path: requests read the shed levels their worker
//! copied at its last sync.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use knhk_core::host::{CasOutcome, HostError, SharedStore};

/// The process's store (one per Envoy process, shared by every filter configuration, as a
/// wasm `vm_id`'s shared data is).
pub fn process_store() -> &'static ProcessStore {
    static STORE: OnceLock<ProcessStore> = OnceLock::new();
    STORE.get_or_init(ProcessStore::default)
}

/// Shared data in process memory.
#[derive(Debug, Default)]
pub struct ProcessStore {
    entries: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

impl ProcessStore {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, (Vec<u8>, u32)>> {
        // A panic while holding the lock cannot leave an entry half-written (each write is one
        // insert), so a poisoned lock's data is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SharedStore for ProcessStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok(match self.entries().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<CasOutcome, HostError> {
        let mut entries = self.entries();
        let current = entries.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return Ok(CasOutcome::Conflict);
        }
        // Tokens start at 1 and skip 0 on wrap, so a stored value always has a token.
        let next = match current.unwrap_or(0).wrapping_add(1) {
            0 => 1,
            n => n,
        };
        entries.insert(key.to_owned(), (value.to_vec(), next));
        Ok(CasOutcome::Stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::admission::AdmissionCoordinator;
    use knhk_core::Policy;
    use std::sync::Arc;

    /// Writes bump the token; a stale conditional write conflicts and changes nothing.
    #[test]
    fn conditional_writes_follow_envoys_cas_semantics() {
        let store = ProcessStore::default();
        assert_eq!(store.get("k").unwrap(), (None, None));
        assert_eq!(store.set("k", b"a", None).unwrap(), CasOutcome::Stored);
        let (value, cas) = store.get("k").unwrap();
        assert_eq!(value.as_deref(), Some(&b"a"[..]));
        assert_eq!(store.set("k", b"b", cas).unwrap(), CasOutcome::Stored);
        assert_eq!(store.set("k", b"c", cas).unwrap(), CasOutcome::Conflict);
        assert_eq!(store.get("k").unwrap().0.as_deref(), Some(&b"b"[..]));
        assert_eq!(
            store.set("new", b"x", Some(1)).unwrap(),
            CasOutcome::Conflict,
            "a conditional write to a missing key conflicts"
        );
    }

    /// Workers on several threads publish their samples through the store and all read the
    /// same shed level back: the admission sync of the wasm build, over threads.
    #[test]
    fn workers_on_threads_agree_on_shed_levels() {
        let store = Arc::new(ProcessStore::default());
        let policy = Arc::new(Policy::from_json(br#"{"admission":{"enabled":true}}"#).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, policy) = (Arc::clone(&store), Arc::clone(&policy));
                std::thread::spawn(move || {
                    let mut a = AdmissionCoordinator::new();
                    for now in 1..200u64 {
                        a.record(&policy, knhk_core::Class::R1, 10_000_000_000);
                        a.sync(&*store, &policy, now * 50).unwrap();
                    }
                    a
                })
            })
            .collect();
        let mut coordinators: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for a in &mut coordinators {
            a.sync(&*store, &policy, 200 * 50).unwrap();
        }
        let levels: Vec<_> = coordinators.iter().map(|a| a.levels()).collect();
        assert!(
            levels[0][0] > 0,
            "slow R1 requests raised its shed level: {levels:?}"
        );
        assert!(levels.iter().all(|l| *l == levels[0]), "{levels:?}");
    }
}
