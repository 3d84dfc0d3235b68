//! The hot keys: Space-Saving (Metwally, Agrawal, El Abbadi 2005) over receipt key digests, in
//! bounded memory. With `k` counters over a stream of `N` items, every key whose true count
//! exceeds `N / k` is monitored, and a monitored key's count overestimates its true count by at
//! most its recorded error, itself at most `N / k`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a key by folding its bytes (a multiply-rotate per 8 bytes). The keys are the log's
/// digests, which the agent keyed with HMAC under its secret digest key at ingest: uniform,
/// and not choosable by whoever sends receipts, so SipHash's resistance to chosen collisions
/// buys nothing here. It cost a fifth of the agent's CPU under full ingest (measured with
/// `perf` during `cargo xtask bench-receipts`, docs/benchmarks.md).
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(23) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// Key → heap position, hashed with [`DigestHasher`].
type Positions = HashMap<[u8; 16], usize, BuildHasherDefault<DigestHasher>>;

/// A monitored key's estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// The key.
    pub key: [u8; 16],
    /// Counted occurrences: at least the true count, at most `count - error` below it.
    pub count: u64,
    /// The overestimate bound: the true count lies in `[count - error, count]`.
    pub error: u64,
    /// A value carried with the key, the latest given (knhk: its routing bucket).
    pub tag: u16,
}

/// Space-Saving with a fixed number of counters.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    total: u64,
    /// Min-heap by count of (count, error, key).
    heap: Vec<Estimate>,
    /// Key → its index in `heap`.
    index: Positions,
}

impl SpaceSaving {
    /// A sketch of `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SpaceSaving {
            capacity,
            total: 0,
            heap: Vec::with_capacity(capacity),
            index: Positions::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Counters kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The worst overestimate of any count: `N / k` at most.
    pub fn error_bound(&self) -> u64 {
        if self.heap.len() < self.capacity {
            0
        } else {
            self.heap.first().map_or(0, |e| e.count)
        }
    }

    /// Count one occurrence of `key`, carrying `tag` with it.
    pub fn add(&mut self, key: [u8; 16], tag: u16) {
        self.total += 1;
        if let Some(&i) = self.index.get(&key) {
            self.heap[i].count += 1;
            self.heap[i].tag = tag;
            self.sift_down(i);
            return;
        }
        if self.heap.len() < self.capacity {
            self.heap.push(Estimate {
                key,
                count: 1,
                error: 0,
                tag,
            });
            let i = self.heap.len() - 1;
            self.index.insert(key, i);
            self.sift_up(i);
            return;
        }
        // Replace the smallest counter: the newcomer inherits its count as error.
        let min = self.heap[0];
        self.index.remove(&min.key);
        self.heap[0] = Estimate {
            key,
            count: min.count + 1,
            error: min.count,
            tag,
        };
        self.index.insert(key, 0);
        self.sift_down(0);
    }

    /// The `n` keys with the highest counts, highest first.
    pub fn top(&self, n: usize) -> Vec<Estimate> {
        let mut all = self.heap.clone();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.heap.swap(i, j);
        for at in [i, j] {
            if let Some(position) = self.index.get_mut(&self.heap[at].key) {
                *position = at;
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].count <= self.heap[i].count {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < self.heap.len() && self.heap[l].count < self.heap[smallest].count {
                smallest = l;
            }
            if r < self.heap.len() && self.heap[r].count < self.heap[smallest].count {
                smallest = r;
            }
            if smallest == i {
                return;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k
    }

    proptest! {
        /// On any stream: every monitored count brackets the true count within its error, every
        /// error is at most N / k, and every key with more than N / k occurrences is monitored.
        #[test]
        fn counts_are_bracketed_within_n_over_k(
            stream in proptest::collection::vec(0u64..200, 1..3000),
            k in 1usize..64,
        ) {
            let mut sketch = SpaceSaving::new(k);
            let mut truth: HashMap<u64, u64> = HashMap::new();
            for &i in &stream {
                sketch.add(key(i), 0);
                *truth.entry(i).or_default() += 1;
            }
            let n = stream.len() as u64;
            prop_assert_eq!(sketch.total(), n);
            prop_assert!(sketch.error_bound() <= n / k as u64);
            let top = sketch.top(k);
            for e in &top {
                let i = u64::from_le_bytes(e.key[..8].try_into().unwrap());
                let t = truth[&i];
                prop_assert!(e.count >= t && e.count - e.error <= t, "{:?} true {}", e, t);
                prop_assert!(e.error <= n / k as u64);
            }
            for (i, t) in truth {
                if t > n / k as u64 {
                    prop_assert!(top.iter().any(|e| e.key == key(i)), "key {} ({}) missing", i, t);
                }
            }
        }
    }
}
