//! knhk-core: the decision logic shared, byte for byte, by the wasm filter and the native agent.
//!
//! No proxy-wasm, no tokio: everything here compiles natively and for `wasm32-wasip1`, and
//! reaches the host only through the small traits in [`host`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod b64;
pub mod bucket;
pub mod checkpoint;
pub mod class;
pub mod config;
pub mod cosignature;
pub mod credential;
pub mod decision;
pub mod envelope;
pub mod export;
pub mod flags;
pub mod host;
pub mod json;
pub mod limits;
pub mod merkle;
pub mod policy;
pub mod receipt;
pub mod request;
pub mod tiles;
pub mod verify;
pub mod worker_id;

pub use class::{Class, Route};
pub use config::{ConfigError, FilterConfig};
pub use decision::{decide, Admission, Decision, RouteReason};
pub use flags::FlagSet;
pub use policy::Policy;
