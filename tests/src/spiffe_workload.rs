//! TEST DOUBLE of the SPIRE agent: a SPIFFE Workload API server for tests, speaking the real,
//! public Workload API gRPC protocol (`proto/workload.proto` from the SPIFFE project) over a
//! Unix socket, and minting short-lived X.509-SVIDs from per-trust-domain test CAs (`rcgen`).
//!
//! It is not part of the product: SPIRE cannot be installed on these machines, so the identity
//! tests point the agent's `spiffe::X509Source` at this server instead. Like SPIRE it refuses
//! every call that lacks the `workload.spiffe.io: true` metadata with `InvalidArgument`, and it
//! streams a new `X509SVIDResponse` on every open `FetchX509SVID` stream whenever the identity
//! changes ([`WorkloadApi::rotate`], [`WorkloadApi::push_expired`]).
//!
//! One [`TestCas`] is shared by every Workload API of a test, so that two workloads of the same
//! trust domain chain to the same CA; each [`WorkloadApi`] serves one workload identity.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

/// Code generated from `proto/workload.proto` (no `package`, so the service is
/// `/SpiffeWorkloadAPI/...`, exactly as SPIRE serves it).
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod pb {
    tonic::include_proto!("_");
}

use pb::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};

/// The metadata key every Workload API call must carry (value `true`).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// One test certificate authority: the root of a trust domain.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

/// The test CAs, one per trust domain, created on first use and shared by the Workload APIs of
/// a test.
#[derive(Clone, Default)]
pub struct TestCas {
    cas: Arc<Mutex<HashMap<String, Arc<TestCa>>>>,
    serial: Arc<AtomicU64>,
}

/// An X.509-SVID as the Workload API hands it out.
#[derive(Debug, Clone)]
pub struct MintedSvid {
    /// The SPIFFE ID in the URI SAN.
    pub spiffe_id: String,
    /// DER certificate chain, leaf first (concatenated, as in the protocol).
    pub chain_der: Vec<u8>,
    /// The leaf certificate alone (DER).
    pub leaf_der: Vec<u8>,
    /// PKCS#8 DER private key.
    pub key_der: Vec<u8>,
    /// The leaf's serial number.
    pub serial: u64,
}

impl MintedSvid {
    /// The leaf certificate as PEM.
    pub fn leaf_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.leaf_der)
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pem_block("PRIVATE KEY", &self.key_der)
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use std::fmt::Write as _;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn trust_domain_of(spiffe_id: &str) -> anyhow::Result<&str> {
    let rest = spiffe_id
        .strip_prefix("spiffe://")
        .with_context(|| format!("{spiffe_id:?} is not a spiffe:// ID"))?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

impl TestCas {
    /// No CA yet; each trust domain's CA is made on first use.
    pub fn new() -> Self {
        TestCas::default()
    }

    fn ca(&self, trust_domain: &str) -> anyhow::Result<Arc<TestCa>> {
        let mut cas = self
            .cas
            .lock()
            .map_err(|_| anyhow::anyhow!("CA registry poisoned"))?;
        if let Some(ca) = cas.get(trust_domain) {
            return Ok(ca.clone());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "knhk test SPIRE double");
        dn.push(DnType::CommonName, format!("test CA {trust_domain}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}").as_str().try_into()?,
        )];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        params.serial_number = Some(SerialNumber::from(
            self.serial.fetch_add(1, Ordering::SeqCst) + 1,
        ));
        let cert = params.self_signed(&key)?;
        let ca = Arc::new(TestCa {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        });
        cas.insert(trust_domain.to_owned(), ca.clone());
        Ok(ca)
    }

    /// The DER root certificate (the X.509 bundle) of `trust_domain`.
    pub fn bundle_der(&self, trust_domain: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.ca(trust_domain)?.der.clone())
    }

    /// The bundle of `trust_domain` as PEM.
    pub fn bundle_pem(&self, trust_domain: &str) -> anyhow::Result<String> {
        Ok(pem_block("CERTIFICATE", &self.bundle_der(trust_domain)?))
    }

    /// Mint an X.509-SVID for `spiffe_id`, valid from `not_before` to `not_after` relative to
    /// now (negative values lie in the past), signed by its trust domain's CA.
    pub fn mint_window(
        &self,
        spiffe_id: &str,
        not_before: time::Duration,
        not_after: time::Duration,
    ) -> anyhow::Result<MintedSvid> {
        let ca = self.ca(trust_domain_of(spiffe_id)?)?;
        let key = KeyPair::generate()?;
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "knhk test workload");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + not_before;
        params.not_after = now + not_after;
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &ca.issuer)?;
        let leaf_der = cert.der().to_vec();
        Ok(MintedSvid {
            spiffe_id: spiffe_id.to_owned(),
            chain_der: leaf_der.clone(),
            leaf_der,
            key_der: key.serialize_der(),
            serial,
        })
    }

    /// Mint an SVID valid from a minute ago for `ttl`.
    pub fn mint(&self, spiffe_id: &str, ttl: Duration) -> anyhow::Result<MintedSvid> {
        let ttl = time::Duration::try_from(ttl)?;
        self.mint_window(spiffe_id, -time::Duration::minutes(1), ttl)
    }
}

/// What a workload is currently handed: its SVID and the bundles it trusts.
#[derive(Debug, Clone)]
struct Issued {
    svid: MintedSvid,
    bundle: Vec<u8>,
    federated: BTreeMap<String, Vec<u8>>,
}

impl Issued {
    fn svid_response(&self) -> pb::X509svidResponse {
        pb::X509svidResponse {
            svids: vec![pb::X509svid {
                spiffe_id: self.svid.spiffe_id.clone(),
                x509_svid: self.svid.chain_der.clone(),
                x509_svid_key: self.svid.key_der.clone(),
                bundle: self.bundle.clone(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: self
                .federated
                .iter()
                .map(|(td, der)| (format!("spiffe://{td}"), der.clone()))
                .collect(),
        }
    }

    fn bundles_response(&self) -> anyhow::Result<pb::X509BundlesResponse> {
        let own = trust_domain_of(&self.svid.spiffe_id)?;
        let mut bundles: HashMap<String, Vec<u8>> = self
            .federated
            .iter()
            .map(|(td, der)| (format!("spiffe://{td}"), der.clone()))
            .collect();
        bundles.insert(format!("spiffe://{own}"), self.bundle.clone());
        Ok(pb::X509BundlesResponse {
            crl: Vec::new(),
            bundles,
        })
    }
}

#[derive(Clone)]
struct Service {
    issued: watch::Receiver<Issued>,
}

fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get(SECURITY_HEADER) {
        Some(v) if v.as_bytes() == b"true" => Ok(()),
        // SPIRE's own wording.
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = ResponseStream<pb::X509svidResponse>;
    type FetchX509BundlesStream = ResponseStream<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = ResponseStream<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&request)?;
        let stream = WatchStream::new(self.issued.clone()).map(|i| Ok(i.svid_response()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        check_header(&request)?;
        let stream = WatchStream::new(self.issued.clone()).map(|i| {
            i.bundles_response()
                .map_err(|e| Status::internal(e.to_string()))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        check_header(&request)?;
        Err(Status::unimplemented(
            "the test double serves X.509-SVIDs only",
        ))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(&request)?;
        Err(Status::unimplemented(
            "the test double serves X.509-SVIDs only",
        ))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        check_header(&request)?;
        Err(Status::unimplemented(
            "the test double serves X.509-SVIDs only",
        ))
    }
}

/// A running Workload API test double serving one workload identity on a Unix socket.
pub struct WorkloadApi {
    socket: PathBuf,
    cas: TestCas,
    ttl: Duration,
    issued: watch::Sender<Issued>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl WorkloadApi {
    /// Serve `spiffe_id` (SVIDs valid for `ttl`) on `<dir>/workload.sock`.
    pub async fn start(
        dir: &Path,
        cas: &TestCas,
        spiffe_id: &str,
        ttl: Duration,
    ) -> anyhow::Result<WorkloadApi> {
        let svid = cas.mint(spiffe_id, ttl)?;
        let bundle = cas.bundle_der(trust_domain_of(spiffe_id)?)?;
        let (issued, rx) = watch::channel(Issued {
            svid,
            bundle,
            federated: BTreeMap::new(),
        });
        let socket = dir.join("workload.sock");
        let listener = tokio::net::UnixListener::bind(&socket)
            .with_context(|| format!("binding {}", socket.display()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(Service { issued: rx }));
        let task = tokio::spawn(async move {
            let incoming = UnixListenerStream::new(listener);
            let _ = server
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(WorkloadApi {
            socket,
            cas: cas.clone(),
            ttl,
            issued,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The endpoint address as `SPIFFE_ENDPOINT_SOCKET` takes it (`unix:///…`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The SVID currently served.
    pub fn current(&self) -> MintedSvid {
        self.issued.borrow().svid.clone()
    }

    fn replace(&self, svid: MintedSvid) -> MintedSvid {
        self.issued.send_modify(|i| i.svid = svid.clone());
        svid
    }

    /// Mint a fresh SVID (new key, new serial) for the same identity and push it on every open
    /// stream; returns it.
    pub fn rotate(&self) -> anyhow::Result<MintedSvid> {
        let id = self.current().spiffe_id;
        Ok(self.replace(self.cas.mint(&id, self.ttl)?))
    }

    /// Push an SVID for the same identity whose validity ended an hour ago.
    pub fn push_expired(&self) -> anyhow::Result<MintedSvid> {
        let id = self.current().spiffe_id;
        let svid =
            self.cas
                .mint_window(&id, -time::Duration::hours(2), -time::Duration::hours(1))?;
        Ok(self.replace(svid))
    }

    /// Switch the served identity to `spiffe_id` (possibly of another trust domain, whose CA
    /// then signs it and whose bundle is handed out) and push it; returns the new SVID.
    pub fn serve_identity(&self, spiffe_id: &str) -> anyhow::Result<MintedSvid> {
        let svid = self.cas.mint(spiffe_id, self.ttl)?;
        let bundle = self.cas.bundle_der(trust_domain_of(spiffe_id)?)?;
        self.issued.send_modify(|i| {
            i.svid = svid.clone();
            i.bundle = bundle;
        });
        Ok(svid)
    }

    /// Add `trust_domain`'s bundle to the federated bundles handed to this workload.
    pub fn federate_with(&self, trust_domain: &str) -> anyhow::Result<()> {
        let der = self.cas.bundle_der(trust_domain)?;
        self.issued.send_modify(|i| {
            i.federated.insert(trust_domain.to_owned(), der);
        });
        Ok(())
    }

    /// A generated Workload API client on this socket that adds no metadata by itself.
    pub async fn raw_client(
        &self,
    ) -> anyhow::Result<
        pb::spiffe_workload_api_client::SpiffeWorkloadApiClient<tonic::transport::Channel>,
    > {
        let path = self.socket.clone();
        let channel = tonic::transport::Endpoint::try_from("http://workload.api")?
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await?;
        Ok(pb::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel))
    }

    /// Stop serving and wait for the server to end.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WorkloadApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PEM encoder writes standard base64 with padding.
    #[test]
    fn pem_block_is_base64() {
        assert_eq!(
            pem_block("X", b"hello"),
            "-----BEGIN X-----\naGVsbG8=\n-----END X-----\n"
        );
        assert_eq!(trust_domain_of("spiffe://a.test/x/y").unwrap(), "a.test");
    }
}
