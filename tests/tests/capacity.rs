//! Capacity planning through the real Envoy, filter and agent: a stable upstream of known
//! capacity (8 servers × 20 ms: 400 req/s) driven by Poisson arrivals at rising rates; the
//! agent's report, computed from the receipts alone, puts the saturation rate within ±20 % of
//! 400 req/s, and, with the model fitted, the headroom falls as the load rises. Run on both
//! builds (wasm, native).

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_e2e::agent::AgentProcess;
use knhk_e2e::client::Client;
use knhk_e2e::paths;
use knhk_e2e::rig::{base_config, control_section, ControlledRig};
use knhk_e2e::wait::poll;

const SERVERS: usize = 8;
const SERVICE: Duration = Duration::from_millis(20);
const TRUE_SATURATION: f64 = SERVERS as f64 / 0.020;
/// The analysis window of this test's agent.
const WINDOW_S: u64 = 2;
/// Each rate is held for this long: two complete windows at least.
const STEP: Duration = Duration::from_secs(5);
const RATES: [f64; 9] = [40.0, 80.0, 120.0, 160.0, 200.0, 240.0, 270.0, 300.0, 330.0];

/// Poisson arrivals at `rate` for `length`: each request on its own task, so a slow answer
/// never delays the next arrival (an open loop). Returns the answers that were not 200.
async fn poisson(
    client: &Client,
    rate: f64,
    length: Duration,
    seed: &mut u64,
    failures: &Arc<AtomicU64>,
) {
    let start = tokio::time::Instant::now();
    let mut at = start;
    while at.duration_since(start) < length {
        // xorshift64* → an exponential gap.
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        let u =
            ((seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        at += Duration::from_secs_f64(-u.ln() / rate);
        tokio::time::sleep_until(at).await;
        let (client, failures, n) = (client.clone(), failures.clone(), *seed % 50_000);
        tokio::spawn(async move {
            let user = format!("cap-{n}");
            match client.get("/api", &[("x-user-id", &user)]).await {
                Ok(r) if r.status == 200 => {}
                _ => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn w1_stable(report: &serde_json::Value) -> Option<&serde_json::Value> {
    report["series"]
        .as_array()?
        .iter()
        .find(|s| s["class"] == "W1" && s["route"] == "stable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_capacity_is_predicted_from_the_receipts() {
    let dir = paths::scratch_dir()
        .join("e2e")
        .join(format!("capacity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let capacity_toml = format!("[capacity]\nwindow = \"{WINDOW_S}s\"\nhorizon = \"120s\"\n");
    let agent = AgentProcess::start_with(&dir, None, &capacity_toml, &[])
        .await
        .unwrap();
    // Everything on stable, W1 (500 ms budget): nothing is shed at these latencies.
    let mut policy = base_config();
    policy["routing"]["canary_basis_points"] = 0.into();
    agent.put_policy(&policy).await.unwrap();
    let mut config = policy.clone();
    config["control"] = control_section(&agent.config_keys().await.unwrap());
    let rig = ControlledRig::start("capacity", &config, agent.port())
        .await
        .unwrap();
    rig.stable.set_delay(SERVICE);
    rig.stable.set_servers(SERVERS);
    let client = Client::new(&rig.envoy.base_url()).unwrap();
    let failures = Arc::new(AtomicU64::new(0));
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;

    let mut headrooms = Vec::new();
    let started = Instant::now();
    for rate in RATES {
        poisson(&client, rate, STEP, &mut seed, &failures).await;
        let report: serde_json::Value =
            serde_json::from_slice(&agent.get_bytes("/v1/capacity").await.unwrap()).unwrap();
        if let Some(h) = w1_stable(&report).and_then(|s| s["model"]["headroom_factor"].as_f64()) {
            headrooms.push((rate, h));
        }
    }
    // The last step's windows complete a second after they end.
    let report = poll(
        "a fitted model for W1 on stable",
        Duration::from_secs(15),
        || async {
            let report: serde_json::Value =
                serde_json::from_slice(&agent.get_bytes("/v1/capacity").await?)?;
            let fitted = w1_stable(&report).is_some_and(|s| s["model"]["status"] == "fitted")
                && report["windows"].as_u64().unwrap_or(0) * WINDOW_S
                    >= started.elapsed().as_secs().saturating_sub(2 * WINDOW_S);
            Ok(fitted.then_some(report))
        },
    )
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let last = agent.get_bytes("/v1/capacity").await.unwrap_or_default();
            panic!(
                "{e}\nreport: {}\nagent log:\n{}",
                String::from_utf8_lossy(&last),
                knhk_e2e::envoy::tail(&agent.log(), 40)
            )
        }
    };
    let series = w1_stable(&report).unwrap();
    let model = &series["model"];
    let saturation = model["saturation_rps"].as_f64().unwrap();
    println!(
        "capacity: fitted {} servers × {:.1} ms (spread {:.2}), saturation {saturation:.0} req/s (true {TRUE_SATURATION:.0}), budget rate {:?}, headroom along the ramp {headrooms:?}",
        model["servers"], model["service_ms"].as_f64().unwrap(), model["service_cv2"].as_f64().unwrap(), model["budget_rps"]
    );
    assert!(
        (saturation - TRUE_SATURATION).abs() <= 0.20 * TRUE_SATURATION,
        "saturation {saturation} vs {TRUE_SATURATION}: {report}"
    );
    // With the model fitted, the headroom falls as the load rises: a step back down at
    // 150 req/s, then one at 300 req/s, each read once a window wholly inside it is complete.
    let mut after = Vec::new();
    for rate in [150.0, 300.0] {
        let step_start_ns = now_ns();
        poisson(&client, rate, STEP, &mut seed, &failures).await;
        let report = poll(
            "a complete window of the step",
            Duration::from_secs(10),
            || async {
                let report: serde_json::Value =
                    serde_json::from_slice(&agent.get_bytes("/v1/capacity").await?)?;
                let inside = w1_stable(&report)
                    .and_then(|s| s["now"]["window_start_ns"].as_u64())
                    .is_some_and(|w| w >= step_start_ns + 1_000_000_000 * WINDOW_S);
                Ok(inside.then_some(report))
            },
        )
        .await
        .unwrap();
        let h = w1_stable(&report)
            .and_then(|s| s["model"]["headroom_factor"].as_f64())
            .unwrap_or_else(|| panic!("no headroom at {rate} req/s: {report}"));
        after.push((rate, h));
    }
    println!("capacity: headroom at 150 then 300 req/s: {after:?}");
    assert!(
        after[0].1 > 1.5 * after[1].1,
        "the headroom falls as the load rises: {after:?}"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "every request answered 200"
    );
    let recommendation = report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .find(|r| r.starts_with("W1 on stable reaches its 500 ms p99 at ≈ "))
        .unwrap_or_else(|| panic!("{report}"))
        .to_owned();
    println!("capacity: {recommendation}");
}
