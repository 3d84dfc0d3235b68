//! The console's files, embedded at build time by `agent/build.rs` from what `cargo xtask
//! build-console` made; each is `None` when the binary was built without them.

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Whether the console's page and scripts are in this binary.
pub fn built() -> bool {
    INDEX_HTML.is_some() && APP_JS.is_some() && APP_CSS.is_some()
}
