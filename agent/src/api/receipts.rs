//! The receipt log's routes: batch ingest from the filters, and read access for operators and
//! auditors.
//!
//! | method, path | answer |
//! |---|---|
//! | `POST /v1/receipts` | body: a `KNRB` batch (`Content-Type: application/x-knhk-receipts` or `application/octet-stream`, at most [`MAX_BATCH_LEN`] bytes); `200` only after the batch is committed durably |
//! | `GET /v1/receipts?from=&limit=` | entries from `from` (default 0), `limit` 1–[`MAX_PAGE`] (default 100), with `next` for the following page |
//! | `GET /v1/receipts/{index}/proof` | proof bundle against the newest checkpoint |
//! | `GET /v1/checkpoints/latest` | the newest signed checkpoint |
//! | `GET /v1/log/export` | the whole log export |

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use knhk_core::receipt::{LogEntry, MAX_BATCH_LEN};
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::api::rate::RateLimiter;
use crate::receipts::stream::{write_export, StreamError};
use crate::receipts::{ReceiptLog, ReceiptsError};

/// Largest page of `GET /v1/receipts`.
pub const MAX_PAGE: u64 = 1000;
/// Page size when `limit` is absent.
pub const DEFAULT_PAGE: u64 = 100;
/// Content types accepted for receipt batches.
pub const BATCH_CONTENT_TYPES: [&str; 2] =
    ["application/x-knhk-receipts", "application/octet-stream"];

impl From<ReceiptsError> for ApiError {
    fn from(e: ReceiptsError) -> Self {
        match e {
            ReceiptsError::Malformed(_) => ApiError::bad_request(e.to_string()),
            ReceiptsError::OutOfRange { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            ReceiptsError::NotSealed { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            ReceiptsError::Pruned { .. } => ApiError::new(StatusCode::GONE, e.to_string()),
            ReceiptsError::UnknownEpoch { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            other => ApiError::internal("receipt log failure", &other),
        }
    }
}

/// The receipt, proof, checkpoint and export routes over `log`.
pub fn routes(log: Arc<ReceiptLog>, rate: Arc<RateLimiter>) -> Router {
    Router::new()
        .route(
            "/v1/receipts",
            post(post_receipts)
                .route_layer(axum::middleware::from_fn_with_state(rate, limit_batches))
                .route_layer(axum::middleware::from_fn_with_state(
                    log.clone(),
                    count_refusals,
                ))
                .get(get_receipts),
        )
        .route("/v1/receipts/{index}/proof", get(get_proof))
        .route("/v1/receipts/leaf-digest", post(post_leaf_digest))
        .route("/v1/checkpoints/latest", get(get_latest_checkpoint))
        .route("/v1/log/export", get(get_export))
        .layer(DefaultBodyLimit::max(MAX_BATCH_LEN))
        .with_state(log)
}

/// Refused batches so far (logged at each power of two).
static RATE_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// Middleware of `POST /v1/receipts`: a client over its batch rate gets `429` with
/// `retry-after` before its body is read.
async fn limit_batches(
    State(rate): State<Arc<RateLimiter>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = crate::api::serve::client_ip(request.extensions());
    match rate.try_take(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            if let Some(n) = crate::api::flood::count(&RATE_REFUSALS) {
                tracing::warn!(%client, refused_so_far = n, "receipt batch refused: over api.receipt_batches_per_second");
            }
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "receipt batches from {client} exceed api.receipt_batches_per_second ({}/s): retry in {} ms; nothing was appended",
                    rate.per_second(),
                    wait.as_millis().max(1)
                ),
            )
            .into_response();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
            response
        }
    }
}

/// Middleware of `POST /v1/receipts`: every refused batch (rate limit, media type, size,
/// malformed or stale content) counts in `knhk.agent.receipts.refused` by its status.
async fn count_refusals(
    State(log): State<Arc<ReceiptLog>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        if let Some(m) = log.metrics() {
            m.receipts_refused(status.as_u16());
        }
    }
    response
}

/// Answer to an accepted batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    /// Leaf index of the first receipt.
    pub first_index: u64,
    /// Receipts appended.
    pub count: u64,
    /// Log size after the append.
    pub size: u64,
}

async fn post_receipts(
    State(log): State<Arc<ReceiptLog>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !content_type
        .as_deref()
        .is_some_and(|ct| BATCH_CONTENT_TYPES.contains(&ct))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be one of {}",
                BATCH_CONTENT_TYPES.join(", ")
            ),
        ));
    }
    let body = body.map_err(|r| ApiError::body_rejection(r, "receipt batch", MAX_BATCH_LEN))?;
    let metrics = log.metrics().cloned();
    let _queued = metrics.as_ref().map(|m| m.ingest_started());
    let peer = match crate::api::serve::client_ip(&extensions) {
        ip if ip.is_unspecified() => String::new(),
        ip => ip.to_string(),
    };
    let range = tokio::task::spawn_blocking(move || log.append_batch_from(&body, &peer))
        .await
        .map_err(|e| ApiError::internal("append task failed", &e))??;
    Ok(Json(Accepted {
        first_index: range.start,
        count: range.end - range.start,
        size: range.end,
    }))
}

/// Body of `POST /v1/receipts/leaf-digest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafDigestQuery {
    /// The filter's salted digest of a routing key, 32 hex digits (`knhk-agent bucket` prints it).
    pub key_digest: String,
}

/// Answer of `POST /v1/receipts/leaf-digest`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeafDigest {
    /// The digest the key's receipts carry in the log, 32 hex digits.
    pub leaf_digest: String,
}

/// `POST /v1/receipts/leaf-digest` (admin): the keyed digest receipts of a key carry, from the
/// filter's digest (so the key itself never reaches the agent).
async fn post_leaf_digest(
    State(log): State<Arc<ReceiptLog>>,
    body: Result<Json<LeafDigestQuery>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<LeafDigest>, ApiError> {
    let Json(q) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let digest: [u8; 16] = hex::decode(&q.key_digest)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("key_digest must be 32 hex digits"))?;
    let ingest = log.ingest().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this log keys no digests (no ingest configured)",
        )
    })?;
    Ok(Json(LeafDigest {
        leaf_digest: hex::encode(ingest.digest_key.leaf_digest(digest)),
    }))
}

/// Query of `GET /v1/receipts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    from: Option<u64>,
    limit: Option<u64>,
}

/// One log entry as served.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntryView {
    /// Leaf index.
    pub index: u64,
    /// Leaf bytes, base64.
    pub leaf: String,
    /// Decoded entry.
    pub entry: EntryBody,
}

/// The decoded fields of an entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryBody {
    /// A decision receipt.
    Receipt {
        /// Decision time, ns since the epoch.
        time_ns: u64,
        /// Keyed routing-key digest, hex: HMAC-SHA-256 under the agent's digest key of the
        /// filter's salted digest, first 16 bytes ([`crate::receipts::ingest`]); zeros without
        /// a key.
        key_digest: String,
        /// `stable`, `canary` or absent for excluded requests.
        route: Option<String>,
        /// Routing bucket (65535 without a key).
        routing_bucket: u16,
        /// Priority bucket (65535 without a key).
        priority: u16,
        /// Requested class.
        requested_class: String,
        /// Class served.
        class: String,
        /// Admission outcome.
        admission: String,
        /// Response status.
        status: u16,
        /// Latency, microseconds.
        latency_us: u32,
        /// Config epoch.
        config_epoch: u64,
        /// Worker id.
        worker_id: u32,
    },
    /// A signing key rotation.
    KeyRotation {
        /// Rotation time, ns since the epoch.
        time_ns: u64,
        /// Provider.
        provider: String,
        /// Key id.
        key_id: String,
        /// Algorithm of the new version.
        alg: String,
        /// Version before.
        previous_version: u32,
        /// Version after.
        new_version: u32,
        /// New public key, base64.
        public_key: String,
    },
    /// A rollout promotion, pause, resume, abort, rollback or flag change.
    RolloutEvent {
        /// Event time, ns since the epoch.
        time_ns: u64,
        /// The event (see `gates::event`).
        event: serde_json::Value,
    },
    /// A legal hold placement or release (see `crate::retention`).
    Hold {
        /// The decoded hold entry.
        hold: crate::retention::HoldView,
    },
    /// A receipt whose payload retention removed; its leaf hash remains.
    Pruned,
    /// A retention run's record of the leaves it pruned.
    RetentionRecord {
        /// Run time, ns since the epoch.
        time_ns: u64,
        /// Receipts decided before this were due, ns since the epoch.
        cutoff_ns: u64,
        /// Half-open leaf ranges pruned.
        ranges: Vec<(u64, u64)>,
    },
    /// The next `count` leaves are one batch's receipts, sent by this pod.
    BatchOrigin {
        /// When the agent received the batch, ns since the epoch.
        time_ns: u64,
        /// Receipts that follow.
        count: u32,
        /// Pod name the filter reported (empty when unknown).
        pod: String,
        /// Its namespace.
        namespace: String,
        /// Its node.
        node: String,
        /// Address the batch came from.
        peer: String,
    },
}

fn view(index: u64, leaf: &[u8]) -> Result<EntryView, ApiError> {
    if leaf.is_empty() {
        return Ok(EntryView {
            index,
            leaf: String::new(),
            entry: EntryBody::Pruned,
        });
    }
    let entry = LogEntry::decode(leaf).map_err(|e| {
        tracing::error!(index, "stored entry does not decode");
        ApiError::internal("stored entry does not decode", &e)
    })?;
    let body = match entry.clone() {
        LogEntry::Receipt(r) => EntryBody::Receipt {
            time_ns: r.time_ns,
            key_digest: hex::encode(r.key_digest),
            route: r.route.map(|x| x.as_str().to_owned()),
            routing_bucket: r.routing_bucket,
            priority: r.priority,
            requested_class: r.requested_class.as_str().to_owned(),
            class: r.class.as_str().to_owned(),
            admission: r.admission.as_str().to_owned(),
            status: r.status,
            latency_us: r.latency_us,
            config_epoch: r.config_epoch,
            worker_id: r.worker_id,
        },
        LogEntry::KeyRotation(k) => EntryBody::KeyRotation {
            time_ns: k.time_ns,
            provider: k.provider,
            key_id: k.key_id,
            alg: k.alg.as_str().to_owned(),
            previous_version: k.previous_version,
            new_version: k.new_version,
            public_key: STANDARD.encode(&k.public_key),
        },
        LogEntry::RolloutEvent(e) => EntryBody::RolloutEvent {
            time_ns: e.time_ns,
            event: serde_json::from_str(&e.body).unwrap_or(serde_json::Value::Null),
        },
        LogEntry::HoldPlaced(_) | LogEntry::HoldReleased(_) => EntryBody::Hold {
            hold: crate::retention::HoldView::of(&entry),
        },
        LogEntry::BatchOrigin(o) => EntryBody::BatchOrigin {
            time_ns: o.time_ns,
            count: o.count,
            pod: o.origin.pod,
            namespace: o.origin.namespace,
            node: o.origin.node,
            peer: o.peer,
        },
        LogEntry::Pruned(p) => EntryBody::RetentionRecord {
            time_ns: p.time_ns,
            cutoff_ns: p.cutoff_ns,
            ranges: p.ranges,
        },
    };
    Ok(EntryView {
        index,
        leaf: STANDARD.encode(leaf),
        entry: body,
    })
}

/// One receipt as a line of text (`knhk-agent receipts`); other entries by kind.
pub fn receipt_line(view: &EntryView) -> String {
    match &view.entry {
        EntryBody::Receipt {
            time_ns,
            route,
            class,
            admission,
            status,
            latency_us,
            config_epoch,
            ..
        } => format!(
            "leaf {}  time_ns {time_ns}  route {}  class {class}  admission {admission}  status {status}  latency {latency_us} us  epoch {config_epoch}",
            view.index,
            route.as_deref().unwrap_or("-"),
        ),
        other => format!("leaf {}  {other:?}", view.index),
    }
}

/// A page of entries.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntriesPage {
    /// Log size when read.
    pub size: u64,
    /// The entries.
    pub entries: Vec<EntryView>,
    /// `from` of the next page, absent at the end.
    pub next: Option<u64>,
}

async fn get_receipts(
    State(log): State<Arc<ReceiptLog>>,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<Json<EntriesPage>, ApiError> {
    let Query(page) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let from = page.from.unwrap_or(0);
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let size = log.size()?;
    if from > size {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("from {from} is beyond the log size {size}"),
        ));
    }
    let rows = tokio::task::spawn_blocking(move || log.entries(from, limit))
        .await
        .map_err(|e| ApiError::internal("receipt log task failed", &e))??;
    let entries = rows
        .iter()
        .map(|(i, leaf)| view(*i, leaf))
        .collect::<Result<Vec<_>, _>>()?;
    let end = from + u64::try_from(entries.len()).unwrap_or(0);
    Ok(Json(EntriesPage {
        size,
        entries,
        next: (end < size).then_some(end),
    }))
}

async fn get_proof(
    State(log): State<Arc<ReceiptLog>>,
    Path(index): Path<String>,
) -> Result<Response, ApiError> {
    let index: u64 = index.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("receipt index {index:?} is not a non-negative integer"),
        )
    })?;
    let size = log.size()?;
    if index >= size {
        return Err(ReceiptsError::OutOfRange { index, size }.into());
    }
    let bundle = tokio::task::spawn_blocking(move || log.proof_bundle(index))
        .await
        .map_err(|e| ApiError::internal("receipt log task failed", &e))??;
    Ok(Json(bundle).into_response())
}

async fn get_latest_checkpoint(State(log): State<Arc<ReceiptLog>>) -> Result<Response, ApiError> {
    match log.latest_checkpoint()? {
        Some(cp) => Ok(Json(cp).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no checkpoint yet")),
    }
}

/// Chunks of an export in flight between the reader thread and the connection.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 4;

/// `GET /v1/log/export`: streamed from a snapshot taken now, in chunks
/// ([`crate::receipts::stream`]), so memory stays bounded whatever the log size. A failure
/// after the first chunk ends the body early: the truncated document does not parse, so
/// `verify` fails closed.
async fn get_export(State(log): State<Arc<ReceiptLog>>) -> Result<Response, ApiError> {
    let reader = tokio::task::spawn_blocking(move || log.reader())
        .await
        .map_err(|e| ApiError::internal("receipt log task failed", &e))??;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_CHUNKS_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let sent = write_export(&reader, |chunk| tx.blocking_send(Ok(chunk.into())).is_ok());
        match sent {
            Ok(()) | Err(StreamError::Gone) => {}
            Err(e) => {
                tracing::error!(error = %e, "log export failed mid-stream");
                let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
