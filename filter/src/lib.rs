//! knhk proxy-wasm HTTP filter: deterministic canary routing and R1/W1/C1 admission, inline.
//!
//! A thin adapter: every decision is made by `knhk-core`; this crate only moves bytes between
//! Envoy and the core through the small traits of `knhk_core::host`. Per request it makes as
//! few host calls as it can: one read per request header the policy needs (each at most once),
//! one write of the route header, one clock read at each end, and nothing else unless a header
//! must change. Counters live in VM memory and reach Envoy's stats on the timer tick.

#![warn(missing_docs)]

mod control;
mod flow;
mod host;
mod http;
mod metrics;
mod receipts;
mod root;
mod state;

/// The module's entry point: Envoy calls the `_start` this macro exports once per VM.
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::root::KnhkRoot::new())
        });
    }}
}

/// The module's allocator: talc instead of std's dlmalloc. Every header value the host hands
/// the filter is a fresh allocation, so allocation is on the per-request path.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
