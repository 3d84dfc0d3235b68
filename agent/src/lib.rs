//! knhk control agent: a durable receipt log sealed by KMS-signed checkpoints, its HTTP API,
//! and offline verification of what it exports.
//!
//! Shared leaves, which import nothing above them: [`api::error`] (the refusal every route
//! answers with), [`clock`] (the process clock), [`db`] (the one SQLite opener),
//! [`private_file`] (the one way a secret file is created) and [`settings`] (the one grammar
//! of durations and environment booleans).
//!
//! One module per subsystem, each with its own error type and its own routes: [`config`]
//! (file, environment, validation), [`kms`] (signing keys and rotation), [`receipts`] (the
//! durable, signed receipt log), [`policy`] (signed config epochs pushed to the filters),
//! [`gates`] (promotion gates), [`console`] (the operator web console), [`api`] (the receipt routes and API auth), [`identity`] (SPIFFE
//! SVIDs, agent-to-agent mTLS), [`peer`] (the mTLS agent-to-agent API), [`quorum`]
//! (cross-region witnessing and k-of-n commits), [`retention`] (retention and legal hold),
//! [`verify`] (offline checks), [`admin_client`] (the CLI's one client of a running agent),
//! [`key_route`] (which route and flags a key gets) and
//! [`run`](mod@run) (startup, background tasks, composing every subsystem's routes, graceful
//! shutdown). [`run()`] is what `main.rs` and the tests call. `cargo xtask import-cycles`
//! checks that no module imports form a circle.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin_client;
pub mod api;
pub mod capacity;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod gates;
pub mod identity;
pub mod key_route;
pub mod kms;
pub mod observe;
pub mod peer;
pub mod policy;
pub mod private_file;
pub mod quorum;
pub mod receipts;
pub mod retention;
pub mod rotation;
pub mod run;
pub mod settings;
pub mod telemetry;
pub mod tiles;
pub mod verify;

pub use run::{run, Listeners, RunError};
