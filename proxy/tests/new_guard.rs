//! `vigil new guard`: each language's project is written into an empty directory outside the
//! repository, builds there with its own README's commands, passes its own test, and loads in
//! Vigil with the verdicts its README promises; the user's mistakes are named.
//!
//! The Rust projects build into one target directory under `CARGO_TARGET_TMPDIR`, kept between
//! runs, so that only the first run compiles wit-bindgen.

use std::path::{Path, PathBuf};
mod support;

use std::process::Command;
use std::time::Duration;
use support::vigil;

use vigil_host::{Chain, Client, GuardSource, GuardSpec, Request, Runtime, RuntimeConfig};

/// An empty scratch directory for one test, outside the repository (a project inside it would
/// be taken for a member of Vigil's workspace).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-new-guard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `vigil new guard NAME --lang LANG --dir DIR`: exit code, stdout, stderr.
fn vigil_new_guard(name: &str, lang: &str, dir: &Path) -> (i32, String, String) {
    vigil(&[
        "new",
        "guard",
        name,
        "--lang",
        lang,
        "--dir",
        dir.to_str().unwrap(),
    ])
}

/// Writes a project for `lang` named `name` into `dir` with `vigil new guard`.
fn new_guard(name: &str, lang: &str, dir: &Path) {
    let (code, out, err) = vigil_new_guard(name, lang, dir);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("wrote {}", dir.display())),
        "{out}"
    );
    for file in ["wit/guard.wit", "README.md", ".gitignore"] {
        assert!(dir.join(file).is_file(), "{lang}: no {file}");
    }
}

/// Runs `cmd` in `dir`, panicking with its output when it fails.
fn run(mut cmd: Command, dir: &Path, what: &str) -> String {
    let out = cmd
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

/// `program args`, without the settings of the cargo running this test (its target dir, its
/// flags, its wrapper), which must not leak into a project of the user's.
fn command(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for var in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The guard's README promises: `per_minute` per client with bursts of `burst`; then 429 with
/// `Retry-After`. Checked in Vigil's runtime, and that a bad configuration is named.
fn assert_limits_each_client(wasm: &Path) {
    let (code, out, err) = vigil(&[
        "check-guard",
        wasm.to_str().unwrap(),
        "--config",
        r#"{"per_minute": 60}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("exports the vigil:guard@0.1.0 `guard` world"),
        "{out}"
    );
    let (code, _, err) = vigil(&["check-guard", wasm.to_str().unwrap(), "--config", "{}"]);
    assert_eq!(
        (code, err.contains("per_minute: required")),
        (64, true),
        "{err}"
    );

    let mut config = RuntimeConfig::default();
    // An interpreter in a guard is slow to start on a loaded machine; the verdicts matter here.
    config.default_limits.deadline = Duration::from_secs(2);
    let runtime = Runtime::new(config).unwrap();
    let mut spec = GuardSpec::new("quota", GuardSource::File(wasm.to_path_buf()));
    spec.config_json = r#"{"per_minute": 6, "burst": 2}"#.into();
    let chain = Chain::new(vec![runtime.load_guard(spec).unwrap()]).unwrap();
    let verdict = |client: &str| {
        let mut req = Request {
            method: "GET".into(),
            path: "/".into(),
            route: None,
            query: None,
            headers: Vec::new(),
            client: Client {
                key: client.into(),
                ip: "203.0.113.7".into(),
                public: true,
                authenticated: false,
            },
            received_ms: 0,
            body: None,
        };
        let decision = chain.evaluate(&chain.plan_for(&req), &mut req);
        decision
            .denial
            .map(|d| (d.status, d.retry_after_secs, d.reason))
    };
    assert_eq!(verdict("a"), None);
    assert_eq!(verdict("a"), None);
    assert_eq!(
        verdict("a"),
        Some((429, Some(10), "more than 6 requests a minute".to_string())),
        "the burst is spent: the next token comes in 10 s"
    );
    assert_eq!(verdict("b"), None, "another client has its own limit");
}

/// cargo for `wasm32-wasip2`: rustup's target when installed, else Debian's Rust rebuilding
/// std (what `scripts/setup.sh` installs where rustup cannot download the target).
fn wasm_cargo() -> Command {
    let rustup_has_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-wasip2")
        });
    let build = ["build", "--release", "--target", "wasm32-wasip2"];
    if rustup_has_target {
        return command(env!("CARGO"), &build);
    }
    // On PATH, else where `cargo install` (scripts/setup.sh) puts it.
    let component_ld = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("wasm-component-ld"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            std::env::var("CARGO_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"))
                .join("bin/wasm-component-ld")
        });
    let mut cmd = command("/usr/bin/cargo", &build);
    cmd.arg("-Zbuild-std=std,panic_abort")
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_WASM32_WASIP2_LINKER", component_ld)
        .env(
            "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
            "-L/usr/lib/wasm32-wasi",
        )
        .env(
            "PATH",
            format!("/usr/lib/llvm-19/bin:{}", std::env::var("PATH").unwrap()),
        );
    cmd
}

#[test]
fn a_rust_guard_project_builds_on_its_own_and_limits_each_client() {
    let dir = scratch("rust").join("api-quota");
    new_guard("api-quota", "rust", &dir);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-guard-target");
    let mut build = wasm_cargo();
    build.env("CARGO_TARGET_DIR", &target);
    run(build, &dir, "cargo build of the Rust guard");
    let mut test = command(env!("CARGO"), &["test"]);
    test.env("CARGO_TARGET_DIR", &target);
    let out = run(test, &dir, "cargo test of the Rust guard");
    assert!(
        out.contains("config_is_checked_field_by_field ... ok"),
        "{out}"
    );
    assert_limits_each_client(&target.join("wasm32-wasip2/release/api_quota.wasm"));
}

/// The componentize-js `scripts/setup.sh` installed, which the repository's JavaScript guards
/// are built with; a generated project would get the same versions from `npm install`.
fn installed_node_modules() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    let modules = cache.join("vigil/componentize-js/node_modules");
    assert!(
        modules.join(".bin/componentize-js").exists(),
        "no componentize-js in {}: run scripts/setup.sh",
        modules.display()
    );
    modules
}

#[test]
fn a_js_guard_project_builds_on_its_own_and_limits_each_client() {
    let dir = scratch("js").join("api-quota");
    new_guard("api-quota", "js", &dir);
    // What `npm install` would fetch, without the network: the same pinned packages.
    std::os::unix::fs::symlink(installed_node_modules(), dir.join("node_modules")).unwrap();
    run(command("npm", &["run", "build"]), &dir, "npm run build");
    let out = run(command("npm", &["test"]), &dir, "npm test");
    assert!(
        out.contains("# pass 2") && out.contains("# fail 0"),
        "{out}"
    );
    assert_limits_each_client(&dir.join("api-quota.wasm"));
}

#[test]
fn a_python_guard_project_builds_on_its_own_and_limits_each_client() {
    let dir = scratch("python").join("api-quota");
    new_guard("api-quota", "python", &dir);
    let build = command(
        "componentize-py",
        &[
            "--wit-path",
            "wit",
            "--world",
            "guard",
            "componentize",
            "--stub-wasi",
            "app",
            "--output",
            "api-quota.wasm",
        ],
    );
    run(
        build,
        &dir,
        "componentize-py (scripts/setup.sh installs it)",
    );
    let out = run(
        command("python3", &["-m", "unittest", "-v"]),
        &dir,
        "python3 -m unittest",
    );
    assert!(out.contains("OK"), "{out}");
    assert_limits_each_client(&dir.join("api-quota.wasm"));
}

/// The C project's component needs wasi-sdk and wit-bindgen's CLI, which this repository's
/// own C guards do without (they use Debian's clang and the wit-bindgen crates); its test needs
/// only a C compiler, and runs everywhere. The component is built and loaded where both
/// tools are present (`WASI_SDK`, `wit-bindgen` on PATH).
#[test]
fn a_c_guard_project_tests_natively_and_builds_where_wasi_sdk_is() {
    let dir = scratch("c").join("api-quota");
    new_guard("api-quota", "c", &dir);
    let out = run(command("make", &["test"]), &dir, "make test");
    assert!(out.trim_end().ends_with("ok"), "{out}");
    let wasi_sdk = std::env::var("WASI_SDK").unwrap_or_else(|_| "/opt/wasi-sdk".into());
    let has_bindgen = Command::new("wit-bindgen")
        .arg("--version")
        .output()
        .is_ok();
    if !has_bindgen || !Path::new(&wasi_sdk).join("bin/clang").exists() {
        eprintln!("the C component is not built: no wit-bindgen on PATH or no {wasi_sdk}");
        return;
    }
    let mut make = command("make", &[]);
    make.env("WASI_SDK", &wasi_sdk);
    run(make, &dir, "make");
    assert_limits_each_client(&dir.join("api-quota.wasm"));
}

#[test]
fn bad_names_and_used_directories_are_refused_naming_them() {
    let root = scratch("refused");
    let dir = root.join("x");
    let (code, _, err) = vigil_new_guard("Bad_Name", "js", &dir);
    assert_eq!(code, 64);
    assert!(
        err.contains("guard name \"Bad_Name\": use 1 to 64 lower-case letters"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing is written for a bad name");

    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), "mine").unwrap();
    let (code, _, err) = vigil_new_guard("ok", "rust", &dir);
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!(
            "{} already exists and is not empty",
            dir.display()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "nothing was added"
    );

    let file = root.join("a-file");
    std::fs::write(&file, "").unwrap();
    let inside = file.join("guard");
    let (code, _, err) = vigil_new_guard("ok", "c", &inside);
    assert_eq!(code, 64);
    assert!(
        err.contains(&format!(
            "cannot write {}",
            inside.join("wit/guard.wit").display()
        )),
        "{err}"
    );

    let (code, _, err) = vigil(&["new", "guard", "ok", "--lang", "go"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid value 'go'") && err.contains("rust, c, python, js"),
        "{err}"
    );
}

#[test]
fn an_empty_directory_is_used_and_the_default_is_the_name() {
    let root = scratch("default-dir");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["new", "guard", "edge-check", "--lang", "python"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = std::fs::read_to_string(root.join("edge-check/app.py")).unwrap();
    assert!(app.starts_with("\"\"\"edge-check: a Vigil guard."), "{app}");
    let wit = std::fs::read_to_string(root.join("edge-check/wit/guard.wit")).unwrap();
    assert_eq!(
        wit,
        include_str!("../../guest-sdk/wit/guard.wit"),
        "the contract is the one vigil was built with"
    );

    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    new_guard("edge-check", "js", &empty);
    let package = std::fs::read_to_string(empty.join("package.json")).unwrap();
    assert!(package.contains("\"name\": \"edge-check\""), "{package}");
}
