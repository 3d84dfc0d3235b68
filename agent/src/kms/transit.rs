//! The Transit provider: HashiCorp Vault / OpenBao Transit keys through `vaultrs`.
//!
//! The key (`ed25519` or `ecdsa-p256`) is created on first use when missing; an existing key of
//! another type is refused. Signatures come back as `vault:v<N>:<base64>`: Ed25519 raw, ECDSA
//! as ASN.1 DER, which is converted to the fixed 64-byte `r ‖ s` (low-S) form `knhk-core`
//! verifies. Public keys come from the key's read endpoint: raw base64 for Ed25519 and PEM SPKI
//! for P-256 (converted to an uncompressed SEC1 point). Versions below the key's
//! `min_decryption_version` are reported as retired, matching what Transit itself verifies.

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use knhk_core::checkpoint::{Alg, PublicKeyVersion, SignatureRecord};
use vaultrs::api::transit::requests::{CreateKeyRequest, SignDataRequest};
use vaultrs::api::transit::responses::ReadKeyData;
use vaultrs::api::transit::KeyType;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::{KmsError, Signer};

/// Provider name in signature records.
pub const PROVIDER: &str = "transit";

/// How to reach one Transit key.
#[derive(Clone, PartialEq, Eq)]
pub struct TransitSettings {
    /// Server address, e.g. `http://127.0.0.1:8200`.
    pub address: String,
    /// Token with `create`, `read`, `update` on the key's paths.
    pub token: String,
    /// Transit mount path.
    pub mount: String,
    /// Key name.
    pub key_name: String,
    /// Type to create the key with, and to require of an existing key.
    pub key_type: Alg,
}

impl std::fmt::Debug for TransitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitSettings")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("key_name", &self.key_name)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

/// Signer backed by a Transit key.
pub struct TransitSigner {
    client: VaultClient,
    settings: TransitSettings,
}

impl std::fmt::Debug for TransitSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitSigner")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn key_type_of(alg: Alg) -> KeyType {
    match alg {
        Alg::Ed25519 => KeyType::Ed25519,
        Alg::EcdsaP256 => KeyType::EcdsaP256,
    }
}

fn alg_of(kt: KeyType) -> Option<Alg> {
    match kt {
        KeyType::Ed25519 => Some(Alg::Ed25519),
        KeyType::EcdsaP256 => Some(Alg::EcdsaP256),
        _ => None,
    }
}

/// Parse `vault:v<N>:<base64>` into the version and raw signature bytes for `alg`.
fn parse_signature(alg: Alg, text: &str) -> Result<(u32, Vec<u8>), KmsError> {
    let rest = text
        .strip_prefix("vault:v")
        .ok_or_else(|| KmsError::unexpected("sign", "signature lacks the vault:v<N>: prefix"))?;
    let (ver, b64) = rest
        .split_once(':')
        .ok_or_else(|| KmsError::unexpected("sign", "signature lacks a version separator"))?;
    let version: u32 = ver
        .parse()
        .map_err(|_| KmsError::unexpected("sign", format!("bad signature version {ver:?}")))?;
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| KmsError::unexpected("sign", "signature is not base64"))?;
    let sig = match alg {
        Alg::Ed25519 => {
            if raw.len() != 64 {
                return Err(KmsError::unexpected(
                    "sign",
                    "ed25519 signature is not 64 bytes",
                ));
            }
            raw
        }
        Alg::EcdsaP256 => super::p256_wire::signature_from_der(&raw)
            .ok_or_else(|| KmsError::unexpected("sign", "ecdsa signature is not valid DER"))?,
    };
    Ok((version, sig))
}

/// Decode a Transit public key into the bytes `knhk-core` verifies with.
fn parse_public_key(alg: Alg, text: &str) -> Result<Vec<u8>, KmsError> {
    match alg {
        Alg::Ed25519 => {
            let raw = STANDARD.decode(text.trim()).map_err(|_| {
                KmsError::unexpected("read key", "ed25519 public key is not base64")
            })?;
            if raw.len() != 32 {
                return Err(KmsError::unexpected(
                    "read key",
                    "ed25519 public key is not 32 bytes",
                ));
            }
            Ok(raw)
        }
        Alg::EcdsaP256 => super::p256_wire::public_key_from_spki_pem(text)
            .ok_or_else(|| KmsError::unexpected("read key", "p256 public key is not PEM SPKI")),
    }
}

impl TransitSigner {
    /// Connect and make sure the key exists with the configured type.
    pub async fn connect(settings: &TransitSettings) -> Result<Self, KmsError> {
        let client_settings = VaultClientSettingsBuilder::default()
            .address(&settings.address)
            .token(settings.token.clone())
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| KmsError::InvalidConfig {
                setting: "kms.vault_address",
                reason: e.to_string(),
            })?;
        let client = VaultClient::new(client_settings).map_err(|e| KmsError::Vault {
            op: "connect",
            key_id: settings.key_name.clone(),
            source: Box::new(e),
        })?;
        let signer = TransitSigner {
            client,
            settings: settings.clone(),
        };
        signer.ensure_key().await?;
        Ok(signer)
    }

    fn vault_err(&self, op: &'static str) -> impl FnOnce(ClientError) -> KmsError + '_ {
        move |e| KmsError::Vault {
            op,
            key_id: self.settings.key_name.clone(),
            source: Box::new(e),
        }
    }

    async fn ensure_key(&self) -> Result<(), KmsError> {
        let s = &self.settings;
        match vaultrs::transit::key::read(&self.client, &s.mount, &s.key_name).await {
            Ok(info) => match alg_of(info.key_type) {
                Some(alg) if alg == s.key_type => Ok(()),
                _ => Err(KmsError::KeyTypeMismatch {
                    key_id: s.key_name.clone(),
                    found: format!("{:?}", info.key_type),
                    expected: s.key_type,
                }),
            },
            Err(ClientError::APIError { code: 404, .. }) => {
                let mut opts = CreateKeyRequest::builder();
                opts.key_type(key_type_of(s.key_type));
                vaultrs::transit::key::create(&self.client, &s.mount, &s.key_name, Some(&mut opts))
                    .await
                    .map_err(self.vault_err("create key"))?;
                tracing::info!(key = %s.key_name, mount = %s.mount, alg = %s.key_type, "created transit key");
                Ok(())
            }
            Err(e) => Err(self.vault_err("read key")(e)),
        }
    }

    async fn sign_inner(
        &self,
        msg: &[u8],
        version: Option<u32>,
    ) -> Result<SignatureRecord, KmsError> {
        let s = &self.settings;
        let mut opts = SignDataRequest::builder();
        if let Some(v) = version {
            opts.key_version(u64::from(v));
        }
        let resp = vaultrs::transit::data::sign(
            &self.client,
            &s.mount,
            &s.key_name,
            &STANDARD.encode(msg),
            Some(&mut opts),
        )
        .await
        .map_err(self.vault_err("sign"))?;
        let (key_version, sig) = parse_signature(s.key_type, &resp.signature)?;
        if version.is_some_and(|v| v != key_version) {
            return Err(KmsError::unexpected(
                "sign",
                "signed with another version than asked",
            ));
        }
        Ok(SignatureRecord {
            provider: PROVIDER.to_owned(),
            key_id: s.key_name.clone(),
            key_version,
            alg: s.key_type,
            sig,
        })
    }
}

#[async_trait]
impl Signer for TransitSigner {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn key_id(&self) -> &str {
        &self.settings.key_name
    }

    async fn sign(&self, msg: &[u8]) -> Result<SignatureRecord, KmsError> {
        self.sign_inner(msg, None).await
    }

    async fn sign_with_version(
        &self,
        msg: &[u8],
        version: u32,
    ) -> Result<SignatureRecord, KmsError> {
        // Transit answers an unknown version with a 500 and prose; every provider answers it
        // with `UnknownVersion` (a rare call: handovers and config epochs), so ask first.
        if !self
            .public_keys()
            .await?
            .iter()
            .any(|k| k.version == version)
        {
            return Err(KmsError::UnknownVersion {
                key_id: self.settings.key_name.clone(),
                version,
            });
        }
        self.sign_inner(msg, Some(version)).await
    }

    async fn public_keys(&self) -> Result<Vec<PublicKeyVersion>, KmsError> {
        let s = &self.settings;
        let info = vaultrs::transit::key::read(&self.client, &s.mount, &s.key_name)
            .await
            .map_err(self.vault_err("read key"))?;
        let alg = alg_of(info.key_type).ok_or_else(|| KmsError::KeyTypeMismatch {
            key_id: s.key_name.clone(),
            found: format!("{:?}", info.key_type),
            expected: s.key_type,
        })?;
        let ReadKeyData::Asymmetric(entries) = info.keys else {
            return Err(KmsError::unexpected(
                "read key",
                "no public keys in the response",
            ));
        };
        let mut out = Vec::with_capacity(entries.len());
        for (ver, entry) in entries {
            let version: u32 = ver.parse().map_err(|_| {
                KmsError::unexpected("read key", format!("bad key version {ver:?}"))
            })?;
            out.push(PublicKeyVersion {
                provider: PROVIDER.to_owned(),
                key_id: s.key_name.clone(),
                version,
                alg,
                public_key: parse_public_key(alg, &entry.public_key)?,
                retired: u64::from(version) < info.min_decryption_version,
            });
        }
        out.sort_by_key(|k| k.version);
        Ok(out)
    }

    async fn rotate(&self) -> Result<PublicKeyVersion, KmsError> {
        let s = &self.settings;
        vaultrs::transit::key::rotate(&self.client, &s.mount, &s.key_name)
            .await
            .map_err(self.vault_err("rotate key"))?;
        let keys = self.public_keys().await?;
        let newest = keys
            .into_iter()
            .last()
            .ok_or_else(|| KmsError::unexpected("rotate key", "no versions after rotation"))?;
        tracing::info!(key = %s.key_name, version = newest.version, "rotated transit key");
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signature strings are parsed strictly: prefix, version and encoding are all checked.
    #[test]
    fn signature_strings_are_parsed_strictly() {
        let sig64 = STANDARD.encode([7u8; 64]);
        let (v, raw) = parse_signature(Alg::Ed25519, &format!("vault:v3:{sig64}")).unwrap();
        assert_eq!((v, raw.len()), (3, 64));
        for bad in [
            format!("v3:{sig64}"),
            format!("vault:v:{sig64}"),
            format!("vault:vx:{sig64}"),
            format!("vault:v3{sig64}"),
            "vault:v3:!!".to_owned(),
            format!("vault:v3:{}", STANDARD.encode([7u8; 63])),
        ] {
            assert!(parse_signature(Alg::Ed25519, &bad).is_err(), "{bad}");
        }
        assert!(parse_signature(Alg::EcdsaP256, &format!("vault:v1:{sig64}")).is_err());
    }

    /// Public keys of the wrong size or encoding are refused.
    #[test]
    fn public_keys_are_parsed_strictly() {
        assert_eq!(
            parse_public_key(Alg::Ed25519, &STANDARD.encode([1u8; 32]))
                .unwrap()
                .len(),
            32
        );
        assert!(parse_public_key(Alg::Ed25519, &STANDARD.encode([1u8; 31])).is_err());
        assert!(parse_public_key(
            Alg::EcdsaP256,
            "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }
}
