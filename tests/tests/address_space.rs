//! Each guard instance reserves address space up front. Under an address-space limit
//! (`ulimit -v`, as some hosts and containers set), the default pool cannot be reserved: `vigil
//! run` must say which setting to lower, and start once it is lowered.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigil_tests::process::{eventually, free_port, http, temp_dir, vigil_binary};

/// 200 GiB: far more than Vigil needs, far less than the default pool's 2 TiB of reservations.
const ADDRESS_SPACE_KIB: u64 = 200 << 20;

/// `vigil run --config config` under the address-space limit.
fn run_limited(config: &std::path::Path) -> std::process::Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" run --config \"$1\""
        ))
        .arg(vigil_binary())
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash starts")
}

#[test]
fn an_address_space_limit_names_the_pool_setting_and_a_smaller_pool_starts() {
    let dir = temp_dir("address-space");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let base = format!(
        "[listen]\naddress = \"127.0.0.1:{}\"\nworkers = 2\n[admin]\naddress = \"{admin}\"\n\
         ready_requires_upstream = false\n[upstream]\nurl = \"http://127.0.0.1:9\"\n",
        free_port()
    );
    let config = dir.join("vigil.toml");
    std::fs::write(&config, &base).unwrap();
    let mut child = run_limited(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil kept running with a pool larger than its address space");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).to_string();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("sandbox.max_instances (now 256)")
            && stderr.contains(config.to_str().unwrap())
            && stderr.contains("ulimit -v"),
        "{stderr}"
    );

    std::fs::write(&config, format!("{base}[sandbox]\nmax_instances = 8\n")).unwrap();
    let mut child = run_limited(&config);
    eventually("readiness with a pool of 8", || {
        http(admin, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
    });
    let _ = child.kill();
    let _ = child.wait();
}
