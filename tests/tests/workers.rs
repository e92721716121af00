//! `vigil run` serves clients on `listen.workers` threads: every worker answers, and on SIGTERM
//! every worker lets its in-flight requests finish before the process exits.

use std::net::SocketAddr;
use vigil_tests::harness::Upstream;
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
