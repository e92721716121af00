//! Python guards: every directory under `example-guards/python/` with an `app.py` is one guard,
//! named after the directory. `componentize-py` (from PyPI, pinned by `scripts/setup.sh`) bundles
//! the interpreter, the standard library and the app, pre-initialised, into one component.
//!
//! That takes tens of seconds per guard, so a guard is rebuilt only when its sources, the WIT or
//! the componentize-py version changed (a stamp file beside the component records them).

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let version = tool_version(&tool);
    fs::create_dir_all(out_dir).unwrap();
    guards
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let component = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
            let stamp = component.with_extension("stamp");
            let inputs = format!("{:016x}", inputs_hash(&[&dir, wit], &version));
            let fresh = component.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == inputs);
            if !fresh {
                componentize(&tool, &dir, wit, &component, &name);
                fs::write(&stamp, inputs).unwrap();
            }
            (name, component)
        })
        .collect()
}

fn tool_version(tool: &Path) -> String {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", tool.display()));
    assert!(
        out.status.success(),
        "`{} --version` failed; {SETUP_HINT}",
        tool.display()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A hash of every file under `dirs` (path and contents) and the tool's version.
fn inputs_hash(dirs: &[&Path], version: &str) -> u64 {
    let mut files = Vec::new();
    for dir in dirs {
        collect_files(dir, &mut files);
    }
    files.sort();
    let mut hasher = DefaultHasher::new();
    version.hash(&mut hasher);
    "--stub-wasi".hash(&mut hasher);
    for file in files {
        file.hash(&mut hasher);
        fs::read(&file).unwrap().hash(&mut hasher);
    }
    hasher.finish()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "__pycache__") {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Runs componentize-py on a copy of the guard's sources: it writes `__pycache__` next to
/// the modules it imports, which must not land in the source tree (a change there would
/// rerun this build script).
fn componentize(tool: &Path, dir: &Path, wit: &Path, component: &Path, name: &str) {
    let staging = component.with_extension("src");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).unwrap();
    let mut files = Vec::new();
    collect_files(dir, &mut files);
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
