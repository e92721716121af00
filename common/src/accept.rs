//! Taking connections off a listening socket, for every listener Vigil has (public, admin,
//! collector): until shutdown, and without spinning when the process runs out of file
//! descriptors or memory.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// How long accepting pauses after an error that is not one connection's own: out of file
/// descriptors (the usual one), memory or buffers. Retrying at once would fail the same way,
/// in a loop that takes a core and writes a log line each turn; meanwhile the kernel keeps
/// new connections in the backlog and established ones are served as usual.
const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);

/// The next connection on `listener`, or `None` once `shutdown` resolves.
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Option<(TcpStream, SocketAddr)> {
    next_accepted(|| listener.accept(), shutdown, PAUSE_AFTER_ERROR).await
}

/// [`next_connection`] over any `accept`, with the pause as a parameter, so that the error
/// handling can be tested without exhausting the process's descriptors.
async fn next_accepted<T, A, F>(
    mut accept: A,
    shutdown: impl Future<Output = ()>,
    pause: Duration,
) -> Option<T>
where
    A: FnMut() -> F,
    F: Future<Output = io::Result<T>>,
{
    tokio::pin!(shutdown);
    loop {
        let error = tokio::select! {
            accepted = accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(error) => error,
            },
            () = &mut shutdown => return None,
        };
        if is_connection_error(&error) {
            tracing::debug!(%error, "a connection was lost before it was accepted");
            continue;
        }
        tracing::warn!(
            %error,
            pause = ?pause,
            "cannot accept connections (out of file descriptors or memory?); pausing"
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut shutdown => return None,
        }
    }
}

/// Errors of one connection, which the next `accept` does not repeat.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn out_of_descriptors() -> io::Error {
        // EMFILE on Linux.
        io::Error::from_raw_os_error(24)
    }

    #[tokio::test(start_paused = true)]
    async fn running_out_of_descriptors_pauses_instead_of_spinning() {
        let attempts = Cell::new(0);
        // Fails 1,000 times, then accepts: a loop that does not pause gets there at once.
        let accept = || {
            attempts.set(attempts.get() + 1);
            std::future::ready(if attempts.get() <= 1000 {
                Err(out_of_descriptors())
            } else {
                Ok(())
            })
        };
        let shutdown = tokio::time::sleep(Duration::from_millis(3500));
        let accepted = next_accepted(accept, shutdown, Duration::from_secs(1)).await;
        assert!(accepted.is_none(), "accepting went on without pausing");
        // Once at the start and once after each of the three whole pauses.
        assert_eq!(attempts.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_lost_before_accept_is_skipped_at_once() {
        let mut outcomes = vec![
            Ok(7),
            Err(io::Error::from(io::ErrorKind::ConnectionAborted)),
            Err(io::Error::from(io::ErrorKind::ConnectionReset)),
        ];
        let accept = || std::future::ready(outcomes.pop().unwrap());
        let started = tokio::time::Instant::now();
        let never = std::future::pending::<()>();
        let accepted = next_accepted(accept, never, Duration::from_secs(3600)).await;
        assert_eq!(accepted, Some(7));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "paused for one connection's error"
        );
    }

    #[tokio::test]
    async fn shutdown_during_a_pause_ends_it() {
        let accept = || std::future::ready(Err::<(), _>(out_of_descriptors()));
        let shutdown = tokio::time::sleep(Duration::from_millis(50));
        let started = std::time::Instant::now();
        let accepted = next_accepted(accept, shutdown, Duration::from_secs(3600)).await;
        assert!(accepted.is_none());
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_real_listener_hands_over_its_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = TcpStream::connect(address).await.unwrap();
        let (_, peer) = next_connection(&listener, std::future::pending())
            .await
            .expect("a connection");
        assert_eq!(peer, client.local_addr().unwrap());
        let stopped = next_connection(&listener, std::future::ready(())).await;
        assert!(stopped.is_none(), "a resolved shutdown stops accepting");
    }
}
