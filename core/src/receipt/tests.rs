//! Round trips, hostile input and layout pinning for receipts, batches and log entries.

use super::*;
use crate::bucket::buckets;
use crate::checkpoint::Alg;
use proptest::prelude::*;

fn sample() -> Receipt {
    Receipt {
        time_ns: 1_700_000_000_123_456_789,
        key_digest: key_digest(b"salt-1", b"user-42"),
        route: Some(Route::Canary),
        routing_bucket: 1234,
        priority: 9876,
        requested_class: Class::R1,
        class: Class::W1,
        admission: Admission::Degraded,
        status: 503,
        latency_us: 4242,
        config_epoch: 77,
        worker_id: 3,
    }
}

fn arb_receipt() -> impl Strategy<Value = Receipt> {
    let bucket = prop_oneof![0u16..BUCKETS, Just(NO_BUCKET)];
    (
        any::<u64>(),
        any::<[u8; 16]>(),
        0u8..3,
        bucket.clone(),
        bucket,
        0usize..3,
        0usize..3,
        0usize..6,
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(t, k, r, rb, p, rc, c, a, s, l, e, w)| Receipt {
            time_ns: t,
            key_digest: k,
            route: route_from(r).unwrap(),
            routing_bucket: rb,
            priority: p,
            requested_class: Class::ALL[rc],
            class: Class::ALL[c],
            admission: Admission::ALL[a],
            status: s,
            latency_us: l,
            config_epoch: e,
            worker_id: w,
        })
}

/// The layout is pinned byte for byte: offsets, widths and little-endian order.
#[test]
fn layout_is_pinned() {
    let r = sample();
    let b = r.encode();
    assert_eq!(b.len(), RECORD_LEN);
    assert_eq!(b[0], 1);
    assert_eq!(&b[1..9], &r.time_ns.to_le_bytes());
    assert_eq!(&b[9..25], &r.key_digest);
    assert_eq!(b[25], 2);
    assert_eq!(&b[26..28], &1234u16.to_le_bytes());
    assert_eq!(&b[28..30], &9876u16.to_le_bytes());
    assert_eq!(&b[30..33], &[0, 1, 1]);
    assert_eq!(&b[33..35], &503u16.to_le_bytes());
    assert_eq!(&b[35..39], &4242u32.to_le_bytes());
    assert_eq!(&b[39..47], &77u64.to_le_bytes());
    assert_eq!(&b[47..51], &3u32.to_le_bytes());
}

/// The key digest is the prefix of the same salted hash the buckets come from, never the key.
#[test]
fn key_digest_matches_bucketing_hash() {
    let d = key_digest(b"salt-1", b"user-42");
    let b = buckets(b"salt-1", b"user-42");
    let first = u32::from_le_bytes(d[0..4].try_into().unwrap());
    let second = u32::from_le_bytes(d[4..8].try_into().unwrap());
    assert_eq!((first % 10_000) as u16, b.routing);
    assert_eq!((second % 10_000) as u16, b.priority);
    assert_ne!(key_digest(b"salt-2", b"user-42"), d);
    assert_ne!(key_digest(b"ab", b"c"), key_digest(b"a", b"bc"));
}

/// Truncated, oversized and unknown-version records are refused with typed errors.
#[test]
fn malformed_records_are_refused() {
    let b = sample().encode();
    assert!(matches!(
        Receipt::decode(&b[..50]),
        Err(ReceiptError::Truncated { actual: 50, .. })
    ));
    assert!(matches!(
        Receipt::decode(&[]),
        Err(ReceiptError::Truncated { actual: 0, .. })
    ));
    let mut long = b.to_vec();
    long.push(0);
    assert!(matches!(
        Receipt::decode(&long),
        Err(ReceiptError::Oversized { actual: 52, .. })
    ));
    let mut v2 = b;
    v2[0] = 2;
    assert_eq!(
        Receipt::decode(&v2),
        Err(ReceiptError::UnknownVersion {
            what: "receipt",
            version: 2
        })
    );
}

/// Out-of-range enumerations and buckets are refused, naming the field.
#[test]
fn out_of_range_fields_are_refused() {
    let b = sample().encode();
    let cases: [(usize, u8, &str); 5] = [
        (25, 3, "route"),
        (30, 3, "requested_class"),
        (31, 9, "class"),
        (32, 6, "admission"),
        (27, 0x30, "routing_bucket"),
    ];
    for (off, val, field) in cases {
        let mut bad = b;
        bad[off] = val;
        match Receipt::decode(&bad) {
            Err(ReceiptError::InvalidField { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// A batch round-trips, and a bad magic, version, count, truncation or trailing byte is refused.
#[test]
fn batch_round_trip_and_rejections() {
    let records = vec![sample(); 3];
    let b = encode_batch(&records).unwrap();
    assert_eq!(&b[..4], b"KNRB");
    assert_eq!(b.len(), BATCH_HEADER_LEN + 3 + 3 * RECORD_LEN);
    assert_eq!(decode_batch(&b).unwrap(), records);
    // Version 1 (no origin section), as filters of older releases send it, still decodes.
    let mut v1 = b[..BATCH_HEADER_LEN].to_vec();
    v1[4] = 1;
    v1.extend_from_slice(&b[BATCH_HEADER_LEN + 3..]);
    let old = decode_origin_batch(&v1).unwrap();
    assert_eq!(
        (old.origin, old.receipts),
        (Origin::default(), records.clone())
    );
    assert_eq!(decode_batch(&encode_batch(&[]).unwrap()).unwrap(), vec![]);

    let mut magic = b.clone();
    magic[0] = b'X';
    assert_eq!(decode_batch(&magic), Err(ReceiptError::BadMagic));
    let mut ver = b.clone();
    ver[4] = 9;
    assert!(matches!(
        decode_batch(&ver),
        Err(ReceiptError::UnknownVersion { what: "batch", .. })
    ));
    assert!(matches!(
        decode_batch(&b[..b.len() - 1]),
        Err(ReceiptError::Truncated { .. })
    ));
    assert!(matches!(
        decode_batch(&b[..5]),
        Err(ReceiptError::Truncated { .. })
    ));
    let mut trailing = b.clone();
    trailing.push(0);
    assert!(matches!(
        decode_batch(&trailing),
        Err(ReceiptError::Oversized { .. })
    ));
    let mut huge = b.clone();
    huge[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_batch(&huge),
        Err(ReceiptError::TooManyRecords { .. })
    ));
    let too_many = vec![sample(); MAX_BATCH_RECORDS + 1];
    assert!(matches!(
        encode_batch(&too_many),
        Err(ReceiptError::TooManyRecords { .. })
    ));
    let name = "a".repeat(MAX_IDENTITY_LEN);
    let widest = Origin::new(&name, &name, &name).unwrap();
    let max = encode_origin_batch(&widest, &vec![sample(); MAX_BATCH_RECORDS]).unwrap();
    assert_eq!(max.len(), MAX_BATCH_LEN);
}

/// One bad record poisons the whole batch: nothing is returned.
#[test]
fn one_bad_record_refuses_the_batch() {
    let mut b = encode_batch(&[sample(), sample()]).unwrap();
    b[BATCH_HEADER_LEN + 3 + RECORD_LEN + 25] = 7;
    assert!(matches!(
        decode_batch(&b),
        Err(ReceiptError::InvalidField { field: "route", .. })
    ));
}

fn rotation() -> KeyRotation {
    KeyRotation {
        time_ns: 42,
        provider: "transit".into(),
        key_id: "knhk".into(),
        alg: Alg::EcdsaP256,
        previous_version: 1,
        new_version: 2,
        public_key: vec![4; 65],
    }
}

/// Log entries of both kinds round-trip; unknown kinds, truncation and trailing bytes fail.
#[test]
fn log_entries_round_trip_and_reject_garbage() {
    for e in [
        LogEntry::Receipt(sample()),
        LogEntry::KeyRotation(rotation()),
    ] {
        let b = e.encode().unwrap();
        assert_eq!(LogEntry::decode(&b).unwrap(), e);
        for cut in 0..b.len() {
            assert!(LogEntry::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(1);
        assert!(LogEntry::decode(&long).is_err());
    }
    assert_eq!(
        LogEntry::decode(&[9, 1, 2]),
        Err(ReceiptError::UnknownEntryKind(9))
    );
    let mut empty_id = rotation();
    empty_id.key_id.clear();
    assert!(matches!(
        LogEntry::KeyRotation(empty_id).encode(),
        Err(ReceiptError::InvalidText {
            field: "key_id",
            ..
        })
    ));
    let mut no_key = rotation();
    no_key.public_key.clear();
    assert!(LogEntry::KeyRotation(no_key).encode().is_err());
}

proptest! {
    /// Every valid receipt round-trips through its encoding and through a batch.
    #[test]
    fn receipts_round_trip(rs in prop::collection::vec(arb_receipt(), 0..40)) {
        for r in &rs {
            prop_assert_eq!(Receipt::decode(&r.encode()).unwrap(), *r);
        }
        prop_assert_eq!(decode_batch(&encode_batch(&rs).unwrap()).unwrap(), rs);
    }

    /// Arbitrary bytes never panic the decoders, and whatever decodes re-encodes identically.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(r) = Receipt::decode(&bytes) {
            prop_assert_eq!(r.encode().to_vec(), bytes.clone());
        }
        let _ = decode_batch(&bytes);
        if let Ok(e) = LogEntry::decode(&bytes) {
            prop_assert_eq!(e.encode().unwrap(), bytes);
        }
    }
}
