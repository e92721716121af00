//! C guards: every directory under `example-guards/c/` (but `vendor/`) holding `.c` files is one
//! guard, named after the directory. Its sources, the bindings generated here from the WIT
//! (`wit-bindgen-c`) and the vendored cJSON are compiled by clang for `wasm32-wasi` (a
//! WASI preview 1 reactor against Debian's wasi-libc), then `wit-component` turns the core
//! module into a component with the WASI preview 1 adapter of the wasmtime release the host
//! uses.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const CLANG_CANDIDATES: &[&str] = &["clang-19", "/usr/lib/llvm-19/bin/clang", "clang"];
const SETUP_HINT: &str = "run `scripts/setup.sh`, or install clang-19, lld-19, wasi-libc and \
     libclang-rt-19-dev-wasm32 (Debian), or set VIGIL_WASI_CC to a clang that targets \
     wasm32-wasi and VIGIL_WASI_SYSROOT to its sysroot (e.g. wasi-sdk)";

/// Builds each C guard under `guards_dir` into `out_dir`, returning (name, component path).
pub fn build_guards(guards_dir: &Path, wit: &Path, out_dir: &Path) -> Vec<(String, PathBuf)> {
    println!("cargo:rerun-if-env-changed=VIGIL_WASI_CC");
    println!("cargo:rerun-if-env-changed=VIGIL_WASI_SYSROOT");
    let guards = super::guard_dirs(guards_dir, |p| {
        p.file_name().is_some_and(|n| n != "vendor") && !c_sources(p).is_empty()
    });
    if guards.is_empty() {
        return Vec::new();
    }
    let clang = find_clang().unwrap_or_else(|| {
        panic!("\n\ncannot build the C guards: no clang found (tried VIGIL_WASI_CC, {CLANG_CANDIDATES:?}); {SETUP_HINT}\n")
    });
    let bindings = out_dir.join("bindings");
    generate_bindings(wit, &bindings);
    let vendor = guards_dir.join("vendor/cjson");
    guards
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let file = name.replace('-', "_");
            let core = out_dir.join(format!("{file}.core.wasm"));
            compile(&clang, &dir, &bindings, &vendor, &core, &name);
            let component = out_dir.join(format!("{file}.wasm"));
            componentize(&core, &component, &name);
            (name, component)
        })
        .collect()
}

fn c_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    files.sort();
    files
}

fn find_clang() -> Option<PathBuf> {
    if let Some(cc) = env::var_os("VIGIL_WASI_CC") {
        return Some(PathBuf::from(cc));
    }
    CLANG_CANDIDATES.iter().find_map(|c| {
        let path = Path::new(c);
        if path.is_absolute() {
            path.is_file().then(|| path.to_path_buf())
        } else {
            super::find_in_path(c)
        }
    })
}

/// Writes `guard.h`, `guard.c` and `guard_component_type.o` (the world's type, which
/// `wit-component` reads back from the linked module) into `out`.
fn generate_bindings(wit: &Path, out: &Path) {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(wit)
        .unwrap_or_else(|e| panic!("cannot read the WIT in {}: {e:#}", wit.display()));
    let world = resolve
        .select_world(&[package], Some("guard"))
        .unwrap_or_else(|e| panic!("no `guard` world in {}: {e:#}", wit.display()));
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .unwrap_or_else(|e| panic!("cannot generate the C bindings: {e:#}"));
    fs::create_dir_all(out).unwrap();
    for (name, contents) in files.iter() {
        fs::write(out.join(name), contents).unwrap();
    }
}

fn clang_for_wasi(clang: &Path) -> Command {
    let mut cmd = Command::new(clang);
    cmd.args(["--target=wasm32-wasi", "-O2", "-std=c11"]);
    if let Some(sysroot) = env::var_os("VIGIL_WASI_SYSROOT") {
        cmd.arg("--sysroot").arg(sysroot);
    }
    cmd
}

fn run(mut cmd: Command, clang: &Path, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", clang.display()));
    assert!(
        status.success(),
        "\n\n{what} failed ({status}); if clang reported a missing header, library or \
         `wasm-ld`: {SETUP_HINT}\n"
    );
}

fn compile(clang: &Path, dir: &Path, bindings: &Path, vendor: &Path, core: &Path, name: &str) {
    // Vendored code is compiled on its own, without the guards' warning level.
    let cjson = core.with_extension("cjson.o");
    let mut cmd = clang_for_wasi(clang);
    cmd.args(["-w", "-c"])
        .arg(vendor.join("cJSON.c"))
        .arg("-o")
        .arg(&cjson);
    run(cmd, clang, "compiling cJSON for the C guards");

    let mut cmd = clang_for_wasi(clang);
    // A reactor: no `main`; the host calls the exports after `_initialize`.
    cmd.args(["-mexec-model=reactor", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(bindings)
        .arg("-I")
        .arg(vendor)
        .args(c_sources(dir))
        .arg(bindings.join("guard.c"))
        .arg(bindings.join("guard_component_type.o"))
        .arg(&cjson)
        .arg("-o")
        .arg(core);
    run(cmd, clang, &format!("compiling the C guard {name}"));
}

fn componentize(core: &Path, component: &Path, name: &str) {
    let module = fs::read(core).unwrap();
    let bytes = wit_component::ComponentEncoder::default()
        .module(&module)
        .and_then(|e| {
            e.validate(true).adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|e| e.encode())
        .unwrap_or_else(|e| panic!("cannot make a component of the C guard {name}: {e:#}"));
    fs::write(component, bytes).unwrap();
}
