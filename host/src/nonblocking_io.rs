//! `wasi:io/poll` and `wasi:io/streams` for guards, without a tokio runtime.
//!
//! wasmtime-wasi's synchronous bindings run every operation that may wait (dropping a stream,
//! `blocking-write-and-flush`, `poll`, ...) through `Handle::block_on`, which panics on a
//! thread already running a tokio runtime: the sidecar calls guards from its workers' event
//! loops, so a guard that printed killed the request. Waiting would also hold the worker past
//! the guard's deadline, which epochs cannot interrupt in a host call. These bindings poll
//! wasmtime-wasi-io's implementation once instead: what is ready at once (guard output always
//! is) completes, and anything that would wait traps, so the guard's `on_error` decides.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::WasiView;

/// Replaces the `wasi:io/poll` and `wasi:io/streams` functions already in `linker` with ones
/// that never wait.
pub(crate) fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = poll::add_to_linker::<T, NonBlockingIo>(linker, |t| NonBlocking(t.ctx().table))
        .and_then(|()| {
            streams::add_to_linker::<T, NonBlockingIo>(linker, |t| NonBlocking(t.ctx().table))
        });
    linker.allow_shadowing(false);
    linked
}

struct NonBlockingIo;

impl HasData for NonBlockingIo {
    type Data<'a> = NonBlocking<'a>;
}

/// An instance's resource table, seen through bindings that never wait.
struct NonBlocking<'a>(&'a mut ResourceTable);

/// Polls `operation` once: its result if it is ready, else a trap naming `what`.
fn at_once<F: Future>(what: &str, operation: F) -> wasmtime::Result<F::Output> {
    // A no-op waker: nothing will poll the operation again, so nothing needs waking.
    match pin!(operation).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(done) => Ok(done),
        Poll::Pending => Err(wasmtime::format_err!(
            "guards may not block: {what} would have to wait"
        )),
    }
}

/// [`at_once`] for stream operations, whose traps travel inside [`StreamError`].
fn stream_at_once<T>(
    what: &str,
    operation: impl Future<Output = StreamResult<T>>,
) -> StreamResult<T> {
    at_once(what, operation).map_err(StreamError::Trap)?
}

impl poll::Host for NonBlocking<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once("poll", async_poll::Host::poll(self.0, pollables))?
    }
}

impl poll::HostPollable for NonBlocking<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        at_once(
            "pollable.ready",
            async_poll::HostPollable::ready(self.0, pollable),
        )?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        at_once(
            "pollable.block",
            async_poll::HostPollable::block(self.0, pollable),
        )?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for NonBlocking<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(async_streams::Host::convert_stream_error(self.0, err)?.into())
    }
}

impl streams::HostOutputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        at_once(
            "dropping an output-stream",
            async_streams::HostOutputStream::drop(self.0, stream),
        )?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        async_streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        async_streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_at_once(
            "output-stream.blocking-write-and-flush",
            async_streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes),
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_at_once(
            "output-stream.blocking-write-zeroes-and-flush",
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        async_streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        async_streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        stream_at_once(
            "output-stream.blocking-flush",
            async_streams::HostOutputStream::blocking_flush(self.0, stream),
        )
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        async_streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_at_once(
            "output-stream.blocking-splice",
            async_streams::HostOutputStream::blocking_splice(self.0, dst, src, len),
        )
    }
}

impl streams::HostInputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        at_once(
            "dropping an input-stream",
            async_streams::HostInputStream::drop(self.0, stream),
        )?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        async_streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        stream_at_once(
            "input-stream.blocking-read",
            async_streams::HostInputStream::blocking_read(self.0, stream, len),
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        async_streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        stream_at_once(
            "input-stream.blocking-skip",
            async_streams::HostInputStream::blocking_skip(self.0, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        async_streams::HostInputStream::subscribe(self.0, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poll::{Host as _, HostPollable as _};

    /// A pollable that is never ready, as a guard's would be if it waited on anything real.
    struct Never;

    #[async_trait::async_trait]
    impl wasmtime_wasi::p2::Pollable for Never {
        async fn ready(&mut self) {
            std::future::pending::<()>().await
        }
    }

    #[test]
    fn waiting_on_what_is_not_ready_traps_instead_of_blocking() {
        let mut table = ResourceTable::new();
        let never = table.push(Never).unwrap();
        let pollable = wasmtime_wasi::p2::subscribe(&mut table, never).unwrap();
        let mut io = NonBlocking(&mut table);
        let borrow = || Resource::<DynPollable>::new_borrow(pollable.rep());
        assert!(!io.ready(borrow()).unwrap());
        let blocked = io.block(borrow()).unwrap_err().to_string();
        assert!(
            blocked.contains("guards may not block: pollable.block"),
            "{blocked}"
        );
        let polled = io.poll(vec![borrow()]).unwrap_err().to_string();
        assert!(polled.contains("guards may not block: poll"), "{polled}");
        poll::HostPollable::drop(&mut io, pollable).unwrap();
    }
}
