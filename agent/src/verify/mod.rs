//! Offline verification of proof bundles and log exports, as run by `knhk-agent verify`: the
//! pure verifier of [`knhk_core::verify`], re-exported where the agent's callers find it. The
//! tests here build real logs with the agent's signer and check every verdict.

pub use knhk_core::verify::*;

#[cfg(test)]
mod tests;
