//! Feature flags: which flags are on for a routing key, derived from the routing digest.
//!
//! A flag is on for a key when its *flag bucket* is below the flag's `basis_points`, so raising
//! the basis points only adds keys (monotonic, like the canary weight) and lowering them only
//! removes keys. No second hash of the key is computed: every flag bucket comes from the digest
//! [`crate::bucket::BucketKey::buckets`] already computes for routing.
//!
//! # Derivation (what an auditor recomputes)
//! With `digest` the 16-byte keyed SipHash-2-4 of the key (see [`crate::bucket`]):
//! 1. `seed = u64::from_le_bytes(digest[8..16])` — bytes 0..4 are the routing bucket and
//!    4..8 the priority bucket, so the seed shares no bits with either.
//! 2. `constant(name) = mix64(fnv1a64(name))`, where `fnv1a64` is 64-bit FNV-1a over the
//!    name's UTF-8 bytes (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) and `mix64`
//!    is the splitmix64 finaliser without its increment:
//!    `z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31`
//!    (wrapping multiplications).
//! 3. `flag_bucket = mix64(seed ^ constant(name)) mod 10000`.
//!
//! The seed is uniform and independent of the routing and priority buckets; `mix64` is a
//! bijective avalanche mixer, so two flags (whose constants differ in about half their bits)
//! see unrelated buckets for the same key, and each flag is independent of canary membership.
//! All arithmetic is on `u64` with explicit wrapping, identical in wasm and native builds.
//! A request without a routing key has every flag off.

use crate::bucket::{mix64, reduce, Buckets};

/// Most flags one config may declare (they fit one `u64` bitset).
pub const MAX_FLAGS: usize = 64;
/// Longest flag name, bytes.
pub const MAX_FLAG_NAME_BYTES: usize = 64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The per-flag constant: `mix64(fnv1a64(name))`. Computed once per flag at configure time.
pub fn flag_constant(name: &str) -> u64 {
    mix64(fnv1a64(name.as_bytes()))
}

/// A flag's bucket (`0..10000`) from a key's flag seed and the flag's constant.
pub fn flag_bucket_of(flag_seed: u64, constant: u64) -> u16 {
    reduce(mix64(flag_seed ^ constant))
}

/// The bucket of flag `name` for the key whose digest gave `buckets`.
pub fn flag_bucket(buckets: &Buckets, name: &str) -> u16 {
    flag_bucket_of(buckets.flag_seed, flag_constant(name))
}

/// A validated feature flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Name as configured (`[a-z0-9][a-z0-9._-]*`).
    pub name: String,
    /// On for keys whose flag bucket is below this.
    pub basis_points: u16,
    /// [`flag_constant`] of `name`.
    pub constant: u64,
}

impl Flag {
    /// A flag named `name` at `basis_points`, with its constant computed.
    pub fn new(name: &str, basis_points: u16) -> Flag {
        Flag {
            name: name.to_string(),
            basis_points,
            constant: flag_constant(name),
        }
    }

    /// Whether this flag is on for the key whose digest gave `buckets`.
    pub fn is_on(&self, buckets: &Buckets) -> bool {
        flag_bucket_of(buckets.flag_seed, self.constant) < self.basis_points
    }
}

/// The validated `flags` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// Header the filter writes (lowercase).
    pub header: String,
    /// The flags in config order (at most [`MAX_FLAGS`]); index `i` is bit `i` of a [`FlagSet`].
    pub items: Vec<Flag>,
}

impl Flags {
    /// The flags of `items` that are on for the key whose digest gave `buckets`.
    pub fn on_for(&self, buckets: &Buckets) -> FlagSet {
        let mut set = FlagSet::EMPTY;
        for (i, flag) in self.items.iter().enumerate().take(MAX_FLAGS) {
            if flag.is_on(buckets) {
                set.insert(i);
            }
        }
        set
    }

    /// The header value for `set`: the on-flags' names in config order, comma-separated;
    /// `None` when no flag is on (the header is then removed, not sent empty).
    pub fn header_value(&self, set: FlagSet) -> Option<String> {
        if set.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(16 * set.len() as usize);
        for i in set.indices() {
            if let Some(flag) = self.items.get(i) {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(&flag.name);
            }
        }
        // Bits beyond `items` name nothing; a value without names is no value.
        (!out.is_empty()).then_some(out)
    }
}

/// The on-flags of one request: bit `i` is `flags.items[i]`. A `Copy` bitset, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FlagSet(u64);

impl FlagSet {
    /// No flag on.
    pub const EMPTY: FlagSet = FlagSet(0);

    /// The set with exactly the bits of `bits`.
    pub fn from_bits(bits: u64) -> FlagSet {
        FlagSet(bits)
    }

    /// The raw bits (bit `i` is flag `i`).
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Turn flag `index` on; indices ≥ 64 are ignored.
    pub fn insert(&mut self, index: usize) {
        if index < MAX_FLAGS {
            self.0 |= 1u64 << index;
        }
    }

    /// Whether flag `index` is on.
    pub fn contains(self, index: usize) -> bool {
        index < MAX_FLAGS && self.0 & (1u64 << index) != 0
    }

    /// Whether no flag is on.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of flags on.
    pub fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// Indices of the on-flags, ascending (config order).
    pub fn indices(self) -> impl Iterator<Item = usize> {
        (0..MAX_FLAGS).filter(move |&i| self.contains(i))
    }
}

#[cfg(test)]
mod tests;
