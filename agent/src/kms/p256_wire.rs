//! P-256 wire forms the cloud providers use, converted to what `knhk-core` verifies: ASN.1 DER
//! signatures to the fixed 64-byte `r ‖ s` (low-S) form, and SPKI public keys (DER or PEM) to
//! uncompressed SEC1 points.

use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::DecodePublicKey as _;

/// A DER ECDSA signature as 64 bytes `r ‖ s` with `s` normalised to the low half.
pub fn signature_from_der(der: &[u8]) -> Option<Vec<u8>> {
    let sig = p256::ecdsa::Signature::from_der(der).ok()?;
    Some(sig.normalize_s().unwrap_or(sig).to_bytes().to_vec())
}

/// A 64-byte `r ‖ s` signature, `s` normalised to the low half (the form JWS ES256 uses).
pub fn signature_from_fixed(raw: &[u8]) -> Option<Vec<u8>> {
    let sig = p256::ecdsa::Signature::from_slice(raw).ok()?;
    Some(sig.normalize_s().unwrap_or(sig).to_bytes().to_vec())
}

/// An SPKI public key in DER as an uncompressed SEC1 point.
pub fn public_key_from_spki_der(der: &[u8]) -> Option<Vec<u8>> {
    let pk = p256::PublicKey::from_public_key_der(der).ok()?;
    Some(pk.to_encoded_point(false).as_bytes().to_vec())
}

/// An SPKI public key in PEM as an uncompressed SEC1 point.
pub fn public_key_from_spki_pem(pem: &str) -> Option<Vec<u8>> {
    let pk = p256::PublicKey::from_public_key_pem(pem.trim()).ok()?;
    Some(pk.to_encoded_point(false).as_bytes().to_vec())
}

/// A public key given by its affine coordinates (a JWK's `x` and `y`, 32 bytes each) as an
/// uncompressed SEC1 point, if it is on the curve.
pub fn public_key_from_coordinates(x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    p256::PublicKey::from_sec1_bytes(&sec1).ok()?;
    Some(sec1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    fn key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap()
    }

    /// Every wire form of one key and one signature converts to the same core form, and
    /// malformed input is refused.
    #[test]
    fn wire_forms_convert_and_junk_is_refused() {
        let sk = key();
        let vk = sk.verifying_key();
        let sec1 = vk.to_encoded_point(false).as_bytes().to_vec();
        let der = vk.to_public_key_der().unwrap();
        assert_eq!(public_key_from_spki_der(der.as_bytes()).unwrap(), sec1);
        let pem = vk.to_public_key_pem(Default::default()).unwrap();
        assert_eq!(public_key_from_spki_pem(&pem).unwrap(), sec1);
        assert_eq!(
            public_key_from_coordinates(&sec1[1..33], &sec1[33..]).unwrap(),
            sec1
        );
        let sig: p256::ecdsa::Signature = sk.sign(b"m");
        let fixed = sig.normalize_s().unwrap_or(sig).to_bytes().to_vec();
        assert_eq!(signature_from_der(sig.to_der().as_bytes()).unwrap(), fixed);
        assert_eq!(signature_from_fixed(&sig.to_bytes()).unwrap(), fixed);

        assert!(public_key_from_spki_der(&der.as_bytes()[1..]).is_none());
        assert!(public_key_from_spki_pem(
            "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"
        )
        .is_none());
        let mut off_curve = sec1.clone();
        off_curve[64] ^= 1;
        assert!(public_key_from_coordinates(&off_curve[1..33], &off_curve[33..]).is_none());
        assert!(public_key_from_coordinates(&sec1[1..32], &sec1[33..]).is_none());
        assert!(signature_from_der(&[0x30, 0x00]).is_none());
        assert!(signature_from_fixed(&[1u8; 63]).is_none());
        assert!(signature_from_fixed(&[0u8; 64]).is_none());
    }

    /// A high-S signature is turned into its low-S twin, which still verifies.
    #[test]
    fn high_s_is_normalised() {
        use p256::ecdsa::signature::Verifier as _;
        let sk = key();
        let sig: p256::ecdsa::Signature = sk.sign(b"m");
        let low = sig.normalize_s().unwrap_or(sig);
        let (r, s) = low.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let fixed = signature_from_der(high.to_der().as_bytes()).unwrap();
        assert_eq!(fixed, low.to_bytes().to_vec());
        let back = p256::ecdsa::Signature::from_slice(&fixed).unwrap();
        sk.verifying_key().verify(b"m", &back).unwrap();
    }
}
