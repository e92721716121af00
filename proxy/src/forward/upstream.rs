//! Keep-alive connections to the upstream, one pool per worker thread: a request takes an idle
//! connection (or opens one), and the connection goes back to the pool when the response body
//! has been read to its end. Nothing here is shared with another worker, so checkout and return
//! touch no other thread's memory. Each worker opens at most its share of
//! `upstream.max_connections`; past that a request waits for one to come free, up to
//! `upstream.queue_timeout`, and is then answered 503: clients holding many requests open
//! cannot make the proxy run out of descriptors.

use crate::config::Upstream;
use crate::forward::hygiene::{self, source_text, ClientBodyError};
use crate::respond::ProxyBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Idle connections kept per worker; past this a finished connection is closed.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than reused (the upstream has likely
/// timed it out: nginx's default keep-alive timeout is 75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One worker's client to the configured upstream.
pub struct UpstreamClient {
    /// `host:port` to connect to.
    address: String,
    /// The upstream's authority, for `Host` when `rewrite_host` is set.
    authority: HeaderValue,
    /// The path of `upstream.url`, put before every request's path.
    path_prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    rewrite_host: bool,
    queue_timeout: Duration,
    /// TLS to an `https://` upstream.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pool: Arc<IdlePool>,
}

struct IdlePool {
    /// Most recently returned last: reuse takes the warmest connection, pruning looks at the
    /// oldest.
    idle: Mutex<VecDeque<Idle>>,
    /// One permit per connection this worker may have open, idle or busy.
    open: Arc<Semaphore>,
    /// Woken when a connection goes back to the pool, for a request waiting for one (a closed
    /// connection wakes it through `open` instead).
    returned: Notify,
}

/// An open upstream connection and its place under the limit, given back when it closes.
struct Pooled {
    sender: SendRequest<ProxyBody>,
    _open: OwnedSemaphorePermit,
}

struct Idle {
    connection: Pooled,
    since: Instant,
}

impl UpstreamClient {
    /// A client for the configured upstream (`http://` or `https://host[:port]`, checked by
    /// the config), for one of `workers` workers.
    pub fn new(upstream: &Upstream, workers: usize) -> UpstreamClient {
        let share = upstream.max_connections.div_ceil(workers.max(1));
        let authority = upstream.url.authority().map_or("localhost", |a| a.as_str());
        UpstreamClient {
            address: upstream.address(),
            authority: HeaderValue::from_str(authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            path_prefix: upstream.path_prefix.clone(),
            timeout: upstream.timeout,
            connect_timeout: upstream.connect_timeout,
            rewrite_host: upstream.rewrite_host,
            queue_timeout: upstream.queue_timeout,
            tls: upstream.tls.as_ref().map(|tls| {
                (
                    tokio_rustls::TlsConnector::from(tls.config.clone()),
                    tls.server_name.clone(),
                )
            }),
            pool: Arc::new(IdlePool {
                idle: Mutex::new(VecDeque::new()),
                open: Arc::new(Semaphore::new(share)),
                returned: Notify::new(),
            }),
        }
    }

    /// Sends the request (head already cleaned) and waits for the response head.
    pub async fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let original_authority = req.uri().authority().cloned();
        // The upstream gets origin-form (`/path?query`) whatever form the client used.
        let mut path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if !self.path_prefix.is_empty() && path.path().starts_with('/') {
            path = PathAndQuery::try_from(format!("{}{path}", self.path_prefix)).map_err(|_| {
                UpstreamError::Other("the prefixed request target is not a valid path".into())
            })?;
        }
        *req.uri_mut() = Uri::from(path);
        // The upstream connection is HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        if self.rewrite_host {
            req.headers_mut()
                .insert(header::HOST, self.authority.clone());
        } else if !req.headers().contains_key(header::HOST) {
            // HTTP/2 clients send :authority instead of Host; keep what they asked for.
            let value = original_authority
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .unwrap_or_else(|| self.authority.clone());
            req.headers_mut().insert(header::HOST, value);
        }
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(result) => result,
        }
    }

    async fn exchange(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let queue_deadline = tokio::time::Instant::now() + self.queue_timeout;
        loop {
            let (mut connection, reused) = self.checkout(queue_deadline).await?;
            let sender = &mut connection.sender;
            // A pooled connection may have been closed by the upstream while idle; a fresh one
            // is ready once its handshake is done.
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Other(
                    "the upstream closed a new connection before the request".into(),
                ));
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    if hygiene::is_ambiguous_response(response.headers()) {
                        // Dropping the connection with the response closes it: whatever
                        // follows on it cannot be trusted to start a new response.
                        return Err(UpstreamError::Invalid(
                            "the response has both Content-Length and Transfer-Encoding".into(),
                        ));
                    }
                    let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
                    let pool = self.pool.clone();
                    return Ok(response.map(|body| UpstreamBody {
                        body,
                        finished: false,
                        connection: reusable.then_some((connection, pool)),
                    }));
                }
                Err(mut error) => match error.take_message() {
                    // Not written at all: the connection closed under us. Safe to send again on
                    // another one, as long as this one was an old one (a new one failing means
                    // the upstream itself is failing).
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(classify(error.into_error())),
                },
            }
        }
    }

    /// An idle connection (`true`) or a new one (`false`), waiting until `deadline` for one to
    /// come free when this worker has all its connections open.
    async fn checkout(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(Pooled, bool), UpstreamError> {
        loop {
            if let Some(connection) = self.pool.take() {
                return Ok((connection, true));
            }
            if let Ok(permit) = self.pool.open.clone().try_acquire_owned() {
                return Ok((self.connect(permit).await?, false));
            }
            tokio::select! {
                permit = self.pool.open.clone().acquire_owned() => {
                    let permit = permit.expect("the pool's semaphore is never closed");
                    return Ok((self.connect(permit).await?, false));
                }
                () = self.pool.returned.notified() => continue,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(UpstreamError::Exhausted(format!(
                        "every upstream connection of this worker stayed busy for {:?}",
                        self.queue_timeout
                    )));
                }
            }
        }
    }

    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Pooled, UpstreamError> {
        // One deadline for the TCP and the TLS handshakes together.
        let opened = tokio::time::timeout(self.connect_timeout, self.open()).await;
        let sender = match opened {
            Err(_) => {
                return Err(UpstreamError::Connect(format!(
                    "connecting to {} timed out after {:?}",
                    self.address, self.connect_timeout
                )))
            }
            Ok(opened) => opened?,
        };
        Ok(Pooled {
            sender,
            _open: permit,
        })
    }

    /// A new connection, TLS when the upstream is `https://`, with its HTTP/1.1 handshake done.
    async fn open(&self) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let stream = match TcpStream::connect(self.address.as_str()).await {
            Err(error) if is_out_of_resources(&error) => {
                return Err(UpstreamError::Exhausted(format!(
                    "cannot connect to {}: {error}",
                    self.address
                )))
            }
            Err(error) => {
                return Err(UpstreamError::Connect(format!(
                    "cannot connect to {}: {error}",
                    self.address
                )))
            }
            Ok(stream) => stream,
        };
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => start_http1(stream).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|error| {
                        UpstreamError::Connect(format!(
                            "TLS handshake with {} ({}) failed: {}",
                            self.address,
                            name.to_str(),
                            source_text(&error)
                        ))
                    })?;
                start_http1(stream).await
            }
        }
    }
}

/// The HTTP/1.1 handshake on an open connection; the connection is then driven by a task of
/// its own until it closes.
async fn start_http1<IO>(io: IO) -> Result<SendRequest<ProxyBody>, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| UpstreamError::Connect(source_text(&e)))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(error = %source_text(&error), "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// How long a readiness answer about the upstream is kept: `/readyz` connects at most once
/// per this, however often it is asked.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Whether the upstream accepts connections, for `/readyz`: a TCP connection opened and
/// closed, at most once per [`PROBE_INTERVAL`], within the connect timeout (at most the
/// interval).
pub struct UpstreamProbe {
    address: String,
    timeout: Duration,
    /// The last answer and when it was found; a probe in progress holds the lock, so callers
    /// meanwhile wait for its answer rather than connect too.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl UpstreamProbe {
    /// A probe of the configured upstream.
    pub fn new(upstream: &Upstream) -> UpstreamProbe {
        UpstreamProbe {
            address: upstream.address(),
            timeout: upstream.connect_timeout.min(PROBE_INTERVAL),
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `Ok` if the upstream accepted a connection within the last [`PROBE_INTERVAL`] or does
    /// now; otherwise what went wrong.
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < PROBE_INTERVAL {
                return answer.clone();
            }
        }
        let answer =
            match tokio::time::timeout(self.timeout, TcpStream::connect(&self.address)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(format!(
                    "the upstream at {} does not accept connections: {error}",
                    self.address
                )),
                Err(_) => Err(format!(
                    "the upstream at {} did not accept a connection within {:?}",
                    self.address, self.timeout
                )),
            };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// Errors of the process, not of the upstream: out of descriptors or memory.
fn is_out_of_resources(error: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
        || error.kind() == std::io::ErrorKind::OutOfMemory
}

impl IdlePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Option<Pooled> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if !entry.connection.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.connection);
            }
        }
        None
    }

    fn put(&self, connection: Pooled) {
        let now = Instant::now();
        {
            let mut idle = self.lock();
            // The oldest entry is the one most likely closed or expired; checking it on every
            // return keeps the pool from holding dead connections once traffic falls.
            if idle
                .front()
                .is_some_and(|e| e.connection.sender.is_closed() || now - e.since >= IDLE_TIMEOUT)
            {
                idle.pop_front();
            }
            if idle.len() < MAX_IDLE && !connection.sender.is_closed() {
                idle.push_back(Idle {
                    connection,
                    since: now,
                });
            }
        }
        self.returned.notify_one();
    }
}

/// Whose fault a failed exchange is: the client's body (over the limit, or unreadable) or the
/// upstream's.
fn classify(error: hyper::Error) -> UpstreamError {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        if e.is::<ClientBodyError>() {
            return UpstreamError::ClientBody;
        }
        current = e.source();
    }
    UpstreamError::Other(source_text(&error))
}

/// A response body from the upstream. Its connection goes back to the worker's pool when the
/// body has been read to the end; a body dropped half-read takes its connection with it (hyper
/// closes it: the rest of the body is still on the wire).
pub struct UpstreamBody {
    body: Incoming,
    finished: bool,
    connection: Option<(Pooled, Arc<IdlePool>)>,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.finished = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some((connection, pool)) = self.connection.take() {
            // Otherwise it closes with the body, and giving back its permit wakes a request
            // waiting for a connection.
            if self.finished || self.body.is_end_stream() {
                pool.put(connection);
            }
        }
    }
}

/// Why forwarding failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made.
    Connect(String),
    /// No response head within the timeout.
    Timeout,
    /// The client's body went over the limit while streaming.
    BodyTooLarge,
    /// The client's body could not be read (malformed chunked encoding, an early end).
    ClientBody,
    /// No connection to the upstream could be had in time, or the process is out of
    /// descriptors.
    Exhausted(String),
    /// The upstream's response cannot be forwarded safely.
    Invalid(String),
    /// Anything else (connection reset, protocol error).
    Other(String),
}

impl UpstreamError {
    /// The metric label of this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::BodyTooLarge => "body_too_large",
            UpstreamError::ClientBody => "client_body",
            UpstreamError::Exhausted(_) => "exhausted",
            UpstreamError::Invalid(_) => "invalid_response",
            UpstreamError::Other(_) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_the_proxys_trouble_not_the_upstreams() {
        for errno in [24, 23] {
            assert!(is_out_of_resources(&std::io::Error::from_raw_os_error(
                errno
            )));
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!is_out_of_resources(&refused));
    }
}
