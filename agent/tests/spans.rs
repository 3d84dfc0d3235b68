//! The agent's spans as OpenTelemetry receives them, through the bridge the binary installs
//! (`telemetry::span_layer`), exported to an in-memory exporter: the two spans the single-agent
//! live check cannot produce — a witness round per peer (three in-process regions) and an SVID
//! rotation (the SPIFFE Workload API double) — plus the ingest, seal and KMS spans of the same
//! runs. Every span seen is declared in `registry/model/agent.yaml` with its attribute keys.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use knhk_agent::identity::{Identity, IdentityConfig};
use knhk_e2e::registry;
use knhk_e2e::spiffe_workload::{TestCas, WorkloadApi};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use support::regions::Regions;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Spans exported so far (one exporter for the test binary: `tracing`'s subscriber is global).
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn collected() -> &'static Collected {
    static COLLECTED: OnceLock<(Collected, SdkTracerProvider)> = OnceLock::new();
    &COLLECTED
        .get_or_init(|| {
            let collected = Collected::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(collected.clone())
                .build();
            tracing_subscriber::registry()
                .with(knhk_agent::telemetry::span_layer(
                    provider.tracer("knhk-agent"),
                ))
                .try_init()
                .unwrap();
            (collected, provider)
        })
        .0
}

/// Spans by name: the attribute keys each carried.
fn seen() -> BTreeMap<String, Vec<BTreeSet<String>>> {
    let mut out: BTreeMap<String, Vec<BTreeSet<String>>> = BTreeMap::new();
    for span in collected().0.lock().unwrap().iter() {
        out.entry(span.name.to_string()).or_default().push(
            span.attributes
                .iter()
                .map(|kv| kv.key.as_str().to_owned())
                .collect(),
        );
    }
    out
}

/// Every span seen is declared, with its attribute keys among the declared ones.
fn check_declared() {
    let registry =
        registry::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry"))
            .unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let declared: BTreeMap<&str, &registry::Group> = registry
        .groups
        .iter()
        .filter_map(|g| g.span_name().map(|n| (n, g)))
        .collect();
    for (name, all) in seen() {
        let g = declared
            .get(name.as_str())
            .unwrap_or_else(|| panic!("span {name} is not declared in registry/"));
        for keys in all {
            let extra: Vec<&String> = keys.iter().filter(|k| !g.attributes.contains(k)).collect();
            assert!(
                extra.is_empty(),
                "{name}: attributes {extra:?} not declared"
            );
        }
    }
}

async fn wait_for(what: &str, done: impl Fn(&BTreeMap<String, Vec<BTreeSet<String>>>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = seen();
        if done(&spans) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what}; spans seen: {:?}",
            spans.keys()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_round_is_one_span_per_peer() {
    collected();
    let regions = Regions::start(&["eu", "us", "ap"], 2).await;
    let size = regions.post("eu", 0..20).await;
    regions.wait_committed("eu", size).await;
    wait_for("witness spans for both peers of eu", |spans| {
        let Some(rounds) = spans.get("knhk.quorum.witness") else {
            return false;
        };
        rounds.len() >= 2
            && rounds.iter().all(|keys| {
                keys.contains("knhk.quorum.peer") && keys.contains("knhk.checkpoint.tree_size")
            })
    })
    .await;
    wait_for("ingest, seal and sign spans", |spans| {
        [
            "knhk.receipts.ingest",
            "knhk.checkpoint.seal",
            "knhk.kms.sign",
        ]
        .iter()
        .all(|n| spans.contains_key(*n))
    })
    .await;
    let spans = seen();
    assert!(
        spans["knhk.kms.sign"]
            .iter()
            .all(|k| k.contains("kms.provider") && k.contains("knhk.kms.key_version")),
        "{:?}",
        spans["knhk.kms.sign"]
    );
    check_declared();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_rotation_is_a_span() {
    collected();
    let cas = TestCas::new();
    let dir = tempfile::tempdir().unwrap();
    let api = WorkloadApi::start(
        dir.path(),
        &cas,
        "spiffe://eu.knhk.test/region/eu",
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let config = IdentityConfig {
        enabled: true,
        socket: Some(api.endpoint()),
        trust_domain: Some("eu.knhk.test".to_owned()),
        allow: vec!["spiffe://eu.knhk.test/region/*".to_owned()],
        ..IdentityConfig::default()
    };
    let _identity = Identity::open(&config).await.unwrap();
    let rotations = |spans: &BTreeMap<String, Vec<BTreeSet<String>>>| {
        spans.get("knhk.identity.svid.rotate").map_or(0, Vec::len)
    };
    // Opening adopts the first SVID without a rotation span; the Workload API's update does.
    let before = rotations(&seen());
    api.rotate().unwrap();
    wait_for("the rotated SVID's span", |s| rotations(s) > before).await;
    assert!(seen()["knhk.identity.svid.rotate"]
        .iter()
        .all(|k| k.contains("spiffe.id") && k.contains("knhk.svid.not_after")));
    check_declared();
}
