//! Deterministic bucketing: a keyed SipHash-2-4 (128-bit output) of the routing key into
//! 10,000 buckets, keyed by the salt.
//!
//! One digest yields two independent buckets: the *routing* bucket (digest bytes 0..4), which
//! decides stable vs canary, and the *priority* bucket (bytes 4..8), which orders keys for load
//! shedding. Using different bytes keeps shedding uncorrelated with canary membership (a canary
//! user is not more likely to be shed) at the cost of one hash per request. Bytes 8..16 are the
//! *flag seed* from which [`crate::flags`] derives every feature flag's bucket, so flags cost no
//! second hash and are independent of both buckets. All 16 bytes are the key digest receipts
//! carry instead of the raw key.
//!
//! The SipHash key is derived from the salt once per policy ([`BucketKey::new`]: the first 16
//! bytes of SHA-256 of a domain label and the salt), so a request costs one SipHash of the key
//! alone, about a tenth of the SHA-256 compression this layout replaced (layout 2; the first
//! layout hashed `len(salt) || salt || key` with SHA-256 per request; README, "Bucketing").
//! SipHash is a pseudorandom function under its key: for a fixed salt the buckets are uniform
//! and independent of each other, and two salts give independent keys and so independent
//! canary sets. It is not a commitment: like any hash of a guessable key, a digest can be
//! matched by whoever knows the salt and guesses the key, which is why the agent re-keys digests
//! before logging them.

use sha2::{Digest, Sha256};
use siphasher::sip128::SipHasher24;

/// Number of buckets; weights are expressed in basis points of this space (0.01 % each).
pub const BUCKETS: u16 = 10_000;

/// Domain label of the salt → SipHash key derivation (layout 2).
const KEY_LABEL: &[u8] = b"knhk bucket key v2\0";

/// The two buckets derived from one routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    /// Decides the route: canary when `routing < canary_basis_points`.
    pub routing: u16,
    /// Decides shedding order: a class shedding `level` basis points sheds keys with `priority < level`.
    pub priority: u16,
    /// The 16-byte digest: what receipts carry instead of the raw key.
    pub key_digest: [u8; 16],
    /// Digest bytes 8..16 as a little-endian u64: the seed of every feature flag's bucket.
    pub flag_seed: u64,
}

/// The SipHash key of one salt, derived once when a policy is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketKey {
    k0: u64,
    k1: u64,
}

impl BucketKey {
    /// The key of `salt`: the first 16 bytes of SHA-256(label || salt), as two little-endian
    /// u64 words. The label ends in a NUL, which no salt can move across (the salt is the rest).
    pub fn new(salt: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(KEY_LABEL);
        hasher.update(salt);
        let digest = hasher.finalize();
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&digest[0..8]);
        k1.copy_from_slice(&digest[8..16]);
        BucketKey {
            k0: u64::from_le_bytes(k0),
            k1: u64::from_le_bytes(k1),
        }
    }

    /// Hash `key` into its routing and priority buckets, its digest and its flag seed.
    pub fn buckets(&self, key: &[u8]) -> Buckets {
        let hash = SipHasher24::new_with_keys(self.k0, self.k1).hash(key);
        // The digest is h1 then h2, little-endian: bytes 0..4 are h1's low half, 4..8 its
        // high half, 8..16 are h2.
        Buckets {
            routing: reduce(hash.h1 & 0xffff_ffff),
            priority: reduce(hash.h1 >> 32),
            key_digest: hash.as_bytes(),
            flag_seed: hash.h2,
        }
    }
}

/// The splitmix64 finaliser (no increment): a bijective avalanche mixer of a u64, shared by
/// the flag buckets ([`crate::flags`]) and the latency sampler's seeding.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash `key` under `salt` (deriving the salt's key first: policies keep a [`BucketKey`], so
/// the per-request path does not pay for the derivation).
pub fn buckets(salt: &[u8], key: &[u8]) -> Buckets {
    BucketKey::new(salt).buckets(key)
}

/// Map a uniform value onto `0..BUCKETS`. For a 32-bit value the modulo bias is
/// 2^32 mod 10^4 = 7,296 buckets one count in 429,497 more likely (2.3e-6 relative); for a
/// 64-bit value (flags) it is below 1e-15.
pub(crate) fn reduce(value: u64) -> u16 {
    // The remainder is < 10_000, so it always fits in u16.
    (value % u64::from(BUCKETS)) as u16
}

/// True when a routing bucket falls on the canary side of `canary_basis_points`.
///
/// Because the comparison is `<`, raising the weight only adds buckets to canary and lowering
/// it only removes them: a key's route changes at most once along a monotonic ramp.
pub fn is_canary(routing_bucket: u16, canary_basis_points: u16) -> bool {
    routing_bucket < canary_basis_points
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Known-answer vector: pins the exact layout so filter, agent and auditors agree. A change
    /// here re-buckets every key: every running canary would move users. Checked once against
    /// an independent implementation of SipHash-2-4 (the reference algorithm, in Python).
    #[test]
    fn known_answer_vector_is_stable() {
        let b = buckets(b"salt-1", b"user-42");
        assert_eq!(hex(&b.key_digest), "5149d95f6fd3997265a3d01dcb7a90af");
        assert_eq!((b.routing, b.priority), (5601, 3759));
        assert_eq!(b.flag_seed, 0xaf90_7acb_1dd0_a365);
    }

    /// The hash is SipHash-2-4 with 128-bit output: the reference vector of the SipHash paper
    /// (key 00..0f, empty message), through the same key words the salt derivation yields.
    #[test]
    fn hash_is_siphash_2_4_128() {
        let key = BucketKey {
            k0: u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            k1: u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        };
        assert_eq!(
            hex(&key.buckets(b"").key_digest),
            "a3817f04ba25a8e66df67214c7550293"
        );
    }

    /// The salt's key is SHA-256 of the label and the salt, first 16 bytes little-endian.
    #[test]
    fn salt_key_is_the_documented_derivation() {
        let digest = Sha256::digest(b"knhk bucket key v2\0salt-1");
        let key = BucketKey::new(b"salt-1");
        assert_eq!(key.k0.to_le_bytes()[..], digest[0..8]);
        assert_eq!(key.k1.to_le_bytes()[..], digest[8..16]);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn salt_key_boundary_is_unambiguous() {
        let mut same = 0;
        for i in 0..200u32 {
            let key = format!("c{i}");
            if buckets(b"ab", key.as_bytes()) == buckets(b"a", format!("b{key}").as_bytes()) {
                same += 1;
            }
        }
        assert!(
            same < 3,
            "{same} of 200 collided across the salt/key boundary"
        );
    }

    /// 100k random keys at 10 % land on canary within ±0.5 percentage points.
    #[test]
    fn uniform_split_at_ten_percent() {
        let n = 100_000u32;
        let canary = (0..n)
            .filter(|i| {
                is_canary(
                    buckets(b"rollout-a", format!("key-{i}-x").as_bytes()).routing,
                    1_000,
                )
            })
            .count();
        let share = canary as f64 / f64::from(n);
        assert!((share - 0.10).abs() <= 0.005, "canary share {share}");
    }

    /// Every bucket decile receives about a tenth of the keys (chi-square style sanity bound).
    #[test]
    fn buckets_are_uniform_across_deciles() {
        let n = 100_000u32;
        let mut deciles = [0u32; 10];
        for i in 0..n {
            deciles[usize::from(buckets(b"s", &i.to_le_bytes()).routing / 1_000)] += 1;
        }
        for (d, count) in deciles.iter().enumerate() {
            let share = f64::from(*count) / f64::from(n);
            assert!((share - 0.1).abs() < 0.005, "decile {d} share {share}");
        }
    }

    /// Routing and priority buckets are independent: canary keys are not favoured for shedding.
    #[test]
    fn priority_is_independent_of_routing() {
        let n = 50_000u32;
        let (mut canary, mut canary_low_priority) = (0u32, 0u32);
        for i in 0..n {
            let b = buckets(b"s", format!("k{i}").as_bytes());
            if b.routing < 2_000 {
                canary += 1;
                if b.priority < 5_000 {
                    canary_low_priority += 1;
                }
            }
        }
        let share = f64::from(canary_low_priority) / f64::from(canary);
        assert!(
            (share - 0.5).abs() < 0.02,
            "P(priority<50% | canary) = {share}"
        );
    }

    /// Changing the salt reshuffles keys: the canary sets of two salts overlap only by chance.
    #[test]
    fn salts_are_independent() {
        let n = 50_000u32;
        let both = (0..n)
            .filter(|i| {
                let key = format!("user{i}");
                is_canary(buckets(b"salt-a", key.as_bytes()).routing, 5_000)
                    && is_canary(buckets(b"salt-b", key.as_bytes()).routing, 5_000)
            })
            .count();
        let share = both as f64 / f64::from(n);
        assert!(
            (share - 0.25).abs() < 0.01,
            "overlap {share}, expected ~0.25"
        );
    }

    proptest! {
        /// Raising the weight never moves a key from canary back to stable.
        #[test]
        fn ramp_is_monotonic(key in proptest::collection::vec(any::<u8>(), 0..64),
                             salt in proptest::collection::vec(any::<u8>(), 0..32),
                             a in 0u16..=10_000, b in 0u16..=10_000) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let bucket = buckets(&salt, &key).routing;
            prop_assert!(!is_canary(bucket, low) || is_canary(bucket, high));
        }

        /// A policy's cached key hashes exactly as the salt does, and the buckets and seed are
        /// the documented bytes of the digest.
        #[test]
        fn cached_key_and_layout_match(
            salt in proptest::collection::vec(any::<u8>(), 0..80),
            key in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let b = buckets(&salt, &key);
            prop_assert_eq!(b, BucketKey::new(&salt).buckets(&key));
            let d = b.key_digest;
            let word = |at: usize| u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
            prop_assert_eq!(u32::from(b.routing), word(0) % 10_000);
            prop_assert_eq!(u32::from(b.priority), word(4) % 10_000);
            prop_assert_eq!(&b.flag_seed.to_le_bytes()[..], &d[8..16]);
        }

        /// Buckets are always in range and the function is deterministic.
        #[test]
        fn buckets_in_range_and_deterministic(key in proptest::collection::vec(any::<u8>(), 0..256)) {
            let b = buckets(b"salt", &key);
            prop_assert!(b.routing < BUCKETS && b.priority < BUCKETS);
            prop_assert_eq!(b, buckets(b"salt", &key));
        }
    }

    /// 0 basis points sends nobody to canary; 10,000 sends everybody.
    #[test]
    fn weight_extremes() {
        for i in 0..1_000u32 {
            let b = buckets(b"s", &i.to_be_bytes()).routing;
            assert!(!is_canary(b, 0));
            assert!(is_canary(b, BUCKETS));
        }
    }
}
