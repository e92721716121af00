//! `vigil new guard NAME --lang LANG`: writes a guard project that builds on its own, outside
//! Vigil's repository. Each carries a copy of the WIT contract this binary was built with, a
//! small per-client rate limit as its policy, one test of that policy and a README saying how
//! to build it. The templates are in `proxy/templates/guard/`, compiled into the binary.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The language of a new guard project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen, built for wasm32-wasip2 by cargo.
    Rust,
    /// C with wit-bindgen's C bindings, built by wasi-sdk's clang.
    C,
    /// Python, bundled with CPython by componentize-py.
    Python,
    /// JavaScript, bundled with StarlingMonkey by componentize-js.
    Js,
}

/// What `vigil new` writes.
#[derive(Debug, clap::Subcommand)]
pub enum NewCommand {
    /// Write a guard project that builds on its own: the WIT contract, a per-client rate limit
    /// to start from, one test and a README with the build command.
    #[command(long_about = GUARD_ABOUT)]
    Guard(NewGuardArgs),
}

const GUARD_ABOUT: &str = "Write a guard project that builds on its own, outside Vigil's \
repository: a copy of the WIT contract this vigil was built with (wit/guard.wit), a guard \
that limits each client to `per_minute` requests a minute, one test of its policy and a \
README with the build and test commands.

  rust     cargo and wit-bindgen; needs the wasm32-wasip2 target
  c        make, wit-bindgen's C bindings and wasi-sdk's clang
  python   componentize-py (CPython in the component, about 18 MB)
  js       npm and componentize-js (StarlingMonkey in the component, about 12 MB)

  vigil new guard api-quota --lang rust
  vigil new guard api-quota --lang js --dir guards/api-quota";

/// Runs `vigil new`: writes the project and says what to run next.
pub fn main(command: &NewCommand) -> anyhow::Result<()> {
    let NewCommand::Guard(args) = command;
    let dir = run(args)?;
    println!("wrote {}", dir.display());
    println!("{}", next_steps(args, &dir));
    Ok(())
}

/// `vigil new guard` arguments.
#[derive(Debug, clap::Args)]
pub struct NewGuardArgs {
    /// The guard's name: lower-case letters, digits and `-`, starting with a letter. It names
    /// the package, the component file and the guard in the vigil.toml snippet of its README.
    pub name: String,
    /// The language to write the guard in.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// The directory to create [default: ./NAME]; it must not exist or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One file of a template: its path in the project and its text, with `{{name}}`, `{{crate}}`
/// and the pinned tool versions still to fill in.
type TemplateFile = (&'static str, &'static str);

const WIT: &str = include_str!("../../../guest-sdk/wit/guard.wit");

const RUST: &[TemplateFile] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/guard/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/guard/rust/src/lib.rs"),
    ),
    (
        "README.md",
        include_str!("../../templates/guard/rust/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/guard/rust/gitignore"),
    ),
];

const C: &[TemplateFile] = &[
    ("Makefile", include_str!("../../templates/guard/c/Makefile")),
    ("guard.c", include_str!("../../templates/guard/c/guard.c")),
    ("policy.c", include_str!("../../templates/guard/c/policy.c")),
    ("policy.h", include_str!("../../templates/guard/c/policy.h")),
    (
        "test_policy.c",
        include_str!("../../templates/guard/c/test_policy.c"),
    ),
    (
        "README.md",
        include_str!("../../templates/guard/c/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/guard/c/gitignore"),
    ),
    // cJSON (MIT), as the C guards in Vigil's repository use it.
    (
        "cjson/cJSON.c",
        include_str!("../../../example-guards/c/vendor/cjson/cJSON.c"),
    ),
    (
        "cjson/cJSON.h",
        include_str!("../../../example-guards/c/vendor/cjson/cJSON.h"),
    ),
    (
        "cjson/LICENSE",
        include_str!("../../../example-guards/c/vendor/cjson/LICENSE"),
    ),
];

const PYTHON: &[TemplateFile] = &[
    (
        "app.py",
        include_str!("../../templates/guard/python/app.py"),
    ),
    (
        "policy.py",
        include_str!("../../templates/guard/python/policy.py"),
    ),
    (
        "test_policy.py",
        include_str!("../../templates/guard/python/test_policy.py"),
    ),
    (
        "README.md",
        include_str!("../../templates/guard/python/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/guard/python/gitignore"),
    ),
];

const JS: &[TemplateFile] = &[
    (
        "package.json",
        include_str!("../../templates/guard/js/package.json"),
    ),
    (
        "guard.js",
        include_str!("../../templates/guard/js/guard.js"),
    ),
    (
        "policy.js",
        include_str!("../../templates/guard/js/policy.js"),
    ),
    (
        "policy.test.js",
        include_str!("../../templates/guard/js/policy.test.js"),
    ),
    (
        "README.md",
        include_str!("../../templates/guard/js/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/guard/js/gitignore"),
    ),
];

/// The npm packages the repository's own JavaScript guards are built with: the versions the
/// JavaScript template pins.
const JS_TOOLCHAIN: &str = include_str!("../../../example-guards/js/package.json");

/// Why a project could not be written.
#[derive(Debug)]
pub enum NewGuardError {
    /// The name cannot be a package and file name in every language.
    BadName(String),
    /// The directory exists and holds files.
    NotEmpty(PathBuf),
    /// Writing failed.
    Io(PathBuf, io::Error),
}

impl fmt::Display for NewGuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewGuardError::BadName(name) => write!(
                f,
                "guard name {name:?}: use 1 to 64 lower-case letters, digits and `-`, starting \
                 with a letter and not ending with `-`"
            ),
            NewGuardError::NotEmpty(dir) => write!(
                f,
                "{} already exists and is not empty; choose another --dir",
                dir.display()
            ),
            NewGuardError::Io(path, e) => write!(f, "cannot write {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for NewGuardError {}

/// Writes the project and returns its directory.
pub fn run(args: &NewGuardArgs) -> Result<PathBuf, NewGuardError> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(NewGuardError::NotEmpty(dir));
    }
    let files = match args.lang {
        Lang::Rust => RUST,
        Lang::C => C,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    write(&dir.join("wit/guard.wit"), WIT)?;
    for (path, template) in files {
        write(&dir.join(path), &fill(template, &args.name))?;
    }
    Ok(dir)
}

/// What to run next, for the message after the project is written.
fn next_steps(args: &NewGuardArgs, dir: &Path) -> String {
    let build = match args.lang {
        Lang::Rust => "cargo build --release --target wasm32-wasip2".to_string(),
        Lang::C => "make".to_string(),
        Lang::Python => format!(
            "componentize-py --wit-path wit --world guard componentize --stub-wasi app --output {}.wasm",
            args.name
        ),
        Lang::Js => "npm install && npm run build".to_string(),
    };
    format!(
        "cd {} && {build}    (README.md has the details and the test command)",
        dir.display()
    )
}

fn check_name(name: &str) -> Result<(), NewGuardError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(NewGuardError::BadName(name.to_string()))
    }
}

fn fill(template: &str, name: &str) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
        .replace(
            "{{componentize_js}}",
            &js_pin("@bytecodealliance/componentize-js"),
        )
        .replace(
            "{{preview2_shim}}",
            &js_pin("@bytecodealliance/preview2-shim"),
        )
}

/// The version `example-guards/js/package.json` pins for `package`.
fn js_pin(package: &str) -> String {
    let manifest: serde_json::Value =
        serde_json::from_str(JS_TOOLCHAIN).expect("example-guards/js/package.json is JSON");
    manifest["devDependencies"][package]
        .as_str()
        .expect("example-guards/js/package.json pins the package")
        .to_string()
}

fn write(path: &Path, text: &str) -> Result<(), NewGuardError> {
    let io_error = |e| NewGuardError::Io(path.to_path_buf(), e);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error)?;
    }
    fs::write(path, text).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_name_a_package_everywhere_are_refused() {
        for good in ["a", "rate-limit", "g2", "x-1-y"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Guard",
            "1st",
            "-x",
            "x-",
            "a_b",
            "a b",
            "é",
            long.as_str(),
        ] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        for files in [RUST, C, PYTHON, JS] {
            for (path, template) in files {
                let text = fill(template, "my-guard");
                assert!(!text.contains("{{"), "{path} keeps a placeholder");
            }
        }
        assert_eq!(fill("{{crate}}", "my-guard"), "my_guard");
        assert!(fill(JS[0].1, "g").contains("\"@bytecodealliance/componentize-js\": \"0."));
    }
}
