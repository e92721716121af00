//! Spreading client connections evenly over the workers. Every worker accepts from the same
//! listening socket, and the one that wakes first takes every connection waiting: when a
//! client pool or a load balancer opens its connections at once, one worker can end up with
//! most of them and saturate while the other idles. So a worker keeps a connection it accepts
//! only while it serves no more connections than the least busy worker, and otherwise hands
//! it, before reading a byte of it, to the one serving fewest. Only accepting pays for this; a
//! connection's requests never move between threads.

use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use vigil_common::accept;
use vigil_common::throttle::LogThrottle;

/// A client connection a worker is to serve.
pub struct Connection {
    /// The socket, registered with the serving worker's event loop.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Keeps the connection counted until dropped.
    pub admitted: Admitted,
}

/// What keeps a connection counted while it is open: its place under `listen.max_connections`
/// and in its worker's count.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Admitted {
    /// Counts the connection under `open` from now on, instead of where it was placed.
    fn count_under(mut self, open: &Gauge) -> Admitted {
        open.inc();
        std::mem::replace(&mut self.open, open.clone()).dec();
        self
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A connection a worker accepted for another to serve, deregistered from the first's event
/// loop.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
}

/// The workers' connection counts and the way to each worker's event loop.
struct Balance {
    /// Connections each worker serves now; also `vigil_worker_connections`.
    open: Box<[Gauge]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// Where an accepted connection is to be served.
enum Placement {
    /// By the worker that accepted it.
    Here(Admitted),
    /// By the worker this index names, through its inbox.
    There(usize, Admitted),
}

/// One worker's place among the workers: which it is, and the connections others hand it.
pub struct Seat {
    index: usize,
    balance: Arc<Balance>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
}

/// One seat per worker, each counting its connections in its gauge. The inboxes are
/// unbounded: what is in them is already bounded by the connection limit.
pub fn seats(open: Vec<Gauge>) -> Vec<Seat> {
    let (inboxes, receivers): (Vec<_>, Vec<_>) =
        (0..open.len()).map(|_| mpsc::unbounded_channel()).unzip();
    let balance = Arc::new(Balance {
        open: open.into_boxed_slice(),
        inboxes: inboxes.into_boxed_slice(),
    });
    receivers
        .into_iter()
        .enumerate()
        .map(|(index, inbox)| Seat {
            index,
            balance: balance.clone(),
            inbox,
        })
        .collect()
}

impl Seat {
    /// The next connection this worker is to serve: one it accepted from `listener` and keeps,
    /// or one another worker handed it. A connection over `limit` is closed at once. `None`
    /// once `shutdown` resolves.
    pub async fn next_connection(
        &mut self,
        listener: &TcpListener,
        limit: &Arc<Semaphore>,
        shutdown: impl Future<Output = ()>,
    ) -> Option<Connection> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = accept::next_connection(listener, &mut shutdown) => {
                    let (stream, peer) = accepted?;
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        static LIMIT_REACHED: LogThrottle = LogThrottle::new();
                        if let Some(left_out) = LIMIT_REACHED.allow() {
                            tracing::warn!(%peer, left_out, "connection limit reached; connection dropped");
                        }
                        continue;
                    };
                    let connection = match self.balance.place(self.index, permit) {
                        Placement::Here(admitted) => Some(Connection { stream, peer, admitted }),
                        Placement::There(worker, admitted) => {
                            self.hand_over(worker, Connection { stream, peer, admitted })
                        }
                    };
                    if connection.is_some() {
                        return connection;
                    }
                }
                Some(handoff) = self.inbox.recv() => {
                    if let Some(connection) = take_over(handoff) {
                        return Some(connection);
                    }
                }
            }
        }
    }

    /// Stops taking connections from other workers and returns those already handed to this
    /// one, to be served with the rest. A worker handing this one a connection from now on
    /// gets it back and serves it itself.
    pub fn close(&mut self) -> Vec<Connection> {
        self.inbox.close();
        std::iter::from_fn(|| self.inbox.try_recv().ok())
            .filter_map(take_over)
            .collect()
    }

    /// Passes a connection this worker accepted to `worker`; returns it if that worker no
    /// longer takes connections (it is shutting down), for this one to serve.
    fn hand_over(&self, worker: usize, connection: Connection) -> Option<Connection> {
        let Connection {
            stream,
            peer,
            admitted,
        } = connection;
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot pass a connection to another worker; closing it");
                return None;
            }
        };
        let handoff = Handoff {
            stream,
            peer,
            admitted,
        };
        let returned = self.balance.hand_to(worker, handoff).err()?;
        // Served here after all, so counted here, not under the worker that refused it.
        let admitted = returned
            .admitted
            .count_under(&self.balance.open[self.index]);
        take_over(Handoff {
            admitted,
            ..returned
        })
    }
}

/// Registers a connection another worker accepted with this worker's event loop.
fn take_over(handoff: Handoff) -> Option<Connection> {
    let Handoff {
        stream,
        peer,
        admitted,
    } = handoff;
    match TcpStream::from_std(stream) {
        Ok(stream) => Some(Connection {
            stream,
            peer,
            admitted,
        }),
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot take over a connection another worker accepted; closing it");
            None
        }
    }
}

impl Balance {
    /// Where the connection `worker` just accepted (under `permit`) is served; it counts as
    /// open there from now on.
    fn place(&self, worker: usize, permit: OwnedSemaphorePermit) -> Placement {
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
    /// connections.
    fn hand_to(&self, worker: usize, handoff: Handoff) -> Result<(), Handoff> {
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

    fn balance(workers: usize) -> Arc<Balance> {
        seats((0..workers).map(|_| Gauge::default()).collect())[0]
            .balance
            .clone()
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
        let mut seats = seats(vec![Gauge::default(), Gauge::default()]);
        assert!(seats[1].close().is_empty());
        let balance = seats[0].balance.clone();
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

    #[tokio::test]
    async fn a_connection_handed_back_counts_under_the_worker_that_serves_it() {
        let mut seats = seats(vec![Gauge::default(), Gauge::default()]);
        assert!(seats[1].close().is_empty());
        let balance = seats[0].balance.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let Placement::Here(_first) = balance.place(0, permit()) else {
            panic!("an idle balance keeps the first connection");
        };
        let Placement::There(1, admitted) = balance.place(0, permit()) else {
            panic!("the second goes to the idle worker");
        };
        assert_eq!(balance.open_counts(), [1, 1]);
        let connection = Connection {
            stream,
            peer,
            admitted,
        };
        let served = seats[0]
            .hand_over(1, connection)
            .expect("worker 1 has stopped, so worker 0 serves it");
        assert_eq!(balance.open_counts(), [2, 0]);
        drop(served);
        assert_eq!(balance.open_counts(), [1, 0]);
    }
}
