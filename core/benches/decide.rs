//! Criterion benchmarks of the per-request hot path: `decide` (route + admit) and
//! `BucketKey::buckets` (the key hash, with the salt's key derived once, as a policy holds it).
//!
//! Goal (issue 2, "Speed"): a decision under 250 ns natively. Every iteration decides a
//! request whose routing key has not been seen in the previous 4,095 iterations, so nothing
//! is served from a warm cache of one key. Requests carry the headers a typical proxied request
//! carries (pseudo-headers, user agent, accept, `x-request-id`), held as the same
//! `(lowercase name, value)` list the filter reads from Envoy in one host call, so header
//! lookups cost here what they cost in the filter.
//!
//! Run: `cargo bench -p knhk-core --bench decide`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use knhk_core::admission::ShedLevels;
use knhk_core::bucket::BucketKey;
use knhk_core::host::FakeRequest;
use knhk_core::{decide, Policy};

/// Distinct requests cycled through per benchmark (a power of two: the index is a mask).
const REQUESTS: usize = 4096;

/// The bench's canary routing: 10 % canary keyed on `x-user-id`, admission on (the defaults).
const STRICT: &str = r#"{"routing":{"salt":"rollout-2026-11","canary_basis_points":1000,"key_sources":[{"header":"x-user-id"}]},"admission":{"enabled":true},"debug_headers":false}"#;
/// As [`STRICT`], with every class degrading instead of shedding (demotion walks the chain).
const DEGRADE: &str = r#"{"routing":{"salt":"rollout-2026-11","canary_basis_points":1000,"key_sources":[{"header":"x-user-id"}]},"admission":{"enabled":true,"classes":{"R1":{"p99_max_ms":100,"strategy":"degrade"},"W1":{"p99_max_ms":500,"strategy":"degrade"}}}}"#;
/// As [`STRICT`] with admission off: routing alone.
const ROUTING_ONLY: &str = r#"{"routing":{"salt":"rollout-2026-11","canary_basis_points":1000,"key_sources":[{"header":"x-user-id"}]},"admission":{"enabled":false}}"#;
/// Three key sources (cookie, query, header) of which only the header is present.
const COOKIE_QUERY_HEADER: &str = r#"{"routing":{"salt":"rollout-2026-11","canary_basis_points":1000,"key_sources":[{"cookie":"uid"},{"query":"uid"},{"header":"x-user-id"}]}}"#;

/// As [`STRICT`] at 0 % with a staging audience (two headers, a cookie, a bucket range) that the
/// bench requests miss, and eight feature flags: the promotion gates' extra per-request work.
const STAGING: &str = r#"{"routing":{"salt":"rollout-2026-11","canary_basis_points":0,"key_sources":[{"header":"x-user-id"}],"audience":{"headers":[{"name":"x-beta","value":"yes"},{"name":"x-staff"}],"cookies":[{"name":"beta","value":"yes"}],"bucket_ranges":[{"from":0,"to":1000}]}},"flags":{"items":[{"name":"f0","basis_points":500},{"name":"f1","basis_points":1000},{"name":"f2","basis_points":2000},{"name":"f3","basis_points":3000},{"name":"f4","basis_points":5000},{"name":"f5","basis_points":7000},{"name":"f6","basis_points":9000},{"name":"f7","basis_points":10000}]}}"#;

/// No class shedding.
const IDLE: ShedLevels = [0, 0, 0];
/// Every class shedding (or demoting) 30 % of its keys.
const SHEDDING: ShedLevels = [3_000, 3_000, 3_000];

/// A typical request through the ingress, with routing key `user`.
fn request(i: usize, with_user: bool) -> FakeRequest {
    let mut req = FakeRequest::get("/api/v1/orders?page=2")
        .with(":authority", "shop.example.com")
        .with(":method", "GET")
        .with(":scheme", "https")
        .with("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0")
        .with("accept", "application/json")
        .with("x-forwarded-proto", "https")
        .with("x-request-id", format!("6f1c2b7e-0d4a-4c3e-9b1a-{i:012x}"));
    if with_user {
        req = req.with(
            "x-user-id",
            format!("user-{:08}", i.wrapping_mul(2_654_435_761) % 100_000_000),
        );
    }
    req
}

fn requests(with_user: bool) -> Vec<FakeRequest> {
    (0..REQUESTS).map(|i| request(i, with_user)).collect()
}

/// Parse a policy; the bench cannot run without it, so report and skip the group on error.
fn policy(json: &str) -> Option<Policy> {
    match Policy::from_json(json.as_bytes()) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("bench policy rejected: {e}");
            None
        }
    }
}

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    let keyed = requests(true);
    let unkeyed = requests(false);
    let cases: [(&str, &str, ShedLevels, &[FakeRequest]); 7] = [
        ("header_key/admission_idle", STRICT, IDLE, &keyed),
        ("header_key/strict_shedding_30pct", STRICT, SHEDDING, &keyed),
        (
            "header_key/degrade_shedding_30pct",
            DEGRADE,
            SHEDDING,
            &keyed,
        ),
        ("header_key/admission_off", ROUTING_ONLY, IDLE, &keyed),
        ("request_id_fallback/admission_idle", STRICT, IDLE, &unkeyed),
        (
            "cookie_query_header/admission_idle",
            COOKIE_QUERY_HEADER,
            IDLE,
            &keyed,
        ),
        ("header_key/audience_and_8_flags", STAGING, IDLE, &keyed),
    ];
    for (name, json, levels, reqs) in cases {
        let Some(p) = policy(json) else { continue };
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) & (REQUESTS - 1);
                decide(black_box(&p), black_box(&levels), black_box(&reqs[i]))
            })
        });
    }
    group.finish();
}

fn bench_buckets(c: &mut Criterion) {
    let mut group = c.benchmark_group("buckets");
    group.throughput(Throughput::Elements(1));
    let keys: Vec<String> = (0..REQUESTS).map(|i| format!("user-{i:08}")).collect();
    let salt_key = BucketKey::new(b"rollout-2026-11");
    let mut i = 0usize;
    group.bench_function("key_13_bytes", |b| {
        b.iter(|| {
            i = (i + 1) & (REQUESTS - 1);
            black_box(&salt_key).buckets(black_box(keys[i].as_bytes()))
        })
    });
    // The longest key the filter hashes (request::MAX_KEY_BYTES): 128 SipHash blocks.
    group.bench_function("key_1024_bytes", |b| {
        b.iter_batched_ref(
            || {
                i = (i + 1) & (REQUESTS - 1);
                let mut key = vec![b'k'; 1024];
                key[..keys[i].len()].copy_from_slice(keys[i].as_bytes());
                key
            },
            |key| black_box(&salt_key).buckets(black_box(key)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_decide, bench_buckets
}
criterion_main!(benches);
