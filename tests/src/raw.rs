//! Raw HTTP/1.1 over TCP, for requests no well-behaved client would send (non-UTF-8 bytes,
//! huge or numerous headers, malformed query strings).

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for one raw exchange.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lowercased, values as raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body (chunked transfer decoded).
    pub body: Vec<u8>,
}

impl RawReply {
    /// First header with `name`, as lossy text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// A GET request: `GET <target> HTTP/1.1`, `host`, the given headers (raw bytes), `connection: close`.
pub fn get_request(target: &[u8], host: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

/// Send `request` bytes on a new connection and read the response until the server closes.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<RawReply> {
    tokio::time::timeout(RAW_TIMEOUT, async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.write_all(request).await.context("write request")?;
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .await
            .context("read response")?;
        parse(&bytes)
    })
    .await
    .with_context(|| format!("no complete response from {addr} within {RAW_TIMEOUT:?}"))?
}

/// Parse one HTTP/1.1 response.
pub fn parse(bytes: &[u8]) -> anyhow::Result<RawReply> {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!(
            "no end of headers in {} bytes: {:?}",
            bytes.len(),
            String::from_utf8_lossy(bytes)
        );
    };
    let head = &bytes[..head_end];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status_text = String::from_utf8_lossy(status_line);
    let status = status_text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_text:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = line[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
    let rest = &bytes[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(RawReply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            bail!("truncated chunk size line");
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_hex:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Content-length and chunked bodies parse; header values keep non-UTF-8 bytes.
    #[test]
    fn parses_responses() {
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nx-b: \xff\r\ncontent-length: 2\r\n\r\nok").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        assert_eq!(r.headers[1].1, vec![0xff]);
        assert_eq!(r.body, b"ok");
        let c = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(c.body, b"abc");
    }

    /// Built requests carry the raw bytes given.
    #[test]
    fn builds_requests() {
        let r = get_request(b"/a?b=%ff", "h", &[("x-k", b"\xfe")]);
        assert!(r.starts_with(b"GET /a?b=%ff HTTP/1.1\r\nhost: h\r\nx-k: \xfe\r\n"));
        assert!(r.ends_with(b"connection: close\r\n\r\n"));
    }
}
