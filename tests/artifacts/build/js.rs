//! JavaScript guards: every directory under `example-guards/js/` with a `guard.js` is one guard,
//! named after the directory. componentize-js (npm, StarlingMonkey: SpiderMonkey built for
//! WASI) evaluates the module at build time and snapshots the engine with it into one
//! component. `scripts/setup.sh` installs the version `example-guards/js/package-lock.json`
//! pins with `npm ci` into a cache directory, outside the source tree (its 400 MB would be
//! scanned on every build otherwise).
//!
//! A guard takes about ten seconds to build, so it is rebuilt only when its sources, the WIT or
//! the componentize-js version changed (see `stamp.rs`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::stamp;

/// Features of StarlingMonkey left out: `fetch` and the `fetch` event need `wasi:http`, which
/// guards may not import. What is left (stdio, clocks, random) imports only interfaces the
/// host links without capabilities: captured output, clocks that cannot wait, randomness.
const DISABLED_FEATURES: &[&str] = &["http", "fetch-event"];
const SETUP_HINT: &str =
    "run `scripts/setup.sh` (it runs `npm ci` for example-guards/js/package-lock.json \
     into the cache directory), or set VIGIL_COMPONENTIZE_JS to a componentize-js executable";

/// Builds each JavaScript guard under `guards_dir` into `out_dir`, returning (name, path).
pub fn build_guards(guards_dir: &Path, wit: &Path, out_dir: &Path) -> Vec<(String, PathBuf)> {
    println!("cargo:rerun-if-env-changed=VIGIL_COMPONENTIZE_JS");
    println!("cargo:rerun-if-env-changed=XDG_CACHE_HOME");
    let guards = super::guard_dirs(guards_dir, |p| p.join("guard.js").is_file());
    if guards.is_empty() {
        return Vec::new();
    }
    let tool = match env::var_os("VIGIL_COMPONENTIZE_JS") {
        Some(tool) => PathBuf::from(tool),
        None => installed_tool(&guards_dir.join("package-lock.json")),
    };
    let version = stamp::tool_version(&tool, SETUP_HINT);
    let flags = format!("--disable {}", DISABLED_FEATURES.join(" "));
    stamp::build_each(
        guards,
        out_dir,
        wit,
        &[&version, &flags],
        |dir, component, name| componentize(&tool, dir, wit, component, name),
    )
}

/// Where `scripts/setup.sh` installs the toolchain: `$XDG_CACHE_HOME/vigil/componentize-js`,
/// else `~/.cache/vigil/componentize-js`.
fn toolchain_dir() -> Option<PathBuf> {
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("vigil/componentize-js"))
}

/// The componentize-js that setup installed, when it installed it from the pinned lock file
/// (setup copies the lock file to `installed-lock.json` once `npm ci` succeeded).
fn installed_tool(pinned_lock: &Path) -> PathBuf {
    let Some(dir) = toolchain_dir() else {
        panic!("\n\ncannot build the JavaScript guards: neither XDG_CACHE_HOME nor HOME is set; {SETUP_HINT}\n");
    };
    let installed = fs::read(dir.join("installed-lock.json")).ok();
    let pinned = fs::read(pinned_lock)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", pinned_lock.display()));
    let tool = dir.join("node_modules/.bin/componentize-js");
    if installed.as_deref() != Some(pinned.as_slice()) || !tool.exists() {
        panic!(
            "\n\ncannot build the JavaScript guards: {} does not hold the componentize-js that \
             {} pins; {SETUP_HINT}\n",
            dir.display(),
            pinned_lock.display()
        );
    }
    tool
}

fn componentize(tool: &Path, dir: &Path, wit: &Path, component: &Path, name: &str) {
    let status = Command::new(tool)
        .arg(dir.join("guard.js"))
        .arg("--wit")
        .arg(wit)
        .args(["--world-name", "guard", "--disable"])
        .args(DISABLED_FEATURES)
        .arg("--out")
        .arg(component)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", tool.display()));
    assert!(
        status.success(),
        "componentize-js failed on the JavaScript guard {name} ({status})"
    );
}
