//! The `echo` guard written against the `guard` world, where requests and responses arrive as
//! records (as C and Python guards get them), without the SDK: reports every field of
//! requests carrying `x-echo` in the same words as `echo`, so tests can check both worlds
//! deliver the same values, and allows others at once.

wit_bindgen::generate!({ path: "../../../guest-sdk/wit", world: "guard" });

use vigil::guard::state::finding;
use vigil::guard::types::Header;

struct EchoRecords;

fn fields(headers: &[Header]) -> String {
    headers
        .iter()
        .map(|h| format!("{}={:?}", h.name, h.value))
        .collect::<Vec<_>>()
        .join(",")
}

impl Guest for EchoRecords {
    fn init(_: String) -> Result<(), String> {
        Ok(())
    }

    fn on_request(req: Request) -> Verdict {
        if !req.headers.iter().any(|h| h.name == "x-echo") {
            return Verdict::Allow;
        }
        let c = &req.client;
        finding(
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

    fn on_response(req: Request, resp: Response) {
        if !req.headers.iter().any(|h| h.name == "x-echo") {
            return;
        }
        finding(
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

export!(EchoRecords);
