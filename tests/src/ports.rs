//! Free loopback ports, found by binding port 0 and reading back what the kernel chose.

use anyhow::Context;
use std::net::{SocketAddr, TcpListener};

/// One free TCP port on 127.0.0.1.
///
/// The port is released before returning, so a process that binds it later can lose a race
/// with another process; [`crate::envoy::Envoy::start`] retries with fresh ports when Envoy
/// reports the address in use.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct free TCP ports on 127.0.0.1 (all held open together while choosing, so they differ).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).context("bind 127.0.0.1:0")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| {
            Ok(l.local_addr()
                .context("local_addr of a bound listener")?
                .port())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports chosen together are distinct and non-zero.
    #[test]
    fn ports_are_distinct() {
        let ports = free_ports(6).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        assert!(ports.iter().all(|p| *p != 0));
    }
}
