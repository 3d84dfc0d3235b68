//! knhk control agent: a durable receipt log sealed by KMS-signed checkpoints, its HTTP API,
//! and offline verification of what it exports.
//!
//! One module per subsystem, each with its own error type: [`config`] (file, environment,
//! validation), [`kms`] (signing keys and rotation), [`receipts`] (the durable, signed receipt
//! log), [`policy`] (signed config epochs pushed to the filters), [`gates`] (promotion gates),
//! [`api`] (HTTP), [`identity`] (SPIFFE SVIDs, agent-to-agent mTLS), [`peer`] (the mTLS
//! agent-to-agent API), [`quorum`] (cross-region witnessing and k-of-n commits),
//! [`retention`] (retention and legal hold), [`verify`] (offline checks) and [`run`](mod@run)
//! (startup, background tasks, graceful shutdown); [`settings`] is the leaf they share: the
//! one grammar of durations and environment booleans. [`run()`] is what `main.rs` and the tests
//! call.

pub mod api;
pub mod config;
pub mod gates;
pub mod identity;
pub mod kms;
pub mod peer;
pub mod policy;
pub mod quorum;
pub mod receipts;
pub mod retention;
pub mod run;
pub mod settings;
pub mod verify;

pub use run::{run, Listeners, RunError};
