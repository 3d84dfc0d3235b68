//! Tests of the tile layout, bundles, notes, and proofs computed from tiles.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};

use super::layout::{tile_for, tiles_between, TILE_WIDTH};
use super::read::Tiles;
use super::{bundle, note, TileError, TileId};
use crate::checkpoint::{Alg, Checkpoint, PublicKeyVersion, SignatureRecord};
use crate::cosignature::{Cosignature, WitnessKey};
use crate::export::SignedCheckpoint;
use crate::merkle::{self, leaf_hash, Hash};
use crate::receipt::{BatchOrigin, LogEntry, Origin, ReceiptBuilder};
use crate::verify::verify_bundle;

fn id(level: u8, index: u64, width: u16) -> TileId {
    TileId {
        level,
        index,
        width,
    }
}

#[test]
fn paths_follow_the_specification() {
    assert_eq!(id(0, 1_234_067, 256).path(), "tile/0/x001/x234/067");
    assert_eq!(id(2, 0, 1).path(), "tile/2/000.p/1");
    assert_eq!(id(1, 999, 256).path(), "tile/1/999");
    assert_eq!(id(0, 1000, 17).path(), "tile/0/x001/000.p/17");
    assert_eq!(id(0, 5, 256).entries_path(), "tile/entries/005");
    assert_eq!(id(0, 5, 112).entries_path(), "tile/entries/005.p/112");
}

#[test]
fn a_tree_of_70000_leaves_has_the_tiles_the_specification_lists() {
    let tiles = tiles_between(0, 70_000);
    let level0: Vec<_> = tiles.iter().filter(|t| t.level == 0).collect();
    assert_eq!(level0.iter().filter(|t| t.is_full()).count(), 273);
    assert_eq!(level0.last().unwrap().width, 112);
    let level1: Vec<_> = tiles.iter().filter(|t| t.level == 1).collect();
    assert_eq!(level1.len(), 2);
    assert!(level1[0].is_full());
    assert_eq!(level1[1].width, 17);
    assert_eq!(
        tiles.iter().filter(|t| t.level == 2).collect::<Vec<_>>(),
        [&id(2, 0, 1)]
    );
    assert_eq!(tiles.iter().filter(|t| t.level > 2).count(), 0);
    assert_eq!(tiles_between(0, 256), [id(0, 0, 256), id(1, 0, 1)]);
    assert!(tiles_between(0, 0).is_empty());
}

#[test]
fn growing_publishes_only_what_changed_and_ends_with_every_tile() {
    let sizes = [
        0u64, 1, 3, 255, 256, 257, 511, 512, 1000, 65_535, 65_536, 70_000,
    ];
    let mut written = std::collections::BTreeSet::new();
    for pair in sizes.windows(2) {
        let new = tiles_between(pair[0], pair[1]);
        for t in &new {
            assert!(written.insert(*t), "{t:?} written twice");
        }
        for t in tiles_between(0, pair[1]) {
            assert!(
                written.contains(&t),
                "{t:?} of size {} was never written",
                pair[1]
            );
        }
    }
    assert!(tiles_between(700, 700).is_empty());
    assert!(tiles_between(701, 700).is_empty());
}

/// Every tile and bundle of a tree of `entries`, as a publisher writes them.
fn publish(entries: &[Vec<u8>]) -> (Vec<Hash>, BTreeMap<String, Vec<u8>>) {
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let size = leaves.len() as u64;
    let mut out = BTreeMap::new();
    for tile in tiles_between(0, size) {
        let span = TILE_WIDTH.pow(u32::from(tile.level));
        let mut bytes = Vec::new();
        for j in tile.first()..tile.first() + u64::from(tile.width) {
            let (lo, hi) = ((j * span) as usize, ((j + 1) * span) as usize);
            bytes.extend_from_slice(&merkle::root(&leaves[lo..hi]));
        }
        out.insert(tile.path(), bytes);
        if tile.level == 0 {
            let lo = tile.first() as usize;
            let hi = lo + usize::from(tile.width);
            out.insert(
                tile.entries_path(),
                bundle::encode(tile, &entries[lo..hi]).unwrap(),
            );
        }
    }
    (leaves, out)
}

/// A log of `n` entries: a batch origin leaf naming a pod, then receipts of its batch.
fn entries(n: usize) -> Vec<Vec<u8>> {
    let origin = LogEntry::BatchOrigin(BatchOrigin {
        time_ns: 1,
        count: u32::try_from(n - 1).unwrap(),
        origin: Origin {
            pod: "api-7".to_owned(),
            namespace: "shop".to_owned(),
            node: "node-1".to_owned(),
        },
        peer: "10.0.0.7".to_owned(),
    });
    std::iter::once(origin.encode().unwrap())
        .chain((1..n as u64).map(|i| {
            LogEntry::Receipt(ReceiptBuilder::new(i).build())
                .encode()
                .unwrap()
        }))
        .collect()
}

/// Fetch everything a computation asks for from `store`, until it asks for nothing more.
fn resolve<T>(
    tiles: &mut Tiles,
    store: &BTreeMap<String, Vec<u8>>,
    f: impl Fn(&Tiles) -> Result<T, TileError>,
) -> Result<T, TileError> {
    for _ in 0..16 {
        let result = f(tiles);
        let missing = tiles.take_missing();
        if missing.is_empty() {
            return result;
        }
        for path in missing {
            let bytes = store.get(&path).ok_or(TileError::Missing(path.clone()))?;
            tiles.insert(path, bytes.clone());
        }
    }
    panic!("did not converge");
}

#[test]
fn roots_and_inclusion_proofs_from_tiles_equal_those_from_the_leaves() {
    for n in [1usize, 2, 3, 255, 256, 257, 700, 65_536 + 300] {
        let entries = entries(n);
        let (leaves, store) = publish(&entries);
        let mut tiles = Tiles::new(n as u64);
        let root = resolve(&mut tiles, &store, Tiles::root).unwrap();
        assert_eq!(root, merkle::root(&leaves), "size {n}");
        let probes: Vec<u64> = [0, n / 3, n / 2, n - 1].iter().map(|&i| i as u64).collect();
        for index in probes {
            let proof = resolve(&mut tiles, &store, |t| t.inclusion_proof(index)).unwrap();
            assert_eq!(
                proof,
                merkle::inclusion_proof(&leaves, index).unwrap(),
                "size {n} index {index}"
            );
            let entry = resolve(&mut tiles, &store, |t| t.entry(index)).unwrap();
            assert_eq!(entry, entries[index as usize]);
        }
    }
}

#[test]
fn the_audit_accepts_honest_tiles_and_names_each_kind_of_tampering() {
    let n = 256 * 3 + 40;
    let mut entries = entries(n);
    let (leaves, store) = publish(&entries);
    let root = merkle::root(&leaves);
    let mut tiles = Tiles::new(n as u64);
    let audit = resolve(&mut tiles, &store, |t| t.audit(&root)).unwrap();
    assert_eq!(audit.entries, n as u64);
    assert_eq!(audit.pruned, 0);

    // A pruned payload: a zero-length entry, its hash still in the tree.
    entries[5].clear();
    let (_, mut pruned_store) = publish(&entries);
    for t in tiles_between(0, n as u64) {
        pruned_store.insert(t.path(), store[&t.path()].clone());
    }
    let mut tiles = Tiles::new(n as u64);
    let audit = resolve(&mut tiles, &pruned_store, |t| t.audit(&root)).unwrap();
    assert_eq!((audit.entries, audit.pruned), (n as u64 - 1, 1));

    let tamper = |path: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut bad = store.clone();
        f(bad.get_mut(path).unwrap());
        let mut tiles = Tiles::new(n as u64);
        resolve(&mut tiles, &bad, |t| t.audit(&root)).unwrap_err()
    };
    let flip = |b: &mut Vec<u8>| b[40] ^= 1;
    assert!(matches!(
        tamper("tile/0/001", &flip),
        TileError::Mismatch(_)
    ));
    assert!(matches!(
        tamper("tile/0/003.p/40", &flip),
        TileError::Mismatch(_)
    ));
    assert!(matches!(
        tamper("tile/1/000.p/3", &flip),
        TileError::Mismatch(_)
    ));
    assert!(matches!(
        tamper("tile/entries/002", &flip),
        TileError::Mismatch(_)
    ));
    assert!(matches!(
        tamper("tile/0/000", &|b| b.truncate(100)),
        TileError::TileLength { .. }
    ));
    assert!(matches!(
        tamper("tile/entries/000", &|b| b.push(0)),
        TileError::Bundle { .. }
    ));
    let mut missing = store.clone();
    missing.remove("tile/0/002");
    let mut tiles = Tiles::new(n as u64);
    assert_eq!(
        resolve(&mut tiles, &missing, |t| t.audit(&root)).unwrap_err(),
        TileError::Missing("tile/0/002".to_owned())
    );
    let mut tiles = Tiles::new(n as u64);
    assert!(matches!(
        resolve(&mut tiles, &store, |t| t.audit(&[9; 32])).unwrap_err(),
        TileError::Mismatch(m) if m.contains("root hash")
    ));
}

#[test]
fn bundles_refuse_hostile_bytes() {
    let tile = id(0, 0, 2);
    let good = bundle::encode(tile, &[b"ab".to_vec(), Vec::new()]).unwrap();
    assert_eq!(good, [0, 2, b'a', b'b', 0, 0]);
    assert_eq!(
        bundle::decode(tile, &good).unwrap(),
        [b"ab".to_vec(), Vec::new()]
    );
    for bad in [&good[..1], &good[..3], &good[..4], &[0, 9, 1][..]] {
        assert!(matches!(
            bundle::decode(tile, bad),
            Err(TileError::Bundle { .. })
        ));
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0, 0]);
    assert!(bundle::decode(tile, &longer).is_err());
    assert!(matches!(
        bundle::encode(tile, &[vec![0; 70_000]]),
        Err(TileError::EntryTooLong { index: 0, .. })
    ));
}

fn log_key(sk: &SigningKey) -> PublicKeyVersion {
    PublicKeyVersion {
        provider: "local".to_owned(),
        key_id: "checkpoint".to_owned(),
        version: 1,
        alg: Alg::Ed25519,
        public_key: sk.verifying_key().to_bytes().to_vec(),
        retired: false,
    }
}

fn signed(sk: &SigningKey, size: u64, root: Hash) -> SignedCheckpoint {
    let text = Checkpoint::new("knhk.test/tiles", size, root)
        .unwrap()
        .with_timestamp(5)
        .to_text()
        .unwrap();
    SignedCheckpoint {
        signature: SignatureRecord {
            provider: "local".to_owned(),
            key_id: "checkpoint".to_owned(),
            key_version: 1,
            alg: Alg::Ed25519,
            sig: sk.sign(text.as_bytes()).to_bytes().to_vec(),
        },
        text,
    }
}

#[test]
fn the_note_is_a_standard_ed25519_signed_note_and_opens_with_the_trusted_key_only() {
    let sk = SigningKey::from_bytes(&[3; 32]);
    let key = log_key(&sk);
    let cp = signed(&sk, 7, [1; 32]);
    let witness_sk = SigningKey::from_bytes(&[4; 32]);
    let witness = WitnessKey {
        name: "knhk.test/witness".to_owned(),
        public_key: witness_sk.verifying_key().to_bytes().to_vec(),
    };
    let msg = crate::cosignature::signed_message(&cp.text, 9).unwrap();
    let cosig = Cosignature::new(&witness, 9, witness_sk.sign(msg.as_bytes()).to_bytes())
        .unwrap()
        .to_line();
    let text = note::render(&cp, &key, std::slice::from_ref(&cosig)).unwrap();
    assert!(text.starts_with(&format!("{}\n\u{2014} knhk.test/tiles ", cp.text)));
    // Standard signed-note Ed25519: key ID from type 0x01, signature over the text.
    let line = text.lines().nth(5).unwrap();
    let blob = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        line.rsplit(' ').next().unwrap(),
    )
    .unwrap();
    let mut h = Sha256::new();
    h.update(b"knhk.test/tiles\n\x01");
    h.update(&key.public_key);
    assert_eq!(blob[..4], h.finalize()[..4]);
    assert_eq!(blob[4..], cp.signature.sig[..]);

    let opened = note::open(&text, std::slice::from_ref(&key)).unwrap();
    assert_eq!(note::unverified_checkpoint(&text).unwrap(), opened.parsed);
    assert!(
        note::unverified_checkpoint(&cp.text).is_err(),
        "no signature lines"
    );
    assert_eq!(opened.checkpoint, cp);
    assert_eq!(opened.key, key);
    assert_eq!(opened.cosignatures, [cosig]);

    let stranger = log_key(&SigningKey::from_bytes(&[5; 32]));
    assert!(note::open(&text, &[stranger]).is_err());
    let mut retired = key.clone();
    retired.retired = true;
    assert!(note::open(&text, &[retired]).is_err());
    for bad in [
        "",
        "knhk.test/tiles\n7\n",
        &text.replace("\n\n", "\n"),
        &text[..text.len() - 1],
        &text.replace('\u{2014}', "-"),
        &format!("{text}\u{0007}"),
        &"x".repeat(note::MAX_NOTE_LEN + 1),
    ] {
        assert!(
            matches!(
                note::open(bad, std::slice::from_ref(&key)),
                Err(TileError::Note(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn a_bundle_from_tiles_verifies_and_a_forged_signature_does_not() {
    let sk = SigningKey::from_bytes(&[3; 32]);
    let key = log_key(&sk);
    let n = 300;
    let entries = entries(n);
    let (leaves, store) = publish(&entries);
    let cp = signed(&sk, n as u64, merkle::root(&leaves));
    let opened = note::open(
        &note::render(&cp, &key, &[]).unwrap(),
        std::slice::from_ref(&key),
    )
    .unwrap();
    let mut tiles = Tiles::new(n as u64);
    let bundle = resolve(&mut tiles, &store, |t| t.proof_bundle(&opened, 260)).unwrap();
    assert_eq!(bundle.entry, entries[260]);
    let origin = bundle.origin.as_ref().unwrap();
    assert_eq!((origin.leaf_index, &origin.entry), (0, &entries[0]));
    verify_bundle(&bundle, Some(std::slice::from_ref(&key))).unwrap();

    let mut forged = cp.clone();
    forged.signature.sig[0] ^= 1;
    let opened = note::open(
        &note::render(&forged, &key, &[]).unwrap(),
        std::slice::from_ref(&key),
    )
    .unwrap();
    let bundle = resolve(&mut tiles, &store, |t| t.proof_bundle(&opened, 260)).unwrap();
    assert!(verify_bundle(&bundle, Some(std::slice::from_ref(&key))).is_err());
}

#[test]
fn tile_for_names_the_partial_tile_of_the_size() {
    assert_eq!(tile_for(0, 10, 300), Some(id(0, 0, 256)));
    assert_eq!(tile_for(0, 290, 300), Some(id(0, 1, 44)));
    assert_eq!(tile_for(1, 0, 300), Some(id(1, 0, 1)));
    assert_eq!(tile_for(1, 1, 300), None);
    assert_eq!(tile_for(0, 300, 300), None);
}
