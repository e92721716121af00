//! Rebuilds a guard only when what it is built from changed: a stamp file beside the component
//! records a hash of every source file, of the WIT and of the tool's version and flags. For
//! the guards whose tools take seconds per guard (componentize-py, componentize-js).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds each guard directory of `guards` into `out_dir/<name>.wasm` (name from the
/// directory, `-` as `_`) with `build(dir, component, name)`, unless nothing changed since
/// the last build; returns (name, component path).
pub fn build_each(
    guards: Vec<PathBuf>,
    out_dir: &Path,
    wit: &Path,
    salts: &[&str],
    build: impl Fn(&Path, &Path, &str),
) -> Vec<(String, PathBuf)> {
    fs::create_dir_all(out_dir).unwrap();
    guards
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let component = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
            rebuild_if_changed(&component, &[&dir, wit], salts, || {
                build(&dir, &component, &name)
            });
            (name, component)
        })
        .collect()
}

/// Runs `build` unless `component` exists and its stamp matches the files under `dirs` and
/// `salts` (the tool's version and whatever flags change its output); then records the stamp.
fn rebuild_if_changed(component: &Path, dirs: &[&Path], salts: &[&str], build: impl FnOnce()) {
    let stamp = component.with_extension("stamp");
    let inputs = format!("{:016x}", inputs_hash(dirs, salts));
    if component.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == inputs) {
        return;
    }
    build();
    fs::write(&stamp, inputs).unwrap();
}

/// The first line `tool --version` prints; `hint` says how to get the tool when it fails.
pub fn tool_version(tool: &Path, hint: &str) -> String {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {hint}", tool.display()));
    assert!(
        out.status.success(),
        "`{} --version` failed; {hint}",
        tool.display()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A hash of every file under `dirs` (path and contents) and of `salts`.
fn inputs_hash(dirs: &[&Path], salts: &[&str]) -> u64 {
    let mut files = Vec::new();
    for dir in dirs {
        collect_files(dir, &mut files);
    }
    files.sort();
    let mut hasher = DefaultHasher::new();
    for salt in salts {
        salt.hash(&mut hasher);
    }
    for file in files {
        file.hash(&mut hasher);
        fs::read(&file).unwrap().hash(&mut hasher);
    }
    hasher.finish()
}

/// Every file under `dir`, recursively, but Python's `__pycache__` directories.
pub fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
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
