//! Records what `vigil --version` prints: the version, and the commit when the crate is built
//! from a git checkout of this repository. A source archive (a crates.io package, a release
//! tarball) has no repository and prints the version alone. `VIGIL_COMMIT`, set when building,
//! names the commit instead, for packagers who build from an archive and know it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VIGIL_COMMIT");
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let commit = match env::var("VIGIL_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => Some(commit.trim().to_string()),
        _ => git_commit(),
    };
    let long = match commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version,
    };
    println!("cargo:rustc-env=VIGIL_VERSION={long}");
}

/// The checked-out commit, abbreviated, and its date; `None` outside a checkout of this
/// repository or without git.
fn git_commit() -> Option<String> {
    let crate_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&crate_dir)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    // An archive unpacked inside some other repository must not print that repository's
    // commit: the checkout must be the one this crate sits in.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != crate_dir.parent()?.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let date = git(&["log", "-1", "--format=%cs", "HEAD"])?;
    // Run again when HEAD moves (a commit, a checkout, a reset): HEAD itself, the branch it
    // names, and packed refs, each where this checkout (or worktree) keeps it.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = crate_dir.join(Path::new(&path));
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(format!("{commit}, {date}"))
}
