//! KMS configuration: the `[kms]` table of the agent config, legacy environment overrides, and
//! validation (including the 24 h ceiling on the rotation interval).
//!
//! Precedence, lowest first: built-in defaults, the config file, then the environment. The
//! older sidecar's variables map as follows:
//!
//! | variable | setting |
//! |---|---|
//! | `KGC_SIDECAR_KMS_PROVIDER` | `provider` (`local`; `vault`, `transit` or `openbao` mean Transit; `aws`; `azure`) |
//! | `KGC_SIDECAR_KMS_KEY_ID` | `key_id` |
//! | `KGC_SIDECAR_KMS_REGION` | `aws_region`; refused, naming it, for any provider but `aws` (it would otherwise be silently ignored) |
//! | `KGC_SIDECAR_KMS_VAULT_URL` | `vault_address`: the Vault or Azure Key Vault URL (wins over `VAULT_ADDR`) |
//! | `KGC_SIDECAR_KMS_VAULT_MOUNT` | `vault_mount` |
//! | `KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS` | `rotation_interval`, whole hours 1–24 |
//! | `VAULT_ADDR` | `vault_address` when neither the file nor `KGC_SIDECAR_KMS_VAULT_URL` sets it |
//! | `VAULT_TOKEN` | the Transit token (only from the environment: secrets stay out of files) |
//! | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`, `AZURE_FEDERATED_TOKEN_FILE` | the Azure credential (see [`super::azure_settings`]) |
//! | `AZURE_AUTHORITY_HOST` | `azure_authority_host`, read for the azure provider only |

use std::path::PathBuf;
use std::time::Duration;

use knhk_core::checkpoint::Alg;
use serde::Deserialize;

use super::aws::AwsSettings;
use super::aws_key_ref::{valid_region, AwsKeyRef};
use super::azure::DEFAULT_CALL_TIMEOUT as AZURE_CALL_TIMEOUT;
use super::azure_settings::{
    parse_key_id, parse_key_ref, AzureCredential, AzureEnv, AzureSettings, CredentialKind,
};
use super::transit::TransitSettings;
use super::KmsError;

/// The shortest rotation interval accepted (whole seconds were the finest the grammar had
/// before it took `ms`).
pub const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(1);
/// The longest rotation interval accepted.
pub const MAX_ROTATION_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default rotation interval.
pub const DEFAULT_ROTATION_INTERVAL: Duration = MAX_ROTATION_INTERVAL;
/// Default key identifier.
pub const DEFAULT_KEY_ID: &str = "knhk-checkpoints";
/// The local key directory's name under `data_dir` when `key_dir` is not set.
pub const KEY_DIR_NAME: &str = "keys";
/// Default Transit mount.
pub const DEFAULT_VAULT_MOUNT: &str = "transit";

/// Which signing provider to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Ed25519 key files in `key_dir`.
    Local,
    /// Vault / OpenBao Transit.
    Transit,
    /// AWS KMS (ECDSA P-256 keys behind an alias).
    Aws,
    /// Azure Key Vault (an EC P-256 key and its versions).
    Azure,
}

impl Provider {
    /// The name `[kms] provider` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Transit => "transit",
            Provider::Aws => "aws",
            Provider::Azure => "azure",
        }
    }
}

/// The `[kms]` configuration table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// Signing provider.
    pub provider: Provider,
    /// Key identifier: file-name safe, 1–64 of `[A-Za-z0-9._-]`, not starting with `.`.
    pub key_id: String,
    /// How often the background task rotates the key; 1s to 24 h. Written `"90m"`, `"12h"`
    /// (the grammar of [`crate::settings`]).
    #[serde(with = "crate::settings::duration")]
    pub rotation_interval: Duration,
    /// Directory of the local provider's key files. Not set: `<data_dir>/keys`, filled in by
    /// [`crate::config::AgentConfig::resolve_paths`] (so it follows `data_dir`); an explicit
    /// path is kept as written.
    pub key_dir: Option<PathBuf>,
    /// Vault/OpenBao address for the Transit provider.
    pub vault_address: Option<String>,
    /// Transit mount path.
    pub vault_mount: String,
    /// Transit key type created when the key does not exist.
    pub vault_key_type: Alg,
    /// Transit token; set only from `VAULT_TOKEN`.
    #[serde(skip)]
    pub vault_token: Option<String>,
    /// AWS region of the key (`KGC_SIDECAR_KMS_REGION`); not set: the SDK's chain
    /// (`AWS_REGION`, the profile) or the region of an ARN `key_id`.
    pub aws_region: Option<String>,
    /// AWS KMS endpoint override (a VPC endpoint, a KMS-compatible server); not set: AWS's
    /// own, or `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL` as the SDK reads them.
    pub aws_endpoint: Option<String>,
    /// Which Entra ID credential the azure provider uses (`auto`, `client_secret`,
    /// `workload_identity`, `managed_identity`); the credential itself comes from `AZURE_*`.
    pub azure_credential: CredentialKind,
    /// The Entra ID authority for the azure provider (a sovereign cloud's, `https://`); not
    /// set: `AZURE_AUTHORITY_HOST`, else the public cloud's.
    pub azure_authority_host: Option<String>,
    /// A PEM file of CA certificates the azure provider trusts besides the system's (a private
    /// endpoint behind a TLS-inspecting proxy).
    pub azure_ca_file: Option<PathBuf>,
    /// Whether Key Vault's authentication challenge must name a parent domain of the vault's
    /// host (on by default, as in Azure's SDKs; off only for a vault behind a custom domain).
    pub azure_verify_challenge_resource: bool,
    /// The `AZURE_*` credential variables, read by [`KmsConfig::apply_env`].
    #[serde(skip)]
    pub azure_env: AzureEnv,
    /// The setting `key_id` came from, named when it is refused.
    #[serde(skip)]
    pub key_id_setting: KeyIdSetting,
}

/// Where `kms.key_id` was set, so an error names what the operator wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyIdSetting {
    /// The config file (or the default).
    #[default]
    File,
    /// `KGC_SIDECAR_KMS_KEY_ID`.
    Env,
}

impl KeyIdSetting {
    /// The setting's name.
    pub fn name(self) -> &'static str {
        match self {
            KeyIdSetting::File => "kms.key_id",
            KeyIdSetting::Env => "KGC_SIDECAR_KMS_KEY_ID",
        }
    }
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig {
            provider: Provider::Local,
            key_id: DEFAULT_KEY_ID.to_owned(),
            rotation_interval: DEFAULT_ROTATION_INTERVAL,
            key_dir: None,
            vault_address: None,
            vault_mount: DEFAULT_VAULT_MOUNT.to_owned(),
            vault_key_type: Alg::Ed25519,
            vault_token: None,
            aws_region: None,
            aws_endpoint: None,
            azure_credential: CredentialKind::Auto,
            azure_authority_host: None,
            azure_ca_file: None,
            azure_verify_challenge_resource: true,
            azure_env: AzureEnv::default(),
            key_id_setting: KeyIdSetting::File,
        }
    }
}

/// Whether `id` is usable as a key identifier (and so as a file name).
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_mount(mount: &str) -> bool {
    !mount.is_empty()
        && mount
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && mount
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
}

fn check_url(setting: &'static str, raw: &str) -> Result<String, KmsError> {
    let parsed = url::Url::parse(raw).map_err(|e| KmsError::InvalidConfig {
        setting,
        reason: format!("{raw:?} is not a URL: {e}"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(KmsError::InvalidConfig {
            setting,
            reason: format!("{raw:?} must be an http:// or https:// URL with a host"),
        });
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

/// An `https://` URL (Key Vault and Entra ID take bearer tokens over TLS only).
fn check_https(setting: &'static str, raw: &str) -> Result<String, KmsError> {
    let url = check_url(setting, raw)?;
    if !url.starts_with("https://") {
        return Err(KmsError::InvalidConfig {
            setting,
            reason: format!(
                "{raw:?} must be an https:// URL: Azure takes bearer tokens over TLS only"
            ),
        });
    }
    Ok(url)
}

fn check_region(setting: &'static str, region: &str) -> Result<String, KmsError> {
    if !valid_region(region) {
        return Err(KmsError::InvalidConfig {
            setting,
            reason: format!("{region:?} is not an AWS region name (such as eu-west-1)"),
        });
    }
    Ok(region.to_owned())
}

fn check_interval(setting: &'static str, d: Duration) -> Result<Duration, KmsError> {
    if d < MIN_ROTATION_INTERVAL {
        return Err(KmsError::InvalidConfig {
            setting,
            reason: "must be at least 1s".to_owned(),
        });
    }
    if d > MAX_ROTATION_INTERVAL {
        return Err(KmsError::InvalidConfig {
            setting,
            reason: format!("{} h exceeds the maximum of 24 h", d.as_secs_f64() / 3600.0),
        });
    }
    Ok(d)
}

impl KmsConfig {
    /// Apply environment overrides, reading variables through `env` (tests pass a map).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), KmsError> {
        if let Some(v) = env("KGC_SIDECAR_KMS_PROVIDER") {
            self.provider = match v.trim().to_ascii_lowercase().as_str() {
                "local" => Provider::Local,
                "vault" | "transit" | "openbao" => Provider::Transit,
                "aws" => Provider::Aws,
                "azure" => Provider::Azure,
                other => {
                    return Err(KmsError::InvalidConfig {
                        setting: "KGC_SIDECAR_KMS_PROVIDER",
                        reason: format!(
                            "unknown provider {other:?}; use local, vault, aws or azure"
                        ),
                    })
                }
            };
        }
        if let Some(v) = env("KGC_SIDECAR_KMS_KEY_ID") {
            // Checked by `validate`, against the provider's own form of key ids.
            self.key_id = v;
            self.key_id_setting = KeyIdSetting::Env;
            self.check_key_id()?;
        }
        if let Some(v) = env("KGC_SIDECAR_KMS_VAULT_URL") {
            let setting = "KGC_SIDECAR_KMS_VAULT_URL";
            self.vault_address = Some(if self.provider == Provider::Azure {
                check_https(setting, &v)?
            } else {
                check_url(setting, &v)?
            });
        } else if self.vault_address.is_none() && self.provider != Provider::Azure {
            // HashiCorp's variable, never a Key Vault's URL.
            if let Some(v) = env("VAULT_ADDR") {
                self.vault_address = Some(check_url("VAULT_ADDR", &v)?);
            }
        }
        if let Some(v) = env("KGC_SIDECAR_KMS_VAULT_MOUNT") {
            let mount = v.trim_matches('/');
            if !valid_mount(mount) {
                return Err(KmsError::InvalidConfig {
                    setting: "KGC_SIDECAR_KMS_VAULT_MOUNT",
                    reason: format!("{v:?} is not a mount path"),
                });
            }
            self.vault_mount = mount.to_owned();
        }
        if let Some(v) = env("KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS") {
            let setting = "KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS";
            let hours: u64 = v.trim().parse().map_err(|_| KmsError::InvalidConfig {
                setting,
                reason: format!("{v:?} is not a whole number of hours"),
            })?;
            let secs = hours.checked_mul(3600).ok_or(KmsError::InvalidConfig {
                setting,
                reason: format!("{hours} h exceeds the maximum of 24 h"),
            })?;
            self.rotation_interval = check_interval(setting, Duration::from_secs(secs))?;
        }
        if let Some(v) = env("KGC_SIDECAR_KMS_REGION").filter(|v| !v.trim().is_empty()) {
            let setting = "KGC_SIDECAR_KMS_REGION";
            if self.provider != Provider::Aws {
                // Only AWS KMS takes a region; for the others it would silently do nothing.
                return Err(KmsError::InvalidConfig {
                    setting,
                    reason: format!(
                        "{:?} is an AWS KMS region; the {} provider takes none: unset it",
                        v.trim(),
                        self.provider.as_str()
                    ),
                });
            }
            self.aws_region = Some(check_region(setting, v.trim())?);
        }
        if self.provider == Provider::Azure {
            self.azure_env = AzureEnv::read(&env);
            if let Some(v) = env("AZURE_AUTHORITY_HOST").filter(|v| !v.trim().is_empty()) {
                self.azure_authority_host = Some(check_https("AZURE_AUTHORITY_HOST", v.trim())?);
            }
        }
        if let Some(v) = env("VAULT_TOKEN") {
            if !v.trim().is_empty() {
                self.vault_token = Some(v.trim().to_owned());
            }
        }
        Ok(())
    }

    /// Check every value; called before anything is built or bound.
    pub fn validate(&self) -> Result<(), KmsError> {
        check_interval("kms.rotation_interval", self.rotation_interval)?;
        self.check_key_id()?;
        if !valid_mount(&self.vault_mount) {
            return Err(KmsError::InvalidConfig {
                setting: "kms.vault_mount",
                reason: format!("{:?} is not a mount path", self.vault_mount),
            });
        }
        if let Some(addr) = &self.vault_address {
            check_url("kms.vault_address", addr)?;
        }
        if self.provider == Provider::Transit {
            self.transit_settings()?;
        }
        if let Some(region) = &self.aws_region {
            check_region("kms.aws_region", region)?;
        }
        if let Some(endpoint) = &self.aws_endpoint {
            check_url("kms.aws_endpoint", endpoint)?;
        }
        if self.provider != Provider::Aws {
            for (setting, set) in [
                ("kms.aws_region", self.aws_region.is_some()),
                ("kms.aws_endpoint", self.aws_endpoint.is_some()),
            ] {
                if set {
                    return Err(KmsError::InvalidConfig {
                        setting,
                        reason: format!(
                            "only the aws provider takes it, and provider is {}: remove it",
                            self.provider.as_str()
                        ),
                    });
                }
            }
        } else {
            self.aws_settings()?;
        }
        if self.provider != Provider::Azure {
            for (setting, set) in [
                (
                    "kms.azure_credential",
                    self.azure_credential != CredentialKind::Auto,
                ),
                (
                    "kms.azure_authority_host",
                    self.azure_authority_host.is_some(),
                ),
                ("kms.azure_ca_file", self.azure_ca_file.is_some()),
                (
                    "kms.azure_verify_challenge_resource",
                    !self.azure_verify_challenge_resource,
                ),
            ] {
                if set {
                    return Err(KmsError::InvalidConfig {
                        setting,
                        reason: format!(
                            "only the azure provider takes it, and provider is {}: remove it",
                            self.provider.as_str()
                        ),
                    });
                }
            }
        } else {
            self.azure_settings()?;
        }
        Ok(())
    }

    /// Check `key_id` against the form the provider names keys in.
    fn check_key_id(&self) -> Result<(), KmsError> {
        let setting = self.key_id_setting.name();
        match self.provider {
            Provider::Local | Provider::Transit => {
                if !valid_key_id(&self.key_id) {
                    return Err(KmsError::InvalidConfig {
                        setting,
                        reason: format!(
                            "{:?} must be 1-64 of A-Z a-z 0-9 . _ - and not start with '.'",
                            self.key_id
                        ),
                    });
                }
            }
            Provider::Aws => {
                AwsKeyRef::parse(&self.key_id).map_err(|reason| KmsError::InvalidConfig {
                    setting,
                    reason: format!("{:?}: {reason}", self.key_id),
                })?;
            }
            Provider::Azure => {
                parse_key_id(&self.key_id).map_err(|reason| KmsError::InvalidConfig {
                    setting,
                    reason: format!("{:?}: {reason}", self.key_id),
                })?;
            }
        }
        Ok(())
    }

    /// The AWS KMS settings; errors name the setting at fault.
    pub fn aws_settings(&self) -> Result<AwsSettings, KmsError> {
        let key = AwsKeyRef::parse(&self.key_id).map_err(|reason| KmsError::InvalidConfig {
            setting: self.key_id_setting.name(),
            reason: format!("{:?}: {reason}", self.key_id),
        })?;
        if let (Some(region), Some(arn_region)) = (&self.aws_region, &key.arn_region) {
            if region != arn_region {
                return Err(KmsError::InvalidConfig {
                    setting: self.key_id_setting.name(),
                    reason: format!(
                        "the ARN names region {arn_region}, but the configured region is {region}"
                    ),
                });
            }
        }
        Ok(AwsSettings {
            key,
            region: self.aws_region.clone(),
            endpoint: self.aws_endpoint.clone(),
            call_timeout: Duration::from_secs(10),
        })
    }

    /// The Azure Key Vault settings; errors name the setting at fault.
    pub fn azure_settings(&self) -> Result<AzureSettings, KmsError> {
        if let Some(addr) = &self.vault_address {
            check_https("kms.vault_address", addr)?;
        }
        let (vault_url, key_name) = parse_key_ref(&self.key_id, self.vault_address.as_deref())
            .map_err(|reason| KmsError::InvalidConfig {
                setting: self.key_id_setting.name(),
                reason: format!("{:?}: {reason}", self.key_id),
            })?;
        if let Some(host) = &self.azure_authority_host {
            check_https("kms.azure_authority_host", host)?;
        }
        if let Some(path) = &self.azure_ca_file {
            if !path.is_file() {
                return Err(KmsError::InvalidConfig {
                    setting: "kms.azure_ca_file",
                    reason: format!("{} is not a readable file", path.display()),
                });
            }
        }
        Ok(AzureSettings {
            vault_url,
            key_name,
            credential: AzureCredential::resolve(self.azure_credential, &self.azure_env)?,
            authority_host: self.azure_authority_host.clone(),
            ca_file: self.azure_ca_file.clone(),
            verify_challenge_resource: self.azure_verify_challenge_resource,
            call_timeout: AZURE_CALL_TIMEOUT,
        })
    }

    /// The Transit connection settings; errors name what is missing.
    pub fn transit_settings(&self) -> Result<TransitSettings, KmsError> {
        let address = self.vault_address.clone().ok_or(KmsError::InvalidConfig {
            setting: "kms.vault_address",
            reason: "the vault provider needs an address (or VAULT_ADDR)".to_owned(),
        })?;
        let token = self.vault_token.clone().ok_or(KmsError::InvalidConfig {
            setting: "VAULT_TOKEN",
            reason: "the vault provider needs a token in VAULT_TOKEN".to_owned(),
        })?;
        Ok(TransitSettings {
            address,
            token,
            mount: self.vault_mount.clone(),
            key_name: self.key_id.clone(),
            key_type: self.vault_key_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn setting_of(err: KmsError) -> &'static str {
        match err {
            KmsError::InvalidConfig { setting, .. } => setting,
            other => panic!("unexpected error {other}"),
        }
    }

    /// Defaults: local provider, 24 h rotation, and they validate.
    #[test]
    fn defaults_are_valid() {
        let c = KmsConfig::default();
        assert_eq!(c.provider, Provider::Local);
        assert_eq!(c.rotation_interval, Duration::from_secs(86_400));
        c.validate().unwrap();
    }

    /// The config file form parses, unknown fields are refused, and durations need a unit.
    #[test]
    fn toml_form() {
        let c: KmsConfig = toml::from_str(
            "provider = \"transit\"\nkey_id = \"k1\"\nrotation_interval = \"12h\"\nvault_address = \"http://127.0.0.1:8200\"\nvault_key_type = \"ecdsa-p256\"\n",
        )
        .unwrap();
        assert_eq!(c.provider, Provider::Transit);
        assert_eq!(c.rotation_interval, Duration::from_secs(12 * 3600));
        assert_eq!(c.vault_key_type, Alg::EcdsaP256);
        assert!(toml::from_str::<KmsConfig>("bogus = 1\n").is_err());
        assert!(toml::from_str::<KmsConfig>("rotation_interval = \"12\"\n").is_err());
        assert!(toml::from_str::<KmsConfig>("rotation_interval = \"1d\"\n").is_err());
    }

    /// A configured interval above 24 h is refused with an error naming the setting.
    #[test]
    fn file_interval_above_24h_is_refused() {
        let c: KmsConfig = toml::from_str("rotation_interval = \"25h\"\n").unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("kms.rotation_interval"), "{err}");
        assert!(err.to_string().contains("maximum of 24 h"), "{err}");
        let zero: KmsConfig = toml::from_str("rotation_interval = \"0s\"\n").unwrap();
        assert_eq!(
            setting_of(zero.validate().unwrap_err()),
            "kms.rotation_interval"
        );
        let ok: KmsConfig = toml::from_str("rotation_interval = \"1440m\"\n").unwrap();
        ok.validate().unwrap();
    }

    /// KGC_SIDECAR_KMS_REGION would do nothing for the providers of this build: refused by
    /// name; an empty value is as unset.
    #[test]
    fn kms_region_is_refused_for_providers_without_one() {
        let mut c = KmsConfig::default();
        let err = c
            .apply_env(|k| (k == "KGC_SIDECAR_KMS_REGION").then(|| "eu-west-1".to_owned()))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("invalid setting KGC_SIDECAR_KMS_REGION"),
            "{text}"
        );
        assert!(text.contains("local"), "{text}");
        let mut c = KmsConfig::default();
        c.apply_env(|k| (k == "KGC_SIDECAR_KMS_REGION").then(|| " ".to_owned()))
            .unwrap();
    }

    /// AWS: the region from KGC_SIDECAR_KMS_REGION, key ids in AWS's forms, and each bad value
    /// refused naming the setting it came from.
    #[test]
    fn aws_settings() {
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[
            ("KGC_SIDECAR_KMS_PROVIDER", "aws"),
            ("KGC_SIDECAR_KMS_REGION", "eu-west-1"),
            ("KGC_SIDECAR_KMS_KEY_ID", "alias/prod/knhk"),
        ]))
        .unwrap();
        c.validate().unwrap();
        let s = c.aws_settings().unwrap();
        assert_eq!(s.key.family, "alias/prod/knhk");
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        // The default key id is a bare alias name.
        let d = KmsConfig {
            provider: Provider::Aws,
            ..KmsConfig::default()
        };
        assert_eq!(
            d.aws_settings().unwrap().key.family,
            "alias/knhk-checkpoints"
        );
        for (pairs, setting) in [
            (
                vec![
                    ("KGC_SIDECAR_KMS_PROVIDER", "aws"),
                    ("KGC_SIDECAR_KMS_REGION", "Mars-1"),
                ],
                "KGC_SIDECAR_KMS_REGION",
            ),
            (
                vec![
                    ("KGC_SIDECAR_KMS_PROVIDER", "aws"),
                    ("KGC_SIDECAR_KMS_KEY_ID", "alias/aws/ebs"),
                ],
                "KGC_SIDECAR_KMS_KEY_ID",
            ),
            (
                vec![("KGC_SIDECAR_KMS_KEY_ID", "alias/x")],
                "KGC_SIDECAR_KMS_KEY_ID",
            ),
        ] {
            let mut c = KmsConfig::default();
            let err = c.apply_env(env_of(&pairs)).unwrap_err();
            assert_eq!(setting_of(err), setting, "{pairs:?}");
        }
        // An ARN's region must agree with the configured one.
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[
            ("KGC_SIDECAR_KMS_PROVIDER", "aws"),
            ("KGC_SIDECAR_KMS_REGION", "eu-west-1"),
            (
                "KGC_SIDECAR_KMS_KEY_ID",
                "arn:aws:kms:us-east-1:123456789012:alias/k",
            ),
        ]))
        .unwrap();
        assert_eq!(
            setting_of(c.validate().unwrap_err()),
            "KGC_SIDECAR_KMS_KEY_ID"
        );
        // AWS settings on another provider are refused rather than ignored.
        let c: KmsConfig = toml::from_str("aws_region = \"eu-west-1\"\n").unwrap();
        assert_eq!(setting_of(c.validate().unwrap_err()), "kms.aws_region");
        let c: KmsConfig =
            toml::from_str("provider = \"aws\"\naws_endpoint = \"ftp://x\"\n").unwrap();
        assert_eq!(setting_of(c.validate().unwrap_err()), "kms.aws_endpoint");
    }

    /// KGC_SIDECAR_KMS_PROVIDER maps vault/transit/openbao/local/aws/azure and refuses junk.
    #[test]
    fn legacy_provider() {
        for (raw, want) in [
            ("vault", Provider::Transit),
            ("Transit", Provider::Transit),
            ("openbao", Provider::Transit),
            ("local", Provider::Local),
            ("AWS", Provider::Aws),
            ("azure", Provider::Azure),
        ] {
            let mut c = KmsConfig::default();
            c.apply_env(env_of(&[("KGC_SIDECAR_KMS_PROVIDER", raw)]))
                .unwrap();
            assert_eq!(c.provider, want, "{raw}");
        }
        for raw in ["gcp", ""] {
            let mut c = KmsConfig::default();
            let err = c
                .apply_env(env_of(&[("KGC_SIDECAR_KMS_PROVIDER", raw)]))
                .unwrap_err();
            assert!(
                err.to_string().contains("KGC_SIDECAR_KMS_PROVIDER"),
                "{err}"
            );
        }
    }

    /// KGC_SIDECAR_KMS_KEY_ID sets the key id and refuses path-like or empty values.
    #[test]
    fn legacy_key_id() {
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[("KGC_SIDECAR_KMS_KEY_ID", "prod-ckpt.v1")]))
            .unwrap();
        assert_eq!(c.key_id, "prod-ckpt.v1");
        for bad in ["", "../etc", ".hidden", "a/b", "sp ace", &"x".repeat(65)] {
            let mut c = KmsConfig::default();
            let err = c
                .apply_env(env_of(&[("KGC_SIDECAR_KMS_KEY_ID", bad)]))
                .unwrap_err();
            assert_eq!(setting_of(err), "KGC_SIDECAR_KMS_KEY_ID", "{bad:?}");
        }
    }

    /// KGC_SIDECAR_KMS_VAULT_URL wins over VAULT_ADDR; both refuse non-http URLs.
    #[test]
    fn legacy_vault_url_and_vault_addr() {
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[
            ("KGC_SIDECAR_KMS_VAULT_URL", "https://vault.example:8200/"),
            ("VAULT_ADDR", "http://other:8200"),
        ]))
        .unwrap();
        assert_eq!(
            c.vault_address.as_deref(),
            Some("https://vault.example:8200")
        );
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[("VAULT_ADDR", "http://127.0.0.1:8200")]))
            .unwrap();
        assert_eq!(c.vault_address.as_deref(), Some("http://127.0.0.1:8200"));
        let mut from_file = KmsConfig {
            vault_address: Some("http://file:8200".into()),
            ..KmsConfig::default()
        };
        from_file
            .apply_env(env_of(&[("VAULT_ADDR", "http://env:8200")]))
            .unwrap();
        assert_eq!(from_file.vault_address.as_deref(), Some("http://file:8200"));
        for (var, bad) in [
            ("KGC_SIDECAR_KMS_VAULT_URL", "not a url"),
            ("KGC_SIDECAR_KMS_VAULT_URL", "ftp://vault:21"),
            ("VAULT_ADDR", "vault:8200"),
        ] {
            let mut c = KmsConfig::default();
            let err = c.apply_env(env_of(&[(var, bad)])).unwrap_err();
            assert_eq!(setting_of(err), var, "{bad:?}");
        }
    }

    /// KGC_SIDECAR_KMS_VAULT_MOUNT sets the mount (slashes trimmed) and refuses traversal.
    #[test]
    fn legacy_vault_mount() {
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[("KGC_SIDECAR_KMS_VAULT_MOUNT", "/team/transit/")]))
            .unwrap();
        assert_eq!(c.vault_mount, "team/transit");
        for bad in ["", "/", "a/../b", "a b", "a//b"] {
            let mut c = KmsConfig::default();
            let err = c
                .apply_env(env_of(&[("KGC_SIDECAR_KMS_VAULT_MOUNT", bad)]))
                .unwrap_err();
            assert_eq!(setting_of(err), "KGC_SIDECAR_KMS_VAULT_MOUNT", "{bad:?}");
        }
    }

    /// KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS accepts 1-24 and refuses 25, 0, junk, overflow.
    #[test]
    fn legacy_rotation_interval() {
        let var = "KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS";
        for (raw, hours) in [("1", 1), ("24", 24), (" 6 ", 6)] {
            let mut c = KmsConfig::default();
            c.apply_env(env_of(&[(var, raw)])).unwrap();
            assert_eq!(c.rotation_interval, Duration::from_secs(hours * 3600));
        }
        for bad in ["25", "0", "-1", "1.5", "abc", "", "99999999999999999999"] {
            let mut c = KmsConfig::default();
            let err = c.apply_env(env_of(&[(var, bad)])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(var), "{bad:?}: {text}");
        }
        let mut c = KmsConfig::default();
        let err = c.apply_env(env_of(&[(var, "48")])).unwrap_err();
        assert!(err.to_string().contains("maximum of 24 h"), "{err}");
    }

    /// VAULT_TOKEN is taken from the environment; transit without address or token is refused.
    #[test]
    fn transit_needs_address_and_token() {
        let mut c = KmsConfig {
            provider: Provider::Transit,
            ..KmsConfig::default()
        };
        assert_eq!(setting_of(c.validate().unwrap_err()), "kms.vault_address");
        c.apply_env(env_of(&[("VAULT_ADDR", "http://127.0.0.1:1")]))
            .unwrap();
        assert_eq!(setting_of(c.validate().unwrap_err()), "VAULT_TOKEN");
        c.apply_env(env_of(&[("VAULT_TOKEN", "s.abc")])).unwrap();
        c.validate().unwrap();
        assert_eq!(c.transit_settings().unwrap().token, "s.abc");
    }

    fn azure_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut pairs = vec![
            ("KGC_SIDECAR_KMS_PROVIDER", "azure"),
            ("KGC_SIDECAR_KMS_VAULT_URL", "https://knhk.vault.azure.net"),
            ("KGC_SIDECAR_KMS_KEY_ID", "checkpoints"),
        ];
        pairs.extend_from_slice(extra);
        pairs
    }

    /// The azure provider: vault URL and key name, the credential from AZURE_*, the authority
    /// host for azure only; VAULT_ADDR (HashiCorp's) is not a Key Vault URL.
    #[test]
    fn azure_settings_come_from_the_vault_url_key_id_and_azure_variables() {
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&azure_env(&[
            ("AZURE_TENANT_ID", "tenant"),
            ("AZURE_CLIENT_ID", "client"),
            ("AZURE_CLIENT_SECRET", "s3cret"),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us"),
            ("VAULT_ADDR", "http://127.0.0.1:8200"),
        ])))
        .unwrap();
        c.validate().unwrap();
        let a = c.azure_settings().unwrap();
        assert_eq!(a.vault_url, "https://knhk.vault.azure.net");
        assert_eq!(a.key_name, "checkpoints");
        assert_eq!(a.credential.kind(), CredentialKind::ClientSecret);
        assert_eq!(
            a.authority_host.as_deref(),
            Some("https://login.microsoftonline.us")
        );
        assert!(a.verify_challenge_resource);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the secret stays out of Debug"
        );

        // Without a secret or token file: managed identity.
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&azure_env(&[]))).unwrap();
        assert_eq!(
            c.azure_settings().unwrap().credential,
            AzureCredential::ManagedIdentity { client_id: None }
        );
        // AZURE_AUTHORITY_HOST is ignored for other providers (other tools may set it).
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[("AZURE_AUTHORITY_HOST", "http://x")]))
            .unwrap();
        c.validate().unwrap();
    }

    /// Nonsense for the azure provider is refused naming the setting.
    #[test]
    fn azure_refuses_bad_settings_naming_them() {
        for (extra, setting) in [
            (
                vec![("KGC_SIDECAR_KMS_VAULT_URL", "http://knhk.vault.azure.net")],
                "KGC_SIDECAR_KMS_VAULT_URL",
            ),
            (
                vec![("KGC_SIDECAR_KMS_KEY_ID", "bad_name")],
                "KGC_SIDECAR_KMS_KEY_ID",
            ),
            (
                vec![(
                    "KGC_SIDECAR_KMS_KEY_ID",
                    "https://other.vault.azure.net/keys/cp",
                )],
                "KGC_SIDECAR_KMS_KEY_ID",
            ),
            (
                vec![("AZURE_AUTHORITY_HOST", "http://login.example")],
                "AZURE_AUTHORITY_HOST",
            ),
            (
                vec![("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token")],
                "AZURE_TENANT_ID",
            ),
            (
                vec![("KGC_SIDECAR_KMS_REGION", "eu-west-1")],
                "KGC_SIDECAR_KMS_REGION",
            ),
        ] {
            let mut c = KmsConfig::default();
            let err = c
                .apply_env(env_of(&azure_env(&extra)))
                .and_then(|()| c.validate())
                .unwrap_err();
            assert_eq!(setting_of(err), setting, "{extra:?}");
        }
        // A key identifier names the vault itself.
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[
            ("KGC_SIDECAR_KMS_PROVIDER", "azure"),
            (
                "KGC_SIDECAR_KMS_KEY_ID",
                "https://knhk.vault.azure.net/keys/cp",
            ),
        ]))
        .unwrap();
        assert_eq!(
            c.azure_settings().unwrap().vault_url,
            "https://knhk.vault.azure.net"
        );
        // No vault at all.
        let mut c = KmsConfig::default();
        c.apply_env(env_of(&[("KGC_SIDECAR_KMS_PROVIDER", "azure")]))
            .unwrap();
        assert_eq!(setting_of(c.validate().unwrap_err()), "kms.key_id");
        // Azure-only settings are refused for other providers.
        let c = KmsConfig {
            azure_ca_file: Some("/etc/ssl/ca.pem".into()),
            ..KmsConfig::default()
        };
        assert_eq!(setting_of(c.validate().unwrap_err()), "kms.azure_ca_file");
        let c = KmsConfig {
            azure_verify_challenge_resource: false,
            ..KmsConfig::default()
        };
        assert_eq!(
            setting_of(c.validate().unwrap_err()),
            "kms.azure_verify_challenge_resource"
        );
    }
}
