//! Several in-process agents, one per region, on free loopback ports, each witnessing the
//! others over mutual TLS with SPIFFE SVIDs from its own Workload API test double
//! (`knhk_e2e::spiffe_workload`, the real gRPC protocol): keys are created before start so
//! every config can name its peers' keys, a region can be stopped and restarted on the same
//! ports and data, and failures print what each region saw.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::identity::IdentityConfig;
use knhk_agent::kms::local::LocalSigner;
use knhk_agent::kms::Signer as _;
use knhk_agent::quorum::witness::open_witness_key;
use knhk_agent::quorum::{PeerConfig, QuorumConfig};
use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::cosignature::WitnessKey;
use knhk_core::receipt::{encode_batch, Receipt, ReceiptBuilder};
use knhk_e2e::spiffe_workload::{TestCas, WorkloadApi};
use serde_json::Value;

use super::in_process::InProcessAgent;

/// Trust domain of the regions' SVIDs.
pub const TRUST_DOMAIN: &str = "knhk.test";
/// The regions' allow-list entry.
pub const ALLOW: &str = "spiffe://knhk.test/region/*";
/// Lifetime of the SVIDs the doubles mint.
const SVID_TTL: Duration = Duration::from_secs(3600);

/// What one region is made of.
pub struct Region {
    /// Region name.
    pub name: String,
    /// Its agent config (peers filled in).
    pub config: AgentConfig,
    /// Its API listen address (plain HTTP: receipts, status, admin).
    pub addr: std::net::SocketAddr,
    /// Its mTLS peer listen address (witness routes).
    pub peer_addr: std::net::SocketAddr,
    /// Its SPIFFE Workload API (test double).
    pub workload: WorkloadApi,
    /// Its log's public keys.
    pub log_keys: Vec<PublicKeyVersion>,
    /// Its witness key.
    pub witness: WitnessKey,
    /// The running agent, if up.
    pub agent: Option<InProcessAgent>,
}

/// A set of regions.
pub struct Regions {
    /// The regions, in creation order.
    pub regions: Vec<Region>,
    /// The HTTP client of the tests.
    pub http: reqwest::Client,
    /// The test CA that minted every SVID.
    pub cas: TestCas,
    _dir: tempfile::TempDir,
}

/// Config epochs each region issues at start (covers [`receipt`] for `i < 10 * (FIXTURE_EPOCHS + 1)`).
pub const FIXTURE_EPOCHS: u64 = 11;

/// A receipt with distinct fields per `i`.
pub fn receipt(i: u64) -> Receipt {
    ReceiptBuilder::new(i).config_epoch(i / 10).build()
}

/// Create a region's keys and config (without peers) under `dir`.
pub async fn prepare(
    dir: &Path,
    name: &str,
    threshold: usize,
) -> (AgentConfig, Vec<PublicKeyVersion>, WitnessKey) {
    let base: PathBuf = dir.join(name);
    let mut config = AgentConfig {
        origin: format!("knhk.test/{name}"),
        data_dir: base.join("data"),
        seal_interval: Duration::from_secs(1),
        ..AgentConfig::default()
    };
    config.kms.key_dir = Some(base.join("keys"));
    config.retention.max_age = Some(Duration::from_secs(1));
    config.quorum = QuorumConfig {
        enabled: true,
        region: name.to_owned(),
        threshold,
        timeout: Duration::from_secs(1),
        retry_interval: Duration::from_secs(1),
        ..QuorumConfig::default()
    };
    let signer = LocalSigner::open(&config.key_dir(), &config.kms.key_id).unwrap();
    let log_keys = signer.public_keys().await.unwrap();
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let (_, witness) = open_witness_key(&config.quorum, &config.data_dir)
        .await
        .unwrap();
    (config, log_keys, witness)
}

impl Regions {
    /// Prepare `names` with threshold `k`, all peers of each other, and start them all.
    pub async fn start(names: &[&str], k: usize) -> Regions {
        Self::start_with(names, k, |_, _| {}).await
    }

    /// [`Regions::start`], with `adjust` applied to each region's config (by name) first.
    pub async fn start_with(
        names: &[&str],
        k: usize,
        adjust: impl Fn(&str, &mut AgentConfig),
    ) -> Regions {
        let dir = tempfile::tempdir().unwrap();
        let cas = TestCas::new();
        let mut regions = Vec::new();
        let mut listeners = Vec::new();
        for name in names {
            let (mut config, log_keys, witness) = prepare(dir.path(), name, k).await;
            adjust(name, &mut config);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let socket_dir = dir.path().join(name).join("workload");
            std::fs::create_dir_all(&socket_dir).unwrap();
            let workload = WorkloadApi::start(
                &socket_dir,
                &cas,
                &format!("spiffe://{TRUST_DOMAIN}/region/{name}"),
                SVID_TTL,
            )
            .await
            .unwrap();
            config.identity = IdentityConfig {
                enabled: true,
                socket: Some(workload.endpoint()),
                trust_domain: Some(TRUST_DOMAIN.to_owned()),
                allow: vec![ALLOW.to_owned()],
                ..IdentityConfig::default()
            };
            regions.push(Region {
                name: (*name).to_owned(),
                addr: listener.local_addr().unwrap(),
                peer_addr: peer.local_addr().unwrap(),
                workload,
                config,
                log_keys,
                witness,
                agent: None,
            });
            listeners.push((listener, peer));
        }
        let peers: Vec<PeerConfig> = regions
            .iter()
            .map(|r| PeerConfig {
                region: r.name.clone(),
                url: format!("https://{}", r.peer_addr),
                origin: r.config.origin.clone(),
                log_keys: r.log_keys.clone(),
                witness: r.witness.clone(),
            })
            .collect();
        for r in &mut regions {
            r.config.quorum.peers = peers
                .iter()
                .filter(|p| p.region != r.name)
                .cloned()
                .collect();
        }
        let mut set = Regions {
            regions,
            http: reqwest::Client::new(),
            cas,
            _dir: dir,
        };
        for (i, (listener, peer)) in listeners.into_iter().enumerate() {
            set.start_on(i, listener, peer).await;
            set.issue_epochs(i).await;
        }
        set
    }

    /// Publish policies until config epoch [`FIXTURE_EPOCHS`] is issued on region `i`: the
    /// agent refuses receipts claiming an epoch it never issued, and [`receipt`] claims up to
    /// `i / 10`.
    async fn issue_epochs(&self, i: usize) {
        let agent = self.regions[i].agent.as_ref().unwrap();
        for epoch in 1..=FIXTURE_EPOCHS {
            let policy = serde_json::json!({"routing": {"salt": format!("epoch-{epoch}")}});
            let r = self
                .http
                .put(agent.url("/v1/policy"))
                .json(&policy)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "PUT /v1/policy: {}", r.status());
        }
    }

    async fn start_on(
        &mut self,
        i: usize,
        listener: tokio::net::TcpListener,
        peer: tokio::net::TcpListener,
    ) {
        let config = self.regions[i].config.clone();
        let agent = InProcessAgent::start_with_peer(
            listener,
            Some(peer),
            config,
            self.http.clone(),
            "/v1/quorum/status",
        )
        .await;
        self.regions[i].agent = Some(agent);
    }

    /// Index of region `name`.
    pub fn index(&self, name: &str) -> usize {
        self.regions.iter().position(|r| r.name == name).unwrap()
    }

    /// Stop region `name` gracefully.
    pub async fn stop(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(agent) = self.regions[i].agent.take() {
            agent.stop().await;
        }
    }

    /// Restart region `name` on its port with its data.
    pub async fn restart(&mut self, name: &str) {
        let i = self.index(name);
        let listener = tokio::net::TcpListener::bind(self.regions[i].addr)
            .await
            .unwrap();
        let peer = tokio::net::TcpListener::bind(self.regions[i].peer_addr)
            .await
            .unwrap();
        self.start_on(i, listener, peer).await;
    }

    /// URL of `path` on region `name`.
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{path}", self.regions[self.index(name)].addr)
    }

    /// GET `path` on `name` as JSON (panics on non-200).
    pub async fn json(&self, name: &str, path: &str) -> Value {
        let r = self.http.get(self.url(name, path)).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "{name} {path}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Post receipts `range` to region `name`; returns the log size after.
    pub async fn post(&self, name: &str, range: std::ops::Range<u64>) -> u64 {
        let body = encode_batch(&range.map(receipt).collect::<Vec<_>>()).unwrap();
        let r = self
            .http
            .post(self.url(name, "/v1/receipts"))
            .header("content-type", "application/x-knhk-receipts")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{name}: {}", r.status());
        r.json::<Value>().await.unwrap()["size"].as_u64().unwrap()
    }

    /// What every running region reports: quorum status and witnessed logs.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for r in &self.regions {
            if r.agent.is_none() {
                out.push_str(&format!("== {} (down)\n", r.name));
                continue;
            }
            let status = self
                .http
                .get(self.url(&r.name, "/v1/quorum/status"))
                .send()
                .await;
            let logs = self
                .http
                .get(self.url(&r.name, "/v1/witness/logs"))
                .send()
                .await;
            let text = |x: reqwest::Result<reqwest::Response>| async move {
                match x {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                }
            };
            out.push_str(&format!(
                "== {}\nstatus: {}\nwitnessed: {}\n",
                r.name,
                text(status).await,
                text(logs).await
            ));
        }
        out
    }

    /// Poll `name`'s quorum status until `done` holds, or fail after 20 s describing every
    /// region.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.json(name, "/v1/quorum/status").await;
            if done(&status) {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name}: {what}\n{}",
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POST `body` as JSON to `path` on `name`; returns status and JSON body.
    pub async fn post_json(
        &self,
        name: &str,
        path: &str,
        body: &Value,
    ) -> (reqwest::StatusCode, Value) {
        let r = self
            .http
            .post(self.url(name, path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Wait until every peer of `name` has cosigned at least `size` of its log.
    pub async fn wait_replicated(&self, name: &str, size: u64) -> Value {
        let peers = self.regions.len() - 1;
        self.wait_status(name, &format!("every peer at size >= {size}"), |s| {
            s["peers"].as_array().is_some_and(|p| {
                p.len() == peers
                    && p.iter()
                        .all(|x| x["acked_size"].as_u64().is_some_and(|a| a >= size))
            })
        })
        .await
    }

    /// Wait until `name` has committed a checkpoint of at least `size` leaves.
    pub async fn wait_committed(&self, name: &str, size: u64) -> Value {
        self.wait_status(name, &format!("commit of size >= {size}"), |s| {
            s["latest_committed"]["tree_size"]
                .as_u64()
                .is_some_and(|c| c >= size)
        })
        .await
    }
}
