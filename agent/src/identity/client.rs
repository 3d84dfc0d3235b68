//! [`https_client`]: a reqwest client that talks mutual TLS with our SVID to allowed peers.

use std::sync::Arc;
use std::time::Duration;

use super::Identity;

/// Connect timeout of the peer client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A reqwest client for agent-to-agent calls (`https://` only): it presents our current SVID,
/// accepts a server only when its SVID verifies against the current bundle and its SPIFFE ID
/// is in the allow-list (the URL's host name is not checked), and completes no handshake while
/// our own SVID is unusable. Responses carry `reqwest::tls::TlsInfo` with the peer certificate.
///
/// Rotation applies to every new connection without building a new client.
pub fn https_client(identity: Arc<Identity>) -> reqwest::Client {
    let config = (*identity.client_config()).clone();
    match reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .https_only(true)
        .tls_info(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            // Only possible if reqwest was built against another rustls than this crate; the
            // fallback has no client certificate and no trust roots, so every peer call fails.
            tracing::error!(error = %e, "building the mTLS peer client failed; peer calls will fail");
            reqwest::Client::builder()
                .https_only(true)
                .tls_built_in_root_certs(false)
                .build()
                .unwrap_or_default()
        }
    }
}
