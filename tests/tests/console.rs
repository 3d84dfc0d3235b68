//! The operator console in a real headless Chromium, against the real agent running a rollout
//! with the real Envoy and filter routing live traffic: the page shows the weight change and
//! the automatic rollback within seconds of the agent deciding them, a button without the
//! admin token is refused (and nothing changes), and with the token it acts. Screenshots of
//! the console go to `<target>/console-screenshots/` (the ones in docs/ come from this test).

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use knhk_e2e::agent::ADMIN_TOKEN;
use knhk_e2e::browser::Browser;
use knhk_e2e::envoy::tail;
use knhk_e2e::rollout::{rollout_spec, Recorder, RolloutRig};
use serde_json::{json, Value};

/// How much later than the agent the page may show a change: two polls of a second and a
/// render, with room for this shared machine.
const PAGE_LAG: Duration = Duration::from_secs(5);

/// The text of element `id` once it equals `want`, or a failure with the agent's log.
async fn shows(browser: &Browser, rig: &RolloutRig, id: &str, want: &str) -> Duration {
    let t = Instant::now();
    let script = format!(
        "const e = document.getElementById({id:?}); return e && e.textContent.trim() === {want:?};"
    );
    if let Err(e) = browser
        .until(&format!("#{id} to show {want:?}"), PAGE_LAG, &script)
        .await
    {
        let shown = browser.text(id).await.unwrap_or_default();
        panic!(
            "{e}: it shows {shown:?}\nagent log:\n{}",
            tail(&rig.agent.log(), 40)
        );
    }
    t.elapsed()
}

async fn outcome(browser: &Browser) -> (String, String) {
    let v = browser
        .until(
            "the action's outcome",
            Duration::from_secs(10),
            "const r = document.getElementById('action-result'); return r && r.dataset.outcome ? [r.dataset.outcome, r.textContent] : null;",
        )
        .await
        .unwrap();
    (
        v[0].as_str().unwrap().to_owned(),
        v[1].as_str().unwrap().to_owned(),
    )
}

async fn clear_outcome(browser: &Browser) {
    browser
        .client
        .execute(
            "const r = document.getElementById('action-result'); delete r.dataset.outcome; r.textContent = '';",
            vec![],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_a_live_rollout_and_guards_its_buttons() {
    let Some(browser) = Browser::start(false).await.unwrap() else {
        return;
    };
    let rig = RolloutRig::start("console").await.unwrap();
    let shots = knhk_e2e::paths::target_dir().join("console-screenshots");
    browser
        .open(
            &rig.agent.url("/console/"),
            "const e = document.getElementById('live-status'); return e && e.textContent.trim() === 'live';",
        )
        .await
        .unwrap();
    assert!(
        browser
            .text("rollout-empty")
            .await
            .unwrap()
            .contains("No rollout"),
        "before any rollout"
    );

    // 10 % → 50 % on analysis alone, under live traffic through Envoy.
    let spec = rollout_spec(
        "console",
        &json!({"steps": [10, 50], "auto_promote": true,
                "analysis": {"interval_ms": 50, "window_ms": 3000, "pass_for_ms": 1500,
                             "min_samples": 20, "failure_threshold": 2, "max_p99_ms": 150.0}}),
    );
    rig.call("POST", "/v1/rollouts", Some(spec)).await.unwrap();
    let recorder = Recorder::start(&rig.rig.client, 4);
    shows(&browser, &rig, "rollout-id", "console").await;
    shows(&browser, &rig, "canary-percent", "10").await;
    let (_, promoted) = rig
        .until("the promotion to 50 %", |s| s["canary_percent"] == 50.0)
        .await
        .unwrap();
    let lag = shows(&browser, &rig, "canary-percent", "50").await + promoted.elapsed();
    println!(
        "console: the page showed 50 % {:.0} ms after the agent",
        lag.as_secs_f64() * 1e3
    );
    shows(&browser, &rig, "rollout-phase", "running").await;
    browser
        .until(
            "the weight and analysis plots to draw",
            Duration::from_secs(10),
            "return ['chart-weight', 'chart-success', 'chart-p99'].every(id => { const c = document.querySelector('#' + id + ' canvas'); return c && c.width > 0; });",
        )
        .await
        .unwrap();
    browser
        .screenshot(&shots.join("console-rollout.png"))
        .await
        .unwrap();

    // Without the token a button is refused and nothing changes.
    browser.click("btn-pause").await.unwrap();
    let (result, text) = outcome(&browser).await;
    assert_eq!(result, "error", "{text}");
    assert!(text.contains("401"), "{text}");
    let status: Value = rig.call("GET", "/v1/rollouts/current", None).await.unwrap();
    assert_eq!(status["phase"], "running");
    assert_eq!(
        status["history"].as_array().unwrap().len(),
        2,
        "start, promote"
    );

    // With the token it acts.
    clear_outcome(&browser).await;
    browser.type_into("token-input", ADMIN_TOKEN).await.unwrap();
    browser.click("token-save").await.unwrap();
    shows(&browser, &rig, "token-state", "token saved").await;
    browser.click("btn-pause").await.unwrap();
    let (result, text) = outcome(&browser).await;
    assert_eq!(result, "ok", "{text}");
    let status = rig.call("GET", "/v1/rollouts/current", None).await.unwrap();
    assert_eq!(status["phase"], "paused");
    shows(&browser, &rig, "rollout-phase", "paused").await;

    // The candidate turns bad: the agent rolls back on its own (rollback stays armed while
    // paused), and the page shows it within seconds, with the cause.
    rig.rig.canary.set_status(503);
    let (rolled_back, decided) = rig
        .until("the rollback", |s| s["phase"] == "rolled_back")
        .await
        .unwrap();
    let lag = shows(&browser, &rig, "rollout-phase", "rolled_back").await + decided.elapsed();
    println!(
        "console: the page showed the rollback {:.0} ms after the agent",
        lag.as_secs_f64() * 1e3
    );
    shows(&browser, &rig, "canary-percent", "0").await;
    let reason = browser.text("rollout-reason").await.unwrap();
    assert_eq!(reason, rolled_back["reason"].as_str().unwrap());
    assert!(reason.contains("failed"), "{reason}");
    let rows = browser
        .client
        .execute(
            "return document.querySelectorAll('#history tr').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows.as_u64(), Some(4), "start, promote, pause, rollback");
    browser
        .screenshot(&shots.join("console-rollback.png"))
        .await
        .unwrap();
    println!("console: screenshots in {}", shots.display());
    recorder.stop().await;
    browser.close().await.unwrap();
}
