//! A ready-to-use test rig: the two upstreams, Envoy with the real filter, and a client.

use crate::client::Client;
use crate::envoy::{Envoy, EnvoySpec, Launch};
use crate::upstream::Upstream;
use knhk_core::bucket::{buckets, is_canary, Buckets};

/// Stable and canary upstreams behind one Envoy that runs `knhk_filter.wasm`.
#[derive(Debug)]
pub struct Rig {
    /// Upstream named `stable`.
    pub stable: Upstream,
    /// Upstream named `canary`.
    pub canary: Upstream,
    /// Envoy (two workers, e2e bootstrap).
    pub envoy: Envoy,
    /// Keep-alive client aimed at Envoy's listener.
    pub client: Client,
    name: String,
}

impl Rig {
    /// Start upstreams and Envoy with `plugin_config`; fails if Envoy does not become ready.
    pub async fn start(name: &str, plugin_config: &serde_json::Value) -> anyhow::Result<Rig> {
        let stable = Upstream::start("stable").await?;
        let canary = Upstream::start("canary").await?;
        let envoy = Envoy::start(&Self::spec(name, plugin_config, &stable, &canary)?).await?;
        let client = Client::new(&envoy.base_url())?;
        Ok(Rig {
            stable,
            canary,
            envoy,
            client,
            name: name.to_string(),
        })
    }

    /// The spec this rig would start Envoy with, for tests that need [`Envoy::launch`].
    pub fn spec(
        name: &str,
        plugin_config: &serde_json::Value,
        stable: &Upstream,
        canary: &Upstream,
    ) -> anyhow::Result<EnvoySpec> {
        EnvoySpec::e2e(
            name,
            &plugin_config.to_string(),
            stable.port(),
            canary.port(),
        )
    }

    /// Replace Envoy by a new one with `plugin_config` (same upstreams); the old one is stopped first.
    pub async fn restart(&mut self, plugin_config: &serde_json::Value) -> anyhow::Result<()> {
        let spec = Self::spec(&self.name, plugin_config, &self.stable, &self.canary)?;
        match Envoy::launch(&spec).await? {
            Launch::Ready(envoy) => {
                self.envoy = envoy;
                self.client = Client::new(&self.envoy.base_url())?;
                Ok(())
            }
            Launch::Exited { status, log, .. } => {
                anyhow::bail!(
                    "restarted envoy exited ({status}):\n{}",
                    crate::envoy::tail(&log, 80)
                )
            }
        }
    }

    /// A client that opens a new connection per request (spreads requests over both workers).
    pub fn fresh_client(&self) -> anyhow::Result<Client> {
        Client::fresh_connections(&self.envoy.base_url())
    }
}

/// The core's buckets for `key` under `salt`: the oracle the e2e tests compare Envoy against.
pub fn oracle(salt: &str, key: &str) -> Buckets {
    buckets(salt.as_bytes(), key.as_bytes())
}

/// The route the core assigns to `key` at `canary_basis_points`: `"canary"` or `"stable"`.
pub fn oracle_route(salt: &str, key: &str, canary_basis_points: u16) -> &'static str {
    if is_canary(oracle(salt, key).routing, canary_basis_points) {
        "canary"
    } else {
        "stable"
    }
}

/// The plugin configuration of the filter contract's example: 10 % canary, debug headers,
/// force header enabled, `/healthz` and `internal.example` excluded, R1 on `/hot` (100 ms p99,
/// 2 s window, 20 samples, strict), evaluation every 50 ms on a 50 ms tick. (The contract
/// example's 20 ms budget leaves too little headroom on a busy 2-core CI machine, where the
/// filter-measured latency of a fast upstream can itself approach 20 ms.)
pub fn base_config() -> serde_json::Value {
    serde_json::json!({
        "version": 3,
        "debug_headers": true,
        "tick_ms": 50,
        "fail_mode": "open",
        "routing": {
            "salt": "s1",
            "canary_basis_points": 1000,
            "key_sources": [{"header": "x-user-id"}, {"cookie": "uid"}, {"query": "user"}],
            "fallback_to_request_id": true,
            "route_header": "x-knhk-route",
            "force_header": {"enabled": true, "name": "x-knhk-canary"},
            "exclude": {"path_prefixes": ["/healthz"], "hosts": ["internal.example"]}
        },
        "admission": {
            "enabled": true,
            "shadow": false,
            "class_header": "x-knhk-class",
            "trust_class_header": true,
            "default_class": "W1",
            "rules": [{"class": "R1", "path_prefix": "/hot"}, {"class": "C1", "header": {"name": "x-batch"}}],
            "classes": {
                "R1": {"p99_max_ms": 100, "window_ms": 2000, "min_samples": 20, "strategy": "strict"},
                "W1": {"p99_max_ms": 500},
                "C1": {"p99_max_ms": 5000}
            },
            "shed_status": 503,
            "retry_after_s": 1,
            "max_shed_fraction": 0.5,
            "shed_step_fraction": 0.1,
            "recover_ratio": 0.8,
            "evaluation_interval_ms": 50
        }
    })
}

/// The filter's `control` section for the e2e tests: the `knhk_agent` cluster, the given
/// trusted config keys, the e2e agents' filter token, a 5 s long-poll and receipts flushed
/// every 50 ms.
pub fn control_section(
    trusted_keys: &[knhk_core::checkpoint::PublicKeyVersion],
) -> serde_json::Value {
    serde_json::json!({
        "cluster": "knhk_agent",
        "poll_timeout_ms": 5000,
        "token": crate::agent::FILTER_TOKEN,
        "trusted_keys": trusted_keys,
        "receipts": {"flush_interval_ms": 50, "max_batch": 256, "max_buffer": 16384}
    })
}

/// An Envoy bootstrap other than `e2e.yaml`, and the name the filter is configured under in it.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// A bootstrap under `envoy/` with the placeholders of `e2e.yaml`.
    pub template: &'a str,
    /// The filter's name (`${HTTP_FILTER}`'s entry name, plugin or filter name, VM id).
    pub filter_name: &'a str,
}

/// Upstreams and Envoy whose filter polls the agent (real or double) on `agent_port`.
#[derive(Debug)]
pub struct ControlledRig {
    /// Upstream named `stable`.
    pub stable: Upstream,
    /// Upstream named `canary`.
    pub canary: Upstream,
    /// Envoy (two workers, e2e bootstrap with the `knhk_agent` cluster).
    pub envoy: Envoy,
    /// A client opening a new connection per request (reaches both workers).
    pub client: Client,
}

impl ControlledRig {
    /// Start upstreams and Envoy with `plugin_config` (which carries a `control` section).
    pub async fn start(
        name: &str,
        plugin_config: &serde_json::Value,
        agent_port: u16,
    ) -> anyhow::Result<Self> {
        Self::start_shaped(name, plugin_config, agent_port, None).await
    }

    /// Like [`ControlledRig::start`], with Envoy in another `shape` (a bootstrap under `envoy/`
    /// with the same placeholders, e.g. `istio-client.yaml`, and the filter's name in it)
    /// instead of `e2e.yaml`.
    pub async fn start_shaped(
        name: &str,
        plugin_config: &serde_json::Value,
        agent_port: u16,
        shape: Option<Shape<'_>>,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(name, plugin_config, agent_port, shape, &[]).await
    }

    /// Like [`ControlledRig::start_shaped`], with these environment variables set for Envoy.
    pub async fn start_with_env(
        name: &str,
        plugin_config: &serde_json::Value,
        agent_port: u16,
        shape: Option<Shape<'_>>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let stable = Upstream::start("stable").await?;
        let canary = Upstream::start("canary").await?;
        let mut spec = EnvoySpec::e2e(
            name,
            &plugin_config.to_string(),
            stable.port(),
            canary.port(),
        )?;
        spec.agent_port = Some(agent_port);
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(shape) = shape {
            spec.template = crate::paths::envoy_template(shape.template);
            spec.filter_name = Some(shape.filter_name.to_string());
        }
        let envoy = Envoy::start(&spec).await?;
        let client = Client::fresh_connections(&envoy.base_url())?;
        Ok(ControlledRig {
            stable,
            canary,
            envoy,
            client,
        })
    }
}
