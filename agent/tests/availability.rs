//! Availability without a credential, each with a bounded flood on loopback: unfinished
//! request headers and idle keep-alive connections are closed after `api.header_timeout`;
//! long-polls are capped per client and in total (429 at once beyond), and receipt ingest keeps
//! answering while the caps are reached; connections beyond `api.max_connections` are closed.

// An integration test crate: helpers may fail loudly like the tests they serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_core::receipt::{encode_batch, ReceiptBuilder};
use reqwest::StatusCode;
use support::in_process::InProcessAgent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(dir: &std::path::Path) -> AgentConfig {
    let mut config = AgentConfig {
        origin: "knhk.test/availability".into(),
        data_dir: dir.join("data"),
        ..AgentConfig::default()
    };
    config.api.header_timeout = Duration::from_secs(1);
    config.api.max_connections = 128;
    config.policy.max_long_polls = 24;
    config.policy.max_long_polls_per_client = 16;
    config
}

/// Read until the server closes the connection; how long that took (panics after `limit`).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection is still open after {limit:?}"),
        }
    }
}

/// A request whose headers never finish, and a keep-alive connection left idle after one
/// answered request, are both closed after the 1 s header timeout (not before ~1 s, well
/// before 5 s); the agent still serves afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let agent = InProcessAgent::start(
        config(dir.path()),
        reqwest::Client::new(),
        "/v1/checkpoints/latest",
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    slow.write_all(b"GET /v1/checkpoints/latest HTTP/1.1\r\nhost: agent\r\nx-slow: ")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    let mut idle = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    idle.write_all(b"GET /v1/checkpoints/latest HTTP/1.1\r\nhost: agent\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    closed_within(&mut idle, Duration::from_secs(5)).await;

    let r = agent
        .http
        .get(agent.url("/v1/checkpoints/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    agent.stop().await;
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The flood: 300 concurrent long-polls from one client. 16 are held (its share), the
/// rest are refused with 429 at once naming the setting; a second client still gets up to the
/// total (24), then 429 naming the total; while every slot is held, receipt batches are
/// accepted at once. When the polls end, the slots are free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped_and_never_starve_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.api.max_connections = 512;
    let agent = InProcessAgent::start(cfg, reqwest::Client::new(), "/v1/checkpoints/latest").await;
    let poll = |client: reqwest::Client, url: String| async move {
        let r = client.get(url).send().await.unwrap();
        let status = r.status();
        (status, r.text().await.unwrap())
    };
    let url = agent.url("/v1/config?after=0&timeout_ms=20000");
    let one = client_from("127.0.0.1");
    let flood: Vec<_> = (0..300)
        .map(|_| tokio::spawn(poll(one.clone(), url.clone())))
        .collect();
    // The refused ones answer at once; the held ones stay pending until a new epoch.
    let deadline = Instant::now() + Duration::from_secs(20);
    while flood.iter().filter(|t| t.is_finished()).count() < 300 - 16 {
        assert!(Instant::now() < deadline, "the refusals did not all arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (done, held): (Vec<_>, Vec<_>) = flood.into_iter().partition(|t| t.is_finished());
    for task in done {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(body.contains("policy.max_long_polls_per_client"), "{body}");
    }
    assert_eq!(held.len(), 16);

    let other = client_from("127.0.0.2");
    let mut other_held = Vec::new();
    for _ in 0..8 {
        other_held.push(tokio::spawn(poll(other.clone(), url.clone())));
    }
    // Once all 24 are held (GET /v1/policy reports the held polls), the total refuses.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view: serde_json::Value = agent.get_json("/v1/policy").await;
        if view["waiting"].as_u64() == Some(24) {
            break;
        }
        assert!(Instant::now() < deadline, "polls not all held: {view}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for ip in ["127.0.0.2", "127.0.0.4"] {
        let (status, body) = poll(client_from(ip), url.clone()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(body.contains("(policy.max_long_polls)"), "{body}");
    }

    let started = Instant::now();
    let batch = encode_batch(&[ReceiptBuilder::new(0).build()]).unwrap();
    let r = client_from("127.0.0.3")
        .post(agent.url("/v1/receipts"))
        .header("content-type", "application/x-knhk-receipts")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ingest waited {:?}",
        started.elapsed()
    );

    // A new epoch answers every held poll; the slots are free again.
    let r = agent
        .http
        .put(agent.url("/v1/policy"))
        .json(&serde_json::json!({"routing": {"salt": "flood"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for task in held.into_iter().chain(other_held) {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = poll(one, agent.url("/v1/config?after=1&timeout_ms=50")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "slots are released");
    agent.stop().await;
}

/// Beyond `api.max_connections` open connections, a new one is closed at once; once the
/// holders go, the agent serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.api.max_connections = 128;
    cfg.api.header_timeout = Duration::from_secs(30);
    let agent = InProcessAgent::start(cfg, reqwest::Client::new(), "/v1/checkpoints/latest").await;
    let mut holders = Vec::new();
    for _ in 0..128 {
        let mut s = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
        s.write_all(b"GET /v1/checkpoints/latest HTTP/1.1\r\nhost: agent\r\n")
            .await
            .unwrap();
        holders.push(s);
    }
    // Accepts are asynchronous: a 129th connection is closed once the agent saw all 128.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut extra = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /v1/checkpoints/latest HTTP/1.1\r\nhost: agent\r\n\r\n")
            .await;
        let mut buf = [0u8; 12];
        match tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) | Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "a connection beyond the cap was served"
        );
    }
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = agent
            .http
            .get(agent.url("/v1/checkpoints/latest"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the holders left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.stop().await;
}

/// A bounded flood of receipt batches from one client address: beyond its burst it gets 429
/// with `retry-after` (nothing appended), while another client's batches are all accepted and
/// sealing keeps covering the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_flood_from_one_client_does_not_starve_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.api.receipt_batches_per_second = 20;
    cfg.api.receipt_batch_burst = 20;
    cfg.api.max_connections = 512;
    let agent = InProcessAgent::start(cfg, reqwest::Client::new(), "/v1/checkpoints/latest").await;
    let post = |client: reqwest::Client, url: String, i: u64| async move {
        let batch = encode_batch(&[ReceiptBuilder::new(i).build()]).unwrap();
        let r = client
            .post(url)
            .header("content-type", "application/x-knhk-receipts")
            .body(batch)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry, r.text().await.unwrap())
    };
    let url = agent.url("/v1/receipts");
    let flooder = client_from("127.0.0.2");
    let started = Instant::now();
    let flood: Vec<_> = (0..200)
        .map(|i| tokio::spawn(post(flooder.clone(), url.clone(), i)))
        .collect();
    let calm = client_from("127.0.0.3");
    for i in 0..10 {
        let (status, _, body) = post(calm.clone(), url.clone(), 1000 + i).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the calm client was refused: {body}"
        );
    }
    let mut accepted = 0u64;
    for task in flood {
        let (status, retry, body) = task.await.unwrap();
        match status {
            StatusCode::OK => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(body.contains("api.receipt_batches_per_second"), "{body}");
                assert_eq!(retry.as_deref(), Some("1"));
            }
            other => panic!("{other}: {body}"),
        }
    }
    let allowed = 20 + (started.elapsed().as_secs_f64() * 20.0).ceil() as u64;
    assert!(
        (20..=allowed).contains(&accepted),
        "{accepted} flood batches accepted, at most {allowed}"
    );
    let size: serde_json::Value = agent.get_json("/v1/receipts?limit=1").await;
    let size = size["size"].as_u64().unwrap();
    assert_eq!(size, accepted + 10, "refused batches appended nothing");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cp: serde_json::Value = agent.get_json("/v1/checkpoints/latest").await;
        let text = cp["text"].as_str().unwrap_or_default().to_owned();
        let sealed: u64 = text
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if sealed >= size {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sealing stalled at {sealed} of {size}: {cp}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
}
