//! Loopback ports for the servers a test starts, handed out so that parallel tests and the
//! kernel never give the same one twice. Plain std only: the `vigil` crate's own tests include
//! this file too.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// Where handed-out ports start and end: below Linux's ephemeral range (32768–60999), so a
/// port is never taken meanwhile by a `bind(0)` listener or the source port of an outgoing
/// connection, which the kernel picks from that range.
const FIRST: u16 = 20_000;
const END: u16 = 32_000;

/// A loopback port that accepted a bind just now and was never handed out before in this
/// process. Asking the kernel for port 0 instead would race: between the port's release and
/// the child process binding it, a parallel test's `bind(0)` could receive it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test binaries run one after another; a different start per process keeps a port a
    // previous binary's leftover child may still hold out of the way without waiting for it.
    let span = END - FIRST;
    let start = (std::process::id() % u32::from(span)) as u16;
    loop {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start.wrapping_add(step) % span);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
