//! `vigil run` serves clients on `listen.workers` threads: every worker answers, on SIGTERM
//! every worker lets its in-flight requests finish before the process exits, and connections
//! are spread evenly over the workers whichever of them accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_tests::harness::{tempdir, Upstream};
use vigil_tests::process::{eventually, free_port, http, temp_dir, Process};

/// Names of the process's threads that serve clients.
fn worker_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("vigil-worker-"))
        .collect();
    names.sort();
    names
}

/// A test upstream (on its own runtime, kept alive by the caller) and `vigil run` in front of
/// it with `workers` workers; returns the process and its public address.
fn start(name: &str, workers: usize) -> (tokio::runtime::Runtime, Upstream, Process, SocketAddr) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream = runtime.block_on(Upstream::start());
    let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = temp_dir(name).join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddress = \"{public}\"\nworkers = {workers}\nshutdown_grace = \"10s\"\n\
             [admin]\naddress = \"{admin}\"\n[upstream]\nurl = \"http://{}\"\n",
            upstream.addr
        ),
    )
    .unwrap();
    let process = Process::vigil(&["run", "--config", config.to_str().unwrap()]);
    eventually("readiness", || {
        http(admin, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
    });
    (runtime, upstream, process, public)
}

#[test]
fn the_configured_workers_serve_concurrent_clients_and_drain_on_sigterm() {
    let (_runtime, upstream, process, public) = start("workers", 3);
    assert_eq!(
        worker_threads(process.id()),
        ["vigil-worker-0", "vigil-worker-1", "vigil-worker-2"]
    );

    let clients: Vec<_> = (0..24)
        .map(|n| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| http(public, "GET", &format!("/items/{n}-{i}"), &[], b"").unwrap())
                    .filter(|r| r.status == 200)
                    .count()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, 120, "every request answered 200");
    assert_eq!(upstream.count(), 120, "every request reached the upstream");

    // A request in flight when SIGTERM arrives still gets its answer; then the process exits 0.
    let slow = std::thread::spawn(move || http(public, "GET", "/slow", &[], b""));
    eventually("the slow request to reach the upstream", || {
        upstream.count() == 121
    });
    assert_eq!(process.signal_and_wait("TERM"), Some(0));
    let answer = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(answer.status, 200);
    assert!(
        std::net::TcpStream::connect(public).is_err(),
        "no longer accepting after exit"
    );
}

#[test]
fn one_worker_is_enough() {
    let (_runtime, _upstream, process, public) = start("one-worker", 1);
    assert_eq!(worker_threads(process.id()), ["vigil-worker-0"]);
    let answer = http(public, "GET", "/items/1", &[], b"").unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(process.signal_and_wait("TERM"), Some(0));
}

/// `vigil_worker_connections` of each of `workers` workers.
fn connections_per_worker(sidecar: &vigil::sidecar::Sidecar, workers: usize) -> Vec<u64> {
    let metrics = sidecar.render_metrics(vigil::metrics::Format::Prometheus);
    (0..workers)
        .map(|worker| {
            let series = format!("vigil_worker_connections{{worker=\"{worker}\"}} ");
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(&series)?.parse().ok())
                .unwrap_or_else(|| panic!("no {series}in /metrics:\n{metrics}"))
        })
        .collect()
}

/// Sends one request on a new keep-alive connection and reads its answer's status line,
/// leaving the connection open.
async fn open_connection(addr: SocketAddr, n: usize) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /items/{n} HTTP/1.1\r\nhost: shop\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "answer cut short");
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_one_worker_accepts_are_shared_with_the_others() {
    let upstream = Upstream::start().await;
    let dir = tempdir("balance");
    let path = dir.join("vigil.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\nworkers = 2\nshutdown_grace = \"2s\"\n\
             [upstream]\nurl = \"http://{}\"\n",
            upstream.addr
        ),
    )
    .unwrap();
    let config = vigil::config::Config::load(&path, &Default::default()).unwrap();
    let sidecar = Arc::new(
        tokio::task::spawn_blocking(|| vigil::sidecar::Sidecar::new(config, Default::default()))
            .await
            .unwrap()
            .unwrap(),
    );
    // Every client connects to worker 0's socket; worker 1's is never connected to, so any
    // connection worker 1 serves was handed to it.
    let accepting = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = accepting.local_addr().unwrap();
    let never_connected = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let workers =
        vigil::serve::start_workers_on(sidecar.clone(), vec![accepting, never_connected], stop_rx)
            .unwrap();

    let mut clients = Vec::new();
    for n in 0..8 {
        let (stream, status) = open_connection(addr, n).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "connection {n}");
        clients.push(stream);
    }
    assert_eq!(upstream.count(), 8, "every request reached the upstream");
    assert_eq!(connections_per_worker(&sidecar, 2), [4, 4]);

    drop(clients);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while connections_per_worker(&sidecar, 2) != [0, 0] {
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections still counted: {:?}",
            connections_per_worker(&sidecar, 2)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    workers.wait().await;
}
