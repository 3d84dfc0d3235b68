//! Known-answer vectors (the Certificate Transparency reference tree) and properties of the
//! Merkle module.

use super::*;
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}

/// The eight reference leaves of the certificate-transparency test suite.
fn reference_leaves() -> Vec<Hash> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|d| leaf_hash(&unhex(d)))
    .collect()
}

/// Reference roots for sizes 0..=8.
const REFERENCE_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn synthetic(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
        .collect()
}

/// The empty root constant is SHA-256 of the empty string, and the node/leaf prefixes differ.
#[test]
fn empty_root_and_prefixes() {
    assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
    assert_eq!(root(&[]), EMPTY_ROOT);
    assert_eq!(leaf_hash(b""), h(REFERENCE_ROOTS[1]));
    let l = reference_leaves();
    assert_ne!(node_hash(&l[0], &l[1]), node_hash(&l[1], &l[0]));
}

/// Roots of every prefix of the reference tree match the published values.
#[test]
fn reference_roots_match() {
    let leaves = reference_leaves();
    for (n, want) in REFERENCE_ROOTS.iter().enumerate() {
        assert_eq!(root(&leaves[..n]), h(want), "size {n}");
    }
}

/// Inclusion proofs for the reference tree match the published audit paths and verify.
#[test]
fn reference_inclusion_proofs() {
    let leaves = reference_leaves();
    let cases: [(u64, &[&str]); 2] = [
        (
            0,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    let root8 = h(REFERENCE_ROOTS[8]);
    for (index, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        let got = inclusion_proof(&leaves, index).unwrap();
        assert_eq!(got, want, "leaf {index}");
        verify_inclusion(&leaves[index as usize], index, 8, &got, &root8).unwrap();
    }
}

/// Consistency proofs for the reference tree match the published values and verify.
#[test]
fn reference_consistency_proofs() {
    let leaves = reference_leaves();
    let cases: [(u64, usize, &[&str]); 3] = [
        (
            2,
            8,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (first, second, want) in cases {
        let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
        let got = consistency_proof(&leaves[..second], first).unwrap();
        assert_eq!(got, want, "{first}->{second}");
        verify_consistency(
            first,
            second as u64,
            &h(REFERENCE_ROOTS[first as usize]),
            &h(REFERENCE_ROOTS[second]),
            &got,
        )
        .unwrap();
    }
}

/// Out-of-range requests are refused with typed errors instead of panicking.
#[test]
fn out_of_range_requests_are_refused() {
    let leaves = synthetic(5);
    assert_eq!(
        inclusion_proof(&leaves, 5),
        Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        consistency_proof(&leaves, 6),
        Err(MerkleError::SizeOrder {
            first: 6,
            second: 5
        })
    );
    let r = root(&leaves);
    assert!(verify_inclusion(&leaves[0], 5, 5, &[], &r).is_err());
    assert!(verify_consistency(5, 4, &r, &r, &[]).is_err());
}

/// Degenerate consistency cases: equal sizes and the empty first tree.
#[test]
fn degenerate_consistency() {
    let leaves = synthetic(4);
    let r4 = root(&leaves);
    let r3 = root(&leaves[..3]);
    verify_consistency(4, 4, &r4, &r4, &[]).unwrap();
    assert_eq!(
        verify_consistency(4, 4, &r4, &r3, &[]),
        Err(MerkleError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(4, 4, &r4, &r4, &[r3]),
        Err(MerkleError::ProofLength)
    );
    verify_consistency(0, 4, &EMPTY_ROOT, &r4, &[]).unwrap();
    assert_eq!(
        verify_consistency(0, 4, &r3, &r4, &[]),
        Err(MerkleError::FirstRootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 4, &r3, &r4, &[]),
        Err(MerkleError::ProofLength)
    );
}

/// Every inclusion and consistency proof in trees up to 70 leaves verifies, and truncated or
/// extended proofs do not.
#[test]
fn exhaustive_small_trees() {
    let all = synthetic(70);
    let roots: Vec<Hash> = (0..=all.len()).map(|n| root(&all[..n])).collect();
    for n in 1..=all.len() {
        let leaves = &all[..n];
        for i in 0..n {
            let p = inclusion_proof(leaves, i as u64).unwrap();
            verify_inclusion(&leaves[i], i as u64, n as u64, &p, &roots[n]).unwrap();
            let mut longer = p.clone();
            longer.push([0xab; 32]);
            assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &longer, &roots[n]).is_err());
            if !p.is_empty() {
                let shorter = &p[..p.len() - 1];
                assert!(
                    verify_inclusion(&leaves[i], i as u64, n as u64, shorter, &roots[n]).is_err()
                );
            }
        }
        for m in 0..=n {
            let p = consistency_proof(leaves, m as u64).unwrap();
            verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &p).unwrap();
            if m > 0 && m < n {
                let mut longer = p.clone();
                longer.push([0xcd; 32]);
                assert!(
                    verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &longer).is_err()
                );
                let shorter = &p[..p.len() - 1];
                assert!(
                    verify_consistency(m as u64, n as u64, &roots[m], &roots[n], shorter).is_err()
                );
            }
        }
    }
}

/// The frontier gives the same root as the recursive definition at every size.
#[test]
fn frontier_matches_recursive_root() {
    let all = synthetic(300);
    let mut f = Frontier::new();
    assert_eq!(f.root(), EMPTY_ROOT);
    for (i, leaf) in all.iter().enumerate() {
        f.push(*leaf);
        assert_eq!(f.size(), i as u64 + 1);
        assert_eq!(f.root(), subtree_root(&all[..=i]), "size {}", i + 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every leaf's inclusion proof verifies; flipping any bit of the leaf, proof or root, or
    /// changing the index, makes it fail.
    #[test]
    fn inclusion_proofs_verify_and_bit_flips_fail(
        n in 1usize..200,
        pick in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let leaves = synthetic(n);
        let r = root(&leaves);
        let i = pick.index(n);
        let p = inclusion_proof(&leaves, i as u64).unwrap();
        prop_assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &p, &r).is_ok());

        let byte = flip.index(32);
        let mut bad_leaf = leaves[i];
        bad_leaf[byte] ^= 1 << bit;
        prop_assert!(verify_inclusion(&bad_leaf, i as u64, n as u64, &p, &r).is_err());
        let mut bad_root = r;
        bad_root[byte] ^= 1 << bit;
        prop_assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &p, &bad_root).is_err());
        if !p.is_empty() {
            let mut bad = p.clone();
            let k = flip.index(bad.len());
            bad[k][byte] ^= 1 << bit;
            prop_assert!(verify_inclusion(&leaves[i], i as u64, n as u64, &bad, &r).is_err());
        }
        if n > 1 {
            let other = (i + 1) % n;
            prop_assert!(verify_inclusion(&leaves[i], other as u64, n as u64, &p, &r).is_err());
        }
    }

    /// Consistency between any m <= n verifies; any bit flip in the proof or either root fails.
    #[test]
    fn consistency_proofs_verify_and_bit_flips_fail(
        n in 1usize..200,
        pick in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let leaves = synthetic(n);
        let m = pick.index(n + 1);
        let first = root(&leaves[..m]);
        let second = root(&leaves);
        let p = consistency_proof(&leaves, m as u64).unwrap();
        prop_assert!(verify_consistency(m as u64, n as u64, &first, &second, &p).is_ok());

        let byte = flip.index(32);
        let mut bad_first = first;
        bad_first[byte] ^= 1 << bit;
        prop_assert!(verify_consistency(m as u64, n as u64, &bad_first, &second, &p).is_err());
        // Every tree extends the empty tree, so only a non-empty first tree pins the second root.
        if m > 0 {
            let mut bad_second = second;
            bad_second[byte] ^= 1 << bit;
            prop_assert!(verify_consistency(m as u64, n as u64, &first, &bad_second, &p).is_err());
        }
        if !p.is_empty() {
            let mut bad = p.clone();
            let k = flip.index(bad.len());
            bad[k][byte] ^= 1 << bit;
            prop_assert!(verify_consistency(m as u64, n as u64, &first, &second, &bad).is_err());
        }
    }

    /// A tree that diverges from the old one (one leaf changed below m) is never consistent.
    #[test]
    fn rewritten_history_is_inconsistent(n in 2usize..150, pick in any::<prop::sample::Index>()) {
        let leaves = synthetic(n);
        let m = 1 + pick.index(n - 1);
        let first = root(&leaves[..m]);
        let mut forged = leaves.clone();
        forged[m - 1][0] ^= 0xff;
        let p = consistency_proof(&forged, m as u64).unwrap();
        prop_assert!(verify_consistency(m as u64, n as u64, &first, &root(&forged), &p).is_err());
    }
}
