//! The Azure Key Vault provider: an EC P-256 key signing ES256 through the official SDK
//! (`azure_security_keyvault_keys`, `azure_identity`), authenticated by a client secret,
//! workload identity or managed identity.
//!
//! Key Vault versions a key itself: creating a key that exists adds a version and makes it the
//! current one, which is how Azure rotates keys. Its version ids are opaque, so knhk numbers them
//! with a `knhk-version` tag on each version; a version made outside knhk (the portal, `az
//! keyvault key rotate`, a rotation policy) is numbered and tagged at the next refresh, in order
//! of creation, and the log records it like any rotation. Every version that is enabled stays
//! listed and verifiable; disable one only when no checkpoint it signed needs verifying.
//!
//! Key Vault signs a SHA-256 digest (the checkpoint itself is never sent); every signature is
//! verified against the version's public key before it is returned.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, FixedRetryOptions, RetryOptions};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, Key, KeyClientGetKeyOptions, KeyClientSignOptions,
    KeyClientUpdateKeyPropertiesOptions, KeyOperation, KeyProperties, KeyType, SignParameters,
    SignatureAlgorithm, UpdateKeyPropertiesParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use futures_util::TryStreamExt;
use knhk_core::checkpoint::{Alg, PublicKeyVersion, SignatureRecord};
use sha2::Digest as _;

use super::azure_http::ReqwestTransport;
use super::azure_settings::{AzureCredential, AzureSettings};
use super::version_cache::{number_of, CachedVersion, VersionCache};
use super::{p256_version, p256_wire, verified_p256_record, KmsError, RemoteFailure, Signer};

/// Provider name in signature records.
pub const PROVIDER: &str = "azure";
/// The tag that numbers a Key Vault key version for knhk.
pub const VERSION_TAG: &str = "knhk-version";
/// Retries of a call that failed in transit or was throttled.
const MAX_RETRIES: u32 = 2;

/// Signer backed by an Azure Key Vault key.
pub struct AzureSigner {
    client: KeyClient,
    settings: AzureSettings,
    /// `<vault>/keys/<name>`: the key id in signature records.
    key_id: String,
    versions: VersionCache,
}

impl std::fmt::Debug for AzureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSigner")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How an SDK error failed, by its kind and HTTP status.
pub fn failure_of(e: &azure_core::Error) -> RemoteFailure {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => match u16::from(*status) {
            404 => RemoteFailure::NotFound,
            401 | 403 => RemoteFailure::PermissionDenied,
            408 | 429 | 500..=599 => RemoteFailure::Unavailable,
            _ => RemoteFailure::Refused,
        },
        ErrorKind::Connection | ErrorKind::Io => RemoteFailure::Unavailable,
        ErrorKind::Credential => credential_failure(e),
        _ => RemoteFailure::Refused,
    }
}

/// The error and its causes, each said once: the SDK wraps the cause (a refused token, a
/// failed challenge check) in errors that only say it is not retried.
fn describe(e: &azure_core::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A token that could not be had: refused by Entra ID, or Entra ID (or the managed identity
/// endpoint) not reachable.
fn credential_failure(e: &azure_core::Error) -> RemoteFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(inner) = s.downcast_ref::<azure_core::Error>() {
            if matches!(inner.kind(), ErrorKind::Connection | ErrorKind::Io) {
                return RemoteFailure::Unavailable;
            }
        }
        source = s.source();
    }
    RemoteFailure::PermissionDenied
}

/// The version id at the end of a key identifier (`<vault>/keys/<name>/<version>`).
fn version_id_of(kid: Option<&String>) -> Option<String> {
    let url = url::Url::parse(kid?).ok()?;
    match url
        .path_segments()?
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()[..]
    {
        ["keys", _, version] => Some(version.to_owned()),
        _ => None,
    }
}

impl AzureSigner {
    /// Authenticate with the configured credential and make sure the key exists: a key is
    /// created when the name is free, an existing key of another type is refused, and versions
    /// made outside knhk are numbered.
    pub async fn connect(settings: &AzureSettings) -> Result<Self, KmsError> {
        let transport = ReqwestTransport::new(settings.ca_file.as_deref(), settings.call_timeout)?;
        let client_options = ClientOptions {
            transport: Some(transport.transport()),
            retry: RetryOptions::fixed(FixedRetryOptions {
                delay: azure_core::time::Duration::milliseconds(200),
                max_retries: MAX_RETRIES,
                max_total_elapsed: azure_core::time::Duration::try_from(
                    settings.call_timeout * (MAX_RETRIES + 1),
                )
                .unwrap_or(azure_core::time::Duration::seconds(30)),
            }),
            cloud: settings.authority_host.as_ref().map(|host| {
                let mut custom = CustomConfiguration::default();
                custom.authority_host = host.clone();
                Arc::new(CloudConfiguration::from(custom))
            }),
            ..ClientOptions::default()
        };
        let credential = credential(&settings.credential, client_options.clone())?;
        let client = KeyClient::new(
            &settings.vault_url,
            credential,
            Some(KeyClientOptions {
                client_options,
                verify_challenge_resource: Some(settings.verify_challenge_resource),
                ..KeyClientOptions::default()
            }),
        )
        .map_err(|e| KmsError::InvalidConfig {
            setting: "kms.vault_address",
            reason: format!("{}: {e}", settings.vault_url),
        })?;
        let signer = AzureSigner {
            client,
            key_id: format!("{}/keys/{}", settings.vault_url, settings.key_name),
            settings: settings.clone(),
            versions: VersionCache::default(),
        };
        match signer.client.get_key(&signer.settings.key_name, None).await {
            Ok(rsp) => {
                let key = rsp
                    .into_model()
                    .map_err(|e| KmsError::unexpected("get key", e.to_string()))?;
                signer.check_type(&key)?;
            }
            Err(e) if failure_of(&e) == RemoteFailure::NotFound => {
                signer.create_version(1).await?;
            }
            Err(e) => return Err(signer.remote("get key", &e)),
        }
        signer.refresh().await?;
        Ok(signer)
    }

    fn remote(&self, op: &'static str, e: &azure_core::Error) -> KmsError {
        KmsError::Remote {
            provider: PROVIDER,
            op,
            key_id: self.key_id.clone(),
            failure: failure_of(e),
            reason: describe(e),
        }
    }

    fn name(&self) -> &str {
        &self.settings.key_name
    }

    /// Refuse a key that cannot make ES256 signatures.
    fn check_type(&self, key: &Key) -> Result<(), KmsError> {
        let jwk = key.key.as_ref();
        let kty = jwk.and_then(|k| k.kty.clone());
        let crv = jwk.and_then(|k| k.crv.clone());
        if matches!(kty, Some(KeyType::Ec | KeyType::EcHsm)) && crv == Some(CurveName::P256) {
            return Ok(());
        }
        Err(KmsError::KeyTypeMismatch {
            key_id: self.key_id.clone(),
            found: format!(
                "{} {}",
                kty.map_or("no key type".to_owned(), |k| k.to_string()),
                crv.map_or("no curve".to_owned(), |c| c.to_string())
            ),
            expected: Alg::EcdsaP256,
        })
    }

    /// Create a key version tagged `version`; Key Vault makes it the current one.
    async fn create_version(&self, version: u32) -> Result<String, KmsError> {
        let params = CreateKeyParameters {
            kty: Some(KeyType::Ec),
            curve: Some(CurveName::P256),
            key_ops: Some(vec![KeyOperation::Sign, KeyOperation::Verify]),
            tags: Some(HashMap::from([(
                VERSION_TAG.to_owned(),
                version.to_string(),
            )])),
            ..Default::default()
        };
        let body = params
            .try_into()
            .map_err(|e: azure_core::Error| KmsError::unexpected("create key", e.to_string()))?;
        let key = self
            .client
            .create_key(self.name(), body, None)
            .await
            .map_err(|e| self.remote("create key", &e))?
            .into_model()
            .map_err(|e| KmsError::unexpected("create key", e.to_string()))?;
        self.check_type(&key)?;
        let id = version_id_of(key.key.as_ref().and_then(|k| k.kid.as_ref())).ok_or_else(|| {
            KmsError::unexpected("create key", "no version in the key identifier")
        })?;
        let public_key = public_key_of(&key);
        self.versions.insert(
            version,
            CachedVersion {
                id: id.clone(),
                public_key,
            },
        );
        Ok(id)
    }

    /// Tag a version made outside knhk with its number.
    async fn tag(&self, props: &KeyProperties, id: &str, version: u32) -> Result<(), KmsError> {
        let mut tags = props.tags.clone().unwrap_or_default();
        tags.insert(VERSION_TAG.to_owned(), version.to_string());
        let params = UpdateKeyPropertiesParameters {
            tags: Some(tags),
            ..Default::default()
        };
        let body = params
            .try_into()
            .map_err(|e: azure_core::Error| KmsError::unexpected("update key", e.to_string()))?;
        self.client
            .update_key_properties(
                self.name(),
                body,
                Some(KeyClientUpdateKeyPropertiesOptions {
                    key_version: Some(id.to_owned()),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.remote("update key", &e))?;
        tracing::info!(
            key = %self.key_id,
            key_version_id = id,
            version,
            "adopted a Key Vault key version made outside knhk"
        );
        Ok(())
    }

    /// Re-read the versions (keeping public keys already read): enabled versions by their tag,
    /// untagged ones numbered after the highest number any version (enabled or not) carries, in
    /// order of creation, so a number is never given twice. Returns the enabled versions and
    /// that highest number.
    async fn refresh(&self) -> Result<(BTreeMap<u32, CachedVersion>, u32), KmsError> {
        let mut pager = self
            .client
            .list_key_properties_versions(self.name(), None)
            .map_err(|e| self.remote("list versions", &e))?;
        let mut tagged: BTreeMap<u32, String> = BTreeMap::new();
        let mut highest = 0u32;
        let mut untagged = Vec::new();
        while let Some(props) = pager
            .try_next()
            .await
            .map_err(|e| self.remote("list versions", &e))?
        {
            let enabled = props.attributes.as_ref().and_then(|a| a.enabled) != Some(false);
            let Some(id) = version_id_of(props.kid.as_ref()) else {
                continue;
            };
            let tag = props.tags.as_ref().and_then(|t| t.get(VERSION_TAG));
            let number = tag.and_then(|t| t.parse::<u32>().ok()).filter(|n| *n >= 1);
            highest = highest.max(number.unwrap_or(0));
            if !enabled {
                continue;
            }
            match tag.map(|_| number) {
                Some(Some(n)) => {
                    if let Some(other) = tagged.insert(n, id.clone()) {
                        return Err(KmsError::unexpected(
                            "list versions",
                            format!(
                                "versions {other} and {id} of {} both carry {VERSION_TAG}={n}; disable the one that signed nothing",
                                self.key_id
                            ),
                        ));
                    }
                }
                Some(_) => {
                    return Err(KmsError::unexpected(
                        "list versions",
                        format!(
                            "version {id} of {} has an invalid {VERSION_TAG} tag",
                            self.key_id
                        ),
                    ))
                }
                None => {
                    let created = props
                        .attributes
                        .as_ref()
                        .and_then(|a| a.created)
                        .map(|t| t.unix_timestamp_nanos());
                    untagged.push((created, id, props));
                }
            }
        }
        untagged.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, id, props) in untagged {
            highest += 1;
            self.tag(&props, &id, highest).await?;
            tagged.insert(highest, id);
        }
        Ok((self.versions.replace(tagged), highest))
    }

    /// The number of the version with Key Vault id `id`, re-reading the versions when it is new.
    async fn number_of(&self, id: &str) -> Result<u32, KmsError> {
        if let Some(n) = number_of(&self.versions.snapshot(), id) {
            return Ok(n);
        }
        number_of(&self.refresh().await?.0, id).ok_or_else(|| {
            KmsError::unexpected(
                "sign",
                format!(
                    "signed by version {id}, which is not an enabled version of {}",
                    self.key_id
                ),
            )
        })
    }

    /// A version's public key, read once.
    async fn public_key(&self, version: u32) -> Result<Vec<u8>, KmsError> {
        let entry = self
            .versions
            .get(version)
            .ok_or_else(|| KmsError::UnknownVersion {
                key_id: self.key_id.clone(),
                version,
            })?;
        if let Some(pk) = entry.public_key {
            return Ok(pk);
        }
        let key = self
            .client
            .get_key(
                self.name(),
                Some(KeyClientGetKeyOptions {
                    key_version: Some(entry.id.clone()),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.remote("get key", &e))?
            .into_model()
            .map_err(|e| KmsError::unexpected("get key", e.to_string()))?;
        self.check_type(&key)?;
        let pk = public_key_of(&key).ok_or_else(|| {
            KmsError::unexpected("get key", "no P-256 public key (x, y) in the key")
        })?;
        self.versions.set_public_key(version, &entry.id, pk.clone());
        Ok(pk)
    }

    /// Sign `msg`'s SHA-256 with version `id` (`None`: the current version); returns the id of
    /// the version that signed and the signature.
    async fn sign_by(&self, msg: &[u8], id: Option<&str>) -> Result<(String, Vec<u8>), KmsError> {
        let params = SignParameters {
            algorithm: Some(SignatureAlgorithm::Es256),
            value: Some(sha2::Sha256::digest(msg).to_vec()),
        };
        let body = params
            .try_into()
            .map_err(|e: azure_core::Error| KmsError::unexpected("sign", e.to_string()))?;
        let out = self
            .client
            .sign(
                self.name(),
                body,
                Some(KeyClientSignOptions {
                    key_version: id.map(str::to_owned),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| self.remote("sign", &e))?
            .into_model()
            .map_err(|e| KmsError::unexpected("sign", e.to_string()))?;
        let signed_by = version_id_of(out.kid.as_ref())
            .ok_or_else(|| KmsError::unexpected("sign", "no key version in the response"))?;
        let raw = out
            .result
            .ok_or_else(|| KmsError::unexpected("sign", "no signature in the response"))?;
        let sig = p256_wire::signature_from_fixed(&raw).ok_or_else(|| {
            KmsError::unexpected("sign", "an ES256 signature is 64 bytes (r || s)")
        })?;
        Ok((signed_by, sig))
    }

    async fn record(
        &self,
        msg: &[u8],
        version: u32,
        sig: Vec<u8>,
    ) -> Result<SignatureRecord, KmsError> {
        let public_key = self.public_key(version).await?;
        verified_p256_record(PROVIDER, &self.key_id, version, &public_key, msg, sig)
    }
}

/// The uncompressed SEC1 point of a key's JSON Web Key.
fn public_key_of(key: &Key) -> Option<Vec<u8>> {
    let jwk = key.key.as_ref()?;
    p256_wire::public_key_from_coordinates(jwk.x.as_deref()?, jwk.y.as_deref()?)
}

/// The SDK credential for `credential`, its token calls going through `options`' transport.
fn credential(
    credential: &AzureCredential,
    client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, KmsError> {
    let invalid = |setting: &'static str| {
        move |e: azure_core::Error| KmsError::InvalidConfig {
            setting,
            reason: e.to_string(),
        }
    };
    Ok(match credential {
        AzureCredential::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => ClientSecretCredential::new(
            tenant_id,
            client_id.clone(),
            Secret::new(secret.clone()),
            Some(ClientSecretCredentialOptions { client_options }),
        )
        .map_err(invalid("AZURE_TENANT_ID"))?,
        AzureCredential::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options },
            client_id: Some(client_id.clone()),
            tenant_id: Some(tenant_id.clone()),
            token_file_path: Some(token_file.clone()),
        }))
        .map_err(invalid("AZURE_FEDERATED_TOKEN_FILE"))?,
        AzureCredential::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options,
            }))
            .map_err(invalid("IDENTITY_ENDPOINT"))?
        }
    })
}

#[async_trait]
impl Signer for AzureSigner {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn sign(&self, msg: &[u8]) -> Result<SignatureRecord, KmsError> {
        // The current version, whichever it is now: a rotation made by `knhk-agent keys
        // rotate` or in Azure takes effect at the next signature.
        let (signed_by, sig) = self.sign_by(msg, None).await?;
        let version = self.number_of(&signed_by).await?;
        self.record(msg, version, sig).await
    }

    async fn sign_with_version(
        &self,
        msg: &[u8],
        version: u32,
    ) -> Result<SignatureRecord, KmsError> {
        let mut entry = self.versions.get(version);
        if entry.is_none() {
            entry = self.refresh().await?.0.get(&version).cloned();
        }
        let entry = entry.ok_or_else(|| KmsError::UnknownVersion {
            key_id: self.key_id.clone(),
            version,
        })?;
        let (signed_by, sig) = self.sign_by(msg, Some(&entry.id)).await?;
        if signed_by != entry.id {
            return Err(KmsError::unexpected(
                "sign",
                "signed with another version than asked",
            ));
        }
        self.record(msg, version, sig).await
    }

    async fn public_keys(&self) -> Result<Vec<PublicKeyVersion>, KmsError> {
        let (versions, _) = self.refresh().await?;
        let mut out = Vec::with_capacity(versions.len());
        for version in versions.keys() {
            out.push(p256_version(
                PROVIDER,
                &self.key_id,
                *version,
                self.public_key(*version).await?,
            ));
        }
        Ok(out)
    }

    async fn rotate(&self) -> Result<PublicKeyVersion, KmsError> {
        let (_, highest) = self.refresh().await?;
        let next = highest + 1;
        self.create_version(next).await?;
        Ok(p256_version(
            PROVIDER,
            &self.key_id,
            next,
            self.public_key(next).await?,
        ))
    }
}

/// The call timeout used when the configuration gives none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_come_from_key_identifiers() {
        let kid =
            "https://knhk.vault.azure.net/keys/cp/0123456789abcdef0123456789abcdef".to_owned();
        assert_eq!(
            version_id_of(Some(&kid)).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            version_id_of(Some(&"https://knhk.vault.azure.net/keys/cp".to_owned())),
            None
        );
        assert_eq!(version_id_of(None), None);
    }
}
