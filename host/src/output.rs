//! A guard's stdout, stderr and `log` lines, captured per call under one byte budget and
//! written to `tracing`, so a chatty guard can neither flood the logs nor stall the host.

use crate::log_context;
use crate::state::lock;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    budget: usize,
    dropped: u64,
}

/// The capture buffers of one instance; cloned into its WASI streams.
#[derive(Clone, Default)]
pub(crate) struct OutputCapture {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Clone, Copy)]
enum Which {
    Stdout,
    Stderr,
}

impl OutputCapture {
    /// Starts a call with `budget` bytes allowed.
    pub(crate) fn begin(&self, budget: usize) {
        let mut c = lock(&self.inner);
        c.stdout.clear();
        c.stderr.clear();
        c.budget = budget;
        c.dropped = 0;
    }

    /// Takes up to `len` bytes of budget; returns how many were granted.
    pub(crate) fn take(&self, len: usize) -> usize {
        let mut c = lock(&self.inner);
        let granted = len.min(c.budget);
        c.budget -= granted;
        c.dropped += (len - granted) as u64;
        granted
    }

    fn write(&self, which: Which, bytes: &[u8]) {
        let granted = self.take(bytes.len());
        let mut c = lock(&self.inner);
        let buf = match which {
            Which::Stdout => &mut c.stdout,
            Which::Stderr => &mut c.stderr,
        };
        buf.extend_from_slice(&bytes[..granted]);
    }

    /// Writes what the call printed to the log and returns the bytes dropped over budget.
    pub(crate) fn finish(&self, guard: &str) -> u64 {
        let mut c = lock(&self.inner);
        for (stream, text) in [("stdout", &c.stdout), ("stderr", &c.stderr)] {
            if !text.is_empty() {
                let text = String::from_utf8_lossy(text);
                log_context::with(|request_id, client, route| {
                    tracing::info!(target: "vigil::guard", guard, request_id, client, route, stream, output = %text.trim_end(), "guard output");
                });
            }
        }
        if c.dropped > 0 {
            log_context::with(|request_id, client, route| {
                tracing::warn!(target: "vigil::guard", guard, request_id, client, route, dropped_bytes = c.dropped, "guard output over the per-call limit was dropped");
            });
        }
        c.stdout = Vec::new();
        c.stderr = Vec::new();
        c.dropped
    }

    pub(crate) fn stdout(&self) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            which: Which::Stdout,
        }
    }

    pub(crate) fn stderr(&self) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            which: Which::Stderr,
        }
    }
}

/// One of the instance's output streams. Writes always succeed (bytes over budget are counted
/// and dropped) so a guard that prints too much is not turned into a failing guard.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    capture: OutputCapture,
    which: Which,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Large enough for one line of typical output, small enough to bound a host allocation.
const WRITE_PERMIT: usize = 64 * 1024;

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.capture.write(self.which, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.capture.write(self.which, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
