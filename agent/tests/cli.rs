//! The `knhk-agent` binary: `keys list` writes a trust file, `verify` passes an honest export
//! and bundle and exits non-zero with the reason on a tampered one; a refused configuration
//! exits 78 with one line naming the setting and changes nothing, other failures exit 1 with
//! one line, never a backtrace.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_agent::kms::local::LocalSigner;
use knhk_agent::receipts::ReceiptLog;
use knhk_core::class::{Class, Route};
use knhk_core::receipt::{encode_batch, LogEntry, Receipt, ReceiptBuilder};

fn agent(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knhk-agent"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn receipt(i: u64) -> Receipt {
    ReceiptBuilder::new(i)
        .time_ns(i)
        .key_digest([i as u8; 16])
        .route(Some(Route::Stable))
        .routing_bucket(1)
        .priority(2)
        .class(Class::W1)
        .latency_us(10)
        .config_epoch(0)
        .worker_id(0)
        .build()
}

/// keys list prints a trust file; verify accepts the honest export and bundle with it and
/// rejects a tampered export with exit code 1 and the reason on stderr.
#[tokio::test]
async fn verify_command_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[kms]\nprovider = \"local\"\nkey_id = \"ckpt\"\nkey_dir = \"{}\"\n",
            key_dir.display()
        ),
    )
    .unwrap();
    let listed = agent(&["keys", "--config", config.to_str().unwrap(), "list"], &[]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let trust = dir.path().join("trusted.json");
    std::fs::write(&trust, &listed.stdout).unwrap();

    let signer = Arc::new(LocalSigner::open(&key_dir, "ckpt").unwrap());
    let log = ReceiptLog::open(&dir.path().join("r.db"), "knhk.test/cli", signer)
        .await
        .unwrap();
    log.append_batch(&encode_batch(&(0..20).map(receipt).collect::<Vec<_>>()).unwrap())
        .unwrap();
    log.seal(1).await.unwrap();
    log.rotate_key(2).await.unwrap();
    log.append_batch(&encode_batch(&(20..30).map(receipt).collect::<Vec<_>>()).unwrap())
        .unwrap();
    log.seal(3).await.unwrap();

    let export = dir.path().join("export.json");
    std::fs::write(&export, serde_json::to_vec(&log.export().unwrap()).unwrap()).unwrap();
    let bundle = dir.path().join("bundle.json");
    std::fs::write(
        &bundle,
        serde_json::to_vec(&log.proof_bundle(5).unwrap()).unwrap(),
    )
    .unwrap();

    // The trust file predates the rotation: version 2 is trusted through the logged handover.
    let ok = agent(
        &[
            "verify",
            export.to_str().unwrap(),
            "--trusted-keys",
            trust.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK:"));

    // Without pinned keys verify refuses to run; taking them from the file is an explicit,
    // labelled opt-in.
    let unpinned = agent(&["verify", bundle.to_str().unwrap()], &[]);
    assert!(!unpinned.status.success());
    assert!(
        String::from_utf8_lossy(&unpinned.stderr).contains("--trusted-keys"),
        "{}",
        String::from_utf8_lossy(&unpinned.stderr)
    );
    let plain = agent(
        &["verify", bundle.to_str().unwrap(), "--trust-keys-in-file"],
        &[],
    );
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(String::from_utf8_lossy(&plain.stdout).contains("warning: keys were taken"));

    let mut tampered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    tampered["checkpoints"].as_array_mut().unwrap().swap(0, 1);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let failed = agent(
        &["verify", bad.to_str().unwrap(), "--trust-keys-in-file"],
        &[],
    );
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("verification FAILED") && stderr.contains("does not grow the log"),
        "{stderr}"
    );

    let missing = agent(
        &[
            "verify",
            dir.path().join("nope.json").to_str().unwrap(),
            "--trust-keys-in-file",
        ],
        &[],
    );
    assert!(!missing.status.success());

    // Fails closed on what no checkpoint proves.
    let pinned = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "verify",
            file.to_str().unwrap(),
            "--trusted-keys",
            trust.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        agent(&args, &[])
    };
    let honest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    let write = |name: &str, v: &serde_json::Value| {
        let f = dir.path().join(name);
        std::fs::write(&f, serde_json::to_vec(v).unwrap()).unwrap();
        f
    };
    // Every checkpoint removed (and a receipt altered): nothing is signed, so nothing passes.
    let mut stripped = honest.clone();
    stripped["checkpoints"] = serde_json::json!([]);
    stripped["consistency"] = serde_json::json!([]);
    let out = pinned(&write("stripped.json", &stripped), &["--accept-unproven"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no checkpoint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three forged receipts appended after the last checkpoint: refused as unproven, and
    // accepted only when asked, labelled unproven.
    let mut appended = honest.clone();
    let forged: Vec<Vec<u8>> = (0..3)
        .map(|i| LogEntry::Receipt(receipt(900 + i)).encode().unwrap())
        .collect();
    for leaf in &forged {
        appended["entries"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(base64_encode(leaf)));
    }
    let appended = write("appended.json", &appended);
    let out = pinned(&appended, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 entries after the last checkpoint are proven by no signature"),
        "{stderr}"
    );
    let out = pinned(&appended, &["--accept-unproven"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 entries after size 31"));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A rotation interval above 24 h from the legacy variable makes the binary exit non-zero
/// with an error naming the variable.
#[test]
fn rotation_interval_above_24h_is_refused_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[kms]\nkey_dir = \"{}\"\n",
            dir.path().join("keys").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_knhk-agent"))
        .args(["keys", "--config", config.to_str().unwrap(), "list"])
        .env("KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS", "25")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS"),
        "{stderr}"
    );
}

/// `EX_CONFIG` of sysexits: what the binary exits with on a refused configuration.
const EX_CONFIG: i32 = 78;

/// Run the binary with `args` and `env` plus `RUST_BACKTRACE=1`, killing it (and failing) if
/// it has not exited within 30 s: a configuration error must stop it before it serves.
fn agent_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knhk-agent"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    exit_of(cmd, &format!("knhk-agent {args:?}"))
}

/// Run `cmd` with `RUST_BACKTRACE=1`, no `RUST_LOG` and captured output, killing it (and
/// failing, naming `what`) if it has not exited within 30 s.
fn exit_of(mut cmd: Command, what: &str) -> Output {
    cmd.env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not exit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Check a configuration refusal: exit 78, exactly one stderr line, starting with
/// `knhk-agent: ` and naming `setting`, no backtrace; returns the line.
fn assert_config_refusal(out: &Output, setting: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {stderr:?}");
    assert!(lines[0].starts_with("knhk-agent: "), "{stderr}");
    assert!(lines[0].contains(setting), "names {setting}: {stderr}");
    assert!(
        !stderr.contains("Backtrace") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    lines[0].to_owned()
}

/// A directory holding only `agent.toml` (with `data_dir` inside it, not yet created).
fn config_dir(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n{toml}", data.display().to_string()),
    )
    .unwrap();
    (dir, config.to_str().unwrap().to_owned())
}

/// Nothing but `agent.toml` is in `dir`: no data dir, no keys, no database.
fn assert_untouched(dir: &Path) {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec!["agent.toml".to_owned()]);
}

/// A bad duration in the TOML stops `run` and `keys` with 78 and one line naming the setting,
/// the file and the line, without a backtrace even with RUST_BACKTRACE=1, before anything is
/// created.
#[test]
fn bad_duration_exits_78_with_one_line() {
    for (toml, setting) in [
        (
            "seal_interval = \"500\"\n",
            "invalid setting seal_interval: ",
        ),
        (
            "[kms]\nrotation_interval = \"1d\"\n",
            "invalid setting kms.rotation_interval: ",
        ),
        (
            "[policy]\nwatch_interval = \"1 s\"\n",
            "invalid setting policy.watch_interval: ",
        ),
    ] {
        let (dir, config) = config_dir(toml);
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &[],
        );
        let line = assert_config_refusal(&out, setting);
        assert!(line.contains("invalid duration"), "{line}");
        assert!(line.contains("agent.toml line "), "{line}");
        assert_untouched(dir.path());
        let out = agent_exit(&["keys", "--config", &config, "list"], &[]);
        assert_config_refusal(&out, setting);
        assert_untouched(dir.path());
    }
    // A value the grammar takes but the setting's range refuses is a configuration error too.
    let (dir, config) = config_dir("seal_interval = \"500ms\"\n");
    let out = agent_exit(
        &["run", "--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_config_refusal(
        &out,
        "invalid setting seal_interval: must be between 1s and 1h",
    );
    assert_untouched(dir.path());
}

/// A bad KGC_SIDECAR_* boolean exits 78 naming the variable and the value.
#[test]
fn bad_environment_boolean_exits_78_naming_the_variable() {
    let (dir, config) = config_dir("");
    for var in [
        "KGC_SIDECAR_SPIFFE_ENABLED",
        "KGC_SIDECAR_CROSS_REGION_SYNC_ENABLED",
        "KGC_SIDECAR_AUTO_ROLLBACK_ENABLED",
    ] {
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &[(var, "maybe")],
        );
        let line = assert_config_refusal(&out, &format!("invalid setting {var}: "));
        assert!(line.contains("\"maybe\""), "{line}");
        assert_untouched(dir.path());
    }
}

/// A bad `OTEL_*` variable or `[telemetry]` value exits 78 naming it, before anything is
/// written; a header's secret value never reaches stderr.
#[test]
fn bad_telemetry_settings_exit_78_naming_the_setting() {
    let (dir, config) = config_dir("");
    for (var, value, setting) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "thrift",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "collector:4318",
            "telemetry.endpoint",
        ),
        (
            "OTEL_METRIC_EXPORT_INTERVAL",
            "5s",
            "OTEL_METRIC_EXPORT_INTERVAL",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=s3cr3t-value,broken",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
    ] {
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &[(var, value)],
        );
        let line = assert_config_refusal(&out, &format!("invalid setting {setting}: "));
        assert!(!line.contains("s3cr3t"), "{line}");
        assert_untouched(dir.path());
    }
    let (dir, config) = config_dir("[telemetry]\nexport_interval = \"10ms\"\n");
    let out = agent_exit(
        &["run", "--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_config_refusal(&out, "invalid setting telemetry.export_interval: ");
    assert_untouched(dir.path());
}

/// A bad `[tiles]` value or `KNHK_TILES_URL` exits 78 naming the setting, before anything is
/// written; the AWS secret never reaches stderr.
#[test]
fn bad_tiles_settings_exit_78_naming_the_setting() {
    for (toml, env, setting) in [
        ("[tiles]\nurl = \"relative/dir\"\n", None, "tiles.url"),
        ("[tiles]\nurl = \"s3://Bad_Bucket/x\"\n", None, "tiles.url"),
        ("[tiles]\nurl = \"s3://bucket/../up\"\n", None, "tiles.url"),
        ("", Some("ftp://host/x"), "tiles.url"),
        (
            "[tiles]\nurl = \"s3://bucket/p\"\ns3_endpoint = \"localhost:9000\"\n",
            None,
            "tiles.s3_endpoint",
        ),
        (
            "[tiles]\nurl = \"/var/tiles\"\ns3_endpoint = \"http://127.0.0.1:9000\"\n",
            None,
            "tiles.s3_endpoint",
        ),
        (
            "[tiles]\nurl = \"s3://bucket/p\"\ns3_region = \"EU WEST\"\n",
            None,
            "tiles.s3_region",
        ),
    ] {
        let (dir, config) = config_dir(toml);
        let mut vars = vec![
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
        ];
        if let Some(url) = env {
            vars.push(("KNHK_TILES_URL", url));
        }
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &vars,
        );
        let line = assert_config_refusal(&out, &format!("invalid setting {setting}: "));
        assert!(!line.contains("s3cr3t"), "{line}");
        assert_untouched(dir.path());
    }
}

/// Nonsense in the older sidecar's SLO variables exits 78 naming the variable.
#[test]
fn bad_legacy_slo_settings_exit_78_naming_the_variable() {
    let (dir, config) = config_dir("");
    for (env, setting) in [
        (
            vec![("KGC_SIDECAR_SLO_R1_P99_MAX_NS", "0")],
            "KGC_SIDECAR_SLO_R1_P99_MAX_NS",
        ),
        (
            vec![("KGC_SIDECAR_SLO_ADMISSION_STRATEGY", "drop")],
            "KGC_SIDECAR_SLO_ADMISSION_STRATEGY",
        ),
        (
            vec![
                ("KGC_SIDECAR_SLO_W1_P99_MAX_MS", "500"),
                ("KGC_SIDECAR_SLO_C1_P99_MAX_MS", "100"),
            ],
            "KGC_SIDECAR_SLO_C1_P99_MAX_MS",
        ),
    ] {
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &env,
        );
        assert_config_refusal(&out, &format!("invalid setting {setting}: "));
        assert_untouched(dir.path());
    }
}

/// An unknown TOML field, at the top or in a table, exits 78 naming it.
#[test]
fn unknown_field_exits_78() {
    for (toml, setting) in [
        (
            "colour = 1\n",
            "invalid setting colour: unknown field `colour`",
        ),
        (
            "[kms]\nkeydir = \"/x\"\n",
            "invalid setting kms.keydir: unknown field",
        ),
    ] {
        let (dir, config) = config_dir(toml);
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &[],
        );
        assert_config_refusal(&out, setting);
        assert_untouched(dir.path());
    }
}

/// A missing config file is a configuration error: 78, one line naming the file, and the
/// default data directory is not created.
#[test]
fn missing_config_file_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let default_data = Path::new(knhk_agent::config::DEFAULT_DATA_DIR);
    let existed = default_data.exists();
    for args in [
        vec![
            "run",
            "--config",
            missing.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        vec!["keys", "--config", missing.to_str().unwrap(), "list"],
    ] {
        let out = agent_exit(&args, &[]);
        let line = assert_config_refusal(&out, missing.to_str().unwrap());
        assert!(line.contains("cannot read config file"), "{line}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(default_data.exists(), existed, "{}", default_data.display());
}

/// A failure that is not about configuration exits 1 with one `knhk-agent: error:` line and
/// no backtrace.
#[test]
fn other_failures_exit_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let out = agent_exit(
        &["verify", missing.to_str().unwrap(), "--trust-keys-in-file"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with("knhk-agent: error: reading "),
        "{stderr}"
    );
    assert!(!stderr.contains("acktrace"), "{stderr}");
}

/// `--peer-listen` without `[identity] enabled` is refused as configuration, before binding.
#[test]
fn peer_listener_without_identity_exits_78() {
    let (dir, config) = config_dir("");
    let out = agent_exit(
        &[
            "run",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_config_refusal(&out, "invalid setting identity.enabled: ");
    assert_untouched(dir.path());
}

/// An API address beyond loopback without an admin token is refused as configuration before
/// anything binds; on loopback the same config is accepted as far as the bind.
#[test]
fn non_loopback_api_without_a_token_exits_78() {
    let (dir, config) = config_dir("");
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = agent_exit(&["run", "--config", &config, "--listen", listen], &[]);
        let line = assert_config_refusal(&out, "invalid setting api.admin_token_file: ");
        assert!(line.contains("beyond loopback"), "{line}");
        assert_untouched(dir.path());
    }
    // With the admin token but no filter tokens, still refused: receipts decide rollouts.
    let secrets = tempfile::tempdir().unwrap();
    let admin = secrets.path().join("admin-token");
    std::fs::write(&admin, "a".repeat(40)).unwrap();
    let (dir, config) = config_dir(&format!("[api]\nadmin_token_file = {:?}\n", admin));
    let out = agent_exit(&["run", "--config", &config, "--listen", "0.0.0.0:0"], &[]);
    let line = assert_config_refusal(&out, "invalid setting api.filter_token_file: ");
    assert!(line.contains("beyond loopback"), "{line}");
    assert_untouched(dir.path());
}

/// A filter token file with a bad line, or no token, exits 78 naming the setting and the
/// line, never the file's content.
#[test]
fn bad_filter_token_file_exits_78() {
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("filter-tokens");
    for (content, want) in [
        (format!("{}\nleaky-short\n", "f".repeat(40)), "line 2"),
        ("# only a comment\n".to_owned(), "holds 0 tokens"),
    ] {
        std::fs::write(&file, &content).unwrap();
        let (dir, config) = config_dir(&format!("[api]\nfilter_token_file = {:?}\n", file));
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &[],
        );
        let line = assert_config_refusal(&out, "invalid setting api.filter_token_file: ");
        assert!(line.contains(want), "{line}");
        assert!(!line.contains("leaky") && !line.contains("ffff"), "{line}");
        assert_untouched(dir.path());
    }
}

/// A file-descriptor limit too low for `api.max_connections` (and not raisable: the hard
/// limit is lowered too) stops the start with exit 78 naming the setting.
#[test]
fn too_few_file_descriptors_exits_78() {
    let (dir, config) = config_dir("[api]\nmax_connections = 1024\n");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 200 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_knhk-agent"),
        "run",
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = exit_of(cmd, "knhk-agent under ulimit -n 200");
    let line = assert_config_refusal(&out, "invalid setting api.max_connections: ");
    assert!(
        line.contains("1280 file descriptors") && line.contains("200"),
        "{line}"
    );
    let _ = dir;
}

/// `validate-config` accepts a valid plugin configuration with a one-line summary, and refuses
/// an invalid one with exit 1 naming the field, as the filter would.
#[test]
fn validate_config_uses_the_filters_validator() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"version":4,"routing":{"canary_basis_points":250}}"#,
    )
    .unwrap();
    let out = agent_exit(&["validate-config", good.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("valid: version 4, canary 250 bp"),
        "{stdout}"
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"routing":{"canary_basis_points":10001}}"#).unwrap();
    let out = agent_exit(&["validate-config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routing.canary_basis_points"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Bad AWS KMS settings exit 78 naming the variable: a region for another provider, a
/// malformed region, an AWS managed alias.
#[test]
fn bad_aws_kms_settings_exit_78_naming_the_variable() {
    let (dir, config) = config_dir("");
    for (env, setting) in [
        (
            vec![("KGC_SIDECAR_KMS_REGION", "eu-west-1")],
            "KGC_SIDECAR_KMS_REGION",
        ),
        (
            vec![
                ("KGC_SIDECAR_KMS_PROVIDER", "aws"),
                ("KGC_SIDECAR_KMS_REGION", "west"),
            ],
            "KGC_SIDECAR_KMS_REGION",
        ),
        (
            vec![
                ("KGC_SIDECAR_KMS_PROVIDER", "aws"),
                ("KGC_SIDECAR_KMS_KEY_ID", "alias/aws/ebs"),
            ],
            "KGC_SIDECAR_KMS_KEY_ID",
        ),
    ] {
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &env,
        );
        assert_config_refusal(&out, &format!("invalid setting {setting}: "));
        assert_untouched(dir.path());
    }
}

/// `knhk-agent keys` on AWS KMS (a real moto server), with credentials and endpoint from the
/// SDK's standard environment variables: `list` creates the key family on first use, `rotate`
/// adds version 2, and both versions are listed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_aws_kms_through_the_standard_credential_chain() {
    let Some(moto) = support::Moto::start().await else {
        return;
    };
    let (_dir, config) = config_dir("");
    let endpoint = moto.endpoint();
    let env = [
        ("KGC_SIDECAR_KMS_PROVIDER", "aws"),
        ("KGC_SIDECAR_KMS_REGION", "eu-west-1"),
        ("KGC_SIDECAR_KMS_KEY_ID", "alias/knhk-cli"),
        ("AWS_ACCESS_KEY_ID", "AKIAKNHKCLI"),
        ("AWS_SECRET_ACCESS_KEY", "knhk-cli-secret"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let keys = |action: &str| {
        let out = agent_exit(&["keys", "--config", &config, action], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "keys {action}: {stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let listed = keys("list");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["provider"], "aws");
    assert_eq!(listed[0]["key_id"], "alias/knhk-cli");
    assert_eq!(listed[0]["alg"], "ecdsa-p256");
    let rotated = keys("rotate");
    assert_eq!(rotated["version"], 2, "{rotated}");
    let versions: Vec<u64> = keys("list")
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
}

/// Bad Azure Key Vault settings exit 78 naming the setting: a plain-http vault URL, a client
/// secret without its tenant, a CA file that does not exist, an Azure-only setting for
/// another provider.
#[test]
fn bad_azure_key_vault_settings_exit_78_naming_the_setting() {
    let azure = [
        ("KGC_SIDECAR_KMS_PROVIDER", "azure"),
        ("KGC_SIDECAR_KMS_VAULT_URL", "https://knhk.vault.azure.net"),
    ];
    for (toml, extra, setting) in [
        (
            "",
            vec![("KGC_SIDECAR_KMS_VAULT_URL", "http://knhk.vault.azure.net")],
            "KGC_SIDECAR_KMS_VAULT_URL",
        ),
        (
            "",
            vec![
                ("AZURE_CLIENT_ID", "app"),
                ("AZURE_CLIENT_SECRET", "s3cret"),
            ],
            "AZURE_TENANT_ID",
        ),
        (
            "[kms]\nazure_ca_file = \"/nonexistent/ca.pem\"\n",
            vec![],
            "kms.azure_ca_file",
        ),
        (
            "",
            vec![(
                "KGC_SIDECAR_KMS_KEY_ID",
                "https://other.vault.azure.net/keys/cp",
            )],
            "KGC_SIDECAR_KMS_KEY_ID",
        ),
    ] {
        let (dir, config) = config_dir(toml);
        let mut env = azure.to_vec();
        env.extend(extra);
        let out = agent_exit(
            &["run", "--config", &config, "--listen", "127.0.0.1:0"],
            &env,
        );
        let line = assert_config_refusal(&out, &format!("invalid setting {setting}: "));
        assert!(!line.contains("s3cret"), "{line}");
        assert_untouched(dir.path());
    }
    let (dir, config) = config_dir("[kms]\nazure_credential = \"client_secret\"\n");
    let out = agent_exit(
        &["run", "--config", &config, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_config_refusal(&out, "invalid setting kms.azure_credential: ");
    assert_untouched(dir.path());
}

/// `knhk-agent keys` on Azure Key Vault (the Key Vault test double), authenticated as the App
/// Service managed identity through `IDENTITY_ENDPOINT` / `IDENTITY_HEADER`, the SDK's own
/// variables: `list` creates the key on first use, `rotate` adds version 2 (a new Key Vault
/// version), and both are listed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_azure_key_vault_as_a_managed_identity() {
    use knhk_e2e::azure_keyvault::{KeyVaultDouble, Perm};
    let kv = KeyVaultDouble::start().await.unwrap();
    let (endpoint, header) = kv.managed_identity(&Perm::ALL);
    let (_dir, config) = config_dir(&format!(
        "[kms]\nazure_credential = \"managed_identity\"\nazure_ca_file = {:?}\n# the double's host is not under the audience its challenge names\nazure_verify_challenge_resource = false\n",
        kv.ca_file.display().to_string(),
    ));
    let env = [
        ("KGC_SIDECAR_KMS_PROVIDER", "azure"),
        ("KGC_SIDECAR_KMS_VAULT_URL", kv.vault_url.as_str()),
        ("KGC_SIDECAR_KMS_KEY_ID", "knhk-cli"),
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", header.as_str()),
    ];
    let keys = |action: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_knhk-agent"));
        cmd.args(["keys", "--config", &config, action]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        for k in [
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_FEDERATED_TOKEN_FILE",
        ] {
            cmd.env_remove(k);
        }
        let out = exit_of(cmd, &format!("knhk-agent keys {action}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "keys {action}: {stderr}; requests {:?}",
            kv.requests()
        );
        assert!(
            !stderr.contains(&header),
            "the identity header stays out of logs"
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let listed = keys("list");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["provider"], "azure");
    assert_eq!(
        listed[0]["key_id"],
        format!("{}/keys/knhk-cli", kv.vault_url)
    );
    assert_eq!(listed[0]["alg"], "ecdsa-p256");
    let rotated = keys("rotate");
    assert_eq!(rotated["version"], 2, "{rotated}");
    let versions: Vec<u64> = keys("list")
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(kv.versions("knhk-cli").len(), 2, "two Key Vault versions");
    assert!(
        kv.requests()
            .iter()
            .any(|r| r.starts_with("GET /msi/token")),
        "the managed identity endpoint was used: {:?}",
        kv.requests()
    );
}
