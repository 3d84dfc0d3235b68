//! The Envoy dynamic-module adapter (`libknhk_filter.so`): the same filter as the wasm
//! build, native and in Envoy's process, over the host-independent layer.
//!
//! - `ffi`: the ABI (callbacks resolved at load, exported hooks) and all of the adapter's
//!   `unsafe`;
//! - `module`: one filter configuration (its workers' state, stats, timer, agent link) and one
//!   stream's filter, in safe code;
//! - `store`: the cross-worker shared data in process memory;
//! - `guard`: the panic barrier every hook runs behind; `logger`: `log` into Envoy's log.

mod ffi;
mod guard;
mod logger;
mod module;
mod store;
