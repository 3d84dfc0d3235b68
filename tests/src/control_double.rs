//! TEST DOUBLE of the agent's filter-facing protocol, for attacks the real agent never makes.
//!
//! The real `knhk-agent` only ever serves configs it signed itself, with rising epochs and
//! valid policies. To prove the filter refuses forged, replayed and invalid configs, these
//! tests need a control plane that misbehaves on purpose: this one serves whatever envelope a
//! test installs, on the same endpoints and with the same long-poll semantics as the agent
//! (`GET /v1/config?after=<epoch>&timeout_ms=<n>` → 200 envelope when the installed
//! envelope's *serving* epoch is above `after`, else held until it changes or the timeout
//! passes → 204), and it accepts `POST /v1/receipts` batches, decoding them with `knhk-core`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ed25519_dalek::{Signer as _, SigningKey};
use knhk_core::checkpoint::{Alg, PublicKeyVersion, SignatureRecord};
use knhk_core::envelope::{signing_input, Envelope, PAYLOAD_TYPE};
use knhk_core::receipt::{decode_batch, Receipt};
use tokio::sync::watch;

/// A test signing key with a provider/key id/version identity.
#[derive(Debug, Clone)]
pub struct TestKey {
    key: SigningKey,
    /// Key version the signatures name.
    pub version: u32,
}

impl TestKey {
    /// A deterministic key from a seed byte.
    pub fn new(seed: u8, version: u32) -> Self {
        TestKey {
            key: SigningKey::from_bytes(&[seed; 32]),
            version,
        }
    }

    /// Its public half as the filter's `control.trusted_keys` entry.
    pub fn public(&self) -> PublicKeyVersion {
        PublicKeyVersion {
            provider: "local".into(),
            key_id: "config".into(),
            version: self.version,
            alg: Alg::Ed25519,
            public_key: self.key.verifying_key().to_bytes().to_vec(),
            retired: false,
        }
    }

    /// Sign `payload` (raw JSON bytes) into an envelope.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let sig = self.key.sign(&signing_input(payload));
        let envelope = Envelope {
            payload_type: PAYLOAD_TYPE.into(),
            payload: payload.to_vec(),
            signatures: vec![SignatureRecord {
                provider: "local".into(),
                key_id: "config".into(),
                key_version: self.version,
                alg: Alg::Ed25519,
                sig: sig.to_bytes().to_vec(),
            }],
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

/// A config payload: `epoch`, `policy`, optional `next_keys`.
pub fn payload(
    epoch: u64,
    policy: &serde_json::Value,
    next_keys: Option<Vec<PublicKeyVersion>>,
) -> Vec<u8> {
    let mut doc = serde_json::json!({"epoch": epoch, "issued_at_ns": 1, "policy": policy});
    if let Some(keys) = next_keys {
        doc["next_keys"] = serde_json::to_value(keys).unwrap_or_default();
    }
    doc.to_string().into_bytes()
}

#[derive(Debug, Clone, Default)]
struct Installed {
    serving_epoch: u64,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    config: watch::Sender<Installed>,
    receipts: Mutex<Vec<Receipt>>,
    receipt_status: Mutex<StatusCode>,
}

/// The misbehaving control plane.
#[derive(Debug, Clone)]
pub struct ControlDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

#[derive(serde::Deserialize)]
struct PollQuery {
    after: u64,
    timeout_ms: u64,
}

impl ControlDouble {
    /// Bind `127.0.0.1:0` and serve on the current runtime.
    pub async fn start() -> anyhow::Result<ControlDouble> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (config, _) = watch::channel(Installed::default());
        let shared = Arc::new(Shared {
            config,
            receipts: Mutex::new(Vec::new()),
            receipt_status: Mutex::new(StatusCode::OK),
        });
        let app = Router::new()
            .route("/v1/config", get(poll))
            .route("/v1/receipts", axum::routing::post(receipts))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ControlDouble { shared, addr })
    }

    /// Its port (the Envoy `knhk_agent` cluster points here).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serve `body` to every poll with `after < serving_epoch` (and wake held polls).
    pub fn install(&self, serving_epoch: u64, body: Vec<u8>) {
        self.shared.config.send_replace(Installed {
            serving_epoch,
            body,
        });
    }

    /// Receipts received so far.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.shared
            .receipts
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Answer receipt posts with `status` (e.g. 503 to simulate an agent that cannot commit).
    pub fn set_receipt_status(&self, status: StatusCode) {
        if let Ok(mut s) = self.shared.receipt_status.lock() {
            *s = status;
        }
    }
}

async fn poll(State(shared): State<Arc<Shared>>, Query(q): Query<PollQuery>) -> Response {
    let mut rx = shared.config.subscribe();
    let wait = async {
        loop {
            let current = rx.borrow_and_update().clone();
            if current.serving_epoch > q.after {
                return current;
            }
            if rx.changed().await.is_err() {
                return Installed::default();
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(q.timeout_ms), wait).await {
        Ok(installed) if installed.serving_epoch > q.after => {
            let mut headers = HeaderMap::new();
            headers.insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/json"),
            );
            (StatusCode::OK, headers, installed.body).into_response()
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn receipts(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let status = shared
        .receipt_status
        .lock()
        .map(|s| *s)
        .unwrap_or(StatusCode::OK);
    if status != StatusCode::OK {
        return status.into_response();
    }
    match decode_batch(&body) {
        Ok(batch) => {
            if let Ok(mut all) = shared.receipts.lock() {
                all.extend(batch);
            }
            StatusCode::OK.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
