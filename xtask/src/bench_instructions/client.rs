//! The load of the instruction count: GET requests one at a time on one HTTP/1.1 keep-alive
//! connection (`std::net::TcpStream`), each with a fresh `x-user-id`, plain or browser-like headers.
//!
//! Sequential requests make every request's work the same: no batching of reads or writes in
//! Envoy, no connection setup inside a measured batch. Every response must be `200` with a
//! `content-length` body, which is read to its end before the next request goes out.

use crate::bench::upstream::content_length;
use anyhow::{bail, Context};
use knhk_e2e::raw;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest wait for one response: Envoy runs some 50 times slower under callgrind.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The `host` header of every request.
pub const HOST: &str = "bench.knhk";

/// Which headers a request carries besides `host` and `x-user-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Headers {
    /// Only `accept-encoding: identity` (what Python's `http.client` adds).
    Plain,
    /// What a browser sends: user agent, accept headers, a ~700-byte cookie, a bearer token, a trace context.
    Browser,
}

impl Headers {
    /// Name for the report.
    pub fn name(self) -> &'static str {
        match self {
            Headers::Plain => "plain",
            Headers::Browser => "browser",
        }
    }

    /// The headers after `host` and `x-user-id`, the same on every request.
    pub fn extra(self) -> Vec<(&'static str, String)> {
        match self {
            Headers::Plain => vec![("accept-encoding", "identity".to_string())],
            Headers::Browser => browser_headers(),
        }
    }
}

/// Typical headers of a browser's request to an API behind a login.
fn browser_headers() -> Vec<(&'static str, String)> {
    // 17 cookies of ~40 bytes: ~700 bytes, as a site with a session, consent and analytics sets.
    let cookie = (0..17)
        .map(|i| format!("pref_{i:02}=v{i}-a1B2c3D4e5F6g7H8i9J0kLmNoPqR"))
        .collect::<Vec<_>>()
        .join("; ");
    let token = format!(
        "Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
        "eyJzdWIiOiJ1c2VyLTQyIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDM2MDAsInNjb3BlIjoiYXBpIn0",
        "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
    );
    vec![
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36".to_string()),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8".to_string()),
        ("accept-language", "en-GB,en;q=0.9,de;q=0.8".to_string()),
        ("accept-encoding", "gzip, deflate, br, zstd".to_string()),
        ("referer", "https://bench.knhk/app/dashboard".to_string()),
        ("cookie", cookie),
        ("authorization", token),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string()),
        ("sec-ch-ua", "\"Chromium\";v=\"126\", \"Not.A/Brand\";v=\"24\"".to_string()),
        ("sec-ch-ua-mobile", "?0".to_string()),
        ("sec-ch-ua-platform", "\"Linux\"".to_string()),
        ("sec-fetch-site", "same-origin".to_string()),
        ("sec-fetch-mode", "cors".to_string()),
    ]
}

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read past the previous response (none with a well-behaved server).
    buf: Vec<u8>,
}

/// A response that was not `200`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadStatus {
    /// Status code.
    pub status: u16,
    /// The body, lossily decoded.
    pub body: String,
}

/// What a batch of requests got back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Responses with status 200.
    pub ok: u64,
    /// Responses with another status.
    pub bad: u64,
    /// The first of those.
    pub first_bad: Option<BadStatus>,
}

impl Connection {
    /// Connect to `addr`.
    pub fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        stream
            .set_read_timeout(Some(RESPONSE_TIMEOUT))
            .context("set read timeout")?;
        stream
            .set_write_timeout(Some(RESPONSE_TIMEOUT))
            .context("set write timeout")?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Send `count` GETs of `path`, the i-th with `x-user-id: <key_prefix>-<i>` and `extra`
    /// headers, one after the other; count the statuses.
    pub fn batch(
        &mut self,
        path: &str,
        key_prefix: &str,
        extra: &[(&str, String)],
        count: u32,
    ) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        for i in 0..count {
            let key = format!("{key_prefix}-{i}");
            let (status, body) = self
                .get(path, &key, extra)
                .with_context(|| format!("request {} of {count} (x-user-id {key})", i + 1))?;
            if status == 200 {
                outcome.ok += 1;
            } else {
                outcome.bad += 1;
                outcome.first_bad.get_or_insert_with(|| BadStatus {
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
        }
        Ok(outcome)
    }

    /// One GET; the status and body of its response.
    pub fn get(
        &mut self,
        path: &str,
        user_id: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.stream
            .write_all(&request(path, user_id, extra))
            .context("write request")?;
        self.read_response()
    }

    /// Read exactly one response (head and `content-length` body) off the connection.
    fn read_response(&mut self) -> anyhow::Result<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                bail!("response head longer than {MAX_HEAD_BYTES} bytes");
            }
            self.fill()?;
        };
        let head = &self.buf[..head_end];
        let lowered = String::from_utf8_lossy(head).to_ascii_lowercase();
        if lowered.contains("\r\ntransfer-encoding:") {
            bail!(
                "response without content-length (transfer-encoding) is not supported: {lowered:?}"
            );
        }
        let total = head_end + content_length(head);
        while self.buf.len() < total {
            self.fill()?;
        }
        let reply = raw::parse(&self.buf[..total])?;
        self.buf.drain(..total);
        Ok((reply.status, reply.body))
    }

    /// Append what the socket has to the buffer; the peer closing is an error.
    fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).context("read response")?;
        if n == 0 {
            bail!("connection closed by the server mid-response");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// The bytes of one keep-alive GET.
pub fn request(path: &str, user_id: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let mut text = format!("GET {path} HTTP/1.1\r\nhost: {HOST}\r\nx-user-id: {user_id}\r\n");
    for (name, value) in extra {
        text.push_str(name);
        text.push_str(": ");
        text.push_str(value);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server answering each request on one connection with the next canned response,
    /// written in two pieces to exercise partial reads; returns what it received.
    fn serve(responses: Vec<&'static [u8]>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            for (k, response) in responses.into_iter().enumerate() {
                while received.windows(4).filter(|w| *w == b"\r\n\r\n").count() <= k {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).unwrap();
                    assert!(n > 0, "client closed early");
                    received.extend_from_slice(&chunk[..n]);
                }
                let (a, b) = response.split_at(response.len() / 2);
                conn.write_all(a).unwrap();
                conn.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
                conn.write_all(b).unwrap();
            }
            received
        });
        (addr, thread)
    }

    /// Bodies are read to their content-length, statuses counted, requests sent one at a time.
    #[test]
    fn batch_counts_statuses_on_one_connection() {
        let (addr, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nshed",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ]);
        let mut conn = Connection::open(addr).unwrap();
        let extra = Headers::Plain.extra();
        let outcome = conn.batch("/direct", "b1", &extra, 3).unwrap();
        assert_eq!(outcome.ok, 2);
        assert_eq!(outcome.bad, 1);
        assert_eq!(
            outcome.first_bad,
            Some(BadStatus {
                status: 503,
                body: "shed".into()
            })
        );
        let received = String::from_utf8(server.join().unwrap()).unwrap();
        assert_eq!(received.matches("GET /direct HTTP/1.1\r\n").count(), 3);
        assert!(received.contains("x-user-id: b1-0\r\n"));
        assert!(received.contains("x-user-id: b1-2\r\n"));
        assert!(received.contains("accept-encoding: identity\r\n"));
    }

    /// A server closing mid-body and a chunked response are errors, not miscounted requests.
    #[test]
    fn truncated_and_chunked_responses_fail() {
        let (addr, server) = serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nok"]);
        let mut conn = Connection::open(addr).unwrap();
        let err = conn.get("/", "k", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("closed"), "{err:#}");
        server.join().unwrap();
        let (addr, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ]);
        let mut conn = Connection::open(addr).unwrap();
        assert!(conn.get("/", "k", &[]).is_err());
        server.join().unwrap();
    }

    /// The browser header set is realistic in size: a ~700-byte cookie, over a kilobyte in all.
    #[test]
    fn browser_headers_are_browser_sized() {
        let headers = Headers::Browser.extra();
        let cookie = headers.iter().find(|(n, _)| *n == "cookie").unwrap();
        assert!((650..=800).contains(&cookie.1.len()), "{}", cookie.1.len());
        assert!(headers.len() >= 12);
        let bytes = request("/", "u", &headers);
        assert!(bytes.len() > 1500, "{}", bytes.len());
        assert!(bytes.ends_with(b"\r\n\r\n"));
    }
}
