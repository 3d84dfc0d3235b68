//! The per-request decision: route (stable/canary) and admission (admit/shed/degrade).
//!
//! [`decide`] is pure: the same policy, shed levels and headers give the same decision in the
//! filter, in the agent and in tests. It does no host calls and no allocation beyond what a
//! header lookup returns.

use std::fmt::Write as _;

use crate::admission::ShedLevels;
use crate::bucket::{is_canary, Buckets};
use crate::class::{Class, Route};
use crate::config::Strategy;
use crate::flags::FlagSet;
use crate::host::RequestHeaders;
use crate::policy::Policy;
use crate::request::{classify, in_audience, is_excluded, routing_key};

/// Why the route is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// Bucket compared with the canary weight.
    Weighted,
    /// The enabled force header said `always` or `never`.
    Forced,
    /// The request matched the staging audience (`routing.audience`): canary whatever the weight.
    Audience,
    /// Excluded path or host: the filter leaves the request alone.
    Excluded,
    /// No routing key: stable, and the lowest shedding priority.
    NoKey,
}

impl RouteReason {
    /// Lowercase name for headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Weighted => "weighted",
            RouteReason::Forced => "forced",
            RouteReason::Audience => "audience",
            RouteReason::Excluded => "excluded",
            RouteReason::NoKey => "nokey",
        }
    }
}

/// Admission outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Served in its requested class.
    Admitted,
    /// Served, demoted to a colder class.
    Degraded,
    /// Rejected with the shed status.
    Shed,
    /// Shadow mode: would have been shed; served.
    ShadowShed,
    /// Shadow mode: would have been demoted; served in its requested class.
    ShadowDegraded,
    /// Admission disabled or request excluded.
    NotEvaluated,
}

impl Admission {
    /// Every outcome, in stats order.
    pub const ALL: [Admission; 6] = [
        Admission::Admitted,
        Admission::Degraded,
        Admission::Shed,
        Admission::ShadowShed,
        Admission::ShadowDegraded,
        Admission::NotEvaluated,
    ];

    /// Lowercase name for headers, stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::Admitted => "admitted",
            Admission::Degraded => "degraded",
            Admission::Shed => "shed",
            Admission::ShadowShed => "shadow_shed",
            Admission::ShadowDegraded => "shadow_degraded",
            Admission::NotEvaluated => "not_evaluated",
        }
    }

    /// Index in [`Admission::ALL`].
    pub fn index(self) -> usize {
        match self {
            Admission::Admitted => 0,
            Admission::Degraded => 1,
            Admission::Shed => 2,
            Admission::ShadowShed => 3,
            Admission::ShadowDegraded => 4,
            Admission::NotEvaluated => 5,
        }
    }
}

/// Everything decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Route to set; `None` for excluded requests (left untouched).
    pub route: Option<Route>,
    /// Why.
    pub reason: RouteReason,
    /// Buckets of the routing key (`None` without a key or when excluded).
    pub buckets: Option<Buckets>,
    /// Class the request asked for (header, rule or default).
    pub requested_class: Class,
    /// Class it is served as (after demotion; equals `requested_class` unless degraded).
    pub class: Class,
    /// Admission outcome.
    pub admission: Admission,
    /// Feature flags on for the routing key (bit `i`: `policy.flags.items[i]`); empty without
    /// a key, without a `flags` section, and for excluded requests.
    pub flags: FlagSet,
}

impl Decision {
    /// Shedding priority: the key's priority bucket, 0 (shed first) without a key.
    pub fn priority(&self) -> u16 {
        self.buckets.map_or(0, |b| b.priority)
    }

    /// Whether the request must be answered locally with the shed status.
    pub fn is_shed(&self) -> bool {
        self.admission == Admission::Shed
    }

    /// The `x-knhk-decision` debug header value.
    pub fn debug_header(&self, version: u64) -> String {
        let mut out = String::with_capacity(112);
        let route = self.route.map_or("none", Route::as_str);
        let _ = write!(out, "route={route};reason={}", self.reason.as_str());
        if let Some(b) = self.buckets {
            let _ = write!(out, ";bucket={};priority={}", b.routing, b.priority);
        }
        let _ = write!(
            out,
            ";class={};requested={};admission={};version={version}",
            self.class.as_str(),
            self.requested_class.as_str(),
            self.admission.as_str()
        );
        out
    }
}

/// Decide route and admission for one request under `policy` and the current shed `levels`.
pub fn decide(policy: &Policy, levels: &ShedLevels, req: &dyn RequestHeaders) -> Decision {
    if is_excluded(policy, req) {
        return Decision {
            route: None,
            reason: RouteReason::Excluded,
            buckets: None,
            requested_class: policy.default_class,
            class: policy.default_class,
            admission: Admission::NotEvaluated,
            flags: FlagSet::EMPTY,
        };
    }
    let buckets = routing_key(policy, req).map(|key| policy.bucket_key.buckets(&key.bytes));
    // Precedence: exclusions (above) > force header > audience > weight.
    let (route, reason) = match (forced_route(policy, req), buckets) {
        (Some(route), _) => (route, RouteReason::Forced),
        _ if in_audience(policy, req, buckets.map(|b| b.routing)) => {
            (Route::Canary, RouteReason::Audience)
        }
        (None, Some(b)) if is_canary(b.routing, policy.canary_basis_points) => {
            (Route::Canary, RouteReason::Weighted)
        }
        (None, Some(_)) => (Route::Stable, RouteReason::Weighted),
        (None, None) => (Route::Stable, RouteReason::NoKey),
    };
    let requested_class = classify(policy, req);
    let priority = buckets.map_or(0, |b| b.priority);
    let (class, admission) = admit(policy, levels, requested_class, priority);
    Decision {
        route: Some(route),
        reason,
        buckets,
        requested_class,
        class,
        admission,
        flags: policy.flags_on(buckets.as_ref()),
    }
}

/// The force header's verdict, when enabled and set to `always` or `never` (any case).
fn forced_route(policy: &Policy, req: &dyn RequestHeaders) -> Option<Route> {
    let name = policy.force_header.as_deref()?;
    let value = req.header(name)?;
    if value.eq_ignore_ascii_case(b"always") {
        Some(Route::Canary)
    } else if value.eq_ignore_ascii_case(b"never") {
        Some(Route::Stable)
    } else {
        None
    }
}

/// Admission for a request of `class` with shedding `priority`.
///
/// A class sheds the keys whose priority bucket is below its level. A `degrade` class demotes
/// those keys to the next colder class, where that class's level and strategy apply in turn;
/// C1 has nowhere colder, so it sheds. Returns the class served and the outcome.
pub fn admit(
    policy: &Policy,
    levels: &ShedLevels,
    class: Class,
    priority: u16,
) -> (Class, Admission) {
    if !policy.admission_enabled {
        return (class, Admission::NotEvaluated);
    }
    let mut current = class;
    loop {
        if priority >= levels[current.index()] {
            break;
        }
        match (policy.budget(current).strategy, current.demoted()) {
            (Strategy::Degrade, Some(colder)) => current = colder,
            _ => {
                let outcome = if policy.shadow {
                    Admission::ShadowShed
                } else {
                    Admission::Shed
                };
                return (if policy.shadow { class } else { current }, outcome);
            }
        }
    }
    match (current == class, policy.shadow) {
        (true, _) => (class, Admission::Admitted),
        (false, false) => (current, Admission::Degraded),
        (false, true) => (class, Admission::ShadowDegraded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::buckets;
    use crate::host::FakeRequest;

    fn policy(json: &str) -> Policy {
        Policy::from_json(json.as_bytes()).unwrap()
    }

    fn key_with(salt: &[u8], pred: impl Fn(Buckets) -> bool) -> String {
        (0..100_000)
            .map(|i| format!("user-{i}"))
            .find(|k| pred(buckets(salt, k.as_bytes())))
            .unwrap()
    }

    /// Every weighted route equals `routing bucket < canary_basis_points` for its key.
    #[test]
    fn weighted_route_follows_the_bucket() {
        let p = policy(
            r#"{"routing":{"salt":"s","canary_basis_points":2500,"key_sources":[{"header":"x-user"}]}}"#,
        );
        for i in 0..2_000 {
            let key = format!("k{i}");
            let d = decide(&p, &[0; 3], &FakeRequest::get("/").with("x-user", &key));
            let b = buckets(b"s", key.as_bytes());
            assert_eq!(d.buckets, Some(b));
            let expected = if b.routing < 2500 {
                Route::Canary
            } else {
                Route::Stable
            };
            assert_eq!((d.route, d.reason), (Some(expected), RouteReason::Weighted));
        }
    }

    /// The force header overrides the weight only when enabled, and only for always/never.
    #[test]
    fn force_header_only_when_enabled() {
        let off = policy(r#"{"routing":{"canary_basis_points":0}}"#);
        let req = FakeRequest::get("/")
            .with("x-request-id", "r")
            .with("x-knhk-canary", "always");
        assert_eq!(decide(&off, &[0; 3], &req).route, Some(Route::Stable));
        let on = policy(r#"{"routing":{"canary_basis_points":0,"force_header":{"enabled":true}}}"#);
        let d = decide(&on, &[0; 3], &req);
        assert_eq!(
            (d.route, d.reason),
            (Some(Route::Canary), RouteReason::Forced)
        );
        let all =
            policy(r#"{"routing":{"canary_basis_points":10000,"force_header":{"enabled":true}}}"#);
        let never = FakeRequest::get("/")
            .with("x-request-id", "r")
            .with("x-knhk-canary", "NEVER");
        assert_eq!(decide(&all, &[0; 3], &never).route, Some(Route::Stable));
        let junk = FakeRequest::get("/")
            .with("x-request-id", "r")
            .with("x-knhk-canary", b"\xffmaybe");
        assert_eq!(decide(&all, &[0; 3], &junk).reason, RouteReason::Weighted);
    }

    /// Excluded paths get no route, no buckets and no admission, even at full shed.
    #[test]
    fn excluded_requests_are_untouched() {
        let p = policy(
            r#"{"routing":{"canary_basis_points":10000,"exclude":{"path_prefixes":["/healthz"]}}}"#,
        );
        let d = decide(
            &p,
            &[10_000; 3],
            &FakeRequest::get("/healthz").with("x-request-id", "r"),
        );
        assert_eq!(
            (d.route, d.admission, d.buckets),
            (None, Admission::NotEvaluated, None)
        );
    }

    /// A keyless request goes stable and is the first to be shed.
    #[test]
    fn no_key_goes_stable_with_lowest_priority() {
        let p = policy(r#"{"routing":{"canary_basis_points":10000}}"#);
        let d = decide(&p, &[0, 1, 0], &FakeRequest::get("/"));
        assert_eq!(
            (d.route, d.reason, d.priority()),
            (Some(Route::Stable), RouteReason::NoKey, 0)
        );
        // Keyless requests are the first to go when W1 sheds even one basis point.
        assert_eq!(d.admission, Admission::Shed);
    }

    /// Strict shedding at level L sheds exactly the keys with priority < L.
    #[test]
    fn strict_sheds_exactly_the_low_priority_buckets() {
        let p = policy(r#"{"routing":{"key_sources":[{"header":"x-user"}]}}"#);
        let levels = [0, 3000, 0];
        for i in 0..2_000 {
            let key = format!("k{i}");
            let d = decide(&p, &levels, &FakeRequest::get("/").with("x-user", &key));
            let low = buckets(b"knhk", key.as_bytes()).priority < 3000;
            assert_eq!(d.is_shed(), low, "key {key}");
            assert_eq!(d.class, Class::W1);
        }
    }

    /// Degrade demotes through each over-level class and sheds at C1.
    #[test]
    fn degrade_demotes_along_the_chain_and_c1_sheds() {
        let p = policy(
            r#"{"routing":{"salt":"d"},"admission":{"trust_class_header":true,"classes":{"R1":{"p99_max_ms":10,"strategy":"degrade"},"W1":{"strategy":"degrade"}}}}"#,
        );
        let low = key_with(b"d", |b| b.priority < 100);
        let mid = key_with(b"d", |b| (200..300).contains(&b.priority));
        let high = key_with(b"d", |b| b.priority > 9_000);
        let req = |k: &str| {
            FakeRequest::get("/")
                .with("x-request-id", k)
                .with("x-knhk-class", "R1")
        };
        let levels = [5_000, 250, 150];
        // Over R1's level, demoted to W1; over W1's too, demoted to C1; over C1's: shed.
        assert_eq!(
            admit(
                &p,
                &levels,
                Class::R1,
                buckets(b"d", low.as_bytes()).priority
            ),
            (Class::C1, Admission::Shed)
        );
        let d = decide(&p, &levels, &req(&mid));
        assert_eq!(
            (d.requested_class, d.class, d.admission),
            (Class::R1, Class::C1, Admission::Degraded)
        );
        let d = decide(&p, &levels, &req(&high));
        assert_eq!((d.class, d.admission), (Class::R1, Admission::Admitted));
    }

    /// Shadow mode reports shed/degrade outcomes but serves the requested class.
    #[test]
    fn shadow_mode_never_enforces() {
        let p = policy(
            r#"{"admission":{"shadow":true,"classes":{"R1":{"p99_max_ms":10,"strategy":"degrade"}}}}"#,
        );
        assert_eq!(
            admit(&p, &[10_000, 0, 0], Class::R1, 5),
            (Class::R1, Admission::ShadowDegraded)
        );
        assert_eq!(
            admit(&p, &[0, 10_000, 0], Class::W1, 5),
            (Class::W1, Admission::ShadowShed)
        );
        assert_eq!(
            admit(&p, &[0, 0, 0], Class::W1, 5),
            (Class::W1, Admission::Admitted)
        );
    }

    /// With admission off nothing is shed, whatever the levels.
    #[test]
    fn disabled_admission_is_not_evaluated() {
        let p = policy(r#"{"admission":{"enabled":false}}"#);
        assert_eq!(
            admit(&p, &[10_000; 3], Class::R1, 0),
            (Class::R1, Admission::NotEvaluated)
        );
    }

    /// The debug header carries route, reason, buckets, classes, outcome and version in a fixed format.
    #[test]
    fn debug_header_format() {
        let p = policy(r#"{"routing":{"salt":"s","canary_basis_points":10000}}"#);
        let d = decide(
            &p,
            &[0; 3],
            &FakeRequest::get("/").with("x-request-id", "abc"),
        );
        let b = buckets(b"s", b"abc");
        assert_eq!(
            d.debug_header(7),
            format!(
                "route=canary;reason=weighted;bucket={};priority={};class=W1;requested=W1;admission=admitted;version=7",
                b.routing, b.priority
            )
        );
        let none = decide(
            &policy(r#"{"routing":{"exclude":{"hosts":["h"]}}}"#),
            &[0; 3],
            &FakeRequest::get("/").with(":authority", "h"),
        );
        assert_eq!(
            none.debug_header(1),
            "route=none;reason=excluded;class=W1;requested=W1;admission=not_evaluated;version=1"
        );
    }
}

#[cfg(test)]
mod staging_tests;
