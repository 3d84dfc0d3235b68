//! The versions of a cloud KMS key as a signer last read them: knhk's version number → the
//! provider's id for that version (an AWS key id, a Key Vault version id), with its public key
//! once read. Shared by the AWS and Azure signers.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedVersion {
    /// The provider's id of the version.
    pub id: String,
    /// Its public key as an uncompressed SEC1 point, once read.
    pub public_key: Option<Vec<u8>>,
}

/// Version number → [`CachedVersion`], behind a lock.
#[derive(Debug, Default)]
pub struct VersionCache(Mutex<BTreeMap<u32, CachedVersion>>);

impl VersionCache {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, CachedVersion>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of every version.
    pub fn snapshot(&self) -> BTreeMap<u32, CachedVersion> {
        self.lock().clone()
    }

    /// Version `n`, if known.
    pub fn get(&self, n: u32) -> Option<CachedVersion> {
        self.lock().get(&n).cloned()
    }

    /// Replace the versions by `found` (number → id), keeping the public keys already read of
    /// versions whose id did not change; returns the new set.
    pub fn replace(&self, found: BTreeMap<u32, String>) -> BTreeMap<u32, CachedVersion> {
        let mut cache = self.lock();
        let merged: BTreeMap<u32, CachedVersion> = found
            .into_iter()
            .map(|(n, id)| {
                let public_key = cache
                    .get(&n)
                    .filter(|v| v.id == id)
                    .and_then(|v| v.public_key.clone());
                (n, CachedVersion { id, public_key })
            })
            .collect();
        *cache = merged.clone();
        merged
    }

    /// Add (or replace) version `n`.
    pub fn insert(&self, n: u32, version: CachedVersion) {
        self.lock().insert(n, version);
    }

    /// Remember the public key of version `n`, if it is still the version with `id`.
    pub fn set_public_key(&self, n: u32, id: &str, public_key: Vec<u8>) {
        if let Some(v) = self.lock().get_mut(&n).filter(|v| v.id == id) {
            v.public_key = Some(public_key);
        }
    }
}

/// The number of the version with provider id `id` in `versions`.
pub fn number_of(versions: &BTreeMap<u32, CachedVersion>, id: &str) -> Option<u32> {
    versions.iter().find(|(_, v)| v.id == id).map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A re-read keeps the public keys of unchanged versions and forgets those whose id moved.
    #[test]
    fn replace_keeps_public_keys_of_unchanged_versions() {
        let cache = VersionCache::default();
        cache.replace(BTreeMap::from([(1, "a".to_owned()), (2, "b".to_owned())]));
        cache.set_public_key(1, "a", vec![1]);
        cache.set_public_key(2, "b", vec![2]);
        cache.set_public_key(2, "not-b", vec![9]);
        let now = cache.replace(BTreeMap::from([(1, "a".to_owned()), (2, "c".to_owned())]));
        assert_eq!(now[&1].public_key, Some(vec![1]));
        assert_eq!(now[&2].public_key, None, "version 2 is another key now");
        assert_eq!(number_of(&now, "c"), Some(2));
        assert_eq!(number_of(&now, "b"), None);
    }
}
