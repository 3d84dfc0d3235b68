//! `cargo xtask demo`: two upstreams, Envoy with the filter, real traffic, and a summary of what the filter did.
//!
//! Sections: the canary split against the core's oracle, stickiness over new connections (both
//! workers), sample decision headers, admission (the upstreams are slowed so R1 sheds, then made
//! fast so it recovers), the agent (a signed policy push that ramps the canary, timed until every
//! worker applies it; receipts in the Merkle log; an offline-verified proof), every `knhk`
//! line of `/stats/prometheus`, and a rollout whose candidate fails and is rolled back by the
//! agent on its own (timed, with the signed cause verified offline).

use crate::util::repo_root;
use crate::{setup, wasm};
use anyhow::{bail, Context};
use knhk_e2e::agent::AgentProcess;
use knhk_e2e::client::{concurrent, Client, Reply};
use knhk_e2e::envoy::{prometheus_value, Envoy, EnvoySpec};
use knhk_e2e::load::Load;
use knhk_e2e::rig::{base_config, control_section, oracle, oracle_route};
use knhk_e2e::rollout::{measure_rollback, Fault, Recorder, RolloutRig};
use knhk_e2e::upstream::Upstream;
use knhk_e2e::wait::poll;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Distinct routing keys (`x-user-id`) to send.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Canary weight in basis points (1000 = 10 %).
    #[arg(long, default_value_t = 1000)]
    pub canary_basis_points: u16,
    /// Keep everything running until Ctrl-C: Envoy, the upstreams, and a second, healthy
    /// rollout promoting step by step under light load, watched in the agent's console
    /// (its address is printed).
    #[arg(long, alias = "keep")]
    pub stay: bool,
}

/// Salt of the demo rollout.
const SALT: &str = "demo-rollout";
/// How often each stickiness key is repeated.
const STICKY_REPEATS: usize = 40;
/// Latency given to the upstreams during the admission section: 3 × R1's 100 ms budget.
const SLOW: Duration = Duration::from_millis(300);
/// R1's shed cap in the demo config (`max_shed_fraction` 0.5).
const MAX_LEVEL: f64 = 5000.0;
/// Longest wait for the filter's controller and stats.
const WAIT: Duration = Duration::from_secs(20);

/// Run the demo.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    if args.canary_basis_points > 10_000 {
        bail!("--canary-basis-points must be 0..=10000");
    }
    let tools = setup::ensure()?;
    let wasm_path = wasm::build("knhk-filter", "knhk_filter")?;
    // The console (with the browser verifier) is embedded in the agent built next.
    let verifier = crate::verifier::build()?;
    crate::console::build(Some(&verifier))?;
    crate::util::run(crate::util::cargo().args([
        "build",
        "-p",
        "knhk-agent",
        "--bin",
        "knhk-agent",
    ]))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("build tokio runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = demo(args, tools.envoy, wasm_path) => result,
            _ = tokio::signal::ctrl_c() => {
                println!("\ninterrupted; stopping Envoy");
                Ok(())
            }
        }
    })
}

async fn demo(args: &DemoArgs, envoy_bin: PathBuf, wasm_path: PathBuf) -> anyhow::Result<()> {
    // Only the latest demo's files are kept: earlier runs' logs go.
    let work_dir = repo_root().join(".knhk/demo");
    if work_dir.exists() {
        std::fs::remove_dir_all(&work_dir)
            .with_context(|| format!("remove {}", work_dir.display()))?;
    }
    let stable = Upstream::start("stable").await?;
    let canary = Upstream::start("canary").await?;
    let mut policy = base_config();
    policy["routing"]["salt"] = SALT.into();
    policy["routing"]["canary_basis_points"] = args.canary_basis_points.into();
    println!("demo: starting the knhk agent (local Ed25519 keys) ...");
    let agent = AgentProcess::start(&work_dir.join("agent"), None).await?;
    let first_epoch = agent.put_policy(&policy).await?;
    let mut config = policy.clone();
    config["control"] = control_section(&agent.config_keys().await?);
    let spec = EnvoySpec {
        name: "demo".to_string(),
        template: repo_root().join("envoy/demo.yaml"),
        envoy: envoy_bin,
        wasm: Some(wasm_path),
        native: None,
        plugin_config: Some(config.to_string()),
        filter_name: None,
        stable_port: stable.port(),
        canary_port: canary.port(),
        concurrency: 2,
        log_level: "info".to_string(),
        work_dir: Some(work_dir),
        keep_files: true,
        extra_files: Vec::new(),
        extra_args: Vec::new(),
        agent_port: Some(agent.port()),
        // Receipt batches name this pod (as Istio's Downward API would).
        env: vec![
            ("POD_NAME".to_string(), "knhk-demo".to_string()),
            ("POD_NAMESPACE".to_string(), "demo".to_string()),
            ("NODE_NAME".to_string(), "localhost".to_string()),
        ],
    };
    println!("demo: starting Envoy (2 workers) with knhk_filter.wasm ...");
    let t = Instant::now();
    let envoy = Envoy::start(&spec).await?;
    println!(
        "demo: Envoy ready in {:.1} s — listener {}, admin http://127.0.0.1:{}, log {}",
        t.elapsed().as_secs_f64(),
        envoy.base_url(),
        envoy.admin_port(),
        envoy.log_path().display()
    );
    println!("demo: plugin config {config}");

    let client = Client::new(&envoy.base_url())?;
    let bp = args.canary_basis_points;
    let keys: Vec<String> = (0..args.requests).map(|i| format!("user-{i}")).collect();
    let mismatches = split(&client, &keys, bp).await?;
    let sticky = stickiness(&envoy, &keys, bp).await?;
    samples(&client).await?;
    admission(&envoy, &client, [&stable, &canary]).await?;
    let ramp_ok = agent_section(&envoy, &agent, &policy, &keys, first_epoch).await?;
    print_stats(&envoy).await?;
    print_agent_metrics(&agent).await?;
    let (rollback_ok, rollout_rig) = rollout_section().await?;

    let ok = mismatches == 0 && sticky && ramp_ok && rollback_ok;
    println!(
        "\ndemo: {}",
        if ok {
            "every request went where the core says, keys stayed sticky, R1 shed and recovered, the signed ramp reached every worker and only moved keys toward canary, the receipts verify, and the failing candidate was rolled back within 2 s with a verifiable cause; receipts without the filters' credential were refused"
        } else {
            "MISMATCH: see above"
        }
    );
    if args.stay {
        let live = live_rollout(&rollout_rig).await?;
        println!(
            "demo: Envoy stays up on {} (admin http://127.0.0.1:{}); try\n  curl -si -H 'x-user-id: alice' {}/",
            envoy.base_url(),
            envoy.admin_port(),
            envoy.base_url()
        );
        println!(
            "demo: console of the demo agent (receipts, admission, keys): {}",
            agent.url("/console/")
        );
        println!(
            "demo: console of the rollout agent, a rollout v1 -> v2 promoting every 20 s under load: {}\n      actions need the admin token in {}\nCtrl-C to stop.",
            rollout_rig.agent.url("/console/"),
            rollout_rig.agent.admin_token_file().display()
        );
        tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
        println!("\nstopping");
        live.stop().await;
    }
    drop(rollout_rig);
    drop(envoy);
    if !ok {
        bail!("the filter's routing disagreed with the core");
    }
    Ok(())
}

/// For `--stay`: the candidate healthy again and a new rollout v1 → v2 through 10, 25, 50 and
/// 100 % that promotes after 20 s of passing analysis at each step, under a light load.
async fn live_rollout(rig: &RolloutRig) -> anyhow::Result<Recorder> {
    rig.rig.canary.set_status(200);
    let spec = knhk_e2e::rollout::rollout_spec(
        "demo-live",
        &serde_json::json!({"steps": [10, 25, 50, 100], "auto_promote": true,
            "analysis": {"interval_ms": 500, "window_ms": 10000, "pass_for_ms": 20000,
                         "min_samples": 20, "failure_threshold": 3, "max_p99_ms": 150.0}}),
    );
    rig.call("POST", "/v1/rollouts", Some(spec)).await?;
    Ok(Recorder::start(&rig.rig.client, 1))
}

/// A rollout v1 → v2 at 50 % on a second agent and Envoy; the candidate starts answering 503
/// and the agent rolls it back on its own. Prints the times, `knhk-agent rollout status` and
/// the offline verification of the signed rollback event. True when the rollback met 2 s;
/// the rig is handed back for `--stay`.
async fn rollout_section() -> anyhow::Result<(bool, RolloutRig)> {
    println!("\n== rollout with automatic rollback ==");
    let rig = RolloutRig::start("demo-rollout").await?;
    println!(
        "demo: rollout v1 -> v2 at 50 % under load; once its analysis passes, v2 starts answering 503 ..."
    );
    let run = measure_rollback(&rig, "demo-rollout", Fault::Status(503)).await?;
    println!(
        "demo: the agent decided to roll back {:.0} ms after v2 turned bad; the last request v2 served was sent {:.0} ms after (goal < 2000 ms)",
        run.decided.as_secs_f64() * 1000.0,
        run.total.as_secs_f64() * 1000.0
    );
    let agent_bin = knhk_e2e::paths::agent()?;
    let status = Command::new(&agent_bin)
        .args([
            "rollout",
            "--agent",
            &format!("127.0.0.1:{}", rig.agent.port()),
            "--token-file",
        ])
        .arg(rig.agent.admin_token_file())
        .arg("status")
        .output()
        .context("running knhk-agent rollout status")?;
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        println!("  {line}");
    }
    let leaf = run.status["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|h| h["leaf_index"].as_u64())
        .context("the rollback has no event leaf")?;
    let proof = rig
        .agent
        .config_path()
        .with_file_name("rollback-proof.json");
    std::fs::write(
        &proof,
        rig.agent
            .get_bytes(&format!("/v1/receipts/{leaf}/proof"))
            .await?,
    )?;
    let trust = rig.agent.trusted_keys_file()?;
    let verified = Command::new(&agent_bin)
        .arg("verify")
        .arg(&proof)
        .arg("--trusted-keys")
        .arg(&trust)
        .output()
        .context("running knhk-agent verify")?;
    println!(
        "demo: knhk-agent verify {} --trusted-keys {}",
        proof.display(),
        trust.display()
    );
    for line in String::from_utf8_lossy(&verified.stdout).lines() {
        println!("  {line}");
    }
    // Whoever reaches the agent's port without the filters' credential writes nothing.
    let mut refused = true;
    for (who, token) in [
        ("no credential", None),
        (
            "a wrong token",
            Some("forged-0123456789abcdef0123456789abcdef"),
        ),
    ] {
        let (status, answer) = rig
            .agent
            .call_as(
                token,
                "POST",
                "/v1/receipts",
                "application/x-knhk-receipts",
                b"KNRB".to_vec(),
            )
            .await?;
        println!("demo: a receipt batch with {who}: {status} {answer}");
        refused &= status == 401;
    }
    let (_, counts) = rig.agent.call("GET", "/v1/auth/refusals", None).await?;
    println!("demo: refusals counted by the agent: {counts}");
    Ok((
        verified.status.success() && run.total < Duration::from_secs(2) && refused,
        rig,
    ))
}

/// One request per distinct key; print the observed and expected canary share. Returns the
/// number of requests routed unlike the core.
async fn split(client: &Client, keys: &[String], bp: u16) -> anyhow::Result<usize> {
    let t = Instant::now();
    let replies = concurrent(keys.to_vec(), 16, |key| {
        let client = client.clone();
        async move {
            let reply = client.get("/api/items", &[("x-user-id", &key)]).await?;
            Ok((key, reply))
        }
    })
    .await?;
    let rate = replies.len() as f64 / t.elapsed().as_secs_f64();
    let count = |f: &dyn Fn(&(String, Reply)) -> bool| replies.iter().filter(|r| f(r)).count();
    let to_canary = count(&|(_, r)| r.upstream() == Some("canary"));
    let expected = count(&|(k, _)| oracle_route(SALT, k, bp) == "canary");
    let mismatches = count(&|(k, r)| r.upstream() != Some(oracle_route(SALT, k, bp)));
    let pct = |n: usize| format!("{:.2} %", 100.0 * n as f64 / replies.len().max(1) as f64);
    println!(
        "\n── split: {} distinct x-user-id keys ({rate:.0} req/s) ──",
        replies.len()
    );
    row(
        "configured canary weight",
        &format!("{:.2} %", f64::from(bp) / 100.0),
    );
    row("observed canary share", &pct(to_canary));
    row("share the core assigns to canary", &pct(expected));
    row("requests routed unlike the core", &mismatches.to_string());
    Ok(mismatches)
}

/// Repeat a few canary and stable keys on new connections (both workers); true if all sticky.
async fn stickiness(envoy: &Envoy, keys: &[String], bp: u16) -> anyhow::Result<bool> {
    let fresh = Client::fresh_connections(&envoy.base_url())?;
    let pick = |route: &str, n: usize| -> Vec<String> {
        keys.iter()
            .filter(|k| oracle_route(SALT, k, bp) == route)
            .take(n)
            .cloned()
            .collect()
    };
    let mut chosen = pick("canary", 2);
    chosen.extend(pick("stable", 3));
    println!("\n── stickiness: {STICKY_REPEATS} requests per key, a new connection each ──");
    let mut all_ok = true;
    for key in chosen {
        let seen = concurrent(vec![key.clone(); STICKY_REPEATS], 8, |key| {
            let fresh = fresh.clone();
            async move { fresh.get("/api/items", &[("x-user-id", &key)]).await }
        })
        .await?;
        let mut routes: Vec<&str> = seen
            .iter()
            .map(|r| r.upstream().unwrap_or("none"))
            .collect();
        routes.sort_unstable();
        routes.dedup();
        let expected = oracle_route(SALT, &key, bp);
        let ok = routes == [expected];
        all_ok &= ok;
        println!(
            "  {key:<12} → {:<14} core says {expected:<7} {}",
            routes.join("+"),
            if ok { "sticky" } else { "NOT STICKY" }
        );
    }
    println!(
        "  connections per worker: {:?}",
        envoy.worker_connections().await?
    );
    Ok(all_ok)
}

/// A few decision headers: default class, hot class, the x-batch rule, a forced and an excluded request.
async fn samples(client: &Client) -> anyhow::Result<()> {
    println!("\n── sample x-knhk-decision headers ──");
    let samples: [(&str, &[(&str, &str)]); 5] = [
        ("/api/items", &[("x-user-id", "user-0")]),
        ("/hot/checkout", &[("x-user-id", "user-2")]),
        ("/api/report", &[("x-user-id", "user-3"), ("x-batch", "1")]),
        (
            "/api/items",
            &[("x-user-id", "user-5"), ("x-knhk-canary", "always")],
        ),
        ("/healthz", &[("x-user-id", "user-4")]),
    ];
    for (path, headers) in samples {
        let reply = client.get(path, headers).await?;
        println!(
            "  GET {path:<14} → {:<6} {}",
            reply.upstream().unwrap_or("-"),
            reply
                .header("x-knhk-decision")
                .unwrap_or("(no decision header)")
        );
    }
    Ok(())
}

/// Push a signed ramp through the agent, time it until both workers apply it, check the ramp
/// only moved keys toward canary, then show receipts and verify one proof offline. Returns
/// whether the ramp was monotonic and the proof verified.
async fn agent_section(
    envoy: &Envoy,
    agent: &AgentProcess,
    policy: &serde_json::Value,
    keys: &[String],
    first_epoch: u64,
) -> anyhow::Result<bool> {
    println!("\n── agent: signed config push, receipts, proofs ──");
    let fresh = Client::fresh_connections(&envoy.base_url())?;
    let from = policy["routing"]["canary_basis_points"]
        .as_u64()
        .unwrap_or(0) as u16;
    let to = (from.saturating_add(2000)).min(10_000);
    let before: Vec<bool> = keys
        .iter()
        .map(|k| oracle_route(SALT, k, from) == "canary")
        .collect();
    let mut ramp = policy.clone();
    ramp["routing"]["canary_basis_points"] = to.into();
    let epoch = agent.put_policy(&ramp).await?;
    let since = Instant::now();
    let want = epoch.to_string();
    let mut streak = 0;
    let mut n = 0u64;
    while streak < 16 {
        if since.elapsed() > WAIT {
            bail!("epoch {epoch} did not reach every worker within {WAIT:?}");
        }
        n += 1;
        let reply = fresh
            .get("/api", &[("x-user-id", &format!("ramp-probe-{n}"))])
            .await?;
        let applied = reply
            .decision()
            .and_then(|d| d.get("version").map(|v| v == want));
        streak = if applied == Some(true) { streak + 1 } else { 0 };
    }
    row(
        "policy epochs",
        &format!("{first_epoch} (initial) → {epoch} (ramp {from} → {to} bp)"),
    );
    row(
        "push → 16 consecutive requests on the new epoch (both workers)",
        &format!("{:.1} ms", since.elapsed().as_secs_f64() * 1e3),
    );
    let client = Client::new(&envoy.base_url())?;
    let mut moved_to_canary = 0;
    let mut moved_back = 0;
    for (key, was_canary) in keys.iter().zip(&before) {
        let now_canary = client
            .get("/api/items", &[("x-user-id", key)])
            .await?
            .upstream()
            == Some("canary");
        match (*was_canary, now_canary) {
            (false, true) => moved_to_canary += 1,
            (true, false) => moved_back += 1,
            _ => {}
        }
    }
    row(
        "keys moved stable → canary by the ramp",
        &moved_to_canary.to_string(),
    );
    row(
        "keys moved canary → stable (must be 0)",
        &moved_back.to_string(),
    );
    let size = poll("receipts in the agent's log", WAIT, || async {
        Ok(agent.log_size().await.ok().filter(|&n| n > 0))
    })
    .await?;
    row("receipts in the agent's Merkle log", &size.to_string());
    // Leaf 0 is the first batch's origin (the pod that sent it); leaf 1 its first receipt,
    // whose bundle proves both.
    let bundle = poll("a sealed proof for the first receipt", WAIT, || async {
        Ok(agent.get_bytes("/v1/receipts/1/proof").await.ok())
    })
    .await?;
    let file = repo_root().join(".knhk/demo/proof-1.json");
    std::fs::write(&file, &bundle)?;
    let verify = std::process::Command::new(knhk_e2e::paths::agent()?)
        .arg("verify")
        .arg(&file)
        .arg("--trusted-keys")
        .arg(agent.trusted_keys_file()?)
        .output()
        .context("run knhk-agent verify")?;
    row(
        "knhk-agent verify proof-1.json (keys pinned from keys list)",
        if verify.status.success() {
            "ok"
        } else {
            "FAILED"
        },
    );
    let output = [verify.stdout, verify.stderr].concat();
    for line in String::from_utf8_lossy(&output).lines() {
        println!("    {line}");
    }
    Ok(moved_back == 0 && moved_to_canary > 0 && verify.status.success())
}

/// Slow both upstreams to 300 ms (over R1's 100 ms budget, under W1's 500 ms), keep R1 busy until
/// its shed level reaches the cap, show who is shed, then make them fast and time the recovery.
async fn admission(
    envoy: &Envoy,
    client: &Client,
    upstreams: [&Upstream; 2],
) -> anyhow::Result<()> {
    println!(
        "\n── admission: upstreams slowed to {} ms (R1 budget 100 ms, W1 500 ms) ──",
        SLOW.as_millis()
    );
    let level = "knhk.admission.r1.shed_level_bp";
    let keys: Vec<String> = (0..200).map(|i| format!("shopper-{i}")).collect();
    for upstream in upstreams {
        upstream.set_delay(SLOW);
    }
    let load_keys = keys.clone();
    let load = Load::start(client.clone(), 8, Duration::from_millis(10), move |n| {
        let key = load_keys[(n as usize) % load_keys.len()].clone();
        (
            "/hot/checkout".to_string(),
            vec![("x-user-id".to_string(), key)],
        )
    });
    let t = Instant::now();
    envoy.wait_metric(level, WAIT, |v| v >= MAX_LEVEL).await?;
    println!(
        "  R1 shed level reached {MAX_LEVEL:.0} bp (the 50 % cap) {:.1} s after the slowdown",
        t.elapsed().as_secs_f64()
    );
    let pass = |path: &'static str| {
        concurrent(keys.clone(), 16, move |key| {
            let client = client.clone();
            async move {
                let reply = client.get(path, &[("x-user-id", &key)]).await?;
                Ok((key, reply))
            }
        })
    };
    let hot = pass("/hot/checkout").await?;
    let warm = pass("/api/items").await?;
    let shed = |replies: &[(String, Reply)]| {
        replies
            .iter()
            .filter(|(_, r)| r.admission() == Some("shed"))
            .count()
    };
    let by_priority = hot
        .iter()
        .filter(|(k, r)| {
            (r.admission() == Some("shed")) == (oracle(SALT, k).priority < MAX_LEVEL as u16)
        })
        .count();
    println!("  {:<8} {:>9} {:>6}", "class", "requests", "shed");
    println!("  {:<8} {:>9} {:>6}", "R1 /hot", hot.len(), shed(&hot));
    println!("  {:<8} {:>9} {:>6}", "W1 /api", warm.len(), shed(&warm));
    println!(
        "  R1 keys whose outcome matches `priority bucket < 5000`: {by_priority} of {}",
        hot.len()
    );
    if let Some((key, reply)) = hot.iter().find(|(_, r)| r.admission() == Some("shed")) {
        println!(
            "  a shed response ({key}): {} retry-after={} x-knhk-admission={}\n    x-knhk-decision: {}",
            reply.status,
            reply.header("retry-after").unwrap_or("-"),
            reply.admission().unwrap_or("-"),
            reply.header("x-knhk-decision").unwrap_or("-")
        );
    }
    for upstream in upstreams {
        upstream.set_delay(Duration::ZERO);
    }
    let t = Instant::now();
    envoy.wait_metric(level, WAIT, |v| v == 0.0).await?;
    poll("R1 admitting every key again", WAIT, || async {
        let replies = pass("/hot/checkout").await?;
        Ok((shed(&replies) == 0).then_some(()))
    })
    .await?;
    println!(
        "  upstreams fast again: R1 level back to 0 and nothing shed after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    load.stop().await;
    Ok(())
}

/// Wait for the filter's timer to flush, then print every `knhk` line of `/stats/prometheus`.
async fn print_stats(envoy: &Envoy) -> anyhow::Result<()> {
    let routed = |text: &str| {
        [
            "knhk.route.stable",
            "knhk.route.canary",
            "knhk.route.excluded",
        ]
        .iter()
        .filter_map(|m| prometheus_value(text, m))
        .sum::<f64>()
    };
    // Counters trail the traffic by at most one tick: wait until two successive reads agree.
    let previous = Mutex::new(-1.0);
    let text = poll("knhk counters to settle", WAIT, || async {
        let text = envoy.stats_prometheus().await?;
        let now = routed(&text);
        let mut last = previous.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let settled = now == *last && now > 0.0;
        *last = now;
        Ok(settled.then_some(text))
    })
    .await?;
    println!("\n── /stats/prometheus: the filter's knhk_* metrics ──");
    for line in text.lines().filter(|l| l.starts_with("knhk_")) {
        println!("  {line}");
    }
    Ok(())
}

/// The agent's own metrics, from its Prometheus endpoint (what Istio scrapes): the receipts
/// it holds by class and admission outcome, the log, the last seal and the KMS calls.
async fn print_agent_metrics(agent: &AgentProcess) -> anyhow::Result<()> {
    let text = String::from_utf8(agent.get_bytes("/metrics").await?)?;
    println!("\n── agent /metrics (OpenTelemetry instruments; docs/telemetry.md) ──");
    let shown = [
        "knhk_agent_receipts_ingested_total",
        "knhk_agent_log_size",
        "knhk_agent_log_unsealed",
        "knhk_agent_checkpoint_age_seconds",
        "knhk_agent_checkpoint_seal_duration_seconds_count",
        "knhk_agent_kms_call_duration_seconds_count",
        "knhk_agent_api_refusals_total",
    ];
    for line in text
        .lines()
        .filter(|l| shown.iter().any(|m| l.starts_with(m)))
    {
        println!("  {line}");
    }
    Ok(())
}

fn row(label: &str, value: &str) {
    println!("  {label:<36} {value:>10}");
}
