//! The smallest guard: allows every request. Used to measure the runtime's own cost.

use vigil_guest::{Guard, NoConfig, Request, Verdict};

struct AllowAll;

impl Guard for AllowAll {
    type Config = NoConfig;
    fn on_request(_: &NoConfig, _: &Request) -> Verdict {
        Verdict::Allow
    }
}

vigil_guest::guard!(AllowAll);
