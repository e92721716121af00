//! Allows every request and declares that it reads no headers and observes no responses: a
//! guard call with nothing in it but the call itself. The load test runs three of them to
//! measure what the runtime costs per guard, apart from any policy's work.

use vigil_guest::{Guard, NoConfig, Request, Verdict};

struct Noop;

impl Guard for Noop {
    type Config = NoConfig;
    const READS_HEADERS: bool = false;
    const OBSERVES_RESPONSES: bool = false;

    fn on_request(_: &NoConfig, _: &Request) -> Verdict {
        Verdict::Allow
    }
}

vigil_guest::guard!(Noop);
