//! The real agent with OpenBao Transit as its KMS, behind the real Envoy and filter: configs
//! and checkpoints are signed by Transit keys, the checkpoint key is rotated mid-stream, later
//! checkpoints are signed by the new version, and `knhk-agent verify` passes the exported log
//! (also against a trust file taken before the rotation) and fails on each tampering with a
//! clear reason.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use knhk_core::checkpoint::{Checkpoint, PublicKeyVersion};
use knhk_e2e::agent::AgentProcess;
use knhk_e2e::client::Client;
use knhk_e2e::load::{Load, LoadStats};
use knhk_e2e::openbao::Bao;
use knhk_e2e::paths;
use knhk_e2e::rig::{base_config, control_section, ControlledRig};
use knhk_e2e::wait::poll;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// The Transit key that signs checkpoints (set through the legacy variable).
const KEY: &str = "e2e-checkpoints";
/// Receipts each key version must seal before the test moves on.
const PER_VERSION: u64 = 150;

/// Run the real `knhk-agent` binary with `args` and `env`.
async fn agent_cli(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(paths::agent().unwrap())
            .args(&args)
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn path_arg(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// `knhk-agent verify <file> --trusted-keys <trust>`, or `--trust-keys-in-file` without one.
async fn verify(file: &Path, trust: Option<&Path>) -> Output {
    let mut args = vec!["verify".to_owned(), path_arg(file)];
    match trust {
        Some(t) => args.extend(["--trusted-keys".to_owned(), path_arg(t)]),
        None => args.push("--trust-keys-in-file".to_owned()),
    }
    agent_cli(args, Vec::new()).await
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The newest checkpoint: tree size and the signing key version.
async fn latest(agent: &AgentProcess) -> anyhow::Result<(u64, u64)> {
    let cp: Value = serde_json::from_slice(&agent.get_bytes("/v1/checkpoints/latest").await?)?;
    let size = Checkpoint::parse(cp["text"].as_str().unwrap_or_default())?.tree_size;
    let version = cp["signature"]["key_version"].as_u64().unwrap_or(0);
    Ok((size, version))
}

/// Wait until a checkpoint signed by `version` covers more than `beyond` leaves.
async fn sealed_by(agent: &AgentProcess, version: u64, beyond: u64) -> u64 {
    poll(
        &format!("a checkpoint signed by v{version} beyond size {beyond}"),
        WAIT,
        || async {
            let (size, v) = latest(agent).await?;
            Ok((v == version && size > beyond).then_some(size))
        },
    )
    .await
    .unwrap()
}

/// Write `export` with `tamper` applied to `dir/<name>.json` and run `verify` on it; it must
/// exit 1 and give a reason containing `expect`.
async fn assert_refused(
    dir: &Path,
    export: &Value,
    name: &str,
    expect: &str,
    tamper: impl FnOnce(&mut Value),
) {
    let mut bad = export.clone();
    tamper(&mut bad);
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = verify(&file, None).await;
    let stderr = text(&out.stderr);
    println!(
        "tampered ({name}): exit {:?}: {}",
        out.status.code(),
        stderr.trim()
    );
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert!(
        stderr.contains("verification FAILED") && stderr.contains(expect),
        "{name}: expected {expect:?} in {stderr}"
    );
}

/// Index of the first checkpoint signed by `version`.
fn checkpoint_by(export: &Value, version: u64) -> usize {
    export["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .position(|cp| cp["signature"]["key_version"].as_u64() == Some(version))
        .unwrap_or_else(|| panic!("no checkpoint signed by v{version}"))
}

/// Transit-signed configs and checkpoints under live traffic; a mid-stream rotation of the
/// checkpoint key; an honest export verifies (also against pre-rotation trust) and every
/// tampering is refused with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_checkpoints_rotate_mid_stream_and_verify_offline() {
    let dir: PathBuf = paths::scratch_dir()
        .join("e2e")
        .join(format!("kms-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bao = Bao::start(&dir.join("bao")).await.unwrap();

    // Provider from the file; address, key id and token from the older sidecar's variables.
    let env: Vec<(String, String)> = vec![
        ("KGC_SIDECAR_KMS_VAULT_URL".into(), bao.addr().into()),
        ("KGC_SIDECAR_KMS_KEY_ID".into(), KEY.into()),
        ("VAULT_TOKEN".into(), bao.token().into()),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&**k, &**v)).collect();
    let agent = AgentProcess::start_with(
        &dir.join("agent"),
        None,
        "[kms]\nprovider = \"transit\"\n",
        &env_refs,
    )
    .await
    .unwrap();
    let key = bao.transit_key(KEY).await.unwrap();
    assert_eq!(key["type"], "ed25519", "the agent created {KEY}: {key}");
    assert_eq!(key["latest_version"], 1);

    // The operator's trust file, taken before any rotation.
    let config = path_arg(&agent.config_path());
    let listed = agent_cli(
        vec![
            "keys".into(),
            "--config".into(),
            config.clone(),
            "list".into(),
        ],
        env.clone(),
    )
    .await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let trusted: Vec<PublicKeyVersion> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        trusted
            .iter()
            .map(|k| (k.provider.as_str(), k.key_id.as_str(), k.version))
            .collect::<Vec<_>>(),
        [("transit", KEY, 1)]
    );
    let trust_file = dir.join("trusted-before-rotation.json");
    std::fs::write(&trust_file, &listed.stdout).unwrap();

    // Configs are signed by a Transit key too; the filter trusts it statically.
    let epoch = agent.put_policy(&base_config()).await.unwrap();
    let config_keys = agent.config_keys().await.unwrap();
    assert!(
        config_keys.iter().all(|k| k.provider == "transit"),
        "{config_keys:?}"
    );
    let mut static_config = base_config();
    static_config["control"] = control_section(&config_keys);
    let rig = ControlledRig::start("kms", &static_config, agent.port())
        .await
        .unwrap();
    let (envoy, client) = (&rig.envoy, &rig.client);
    let want = epoch.to_string();
    poll("the Transit-signed epoch to be applied", WAIT, || async {
        let reply = client.get("/api", &[("x-user-id", "probe")]).await?;
        let d = reply.decision().unwrap_or_default();
        Ok((d.get("version") == Some(want.as_str())).then_some(()))
    })
    .await
    .unwrap();

    // Traffic: receipts flow and are sealed by version 1.
    let load = Load::start(
        Client::new(&envoy.base_url()).unwrap(),
        4,
        Duration::from_millis(5),
        |n| {
            (
                "/api".to_string(),
                vec![("x-user-id".to_string(), format!("kms-{n}"))],
            )
        },
    );
    let before = sealed_by(&agent, 1, PER_VERSION).await;

    // Rotate mid-stream with the agent's own command, while the agent runs.
    let rotated = agent_cli(
        vec!["keys".into(), "--config".into(), config, "rotate".into()],
        env.clone(),
    )
    .await;
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let new_key: PublicKeyVersion = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(new_key.version, 2);
    assert_eq!(bao.latest_version(KEY).await.unwrap(), 2);

    // Later checkpoints are signed by the new version while traffic continues; the agent
    // adopted the version it did not create with a logged handover signed by version 1.
    let after = sealed_by(&agent, 2, before + PER_VERSION).await;
    assert!(
        agent
            .log()
            .contains("signing key version created outside the agent; logging the handover"),
        "the agent did not log the adoption of version 2"
    );
    let stats = load.stop().await;
    assert_eq!(LoadStats::get(&stats.errors), 0, "no transport errors");
    assert_eq!(LoadStats::get(&stats.status_5xx), 0, "no 5xx");
    let sealed = poll("the log to be fully sealed", WAIT, || async {
        let (size, _) = latest(&agent).await?;
        let acknowledged = envoy.counter("knhk_receipts_sent").await?;
        Ok(
            (size >= after && size == agent.log_size().await? && size >= acknowledged)
                .then_some(size),
        )
    })
    .await
    .unwrap();

    // An export proves only what its checkpoints cover (verify fails on an unproven tail):
    // take one whose last checkpoint covers every entry, as the sealer makes it within
    // seal_interval once the filter's last receipts are in.
    let raw = poll("an export sealed to its last entry", WAIT, || async {
        let raw = agent.get_bytes("/v1/log/export").await?;
        let export: Value = serde_json::from_slice(&raw)?;
        let entries = export["entries"].as_array().map_or(0, Vec::len);
        let covered = export["checkpoints"]
            .as_array()
            .and_then(|c| c.last())
            .and_then(|c| c["text"].as_str())
            .and_then(|t| t.lines().nth(1))
            .and_then(|size| size.parse::<usize>().ok());
        Ok((covered == Some(entries)).then_some(raw))
    })
    .await
    .unwrap();
    let export_file = dir.join("export.json");
    std::fs::write(&export_file, &raw).unwrap();
    let export: Value = serde_json::from_slice(&raw).unwrap();
    let versions: Vec<u64> = export["public_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["key_id"] == KEY)
        .filter_map(|k| k["version"].as_u64())
        .collect();
    println!(
        "export: {} entries, {} checkpoints, sealed size {sealed}, checkpoint key versions {versions:?}",
        export["entries"].as_array().unwrap().len(),
        export["checkpoints"].as_array().unwrap().len(),
    );

    let honest = verify(&export_file, None).await;
    assert!(
        honest.status.success(),
        "honest export refused: {}{}",
        text(&honest.stdout),
        text(&honest.stderr)
    );
    println!("verify (keys from the file):\n{}", text(&honest.stdout));
    let pinned = verify(&export_file, Some(&trust_file)).await;
    assert!(
        pinned.status.success(),
        "honest export refused against the pre-rotation trust file: {}{}",
        text(&pinned.stdout),
        text(&pinned.stderr)
    );
    assert!(
        text(&pinned.stdout).contains("1 key rotation(s); 2 signing key version(s) used"),
        "{}",
        text(&pinned.stdout)
    );

    // A receipt byte (its key digest) changed in a sealed leaf.
    assert_refused(&dir, &export, "receipt-byte", "entries were altered", |e| {
        let leaf = &mut e["entries"][1];
        let mut bytes = STANDARD.decode(leaf.as_str().unwrap()).unwrap();
        bytes[12] ^= 0x01;
        *leaf = STANDARD.encode(bytes).into();
    })
    .await;
    // One bit of a checkpoint signature made by the new version.
    let v2 = checkpoint_by(&export, 2);
    assert_refused(
        &dir,
        &export,
        "v2-signature",
        &format!("checkpoint {v2} signature is invalid"),
        |e| {
            let sig = &mut e["checkpoints"][v2]["signature"]["sig"];
            let mut bytes = STANDARD.decode(sig.as_str().unwrap()).unwrap();
            bytes[0] ^= 0x80;
            *sig = STANDARD.encode(bytes).into();
        },
    )
    .await;
    // The last checkpoint signed by version 1, relabelled as version 2 after the rotation.
    let old = v2 - 1;
    assert_eq!(export["checkpoints"][old]["signature"]["key_version"], 1);
    assert_refused(
        &dir,
        &export,
        "old-checkpoint-relabelled",
        &format!("checkpoint {old} signature is invalid"),
        |e| e["checkpoints"][old]["signature"]["key_version"] = 2.into(),
    )
    .await;
    // An old checkpoint's timestamp rewritten after the rotation.
    assert_refused(
        &dir,
        &export,
        "old-checkpoint-text",
        &format!("checkpoint {old} signature is invalid"),
        |e| {
            let cp = &mut e["checkpoints"][old]["text"];
            let text = cp.as_str().unwrap();
            let (head, ts) = text.trim_end().rsplit_once("timestamp_ns ").unwrap();
            let ts: u64 = ts.parse().unwrap();
            *cp = format!("{head}timestamp_ns {}\n", ts + 1).into();
        },
    )
    .await;
    // Version 1 removed: the checkpoints it signed can no longer be checked.
    assert_refused(
        &dir,
        &export,
        "v1-key-removed",
        &format!(
            "checkpoint 0 signature is invalid: no public key for transit key {KEY} version 1"
        ),
        |e| {
            e["public_keys"]
                .as_array_mut()
                .unwrap()
                .retain(|k| !(k["key_id"] == KEY && k["version"] == 1));
        },
    )
    .await;
    drop((envoy, agent, bao));
    let _ = std::fs::remove_dir_all(&dir);
}
