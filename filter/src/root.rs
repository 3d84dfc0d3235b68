//! The root context: validates the plugin configuration, runs the timer (admission sync and
//! stats flush) and creates one [`KnhkHttp`] per request.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use knhk_core::admission::AdmissionCoordinator;
use knhk_core::Policy;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use crate::host::{now_ns, EnvoySharedData};
use crate::http::KnhkHttp;
use crate::metrics::Metrics;

/// State one VM (one Envoy worker) shares between its root and its request contexts.
pub struct VmState {
    /// The policy in force; `None` until a valid configuration arrives.
    pub policy: Option<Rc<Policy>>,
    /// Local admission samples and the shed levels last read from shared data.
    pub admission: AdmissionCoordinator,
    /// Stats, counted locally and flushed on the tick.
    pub metrics: Metrics,
}

/// The filter's root context.
pub struct KnhkRoot {
    state: Rc<RefCell<VmState>>,
    sync_failures: u64,
}

impl KnhkRoot {
    /// A root with no policy yet; metrics are defined at once so Envoy lists them.
    pub fn new() -> Self {
        KnhkRoot {
            state: Rc::new(RefCell::new(VmState {
                policy: None,
                admission: AdmissionCoordinator::new(),
                metrics: Metrics::define(),
            })),
            sync_failures: 0,
        }
    }
}

impl Context for KnhkRoot {}

impl RootContext for KnhkRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!("knhk: cannot read the plugin configuration: {status:?}");
                return false;
            }
        };
        let mut state = self.state.borrow_mut();
        match Policy::from_json(&bytes) {
            Ok(policy) => {
                log::info!(
                    "knhk: config version {} in force: canary {} bp, admission {}{}",
                    policy.version,
                    policy.canary_basis_points,
                    if policy.admission_enabled {
                        "on"
                    } else {
                        "off"
                    },
                    if policy.shadow { " (shadow)" } else { "" },
                );
                if let Err(status) =
                    hostcalls::set_tick_period(Duration::from_millis(u64::from(policy.tick_ms)))
                {
                    log::error!("knhk: cannot start the timer: {status:?}");
                    return false;
                }
                state.policy = Some(Rc::new(policy));
                true
            }
            Err(e) => {
                // One line naming the field and the reason; Envoy refuses the plugin.
                log::error!("{e}");
                state.metrics.config_rejected();
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let mut state = self.state.borrow_mut();
        let Some(policy) = state.policy.clone() else {
            return;
        };
        if let Some(now_ms) = now_ns().map(|ns| ns / 1_000_000) {
            if policy.admission_enabled {
                if let Err(e) = state.admission.sync(&EnvoySharedData, &policy, now_ms) {
                    state.metrics.pending.decision_errors += 1;
                    self.sync_failures += 1;
                    // Log the first failure and then every 1000th, not every tick.
                    if self.sync_failures % 1000 == 1 {
                        log::warn!(
                            "knhk: admission sync failed ({} times): {e}",
                            self.sync_failures
                        );
                    }
                }
            }
        }
        let levels = state.admission.levels();
        state.metrics.flush(&levels, policy.version);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK aborts the VM on it. Without a policy the context applies the
        // default fail mode (open).
        Some(Box::new(KnhkHttp::new(Rc::clone(&self.state))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
