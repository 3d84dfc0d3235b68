//! Key management: the [`Signer`] abstraction that signs checkpoints, and its providers.
//!
//! A signer owns one logical key (`key_id`) with numbered versions. `sign` uses the newest
//! version, `rotate` adds a version, and `public_keys` lists every version a verifier may need
//! (older versions stay listed, so checkpoints signed before a rotation keep verifying).
//! Providers: [`local`] (Ed25519 key files, the embedded default), [`transit`] (HashiCorp
//! Vault / OpenBao Transit through `vaultrs`), [`aws`] (AWS KMS through the official SDK,
//! ECDSA P-256 keys versioned behind an alias) and [`azure`] (Azure Key Vault through the
//! official SDK, an EC P-256 key with Key Vault's own versions).

pub mod aws;
pub mod aws_key_ref;
pub mod azure;
pub mod azure_http;
pub mod azure_settings;
pub mod config;
pub mod local;
pub mod p256_wire;
pub mod transit;
pub mod version_cache;

use std::path::PathBuf;

use async_trait::async_trait;
use knhk_core::checkpoint::{Alg, PublicKeyVersion, SignatureRecord};

pub use config::{KmsConfig, Provider, MAX_ROTATION_INTERVAL};

/// Errors of the key management subsystem.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// A configuration value is invalid; `setting` names it as the operator wrote it.
    #[error("invalid setting {setting}: {reason}")]
    InvalidConfig {
        /// The setting (config key or environment variable).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the local key directory failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A local key file is readable by others than its owner.
    #[error("key file {path} has mode {mode:o}; it must be 0600")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A local key file does not hold a valid key.
    #[error("key file {path} is corrupt: {reason}")]
    CorruptKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A signature was asked of a version the signer does not have.
    #[error("key {key_id} has no version {version}")]
    UnknownVersion {
        /// The key.
        key_id: String,
        /// The version asked for.
        version: u32,
    },
    /// A Vault/OpenBao call failed.
    #[error("vault {op} on key {key_id} failed: {source}")]
    Vault {
        /// The operation (`read key`, `sign`, …).
        op: &'static str,
        /// The key.
        key_id: String,
        /// The client error.
        #[source]
        source: Box<vaultrs::error::ClientError>,
    },
    /// Vault/OpenBao answered with something this agent cannot use.
    #[error("unexpected vault response to {op}: {reason}")]
    UnexpectedResponse {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A cloud KMS call failed; `failure` says how, `reason` carries the provider's words.
    #[error("{provider} {op} on key {key_id} failed ({failure}): {reason}")]
    Remote {
        /// The provider (`aws`, `azure`).
        provider: &'static str,
        /// The operation (`sign`, `get public key`, …).
        op: &'static str,
        /// The key as configured.
        key_id: String,
        /// What kind of failure.
        failure: RemoteFailure,
        /// The provider's error code and message (never a credential).
        reason: String,
    },
    /// The existing key has another type than the configured algorithm.
    #[error("key {key_id} exists with type {found}, but {expected} is configured")]
    KeyTypeMismatch {
        /// The key.
        key_id: String,
        /// Its type on the server.
        found: String,
        /// The configured algorithm.
        expected: Alg,
    },
}

impl KmsError {
    /// A provider answered `op` with something this agent cannot use.
    pub fn unexpected(op: &'static str, reason: impl Into<String>) -> KmsError {
        KmsError::UnexpectedResponse {
            op,
            reason: reason.into(),
        }
    }

    /// A short, stable name of the failure (the `error.type` of KMS telemetry).
    pub fn kind(&self) -> &'static str {
        match self {
            KmsError::InvalidConfig { .. } => "invalid_config",
            KmsError::Io { .. } => "io",
            KmsError::InsecurePermissions { .. } => "insecure_permissions",
            KmsError::CorruptKey { .. } => "corrupt_key",
            KmsError::UnknownVersion { .. } => "unknown_version",
            KmsError::Vault { .. } => "provider",
            KmsError::Remote { failure, .. } => failure.kind(),
            KmsError::UnexpectedResponse { .. } => "unexpected_response",
            KmsError::KeyTypeMismatch { .. } => "key_type_mismatch",
        }
    }
}

/// How a cloud KMS call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The key (or alias, or version) does not exist.
    NotFound,
    /// The credentials were refused or lack the permission for the call.
    PermissionDenied,
    /// The provider could not be reached or did not answer in time.
    Unavailable,
    /// Any other refusal.
    Refused,
}

impl RemoteFailure {
    /// The `error.type` of KMS telemetry; an unreachable provider is `provider`, as for Transit.
    pub fn kind(self) -> &'static str {
        match self {
            RemoteFailure::NotFound => "not_found",
            RemoteFailure::PermissionDenied => "permission_denied",
            RemoteFailure::Unavailable | RemoteFailure::Refused => "provider",
        }
    }
}

impl std::fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemoteFailure::NotFound => "not found",
            RemoteFailure::PermissionDenied => "permission denied",
            RemoteFailure::Unavailable => "unavailable",
            RemoteFailure::Refused => "refused",
        })
    }
}

/// The record of a cloud KMS's ECDSA P-256 signature by `version`, once it verifies over `msg`
/// with that version's public key: a KMS that signed something else, or with another key, is
/// caught before anything is recorded.
pub fn verified_p256_record(
    provider: &str,
    key_id: &str,
    version: u32,
    public_key: &[u8],
    msg: &[u8],
    sig: Vec<u8>,
) -> Result<SignatureRecord, KmsError> {
    knhk_core::checkpoint::verify_with_key(Alg::EcdsaP256, public_key, msg, &sig).map_err(|e| {
        KmsError::unexpected(
            "sign",
            format!("the signature by version {version} does not verify over the message ({e})"),
        )
    })?;
    Ok(SignatureRecord {
        provider: provider.to_owned(),
        key_id: key_id.to_owned(),
        key_version: version,
        alg: Alg::EcdsaP256,
        sig,
    })
}

/// A live ECDSA P-256 version of a cloud KMS key, as [`Signer::public_keys`] lists it.
pub fn p256_version(
    provider: &str,
    key_id: &str,
    version: u32,
    public_key: Vec<u8>,
) -> PublicKeyVersion {
    PublicKeyVersion {
        provider: provider.to_owned(),
        key_id: key_id.to_owned(),
        version,
        alg: Alg::EcdsaP256,
        public_key,
        retired: false,
    }
}

/// Something that signs checkpoint text with a versioned key.
#[async_trait]
pub trait Signer: Send + Sync {
    /// Provider name written into signature records (`local`, `transit`, `aws`, `azure`).
    fn provider(&self) -> &str;

    /// Key identifier within the provider.
    fn key_id(&self) -> &str;

    /// Sign `msg` with the newest key version.
    async fn sign(&self, msg: &[u8]) -> Result<SignatureRecord, KmsError>;

    /// Sign `msg` with a specific key version (used to vouch for a new version with the old).
    async fn sign_with_version(
        &self,
        msg: &[u8],
        version: u32,
    ) -> Result<SignatureRecord, KmsError>;

    /// Every version's public key, oldest first, with its retirement state.
    async fn public_keys(&self) -> Result<Vec<PublicKeyVersion>, KmsError>;

    /// Add a key version; it becomes the one [`Signer::sign`] uses. Returns its public key.
    async fn rotate(&self) -> Result<PublicKeyVersion, KmsError>;
}

/// Build the signer the configuration asks for (creating the key on first use).
pub async fn build_signer(config: &KmsConfig) -> Result<Box<dyn Signer>, KmsError> {
    config.validate()?;
    match config.provider {
        Provider::Local => {
            let key_dir = config
                .key_dir
                .as_deref()
                .ok_or(KmsError::InvalidConfig {
                    setting: "kms.key_dir",
                    reason: "no key directory: set kms.key_dir, or resolve the config (AgentConfig::resolve_paths derives <data_dir>/keys)".to_owned(),
                })?;
            Ok(Box::new(local::LocalSigner::open(key_dir, &config.key_id)?))
        }
        Provider::Transit => Ok(Box::new(
            transit::TransitSigner::connect(&config.transit_settings()?).await?,
        )),
        Provider::Aws => Ok(Box::new(
            aws::AwsSigner::connect(&config.aws_settings()?).await?,
        )),
        Provider::Azure => Ok(Box::new(
            azure::AzureSigner::connect(&config.azure_settings()?).await?,
        )),
    }
}
