//! Free loopback ports for a server started as a child (the demo, the benchmark, the
//! tests).
//!
//! Picked below the kernel's ephemeral range (`ip_local_port_range`): a port the
//! kernel handed out as "free" comes from that range, where every client connection
//! also takes its local port, so a server restarted on it can find it taken by a
//! client's socket. Ports below the range are only ever taken by listeners.

use std::sync::atomic::{AtomicU32, Ordering};

/// `count` consecutive free loopback ports (per-core listeners use PORT..PORT+count);
/// None when none were found.
pub fn free(count: u16) -> Option<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (from, to) = (10_000u32, low.saturating_sub(u32::from(count)));
    if to <= from + 1_000 {
        return ephemeral(count);
    }
    // Spread callers (threads of one test binary, test binaries side by side).
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(NEXT.fetch_add(7_919, Ordering::Relaxed));
    let span = to - from;
    for i in 0..500 {
        let port = (from + (seed.wrapping_add(i * 131)) % span) as u16;
        if all_free(port, count) {
            return Some(port);
        }
    }
    ephemeral(count)
}

fn all_free(port: u16, count: u16) -> bool {
    (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", port + i)).is_ok())
}

/// The fallback: ports the kernel offers, from its ephemeral range.
fn ephemeral(count: u16) -> Option<u16> {
    for _ in 0..200 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        if port <= 65_000 - count && all_free(port, count) {
            return Some(port);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .map_or(32_768, |s| {
                s.split_whitespace().next().unwrap().parse().unwrap()
            });
        let a = super::free(16).unwrap();
        let b = super::free(2).unwrap();
        assert_ne!(a, b);
        assert!(a + 16 <= low && b + 2 <= low, "{a} {b} below {low}");
        for p in a..a + 16 {
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
