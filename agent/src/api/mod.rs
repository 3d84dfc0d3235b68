//! The agent's HTTP API (axum): the pieces shared by every subsystem's routes, and the receipt
//! log's own routes. Each subsystem serves its own routes; [`crate::run()`] composes them.
//!
//! | module | routes |
//! |---|---|
//! | [`receipts`] | `/v1/receipts`, `/v1/receipts/{index}/proof`, `/v1/checkpoints/latest`, `/v1/log/export` |
//! | [`crate::policy::api`] | config push: `/v1/policy`, `/v1/config`, `/v1/config/keys`, … |
//! | [`crate::gates::api`] | rollouts: `/v1/rollouts/…` |
//! | [`crate::retention::api`] | legal holds and retention: `/v1/holds`, `/v1/retention/run` |
//! | [`crate::console::api`] | the operator console: `/console/`, `/v1/console/state` |
//! | [`crate::quorum`] | witness and quorum status (`/v1/witness/…`, `/v1/quorum/…`), when `[quorum]` is enabled |
//!
//! [`auth`] decides who may call what; [`error`] is the refusal every route answers with;
//! [`serve`] is the HTTP server with its timeouts and connection cap; [`slots`] bounds what
//! one client may hold at once (long-polls), [`rate`] how fast it may post receipt batches;
//! [`flood`] keeps their refusals from flooding the log.
//! Every refusal is a 4xx with a JSON body `{"error": "<reason>"}` and changes nothing.

pub mod auth;
pub mod error;
pub mod flood;
pub mod rate;
pub mod receipts;
pub mod serve;
pub mod slots;
