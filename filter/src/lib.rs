//! knhk's Envoy HTTP filter: deterministic canary routing and R1/W1/C1 admission, inline.
//!
//! One host-independent layer and two thin adapters. Every decision is made by `knhk-core`;
//! the layer (`request`, `flow`, `stats`, `link`, `configure`, `tick`, `worker`) holds the
//! per-request flow, the header edits, the counters, receipt batching and the config
//! long-poll, and reaches its host only through the traits in `host`. The adapters move bytes
//! between Envoy and that layer: `wasm` over proxy-wasm (`knhk_filter.wasm`), `native` as an
//! Envoy dynamic module (`libknhk_filter.so`). Per request the filter makes as few host calls
//! as it can: one read per request header the policy needs (each at most once), one write of
//! the route header, one clock read at each end, and nothing else unless a header must
//! change. Counters live in worker memory and reach Envoy's stats on the timer tick.

#![warn(missing_docs)]

mod configure;
mod control;
mod flow;
mod host;
mod link;
mod origin;
mod receipts;
mod request;
mod stats;
mod tick;
mod worker;

#[cfg(target_family = "wasm")]
mod wasm;

#[cfg(not(target_family = "wasm"))]
mod native;
