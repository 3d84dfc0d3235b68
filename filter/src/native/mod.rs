//! The Envoy dynamic-module adapter (`libknhk_filter.so`): the same filter as the wasm
//! build, native and in Envoy's process, over the host-independent layer.
//!
//! - `ffi`: the ABI (callbacks resolved at load, handles, the exported hooks in `ffi::hooks`,
//!   the logger into Envoy's log) and every FFI block of the adapter;
//! - `module`: one filter configuration (its workers' state, stats, timer, agent link) and one
//!   stream's filter, in safe code;
//! - `store`: the cross-worker shared data in process memory;
//! - `guard`: the panic barrier every hook runs behind.

mod ffi;
mod guard;
mod module;
mod store;
