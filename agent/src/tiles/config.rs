//! The `[tiles]` table: where the log is published.
//!
//! ```toml
//! [tiles]
//! url = "s3://audit-bucket/knhk/eu-west-1"   # or "file:///var/lib/knhk-tiles"; off when unset
//! s3_endpoint = "https://s3.eu-west-1.amazonaws.com"  # S3-compatible servers; default AWS
//! s3_region = "eu-west-1"
//! ```
//!
//! S3 credentials come from the standard AWS environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity, container or instance
//! credentials), never from this file. `KNHK_TILES_URL` overrides `url`.

use serde::Deserialize;

use crate::config::ConfigError;

/// Where tiles go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A directory (created when missing).
    Directory(std::path::PathBuf),
    /// An S3 bucket and a key prefix inside it (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
    },
}

impl Destination {
    /// Parse `file:///abs/dir`, `/abs/dir` or `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(format!(
                    "{bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, '-', '.')"
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..")
                || prefix.bytes().any(|b| b.is_ascii_control() || b == b' ')
                || prefix.contains("//")
            {
                return Err(format!("{prefix:?} is not a plain key prefix"));
            }
            return Ok(Destination::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        let path = std::path::Path::new(path);
        if !path.is_absolute() || url.contains('\n') {
            return Err(format!(
                "{url:?} is neither s3://bucket/prefix nor an absolute directory (file:///path)"
            ));
        }
        Ok(Destination::Directory(path.to_path_buf()))
    }
}

/// S3 credentials, from the environment only (never the file); the secret is not printed.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The `[tiles]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TilesConfig {
    /// Destination URL; publication is off when unset.
    pub url: Option<String>,
    /// S3 endpoint override (an S3-compatible server); AWS's own when unset.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// Static S3 credentials from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; without
    /// them the AWS chain (web identity, container, instance) is used.
    #[serde(skip)]
    pub s3_credentials: Option<S3Credentials>,
}

impl Default for TilesConfig {
    fn default() -> Self {
        TilesConfig {
            url: None,
            s3_endpoint: None,
            s3_region: "us-east-1".to_owned(),
            s3_credentials: None,
        }
    }
}

impl TilesConfig {
    /// `KNHK_TILES_URL` overrides `url` (an empty value turns publication off); the AWS
    /// credential variables set [`TilesConfig::s3_credentials`].
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        if let Some(url) = env("KNHK_TILES_URL") {
            self.url = (!url.is_empty()).then_some(url);
        }
        if let (Some(access_key_id), Some(secret_access_key)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            self.s3_credentials = Some(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token: env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
            });
        }
    }

    /// The destination, when publication is on.
    pub fn destination(&self) -> Result<Option<Destination>, ConfigError> {
        self.url
            .as_deref()
            .map(Destination::parse)
            .transpose()
            .map_err(|reason| ConfigError::Invalid {
                setting: "tiles.url",
                reason,
            })
    }

    /// Check every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let destination = self.destination()?;
        if let Some(endpoint) = &self.s3_endpoint {
            let ok = url::Url::parse(endpoint)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(ConfigError::Invalid {
                    setting: "tiles.s3_endpoint",
                    reason: format!("{endpoint:?} is not an http(s) URL"),
                });
            }
            if !matches!(destination, Some(Destination::S3 { .. })) {
                return Err(ConfigError::Invalid {
                    setting: "tiles.s3_endpoint",
                    reason: "applies to an s3:// tiles.url only".to_owned(),
                });
            }
        }
        let region_ok = !self.s3_region.is_empty()
            && self.s3_region.len() <= 64
            && self
                .s3_region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(ConfigError::Invalid {
                setting: "tiles.s3_region",
                reason: format!("{:?} is not a region name", self.s3_region),
            });
        }
        Ok(())
    }
}
