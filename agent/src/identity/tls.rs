//! rustls glue: certificate resolvers that hand out the current SVID (so rotation applies to
//! the next handshake without rebuilding any config), and peer verifiers that check the chain
//! against the current trust bundle of the peer's trust domain, take the SPIFFE ID from the URI
//! SAN (DNS names are ignored) and check it against the allow-list. Both fail closed while our
//! own SVID is unusable (expired, withdrawn, never loaded).

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use spiffe::SpiffeId;

use super::allow::{allowed, AllowEntry};
use super::material::Material;

/// The state the resolvers and verifiers read on every handshake.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Peers we accept.
    pub allow: Vec<AllowEntry>,
    /// The crypto provider (ring).
    pub provider: Arc<CryptoProvider>,
    /// The current material, `None` when no usable SVID is held.
    pub material: RwLock<Option<Arc<Material>>>,
}

/// Seconds since the Unix epoch now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Shared {
    /// The material if our SVID is unexpired at `now` (Unix seconds); logs why not otherwise.
    pub(crate) fn usable_at(&self, now: i64, what: &str) -> Option<Arc<Material>> {
        let current = self.material.read().ok().and_then(|m| m.clone());
        match current {
            Some(m) if m.not_after > now => Some(m),
            Some(m) => {
                tracing::error!(
                    own_id = %m.id,
                    expired_at = m.not_after,
                    "own SVID expired: refusing to {what} (fail closed)"
                );
                None
            }
            None => {
                tracing::error!("no usable SVID: refusing to {what} (fail closed)");
                None
            }
        }
    }

    fn usable(&self, what: &str) -> Option<Arc<Material>> {
        self.usable_at(unix_now(), what)
    }

    /// Verify a peer's chain and identity; returns the verified SPIFFE ID.
    fn verify_peer(
        &self,
        role: &'static str,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<SpiffeId, rustls::Error> {
        let refused =
            || rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        let material = self
            .usable(&format!("verify a {role}"))
            .ok_or_else(refused)?;
        let id = spiffe::cert::spiffe_id_from_der(end_entity.as_ref()).map_err(|e| {
            tracing::warn!(role, error = %e, "refused peer: certificate carries no single SPIFFE ID");
            refused()
        })?;
        if !allowed(&self.allow, &id) {
            tracing::warn!(role, peer_id = %id, "refused peer: SPIFFE ID not in the allow-list");
            return Err(refused());
        }
        let Some(bundle) = material.bundles.get(id.trust_domain_name()) else {
            tracing::warn!(role, peer_id = %id, "refused peer: no trust bundle for its trust domain");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        let anchors: Vec<_> = bundle
            .iter()
            .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
            .collect();
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            tracing::warn!(role, peer_id = %id, error = %e, "refused peer: bad certificate");
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
        })?;
        cert.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| {
            tracing::warn!(role, peer_id = %id, error = %e, "refused peer: chain does not verify against the trust bundle");
            rustls::Error::InvalidCertificate(match e {
                webpki::Error::CertExpired { .. } => CertificateError::Expired,
                webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
                webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
                webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
                _ => CertificateError::ApplicationVerificationFailure,
            })
        })?;
        Ok(id)
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server side: presents our current SVID and requires an allowed client SVID.
#[derive(Debug)]
pub(crate) struct ServerSide(pub Arc<Shared>);

impl ResolvesServerCert for ServerSide {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.usable("serve a handshake").map(|m| m.key.clone())
    }
}

impl ClientCertVerifier for ServerSide {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify_peer(
                "client",
                end_entity,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
            )
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// Client side: presents our current SVID and requires an allowed server SVID, whatever name
/// the URL carries.
#[derive(Debug)]
pub(crate) struct ClientSide(pub Arc<Shared>);

impl ResolvesClientCert for ClientSide {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .usable("present a client certificate")
            .map(|m| m.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ServerCertVerifier for ClientSide {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_peer(
                "server",
                end_entity,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
            )
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}
