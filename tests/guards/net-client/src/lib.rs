//! A guard that opens network connections, which imports WASI sockets: Vigil must refuse to
//! load it.

use vigil_guest::{Guard, NoConfig, Request, Verdict};

struct NetClient;

impl Guard for NetClient {
    type Config = NoConfig;
    fn on_request(_: &NoConfig, _: &Request) -> Verdict {
        match std::net::TcpStream::connect("203.0.113.1:80") {
            Ok(_) => vigil_guest::deny(500, "connected"),
            Err(_) => Verdict::Allow,
        }
    }
}

vigil_guest::guard!(NetClient);
