//! The rate at which one client IP may open connections to a core
//! (`connection_creation_rate_per_ip`, as the connection_creation_rate quota of
//! Kafka's KIP-612): a count per IP per second.
//!
//! The same count, per minute, limits failed SASL authentications per IP.
//!
//! Bounded: at most [`IPS_MAX`] addresses are tracked; when a second brings more,
//! the entries of past seconds go first, and an address beyond that is let in
//! untracked (a flood from that many addresses is for the network to stop).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

/// Addresses tracked at once, per core.
pub const IPS_MAX: usize = 10_000;

/// Connections per second per IP; 0 lets every connection in.
#[derive(Default)]
pub struct IpRate {
    limit: u32,
    /// IP -> (the second it counts for, connections in it).
    seen: RefCell<HashMap<IpAddr, (u64, u32)>>,
}

impl IpRate {
    pub fn new(limit: u32) -> IpRate {
        IpRate {
            limit,
            seen: RefCell::default(),
        }
    }

    /// Whether a connection from `ip` in second `now` may stay open.
    pub fn admit(&self, ip: IpAddr, now: u64) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut seen = self.seen.borrow_mut();
        if !seen.contains_key(&ip) && seen.len() >= IPS_MAX {
            seen.retain(|_, (second, _)| *second == now);
            if seen.len() >= IPS_MAX {
                return true;
            }
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if entry.0 != now {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.limit
    }

    /// Whether `ip` has used up its count in window `now` (nothing is counted).
    pub fn exceeded(&self, ip: IpAddr, now: u64) -> bool {
        self.limit != 0
            && self
                .seen
                .borrow()
                .get(&ip)
                .is_some_and(|&(window, n)| window == now && n >= self.limit)
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.seen.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ip_gets_its_rate_per_second_and_the_map_stays_bounded() {
        let rate = IpRate::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(rate.admit(a, 1) && rate.admit(a, 1));
        assert!(rate.exceeded(a, 1) && !rate.exceeded(a, 2) && !rate.exceeded(b, 1));
        assert!(!rate.admit(a, 1), "third in the same second");
        assert!(rate.admit(b, 1), "another address has its own count");
        assert!(rate.admit(a, 2), "a new second");
        for i in 0..IPS_MAX as u32 + 5 {
            rate.admit(IpAddr::from(i.to_be_bytes()), 3);
        }
        assert!(rate.tracked() <= IPS_MAX);
        assert!(IpRate::new(0).admit(a, 1) && IpRate::new(0).tracked() == 0);
    }
}
