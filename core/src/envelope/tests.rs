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
        policy,
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

/// The reason of a `Malformed` refusal.
fn malformed_reason(result: Result<Accepted, EnvelopeError>, want_what: &str) -> String {
    match result {
        Err(EnvelopeError::Malformed { what, reason }) if what == want_what => reason,
        other => panic!("expected a malformed {want_what}, got {other:?}"),
    }
}

/// Envelope and payload refusals name the field and say what is wrong with it.
#[test]
fn malformed_fields_are_named() {
    let trusted = [public(1, 1)];
    let reason = malformed_reason(open(br#"{"payloadType":1}"#, &trusted, 0), "envelope");
    assert!(
        reason.starts_with("field `payloadType`: invalid type: integer `1`"),
        "{reason}"
    );
    let reason = malformed_reason(
        open(
            br#"{"payloadType":"t","payload":"cA==","signatures":[],"x":1}"#,
            &trusted,
            0,
        ),
        "envelope",
    );
    assert!(
        reason.starts_with("field `x`: unknown field `x`"),
        "{reason}"
    );
    let reason = malformed_reason(
        open(
            br#"{"payloadType":"t","payload":"!!","signatures":[]}"#,
            &trusted,
            0,
        ),
        "envelope",
    );
    assert!(
        reason.starts_with("field `payload`: invalid base64"),
        "{reason}"
    );
    let reason = malformed_reason(
        open(
            br#"{"payloadType":"t","payload":"cA==","signatures":[{"provider":"p","key_id":"k","key_version":1,"alg":"rsa","sig":"cA=="}]}"#,
            &trusted,
            0,
        ),
        "envelope",
    );
    assert!(
        reason.starts_with("field `signatures[0].alg`: unknown variant `rsa`"),
        "{reason}"
    );
    // Signed payloads: a missing epoch, a wrong type and an unknown field, each by name.
    let cases: [(&[u8], &str); 4] = [
        (
            br#"{"issued_at_ns":1,"policy":{}}"#,
            "field `<document>`: missing field `epoch`",
        ),
        (
            br#"{"epoch":"1","issued_at_ns":1,"policy":{}}"#,
            "field `epoch`: invalid type: string",
        ),
        (
            br#"{"epoch":1,"issued_at_ns":1,"policy":{},"extra":0}"#,
            "field `extra`: unknown field",
        ),
        (
            br#"{"epoch":1,"issued_at_ns":1,"policy":{},"next_keys":[{"provider":"p"}]}"#,
            "field `next_keys[0]`: missing field",
        ),
    ];
    for (body, want) in cases {
        let reason = malformed_reason(open(&seal(body.to_vec(), 1, 1), &trusted, 0), "payload");
        assert!(reason.starts_with(want), "{reason}\n  want: {want}");
    }
}

/// A `null` next key set is no rotation; a policy of the wrong type is an invalid policy.
#[test]
fn null_next_keys_and_non_object_policy() {
    let trusted = [public(1, 1)];
    let body = br#"{"epoch":3,"issued_at_ns":1,"policy":{},"next_keys":null}"#;
    let accepted = open(&seal(body.to_vec(), 1, 1), &trusted, 0).unwrap();
    assert_eq!((accepted.epoch, accepted.next_keys), (3, None));
    let body = br#"{"epoch":3,"issued_at_ns":1,"policy":[1]}"#;
    match open(&seal(body.to_vec(), 1, 1), &trusted, 0) {
        Err(EnvelopeError::InvalidPolicy { epoch: 3, error }) => {
            assert_eq!(error.field, "<document>");
            assert!(error.reason.contains("invalid type: sequence"), "{error}");
        }
        other => panic!("expected an invalid policy, got {other:?}"),
    }
}

/// A signed payload larger than a policy at its limit plus room for keys is refused unparsed.
#[test]
fn oversized_payload_is_refused() {
    let salt = "s".repeat(MAX_PAYLOAD_BYTES);
    let body =
        format!(r#"{{"epoch":1,"issued_at_ns":1,"policy":{{"routing":{{"salt":"{salt}"}}}}}}"#);
    // Under the envelope limit once base64-encoded, so the payload limit is what refuses it.
    assert!(body.len() * 4 / 3 + 1024 < MAX_ENVELOPE_BYTES);
    let reason = malformed_reason(
        open(&seal(body.into_bytes(), 1, 1), &[public(1, 1)], 0),
        "payload",
    );
    assert!(reason.contains("exceeds the"), "{reason}");
}
