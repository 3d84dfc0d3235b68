//! Criterion benchmark of the per-request route + admit decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark: failing setup should abort loudly

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use knhk_core::host::FakeRequest;
use knhk_core::{decide, Policy};

fn bench_decide(c: &mut Criterion) {
    let policy = Policy::from_json(
        br#"{"routing":{"canary_basis_points":1000,"key_sources":[{"header":"x-user-id"}]}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let requests: Vec<FakeRequest> = (0..1024)
        .map(|i| FakeRequest::get("/api").with("x-user-id", format!("user-{i}")))
        .collect();
    let mut i = 0usize;
    c.bench_function("decide/header-key", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            black_box(decide(&policy, &[0, 2000, 0], &requests[i]))
        })
    });
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
