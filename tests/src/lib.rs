//! End-to-end harness: the real Envoy with the real filter, test upstreams on free loopback
//! ports, polling with deadlines, and Envoy's log printed when a test fails.
//!
//! Used by the tests in `tests/tests/` and by `cargo xtask demo`.

#![warn(missing_docs)]

pub mod agent;
#[cfg(feature = "azure-double")]
pub mod azure_keyvault;
#[cfg(feature = "browser")]
pub mod browser;
pub mod client;
pub mod control_double;
pub mod envoy;
pub mod load;
pub mod moto;
pub mod openbao;
pub mod paths;
pub mod ports;
pub mod raw;
pub mod registry;
pub mod rig;
pub mod rollout;
pub mod rotel;
#[cfg(feature = "spiffe-double")]
pub mod spiffe_workload;
pub mod stats;
pub mod template;
pub mod upstream;
pub mod wait;
