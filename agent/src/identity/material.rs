//! Our own SVID and the trust bundles, as last loaded from the Workload API (`spiffe`'s
//! `X509Source`) or from the fallback files, ready for rustls.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use spiffe::{SpiffeId, X509Source};

use super::config::{FileFallback, Settings};
use super::IdentityError;

/// Where the identity comes from.
pub(crate) enum Backend {
    /// The SPIFFE Workload API.
    WorkloadApi(X509Source),
    /// PEM files (the older sidecar's fallback), re-read on every refresh.
    Files(FileFallback),
}

impl Backend {
    /// A short name for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::WorkloadApi(_) => "workload-api",
            Backend::Files(_) => "files",
        }
    }
}

/// One consistent view of our SVID and the bundles we trust.
#[derive(Debug)]
pub(crate) struct Material {
    /// Our SPIFFE ID.
    pub id: SpiffeId,
    /// Our chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// `notAfter` of our leaf, Unix seconds.
    pub not_after: i64,
    /// Trust anchors (DER) by trust domain name.
    pub bundles: HashMap<String, Vec<CertificateDer<'static>>>,
}

/// `notAfter` of a DER certificate, Unix seconds.
pub(crate) fn not_after(der: &[u8]) -> Result<i64, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::BadMaterial(format!("leaf certificate does not parse: {e}")))?;
    Ok(cert.validity().not_after.timestamp())
}

fn build(
    settings: &Settings,
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundles: HashMap<String, Vec<CertificateDer<'static>>>,
) -> Result<Material, IdentityError> {
    let leaf = chain
        .first()
        .ok_or_else(|| IdentityError::BadMaterial("empty certificate chain".to_owned()))?;
    let id = spiffe::cert::spiffe_id_from_der(leaf.as_ref())
        .map_err(|e| IdentityError::BadMaterial(format!("leaf has no SPIFFE ID: {e}")))?;
    if !id.is_member_of(&settings.trust_domain) {
        return Err(IdentityError::WrongIdentity(format!(
            "our SVID {id} is not in the configured trust domain {}",
            settings.trust_domain
        )));
    }
    if let Some(want) = &settings.id {
        if &id != want {
            return Err(IdentityError::WrongIdentity(format!(
                "our SVID is {id}, the configured identity.id is {want}"
            )));
        }
    }
    let not_after = not_after(leaf.as_ref())?;
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| IdentityError::BadMaterial(format!("SVID key unusable: {e}")))?;
    Ok(Material {
        id,
        key: Arc::new(key),
        not_after,
        bundles,
    })
}

/// Load the current material from the Workload API source.
pub(crate) fn from_source(
    source: &X509Source,
    settings: &Settings,
    provider: &CryptoProvider,
) -> Result<Material, IdentityError> {
    let state = source.state();
    let svid = state
        .svid()
        .map_err(|e| IdentityError::Unavailable(format!("no usable SVID: {e}")))?;
    let context = state
        .context()
        .map_err(|e| IdentityError::Unavailable(format!("no trust bundles: {e}")))?;
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let bundles = context
        .bundle_set()
        .iter()
        .map(|(td, bundle)| {
            let anchors = bundle
                .authorities()
                .iter()
                .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                .collect();
            (td.to_string(), anchors)
        })
        .collect();
    build(settings, provider, chain, key, bundles)
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path)
        .map_err(|e| IdentityError::BadMaterial(format!("reading {}: {e}", path.display())))
}

fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::BadMaterial(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(IdentityError::BadMaterial(format!(
            "{}: no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Load the material from the fallback files; the bundle is trusted for our trust domain.
pub(crate) fn from_files(
    files: &FileFallback,
    settings: &Settings,
    provider: &CryptoProvider,
) -> Result<Material, IdentityError> {
    let chain = certs(&files.cert_chain)?;
    let key = PrivateKeyDer::from_pem_slice(&read_pem(&files.key)?)
        .map_err(|e| IdentityError::BadMaterial(format!("{}: {e}", files.key.display())))?;
    let bundle = certs(&files.bundle)?;
    let bundles = HashMap::from([(settings.trust_domain.to_string(), bundle)]);
    build(settings, provider, chain, key, bundles)
}
