//! `log` records into Envoy's log (the `dynamic_modules` logger), filtered by its level.

use super::ffi::{envoy_log, envoy_log_enabled};

struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        envoy_log_enabled(metadata.level())
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            envoy_log(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// Route the `log` crate to Envoy (once per process; later calls are no-ops).
pub fn install() {
    static LOGGER: EnvoyLogger = EnvoyLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
