//! The HTTP transport of the Azure SDK clients: the agent's own `reqwest` (rustls on ring, the
//! system's CA certificates plus an optional CA file), so the Azure crates build without their
//! default `reqwest` and its `aws-lc` TLS backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::{Error, ErrorKind};
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::request::{Body, Request};
use azure_core::http::{AsyncRawResponse, HttpClient, Method, Transport};

use super::KmsError;

/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An [`HttpClient`] over the agent's `reqwest`.
#[derive(Debug, Clone)]
pub struct ReqwestTransport(reqwest::Client);

impl ReqwestTransport {
    /// A client trusting the system's CA certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when
    /// set, as OpenSSL reads them) and those in `ca_file`; each call attempt ends after
    /// `call_timeout`.
    pub fn new(ca_file: Option<&Path>, call_timeout: Duration) -> Result<Self, KmsError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(call_timeout)
            .redirect(reqwest::redirect::Policy::none());
        // The system store may be partly unreadable; what loads is used, as other TLS clients do.
        for cert in rustls_native_certs::load_native_certs().certs {
            if let Ok(cert) = reqwest::Certificate::from_der(&cert) {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| KmsError::Io {
                path: path.to_owned(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| KmsError::InvalidConfig {
                    setting: "kms.azure_ca_file",
                    reason: format!("{} holds no PEM certificate", path.display()),
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| KmsError::InvalidConfig {
            setting: "kms.azure_ca_file",
            reason: format!("the HTTP client cannot be built: {e}"),
        })?;
        Ok(ReqwestTransport(client))
    }

    /// The transport, for an SDK client's options.
    pub fn transport(&self) -> Transport {
        Transport::new(Arc::new(self.clone()))
    }
}

fn method_of(method: Method) -> reqwest::Method {
    match method {
        Method::Delete => reqwest::Method::DELETE,
        Method::Get => reqwest::Method::GET,
        Method::Head => reqwest::Method::HEAD,
        Method::Patch => reqwest::Method::PATCH,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        // `Method` is non-exhaustive; the Key Vault and Entra calls use only the verbs above.
        _ => reqwest::Method::OPTIONS,
    }
}

#[async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut req = self
            .0
            .request(method_of(request.method()), request.url().clone());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match request.body() {
            Body::Bytes(bytes) => req.body(bytes.clone()),
            _ => {
                return Err(Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not used by the Key Vault signer",
                ))
            }
        };
        let rsp = req.send().await.map_err(|e| {
            let kind = if e.is_connect() || e.is_timeout() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            Error::with_error(kind, e, "the HTTP request failed")
        })?;
        let status = rsp.status().as_u16();
        let headers: Headers = rsp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                let v = v.to_str().ok()?;
                Some((
                    HeaderName::from(k.as_str().to_owned()),
                    HeaderValue::from(v.to_owned()),
                ))
            })
            .collect::<std::collections::HashMap<_, _>>()
            .into();
        let body = rsp
            .bytes()
            .await
            .map_err(|e| Error::with_error(ErrorKind::Io, e, "reading the HTTP response failed"))?;
        Ok(AsyncRawResponse::from_bytes(status.into(), headers, body))
    }
}
