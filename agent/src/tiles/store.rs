//! Opening a tiles destination as an `object_store` store, and reading and writing resources
//! under its prefix.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use super::config::{Destination, S3Credentials};
use super::TilesError;

/// A destination opened for reading and writing.
#[derive(Debug, Clone)]
pub struct TileStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The destination, for messages.
    pub url: String,
}

impl TileStore {
    /// Open `destination`: a directory (created when missing) or an S3 bucket, with
    /// `endpoint` (plain `http://` allowed for it), `region` and `credentials` (else the AWS
    /// environment's).
    pub fn open(
        destination: &Destination,
        endpoint: Option<&str>,
        region: &str,
        credentials: Option<&S3Credentials>,
    ) -> Result<Self, TilesError> {
        let bad = |e: &dyn std::fmt::Display| TilesError::Destination(e.to_string());
        match destination {
            Destination::Directory(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| bad(&format!("creating {}: {e}", dir.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| bad(&e))?;
                Ok(TileStore {
                    store: Arc::new(store),
                    prefix: String::new(),
                    url: format!("file://{}", dir.display()),
                })
            }
            Destination::S3 { bucket, prefix } => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(region);
                if let Some(c) = credentials {
                    builder = builder
                        .with_access_key_id(&c.access_key_id)
                        .with_secret_access_key(&c.secret_access_key);
                    if let Some(token) = &c.session_token {
                        builder = builder.with_token(token);
                    }
                }
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let store = builder.build().map_err(|e| bad(&e))?;
                Ok(TileStore {
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                    url: format!("s3://{bucket}/{prefix}"),
                })
            }
        }
    }

    fn key(&self, path: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(path)
        } else {
            Path::from(format!("{}/{path}", self.prefix))
        }
    }

    /// Write `bytes` at `path` (under the prefix), replacing what was there.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), TilesError> {
        self.store
            .put(&self.key(path), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|source| TilesError::Store {
                what: "write",
                path: path.to_owned(),
                source,
            })
    }

    /// The bytes at `path`, `None` when there is nothing.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, TilesError> {
        let failed = |source| TilesError::Store {
            what: "read",
            path: path.to_owned(),
            source,
        };
        match self.store.get(&self.key(path)).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(failed)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }
}
