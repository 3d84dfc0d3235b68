//! `knhk-agent bucket --key K`: which route and flags a routing key gets under a policy,
//! computed with the filter's own functions (`knhk_core::bucket`, `Policy::flags_on`), so an
//! operator can answer "why did this user see the canary?" without sending a request.
//!
//! It answers for the weighted decision: what a request whose routing key is `K` gets when no
//! force header, staging audience or exclusion applies (those depend on the request's other
//! headers, which a key alone does not carry).

use knhk_core::bucket::is_canary;
use knhk_core::limits::MAX_KEY_BYTES;
use knhk_core::{Policy, Route};
use serde::Serialize;

/// What a key gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRoute {
    /// The filter's salted digest of the key (hex, 16 bytes): what it sends; the log keys it.
    pub key_digest: String,
    /// The digest this key's receipts carry in the log (hex), when asked of an agent
    /// (`--agent`): the filter digest keyed with the agent's secret digest key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_digest: Option<String>,
    /// Routing bucket, 0–9999: canary when below `canary_basis_points`.
    pub routing_bucket: u16,
    /// Priority bucket, 0–9999: shed first when low.
    pub priority_bucket: u16,
    /// The policy's canary weight, basis points.
    pub canary_basis_points: u16,
    /// `stable` or `canary`.
    pub route: &'static str,
    /// The value the filter writes in the route header for that route.
    pub route_value: String,
    /// The feature flags on for this key, in config order.
    pub flags: Vec<String>,
}

/// The route and flags of routing key `key` under `policy` (the key is hashed as the filter
/// hashes it: its first [`MAX_KEY_BYTES`] bytes).
pub fn key_route(policy: &Policy, key: &[u8]) -> KeyRoute {
    let key = &key[..key.len().min(MAX_KEY_BYTES)];
    let b = policy.bucket_key.buckets(key);
    let route = if is_canary(b.routing, policy.canary_basis_points) {
        Route::Canary
    } else {
        Route::Stable
    };
    let on = policy.flags_on(Some(&b));
    let flags = policy
        .flags
        .iter()
        .flat_map(|f| on.indices().filter_map(|i| f.items.get(i)))
        .map(|flag| flag.name.clone())
        .collect();
    KeyRoute {
        key_digest: hex::encode(b.key_digest),
        leaf_digest: None,
        routing_bucket: b.routing,
        priority_bucket: b.priority,
        canary_basis_points: policy.canary_basis_points,
        route: route.as_str(),
        route_value: policy.route_value(route).to_owned(),
        flags,
    }
}

impl std::fmt::Display for KeyRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "route:          {} (route header value {:?})",
            self.route, self.route_value
        )?;
        writeln!(
            f,
            "routing bucket: {} (canary below {})",
            self.routing_bucket, self.canary_basis_points
        )?;
        writeln!(f, "priority:       {}", self.priority_bucket)?;
        let flags = if self.flags.is_empty() {
            "none".to_owned()
        } else {
            self.flags.join(", ")
        };
        writeln!(f, "flags on:       {flags}")?;
        match &self.leaf_digest {
            Some(leaf) => {
                writeln!(f, "filter digest:  {}", self.key_digest)?;
                write!(f, "log digest:     {leaf} (what this key's receipts carry)")
            }
            None => write!(
                f,
                "filter digest:  {} (receipts carry it keyed by the agent: ask with --agent)",
                self.key_digest
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::host::FakeRequest;
    use knhk_core::{decide, Decision};

    fn policy(canary_basis_points: u16) -> Policy {
        let doc = serde_json::json!({
            "routing": {
                "salt": "s3cret",
                "canary_basis_points": canary_basis_points,
                "key_sources": [{"header": "x-user-id"}]
            },
            "flags": {"items": [
                {"name": "new-cart", "basis_points": 5000},
                {"name": "dark", "basis_points": 1000}
            ]}
        });
        Policy::from_json(doc.to_string().as_bytes()).unwrap()
    }

    fn decided(p: &Policy, key: &str) -> Decision {
        let req = FakeRequest::get("/").with("x-user-id", key);
        decide(p, &Default::default(), &req)
    }

    /// For every key, the answer is what the filter's own decision gives a request carrying
    /// that key: route, routing and priority buckets, flags.
    #[test]
    fn agrees_with_the_filters_decision() {
        for weight in [0, 500, 5000, 10_000] {
            let p = policy(weight);
            for i in 0..300 {
                let key = format!("user-{i}");
                let answer = key_route(&p, key.as_bytes());
                let d = decided(&p, &key);
                let b = d.buckets.unwrap();
                assert_eq!(
                    answer.route,
                    d.route.unwrap().as_str(),
                    "{key} at {weight} bp"
                );
                assert_eq!(answer.routing_bucket, b.routing);
                assert_eq!(answer.priority_bucket, b.priority);
                assert_eq!(answer.key_digest, hex::encode(b.key_digest));
                let flags = p.flags.as_ref().unwrap();
                assert_eq!(
                    flags.header_value(d.flags),
                    (!answer.flags.is_empty()).then(|| answer.flags.join(",")),
                    "{key}"
                );
            }
        }
    }

    /// A raised weight only moves keys toward canary, as the filter's bucketing promises.
    #[test]
    fn raising_the_weight_never_moves_a_key_back() {
        let (low, high) = (policy(1000), policy(3000));
        for i in 0..1000 {
            let key = format!("k{i}");
            if key_route(&low, key.as_bytes()).route == "canary" {
                assert_eq!(key_route(&high, key.as_bytes()).route, "canary", "{key}");
            }
        }
    }
}
