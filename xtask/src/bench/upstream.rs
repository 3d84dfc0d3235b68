//! The proxy-mode upstream: a minimal HTTP/1.1 keep-alive responder on a single-threaded tokio runtime.
//!
//! It answers every request with `200 ok` (the same two-byte body as the `direct_response`
//! route) and does nothing else: one `read` and one `write` per request, no routing, no header
//! parsing beyond finding the end of the head and an optional `content-length`. That makes it
//! far cheaper per request than the Envoy under test (a second Envoy as upstream would cost
//! about half as much again as the proxy itself), so it adds the least CPU noise to the load
//! generator's core. It runs in the xtask process on its own thread and stops when dropped.

use anyhow::Context;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The canned response: same status and body as the bench's `direct_response` route.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
/// Largest request head accepted before the connection is dropped (Envoy sends far less).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A running upstream; dropping it stops the server and joins its thread.
pub struct Upstream {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Bind `127.0.0.1:0` and serve on a dedicated thread with a current-thread runtime.
    pub fn start() -> anyhow::Result<Upstream> {
        let std_listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("bind upstream 127.0.0.1:0")?;
        std_listener
            .set_nonblocking(true)
            .context("set upstream listener non-blocking")?;
        let addr = std_listener.local_addr().context("upstream local_addr")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("build upstream runtime")?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-upstream".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            eprintln!("bench upstream: cannot register listener: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = accept_loop(listener) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .context("spawn upstream thread")?;
        Ok(Upstream {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the server already stopped; nothing to do then.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Latency matters more than batching for a request/response benchmark.
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream));
            }
            Err(e) => {
                eprintln!("bench upstream: accept failed: {e}");
                return;
            }
        }
    }
}

/// Serve one keep-alive connection until the peer closes it or sends something unparseable.
async fn serve(stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(RESPONSE.len() * 4);
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        // Answer every complete request in the buffer (pipelining-safe), in one write.
        let mut consumed = 0;
        while let Some(len) = request_len(&buf[consumed..]) {
            consumed += len;
            out.extend_from_slice(RESPONSE);
        }
        buf.drain(..consumed);
        if buf.len() > MAX_HEAD_BYTES {
            return;
        }
        if !out.is_empty() {
            if write_all(&stream, &out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Length of the first complete request (head plus `content-length` body) in `buf`, if any.
fn request_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = content_length(&buf[..head_end]);
    let total = head_end.checked_add(body)?;
    (buf.len() >= total).then_some(total)
}

/// The `content-length` of an HTTP/1.1 request or response head; 0 when absent or malformed.
pub fn content_length(head: &[u8]) -> usize {
    head.split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = line.split_at(colon);
            if !name.eq_ignore_ascii_case(b"content-length") {
                return None;
            }
            std::str::from_utf8(&value[1..])
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .next()
        .unwrap_or(0)
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A request is complete only once its head and its declared body have arrived.
    #[test]
    fn request_length_includes_declared_body() {
        assert_eq!(request_len(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"), Some(27));
        assert_eq!(request_len(b"GET / HTTP/1.1\r\nhost: a\r\n"), None);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab";
        assert_eq!(request_len(post), None);
        let mut full = post.to_vec();
        full.push(b'c');
        assert_eq!(request_len(&full), Some(full.len()));
    }

    /// The server answers two pipelined requests on one keep-alive connection.
    #[test]
    fn answers_pipelined_requests() {
        let upstream = Upstream::start().unwrap();
        let mut conn = std::net::TcpStream::connect(upstream.addr()).unwrap();
        conn.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut got = vec![0u8; RESPONSE.len() * 2];
        conn.read_exact(&mut got).unwrap();
        assert_eq!(&got[..RESPONSE.len()], RESPONSE);
        assert_eq!(&got[RESPONSE.len()..], RESPONSE);
    }
}
