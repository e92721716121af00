//! Declares that it reads no headers and observes no responses, and reports what it receives
//! as findings (`headers`, the number of header fields it got; `response`, from `on-response`)
//! so tests can check the host honours the declaration.

use vigil_guest::{state, Guard, NoConfig, Request, Response, Verdict};

struct Blind;

impl Guard for Blind {
    type Config = NoConfig;
    const READS_HEADERS: bool = false;
    const OBSERVES_RESPONSES: bool = false;

    fn on_request(_: &NoConfig, req: &Request) -> Verdict {
        state::finding("headers", &req.headers.len().to_string());
        Verdict::Allow
    }

    fn on_response(_: &NoConfig, _: &Request, resp: &Response) {
        state::finding("response", &resp.status.to_string());
    }
}

vigil_guest::guard!(Blind);
