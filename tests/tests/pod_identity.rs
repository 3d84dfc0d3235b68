//! Which pod decided, end to end through the real Envoy (wasm or native, as the run selects):
//! the filter reads the pod identity from Envoy's environment, every batch names it, the
//! agent writes a batch origin leaf before the batch's receipts, a receipt's proof bundle
//! carries that leaf with its own inclusion proof, and `knhk-agent verify` names the pod.

use std::time::Duration;

use knhk_e2e::agent::AgentProcess;
use knhk_e2e::paths;
use knhk_e2e::rig::{base_config, control_section, ControlledRig};
use knhk_e2e::wait::poll;

const WAIT: Duration = Duration::from_secs(30);
const POD: &str = "checkout-7d4f9-x2k8p";
const NAMESPACE: &str = "shop";
const NODE: &str = "node-a.internal";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_name_the_pod_that_decided() {
    let dir = paths::scratch_dir()
        .join("e2e")
        .join(format!("pod-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let agent = AgentProcess::start(&dir, None).await.unwrap();
    let policy = base_config();
    agent.put_policy(&policy).await.unwrap();
    let mut config = policy.clone();
    config["control"] = control_section(&agent.config_keys().await.unwrap());
    let rig = ControlledRig::start_with_env(
        "pod-identity",
        &config,
        agent.port(),
        None,
        &[
            ("POD_NAME", POD),
            ("POD_NAMESPACE", NAMESPACE),
            ("NODE_NAME", NODE),
        ],
    )
    .await
    .unwrap();
    for i in 0..40 {
        let reply = rig
            .client
            .get("/api", &[("x-user-id", &format!("user-{i}"))])
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }

    // The log holds origin leaves, each followed by exactly its batch's receipts.
    let entries = poll("40 receipts behind batch origins", WAIT, || async {
        let (status, page) = agent
            .call("GET", "/v1/receipts?from=0&limit=1000", None)
            .await?;
        anyhow::ensure!(status == 200, "GET /v1/receipts answered {status}: {page}");
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        let receipts = entries
            .iter()
            .filter(|e| e["entry"]["kind"] == "receipt")
            .count();
        Ok((receipts >= 40).then_some(entries))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log()));
    let mut receipt_index = None;
    let mut i = 0;
    while i < entries.len() {
        let e = &entries[i]["entry"];
        assert_ne!(
            e["kind"], "receipt",
            "receipt at leaf {i} has no batch origin: {e}"
        );
        if e["kind"] != "batch_origin" {
            // Entries of the agent's own (a key rotation, a rollout event).
            i += 1;
            continue;
        }
        assert_eq!(e["pod"], POD, "{e}");
        assert_eq!(e["namespace"], NAMESPACE, "{e}");
        assert_eq!(e["node"], NODE, "{e}");
        assert_eq!(
            e["peer"], "127.0.0.1",
            "the agent records where the batch came from"
        );
        let count = e["count"].as_u64().unwrap() as usize;
        assert!(
            count > 0 && i + count < entries.len(),
            "leaf {i}: {count} receipts claimed"
        );
        for (j, leaf) in entries.iter().enumerate().skip(i + 1).take(count) {
            assert_eq!(leaf["entry"]["kind"], "receipt", "leaf {j}");
            receipt_index.get_or_insert(j);
        }
        i += count + 1;
    }
    let receipt_index = receipt_index.unwrap();

    // A receipt's bundle proves its origin too, and the verifier names the pod.
    let bundle = poll("a sealed proof bundle", WAIT, || async {
        let (status, bundle) = agent
            .call("GET", &format!("/v1/receipts/{receipt_index}/proof"), None)
            .await?;
        Ok((status == 200).then_some(bundle))
    })
    .await
    .unwrap();
    assert!(bundle["origin"]["leaf_index"].as_u64().unwrap() < receipt_index as u64);
    let file = dir.join("receipt-proof.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    let out = agent.verify(&file).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let named = format!("decided by {NAMESPACE}/{POD} on {NODE}");
    assert!(text.contains(&named), "{text}");

    // A bundle whose origin was swapped for another leaf is refused.
    let mut forged = bundle.clone();
    forged["origin"]["leaf_index"] = (receipt_index as u64).into();
    std::fs::write(&file, forged.to_string()).unwrap();
    let out = agent.verify(&file).unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "a forged origin verified: {all}");
    assert!(all.contains("batch origin"), "{all}");
    drop(rig);
}
