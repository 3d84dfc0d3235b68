//! Hostile input never takes Envoy or the filter down: non-UTF-8 bytes, 64 KiB values, thousands
//! of cookies, garbage query strings, missing keys. Afterwards Envoy is still up, no VM was
//! recreated, and the filter still routes by the core.

// An integration test binary: failing loudly on the first broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_core::bucket::buckets;
use knhk_e2e::client::Decision;
use knhk_e2e::raw::{exchange, get_request, RawReply};
use knhk_e2e::rig::{base_config, oracle_route, Rig};
use std::net::SocketAddr;

const SALT: &str = "s1";

/// One hostile request: a label, the request target and raw header lines, and what the filter
/// must make of it when Envoy lets it through.
struct Case {
    name: &'static str,
    target: Vec<u8>,
    host: &'static str,
    headers: Vec<(&'static str, Vec<u8>)>,
    /// Routing key the filter must have bucketed (raw bytes), when it is determined.
    key: Option<Vec<u8>>,
    /// Decision reason the filter must report, when it is determined.
    reason: Option<&'static str>,
}

fn case(name: &'static str, target: &[u8], headers: Vec<(&'static str, Vec<u8>)>) -> Case {
    Case {
        name,
        target: target.to_vec(),
        host: "app.example",
        headers,
        key: None,
        reason: None,
    }
}

impl Case {
    fn key(mut self, key: &[u8]) -> Case {
        self.key = Some(key.to_vec());
        self.reason = Some("weighted");
        self
    }

    fn reason(mut self, reason: &'static str) -> Case {
        self.reason = Some(reason);
        self
    }
}

fn cases() -> Vec<Case> {
    let kib64 = vec![b'k'; 64 * 1024];
    let many_cookies: Vec<u8> = (0..4_000)
        .map(|i| format!("c{i}=v{i}; "))
        .collect::<String>()
        .into_bytes()
        .into_iter()
        .chain(b"uid=last".iter().copied())
        .collect();
    let ten_kb = vec![b'x'; 10 * 1024];
    let mut long_query = b"/search?".to_vec();
    long_query.extend_from_slice(&[b'&'; 20_000]);
    long_query.extend_from_slice(b"user=after-ampersands");
    let mut excluded_host = case("non-UTF-8 host, excluded-looking", b"/", vec![]);
    excluded_host.host = "internal.example";
    excluded_host
        .headers
        .push(("x-user-id", b"\xffkey".to_vec()));
    vec![
        case(
            "non-UTF-8 key header",
            b"/",
            vec![("x-user-id", b"\xff\xfe\x80abc".to_vec())],
        )
        .key(b"\xff\xfe\x80abc"),
        case(
            "non-UTF-8 cookie",
            b"/",
            vec![("cookie", b"a=\xc3\x28; uid=\xff\xfe; b=1".to_vec())],
        )
        .key(b"\xff\xfe"),
        case(
            "non-UTF-8 class header",
            b"/hot/x",
            vec![("x-knhk-class", b"\xff\xfeR1".to_vec())],
        ),
        case(
            "non-UTF-8 force header",
            b"/",
            vec![
                ("x-knhk-canary", b"\xffalways".to_vec()),
                ("x-user-id", b"forced?".to_vec()),
            ],
        )
        .key(b"forced?"),
        case(
            "non-UTF-8 request id, no key",
            b"/",
            vec![("x-request-id", b"\xff\xfe".to_vec())],
        )
        .reason("weighted"),
        case(
            "64 KiB key header",
            b"/",
            vec![("x-user-id", kib64.clone())],
        ),
        case(
            "64 KiB class header",
            b"/",
            vec![("x-knhk-class", kib64.clone())],
        ),
        case(
            "64 KiB cookie",
            b"/",
            vec![("cookie", [b"uid=".as_slice(), &kib64].concat())],
        ),
        case("4000 cookies", b"/", vec![("cookie", many_cookies)]).key(b"last"),
        case(
            "five 10 KB headers",
            b"/",
            vec![
                ("x-user-id", ten_kb.clone()),
                ("x-a", ten_kb.clone()),
                ("x-b", ten_kb.clone()),
                ("cookie", ten_kb.clone()),
                ("x-knhk-class", ten_kb.clone()),
            ],
        ),
        case(
            "80 junk headers",
            b"/",
            (0..80).map(|_| ("x-junk", b"\x80\x81".to_vec())).collect(),
        ),
        case("percent garbage query", b"/?user=%ff%fe%00%zz&user", vec![]).key(b"%ff%fe%00%zz"),
        case("empty and keyless pairs", b"/?&&user&=&user==x&=y&", vec![]),
        case("20000 ampersands", &long_query, vec![]).key(b"after-ampersands"),
        case(
            "query without value then key",
            b"/p?user",
            vec![("cookie", b";;;=;uid;uid=".to_vec())],
        ),
        case("non-UTF-8 path", b"/\xff\xfe?user=\xff", vec![]),
        case(
            "empty cookie and key",
            b"/",
            vec![("cookie", Vec::new()), ("x-user-id", Vec::new())],
        ),
        excluded_host,
    ]
}

async fn send(addr: SocketAddr, c: &Case) -> RawReply {
    let headers: Vec<(&str, &[u8])> = c.headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    exchange(addr, &get_request(&c.target, c.host, &headers))
        .await
        .unwrap_or_else(|e| panic!("{}: no HTTP response: {e:#}", c.name))
}

/// Every hostile request gets an HTTP answer; those Envoy accepts are decided by the filter
/// (debug header present, so the VM did not fail open); afterwards Envoy is ready, no VM was
/// recreated or reloaded, the log shows no wasm failure, and a normal request routes by the core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_crashes() {
    let mut config = base_config();
    config["routing"]["canary_basis_points"] = 5000.into();
    let mut rig = Rig::start("hostile", &config).await.unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], rig.envoy.listener_port()));
    let vms_before = rig
        .envoy
        .metric("wasm.envoy.wasm.runtime.v8.created")
        .await
        .unwrap();

    let cases = cases();
    for round in 0..3 {
        let replies = futures_util::future::join_all(cases.iter().map(|c| send(addr, c))).await;
        for (c, reply) in cases.iter().zip(&replies) {
            assert!(
                matches!(reply.status, 200 | 400 | 404 | 413 | 414 | 431),
                "round {round}, {}: unexpected status {} (body {:?})",
                c.name,
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
            if reply.status == 200 {
                assert!(
                    reply.header("x-knhk-decision").is_some(),
                    "round {round}, {}: answered without a filter decision (VM failed open?)",
                    c.name
                );
                assert!(
                    reply.header("x-upstream").is_some(),
                    "round {round}, {}: no upstream",
                    c.name
                );
                let decision =
                    Decision::parse(&reply.header("x-knhk-decision").unwrap_or_default());
                if let Some(reason) = c.reason {
                    assert_eq!(
                        decision.get("reason"),
                        Some(reason),
                        "round {round}, {}",
                        c.name
                    );
                }
                if let Some(key) = &c.key {
                    let expected = buckets(SALT.as_bytes(), key);
                    assert_eq!(
                        decision.number("bucket"),
                        Some(expected.routing),
                        "round {round}, {}",
                        c.name
                    );
                    let route = if expected.routing < 5000 {
                        "canary"
                    } else {
                        "stable"
                    };
                    assert_eq!(
                        reply.header("x-upstream").as_deref(),
                        Some(route),
                        "round {round}, {}",
                        c.name
                    );
                }
            }
        }
        if round == 0 {
            let summary: Vec<String> = cases
                .iter()
                .zip(&replies)
                .map(|(c, r)| format!("{}: {} {:?}", c.name, r.status, r.header("x-knhk-decision")))
                .collect();
            println!("hostile outcomes:\n  {}", summary.join("\n  "));
        }
    }

    assert!(rig.envoy.is_running(), "envoy exited");
    assert!(rig.envoy.is_ready().await, "envoy is no longer ready");
    let vms_after = rig
        .envoy
        .metric("wasm.envoy.wasm.runtime.v8.created")
        .await
        .unwrap();
    assert_eq!(
        vms_before, vms_after,
        "a wasm VM was recreated during the hostile run"
    );
    assert_eq!(rig.envoy.counter("wasm.knhk.vm_reload").await.unwrap(), 0);
    let log = rig.envoy.log();
    for sign in [
        "Wasm VM failed",
        "panicked",
        "Function: proxy_on",
        "unreachable",
        "critical",
    ] {
        assert!(
            !log.contains(sign),
            "envoy log shows `{sign}`:\n{}",
            rig.envoy.log_tail(40)
        );
    }
    for key in ["after-1", "after-2", "after-3"] {
        let r = rig
            .client
            .get("/api/items", &[("x-user-id", key)])
            .await
            .unwrap();
        assert_eq!(
            r.upstream(),
            Some(oracle_route(SALT, key, 5000)),
            "{key}: {}",
            r.describe()
        );
        assert!(r.decision().is_some(), "{key}: filter no longer deciding");
    }
    assert_eq!(rig.envoy.counter("knhk.decision.errors").await.unwrap(), 0);
}
