//! Keep-alive connections to the upstream, one pool per worker thread: a request takes an idle
//! connection (or opens one), and the connection goes back to the pool when the response body
//! has been read to its end. Nothing here is shared with another worker, so checkout and return
//! touch no other thread's memory.

use crate::config::Upstream;
use crate::forward::source_text;
use crate::respond::ProxyBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

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
    timeout: Duration,
    connect_timeout: Duration,
    rewrite_host: bool,
    pool: Arc<IdlePool>,
}

struct IdlePool {
    /// Most recently returned last: reuse takes the warmest connection, pruning looks at the
    /// oldest.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl UpstreamClient {
    /// A client for the configured upstream (`http://host[:port]`, checked by the config).
    pub fn new(upstream: &Upstream) -> UpstreamClient {
        let host = upstream.url.host().unwrap_or("localhost");
        let port = upstream.url.port_u16().unwrap_or(80);
        let authority = upstream
            .url
            .authority()
            .map_or_else(|| host.to_string(), |a| a.as_str().to_string());
        UpstreamClient {
            address: format!("{host}:{port}"),
            authority: HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            timeout: upstream.timeout,
            connect_timeout: upstream.connect_timeout,
            rewrite_host: upstream.rewrite_host,
            pool: Arc::new(IdlePool {
                idle: Mutex::new(VecDeque::new()),
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
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
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
        loop {
            let (mut sender, reused) = match self.pool.take() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
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
                    let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
                    let pool = self.pool.clone();
                    return Ok(response.map(|body| UpstreamBody {
                        body,
                        finished: false,
                        connection: reusable.then_some((sender, pool)),
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

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.address.as_str()),
        )
        .await
        {
            Err(_) => {
                return Err(UpstreamError::Connect(format!(
                    "connecting to {} timed out after {:?}",
                    self.address, self.connect_timeout
                )))
            }
            Ok(Err(error)) => {
                return Err(UpstreamError::Connect(format!(
                    "cannot connect to {}: {error}",
                    self.address
                )))
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(source_text(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(error = %source_text(&error), "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl IdlePool {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<ProxyBody>) {
        let now = Instant::now();
        let mut idle = self.lock();
        // The oldest entry is the one most likely closed or expired; checking it on every
        // return keeps the pool from holding dead connections once traffic falls.
        if idle
            .front()
            .is_some_and(|e| e.sender.is_closed() || now - e.since >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push_back(Idle { sender, since: now });
        }
    }
}

fn classify(error: hyper::Error) -> UpstreamError {
    if body_limit_hit(&error) {
        UpstreamError::BodyTooLarge
    } else {
        UpstreamError::Other(source_text(&error))
    }
}

fn body_limit_hit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A response body from the upstream. Its connection goes back to the worker's pool when the
/// body has been read to the end; a body dropped half-read takes its connection with it (hyper
/// closes it: the rest of the body is still on the wire).
pub struct UpstreamBody {
    body: Incoming,
    finished: bool,
    connection: Option<(SendRequest<ProxyBody>, Arc<IdlePool>)>,
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
        if let Some((sender, pool)) = self.connection.take() {
            if self.finished || self.body.is_end_stream() {
                pool.put(sender);
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
            UpstreamError::Other(_) => "other",
        }
    }
}
