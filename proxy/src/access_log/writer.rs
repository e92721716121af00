//! The thread that writes access log lines: fed through a bounded queue, so a slow disk costs
//! lines (counted) rather than requests' time, and a full disk cannot grow the queue.

use super::AccessOutput;
use prometheus_client::metrics::counter::Counter;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use vigil_common::throttle::LogThrottle;

/// Lines waiting for the writer; at a few hundred bytes each, a few MiB at most.
const QUEUE_LINES: usize = 16_384;

/// How long the writer waits for a line before it looks at a reopen request anyway.
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// The sending end, shared by the workers.
pub(super) struct Writer {
    /// `None` once dropped, which tells the thread to write what is queued and end.
    queue: Option<SyncSender<String>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

struct Shared {
    reopen: AtomicBool,
    counts: LineCounts,
}

/// Lines queued and lines dropped, as the metrics export them.
#[derive(Clone, Default)]
pub struct LineCounts {
    /// Lines handed to the writer.
    pub queued: Counter,
    /// Lines left out: the queue was full or the destination failed.
    pub dropped: Counter,
}

impl Writer {
    /// Opens `output` and starts the thread that writes to it.
    pub(super) fn start(output: AccessOutput, counts: LineCounts) -> io::Result<Writer> {
        let sink = Sink::open(&output)?;
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let shared = Arc::new(Shared {
            reopen: AtomicBool::new(false),
            counts,
        });
        let writing = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-access-log".into())
            .spawn(move || write_lines(output, sink, lines, &writing))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
            shared,
        })
    }

    /// Queues `line`; counts it as dropped when the queue is full.
    pub(super) fn send(&self, line: String) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(line) {
            Ok(()) => {
                self.shared.counts.queued.inc();
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.counts.dropped.inc();
                static BEHIND: LogThrottle = LogThrottle::new();
                if let Some(also) = BEHIND.allow() {
                    tracing::warn!(
                        queued = QUEUE_LINES,
                        also_dropped = also,
                        "the access log writer is behind; lines are being dropped"
                    );
                }
            }
        }
    }

    pub(super) fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Relaxed);
    }
}

impl Drop for Writer {
    /// Lines of requests served before shutdown are written before the process ends.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

enum Sink {
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl Sink {
    fn open(output: &AccessOutput) -> io::Result<Sink> {
        match output {
            AccessOutput::Stdout => Ok(Sink::Stdout(io::stdout())),
            AccessOutput::File(path) => Ok(Sink::File(BufWriter::with_capacity(
                64 * 1024,
                append_to(path)?,
            ))),
        }
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        match self {
            // Whole lines, so that they do not interleave with anything else printed there.
            Sink::Stdout(out) => out.lock().write_all(line.as_bytes()),
            Sink::File(file) => file.write_all(line.as_bytes()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(out) => out.flush(),
            Sink::File(file) => file.flush(),
        }
    }
}

fn append_to(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_lines(output: AccessOutput, mut sink: Sink, lines: Receiver<String>, shared: &Shared) {
    loop {
        let first = match lines.recv_timeout(IDLE_CHECK) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if shared.reopen.swap(false, Ordering::Relaxed) {
            sink = reopened(&output, sink);
        }
        // What is queued goes out in one buffered write; the buffer is flushed when the queue
        // is empty, so a quiet log is still current on disk.
        let mut failed = 0u64;
        for line in first.into_iter().chain(lines.try_iter()) {
            if sink.write(&line).is_err() {
                failed += 1;
            }
        }
        if sink.flush().is_err() || failed > 0 {
            shared.counts.dropped.inc_by(failed.max(1));
            static FAILING: LogThrottle = LogThrottle::new();
            if let Some(also) = FAILING.allow() {
                tracing::error!(destination = ?output, also_failed = also, "cannot write the access log");
            }
        }
    }
    let _ = sink.flush();
}

/// The sink after a reopen: a fresh file at the configured path, or the old one when that
/// cannot be opened (lines keep going somewhere and the error says why).
fn reopened(output: &AccessOutput, mut sink: Sink) -> Sink {
    let _ = sink.flush();
    match Sink::open(output) {
        Ok(fresh) => {
            tracing::info!(destination = ?output, "access log reopened");
            fresh
        }
        Err(error) => {
            tracing::error!(destination = ?output, %error, "cannot reopen the access log; writing on to the file open before");
            sink
        }
    }
}
