//! SPIFFE identity and agent-to-agent mutual TLS, against the Workload API test double
//! (`knhk_e2e::spiffe_workload`, speaking the real Workload API gRPC protocol on a Unix socket):
//! allow-list authorisation, rotation without restart, fail-closed expiry, file fallback, config
//! and environment validation, and the agent's peer listener.

// Test helpers: a failed setup step must abort the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::identity::config::FileFallback;
use knhk_agent::identity::{https_client, serve_mtls, Identity, IdentityConfig, IdentityError};
use knhk_agent::{run, Listeners, RunError};
use knhk_e2e::spiffe_workload::{MintedSvid, TestCas, WorkloadApi, SECURITY_HEADER};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const EU_A: &str = "spiffe://eu.knhk.test/region/eu";
const EU_B: &str = "spiffe://eu.knhk.test/region/us";
const REGIONS: &str = "spiffe://eu.knhk.test/region/*";
const SVID_TTL: Duration = Duration::from_secs(3600);
const DEADLINE: Duration = Duration::from_secs(20);

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("knhk_agent=info")),
        )
        .with_test_writer()
        .try_init();
}

/// A Workload API double in its own directory.
async fn workload(cas: &TestCas, id: &str) -> (TempDir, WorkloadApi) {
    let dir = tempfile::tempdir().unwrap();
    let api = WorkloadApi::start(dir.path(), cas, id, SVID_TTL)
        .await
        .unwrap();
    (dir, api)
}

fn config(endpoint: &str, trust_domain: &str, allow: &[&str]) -> IdentityConfig {
    IdentityConfig {
        enabled: true,
        socket: Some(endpoint.to_owned()),
        trust_domain: Some(trust_domain.to_owned()),
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        ..IdentityConfig::default()
    }
}

/// An identity opened from a fresh Workload API double.
struct Workload {
    api: WorkloadApi,
    identity: Arc<Identity>,
    _dir: TempDir,
}

async fn open(cas: &TestCas, id: &str, trust_domain: &str, allow: &[&str]) -> Workload {
    let (dir, api) = workload(cas, id).await;
    let identity = Identity::open(&config(&api.endpoint(), trust_domain, allow))
        .await
        .unwrap();
    Workload {
        api,
        identity,
        _dir: dir,
    }
}

/// The peer router served with `serve_mtls` on a free port.
struct PeerServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), IdentityError>>,
}

impl PeerServer {
    async fn start(identity: Arc<Identity>) -> PeerServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_mtls(
            listener,
            identity,
            knhk_agent::peer::router(),
            async {
                let _ = stopped.await;
            },
        ));
        PeerServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/v1/peer/whoami", self.addr)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// A client like `https_client` that opens a new connection (a new handshake) for every call.
fn fresh_connection_client(identity: &Identity) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*identity.client_config()).clone())
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// GET whoami: the JSON body and the leaf certificate the server presented.
async fn whoami(client: &reqwest::Client, url: &str) -> Result<(Value, Vec<u8>), String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let leaf = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| format!("{e:?}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("status {status}: {body}"));
    }
    Ok((body, leaf))
}

/// Poll `probe` until it is true or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two identities in the allow-list complete mutual TLS both ways and each sees the other's
/// verified SPIFFE ID and its own.
#[tokio::test]
async fn allowed_peers_see_each_other() {
    logs();
    let cas = TestCas::new();
    let a = open(&cas, EU_A, "eu.knhk.test", &[REGIONS]).await;
    let b = open(&cas, EU_B, "eu.knhk.test", &[REGIONS]).await;
    assert_eq!(a.identity.current_id().unwrap().to_string(), EU_A);
    assert_eq!(a.identity.backend(), "workload-api");
    let server_a = PeerServer::start(a.identity.clone()).await;
    let server_b = PeerServer::start(b.identity.clone()).await;
    let (body, leaf) = whoami(&https_client(b.identity.clone()), &server_a.url())
        .await
        .unwrap();
    assert_eq!(body["peer_id"], EU_B);
    assert_eq!(body["local_id"], EU_A);
    assert_eq!(body["backend"], "workload-api");
    assert_eq!(leaf, a.api.current().leaf_der);
    let (body, _) = whoami(&https_client(a.identity.clone()), &server_b.url())
        .await
        .unwrap();
    assert_eq!(
        (&body["peer_id"], &body["local_id"]),
        (&EU_A.into(), &EU_B.into())
    );
    // Without a client certificate the handshake is refused.
    let anonymous = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert!(anonymous.get(server_a.url()).send().await.is_err());
    server_a.stop().await;
    server_b.stop().await;
}

/// A peer whose SVID is from another trust domain is refused both as client and as server,
/// even when that trust domain's bundle is federated (the allow-list decides), and also when
/// its bundle is unknown.
#[tokio::test]
async fn other_trust_domain_is_refused() {
    logs();
    let cas = TestCas::new();
    let a = open(&cas, EU_A, "eu.knhk.test", &[REGIONS]).await;
    let us = open(
        &cas,
        "spiffe://us.knhk.test/region/us",
        "us.knhk.test",
        &["spiffe://us.knhk.test/**", "spiffe://eu.knhk.test/**"],
    )
    .await;
    let server_a = PeerServer::start(a.identity.clone()).await;
    let server_us = PeerServer::start(us.identity.clone()).await;
    // Unknown bundle: refused.
    let err = whoami(&https_client(us.identity.clone()), &server_a.url())
        .await
        .unwrap_err();
    assert!(
        !err.contains("status"),
        "refused at the handshake, not by HTTP: {err}"
    );
    // Federated bundle, so the chain would verify: still refused by the allow-list.
    a.api.federate_with("us.knhk.test").unwrap();
    us.api.federate_with("eu.knhk.test").unwrap();
    eventually("both identities to learn the federated bundle", || async {
        // The other direction (us serving, eu allowed by us's list) starts working once
        // us has eu's bundle; eu still refuses us as a server.
        whoami(&fresh_connection_client(&us.identity), &server_us.url())
            .await
            .is_ok()
    })
    .await;
    assert!(
        whoami(&fresh_connection_client(&us.identity), &server_a.url())
            .await
            .is_err()
    );
    assert!(
        whoami(&fresh_connection_client(&a.identity), &server_us.url())
            .await
            .is_err()
    );
    server_a.stop().await;
    server_us.stop().await;
}

/// A peer of the right trust domain whose path is outside the allow-list is refused, as a
/// client and as a server.
#[tokio::test]
async fn path_outside_allow_list_is_refused() {
    logs();
    let cas = TestCas::new();
    let a = open(&cas, EU_A, "eu.knhk.test", &[REGIONS]).await;
    let batch = open(&cas, "spiffe://eu.knhk.test/batch/job", "eu.knhk.test", &[]).await;
    let deep = open(
        &cas,
        "spiffe://eu.knhk.test/region/eu/extra",
        "eu.knhk.test",
        &[],
    )
    .await;
    let server_a = PeerServer::start(a.identity.clone()).await;
    let server_batch = PeerServer::start(batch.identity.clone()).await;
    for outsider in [&batch, &deep] {
        let err = whoami(&https_client(outsider.identity.clone()), &server_a.url())
            .await
            .unwrap_err();
        assert!(!err.contains("status"), "refused at the handshake: {err}");
    }
    // batch's default allow-list (its whole trust domain) accepts a, but a refuses batch.
    assert!(
        whoami(&https_client(a.identity.clone()), &server_batch.url())
            .await
            .is_err()
    );
    // And a peer that is allowed still gets through.
    let b = open(&cas, EU_B, "eu.knhk.test", &[REGIONS]).await;
    whoami(&https_client(b.identity.clone()), &server_a.url())
        .await
        .unwrap();
    server_a.stop().await;
    server_batch.stop().await;
}

/// Rotating both SVIDs while a client keeps calling: the server presents the new certificate
/// on the next handshake (no restart, before the hourly refresh) and not one call fails, over
/// kept-alive and fresh connections alike.
#[tokio::test]
async fn rotation_mid_stream_breaks_no_call() {
    logs();
    let cas = TestCas::new();
    let a = open(&cas, EU_A, "eu.knhk.test", &[REGIONS]).await;
    let b = open(&cas, EU_B, "eu.knhk.test", &[REGIONS]).await;
    let server_a = PeerServer::start(a.identity.clone()).await;
    let url = server_a.url();
    let before = a.api.current();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for client in [
        https_client(b.identity.clone()),
        fresh_connection_client(&b.identity),
    ] {
        let (stop, calls, url) = (stop.clone(), calls.clone(), url.clone());
        loops.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut leaves = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match whoami(&client, &url).await {
                    Ok((body, leaf)) => {
                        assert_eq!(body["peer_id"], EU_B);
                        if leaves.last() != Some(&leaf) {
                            leaves.push(leaf);
                        }
                    }
                    Err(e) => failures.push(e),
                }
                calls.fetch_add(1, Ordering::SeqCst);
            }
            (failures, leaves)
        }));
    }
    eventually("calls before rotation", || async {
        calls.load(Ordering::SeqCst) >= 10
    })
    .await;
    let rotated = a.api.rotate().unwrap();
    b.api.rotate().unwrap();
    assert_ne!(rotated.serial, before.serial);
    assert_ne!(rotated.leaf_der, before.leaf_der);
    let fresh = fresh_connection_client(&b.identity);
    eventually("the rotated certificate to be served", || async {
        whoami(&fresh, &url)
            .await
            .is_ok_and(|(_, leaf)| leaf == rotated.leaf_der)
    })
    .await;
    let after = calls.load(Ordering::SeqCst);
    eventually("calls after rotation", || async {
        calls.load(Ordering::SeqCst) >= after + 10
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for (i, handle) in loops.into_iter().enumerate() {
        let (failures, leaves) = handle.await.unwrap();
        assert!(
            failures.is_empty(),
            "client {i}: calls failed across rotation: {failures:?}"
        );
        if i == 1 {
            assert_eq!(
                leaves,
                vec![before.leaf_der.clone(), rotated.leaf_der.clone()]
            );
        }
    }
    assert_eq!(b.identity.current_id().unwrap().to_string(), EU_B);
    server_a.stop().await;
}

/// When the Workload API pushes an already-expired SVID, the agent stops serving (handshakes
/// refused, requests on open connections answered 503) and stops connecting out; a fresh SVID
/// restores both.
#[tokio::test]
async fn expired_svid_stops_serving() {
    logs();
    let cas = TestCas::new();
    let a = open(&cas, EU_A, "eu.knhk.test", &[REGIONS]).await;
    let b = open(&cas, EU_B, "eu.knhk.test", &[REGIONS]).await;
    let server_a = PeerServer::start(a.identity.clone()).await;
    let server_b = PeerServer::start(b.identity.clone()).await;
    let kept_alive = https_client(b.identity.clone());
    whoami(&kept_alive, &server_a.url()).await.unwrap();
    a.api.push_expired().unwrap();
    eventually("a to drop its expired SVID", || async {
        !a.identity.is_usable()
    })
    .await;
    assert!(a.identity.current_id().is_none());
    let err = whoami(&fresh_connection_client(&b.identity), &server_a.url())
        .await
        .unwrap_err();
    assert!(!err.contains("status"), "refused at the handshake: {err}");
    match whoami(&kept_alive, &server_a.url()).await {
        Err(e) => assert!(e.contains("503"), "{e}"),
        Ok(ok) => panic!("served with an expired SVID: {ok:?}"),
    }
    assert!(whoami(&https_client(a.identity.clone()), &server_b.url())
        .await
        .is_err());
    a.api.rotate().unwrap();
    eventually("a to serve again with a fresh SVID", || async {
        whoami(&fresh_connection_client(&b.identity), &server_a.url())
            .await
            .is_ok()
    })
    .await;
    server_a.stop().await;
    server_b.stop().await;
}

/// When the Workload API starts handing out an SVID of another trust domain, the agent does
/// not adopt it: it stops serving rather than present an identity it was not configured for.
#[tokio::test]
async fn svid_of_another_trust_domain_is_not_adopted() {
    logs();
    let cas = TestCas::new();
    let a = open(&cas, EU_A, "eu.knhk.test", &[REGIONS]).await;
    let b = open(&cas, EU_B, "eu.knhk.test", &[REGIONS]).await;
    let server_a = PeerServer::start(a.identity.clone()).await;
    whoami(&fresh_connection_client(&b.identity), &server_a.url())
        .await
        .unwrap();
    a.api
        .serve_identity("spiffe://us.knhk.test/region/eu")
        .unwrap();
    eventually("a to refuse the foreign SVID", || async {
        !a.identity.is_usable()
    })
    .await;
    assert!(
        whoami(&fresh_connection_client(&b.identity), &server_a.url())
            .await
            .is_err()
    );
    a.api.serve_identity(EU_A).unwrap();
    eventually("a to serve again as itself", || async {
        whoami(&fresh_connection_client(&b.identity), &server_a.url())
            .await
            .is_ok_and(|(body, _)| body["local_id"] == EU_A)
    })
    .await;
    server_a.stop().await;
}

fn write_files(dir: &Path, cas: &TestCas, id: &str) -> (FileFallback, MintedSvid) {
    let svid = cas.mint(id, SVID_TTL).unwrap();
    let files = FileFallback {
        cert_chain: dir.join("svid.pem"),
        key: dir.join("svid-key.pem"),
        bundle: dir.join("bundle.pem"),
    };
    std::fs::write(&files.cert_chain, svid.leaf_pem()).unwrap();
    std::fs::write(&files.key, svid.key_pem()).unwrap();
    std::fs::write(&files.bundle, cas.bundle_pem("eu.knhk.test").unwrap()).unwrap();
    (files, svid)
}

/// With the Workload API unreachable (or not configured), the certificate files are used,
/// mutual TLS works with a peer that gets its SVID from the Workload API, and replaced files
/// are picked up by the periodic refresh without restart.
#[tokio::test]
async fn file_fallback_serves() {
    logs();
    let cas = TestCas::new();
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_files(dir.path(), &cas, EU_A);
    let unreachable = IdentityConfig {
        connect_timeout: Duration::from_secs(1),
        refresh_interval: Duration::from_secs(1),
        files: Some(files.clone()),
        ..config(
            &format!("unix://{}", dir.path().join("no-spire.sock").display()),
            "eu.knhk.test",
            &[REGIONS],
        )
    };
    let a = Identity::open(&unreachable).await.unwrap();
    assert_eq!(a.backend(), "files");
    assert_eq!(a.current_id().unwrap().to_string(), EU_A);
    let b = open(&cas, EU_B, "eu.knhk.test", &[REGIONS]).await;
    let server_a = PeerServer::start(a.clone()).await;
    let (body, _) = whoami(&https_client(b.identity.clone()), &server_a.url())
        .await
        .unwrap();
    assert_eq!(
        (&body["local_id"], &body["backend"]),
        (&EU_A.into(), &"files".into())
    );
    let (_, renewed) = write_files(dir.path(), &cas, EU_A);
    let fresh = fresh_connection_client(&b.identity);
    eventually("the renewed certificate files to be served", || async {
        whoami(&fresh, &server_a.url())
            .await
            .is_ok_and(|(_, leaf)| leaf == renewed.leaf_der)
    })
    .await;
    server_a.stop().await;
    let files_only = IdentityConfig {
        socket: None,
        files: Some(files),
        ..config("/unused", "eu.knhk.test", &[])
    };
    assert_eq!(
        Identity::open(&files_only).await.unwrap().backend(),
        "files"
    );
}

fn load_err(toml: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, toml).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    AgentConfig::load(Some(&path), |k| {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    })
    .unwrap_err()
    .to_string()
}

/// Malformed `[identity]` settings and legacy variables stop the load with a message naming the
/// setting; an unreachable Workload API without fallback fails `open` naming the endpoint; a
/// peer listener without identity is refused before anything is served.
#[tokio::test]
async fn malformed_config_and_env_are_refused() {
    let on = "[identity]\nenabled = true\nsocket = \"/run/spire.sock\"\ntrust_domain = \"eu.knhk.test\"\n";
    for (toml, env, named) in [
        ("[identity]\ncolour = 1\n", vec![], "colour"),
        (
            "[identity]\nenabled = true\nsocket = \"/s\"\n",
            vec![],
            "identity.trust_domain",
        ),
        (
            &format!("{on}allow = [\"eu.knhk.test/*\"]\n"),
            vec![],
            "identity.allow",
        ),
        (
            &format!("{on}refresh_interval = \"2h\"\n"),
            vec![],
            "identity.refresh_interval",
        ),
        (
            "",
            vec![("KGC_SIDECAR_SPIFFE_ENABLED", "maybe")],
            "KGC_SIDECAR_SPIFFE_ENABLED",
        ),
        (
            "",
            vec![("KGC_SIDECAR_SPIFFE_SOCKET", "relative")],
            "KGC_SIDECAR_SPIFFE_SOCKET",
        ),
        (
            "",
            vec![("SPIFFE_ENDPOINT_SOCKET", "nope")],
            "SPIFFE_ENDPOINT_SOCKET",
        ),
        (
            "",
            vec![("KGC_SIDECAR_SPIFFE_TRUST_DOMAIN", "Bad Domain")],
            "KGC_SIDECAR_SPIFFE_TRUST_DOMAIN",
        ),
        (
            "",
            vec![("KGC_SIDECAR_SPIFFE_ID", "http://x")],
            "KGC_SIDECAR_SPIFFE_ID",
        ),
        (
            on,
            vec![("KGC_SIDECAR_SPIFFE_ID", "spiffe://us.knhk.test/x")],
            "identity.id",
        ),
    ] {
        let err = load_err(toml, &env);
        assert!(err.contains(named), "{toml:?} {env:?}: {err}");
    }
    // The legacy variables alone make a valid identity config.
    let dir = tempfile::tempdir().unwrap();
    let cfg = AgentConfig::load(None, |k| match k {
        "KGC_SIDECAR_SPIFFE_ENABLED" => Some("true".into()),
        "KGC_SIDECAR_SPIFFE_SOCKET" => Some("/run/spire/agent.sock".into()),
        "KGC_SIDECAR_SPIFFE_TRUST_DOMAIN" => Some("eu.knhk.test".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        cfg.identity.socket.as_deref(),
        Some("unix:///run/spire/agent.sock")
    );
    let unreachable = IdentityConfig {
        connect_timeout: Duration::from_secs(1),
        ..config(
            &format!("unix://{}", dir.path().join("none.sock").display()),
            "eu.knhk.test",
            &[],
        )
    };
    let err = Identity::open(&unreachable).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::WorkloadApi(ref m) if m.contains("none.sock")),
        "{err}"
    );
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut agent = AgentConfig {
        data_dir: dir.path().join("data"),
        ..AgentConfig::default()
    };
    agent.kms.key_dir = Some(dir.path().join("keys"));
    let err = run(
        Listeners {
            api,
            peer: Some(peer),
        },
        agent,
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RunError::Config(_)), "{err}");
    assert!(err.to_string().contains("identity.enabled"), "{err}");
}

/// The Workload API double refuses calls without the `workload.spiffe.io: true` metadata with
/// InvalidArgument, like SPIRE, and streams the SVID to calls that carry it.
#[tokio::test]
async fn workload_api_requires_security_header() {
    let cas = TestCas::new();
    let (_dir, api) = workload(&cas, EU_A).await;
    let mut client = api.raw_client().await.unwrap();
    let status = client
        .fetch_x509svid(knhk_e2e::spiffe_workload::pb::X509svidRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = client
        .fetch_x509_bundles(knhk_e2e::spiffe_workload::pb::X509BundlesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut request = tonic::Request::new(knhk_e2e::spiffe_workload::pb::X509svidRequest {});
    request
        .metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().unwrap());
    let mut stream = client.fetch_x509svid(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids[0].spiffe_id, EU_A);
    assert_eq!(first.svids[0].x509_svid, api.current().chain_der);
    let rotated = api.rotate().unwrap();
    let second = stream.message().await.unwrap().unwrap();
    assert_eq!(second.svids[0].x509_svid, rotated.chain_der);
}

/// The agent started with `run` and a peer listener serves `/v1/peer/whoami` over mutual TLS
/// only, next to its plain-HTTP API.
#[tokio::test]
async fn agent_serves_the_peer_api_over_mtls() {
    logs();
    let cas = TestCas::new();
    let (_wdir, api_a) = workload(&cas, EU_A).await;
    let b = open(&cas, EU_B, "eu.knhk.test", &[REGIONS]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig {
        origin: "knhk.test/identity".into(),
        data_dir: dir.path().join("data"),
        identity: config(&api_a.endpoint(), "eu.knhk.test", &[REGIONS]),
        ..AgentConfig::default()
    };
    cfg.kms.key_dir = Some(dir.path().join("keys"));
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, peer_addr) = (api.local_addr().unwrap(), peer.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(
        Listeners {
            api,
            peer: Some(peer),
        },
        cfg,
        async {
            let _ = stopped.await;
        },
    ));
    let client = https_client(b.identity.clone());
    let url = format!("https://{peer_addr}/v1/peer/whoami");
    eventually("the peer listener", || async {
        whoami(&client, &url).await.is_ok()
    })
    .await;
    let (body, _) = whoami(&client, &url).await.unwrap();
    assert_eq!(
        (&body["peer_id"], &body["local_id"]),
        (&EU_B.into(), &EU_A.into())
    );
    let plain = reqwest::Client::new();
    assert!(plain
        .get(format!("http://{peer_addr}/v1/peer/whoami"))
        .send()
        .await
        .is_err());
    let checkpoint = plain
        .get(format!("http://{api_addr}/v1/checkpoints/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(checkpoint.status(), reqwest::StatusCode::OK);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// The binary refuses `--peer-listen` without an identity, and a malformed legacy variable,
/// exiting non-zero with a message naming the setting.
#[test]
fn binary_refuses_peer_listener_without_identity() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_knhk-agent"));
        cmd.args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(&[]);
    assert!(stderr.contains("identity.enabled"), "{stderr}");
    let stderr = run(&[("KGC_SIDECAR_SPIFFE_ENABLED", "maybe")]);
    assert!(stderr.contains("KGC_SIDECAR_SPIFFE_ENABLED"), "{stderr}");
}
