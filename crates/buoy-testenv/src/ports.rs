//! Ports for the processes the tests start, chosen so nothing else takes them between the
//! choice and the child's bind.
//!
//! A port the kernel hands out for `bind(0)` is in the ephemeral range, and once the probe
//! socket closes the kernel may hand the same port to any other socket (a test server, an
//! outgoing connection) before etcd or the scheduler binds it: that race once failed a
//! kube-scheduler start with "address already in use". The kernel never assigns a port below
//! the ephemeral range on its own, so ports are taken from there, each at most once per test
//! process, and each checked free on loopback and on every interface before it is handed out.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the kernel's own choices start, from `ip_local_port_range` (Linux's default if
/// unreadable).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// The ports handed out: the upper half below the ephemeral range, clear of the low ports
/// system services are configured on.
fn range() -> (u32, u32) {
    let high = u32::from(ephemeral_low()).max(2048);
    (1024.max(high / 2), high)
}

/// A port nobody listens on now and the kernel will not give to another socket unasked.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = range();
    let span = high - low;
    // Another test process running at the same time starts elsewhere in the span.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        let free = |ip: Ipv4Addr| TcpListener::bind((ip, port)).is_ok();
        if free(Ipv4Addr::LOCALHOST) && free(Ipv4Addr::UNSPECIFIED) {
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({low}..{high})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "{ports:?}");
        let (low, high) = range();
        for p in ports {
            assert!((low..high).contains(&u32::from(p)), "{p}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }
}
