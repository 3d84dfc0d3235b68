//! The Envoy dynamic-module adapter (`libknhk_filter.so`).
