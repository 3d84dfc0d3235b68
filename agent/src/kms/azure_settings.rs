//! How the Azure Key Vault provider reaches its key: the vault URL and key name (a key name or a
//! key identifier URL), the Microsoft Entra ID credential chosen from the standard `AZURE_*`
//! variables, and the TLS and challenge options. Pure parsing, no I/O.

use std::path::PathBuf;
use std::time::Duration;

use super::KmsError;

/// The longest Key Vault key name (Key Vault allows 1–127 of `0-9 a-z A-Z -`).
pub const MAX_KEY_NAME: usize = 127;

/// Which Entra ID credential authenticates the agent to Key Vault (`kms.azure_credential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// The first that applies, in the order of Azure's `DefaultAzureCredential`: a client secret
    /// when `AZURE_CLIENT_SECRET` is set, workload identity when `AZURE_FEDERATED_TOKEN_FILE` is
    /// set, else managed identity.
    #[default]
    Auto,
    /// A service principal's secret: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// AKS workload identity: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity,
    /// The managed identity of the VM or App Service (user-assigned when `AZURE_CLIENT_ID` is set).
    ManagedIdentity,
}

impl CredentialKind {
    /// The name `kms.azure_credential` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Auto => "auto",
            CredentialKind::ClientSecret => "client_secret",
            CredentialKind::WorkloadIdentity => "workload_identity",
            CredentialKind::ManagedIdentity => "managed_identity",
        }
    }
}

/// The `AZURE_*` variables the credentials read, captured once from the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AzureEnv {
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET` (never logged).
    pub client_secret: Option<String>,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for AzureEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureEnv")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("federated_token_file", &self.federated_token_file)
            .finish()
    }
}

impl AzureEnv {
    /// Read the variables through `env` (tests pass a map); empty values count as unset.
    pub fn read(env: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        AzureEnv {
            tenant_id: get("AZURE_TENANT_ID"),
            client_id: get("AZURE_CLIENT_ID"),
            client_secret: get("AZURE_CLIENT_SECRET"),
            federated_token_file: get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
        }
    }
}

/// The credential the signer authenticates with, resolved from [`CredentialKind`] and [`AzureEnv`].
#[derive(Clone, PartialEq, Eq)]
pub enum AzureCredential {
    /// A service principal's client secret.
    ClientSecret {
        /// The Entra tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The secret (never logged).
        secret: String,
    },
    /// Workload identity federation: a Kubernetes service account token exchanged for an Entra token.
    WorkloadIdentity {
        /// The Entra tenant.
        tenant_id: String,
        /// The application (client) id.
        client_id: String,
        /// The projected service account token.
        token_file: PathBuf,
    },
    /// The host's managed identity; `client_id` picks a user-assigned one.
    ManagedIdentity {
        /// A user-assigned identity's client id; `None` is the system-assigned identity.
        client_id: Option<String>,
    },
}

impl std::fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AzureCredential::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            AzureCredential::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => f
                .debug_struct("WorkloadIdentity")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
            AzureCredential::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
        }
    }
}

fn needed(value: &Option<String>, setting: &'static str, what: &str) -> Result<String, KmsError> {
    value.clone().ok_or_else(|| KmsError::InvalidConfig {
        setting,
        reason: format!("{what} credentials need it: set it"),
    })
}

impl AzureCredential {
    /// Resolve the credential `kind` asks for from `env`; a missing variable is named.
    pub fn resolve(kind: CredentialKind, env: &AzureEnv) -> Result<Self, KmsError> {
        let kind = match kind {
            CredentialKind::Auto if env.client_secret.is_some() => CredentialKind::ClientSecret,
            CredentialKind::Auto if env.federated_token_file.is_some() => {
                CredentialKind::WorkloadIdentity
            }
            CredentialKind::Auto => CredentialKind::ManagedIdentity,
            other => other,
        };
        Ok(match kind {
            CredentialKind::ClientSecret => AzureCredential::ClientSecret {
                tenant_id: needed(&env.tenant_id, "AZURE_TENANT_ID", "client secret")?,
                client_id: needed(&env.client_id, "AZURE_CLIENT_ID", "client secret")?,
                secret: needed(&env.client_secret, "AZURE_CLIENT_SECRET", "client secret")?,
            },
            CredentialKind::WorkloadIdentity => AzureCredential::WorkloadIdentity {
                tenant_id: needed(&env.tenant_id, "AZURE_TENANT_ID", "workload identity")?,
                client_id: needed(&env.client_id, "AZURE_CLIENT_ID", "workload identity")?,
                token_file: env.federated_token_file.clone().ok_or_else(|| {
                    KmsError::InvalidConfig {
                        setting: "AZURE_FEDERATED_TOKEN_FILE",
                        reason: "workload identity credentials need it: set it".to_owned(),
                    }
                })?,
            },
            CredentialKind::ManagedIdentity | CredentialKind::Auto => {
                AzureCredential::ManagedIdentity {
                    client_id: env.client_id.clone(),
                }
            }
        })
    }

    /// The credential's kind, for logs and errors.
    pub fn kind(&self) -> CredentialKind {
        match self {
            AzureCredential::ClientSecret { .. } => CredentialKind::ClientSecret,
            AzureCredential::WorkloadIdentity { .. } => CredentialKind::WorkloadIdentity,
            AzureCredential::ManagedIdentity { .. } => CredentialKind::ManagedIdentity,
        }
    }
}

/// How to reach the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSettings {
    /// The vault, `https://<name>.vault.azure.net` (no trailing slash).
    pub vault_url: String,
    /// The key's name in the vault.
    pub key_name: String,
    /// How the agent authenticates.
    pub credential: AzureCredential,
    /// The Entra ID authority (a sovereign cloud's); `None`: `AZURE_AUTHORITY_HOST` or the
    /// public cloud's.
    pub authority_host: Option<String>,
    /// A PEM file of extra CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Whether the audience in Key Vault's authentication challenge must be a parent domain of
    /// the vault's host (Azure's own check against a vault URL that points elsewhere).
    pub verify_challenge_resource: bool,
    /// Timeout of one HTTP call attempt.
    pub call_timeout: Duration,
}

/// Whether `name` is a Key Vault key name.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The vault (when `key_id` is a key identifier `https://<vault>/keys/<name>`) and the key name
/// of `key_id`.
pub fn parse_key_id(key_id: &str) -> Result<(Option<String>, String), String> {
    if key_id.starts_with("http://") {
        return Err("Key Vault is reached over https:// only".to_owned());
    }
    let (from_id, name) = if key_id.starts_with("https://") {
        let url = url::Url::parse(key_id).map_err(|e| format!("not a key identifier URL: {e}"))?;
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let name = match segments.as_slice() {
            ["keys", name] => (*name).to_owned(),
            ["keys", _, _] => {
                return Err("names one version of a key; name the key (…/keys/<name>): knhk signs with its newest version and keeps the older ones for verification".to_owned())
            }
            _ => return Err("a key identifier is https://<vault>/keys/<name>".to_owned()),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a key identifier has no query or fragment".to_owned());
        }
        (
            Some(format!("{}://{}", url.scheme(), url.authority())),
            name,
        )
    } else {
        (None, key_id.to_owned())
    };
    if !valid_key_name(&name) {
        return Err(format!(
            "key name {name:?} must be 1-{MAX_KEY_NAME} of A-Z a-z 0-9 -"
        ));
    }
    Ok((from_id, name))
}

/// The vault URL and key name that `key_id` (a key name or a key identifier) and the
/// configured vault URL name together.
pub fn parse_key_ref(key_id: &str, vault_url: Option<&str>) -> Result<(String, String), String> {
    let (from_id, name) = parse_key_id(key_id)?;
    let vault = match (from_id, vault_url.map(|v| v.trim_end_matches('/').to_owned())) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "the key identifier is in vault {a}, but the vault URL is {b}"
            ))
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => {
            return Err(
                "the azure provider needs the vault: a key identifier URL, or kms.vault_address / KGC_SIDECAR_KMS_VAULT_URL"
                    .to_owned(),
            )
        }
    };
    Ok((vault, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "https://knhk.vault.azure.net";

    #[test]
    fn key_refs_name_a_vault_and_a_key() {
        assert_eq!(
            parse_key_ref("checkpoints", Some("https://knhk.vault.azure.net/")).unwrap(),
            (VAULT.to_owned(), "checkpoints".to_owned())
        );
        assert_eq!(
            parse_key_ref("https://knhk.vault.azure.net/keys/cp-1", None).unwrap(),
            (VAULT.to_owned(), "cp-1".to_owned())
        );
        assert_eq!(
            parse_key_ref("https://knhk.vault.azure.net/keys/cp-1/", Some(VAULT)).unwrap(),
            (VAULT.to_owned(), "cp-1".to_owned())
        );
        for (key, vault, says) in [
            ("checkpoints", None, "needs the vault"),
            ("bad_name", Some(VAULT), "must be 1-127"),
            ("", Some(VAULT), "must be 1-127"),
            (&*"k".repeat(128), Some(VAULT), "must be 1-127"),
            (
                "https://knhk.vault.azure.net/keys/cp/0123abcd",
                None,
                "one version",
            ),
            (
                "https://knhk.vault.azure.net/secrets/cp",
                None,
                "/keys/<name>",
            ),
            ("https://knhk.vault.azure.net/keys/cp?x=1", None, "no query"),
            ("http://knhk.vault.azure.net/keys/cp", None, "https:// only"),
            (
                "https://other.vault.azure.net/keys/cp",
                Some(VAULT),
                "but the vault URL is",
            ),
        ] {
            let err = parse_key_ref(key, vault).unwrap_err();
            assert!(err.contains(says), "{key:?}: {err}");
        }
    }

    #[test]
    fn credentials_resolve_in_the_default_order_and_name_what_is_missing() {
        let full = AzureEnv {
            tenant_id: Some("t".into()),
            client_id: Some("c".into()),
            client_secret: Some("s3cret".into()),
            federated_token_file: Some("/var/run/token".into()),
        };
        assert_eq!(
            AzureCredential::resolve(CredentialKind::Auto, &full)
                .unwrap()
                .kind(),
            CredentialKind::ClientSecret
        );
        let federated = AzureEnv {
            client_secret: None,
            ..full.clone()
        };
        assert_eq!(
            AzureCredential::resolve(CredentialKind::Auto, &federated)
                .unwrap()
                .kind(),
            CredentialKind::WorkloadIdentity
        );
        assert_eq!(
            AzureCredential::resolve(CredentialKind::Auto, &AzureEnv::default()).unwrap(),
            AzureCredential::ManagedIdentity { client_id: None }
        );
        for (kind, env, setting) in [
            (
                CredentialKind::ClientSecret,
                federated.clone(),
                "AZURE_CLIENT_SECRET",
            ),
            (
                CredentialKind::WorkloadIdentity,
                AzureEnv {
                    federated_token_file: None,
                    ..full.clone()
                },
                "AZURE_FEDERATED_TOKEN_FILE",
            ),
            (
                CredentialKind::ClientSecret,
                AzureEnv {
                    tenant_id: None,
                    ..full.clone()
                },
                "AZURE_TENANT_ID",
            ),
        ] {
            match AzureCredential::resolve(kind, &env) {
                Err(KmsError::InvalidConfig { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{kind:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let env = AzureEnv::read(|k| (k == "AZURE_CLIENT_SECRET").then(|| "s3cret".to_owned()));
        assert!(!format!("{env:?}").contains("s3cret"));
        let cred = AzureCredential::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: "s3cret".into(),
        };
        assert!(!format!("{cred:?}").contains("s3cret"));
    }
}
