//! Reporting end to end with real processes: `vigil run` in front of a real upstream, reporting
//! to `vigil collect` with its SQLite store, while the collector or the sidecar goes away.
//! Every request sent must be counted exactly once by the collector.

#[path = "../../tests/src/ports.rs"]
mod ports;

use ports::free_port;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const TOKEN: &str = "fleet-token-0123456789abcdef";

/// A child process killed when the test ends, however it ends, with the file its standard
/// error goes to.
struct Process(Child, PathBuf);

impl Process {
    /// Starts `vigil` with `args`, appending its standard error to `log`, and waits until
    /// `ready` holds; a child that exits or never gets ready fails the test with its log.
    fn start(args: &[&str], log: PathBuf, what: &str, ready: impl FnMut() -> bool) -> Process {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            .env("VIGIL_LOG", "warn")
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut process = Process(child, log);
        process.wait_until(what, ready);
        process
    }

    fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.0.try_wait() {
                panic!(
                    "{what} exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after 30s waiting for {what}:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    fn signal(&mut self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let code = self.0.wait().unwrap().code();
        std::mem::forget(self);
        code
    }

    /// SIGKILL: no chance to flush anything.
    fn kill(mut self) {
        self.signal("-KILL");
        let _ = self.0.wait();
        std::mem::forget(self);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-reporting-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// One HTTP/1.1 exchange on a fresh connection; the status and body, or `None` when nothing
/// listens.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A plain upstream answering 200 to everything, on a thread.
fn start_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                let mut seen = Vec::new();
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

struct Ports {
    public: u16,
    admin: u16,
    ingest: u16,
    api: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            public: free_port(),
            admin: free_port(),
            ingest: free_port(),
            api: free_port(),
        }
    }
}

fn start_collector(dir: &Path, ports: &Ports) -> Process {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddress = \"127.0.0.1:{}\"\n[api]\naddress = \"127.0.0.1:{}\"\n\
             [storage]\npath = \"collector.db\"\n[[token]]\nname = \"fleet\"\ntoken = \"{TOKEN}\"\n",
            ports.ingest, ports.api
        ),
    )
    .unwrap();
    Process::start(
        &["collect", "--config", config.to_str().unwrap()],
        dir.join("collector.log"),
        "the collector",
        || http(ports.api, "GET", "/healthz", &[]).is_some_and(|(s, _)| s == 200),
    )
}

fn start_sidecar(dir: &Path, ports: &Ports, upstream: u16, extra: &str) -> Process {
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n\
             [upstream]\nurl = \"http://127.0.0.1:{upstream}\"\n\
             [identity]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
             [report]\ncollector = \"http://127.0.0.1:{}\"\nservice = \"shop\"\ninstance = \"shop-a\"\n\
             token = \"{TOKEN}\"\ninterval = \"200ms\"\ntimeout = \"2s\"\nmax_backoff = \"500ms\"\n\
             spool_dir = \"spool\"\n{extra}",
            ports.public, ports.admin, ports.ingest
        ),
    )
    .unwrap();
    Process::start(
        &["run", "--config", config.to_str().unwrap()],
        dir.join("sidecar.log"),
        "the sidecar",
        || http(ports.admin, "GET", "/readyz", &[]).is_some_and(|(s, _)| s == 200),
    )
}

/// Sends `count` public requests for `/items/{n}` through the sidecar.
fn send_items(ports: &Ports, count: usize) {
    for n in 0..count {
        let client = format!("198.51.100.{}", n % 7 + 1);
        let (status, _) = http(
            ports.public,
            "GET",
            &format!("/items/{n}"),
            &[("x-forwarded-for", &client)],
        )
        .expect("the sidecar answers");
        assert_eq!(status, 200);
    }
}

fn api(ports: &Ports, path: &str) -> Value {
    let (status, body) = http(ports.api, "GET", path, &[]).expect("the collector API answers");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Requests the collector counted for `GET /items/{id}`; 0 while it has none.
fn counted(ports: &Ports) -> u64 {
    let Some((200, body)) = http(ports.api, "GET", "/api/endpoints?service=shop", &[]) else {
        return 0;
    };
    let endpoints: Value = serde_json::from_str(&body).unwrap();
    endpoints
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["method"] == "GET" && e["route"] == "/items/{id}")
        .map(|e| e["requests"].as_u64().unwrap())
        .sum()
}

/// Waits until the collector counted `expected`, then checks that nothing more arrives late.
fn assert_counted_exactly(ports: &Ports, expected: u64) {
    eventually(
        &format!("{expected} requests counted"),
        Duration::from_secs(30),
        || counted(ports) >= expected,
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(counted(ports), expected, "counted exactly once");
}

/// Requests held in the sidecar's spool, read back from its files.
fn spooled_requests(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join("spool")) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json.gz"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|body| vigil::exposure::spool::decode(&body).ok())
        .flat_map(|report| report.endpoints)
        .map(|e| e.requests)
        .sum()
}

#[test]
fn a_collector_outage_while_traffic_flows_loses_nothing_and_counts_nothing_twice() {
    let dir = tempdir("outage");
    let ports = Ports::new();
    let upstream = start_upstream();
    let collector = start_collector(&dir, &ports);
    let sidecar = start_sidecar(&dir, &ports, upstream, "");

    send_items(&ports, 40);
    assert_counted_exactly(&ports, 40);

    // The collector goes away while traffic goes on; reports pile up in the spool.
    assert_eq!(collector.stop(), Some(0));
    send_items(&ports, 30);
    std::thread::sleep(Duration::from_millis(600));
    send_items(&ports, 30);
    eventually(
        "the spool to hold the outage",
        Duration::from_secs(10),
        || spooled_requests(&dir) == 60,
    );

    // It comes back with its database; the spool drains and traffic keeps flowing.
    let _collector = start_collector(&dir, &ports);
    send_items(&ports, 50);
    assert_counted_exactly(&ports, 150);

    // A graceful stop delivers the last delta.
    send_items(&ports, 5);
    assert_eq!(sidecar.stop(), Some(0));
    assert_eq!(counted(&ports), 155);
    assert_eq!(
        spooled_requests(&dir),
        0,
        "the spool is empty after delivery"
    );

    let services = api(&ports, "/api/services");
    let shop = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "shop")
        .expect("the shop service");
    assert_eq!(shop["instances"], 1);
    assert_eq!(shop["dropped"]["reports"], 0);
}

#[test]
fn a_sidecar_killed_while_the_collector_is_down_delivers_its_spool_after_restart() {
    let dir = tempdir("sigkill");
    let ports = Ports::new();
    let upstream = start_upstream();
    let sidecar = start_sidecar(&dir, &ports, upstream, "");

    send_items(&ports, 30);
    eventually(
        "the spool to hold every request",
        Duration::from_secs(10),
        || spooled_requests(&dir) == 30,
    );
    sidecar.kill();

    let _collector = start_collector(&dir, &ports);
    let sidecar = start_sidecar(&dir, &ports, upstream, "");
    assert_counted_exactly(&ports, 30);
    // The restarted sidecar continues the sequence: new reports are not taken for duplicates.
    send_items(&ports, 12);
    assert_counted_exactly(&ports, 42);
    assert_eq!(sidecar.stop(), Some(0));
}

#[test]
fn findings_derived_from_real_traffic_reach_the_collector() {
    let dir = tempdir("findings");
    std::fs::write(
        dir.join("openapi.yaml"),
        "openapi: 3.0.3\ninfo: {title: shop, version: '1'}\npaths:\n  /orders:\n    post: {}\n  \
         /admin/stats:\n    get: {}\n  /reports/{id}:\n    get: {}\n",
    )
    .unwrap();
    let ports = Ports::new();
    let upstream = start_upstream();
    let _collector = start_collector(&dir, &ports);
    let sidecar = start_sidecar(
        &dir,
        &ports,
        upstream,
        "zombie_after = \"1s\"\n[api]\nspec = \"openapi.yaml\"\ninternal_only = [\"GET /admin/**\"]\n",
    );
    let public = |client: &'static str, method: &str, path: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("x-forwarded-for", client)];
        headers.extend_from_slice(extra);
        let (status, _) = http(ports.public, method, path, &headers).unwrap();
        assert_eq!(status, 200);
    };
    public("198.51.100.20", "GET", "/admin/stats", &[]);
    public("198.51.100.20", "GET", "/debug/pprof", &[]);
    for _ in 0..25 {
        public(
            "198.51.100.21",
            "POST",
            "/orders",
            &[("authorization", "Bearer abc")],
        );
    }
    public("198.51.100.22", "POST", "/orders", &[]);

    let kinds = [
        "internal-reached-publicly",
        "shadow-endpoint",
        "unauthenticated-access",
        "zombie-candidate",
    ];
    eventually("every kind of finding", Duration::from_secs(20), || {
        let findings = api(&ports, "/api/findings?service=shop");
        kinds.iter().all(|kind| {
            findings
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == *kind)
        })
    });
    let findings = api(&ports, "/api/findings?service=shop");
    let find = |kind: &str| {
        findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == kind)
            .unwrap()
            .clone()
    };
    assert_eq!(find("internal-reached-publicly")["route"], "/admin/stats");
    assert_eq!(find("internal-reached-publicly")["client"], "198.51.100.20");
    assert_eq!(find("shadow-endpoint")["route"], "/debug/pprof");
    assert_eq!(find("unauthenticated-access")["client"], "198.51.100.22");
    assert_eq!(find("zombie-candidate")["route"], "/reports/{id}");

    let public_unauthenticated = api(&ports, "/api/endpoints?service=shop&unauthenticated=true");
    assert!(
        public_unauthenticated
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["route"] == "/orders"),
        "{public_unauthenticated:#}"
    );
    assert_eq!(sidecar.stop(), Some(0));
}
