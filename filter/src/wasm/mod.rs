//! The proxy-wasm adapter (`knhk_filter.wasm`): the module's entry point and allocator, and the
//! root and request contexts over the host-independent layer.

pub mod host;
pub mod http;
pub mod root;

/// The module's entry point: Envoy calls the `_start` this macro exports once per VM.
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::wasm::root::KnhkRoot::new())
        });
    }}
}

/// The module's allocator: talc instead of std's dlmalloc. Every header value the host hands
/// the filter is a fresh allocation, so allocation is on the per-request path.
#[cfg(not(target_feature = "atomics"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
