//! Store tests: atomic batches, durability across reopen, and crashes (a leaked connection and
//! a real `kill -9` of a writer process) that lose no committed batch.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use knhk_core::class::{Class, Route};
use knhk_core::merkle;
use knhk_core::receipt::{encode_batch, key_digest, LogEntry, Receipt, ReceiptBuilder};

use super::*;

/// A distinct, valid receipt per `i`.
pub(crate) fn sample(i: u64) -> Receipt {
    ReceiptBuilder::new(i)
        .time_ns(1_700_000_000_000_000_000 + i)
        .key_digest(key_digest(b"salt", &i.to_le_bytes()))
        .route(Some(if i.is_multiple_of(3) {
            Route::Canary
        } else {
            Route::Stable
        }))
        .priority(((i * 7) % 10_000) as u16)
        .class(Class::ALL[(i % 3) as usize])
        .latency_us((i % 5000) as u32)
        .config_epoch(1)
        .worker_id((i % 2) as u32)
        .build()
}

fn entries(range: Range<u64>) -> Vec<LogEntry> {
    range.map(|i| LogEntry::Receipt(sample(i))).collect()
}

/// Appends assign contiguous indexes, and the root matches a recomputation from the entries.
#[test]
fn append_assigns_indexes_and_root() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = ReceiptStore::open(&tmp.path().join("r.db"), "knhk.test/log").unwrap();
    assert_eq!(s.append(&entries(0..3)).unwrap(), 0..3);
    assert_eq!(s.append(&entries(3..10)).unwrap(), 3..10);
    let hashes: Vec<_> = (0..10)
        .map(|i| merkle::leaf_hash(&LogEntry::Receipt(sample(i)).encode().unwrap()))
        .collect();
    assert_eq!(s.root(), merkle::root(&hashes));
    assert_eq!(s.root_at(4).unwrap(), merkle::root(&hashes[..4]));
    assert_eq!(s.entries(8, 100).unwrap().len(), 2);
    assert!(matches!(s.entry(10), Err(ReceiptsError::OutOfRange { .. })));
    assert!(matches!(
        s.root_at(11),
        Err(ReceiptsError::OutOfRange { .. })
    ));
}

/// Past several 256-leaf groups (which the in-memory tree no longer holds leaf by leaf), roots,
/// inclusion and consistency proofs at old sizes and leaf hashes equal the recomputation from
/// the entries, before and after a reopen.
#[test]
fn proofs_into_pruned_groups_match_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    let total = 1_000u64;
    let hashes: Vec<_> = (0..total)
        .map(|i| merkle::leaf_hash(&LogEntry::Receipt(sample(i)).encode().unwrap()))
        .collect();
    let check = |s: &ReceiptStore| {
        assert_eq!(s.size(), total);
        for size in [1u64, 255, 256, 300, 512, 777, total] {
            let n = size as usize;
            assert_eq!(
                s.root_at(size).unwrap(),
                merkle::root(&hashes[..n]),
                "root {size}"
            );
            for index in [0u64, 100, 255, 256, 299, 511, 700, 999] {
                if index >= size {
                    continue;
                }
                assert_eq!(
                    s.inclusion_proof(index, size).unwrap(),
                    merkle::inclusion_proof(&hashes[..n], index).unwrap(),
                    "inclusion {index} in {size}"
                );
            }
            for first in [0u64, 1, 200, 256, 301, 512] {
                if first > size {
                    continue;
                }
                assert_eq!(
                    s.consistency_proof(first, size).unwrap(),
                    merkle::consistency_proof(&hashes[..n], first).unwrap(),
                    "consistency {first} to {size}"
                );
            }
        }
        for i in [0u64, 255, 256, 767, 768, 999] {
            assert_eq!(s.leaf_hash_at(i).unwrap(), hashes[i as usize], "leaf {i}");
        }
        assert!(matches!(
            s.leaf_hash_at(total),
            Err(ReceiptsError::OutOfRange { .. })
        ));
    };
    {
        let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
        for start in (0..total).step_by(97) {
            s.append(&entries(start..(start + 97).min(total))).unwrap();
        }
        check(&s);
    }
    check(&ReceiptStore::open(&path, "knhk.test/log").unwrap());
}

/// Every row of the `nodes` table is the root of the leaves it covers, and every complete
/// aligned subtree of 256 leaves and up has its row.
fn assert_nodes_match(s: &ReceiptStore, hashes: &[merkle::Hash]) {
    let mut stmt = s
        .conn
        .prepare("SELECT level, idx, hash FROM nodes")
        .unwrap();
    let rows: Vec<(u32, u64, Vec<u8>)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut expected = 0;
    let mut span = 256usize;
    while span <= hashes.len() {
        expected += hashes.len() / span;
        span *= 2;
    }
    assert_eq!(rows.len(), expected, "one node per complete subtree");
    for (level, idx, hash) in rows {
        let span = 256usize << level;
        let start = idx as usize * span;
        assert_eq!(
            hash,
            merkle::root(&hashes[start..start + span]).to_vec(),
            "node {level}/{idx}"
        );
    }
}

fn hashes_of(range: Range<u64>) -> Vec<merkle::Hash> {
    range
        .map(|i| merkle::leaf_hash(&LogEntry::Receipt(sample(i)).encode().unwrap()))
        .collect()
}

/// Opening reads the right edge, not the leaves: with the leaf rows of the older half gone,
/// the store still opens at the right size and root, and proofs that need only nodes and the
/// remaining leaves still match the recomputation.
#[test]
fn reopen_reads_the_edge_not_the_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    let total = 10_000u64;
    let hashes = hashes_of(0..total);
    {
        let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
        for start in (0..total).step_by(1_000) {
            s.append(&entries(start..start + 1_000)).unwrap();
        }
        assert_nodes_match(&s, &hashes);
        s.conn
            .execute("DELETE FROM leaves WHERE idx < 5000", [])
            .unwrap();
    }
    let s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
    assert_eq!(s.size(), total);
    assert_eq!(s.root(), merkle::root(&hashes));
    assert_eq!(s.root_at(6_000).unwrap(), merkle::root(&hashes[..6_000]));
    assert_eq!(
        s.inclusion_proof(9_000, total).unwrap(),
        merkle::inclusion_proof(&hashes, 9_000).unwrap()
    );
    assert_eq!(
        s.consistency_proof(5_120, total).unwrap(),
        merkle::consistency_proof(&hashes, 5_120).unwrap()
    );
}

/// A store written before the `nodes` table existed gets every node at its first open, and
/// appends after it keep them.
#[test]
fn a_store_without_nodes_gets_them_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    {
        let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
        s.append(&entries(0..1_000)).unwrap();
        s.conn
            .execute_batch("DELETE FROM nodes; DELETE FROM meta WHERE key = 'nodes';")
            .unwrap();
    }
    let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
    assert_nodes_match(&s, &hashes_of(0..1_000));
    s.append(&entries(1_000..1_300)).unwrap();
    let hashes = hashes_of(0..1_300);
    assert_nodes_match(&s, &hashes);
    drop(s);
    let s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
    assert_eq!(s.root(), merkle::root(&hashes));
    assert_eq!(
        s.inclusion_proof(3, 1_300).unwrap(),
        merkle::inclusion_proof(&hashes, 3).unwrap()
    );
}

/// Nodes that do not match the leaves are refused at open, each with a message naming what is
/// wrong: an edge node missing, a node beyond the leaves, the newest group's root altered.
#[test]
fn nodes_that_do_not_match_the_leaves_are_refused() {
    let cases = [
        (
            "DELETE FROM nodes WHERE level = 0 AND idx = 2",
            "is missing",
        ),
        (
            "INSERT INTO nodes (level, idx, hash) VALUES (0, 3, zeroblob(32))",
            "lies beyond",
        ),
        (
            "UPDATE nodes SET hash = zeroblob(32) WHERE level = 0 AND idx = 2",
            "do not match their stored root",
        ),
    ];
    for (tamper, message) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.db");
        {
            let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
            s.append(&entries(0..800)).unwrap();
            s.conn.execute(tamper, []).unwrap();
        }
        match ReceiptStore::open(&path, "knhk.test/log") {
            Err(ReceiptsError::Corrupt(m)) => assert!(m.contains(message), "{tamper}: {m}"),
            other => panic!("{tamper}: {other:?}"),
        }
    }
}

/// A reader keeps the log as it was when taken — rows, root and proofs — while the writer goes
/// on appending (a WAL reader never blocks it).
#[test]
fn reader_is_a_snapshot_that_does_not_block_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = ReceiptStore::open(&tmp.path().join("r.db"), "knhk.test/log").unwrap();
    s.append(&entries(0..600)).unwrap();
    let root = s.root();
    let reader = s.reader().unwrap();
    assert_eq!(s.append(&entries(600..900)).unwrap(), 600..900);
    assert_eq!(s.size(), 900);
    assert_eq!(reader.size(), 600);
    assert_eq!(reader.root(), root);
    assert_eq!(reader.entries(0, 10_000).unwrap().len(), 600);
    assert_eq!(
        reader.consistency_proof(300, 600).unwrap(),
        s.consistency_proof(300, 600).unwrap()
    );
    assert!(reader.consistency_proof(300, 700).is_err());
}

/// The database runs in WAL mode with synchronous=FULL.
#[test]
fn durability_pragmas_are_set() {
    let tmp = tempfile::tempdir().unwrap();
    let s = ReceiptStore::open(&tmp.path().join("r.db"), "knhk.test/log").unwrap();
    let mode: String = s
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = s
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "FULL");
}

/// Everything appended is there after close and reopen, with the same root.
#[test]
fn durable_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    let root = {
        let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
        s.append(&entries(0..50)).unwrap();
        s.root()
    };
    let s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
    assert_eq!(s.size(), 50);
    assert_eq!(s.root(), root);
    assert_eq!(
        LogEntry::decode(&s.entry(49).unwrap()).unwrap(),
        LogEntry::Receipt(sample(49))
    );
}

/// A store opened under another origin is refused.
#[test]
fn origin_is_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    drop(ReceiptStore::open(&path, "knhk.test/a").unwrap());
    assert!(matches!(
        ReceiptStore::open(&path, "knhk.test/b"),
        Err(ReceiptsError::OriginMismatch { .. })
    ));
}

/// Dropping the process state without closing (connection leaked) loses no committed batch.
#[test]
fn leaked_connection_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
    for b in 0..20 {
        s.append(&entries(b * 10..b * 10 + 10)).unwrap();
    }
    let root = s.root();
    std::mem::forget(s);
    let s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
    assert_eq!(s.size(), 200);
    assert_eq!(s.root(), root);
}

/// A batch with one invalid entry is refused whole: nothing of it is stored.
#[test]
fn failed_batch_appends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = ReceiptStore::open(&tmp.path().join("r.db"), "knhk.test/log").unwrap();
    s.append(&entries(0..2)).unwrap();
    let bad = LogEntry::KeyRotation(knhk_core::receipt::KeyRotation {
        time_ns: 1,
        provider: String::new(),
        key_id: "k".into(),
        alg: knhk_core::checkpoint::Alg::Ed25519,
        previous_version: 1,
        new_version: 2,
        public_key: vec![1; 32],
    });
    let mut batch = entries(2..5);
    batch.push(bad);
    assert!(s.append(&batch).is_err());
    assert_eq!(s.size(), 2);
    assert_eq!(s.entries(0, 10).unwrap().len(), 2);
}

/// A store whose leaves no longer match its newest checkpoint is refused at open.
#[test]
fn tampered_store_is_detected_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    {
        let mut s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
        s.append(&entries(0..4)).unwrap();
        let cp = knhk_core::checkpoint::Checkpoint::new("knhk.test/log", 4, s.root()).unwrap();
        s.record_checkpoint(&SignedCheckpoint {
            text: cp.to_text().unwrap(),
            signature: knhk_core::checkpoint::SignatureRecord {
                provider: "local".into(),
                key_id: "k".into(),
                key_version: 1,
                alg: knhk_core::checkpoint::Alg::Ed25519,
                sig: vec![0; 64],
            },
        })
        .unwrap();
        s.conn
            .execute("UPDATE leaves SET hash = zeroblob(32) WHERE idx = 2", [])
            .unwrap();
    }
    assert!(matches!(
        ReceiptStore::open(&path, "knhk.test/log"),
        Err(ReceiptsError::Corrupt(_))
    ));
}

/// Child half of `kill9_loses_no_acknowledged_batch`: appends batches forever, printing
/// `ack <size>` after each commit. Runs only when that test starts it.
#[test]
#[ignore = "started as a child process by kill9_loses_no_acknowledged_batch"]
fn crash_writer() {
    let Some(path) = std::env::var_os("KNHK_CRASH_DB") else {
        return;
    };
    let mut s = ReceiptStore::open(std::path::Path::new(&path), "knhk.test/log").unwrap();
    let mut next = 0u64;
    loop {
        let batch = encode_batch(&(next..next + 25).map(sample).collect::<Vec<_>>()).unwrap();
        let decoded: Vec<LogEntry> = knhk_core::receipt::decode_batch(&batch)
            .unwrap()
            .into_iter()
            .map(LogEntry::Receipt)
            .collect();
        let range = s.append(&decoded).unwrap();
        next = range.end;
        println!("ack {}", range.end);
    }
}

/// `kill -9` of a process in the middle of appending loses no batch it acknowledged, and the
/// reopened store is consistent (every row decodes, the root recomputes).
#[test]
fn kill9_loses_no_acknowledged_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "receipts::store::tests::crash_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KNHK_CRASH_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = 0u64;
    let mut seen = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked = n.parse().unwrap();
            seen += 1;
            if seen == 40 {
                break;
            }
        }
    }
    child.kill().unwrap();
    // Acknowledgements printed before the kill landed are still in the pipe.
    for line in lines {
        if let Some(n) = line.unwrap().strip_prefix("ack ") {
            acked = n.parse().unwrap();
        }
    }
    let status = child.wait().unwrap();
    if seen < 40 {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!("writer stopped early ({status}); stderr:\n{err}");
    }
    let s = ReceiptStore::open(&path, "knhk.test/log").unwrap();
    assert!(s.size() >= acked, "acked {acked}, found {}", s.size());
    let rows = s.entries(0, s.size()).unwrap();
    let hashes: Vec<_> = rows
        .iter()
        .map(|(i, e)| {
            assert_eq!(LogEntry::decode(e).unwrap(), LogEntry::Receipt(sample(*i)));
            merkle::leaf_hash(e)
        })
        .collect();
    assert_eq!(merkle::root(&hashes), s.root());
    assert_nodes_match(&s, &hashes);
}
