//! Reads only the header fields its config names (`reads`, passed to `reads-headers` from
//! `init`), and reports the names it receives as findings (`request`, `response`: the names,
//! comma-separated) so tests can check the host copies just those. With `late = true` it also
//! calls `reads-headers` while deciding a request, which the host refuses.

use serde::Deserialize;
use vigil_guest::bindings::vigil::guard::state::reads_headers;
use vigil_guest::{state, Guard, Header, Request, Response, Verdict};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    reads: Option<Vec<String>>,
    #[serde(default)]
    late: bool,
}

fn names(headers: &[Header]) -> String {
    let names: Vec<&str> = headers.iter().map(|h| h.name).collect();
    names.join(",")
}

struct Picky;

impl Guard for Picky {
    type Config = Config;

    fn headers_read(config: &Config) -> Option<Vec<String>> {
        config.reads.clone()
    }

    fn on_request(config: &Config, req: &Request) -> Verdict {
        if config.late {
            reads_headers(&["x-late".to_string()]);
        }
        state::finding("request", &names(&req.headers));
        Verdict::Allow
    }

    fn on_response(_: &Config, _: &Request, resp: &Response) {
        state::finding("response", &names(&resp.headers));
    }
}

vigil_guest::guard!(Picky);
