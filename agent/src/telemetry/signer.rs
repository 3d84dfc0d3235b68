//! [`MeteredSigner`]: any [`Signer`] with every call timed (`knhk.agent.kms.call.duration`,
//! by provider, operation and `error.type`) and traced (a `knhk.kms.<operation>` span with
//! `kms.provider`, `knhk.kms.key_id` and, once known, `knhk.kms.key_version`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use knhk_core::checkpoint::{PublicKeyVersion, SignatureRecord};
use tracing::Instrument as _;

use super::Metrics;
use crate::kms::{KmsError, Signer};

/// A signer whose calls are measured.
pub struct MeteredSigner {
    inner: Arc<dyn Signer>,
    metrics: Arc<Metrics>,
}

impl MeteredSigner {
    /// Wrap `inner`.
    pub fn wrap(inner: Arc<dyn Signer>, metrics: Arc<Metrics>) -> Arc<dyn Signer> {
        Arc::new(MeteredSigner { inner, metrics })
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        span: tracing::Span,
        call: impl Future<Output = Result<T, KmsError>>,
        version: impl Fn(&T) -> Option<u32>,
    ) -> Result<T, KmsError> {
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let error = result.as_ref().err().map(KmsError::kind);
        match &result {
            Ok(v) => {
                if let Some(v) = version(v) {
                    span.record("knhk.kms.key_version", v);
                }
            }
            Err(e) => {
                span.record("error.type", e.kind());
                span.record("otel.status_code", "ERROR");
            }
        }
        self.metrics
            .kms_call(self.inner.provider(), operation, error, started.elapsed());
        result
    }

    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!(
            "knhk.kms",
            otel.name = format!("knhk.kms.{operation}"),
            kms.provider = self.inner.provider(),
            knhk.kms.key_id = self.inner.key_id(),
            knhk.kms.key_version = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }
}

#[async_trait]
impl Signer for MeteredSigner {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn key_id(&self) -> &str {
        self.inner.key_id()
    }

    async fn sign(&self, msg: &[u8]) -> Result<SignatureRecord, KmsError> {
        self.timed("sign", self.span("sign"), self.inner.sign(msg), |s| {
            Some(s.key_version)
        })
        .await
    }

    async fn sign_with_version(
        &self,
        msg: &[u8],
        version: u32,
    ) -> Result<SignatureRecord, KmsError> {
        self.timed(
            "sign",
            self.span("sign"),
            self.inner.sign_with_version(msg, version),
            |s| Some(s.key_version),
        )
        .await
    }

    async fn public_keys(&self) -> Result<Vec<PublicKeyVersion>, KmsError> {
        self.timed(
            "public_keys",
            self.span("public_keys"),
            self.inner.public_keys(),
            |keys| keys.iter().map(|k| k.version).max(),
        )
        .await
    }

    async fn rotate(&self) -> Result<PublicKeyVersion, KmsError> {
        self.timed("rotate", self.span("rotate"), self.inner.rotate(), |k| {
            Some(k.version)
        })
        .await
    }
}
