//! Checkpoint text round trips, strict parsing, and signature verification with key sets.

use super::*;
use crate::merkle::{leaf_hash, EMPTY_ROOT};
use proptest::prelude::*;

/// The example from the C2SP tlog-checkpoint specification parses and re-renders exactly.
#[test]
fn spec_example_round_trips() {
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let c = Checkpoint::parse(text).unwrap();
    assert_eq!(c.origin, "example.com/behind-the-sofa");
    assert_eq!(c.tree_size, 20_852_163);
    assert!(c.extensions.is_empty());
    assert_eq!(c.to_text().unwrap(), text);
}

/// The timestamp extension is written as a line and read back.
#[test]
fn timestamp_extension_round_trips() {
    let c = Checkpoint::new("knhk.test/log", 5, leaf_hash(b"x"))
        .unwrap()
        .with_timestamp(1_700_000_000_000_000_000);
    let text = c.to_text().unwrap();
    assert!(text.ends_with("\ntimestamp_ns 1700000000000000000\n"));
    let back = Checkpoint::parse(&text).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.timestamp_ns(), Some(1_700_000_000_000_000_000));
}

/// Every malformed shape is refused: missing lines, blank lines, bad size, bad root, no final
/// newline, bad origin, oversize text.
#[test]
fn malformed_checkpoints_are_refused() {
    let root = STANDARD.encode(EMPTY_ROOT);
    let short_root = STANDARD.encode([0u8; 31]);
    let unpadded = root.trim_end_matches('=').to_owned();
    let cases = [
        String::new(),
        "origin\n".to_owned(),
        "origin\n1\n".to_owned(),
        format!("origin\n1\n{root}"),
        format!("origin\n01\n{root}\n"),
        format!("origin\n-1\n{root}\n"),
        format!("origin\n+1\n{root}\n"),
        format!("origin\n1 \n{root}\n"),
        format!("origin\n18446744073709551616\n{root}\n"),
        format!("origin\n1\n{short_root}\n"),
        format!("origin\n1\n{unpadded}\n"),
        "origin\n1\n!!!!\n".to_owned(),
        format!("origin\n1\n{root}\n\n"),
        format!("origin\n1\n{root}\next\n\n"),
        format!("\n1\n{root}\n"),
        format!("has space\n1\n{root}\n"),
        format!("a+b\n1\n{root}\n"),
        format!("origin\n1\n{root}\n{}\n", "x".repeat(MAX_CHECKPOINT_LEN)),
    ];
    for text in &cases {
        assert!(Checkpoint::parse(text).is_err(), "accepted {text:?}");
    }
}

/// Rendering refuses fields that would frame a different checkpoint.
#[test]
fn rendering_refuses_injection() {
    let mut c = Checkpoint::new("origin", 1, EMPTY_ROOT).unwrap();
    c.extensions.push("a\n999".into());
    assert_eq!(c.to_text(), Err(CheckpointError::InvalidExtension));
    c.extensions.clear();
    c.origin = "evil\n999".into();
    assert_eq!(c.to_text(), Err(CheckpointError::InvalidOrigin));
    assert_eq!(
        Checkpoint::new("", 1, EMPTY_ROOT),
        Err(CheckpointError::InvalidOrigin)
    );
}

/// RFC 8032 test 1: a published Ed25519 signature verifies, and a flipped bit does not.
#[test]
fn ed25519_rfc8032_vector() {
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let pk = unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let sig = unhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    );
    verify_with_key(Alg::Ed25519, &pk, b"", &sig).unwrap();
    let mut bad = sig.clone();
    bad[0] ^= 1;
    assert_eq!(
        verify_with_key(Alg::Ed25519, &pk, b"", &bad),
        Err(CheckpointError::BadSignature)
    );
    assert_eq!(
        verify_with_key(Alg::Ed25519, &pk[..31], b"", &sig),
        Err(CheckpointError::MalformedPublicKey(Alg::Ed25519))
    );
    assert_eq!(
        verify_with_key(Alg::Ed25519, &pk, b"", &sig[..63]),
        Err(CheckpointError::MalformedSignature(Alg::Ed25519))
    );
}

fn ed_key(seed: u8, version: u32, retired: bool) -> (ed25519_dalek::SigningKey, PublicKeyVersion) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let pk = PublicKeyVersion {
        provider: "local".into(),
        key_id: "k".into(),
        version,
        alg: Alg::Ed25519,
        public_key: sk.verifying_key().to_bytes().to_vec(),
        retired,
    };
    (sk, pk)
}

fn ed_sign(sk: &ed25519_dalek::SigningKey, version: u32, msg: &[u8]) -> SignatureRecord {
    use ed25519_dalek::Signer as _;
    SignatureRecord {
        provider: "local".into(),
        key_id: "k".into(),
        key_version: version,
        alg: Alg::Ed25519,
        sig: sk.sign(msg).to_bytes().to_vec(),
    }
}

/// Every non-retired version verifies; retired, unknown, wrong-algorithm and wrong-key
/// signatures each fail with their own error.
#[test]
fn key_set_verification() {
    let (sk1, pk1) = ed_key(1, 1, false);
    let (sk2, pk2) = ed_key(2, 2, false);
    let (sk3, pk3) = ed_key(3, 3, true);
    let keys = vec![pk1, pk2, pk3];
    let msg = b"checkpoint text\n";
    assert_eq!(
        verify_signature(msg, &ed_sign(&sk1, 1, msg), &keys)
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        verify_signature(msg, &ed_sign(&sk2, 2, msg), &keys)
            .unwrap()
            .version,
        2
    );
    assert!(matches!(
        verify_signature(msg, &ed_sign(&sk3, 3, msg), &keys),
        Err(CheckpointError::RetiredKey { version: 3, .. })
    ));
    assert!(matches!(
        verify_signature(msg, &ed_sign(&sk1, 4, msg), &keys),
        Err(CheckpointError::UnknownKey { version: 4, .. })
    ));
    assert_eq!(
        verify_signature(msg, &ed_sign(&sk1, 2, msg), &keys),
        Err(CheckpointError::BadSignature)
    );
    let mut wrong_alg = ed_sign(&sk1, 1, msg);
    wrong_alg.alg = Alg::EcdsaP256;
    assert!(matches!(
        verify_signature(msg, &wrong_alg, &keys),
        Err(CheckpointError::AlgorithmMismatch { .. })
    ));
    let mut other_provider = ed_sign(&sk1, 1, msg);
    other_provider.provider = "transit".into();
    assert!(matches!(
        verify_signature(msg, &other_provider, &keys),
        Err(CheckpointError::UnknownKey { .. })
    ));
}

/// ECDSA P-256 signatures in fixed r‖s form verify with a SEC1 key (compressed or not).
#[test]
fn ecdsa_p256_verification() {
    use p256::ecdsa::signature::Signer as _;
    let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let vk = sk.verifying_key();
    let msg = b"tree head";
    let sig: p256::ecdsa::Signature = sk.sign(msg);
    let raw = sig.to_bytes().to_vec();
    for pk in [
        vk.to_encoded_point(false).as_bytes().to_vec(),
        vk.to_encoded_point(true).as_bytes().to_vec(),
    ] {
        verify_with_key(Alg::EcdsaP256, &pk, msg, &raw).unwrap();
        assert_eq!(
            verify_with_key(Alg::EcdsaP256, &pk, b"other", &raw),
            Err(CheckpointError::BadSignature)
        );
    }
    assert_eq!(
        verify_with_key(Alg::EcdsaP256, &[4, 1, 2], msg, &raw),
        Err(CheckpointError::MalformedPublicKey(Alg::EcdsaP256))
    );
    let pk = vk.to_encoded_point(false).as_bytes().to_vec();
    assert_eq!(
        verify_with_key(Alg::EcdsaP256, &pk, msg, &raw[..63]),
        Err(CheckpointError::MalformedSignature(Alg::EcdsaP256))
    );
}

/// Signature records and key versions serialise to JSON with base64 bytes and strict fields.
#[test]
fn json_forms_are_strict() {
    let (sk, pk) = ed_key(1, 1, false);
    let rec = ed_sign(&sk, 1, b"m");
    let json = serde_json::to_string(&rec).unwrap();
    assert!(json.contains("\"alg\":\"ed25519\""));
    assert_eq!(serde_json::from_str::<SignatureRecord>(&json).unwrap(), rec);
    let pk_json = serde_json::to_string(&pk).unwrap();
    assert_eq!(
        serde_json::from_str::<PublicKeyVersion>(&pk_json).unwrap(),
        pk
    );
    let extra = json.replacen('{', "{\"x\":1,", 1);
    assert!(serde_json::from_str::<SignatureRecord>(&extra).is_err());
    let bad_b64 = json.replacen("\"sig\":\"", "\"sig\":\"!", 1);
    assert!(serde_json::from_str::<SignatureRecord>(&bad_b64).is_err());
}

proptest! {
    /// Any well-formed checkpoint renders and parses back to itself.
    #[test]
    fn checkpoints_round_trip(
        origin in "[a-z0-9./-]{1,40}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        exts in prop::collection::vec("[ -~]{1,30}", 0..4),
    ) {
        let mut c = Checkpoint::new(&origin, size, root).unwrap();
        c.extensions = exts;
        let text = c.to_text().unwrap();
        prop_assert_eq!(Checkpoint::parse(&text).unwrap(), c);
    }

    /// Arbitrary text never panics the parser, and whatever parses re-renders identically.
    #[test]
    fn arbitrary_text_never_panics(text in "[\\PC\n]{0,120}") {
        if let Ok(c) = Checkpoint::parse(&text) {
            prop_assert_eq!(c.to_text().unwrap(), text);
        }
    }
}
