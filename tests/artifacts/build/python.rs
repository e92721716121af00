//! Python guards: every directory under `example-guards/python/` with an `app.py` is one guard,
//! named after the directory. `componentize-py` (from PyPI, pinned by `scripts/setup.sh`) bundles
//! the interpreter, the standard library and the app, pre-initialised, into one component.
//!
//! That takes tens of seconds per guard, so a guard is rebuilt only when its sources, the WIT or
//! the componentize-py version changed (see `stamp.rs`).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::stamp;

const COMPONENTIZE_PY: &str = "componentize-py";
const SETUP_HINT: &str =
    "run `scripts/setup.sh`, or `pip install componentize-py==0.25.1`, or set VIGIL_COMPONENTIZE_PY to its path";

/// Builds each Python guard under `guards_dir` into `out_dir`, returning (name, component path).
pub fn build_guards(guards_dir: &Path, wit: &Path, out_dir: &Path) -> Vec<(String, PathBuf)> {
    println!("cargo:rerun-if-env-changed=VIGIL_COMPONENTIZE_PY");
    let guards = super::guard_dirs(guards_dir, |p| p.join("app.py").is_file());
    if guards.is_empty() {
        return Vec::new();
    }
    let tool = env::var_os("VIGIL_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .or_else(|| super::find_in_path(COMPONENTIZE_PY))
        .unwrap_or_else(|| {
            panic!("\n\ncannot build the Python guards: {COMPONENTIZE_PY} is not on PATH; {SETUP_HINT}\n")
        });
    let version = stamp::tool_version(&tool, SETUP_HINT);
    stamp::build_each(
        guards,
        out_dir,
        wit,
        &[&version, "--stub-wasi"],
        |dir, component, name| componentize(&tool, dir, wit, component, name),
    )
}

/// Runs componentize-py on a copy of the guard's sources: it writes `__pycache__` next to
/// the modules it imports, which must not land in the source tree (a change there would
/// rerun this build script).
fn componentize(tool: &Path, dir: &Path, wit: &Path, component: &Path, name: &str) {
    let staging = component.with_extension("src");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).unwrap();
    let mut files = Vec::new();
    stamp::collect_files(dir, &mut files);
    for file in files {
        let target = staging.join(file.strip_prefix(dir).unwrap());
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(&file, target).unwrap();
    }
    let status = Command::new(tool)
        .arg("--quiet")
        .arg("--wit-path")
        .arg(wit)
        // The interpreter imports WASI sockets, which guards may not use; the guard needs no
        // WASI at all once pre-initialised, so every WASI import becomes a trapping stub. (Its
        // `random` module is then seeded at build time: guards must not rely on it.)
        .args([
            "--world",
            "guard",
            "componentize",
            "--stub-wasi",
            "app",
            "--python-path",
        ])
        .arg(&staging)
        .arg("--output")
        .arg(component)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", tool.display()));
    assert!(
        status.success(),
        "componentize-py failed on the Python guard {name} ({status})"
    );
}
