//! The log published as C2SP tlog-tiles: tiles in a directory match the agent's own proof
//! bundles byte for byte as the log grows past tile levels and is pruned; on moto's real S3
//! server, `knhk-agent verify --tiles` accepts the honest log an in-process agent published and
//! rejects a tampered tile, a missing tile, an untrusted key and a checkpoint without its
//! quorum.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::kms::local::LocalSigner;
use knhk_agent::kms::Signer as _;
use knhk_agent::receipts::ReceiptLog;
use knhk_agent::tiles::audit::{self, TilesCheck};
use knhk_agent::tiles::config::{Destination, S3Credentials};
use knhk_agent::tiles::store::TileStore;
use knhk_agent::tiles::{Publisher, TilesConfig};
use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::receipt::{encode_origin_batch, Origin, Receipt, ReceiptBuilder};
use knhk_core::tiles::note;
use knhk_core::tiles::read::Tiles;
use support::in_process::InProcessAgent;
use support::regions::Regions;
use support::{rand_u64, Moto};

fn receipts(from: u64, n: u64) -> Vec<Receipt> {
    (from..from + n)
        .map(|i| ReceiptBuilder::new(i).build())
        .collect()
}

fn origin() -> Origin {
    Origin {
        pod: "checkout-7d9f".to_owned(),
        namespace: "shop".to_owned(),
        node: "node-a".to_owned(),
    }
}

/// For each of `indexes`: the bundle rebuilt from the published tiles equals, as JSON bytes,
/// the bundle the agent serves for it against the same (newest) checkpoint.
async fn assert_tiles_match_agent(log: &ReceiptLog, store: &TileStore, indexes: &[u64]) {
    let trusted = log.reader().unwrap().public_keys().unwrap();
    let text = String::from_utf8(store.get("checkpoint").await.unwrap().unwrap()).unwrap();
    let opened = note::open(&text, &trusted).unwrap();
    assert_eq!(
        opened.checkpoint,
        log.latest_checkpoint().unwrap().unwrap(),
        "the published note carries the newest checkpoint exactly as signed"
    );
    let mut tiles = Tiles::new(opened.parsed.tree_size);
    for &i in indexes {
        let from_tiles = audit::resolve(&mut tiles, store, |t| t.proof_bundle(&opened, i))
            .await
            .unwrap();
        let served = log.proof_bundle(i).unwrap();
        assert_eq!(
            serde_json::to_string(&from_tiles).unwrap(),
            serde_json::to_string(&served).unwrap(),
            "leaf {i}"
        );
    }
}

async fn audit_of(store: &TileStore, trusted: &[PublicKeyVersion]) -> knhk_core::verify::Verdict {
    audit::check(
        store,
        &TilesCheck {
            trusted: trusted.to_vec(),
            quorum: None,
            index: None,
        },
    )
    .await
}

#[tokio::test]
async fn directory_tiles_match_the_agents_proofs_as_the_log_grows_and_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(LocalSigner::open(&dir.path().join("keys"), "checkpoint").unwrap());
    let log = Arc::new(
        ReceiptLog::open(&dir.path().join("receipts.db"), "knhk.test/tiles", signer)
            .await
            .unwrap(),
    );
    let out = dir.path().join("published");
    let store = TileStore::open(
        &Destination::Directory(out.clone()),
        None,
        "us-east-1",
        None,
    )
    .unwrap();
    let publisher = Publisher::new(log.clone(), store.clone(), None);
    assert_eq!(
        publisher.publish().await.unwrap(),
        None,
        "nothing sealed yet"
    );

    // One batch naming its pod: origin leaf 0, receipts 1..=300.
    let batch = encode_origin_batch(&origin(), &receipts(0, 300)).unwrap();
    log.append_batch_from(&batch, "10.1.2.3").unwrap();
    log.seal(1).await.unwrap();
    assert_eq!(publisher.publish().await.unwrap(), Some(301));
    assert!(out.join("tile/0/000").is_file() && out.join("tile/0/001.p/45").is_file());
    assert!(out.join("tile/entries/001.p/45").is_file() && out.join("tile/1/000.p/1").is_file());
    assert_tiles_match_agent(&log, &store, &[0, 1, 255, 256, 300]).await;

    // Past 65,536 leaves: full level-1 tile, a level-2 tile.
    for from in 0..4 {
        let batch = encode_origin_batch(&origin(), &receipts(300 + from * 16_384, 16_384)).unwrap();
        log.append_batch_from(&batch, "10.1.2.3").unwrap();
    }
    log.seal(2).await.unwrap();
    let size = 301 + 4 * 16_385;
    assert_eq!(publisher.publish().await.unwrap(), Some(size));
    assert!(out.join("tile/1/000").is_file() && out.join("tile/2/000.p/1").is_file());
    assert!(
        !out.join("tile/0/000.p").exists(),
        "a full tile is never written partial first when it was already full"
    );
    assert_tiles_match_agent(&log, &store, &[1, 301, 302, 65_535, 65_536, size - 1]).await;
    let trusted = log.reader().unwrap().public_keys().unwrap();
    let verdict = audit_of(&store, &trusted).await;
    assert!(verdict.ok, "{verdict:?}");
    assert!(
        verdict
            .lines
            .iter()
            .any(|l| l.contains(&format!("{size} entries (0 pruned"))),
        "{verdict:?}"
    );

    // Retention prunes two receipts: their bundle is rewritten without the payloads.
    assert_eq!(log.prune(&[5, 6]).unwrap(), 2);
    assert_eq!(publisher.publish().await.unwrap(), Some(size));
    let bundle = std::fs::read(out.join("tile/entries/000")).unwrap();
    let entries = knhk_core::tiles::bundle::decode(
        knhk_core::tiles::layout::tile_for(0, 0, size).unwrap(),
        &bundle,
    )
    .unwrap();
    assert!(entries[5].is_empty() && entries[6].is_empty() && !entries[7].is_empty());
    let verdict = audit_of(&store, &trusted).await;
    assert!(verdict.ok, "{verdict:?}");
    assert!(
        verdict.lines.iter().any(|l| l.contains("(2 pruned")),
        "{verdict:?}"
    );
    let text = String::from_utf8(store.get("checkpoint").await.unwrap().unwrap()).unwrap();
    let opened = note::open(&text, &trusted).unwrap();
    let mut tiles = Tiles::new(size);
    let pruned = audit::resolve(&mut tiles, &store, |t| t.proof_bundle(&opened, 5)).await;
    assert!(pruned.unwrap_err().to_string().contains("pruned"));

    // A restarted publisher resumes from the published note, and marks pruned bundles again.
    drop(publisher);
    let more = encode_origin_batch(&origin(), &receipts(70_000, 10)).unwrap();
    log.append_batch_from(&more, "10.1.2.3").unwrap();
    log.seal(3).await.unwrap();
    std::fs::write(out.join("tile/entries/000"), &bundle).unwrap();
    let again = Publisher::new(log.clone(), store.clone(), None);
    assert_eq!(again.publish().await.unwrap(), Some(size + 11));
    assert_tiles_match_agent(&log, &store, &[1, size, size + 10]).await;
    assert!(audit_of(&store, &trusted).await.ok);

    // A destination holding another log is refused, not overwritten.
    let other_dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(LocalSigner::open(&other_dir.path().join("keys"), "checkpoint").unwrap());
    let other = Arc::new(
        ReceiptLog::open(&other_dir.path().join("r.db"), "knhk.test/other", signer)
            .await
            .unwrap(),
    );
    other
        .append_batch(&encode_origin_batch(&origin(), &receipts(0, 3)).unwrap())
        .unwrap();
    other.seal(1).await.unwrap();
    let refused = Publisher::new(other, store.clone(), None).publish().await;
    assert!(refused.unwrap_err().to_string().contains("not a prefix"));
    assert!(
        audit_of(&store, &trusted).await.ok,
        "the refused publisher wrote nothing"
    );
}

/// moto's S3 bucket created with an unsigned request (moto does not enforce IAM here).
async fn create_bucket(moto: &Moto, bucket: &str) {
    let r = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
}

/// Delete `key` from `bucket` with a signed request, as an operator (or attacker) would.
async fn delete_object(moto: &Moto, bucket: &str, key: &str) {
    use object_store::ObjectStore as _;
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    store
        .delete(&object_store::path::Path::from(key))
        .await
        .unwrap();
}

const ACCESS_KEY: &str = "AKIAKNHKTESTTILES";
const SECRET_KEY: &str = "knhk-test-secret-not-used-by-moto";

fn credentials() -> S3Credentials {
    S3Credentials {
        access_key_id: ACCESS_KEY.to_owned(),
        secret_access_key: SECRET_KEY.to_owned(),
        session_token: None,
    }
}

fn verify_cli(moto: &Moto, args: &[&str]) -> Output {
    let endpoint = moto.endpoint();
    run_verify(&[args, &["--s3-endpoint", endpoint.as_str()]].concat())
}

/// `knhk-agent verify ARGS`, with S3 credentials in the environment.
fn run_verify(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knhk-agent"));
    cmd.arg("verify")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("RUST_LOG");
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The verify run passed and printed `needle` on stdout.
fn assert_passes(out: &Output, needle: &str) {
    assert!(out.status.success(), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(needle),
        "{}",
        text(out)
    );
}

/// The verify run failed (exit 1) with `needle` in its reason on stderr.
fn assert_refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(needle),
        "{}",
        text(out)
    );
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> String {
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn verify_tiles_on_moto_s3_accepts_the_honest_log_and_rejects_tampering() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let bucket = format!("knhk-tiles-{}", rand_u64() % 1_000_000);
    create_bucket(&moto, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig {
        origin: "knhk.test/s3".into(),
        data_dir: dir.path().join("data"),
        seal_interval: Duration::from_secs(1),
        ..AgentConfig::default()
    };
    config.kms.key_dir = Some(dir.path().join("keys"));
    config.tiles = TilesConfig {
        url: Some(format!("s3://{bucket}/eu-west-1")),
        s3_endpoint: Some(moto.endpoint()),
        s3_credentials: Some(credentials()),
        ..TilesConfig::default()
    };
    let key_id = config.kms.key_id.clone();
    let agent =
        InProcessAgent::start(config, reqwest::Client::new(), "/v1/checkpoints/latest").await;
    let trusted = LocalSigner::open(&dir.path().join("keys"), &key_id)
        .unwrap()
        .public_keys()
        .await
        .unwrap();
    let trusted_file = write_json(&dir.path().join("trusted.json"), &trusted);
    let body = encode_origin_batch(&origin(), &receipts(0, 600)).unwrap();
    let posted = agent
        .http
        .post(agent.url("/v1/receipts"))
        .header("content-type", "application/x-knhk-receipts")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());

    // The sealer seals within a second; the publisher follows. Poll the bucket itself.
    let url = format!("s3://{bucket}/eu-west-1");
    let s3 = TileStore::open(
        &Destination::parse(&url).unwrap(),
        Some(&moto.endpoint()),
        "us-east-1",
        Some(&credentials()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let note = s3.get("checkpoint").await.unwrap().unwrap_or_default();
        if String::from_utf8_lossy(&note).lines().nth(1) == Some("601") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of 601 leaves in the bucket:\n{}",
            moto.inner.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let honest = verify_cli(&moto, &["--tiles", &url, "--trusted-keys", &trusted_file]);
    assert_passes(&honest, "601 entries (0 pruned");
    let one = verify_cli(
        &moto,
        &[
            "--tiles",
            &url,
            "--index",
            "512",
            "--trusted-keys",
            &trusted_file,
        ],
    );
    assert_passes(&one, "shop/checkout-7d9f");
    // The bundle rebuilt from S3 is the one the agent serves.
    let served: serde_json::Value = agent.get_json("/v1/receipts/512/proof").await;
    let note_text = String::from_utf8(s3.get("checkpoint").await.unwrap().unwrap()).unwrap();
    let opened = note::open(&note_text, &trusted).unwrap();
    let mut tiles = Tiles::new(opened.parsed.tree_size);
    let rebuilt = audit::resolve(&mut tiles, &s3, |t| t.proof_bundle(&opened, 512))
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(&rebuilt).unwrap(), served);

    // A checkpoint without its quorum: two signatures required, only the log's present.
    let witness = knhk_core::cosignature::WitnessKey {
        name: "knhk.test/witness/us".to_owned(),
        public_key: vec![7; 32],
    };
    let witnesses = write_json(&dir.path().join("witnesses.json"), &vec![witness]);
    let no_quorum = verify_cli(
        &moto,
        &[
            "--tiles",
            &url,
            "--trusted-keys",
            &trusted_file,
            "--quorum",
            "2",
            "--witness-keys",
            &witnesses,
        ],
    );
    assert_refused(&no_quorum, "quorum");

    // An untrusted log key.
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = LocalSigner::open(stranger_dir.path(), "checkpoint")
        .unwrap()
        .public_keys()
        .await
        .unwrap();
    let stranger_file = write_json(&dir.path().join("stranger.json"), &stranger);
    let untrusted = verify_cli(&moto, &["--tiles", &url, "--trusted-keys", &stranger_file]);
    assert_refused(&untrusted, "trusted log key");

    // A tampered tile, then a missing one (restored in between).
    let tile = "tile/0/001";
    let good = s3.get(tile).await.unwrap().unwrap();
    assert_eq!(good.len(), 256 * 32);
    let mut bad = good.clone();
    bad[100] ^= 1;
    s3.put(tile, bad).await.unwrap();
    let tampered = verify_cli(&moto, &["--tiles", &url, "--trusted-keys", &trusted_file]);
    assert_refused(&tampered, "root");
    let tampered_one = verify_cli(
        &moto,
        &[
            "--tiles",
            &url,
            "--index",
            "300",
            "--trusted-keys",
            &trusted_file,
        ],
    );
    assert_eq!(
        tampered_one.status.code(),
        Some(1),
        "{}",
        text(&tampered_one)
    );
    s3.put(tile, good).await.unwrap();
    assert!(
        verify_cli(&moto, &["--tiles", &url, "--trusted-keys", &trusted_file])
            .status
            .success()
    );
    delete_object(&moto, &bucket, &format!("eu-west-1/{tile}")).await;
    let missing = verify_cli(&moto, &["--tiles", &url, "--trusted-keys", &trusted_file]);
    assert_refused(&missing, "missing tile/0/001");
    agent.stop().await;
}

#[tokio::test]
async fn with_a_quorum_the_committed_checkpoint_is_published_with_its_cosignatures() {
    let published = tempfile::tempdir().unwrap();
    let url = format!("file://{}", published.path().display());
    let regions = Regions::start_with(&["eu", "us"], 2, |name, config| {
        if name == "eu" {
            config.tiles.url = Some(url.clone());
        }
    })
    .await;
    let size = regions.post("eu", 0..40).await;
    regions.wait_committed("eu", size).await;
    let note_path = published.path().join("checkpoint");
    let deadline = Instant::now() + Duration::from_secs(30);
    let note_text = loop {
        let text = std::fs::read_to_string(&note_path).unwrap_or_default();
        let covered = text
            .lines()
            .nth(1)
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|s| s >= size);
        // The log's own signature line and at least one cosignature line.
        if covered && text.matches('\u{2014}').count() >= 2 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no committed checkpoint of {size} leaves with a cosignature was published: {text:?}\n{}",
            regions.describe().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let eu = &regions.regions[regions.index("eu")];
    let us = &regions.regions[regions.index("us")];
    let dir = tempfile::tempdir().unwrap();
    let trusted = write_json(&dir.path().join("trusted.json"), &eu.log_keys);
    let witnesses = write_json(
        &dir.path().join("witnesses.json"),
        &vec![us.witness.clone()],
    );
    let opened = note::open(&note_text, &eu.log_keys).unwrap();
    assert_eq!(opened.cosignatures.len(), 1, "{note_text}");
    for args in [
        vec![
            "--tiles",
            &url,
            "--trusted-keys",
            &trusted,
            "--quorum",
            "2",
            "--witness-keys",
            &witnesses,
        ],
        vec![
            "--tiles",
            &url,
            "--index",
            "7",
            "--trusted-keys",
            &trusted,
            "--quorum",
            "2",
            "--witness-keys",
            &witnesses,
        ],
    ] {
        let out = run_verify(&args);
        assert_passes(&out, "quorum met: 2 of the 2");
    }
    let three = run_verify(&[
        "--tiles",
        &url,
        "--trusted-keys",
        &trusted,
        "--quorum",
        "3",
        "--witness-keys",
        &witnesses,
    ]);
    assert_eq!(three.status.code(), Some(1), "{}", text(&three));
}
