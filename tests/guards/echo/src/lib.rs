//! Reports every field of every request carrying an `x-echo` header, and of its response, as
//! a finding (`request`, `response`), so tests can check that each reaches a guard intact.
//! Other requests it allows at once: the cost of a bare call in this world, for benchmarks.

use vigil_guest::{state, Guard, Header, NoConfig, Request, Response, Verdict};

struct Echo;

fn fields(headers: &[Header]) -> String {
    headers
        .iter()
        .map(|h| format!("{}={:?}", h.name, h.value))
        .collect::<Vec<_>>()
        .join(",")
}

impl Guard for Echo {
    type Config = NoConfig;

    fn on_request(_: &NoConfig, req: &Request) -> Verdict {
        if req.header_bytes("x-echo").is_none() {
            return Verdict::Allow;
        }
        let c = &req.client;
        state::finding(
            "request",
            &format!(
                "{} {} route={:?} query={:?} key={} ip={} public={} authenticated={} at={} headers=[{}] body={:?}",
                req.method,
                req.path,
                req.route,
                req.query,
                c.key,
                c.ip,
                c.public,
                c.authenticated,
                req.received_ms,
                fields(&req.headers),
                req.body
            ),
        );
        Verdict::Allow
    }

    fn on_response(_: &NoConfig, req: &Request, resp: &Response) {
        if req.header_bytes("x-echo").is_none() {
            return;
        }
        state::finding(
            "response",
            &format!(
                "{} {} status={} latency={} headers=[{}]",
                req.method,
                req.path,
                resp.status,
                resp.latency_us,
                fields(&resp.headers)
            ),
        );
    }
}

vigil_guest::guard!(Echo);
