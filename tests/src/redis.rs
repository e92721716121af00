//! Real Redis servers for the fleet tests: Debian's `redis-server` (installed by
//! `scripts/setup.sh`), each on a free loopback port in a directory of its own, without
//! persistence. A server is stopped when its handle is dropped, and also when the test process
//! ends however it ends: it runs under a shell that kills it once the test's end of a pipe
//! closes, so a failed test leaves no server behind. [`RedisCluster`] joins three or more of
//! them into a Redis Cluster.

use crate::process::{free_port, temp_dir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One `redis-server` process.
pub struct RedisServer {
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    running: Option<(Child, ChildStdin)>,
}

impl RedisServer {
    /// Starts a server on a free port, with `extra` arguments (`--requirepass x`, …).
    pub fn start(name: &str, extra: &[&str]) -> RedisServer {
        RedisServer::start_on(name, free_port(), extra)
    }

    /// Starts a server on `port`.
    pub fn start_on(name: &str, port: u16, extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port,
            dir: temp_dir(&format!("redis-{name}")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            running: None,
        };
        server.restart();
        server
    }

    /// One server shared by the tests of this process (each test uses its own key prefix).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| RedisServer::start("shared", &[]))
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server at once (no shutdown save: it has no persistence).
    pub fn kill(&mut self) {
        if let Some((mut child, stdin)) = self.running.take() {
            drop(stdin);
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "the server is running");
        let mut args = vec![
            "--port".to_string(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            self.dir.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        // The shell waits for the pipe from this process to close (at kill, drop or exit),
        // then stops the server.
        let script = format!(
            "redis-server {} >'{}/redis.log' 2>&1 & pid=$!; read -r _; kill $pid; wait $pid",
            quoted.join(" "),
            self.dir.display()
        );
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("bash runs (is redis-server installed? scripts/setup.sh installs it)");
        let stdin = child.stdin.take().expect("piped stdin");
        self.running = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .try_command(&["PING"])
                .is_ok_and(|r| r == "+PONG" || r.starts_with("-NOAUTH"))
            {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}: {log}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:3`, `$5`, …)
    /// followed by, for a bulk string, its value on the next line.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis command {args:?}: {e}"))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if let Some(len) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            let mut value = vec![0; len + 2];
            reader.read_exact(&mut value)?;
            value.truncate(len);
            return Ok(format!("{line}\n{}", String::from_utf8_lossy(&value)));
        }
        Ok(line)
    }

    /// Every key's name under `prefix:` with its TTL in milliseconds (-1: none).
    pub fn keys_with_ttl(&self, prefix: &str) -> Vec<(String, i64)> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--scan", "--pattern"])
            .arg(format!("{prefix}:*"))
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|key| {
                let ttl = self.command(&["PTTL", key]);
                let ttl = ttl.trim_start_matches(':').parse().unwrap_or(-3);
                (key.to_string(), ttl)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.running.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster of primaries only, on loopback: each node a [`RedisServer`] with
/// `cluster-enabled yes` and its node file in its own temporary directory, joined by
/// `redis-cli --cluster create … --cluster-replicas 0`. Stopped when dropped.
pub struct RedisCluster {
    /// The nodes, in the order they were created.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` nodes (at least three, as `redis-cli --cluster create` asks) and waits until
    /// every one reports `cluster_state:ok`.
    pub fn start(name: &str, n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|i| {
                RedisServer::start_on(
                    &format!("{name}-{i}"),
                    cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        // Relative to the server's own `--dir`, a temporary directory.
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            while !node
                .command(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the cluster did not form");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The nodes' URLs, as `[state] redis` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// How many keys under `prefix:` each node holds.
    pub fn keys_per_node(&self, prefix: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| n.keys_with_ttl(prefix).len())
            .collect()
    }
}

/// A free port whose cluster bus port (the port + 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A TCP proxy in front of a server on loopback that holds every reply back for a delay that
/// can change while it runs: a slow Redis, for the timeout tests.
pub struct LatencyProxy {
    /// Its loopback port.
    pub port: u16,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LatencyProxy {
    /// Starts forwarding to `127.0.0.1:target`, with no delay.
    pub fn start(target: u16) -> LatencyProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut to_server, mut from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                });
                let (mut from_server, mut to_client) = (server, client);
                let delay = delay.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    loop {
                        let read = match from_server.read(&mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(read) => read,
                        };
                        let ms = delay.load(Ordering::Relaxed);
                        if ms > 0 {
                            std::thread::sleep(Duration::from_millis(ms));
                        }
                        if to_client.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        LatencyProxy { port, delay_ms }
    }

    /// Holds each reply back for `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}
