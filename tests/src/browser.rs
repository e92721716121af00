//! Headless Chromium for tests of pages people look at: the rendered DOM and a screenshot.
//! Chromium must be installed (`scripts/setup-browser.sh`); a missing browser fails the test
//! with that instruction instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Longest a single Chromium run may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The Chromium binary: `VIGIL_CHROMIUM`, else `chromium` on the PATH.
pub fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("VIGIL_CHROMIUM") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed, and the dashboard test needs it: run scripts/setup-browser.sh \
             (it installs Debian's chromium), or set VIGIL_CHROMIUM to a Chromium binary"
        )
    })
}

/// The DOM of `url` after it loaded, as HTML.
pub fn dump_dom(url: &str) -> String {
    let out = run(&["--dump-dom", url]);
    String::from_utf8_lossy(&out).into_owned()
}

/// Saves a PNG of `url` rendered in a `width`×`height` window to `file`.
pub fn screenshot(url: &str, file: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(file);
    run(&[
        &format!("--screenshot={}", file.display()),
        &format!("--window-size={width},{height}"),
        "--hide-scrollbars",
        url,
    ]);
    assert!(
        file.is_file(),
        "chromium wrote no screenshot to {}",
        file.display()
    );
}

/// Width and height from a PNG's header, or `None` when `bytes` is not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    Some((word(16), word(20)))
}

fn run(args: &[&str]) -> Vec<u8> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    // A fresh profile per run, so no state of an earlier run changes what is rendered.
    let profile = std::env::temp_dir().join(format!(
        "vigil-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromium ({}): {e}", chromium().display()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {TIMEOUT:?}: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(status.success(), "chromium failed ({status}): {args:?}");
    out
}
