//! The AWS KMS provider: ECDSA P-256 keys (`ECC_NIST_P256`, `ECDSA_SHA_256`) through the
//! official SDK, credentials by the standard provider chain, versions numbered by aliases.
//!
//! AWS rotates asymmetric keys by putting a new key behind the alias; knhk does the same and
//! keeps every earlier key reachable by its version alias (see [`super::aws_key_ref`]), so
//! each one still verifies the checkpoints it signed. A key an operator put behind the family
//! alias by hand (`aws kms update-alias`) is adopted as the next version at the next signature,
//! and the log records it like any rotation.
//!
//! Messages up to 4096 bytes are sent as they are (`MessageType=RAW`); longer ones (large
//! policies) as their SHA-256 (`DIGEST`), which yields the same ECDSA-SHA-256 signature. Every
//! signature is verified against the version's public key before it is returned, so a KMS that
//! signed something else (or with another key) is caught before anything is recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::config::http::HttpResponse;
pub use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec, Tag};
use aws_sdk_kms::Client;
use knhk_core::checkpoint::{Alg, PublicKeyVersion, SignatureRecord};
use sha2::Digest as _;

use super::aws_key_ref::AwsKeyRef;
use super::version_cache::{number_of, CachedVersion, VersionCache};
use super::{p256_version, p256_wire, verified_p256_record, KmsError, RemoteFailure, Signer};

/// Provider name in signature records.
pub const PROVIDER: &str = "aws";
/// The largest message KMS signs as it is; longer ones are signed by digest.
pub const MAX_RAW_MESSAGE: usize = 4096;
/// Days a key made by a rotation that lost a race waits before AWS deletes it (the minimum).
const ORPHAN_DELETION_DAYS: i32 = 7;

/// How to reach the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// The key as configured, parsed.
    pub key: AwsKeyRef,
    /// Region; `None` leaves it to the SDK's chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Endpoint override (a KMS-compatible server, a VPC endpoint); `None` is AWS's own.
    pub endpoint: Option<String>,
    /// Timeout of one API call attempt.
    pub call_timeout: Duration,
}

/// Signer backed by AWS KMS keys behind an alias.
pub struct AwsSigner {
    client: Client,
    settings: AwsSettings,
    versions: VersionCache,
}

impl std::fmt::Debug for AwsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigner")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The key id at the end of a key ARN (`arn:…:key/<id>`), or the id itself.
fn key_id_of(arn_or_id: &str) -> &str {
    arn_or_id
        .rsplit_once(":key/")
        .map_or(arn_or_id, |(_, id)| id)
}

/// Sort an SDK error into a [`RemoteFailure`], keeping the service's code and message.
fn remote_error<E>(op: &'static str, key_id: &str, e: &SdkError<E, HttpResponse>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let failure = match e {
        // A refusal without a code the SDK could parse (some KMS-compatible servers answer
        // IAM denials in XML) is still a refusal of the credential.
        SdkError::ServiceError(ctx)
            if e.code().is_none() && matches!(ctx.raw().status().as_u16(), 401 | 403) =>
        {
            RemoteFailure::PermissionDenied
        }
        SdkError::ServiceError(_) => match e.code() {
            Some("NotFoundException") => RemoteFailure::NotFound,
            Some(
                "AccessDeniedException"
                | "AccessDenied"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "IncompleteSignature",
            ) => RemoteFailure::PermissionDenied,
            Some("KMSInternalException" | "DependencyTimeoutException" | "ThrottlingException") => {
                RemoteFailure::Unavailable
            }
            _ => RemoteFailure::Refused,
        },
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            RemoteFailure::Unavailable
        }
        _ => RemoteFailure::Refused,
    };
    let reason = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(e).to_string(),
    };
    KmsError::Remote {
        provider: PROVIDER,
        op,
        key_id: key_id.to_owned(),
        failure,
        reason,
    }
}

impl AwsSigner {
    /// Load the SDK configuration (the standard credential chain, the region and endpoint of
    /// `settings`), connect, and make sure the key family exists: a new key is created when the
    /// alias does not exist, an existing key of another type is refused.
    pub async fn connect(settings: &AwsSettings) -> Result<Self, KmsError> {
        Self::connect_with(settings, None).await
    }

    /// Like [`AwsSigner::connect`], with these credentials instead of the provider chain.
    pub async fn connect_with_credentials(
        settings: &AwsSettings,
        credentials: Credentials,
    ) -> Result<Self, KmsError> {
        Self::connect_with(settings, Some(credentials)).await
    }

    async fn connect_with(
        settings: &AwsSettings,
        credentials: Option<Credentials>,
    ) -> Result<Self, KmsError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(settings.call_timeout)
                    .build(),
            );
        if let Some(region) = settings.region.clone().or(settings.key.arn_region.clone()) {
            loader = loader.region(aws_config::Region::new(region));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(KmsError::InvalidConfig {
                setting: "KGC_SIDECAR_KMS_REGION",
                reason: "AWS KMS needs a region: set KGC_SIDECAR_KMS_REGION, kms.aws_region or AWS_REGION".to_owned(),
            });
        }
        let signer = AwsSigner {
            client: Client::new(&sdk),
            settings: settings.clone(),
            versions: VersionCache::default(),
        };
        signer.ensure_family().await?;
        Ok(signer)
    }

    fn family(&self) -> &str {
        &self.settings.key.family
    }

    fn err<E>(&self, op: &'static str) -> impl FnOnce(SdkError<E, HttpResponse>) -> KmsError + '_
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        move |e| remote_error(op, self.family(), &e)
    }

    /// Re-read the version aliases (keeping public keys already read) and the family alias's
    /// target key id.
    async fn refresh(&self) -> Result<(BTreeMap<u32, CachedVersion>, Option<String>), KmsError> {
        let mut found = BTreeMap::new();
        let mut family_target = None;
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_aliases()
                .limit(100)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(self.err("list aliases"))?;
            for alias in page.aliases() {
                let (Some(name), Some(target)) = (alias.alias_name(), alias.target_key_id()) else {
                    continue;
                };
                if name == self.family() {
                    family_target = Some(target.to_owned());
                } else if let Some(n) = self.settings.key.version_of(name) {
                    found.insert(n, target.to_owned());
                }
            }
            match (page.truncated(), page.next_marker()) {
                (true, Some(next)) => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok((self.versions.replace(found), family_target))
    }

    /// Check that `key` (id, ARN or alias) is a P-256 signing key; returns its key id.
    async fn check_key(&self, key: &str) -> Result<String, KmsError> {
        let out = self
            .client
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(self.err("describe key"))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| KmsError::unexpected("describe key", "no key metadata"))?;
        let spec = meta.key_spec().map(KeySpec::as_str);
        let usage = meta.key_usage().map(KeyUsageType::as_str);
        if spec != Some(KeySpec::EccNistP256.as_str())
            || usage != Some(KeyUsageType::SignVerify.as_str())
        {
            return Err(KmsError::KeyTypeMismatch {
                key_id: key.to_owned(),
                found: format!(
                    "{} for {}",
                    spec.unwrap_or("no key spec"),
                    usage.unwrap_or("no usage")
                ),
                expected: Alg::EcdsaP256,
            });
        }
        Ok(meta.key_id().to_owned())
    }

    async fn create_key(&self, version: u32) -> Result<String, KmsError> {
        let tag = |k: &str, v: String| {
            Tag::builder()
                .tag_key(k)
                .tag_value(v)
                .build()
                .map_err(|e| KmsError::unexpected("create key", e.to_string()))
        };
        let out = self
            .client
            .create_key()
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .description(format!(
                "knhk checkpoint signing key {} version {version}",
                self.family()
            ))
            .tags(tag("knhk:family", self.family().to_owned())?)
            .tags(tag("knhk:version", version.to_string())?)
            .send()
            .await
            .map_err(self.err("create key"))?;
        let key_id = out
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .ok_or_else(|| KmsError::unexpected("create key", "no key metadata"))?;
        tracing::info!(family = %self.family(), version, key = %key_id, "created AWS KMS key");
        Ok(key_id)
    }

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<(), KmsError> {
        self.client
            .create_alias()
            .alias_name(alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(self.err("create alias"))?;
        Ok(())
    }

    async fn point_family_at(&self, key_id: &str, exists: bool) -> Result<(), KmsError> {
        if exists {
            self.client
                .update_alias()
                .alias_name(self.family())
                .target_key_id(key_id)
                .send()
                .await
                .map_err(self.err("update alias"))?;
            Ok(())
        } else {
            self.create_alias(self.family(), key_id).await
        }
    }

    /// Make sure version 1 exists and the family alias targets a version.
    async fn ensure_family(&self) -> Result<(), KmsError> {
        let (versions, family_target) = self.refresh().await?;
        if let Some((_, newest)) = versions.last_key_value() {
            self.check_key(&newest.id).await?;
            if family_target.is_none() {
                self.point_family_at(&newest.id, false).await?;
            }
            return Ok(());
        }
        let first = match (&self.settings.key.initial_key, &family_target) {
            (Some(key), _) => self.check_key(key).await?,
            (None, Some(target)) => self.check_key(target).await?,
            (None, None) => self.create_key(1).await?,
        };
        self.create_alias(&self.settings.key.version_alias(1), &first)
            .await?;
        if family_target.is_none() {
            self.point_family_at(&first, false).await?;
        }
        self.refresh().await?;
        Ok(())
    }

    /// Number a key as the next version (one put behind the family alias by hand).
    async fn adopt(&self, key_id: &str) -> Result<u32, KmsError> {
        let key_id = self.check_key(key_id).await?;
        let (versions, _) = self.refresh().await?;
        if let Some(n) = number_of(&versions, &key_id) {
            return Ok(n);
        }
        let next = versions.keys().last().map_or(1, |n| n + 1);
        self.create_alias(&self.settings.key.version_alias(next), &key_id)
            .await?;
        tracing::warn!(family = %self.family(), version = next, key = %key_id,
            "adopted a key put behind the alias outside the agent as the next version");
        self.refresh().await?;
        Ok(next)
    }

    /// The version a signing key id belongs to, adopting it when the family alias moved to a
    /// key the agent has not numbered.
    async fn version_of_key(&self, key_id: &str) -> Result<u32, KmsError> {
        if let Some(n) = number_of(&self.versions.snapshot(), key_id) {
            return Ok(n);
        }
        let (versions, family_target) = self.refresh().await?;
        if let Some(n) = number_of(&versions, key_id) {
            return Ok(n);
        }
        if family_target.as_deref() == Some(key_id) {
            return self.adopt(key_id).await;
        }
        Err(KmsError::unexpected(
            "sign",
            format!(
                "signed by key {key_id}, which is not a version of {}",
                self.family()
            ),
        ))
    }

    /// A version's public key, read once.
    async fn public_key(&self, version: u32) -> Result<Vec<u8>, KmsError> {
        let entry = self
            .versions
            .get(version)
            .ok_or_else(|| KmsError::UnknownVersion {
                key_id: self.family().to_owned(),
                version,
            })?;
        if let Some(pk) = entry.public_key {
            return Ok(pk);
        }
        let out = self
            .client
            .get_public_key()
            .key_id(&entry.id)
            .send()
            .await
            .map_err(self.err("get public key"))?;
        let der = out.public_key().ok_or_else(|| {
            KmsError::unexpected("get public key", "no public key in the response")
        })?;
        let pk = p256_wire::public_key_from_spki_der(der.as_ref())
            .ok_or_else(|| KmsError::unexpected("get public key", "not a P-256 SPKI public key"))?;
        self.versions.set_public_key(version, &entry.id, pk.clone());
        Ok(pk)
    }

    /// Sign with `key` (the family alias, or one version's key id).
    async fn sign_by(&self, msg: &[u8], key: &str) -> Result<(String, Vec<u8>), KmsError> {
        let (message, message_type) = if msg.len() <= MAX_RAW_MESSAGE {
            (msg.to_vec(), MessageType::Raw)
        } else {
            (sha2::Sha256::digest(msg).to_vec(), MessageType::Digest)
        };
        let out = self
            .client
            .sign()
            .key_id(key)
            .message(Blob::new(message))
            .message_type(message_type)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(self.err("sign"))?;
        let signed_by = out
            .key_id()
            .map(|k| key_id_of(k).to_owned())
            .ok_or_else(|| KmsError::unexpected("sign", "no key id in the response"))?;
        let der = out
            .signature()
            .ok_or_else(|| KmsError::unexpected("sign", "no signature in the response"))?;
        let sig = p256_wire::signature_from_der(der.as_ref())
            .ok_or_else(|| KmsError::unexpected("sign", "ecdsa signature is not valid DER"))?;
        Ok((signed_by, sig))
    }

    async fn record(
        &self,
        msg: &[u8],
        version: u32,
        sig: Vec<u8>,
    ) -> Result<SignatureRecord, KmsError> {
        let public_key = self.public_key(version).await?;
        verified_p256_record(PROVIDER, self.family(), version, &public_key, msg, sig)
    }
}

#[async_trait]
impl Signer for AwsSigner {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn key_id(&self) -> &str {
        self.family()
    }

    async fn sign(&self, msg: &[u8]) -> Result<SignatureRecord, KmsError> {
        let family = self.family().to_owned();
        let (signed_by, sig) = self.sign_by(msg, &family).await?;
        let version = self.version_of_key(&signed_by).await?;
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
            key_id: self.family().to_owned(),
            version,
        })?;
        let (signed_by, sig) = self.sign_by(msg, &entry.id).await?;
        if signed_by != entry.id {
            return Err(KmsError::unexpected(
                "sign",
                "signed with another key than asked",
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
                self.family(),
                *version,
                self.public_key(*version).await?,
            ));
        }
        Ok(out)
    }

    async fn rotate(&self) -> Result<PublicKeyVersion, KmsError> {
        let (versions, family_target) = self.refresh().await?;
        let (newest, newest_key) = versions
            .last_key_value()
            .map(|(n, v)| (*n, v.id.clone()))
            .ok_or_else(|| KmsError::unexpected("rotate key", "the key has no versions"))?;
        let version = match family_target {
            // Moved by hand to a key not numbered yet: that key is the rotation.
            Some(target) if !versions.values().any(|v| v.id == target) => {
                self.adopt(&target).await?
            }
            // A rotation that stopped between numbering the key and moving the alias.
            Some(target) if target != newest_key => {
                self.point_family_at(&newest_key, true).await?;
                newest
            }
            target => {
                let next = newest + 1;
                let key_id = self.create_key(next).await?;
                if let Err(e) = self
                    .create_alias(&self.settings.key.version_alias(next), &key_id)
                    .await
                {
                    // Another rotator numbered `next` first: this key is never used.
                    let _ = self
                        .client
                        .schedule_key_deletion()
                        .key_id(&key_id)
                        .pending_window_in_days(ORPHAN_DELETION_DAYS)
                        .send()
                        .await;
                    return Err(e);
                }
                self.point_family_at(&key_id, target.is_some()).await?;
                self.refresh().await?;
                next
            }
        };
        let public_key = self.public_key(version).await?;
        tracing::info!(family = %self.family(), version, "rotated AWS KMS key");
        Ok(p256_version(PROVIDER, self.family(), version, public_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key ARNs and bare ids both give the key id.
    #[test]
    fn key_ids_of_arns() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(
            key_id_of(&format!("arn:aws:kms:eu-west-1:123456789012:key/{id}")),
            id
        );
        assert_eq!(key_id_of(id), id);
    }
}
