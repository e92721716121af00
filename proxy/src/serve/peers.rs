//! Connections per client address (`listen.max_connections_per_ip`), so that one address
//! cannot take every seat under `listen.max_connections`. Off by default: a sidecar behind a
//! load balancer sees every client arrive from the balancer's few addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections by peer address, shared by all workers. It holds an entry only for an
/// address with a connection open, so it is bounded by `listen.max_connections`.
pub struct PeerConnections {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under its address's limit, given back when dropped (uncounted when
/// there is no limit).
pub struct PeerSeat {
    counted: Option<(Arc<PeerConnections>, IpAddr)>,
}

impl PeerConnections {
    /// A table allowing `limit` connections per address; 0 means no limit.
    pub fn new(limit: usize) -> Arc<PeerConnections> {
        Arc::new(PeerConnections {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A seat for one more connection from `ip`, or `None` when it has its limit open. Always
    /// a seat when there is no limit, without touching the table.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSeat> {
        if self.limit == 0 {
            return Some(PeerSeat { counted: None });
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(PeerSeat {
            counted: Some((self.clone(), ip)),
        })
    }

    /// Addresses with a connection open now.
    pub fn addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for PeerSeat {
    fn drop(&mut self) {
        let Some((peers, ip)) = self.counted.take() else {
            return;
        };
        let mut open = peers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_limit_and_gets_seats_back() {
        let peers = PeerConnections::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = peers.admit(a).unwrap();
        let second = peers.admit(a).unwrap();
        assert!(peers.admit(a).is_none(), "a third from one address");
        assert!(peers.admit(b).is_some(), "another address is not affected");
        drop(first);
        let third = peers.admit(a);
        assert!(third.is_some(), "a closed connection gives its seat back");
        drop((second, third));
        assert_eq!(
            peers.addresses(),
            0,
            "no entry stays for an address with none open"
        );
    }

    #[test]
    fn without_a_limit_nothing_is_counted() {
        let peers = PeerConnections::new(0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let seats: Vec<_> = (0..1000).map(|_| peers.admit(a).unwrap()).collect();
        assert_eq!(seats.len(), 1000);
        assert_eq!(peers.addresses(), 0);
    }
}
