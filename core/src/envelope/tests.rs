//! Signed config envelopes: honest ones open; forged, stale, malformed and invalid ones are
//! refused with distinct errors.

use super::*;
use crate::checkpoint::Alg;
use ed25519_dalek::{Signer as _, SigningKey};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(seed: u8, version: u32) -> PublicKeyVersion {
    PublicKeyVersion {
        provider: "local".into(),
        key_id: "config".into(),
        version,
        alg: Alg::Ed25519,
        public_key: key(seed).verifying_key().to_bytes().to_vec(),
        retired: false,
    }
}

fn payload(epoch: u64, policy: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&ConfigPayload {
        epoch,
        issued_at_ns: 1,
        policy: serde_json::value::to_raw_value(&policy).unwrap(),
        next_keys: None,
    })
    .unwrap()
}

fn seal(payload: Vec<u8>, seed: u8, version: u32) -> Vec<u8> {
    let sig = key(seed).sign(&signing_input(&payload));
    serde_json::to_vec(&Envelope {
        payload_type: PAYLOAD_TYPE.into(),
        payload,
        signatures: vec![SignatureRecord {
            provider: "local".into(),
            key_id: "config".into(),
            key_version: version,
            alg: Alg::Ed25519,
            sig: sig.to_bytes().to_vec(),
        }],
    })
    .unwrap()
}

fn ten_percent() -> serde_json::Value {
    serde_json::json!({"routing": {"canary_basis_points": 1000}})
}

/// An envelope signed by a trusted key opens; the policy carries the epoch as its version.
#[test]
fn honest_envelope_opens() {
    let accepted = open(&seal(payload(5, ten_percent()), 1, 1), &[public(1, 1)], 4).unwrap();
    assert_eq!(accepted.epoch, 5);
    assert_eq!(accepted.policy.canary_basis_points, 1000);
    assert_eq!(accepted.policy.version, 5);
    assert_eq!(accepted.signed_by, public(1, 1));
}

/// PAE is the DSSE encoding, byte for byte.
#[test]
fn pae_matches_dsse() {
    assert_eq!(pae("t", b"hello"), b"DSSEv1 1 t 5 hello".to_vec());
    assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
}

/// A signature by an unknown key, a wrong key version, or over other bytes is refused.
#[test]
fn forged_envelopes_are_refused() {
    let body = payload(5, ten_percent());
    let forged = seal(body.clone(), 2, 1); // right key id/version, wrong private key
    assert!(matches!(
        open(&forged, &[public(1, 1)], 0),
        Err(EnvelopeError::Untrusted(CheckpointError::BadSignature))
    ));
    let unknown_version = seal(body.clone(), 1, 9);
    assert!(matches!(
        open(&unknown_version, &[public(1, 1)], 0),
        Err(EnvelopeError::Untrusted(CheckpointError::UnknownKey { .. }))
    ));
    // Payload swapped after signing.
    let mut env: Envelope = serde_json::from_slice(&seal(body, 1, 1)).unwrap();
    env.payload = payload(6, ten_percent());
    let swapped = serde_json::to_vec(&env).unwrap();
    assert!(matches!(
        open(&swapped, &[public(1, 1)], 0),
        Err(EnvelopeError::Untrusted(_))
    ));
}

/// A retired trusted key no longer verifies.
#[test]
fn retired_keys_do_not_verify() {
    let mut k = public(1, 1);
    k.retired = true;
    let result = open(&seal(payload(5, ten_percent()), 1, 1), &[k], 0);
    assert!(matches!(
        result,
        Err(EnvelopeError::Untrusted(CheckpointError::RetiredKey { .. }))
    ));
}

/// Equal or older epochs are refused (replay, rollback).
#[test]
fn stale_epochs_are_refused() {
    let env = seal(payload(5, ten_percent()), 1, 1);
    assert_eq!(
        open(&env, &[public(1, 1)], 5).unwrap_err(),
        EnvelopeError::Stale {
            epoch: 5,
            current: 5
        }
    );
    assert_eq!(
        open(&env, &[public(1, 1)], 9).unwrap_err(),
        EnvelopeError::Stale {
            epoch: 5,
            current: 9
        }
    );
}

/// A signed but invalid policy is refused naming the field; so is a pushed `control`.
#[test]
fn invalid_policies_are_refused() {
    let bad = seal(
        payload(
            5,
            serde_json::json!({"routing": {"canary_basis_points": 10001}}),
        ),
        1,
        1,
    );
    let err = open(&bad, &[public(1, 1)], 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("field `routing.canary_basis_points`"),
        "{err}"
    );
    let control = seal(
        payload(
            5,
            serde_json::json!({"control": {"cluster": "x", "trusted_keys": [public(1, 1)]}}),
        ),
        1,
        1,
    );
    let err = open(&control, &[public(1, 1)], 0).unwrap_err();
    assert!(err.to_string().contains("field `control`"), "{err}");
    let unknown = seal(payload(5, serde_json::json!({"weight": 5})), 1, 1);
    assert!(matches!(
        open(&unknown, &[public(1, 1)], 0),
        Err(EnvelopeError::InvalidPolicy { .. })
    ));
}

/// Malformed, unsigned, oversized and wrongly typed envelopes are refused before any parsing
/// of the payload.
#[test]
fn malformed_envelopes_are_refused() {
    let trusted = [public(1, 1)];
    assert!(matches!(
        open(b"", &trusted, 0),
        Err(EnvelopeError::Malformed {
            what: "envelope",
            ..
        })
    ));
    assert!(matches!(
        open(br#"{"payloadType":1}"#, &trusted, 0),
        Err(EnvelopeError::Malformed { .. })
    ));
    assert!(matches!(
        open(b"[\"t\",\"cA==\",[]]", &trusted, 0),
        Err(EnvelopeError::Malformed { .. })
    ));
    assert!(matches!(
        open(&vec![b' '; MAX_ENVELOPE_BYTES + 1], &trusted, 0),
        Err(EnvelopeError::TooLarge(_))
    ));
    let mut env: Envelope = serde_json::from_slice(&seal(payload(5, ten_percent()), 1, 1)).unwrap();
    let sig = env.signatures[0].clone();
    env.signatures.clear();
    assert_eq!(
        open(&serde_json::to_vec(&env).unwrap(), &trusted, 0).unwrap_err(),
        EnvelopeError::SignatureCount(0)
    );
    env.signatures = vec![sig.clone(); MAX_SIGNATURES + 1];
    assert_eq!(
        open(&serde_json::to_vec(&env).unwrap(), &trusted, 0).unwrap_err(),
        EnvelopeError::SignatureCount(9)
    );
    env.signatures = vec![sig];
    env.payload_type = "application/json".into();
    assert!(matches!(
        open(&serde_json::to_vec(&env).unwrap(), &trusted, 0),
        Err(EnvelopeError::Malformed { .. })
    ));
    // A signed payload that is not a ConfigPayload.
    for junk in [&b"[1,2,3]"[..], b"\"text\"", b"{}", b"{\"epoch\":1}"] {
        let env = seal(junk.to_vec(), 1, 1);
        assert!(
            matches!(
                open(&env, &trusted, 0),
                Err(EnvelopeError::Malformed {
                    what: "payload",
                    ..
                })
            ),
            "{junk:?}"
        );
    }
}

/// A config signed by the current key may announce the next key set; empty sets are refused.
#[test]
fn rotation_handover() {
    let mut p: ConfigPayload = serde_json::from_slice(&payload(7, ten_percent())).unwrap();
    p.next_keys = Some(vec![public(2, 2)]);
    let accepted = open(
        &seal(serde_json::to_vec(&p).unwrap(), 1, 1),
        &[public(1, 1)],
        6,
    )
    .unwrap();
    let next = accepted.next_keys.unwrap();
    // The next epoch, signed by the new key, opens against the announced set only.
    let env = seal(payload(8, ten_percent()), 2, 2);
    assert!(open(&env, &next, 7).is_ok());
    assert!(open(&env, &[public(1, 1)], 7).is_err());
    p.next_keys = Some(vec![]);
    let empty = seal(serde_json::to_vec(&p).unwrap(), 1, 1);
    assert_eq!(
        open(&empty, &[public(1, 1)], 6).unwrap_err(),
        EnvelopeError::NextKeys(0)
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic `open` and never verify.
        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert!(open(&bytes, &[public(1, 1)], 0).is_err());
        }

        /// Flipping any byte of an honest envelope either leaves it equivalent (JSON
        /// whitespace-insensitive positions do not exist here) or makes it fail; never panics.
        #[test]
        fn mutations_never_panic(pos in 0usize..4096, byte in any::<u8>()) {
            let mut env = seal(payload(5, ten_percent()), 1, 1);
            let at = pos % env.len();
            let original = env[at];
            env[at] = byte;
            let result = open(&env, &[public(1, 1)], 0);
            if byte != original {
                if let Ok(a) = result {
                    // Only base64 padding-insensitive or JSON-equivalent edits may survive, and
                    // then the content is the signed content.
                    prop_assert_eq!(a.epoch, 5);
                    prop_assert_eq!(a.policy.canary_basis_points, 1000);
                }
            }
        }
    }
}
