//! The access log: one line per request once its response body has been sent (or the client
//! went away), in JSON or the combined format, written by a thread of its own so the request
//! path never waits for the disk.
//!
//! The path notes what it knows when the response head is ready ([`Outcome`], carried in the
//! response's extensions); [`AccessLog::attach`] adds what the request line said and wraps the
//! body, which counts the bytes sent and hands the line to the writer when it ends.

mod format;
mod writer;

pub use format::AccessFormat;
pub use writer::LineCounts;

use crate::metrics::Disposition;
use crate::respond::ProxyBody;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use vigil_host::{Decision, GuardResult};
use writer::Writer;

/// Where the access log goes and how it is written (`[access_log]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// The destination.
    pub output: AccessOutput,
    /// The line format.
    pub format: AccessFormat,
}

/// Where access log lines are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessOutput {
    /// Standard output (`path = "-"`).
    Stdout,
    /// A file, appended to, opened again on SIGHUP and SIGUSR1 for log rotation.
    File(PathBuf),
}

impl AccessOutput {
    /// The destination in words, for errors.
    pub fn describe(&self) -> String {
        match self {
            AccessOutput::Stdout => "standard output".into(),
            AccessOutput::File(path) => path.display().to_string(),
        }
    }
}

/// The open access log; shared by every worker.
pub struct AccessLog {
    writer: Writer,
    format: AccessFormat,
}

impl AccessLog {
    /// Opens the destination (a file is created if missing) and starts the writer thread.
    pub fn open(config: &AccessLogConfig, counts: LineCounts) -> std::io::Result<AccessLog> {
        Ok(AccessLog {
            writer: Writer::start(config.output.clone(), counts)?,
            format: config.format,
        })
    }

    /// Asks the writer to open its file again (after a rotation moved it away).
    pub fn reopen(&self) {
        self.writer.reopen();
    }

    /// Writes the line of a request the HTTP parser refused with `status`: nothing of it is
    /// known but the peer, so its method and target are `-`.
    pub fn unparsed(self: &Arc<Self>, peer: IpAddr, status: u16) {
        let request = RequestLine {
            at: SystemTime::now(),
            started: Instant::now(),
            peer,
            method: "-".into(),
            target: "-".into(),
            version: http::Version::HTTP_11,
            user_agent: None,
            referer: None,
        };
        let outcome = Outcome {
            status,
            disposition: Some(Disposition::Error),
            ..Outcome::default()
        };
        Pending {
            log: self.clone(),
            request,
            outcome,
            bytes_sent: 0,
        }
        .write(true);
    }

    /// Wraps `response`'s body so that the request's line is written once the body ends.
    pub fn attach(
        self: &Arc<Self>,
        request: RequestLine,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let (mut head, body) = response.into_parts();
        let outcome = head
            .extensions
            .remove::<Outcome>()
            .unwrap_or_else(|| Outcome {
                status: head.status.as_u16(),
                ..Outcome::default()
            });
        let pending = Pending {
            log: self.clone(),
            request,
            outcome,
            bytes_sent: 0,
        };
        let body = LoggedBody {
            inner: body,
            pending: Some(pending),
        };
        Response::from_parts(head, http_body_util::BodyExt::boxed(body))
    }
}

/// What the request itself said, read before it is served.
#[derive(Debug)]
pub struct RequestLine {
    at: SystemTime,
    started: Instant,
    peer: IpAddr,
    method: String,
    target: String,
    version: http::Version,
    user_agent: Option<String>,
    referer: Option<String>,
}

impl RequestLine {
    /// Reads the request line and the two header fields the combined format logs.
    pub fn of<B>(request: &Request<B>, peer: IpAddr) -> RequestLine {
        let headers = request.headers();
        RequestLine {
            at: SystemTime::now(),
            started: Instant::now(),
            peer,
            method: request.method().as_str().to_string(),
            // As the client sent it: the upstream got the normalised spelling, the log keeps
            // the one to investigate.
            target: request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().to_string(), |p| p.as_str().to_string()),
            version: request.version(),
            user_agent: field(headers, http::header::USER_AGENT),
            referer: field(headers, http::header::REFERER),
        }
    }
}

fn field(headers: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// What the request path knew of a request when its response head was ready.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The request id sent upstream and returned.
    pub request_id: String,
    /// The client's key, once resolved.
    pub client: Option<String>,
    /// The client's address (after trusted proxies), once resolved.
    pub ip: Option<IpAddr>,
    /// The route template, once resolved.
    pub route: Option<Arc<str>>,
    /// The status answered.
    pub status: u16,
    /// How the request ended.
    pub disposition: Option<Disposition>,
    /// The guard (or ban) that refused it.
    pub denied_by: Option<Arc<str>>,
    /// What each guard that ran said, in order.
    pub verdicts: Vec<(Arc<str>, &'static str)>,
    /// Until the upstream's response head arrived.
    pub upstream: Option<Duration>,
}

impl Outcome {
    /// The guards' verdicts of `decision`, as logged.
    pub fn verdicts_of(decision: &Decision) -> Vec<(Arc<str>, &'static str)> {
        decision
            .outcomes
            .iter()
            .map(|outcome| {
                let said = match (&outcome.result, outcome.would_deny()) {
                    (_, true) => "would_deny",
                    (GuardResult::Allowed, _) => "allow",
                    (GuardResult::Denied(_), _) => "deny",
                    (GuardResult::Faulted(_), _) => "fault",
                };
                (outcome.guard.clone(), said)
            })
            .collect()
    }
}

/// A request whose line waits for the end of its response body.
struct Pending {
    log: Arc<AccessLog>,
    request: RequestLine,
    outcome: Outcome,
    bytes_sent: u64,
}

impl Pending {
    fn write(self, complete: bool) {
        let line = format::line(
            self.log.format,
            &format::Entry {
                request: &self.request,
                outcome: &self.outcome,
                bytes_sent: self.bytes_sent,
                duration: self.request.started.elapsed(),
                complete,
            },
        );
        self.log.writer.send(line);
    }
}

/// A response body that writes its request's line when it ends or is dropped.
struct LoggedBody {
    inner: ProxyBody,
    pending: Option<Pending>,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(pending)) = (frame.data_ref(), self.pending.as_mut()) {
                    pending.bytes_sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl LoggedBody {
    fn finish(&mut self, complete: bool) {
        if let Some(pending) = self.pending.take() {
            pending.write(complete);
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // An empty body (a HEAD answer, a 204) may never be polled: it was sent whole.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
