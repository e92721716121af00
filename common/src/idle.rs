//! The one rule that ends connections holding a seat for nothing: a client connection with no
//! request in flight is closed once it has been so for `listen.header_read_timeout` before its
//! first request, or `listen.idle_timeout` after one. It covers a socket that never sends a
//! byte (hyper's own header timeout only starts with the first byte, and the HTTP/1-or-2
//! detection before it has none), an HTTP/2 connection that sent only its preface or has no
//! open stream, and an idle keep-alive connection. Once a head has begun, hyper's header
//! timeout bounds how slowly it may arrive.

use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// What one connection is doing: requests in flight, and since when it has had none.
pub struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `opened` at which the last request ended; `u64::MAX` before any.
    idle_since_ms: AtomicU64,
}

impl Activity {
    /// A connection opened now, with no request yet.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(u64::MAX),
        })
    }

    /// Counts a request in flight until the returned handle is dropped, which should be when its
    /// response has been sent in full (see [`Tracked`]).
    pub fn begin(self: &Arc<Activity>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `first` since it opened
    /// (when it never had one) or for `between` since its last request ended. Requests do not
    /// wake this (that would cost every request a wake-up); it looks again at least every
    /// `min(first, between)`, so it resolves at most that late.
    pub async fn expired(&self, first: Duration, between: Duration) {
        let recheck = first.min(between);
        loop {
            let now = Instant::now();
            let deadline = match self.idle_since() {
                _ if self.in_flight.load(Ordering::Relaxed) > 0 => now + recheck,
                None => self.opened + first,
                Some(since) => since + between,
            };
            if deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline.min(now + recheck)).await;
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        match self.idle_since_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(self.opened + Duration::from_millis(ms)),
        }
    }
}

/// A request counted in flight on its connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = activity.opened.elapsed().as_millis() as u64;
        activity.idle_since_ms.store(ms, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request in flight until it has been sent or dropped, so a
/// long download is not mistaken for an idle connection.
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    /// `body`, keeping `in_flight` until it is dropped.
    pub fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(10);
    const BETWEEN: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_a_request_expires_after_the_first_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        activity.expired(FIRST, BETWEEN).await;
        assert_eq!(started.elapsed(), FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection_whatever_it_takes() {
        let activity = Activity::new();
        let request = activity.begin();
        let started = Instant::now();
        let expiry = activity.expired(FIRST, BETWEEN);
        tokio::pin!(expiry);
        let waited = tokio::time::timeout(Duration::from_secs(600), &mut expiry).await;
        assert!(waited.is_err(), "expired with a request in flight");
        drop(request);
        expiry.await;
        // The idle clock starts when the request ends, and the wait rounds up to the next
        // check: at most `FIRST` late.
        let idle = started.elapsed() - Duration::from_secs(600);
        assert!(idle >= BETWEEN && idle <= BETWEEN + FIRST, "{idle:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_request_the_idle_timeout_applies() {
        let activity = Activity::new();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(activity.begin());
        let ended = Instant::now();
        activity.expired(FIRST, BETWEEN).await;
        assert_eq!(ended.elapsed(), BETWEEN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_idle_timeout_is_noticed_while_waiting_for_a_long_first_one() {
        let activity = Activity::new();
        let expiry = activity.expired(BETWEEN, FIRST);
        tokio::pin!(expiry);
        // A request comes and goes early; the wait for the 60 s first timeout is under way.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut expiry).await;
        drop(activity.begin());
        let ended = Instant::now();
        expiry.await;
        assert!(ended.elapsed() <= FIRST * 2, "{:?}", ended.elapsed());
    }
}
