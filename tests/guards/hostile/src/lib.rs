//! A guard that misbehaves on demand: the `x-attack` request header picks the attack, and
//! without it the guard allows the request, so tests can check the next request is unharmed.

use vigil_guest::{Guard, NoConfig, Request, Verdict};

struct Hostile;

impl Guard for Hostile {
    type Config = NoConfig;

    fn on_request(_: &NoConfig, req: &Request) -> Verdict {
        match req.header("x-attack") {
            None => Verdict::Allow,
            Some("loop") => loop {
                std::hint::black_box(());
            },
            Some("alloc") => {
                // Grow until the host's memory cap stops us.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("trap") => {
                #[allow(unreachable_code)]
                {
                    core::arch::wasm32::unreachable();
                    Verdict::Allow
                }
            }
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(5));
                Verdict::Allow
            }
            Some("panic") => panic!("hostile guard panicked on purpose"),
            Some("snoop") => {
                let file = match std::fs::read("/etc/passwd") {
                    Ok(_) => "opened".to_string(),
                    Err(e) => format!("denied ({e})"),
                };
                let env = match std::env::var("HOME") {
                    Ok(v) => format!("HOME={v}"),
                    Err(_) => "empty".to_string(),
                };
                let vars = std::env::vars().count();
                let args = std::env::args().count();
                vigil_guest::deny(
                    403,
                    format!("file={file}; env={env}; vars={vars}; args={args}"),
                )
            }
            Some("chatty") => {
                let line = "x".repeat(1023);
                for _ in 0..128 {
                    println!("{line}");
                    eprintln!("{line}");
                }
                for _ in 0..100 {
                    vigil_guest::log::info(&line);
                }
                Verdict::Allow
            }
            Some("bad-pattern") => {
                let asked = ["no-leading-slash".to_string()];
                vigil_guest::state::happened(&asked, std::time::Duration::from_secs(60), false);
                Verdict::Allow
            }
            Some("many-patterns") => {
                let asked = vec!["/x".to_string(); 65];
                vigil_guest::state::happened(&asked, std::time::Duration::from_secs(60), false);
                Verdict::Allow
            }
            Some(other) => vigil_guest::deny(400, format!("unknown attack {other}")),
        }
    }
}

vigil_guest::guard!(Hostile);
