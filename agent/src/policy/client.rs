//! A minimal HTTP/1.1 client for the agent's own admin API (`knhk-agent keys rotate-config`,
//! `knhk-agent rollout …`):
//! one request per connection, `Connection: close`, plain loopback HTTP.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::PolicyError;

/// How long one admin call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read.
const MAX_RESPONSE: u64 = 1024 * 1024;

/// An answer: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (de-chunked).
    pub body: Vec<u8>,
}

fn client_err(addr: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Client {
        addr: addr.to_owned(),
        reason: reason.into(),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = body.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Parse a complete HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Option<Answer> {
    let head_end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some(Answer { status, body })
}

/// Send `method path` with an empty body to the agent at `addr` (`host:port`).
pub async fn call(addr: &str, method: &str, path: &str) -> Result<Answer, PolicyError> {
    call_with(addr, method, path, None, None).await
}

/// Send `method path` with an optional JSON `body` and admin bearer `token` to the agent at
/// `addr` (`host:port`).
pub async fn call_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
) -> Result<Answer, PolicyError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| client_err(addr, format!("connect: {e}")))?;
        let body = body.unwrap_or_default();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .await
            .map_err(|e| client_err(addr, format!("send: {e}")))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| client_err(addr, format!("read: {e}")))?;
        parse_response(&raw).ok_or_else(|| client_err(addr, "malformed HTTP response"))
    };
    tokio::time::timeout(CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| client_err(addr, format!("no answer within {CALL_TIMEOUT:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain and chunked responses parse; truncated ones are refused.
    #[test]
    fn responses_parse() {
        let plain = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(
            plain,
            Answer {
                status: 200,
                body: b"{}".to_vec()
            }
        );
        let chunked = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.status, 503);
        assert_eq!(chunked.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab")
                .is_none()
        );
    }
}
