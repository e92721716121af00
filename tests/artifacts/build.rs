//! Builds every guard under `example-guards/` and `tests/guards/` to a component of the
//! `vigil:guard` contract and writes their paths as constants for the tests and benchmarks.
//!
//! Rust guards: rustup's `wasm32-wasip2` target when it is installed (the ordinary developer
//! machine), else Debian's `rustc-web` with std rebuilt from source (`scripts/setup.sh`
//! installs it). C guards (`example-guards/c/*/`): clang and wasi-libc, see `build/c.rs`.
//! Python guards (`example-guards/python/*/`): componentize-py, see `build/python.rs`.
//! JavaScript guards (`example-guards/js/*/`): componentize-js, see `build/js.rs`.
//! A missing tool stops the build with a message naming it.

#[path = "build/c.rs"]
mod c;
#[path = "build/js.rs"]
mod js;
#[path = "build/python.rs"]
mod python;
#[path = "build/stamp.rs"]
mod stamp;

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const GUEST_WORKSPACES: &[&str] = &["example-guards", "tests/guards"];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const WASI_LIBC: &str = "/usr/lib/wasm32-wasi";
const LLVM_BIN: &str = "/usr/lib/llvm-19/bin";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-guests"),
        None => root.join("target/wasm-guests"),
    };
    for dir in GUEST_WORKSPACES.iter().chain(&["guest-sdk"]) {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=VIGIL_GUEST_TOOLCHAIN");

    let toolchain = Toolchain::detect().unwrap_or_else(|missing| {
        panic!(
            "\n\ncannot build the Wasm guards: {missing}.\n\
             On an ordinary rustup machine: `rustup target add {TARGET}`.\n\
             On Debian 12 without that target: run `scripts/setup.sh`, which installs \
             rustc-web, cargo-web, rust-web-src, lld-19, wasi-libc and wasm-component-ld.\n"
        )
    });

    let mut built = Vec::new();
    for workspace in GUEST_WORKSPACES {
        let dir = root.join(workspace);
        toolchain.build(&root, &dir, &target_dir);
        for name in workspace_members(&dir) {
            let wasm = target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            assert!(
                wasm.exists(),
                "guard {name} was built but {} is missing",
                wasm.display()
            );
            built.push((name, wasm));
        }
    }
    let wit = root.join("guest-sdk/wit");
    built.extend(c::build_guards(
        &root.join("example-guards/c"),
        &wit,
        &target_dir.join("c"),
    ));
    built.extend(python::build_guards(
        &root.join("example-guards/python"),
        &wit,
        &target_dir.join("python"),
    ));
    built.extend(js::build_guards(
        &root.join("example-guards/js"),
        &wit,
        &target_dir.join("js"),
    ));

    let mut consts = String::new();
    let mut all = String::from(
        "/// Every guard built, as (name, path).\npub const ALL: &[(&str, &str)] = &[\n",
    );
    for (name, wasm) in &built {
        let path = wasm.display();
        writeln!(
            consts,
            "/// Path of the compiled `{name}` guard.\npub const {}: &str = {path:?};",
            name.replace('-', "_").to_uppercase()
        )
        .unwrap();
        writeln!(all, "    ({name:?}, {path:?}),").unwrap();
    }
    all.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("guards.rs");
    fs::write(out, consts + &all).unwrap();
}

enum Toolchain {
    Rustup,
    Debian { component_ld: PathBuf },
}

impl Toolchain {
    fn detect() -> Result<Toolchain, String> {
        let forced = env::var("VIGIL_GUEST_TOOLCHAIN").ok();
        if forced.as_deref() != Some("debian") && rustup_has_target() {
            return Ok(Toolchain::Rustup);
        }
        if forced.as_deref() == Some("rustup") {
            return Err(format!(
                "VIGIL_GUEST_TOOLCHAIN=rustup but rustup has no {TARGET} target"
            ));
        }
        let mut missing = Vec::new();
        for (path, package) in [
            (DEBIAN_RUSTC, "rustc-web"),
            (DEBIAN_CARGO, "cargo-web"),
            (WASI_LIBC, "wasi-libc"),
            ("/usr/lib/llvm-19/bin/wasm-ld", "lld-19"),
            ("/usr/lib/rustlib/src/rust/library", "rust-web-src"),
        ] {
            if !Path::new(path).exists() {
                missing.push(format!("{path} (Debian package {package})"));
            }
        }
        let component_ld = find_in_path("wasm-component-ld").or_else(|| {
            let candidate = cargo_home()?.join("bin/wasm-component-ld");
            candidate.exists().then_some(candidate)
        });
        if component_ld.is_none() {
            missing.push("wasm-component-ld (`cargo install wasm-component-ld --locked`)".into());
        }
        match component_ld {
            Some(component_ld) if missing.is_empty() => Ok(Toolchain::Debian { component_ld }),
            _ => Err(format!(
                "rustup has no {TARGET} target, and the Debian toolchain lacks {}",
                missing.join(", ")
            )),
        }
    }

    fn build(&self, root: &Path, workspace: &Path, target_dir: &Path) {
        let mut cmd = match self {
            Toolchain::Rustup => Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into())),
            Toolchain::Debian { .. } => Command::new(DEBIAN_CARGO),
        };
        // The outer build's settings (clippy's wrapper, its flags, its target) must not leak
        // into the guest build.
        for var in [
            "RUSTC",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTDOCFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
            "CARGO_MAKEFLAGS",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_BUILD_RUSTC_WRAPPER",
            "RUSTC_BOOTSTRAP",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(workspace)
            .args([
                "build",
                "--release",
                "--workspace",
                "--target",
                TARGET,
                "--target-dir",
            ])
            .arg(target_dir);
        // Panic messages carry source paths: the checkout's and Cargo's home are written as
        // /vigil and /cargo, so that a component (the committed built-in guards above all)
        // does not record the machine it was built on.
        let mut rustflags = vec![format!("--remap-path-prefix={}=/vigil", root.display())];
        if let Some(home) = cargo_home() {
            rustflags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
        }
        if let Toolchain::Debian { component_ld } = self {
            let path = format!("{LLVM_BIN}:{}", env::var("PATH").unwrap_or_default());
            rustflags.push(format!("-L{WASI_LIBC}"));
            cmd.env("PATH", path)
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_WASIP2_LINKER", component_ld)
                .arg("-Zbuild-std=std,panic_abort");
        }
        // Encoded (separated by 0x1f), so that a path with a space stays one argument.
        cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"));
        let status = cmd.status().unwrap_or_else(|e| {
            panic!(
                "cannot run cargo to build the guards in {}: {e}",
                workspace.display()
            )
        });
        assert!(
            status.success(),
            "building the guards in {} failed ({status})",
            workspace.display()
        );
    }
}

/// The sorted subdirectories of `parent` that `is_guard` accepts; none when it is absent.
fn guard_dirs(parent: &Path, is_guard: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_dir() && is_guard(p))
        .collect();
    dirs.sort();
    dirs
}

/// Cargo's home: `CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Package names of the guards of a guest workspace: every direct subdirectory whose
/// Cargo.toml builds a `cdylib` (shared libraries of helpers are not guards).
fn workspace_members(workspace: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(workspace)
        .unwrap()
        .filter_map(|entry| {
            let manifest = fs::read_to_string(entry.ok()?.path().join("Cargo.toml")).ok()?;
            if !manifest.contains("cdylib") {
                return None;
            }
            manifest.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("name = \"")?
                    .strip_suffix('"')
                    .map(String::from)
            })
        })
        .collect();
    names.sort();
    names
}
