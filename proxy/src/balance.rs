//! Spreading client connections evenly over the workers. Every worker accepts from the same
//! listening socket, and the one that wakes first takes every connection waiting: when a
//! client pool or a load balancer opens its connections at once, one worker can end up with
//! most of them and saturate while the other idles. So a worker keeps a connection it accepts
//! only while it serves no more connections than the least busy worker, and otherwise hands
//! it, before reading a byte of it, to the one serving fewest. Only accepting pays for this; a
//! connection's requests never move between threads.

use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::sync::OwnedSemaphorePermit;

/// A connection a worker accepted for another to serve.
pub(crate) struct Handoff {
    /// Deregistered from the accepting worker's event loop.
    pub(crate) stream: std::net::TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) admitted: Admitted,
}

/// What keeps a connection counted while it is open: its place under `listen.max_connections`
/// and in its worker's count.
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The workers' connection counts and the way to each worker's event loop.
pub(crate) struct Balance {
    /// Connections each worker serves now; also `vigil_worker_connections`.
    open: Box<[Gauge]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// Where an accepted connection is to be served.
pub(crate) enum Placement {
    /// By the worker that accepted it.
    Here(Admitted),
    /// By the worker this index names, through its inbox.
    There(usize, Admitted),
}

impl Balance {
    /// A balance over one worker per gauge, with the inbox each worker takes handed
    /// connections from (in the same order). An inbox is unbounded: what is in it is already
    /// bounded by `listen.max_connections`.
    pub(crate) fn new(open: Vec<Gauge>) -> (Arc<Balance>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers) = (0..open.len())
            .map(|_| mpsc::unbounded_channel())
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let balance = Balance {
            open: open.into_boxed_slice(),
            inboxes: inboxes.into_boxed_slice(),
        };
        (Arc::new(balance), receivers)
    }

    /// Where the connection `worker` just accepted (under `permit`) is served; it counts as
    /// open there from now on.
    pub(crate) fn place(&self, worker: usize, permit: OwnedSemaphorePermit) -> Placement {
        let (least_busy, fewest) = self
            .open
            .iter()
            .enumerate()
            .map(|(index, open)| (index, open.get()))
            .min_by_key(|&(_, open)| open)
            .unwrap_or((worker, 0));
        let target = if self.open[worker].get() <= fewest {
            worker
        } else {
            least_busy
        };
        self.open[target].inc();
        let admitted = Admitted {
            _permit: permit,
            open: self.open[target].clone(),
        };
        if target == worker {
            Placement::Here(admitted)
        } else {
            Placement::There(target, admitted)
        }
    }

    /// Passes a connection to `worker`'s inbox; gives it back if that worker has stopped taking
    /// connections, for the sender to serve itself.
    pub(crate) fn hand_to(&self, worker: usize, handoff: Handoff) -> Result<(), Handoff> {
        self.inboxes[worker]
            .send(handoff)
            .map_err(|refused| refused.0)
    }

    /// Connections each worker serves now, in worker order.
    #[cfg(test)]
    fn open_counts(&self) -> Vec<i64> {
        self.open.iter().map(Gauge::get).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn balance(workers: usize) -> Arc<Balance> {
        Balance::new((0..workers).map(|_| Gauge::default()).collect()).0
    }

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    fn placed_at(worker: usize, placement: &Placement) -> usize {
        match placement {
            Placement::Here(_) => worker,
            Placement::There(target, _) => *target,
        }
    }

    #[test]
    fn a_burst_accepted_by_one_worker_is_split_evenly() {
        let balance = balance(2);
        let kept: Vec<_> = (0..64).map(|_| balance.place(0, permit())).collect();
        assert_eq!(balance.open_counts(), [32, 32]);
        let handed = kept
            .iter()
            .filter(|p| matches!(p, Placement::There(1, _)))
            .count();
        assert_eq!(handed, 32, "half the burst goes to the idle worker");
    }

    #[test]
    fn a_worker_keeps_what_it_accepts_while_no_worker_serves_fewer() {
        let balance = balance(3);
        let placements: Vec<_> = (0..4).map(|_| balance.place(1, permit())).collect();
        let at: Vec<_> = placements.iter().map(|p| placed_at(1, p)).collect();
        assert_eq!(
            at,
            [1, 0, 2, 1],
            "to the least busy (the first of equals) until all are even"
        );
        assert_eq!(balance.open_counts(), [1, 2, 1]);
        drop(placements);
        let _busy = balance.place(2, permit());
        let tie = balance.place(0, permit());
        assert_eq!(placed_at(0, &tie), 0, "ties stay where accepted");
        assert_eq!(balance.open_counts(), [1, 0, 1]);
    }

    #[test]
    fn a_closed_connection_leaves_its_workers_count() {
        let balance = balance(2);
        let placements: Vec<_> = (0..4).map(|_| balance.place(0, permit())).collect();
        assert_eq!(balance.open_counts(), [2, 2]);
        drop(placements);
        assert_eq!(balance.open_counts(), [0, 0]);
    }

    #[test]
    fn a_connection_for_a_stopped_worker_comes_back_to_the_sender() {
        let (balance, mut inboxes) = Balance::new(vec![Gauge::default(), Gauge::default()]);
        inboxes[1].close();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let Placement::Here(admitted) = balance.place(0, permit()) else {
            panic!("an idle balance keeps the connection where it was accepted");
        };
        let handoff = Handoff {
            peer: stream.local_addr().unwrap(),
            stream,
            admitted,
        };
        let returned = balance
            .hand_to(1, handoff)
            .expect_err("worker 1 has stopped");
        assert_eq!(returned.peer.ip().to_string(), "127.0.0.1");
    }
}
