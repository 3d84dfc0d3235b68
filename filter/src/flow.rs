//! The header edits that follow a decision, independent of the host: which request and
//! response headers the filter writes or removes, given the policy, the decision and the
//! request as it arrived. Each adapter supplies the write (`set(name, Some(value))`) and the
//! removal (`set(name, None)`); the rules live here once and are unit-tested natively.

use knhk_core::host::RequestHeaders;
use knhk_core::limits::DEFAULT_FLAGS_HEADER;
use knhk_core::{Admission, Decision, Policy};

/// Response header naming the admission outcome of a shed, degraded or refused request.
pub const ADMISSION_HEADER: &str = "x-knhk-admission";
/// Response header carrying the decision when `debug_headers` is on.
pub const DECISION_HEADER: &str = "x-knhk-decision";

/// The route header, applied before anything else (also to a request that is then shed):
/// the decided route's value; for an excluded request, a route header the client sent is
/// removed — a client never picks the cluster with a route header of its own.
pub fn edit_route_header(
    policy: &Policy,
    decision: &Decision,
    request: &impl RequestHeaders,
    mut set: impl FnMut(&str, Option<&str>),
) {
    match decision.route {
        Some(route) => set(&policy.route_header, Some(policy.route_value(route))),
        None if request.header(&policy.route_header).is_some() => set(&policy.route_header, None),
        None => {}
    }
}

/// The edits of a request that is forwarded (not shed), after [`edit_route_header`]:
///
/// - **flags**: the filter's value replaces whatever a client sent (it must not pick its own
///   flags); with no flag on, the header is removed. Without a flags section a client's
///   default flags header (`x-knhk-flags`) is removed too. Excluded requests stay untouched.
/// - **class**: upstreams see exactly one class header, the class served — written when
///   demoted, and whenever the request carried one (replacing every value: a request with two
///   class headers whose first matched would otherwise reach the upstream with both).
pub fn edit_forwarded_headers(
    policy: &Policy,
    decision: &Decision,
    request: &impl RequestHeaders,
    mut set: impl FnMut(&str, Option<&str>),
) {
    match (&policy.flags, decision.route) {
        (Some(flags), Some(_)) => set(&flags.header, flags.header_value(decision.flags).as_deref()),
        (None, Some(_)) if request.header(DEFAULT_FLAGS_HEADER).is_some() => {
            set(DEFAULT_FLAGS_HEADER, None)
        }
        _ => {}
    }
    if decision.admission == Admission::Degraded || request.header(&policy.class_header).is_some() {
        set(&policy.class_header, Some(decision.class.as_str()));
    }
}

/// The response edits of a forwarded request: a degraded request's response says so
/// (`x-knhk-admission: degraded`), and with `debug_headers` the decision is exposed
/// (`x-knhk-decision`). A shed request's local reply carries its own headers instead.
pub fn edit_response_headers(
    policy: &Policy,
    decision: &Decision,
    mut set: impl FnMut(&str, Option<&str>),
) {
    if decision.admission == Admission::Degraded {
        set(ADMISSION_HEADER, Some("degraded"));
    }
    if policy.debug_headers {
        set(
            DECISION_HEADER,
            Some(&decision.debug_header(policy.version)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_core::admission::ShedLevels;
    use knhk_core::decide;
    use knhk_core::host::FakeRequest;

    fn policy(json: &str) -> Policy {
        Policy::from_json(json.as_bytes()).unwrap()
    }

    /// Every edit, in order, for `request` under `policy` with no class shedding.
    fn edits(policy: &Policy, request: &FakeRequest) -> Vec<(String, Option<String>)> {
        edits_at(policy, request, &ShedLevels::default())
    }

    fn edits_at(
        policy: &Policy,
        request: &FakeRequest,
        levels: &ShedLevels,
    ) -> Vec<(String, Option<String>)> {
        let decision = decide(policy, levels, request);
        let mut out = Vec::new();
        let mut record = |n: &str, v: Option<&str>| out.push((n.to_owned(), v.map(str::to_owned)));
        edit_route_header(policy, &decision, request, &mut record);
        edit_forwarded_headers(policy, &decision, request, &mut record);
        out
    }

    fn set(name: &str, value: &str) -> (String, Option<String>) {
        (name.to_owned(), Some(value.to_owned()))
    }

    fn removed(name: &str) -> (String, Option<String>) {
        (name.to_owned(), None)
    }

    /// A decided request gets the route's value (the policy's `route_values`), replacing a
    /// client's own route header.
    #[test]
    fn the_route_header_carries_the_decided_route_value() {
        let p = policy(
            r#"{"routing":{"canary_basis_points":10000,"key_sources":[{"header":"x-user-id"}],"route_values":{"stable":"v1","canary":"v2"}}}"#,
        );
        let req = FakeRequest::get("/")
            .with("x-user-id", "u")
            .with("x-knhk-route", "v1");
        assert_eq!(edits(&p, &req), [set("x-knhk-route", "v2")]);
        let p = policy(r#"{"routing":{"canary_basis_points":0}}"#);
        assert_eq!(edits(&p, &req), [set("x-knhk-route", "stable")]);
    }

    /// An excluded request loses a route header the client sent and keeps its flags header;
    /// a class header it carried is corrected to the class served (the default class);
    /// without either nothing is touched.
    #[test]
    fn exclusions_strip_a_clients_route_header_and_touch_nothing_else() {
        let p = policy(
            r#"{"routing":{"exclude":{"path_prefixes":["/healthz"]}},"flags":{"items":[{"name":"f","basis_points":10000}]}}"#,
        );
        let req = FakeRequest::get("/healthz")
            .with("x-knhk-route", "canary")
            .with("x-knhk-flags", "mine")
            .with("x-knhk-class", "R1");
        assert_eq!(
            edits(&p, &req),
            [
                removed("x-knhk-route"),
                set("x-knhk-class", p.default_class.as_str())
            ]
        );
        assert_eq!(edits(&p, &FakeRequest::get("/healthz")), []);
    }

    /// With a flags section the filter's value replaces the client's; with no flag on the
    /// header is removed; without a section a client's default flags header is removed.
    #[test]
    fn the_flags_header_is_the_filters_own() {
        let on = policy(
            r#"{"routing":{"key_sources":[{"header":"x-user-id"}]},"flags":{"items":[{"name":"beta","basis_points":10000}]}}"#,
        );
        let req = FakeRequest::get("/")
            .with("x-user-id", "u")
            .with("x-knhk-flags", "admin");
        assert_eq!(
            edits(&on, &req),
            [set("x-knhk-route", "stable"), set("x-knhk-flags", "beta")]
        );
        let off = policy(r#"{"flags":{"items":[{"name":"beta","basis_points":0}]}}"#);
        assert_eq!(
            edits(&off, &req),
            [set("x-knhk-route", "stable"), removed("x-knhk-flags")]
        );
        let none = policy("{}");
        assert_eq!(
            edits(&none, &req),
            [set("x-knhk-route", "stable"), removed("x-knhk-flags")]
        );
        let plain = FakeRequest::get("/").with("x-user-id", "u");
        assert_eq!(edits(&none, &plain), [set("x-knhk-route", "stable")]);
    }

    /// A request that carried a class header reaches the upstream with exactly the class
    /// served (one value, the corrected one); without one, none is added unless demoted.
    #[test]
    fn the_class_header_is_corrected_to_the_class_served() {
        let p = policy("{}");
        let req = FakeRequest::get("/")
            .with("x-knhk-class", "bogus")
            .with("x-knhk-class", "R1");
        let e = edits(&p, &req);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[1].0, "x-knhk-class");
        assert!(e[1].1.is_some());
        assert_eq!(
            edits(&p, &FakeRequest::get("/")),
            [set("x-knhk-route", "stable")]
        );
    }

    /// A demoted request gets the class it is served as, though it carried no class header.
    #[test]
    fn a_demoted_request_is_told_its_class() {
        let p = policy(
            r#"{"admission":{"rules":[{"class":"R1","path_prefix":"/"}],"classes":{"R1":{"strategy":"degrade"}}}}"#,
        );
        let req = FakeRequest::get("/checkout").with("x-user-id", "u");
        assert_eq!(
            edits_at(&p, &req, &[10_000, 0, 0]),
            [set("x-knhk-route", "stable"), set("x-knhk-class", "W1")]
        );
        assert_eq!(edits(&p, &req), [set("x-knhk-route", "stable")]);
    }

    /// Responses of degraded requests say so; the decision header appears only with
    /// `debug_headers`, and then carries the decision's own rendering.
    #[test]
    fn response_edits_name_degradation_and_debug_only_when_asked() {
        let p = policy(
            r#"{"admission":{"rules":[{"class":"R1","path_prefix":"/"}],"classes":{"R1":{"strategy":"degrade"}}}}"#,
        );
        let req = FakeRequest::get("/").with("x-user-id", "u");
        let response = |p: &Policy, levels: &ShedLevels| {
            let d = decide(p, levels, &req);
            let mut out = Vec::new();
            edit_response_headers(p, &d, |n, v| out.push((n.to_owned(), v.map(str::to_owned))));
            (d, out)
        };
        assert_eq!(response(&p, &[0, 0, 0]).1, []);
        assert_eq!(
            response(&p, &[10_000, 0, 0]).1,
            [set(ADMISSION_HEADER, "degraded")]
        );
        let debug = policy(r#"{"debug_headers":true,"version":4}"#);
        let (d, out) = response(&debug, &[0, 0, 0]);
        assert_eq!(out, [set(DECISION_HEADER, &d.debug_header(4))]);
        assert!(
            out[0].1.as_deref().unwrap().contains("route=stable"),
            "{out:?}"
        );
    }
}
