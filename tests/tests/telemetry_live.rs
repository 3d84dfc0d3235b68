//! The live check of the agent's telemetry against `registry/`: the real agent and the real
//! Envoy with the filter run a scenario — config push, keyed traffic, a rollout that passes
//! then rolls back, seals, timed key rotations, a refused batch, a retention run — while a
//! real OTLP collector (Rotel) receives the agent's metrics and spans, and the agent's
//! `/metrics` is scraped. Every emitted name is declared with the same instrument, unit and
//! attributes; every declared signal is seen, but those the registry marks with why the
//! scenario cannot emit them. Then OTLP/gRPC, and a collector that never answers: ingest goes
//! on, spans are dropped and counted, failed exports are counted.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use knhk_core::receipt::{encode_batch, ReceiptBuilder};
use knhk_e2e::agent::{AgentProcess, FILTER_TOKEN};
use knhk_e2e::envoy::tail;
use knhk_e2e::paths;
use knhk_e2e::registry::{self, Group, Registry};
use knhk_e2e::rollout::{rollout_spec, Recorder, RolloutRig};
use knhk_e2e::rotel::{Received, Rotel};
use knhk_e2e::wait::poll;
use serde_json::json;

const SCOPE: &str = "knhk-agent";
const BATCH_TYPE: &str = "application/x-knhk-receipts";

fn registry() -> Registry {
    registry::load(&paths::repo_root().join("registry"))
        .unwrap_or_else(|problems| panic!("registry check failed:\n{}", problems.join("\n")))
}

fn agent_metrics(r: &Registry) -> Vec<&Group> {
    r.groups
        .iter()
        .filter(|g| {
            g.metric_name
                .as_deref()
                .is_some_and(|n| n.starts_with("knhk.agent."))
        })
        .collect()
}

fn agent_spans(r: &Registry) -> Vec<&Group> {
    r.groups.iter().filter(|g| g.kind == "span").collect()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = paths::scratch_dir()
        .join("e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The declared signals not yet received.
fn missing(r: &Registry, got: &Received, service: &str) -> Vec<String> {
    let metrics: BTreeSet<&str> = got
        .metrics
        .iter()
        .filter(|m| m.service == service)
        .map(|m| m.name.as_str())
        .collect();
    let spans: BTreeSet<&str> = got
        .spans
        .iter()
        .filter(|s| s.service == service)
        .map(|s| s.name.as_str())
        .collect();
    let mut out = Vec::new();
    for g in agent_metrics(r)
        .into_iter()
        .filter(|g| g.not_live.is_none())
    {
        let name = g.metric_name.as_deref().unwrap();
        if !metrics.contains(name) {
            out.push(format!("metric {name}"));
        }
    }
    for g in agent_spans(r).into_iter().filter(|g| g.not_live.is_none()) {
        let name = g.span_name().unwrap();
        if !spans.contains(name) {
            out.push(format!("span {name}"));
        }
    }
    out
}

/// Every received metric and span of `service` is declared, with its instrument, unit and
/// attributes.
fn check_received(r: &Registry, got: &Received, service: &str) {
    let metrics: BTreeMap<&str, &Group> = agent_metrics(r)
        .into_iter()
        .map(|g| (g.metric_name.as_deref().unwrap(), g))
        .collect();
    for m in got.metrics.iter().filter(|m| m.service == service) {
        assert_eq!(m.scope, SCOPE, "{m:?}");
        let g = metrics
            .get(m.name.as_str())
            .unwrap_or_else(|| panic!("received metric {} is not declared in registry/", m.name));
        assert_eq!(
            Some(m.instrument()),
            g.instrument.as_deref(),
            "{}: instrument",
            m.name
        );
        assert_eq!(Some(m.unit.as_str()), g.unit.as_deref(), "{}: unit", m.name);
        let undeclared: Vec<&String> = m
            .attributes
            .iter()
            .filter(|a| !g.attributes.contains(a))
            .collect();
        assert!(
            undeclared.is_empty(),
            "{}: attributes {undeclared:?} not declared",
            m.name
        );
    }
    let spans: BTreeMap<&str, &Group> = agent_spans(r)
        .into_iter()
        .map(|g| (g.span_name().unwrap(), g))
        .collect();
    for s in got.spans.iter().filter(|s| s.service == service) {
        let g = spans
            .get(s.name.as_str())
            .unwrap_or_else(|| panic!("received span {} is not declared in registry/", s.name));
        assert_eq!(s.kind, "SPAN_KIND_INTERNAL", "{}: kind", s.name);
        let undeclared: Vec<&String> = s
            .attributes
            .iter()
            .filter(|a| !g.attributes.contains(a))
            .collect();
        assert!(
            undeclared.is_empty(),
            "{}: attributes {undeclared:?} not declared",
            s.name
        );
    }
}

/// The agent's families on its `/metrics` (`# TYPE` lines), with the label names of their
/// samples.
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.to_owned(), (kind.to_owned(), BTreeSet::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            let family = out
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned()
                .unwrap_or_else(|| panic!("sample {line:?} before its # TYPE"));
            if let Some(labels) = line[name_end..].strip_prefix('{') {
                let labels = &labels[..labels.find('}').unwrap()];
                for pair in labels.split("\",") {
                    let key = pair.split('=').next().unwrap();
                    if key != "le" {
                        out.get_mut(&family).unwrap().1.insert(key.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// Every `knhk_*` family on `text` is declared with its type and labels; with `complete`,
/// every declared family (but those the registry marks) is there.
fn check_prometheus(r: &Registry, text: &str, complete: bool) {
    let exported = families(text);
    let sanitize = |a: &str| a.replace('.', "_");
    let mut declared = BTreeMap::new();
    for g in agent_metrics(r) {
        let (family, kind) = g.prometheus_family().unwrap();
        declared.insert(family, (kind, g));
    }
    for (family, (kind, labels)) in exported.iter().filter(|(f, _)| f.starts_with("knhk_")) {
        let (want, g) = declared
            .get(family)
            .unwrap_or_else(|| panic!("/metrics family {family} is not declared in registry/"));
        assert_eq!(kind, want, "{family}: type");
        let allowed: BTreeSet<String> = g.attributes.iter().map(|a| sanitize(a)).collect();
        let extra: Vec<&String> = labels.difference(&allowed).collect();
        assert!(extra.is_empty(), "{family}: labels {extra:?} not declared");
    }
    for (family, (_, g)) in &declared {
        if complete && g.not_live.is_none() {
            assert!(
                exported.contains_key(family),
                "declared {family} missing on /metrics:\n{text}"
            );
        }
    }
    assert!(exported.contains_key("target_info"), "no target_info");
}

/// An agent of its own (local keys under `dir`) with `env`.
async fn start_agent(dir: &std::path::Path, env: &[(&str, &str)]) -> AgentProcess {
    let kms = format!(
        "[kms]\nprovider = \"local\"\nkey_dir = \"{}\"\n",
        dir.join("keys").display()
    );
    AgentProcess::start_with(&dir.join("agent"), None, &kms, env)
        .await
        .unwrap()
}

async fn metrics_text(agent: &AgentProcess) -> String {
    String::from_utf8(agent.get_bytes("/metrics").await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_telemetry_reaches_a_real_collector_and_matches_the_registry() {
    let registry = registry();
    let dir = scratch("telemetry-live");
    let rotel = Rotel::start(&dir.join("rotel")).await.unwrap();
    let endpoint = rotel.http_endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=e2e",
        ),
    ];
    // A timed rotation every 2 s, so the scenario has `rotate` KMS calls.
    let rig = RolloutRig::start_with("telemetry-live", "rotation_interval = \"2s\"", &env)
        .await
        .unwrap();
    // A refused batch (wrong media type) and a retention run.
    let refused = reqwest::Client::new()
        .post(rig.agent.url("/v1/receipts"))
        .bearer_auth(FILTER_TOKEN)
        .header("content-type", "text/plain")
        .body("not a batch")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 415);
    rig.call("POST", "/v1/retention/run", None).await.unwrap();

    // The rollout at 50 %, under load, until its analysis figures reached the collector (a
    // push every 500 ms) and /metrics; then the candidate fails and the agent rolls back.
    rig.call(
        "POST",
        "/v1/rollouts",
        Some(rollout_spec("telemetry-live", &json!({}))),
    )
    .await
    .unwrap();
    let recorder = Recorder::start(&rig.rig.client, 8);
    rig.until("a passing verdict", |s| s["verdict"]["verdict"] == "pass")
        .await
        .unwrap();
    poll(
        "the rollout's figures at Rotel",
        Duration::from_secs(20),
        || async {
            Ok(rotel
                .received()
                .metrics
                .iter()
                .any(|m| m.name == "knhk.agent.rollout.latency.p99")
                .then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", tail(&rig.agent.log(), 30)));
    // /metrics while the rollout is live: every declared family (the figures are reset when
    // the rollout ends) once a timed rotation has happened.
    let live = poll(
        "every declared family on /metrics",
        Duration::from_secs(20),
        || async {
            let text = metrics_text(&rig.agent).await;
            Ok(text
                .contains("knhk_kms_operation=\"rotate\"")
                .then_some(text))
        },
    )
    .await
    .unwrap();
    check_prometheus(&registry, &live, true);
    assert!(
        live.contains("knhk_agent_rollout_weight_percent{knhk_rollout_id=\"telemetry-live\",knhk_rollout_role=\"candidate\",knhk_rollout_version=\"v2\"} 50\n"),
        "the candidate serves 50 % while the rollout is live:\n{live}"
    );
    assert!(live.contains("knhk_agent_rollout_success_rate_ratio{knhk_rollout_id=\"telemetry-live\",knhk_rollout_role=\"candidate\",knhk_rollout_version=\"v2\"} 1\n"), "{live}");
    rig.rig.canary.set_status(503);
    rig.until("the rollback", |s| s["phase"] == "rolled_back")
        .await
        .unwrap();
    let records = recorder.stop().await;
    assert!(
        records.len() >= 100,
        "the load ran: {} requests",
        records.len()
    );

    let seen = poll(
        "every declared agent signal at Rotel",
        Duration::from_secs(30),
        || async {
            let got = rotel.received();
            Ok(missing(&registry, &got, SCOPE).is_empty().then_some(got))
        },
    )
    .await;
    let got = match seen {
        Ok(got) => got,
        Err(e) => panic!(
            "{e}: not received: {:?}\nagent log:\n{}\nrotel output tail:\n{}",
            missing(&registry, &rotel.received(), SCOPE),
            tail(&rig.agent.log(), 40),
            tail(&rotel.output(), 40)
        ),
    };
    check_received(&registry, &got, SCOPE);
    // The resource carries the standard variables.
    assert!(
        rotel
            .output()
            .contains("deployment.environment.name: Str(e2e)"),
        "OTEL_RESOURCE_ATTRIBUTES did not reach the resource"
    );

    let text = metrics_text(&rig.agent).await;
    check_prometheus(&registry, &text, false);
    // The filter's side of the same scenario: every knhk family Envoy exports is declared,
    // with its instrument.
    let envoy = registry::envoy_knhk_families(
        &rig.rig.envoy.stats_prometheus().await.unwrap(),
        paths::native_host(),
    );
    let declared: BTreeMap<String, String> = registry
        .envoy_stats()
        .into_iter()
        .map(|s| (s.prometheus_name(), s.instrument))
        .collect();
    assert!(envoy.contains_key("knhk_route_canary"), "{envoy:?}");
    for (family, kind) in &envoy {
        assert_eq!(
            declared.get(family),
            Some(kind),
            "Envoy's {family} ({kind}) vs registry/"
        );
    }
    // Figures an SRE reads, consistent with what happened.
    assert!(
        text.contains("knhk_agent_receipts_refused_total{error_type=\"415\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("knhk_agent_rollout_weight_percent{knhk_rollout_id=\"telemetry-live\",knhk_rollout_role=\"stable\",knhk_rollout_version=\"v1\"} 100\n"), "after the rollback the stable version serves everyone:\n{text}");
    let ingested: f64 = text
        .lines()
        .filter(|l| l.starts_with("knhk_agent_receipts_ingested_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        ingested >= records.len() as f64,
        "the load's {} requests have receipts, counted: {ingested}\n{text}",
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_reaches_the_collector() {
    let dir = scratch("telemetry-grpc");
    let rotel = Rotel::start(&dir.join("rotel")).await.unwrap();
    let endpoint = rotel.grpc_endpoint();
    let agent = start_agent(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "knhk-agent-grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    )
    .await;
    let got = poll(
        "metrics and spans over gRPC",
        Duration::from_secs(20),
        || async {
            let got = rotel.received();
            let metrics = got.metrics.iter().any(|m| {
                m.service == "knhk-agent-grpc" && m.name == "knhk.agent.checkpoint.seal.duration"
            });
            let spans = got
                .spans
                .iter()
                .any(|s| s.service == "knhk-agent-grpc" && s.name == "knhk.checkpoint.seal");
            Ok((metrics && spans).then_some(got))
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nagent log:\n{}\nrotel:\n{}",
            tail(&agent.log(), 30),
            tail(&rotel.output(), 30)
        )
    });
    check_received(&registry(), &got, "knhk-agent-grpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_slows_nothing_and_drops_are_counted() {
    // Accepts connections and never answers: every export waits for its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let dir = scratch("telemetry-silent");
    let endpoint = format!("http://127.0.0.1:{port}");
    let agent = start_agent(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "1"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let batch = encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut slowest = Duration::ZERO;
    let mut posted = 0u32;
    loop {
        let started = Instant::now();
        let answer = http
            .post(agent.url("/v1/receipts"))
            .bearer_auth(FILTER_TOKEN)
            .header("content-type", BATCH_TYPE)
            .body(batch.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status().as_u16(),
            200,
            "{}",
            answer.text().await.unwrap()
        );
        slowest = slowest.max(started.elapsed());
        posted += 1;
        let text = metrics_text(&agent).await;
        let value = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let dropped = value("knhk_agent_telemetry_spans_dropped_total ");
        let failed =
            value("knhk_agent_telemetry_export_failures_total{knhk_telemetry_signal=\"metrics\"}");
        if dropped > 0.0 && failed > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no drop or failure counted after {posted} batches (dropped {dropped}, failed {failed})\n{text}\nagent log:\n{}",
            tail(&agent.log(), 30)
        );
    }
    // An export waits 3 s for the silent collector; a batch acknowledged in under a second
    // never waited for one.
    assert!(
        slowest < Duration::from_secs(1),
        "a receipt batch took {slowest:?} while exports hung"
    );
    assert!(agent.log_size().await.unwrap() >= u64::from(posted));
    held.abort();
}
