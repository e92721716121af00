//! The guard SDK builds outside this repository: the `Cargo.toml` and `src/lib.rs` that
//! docs/guards.md shows a guard author, against a copy of `guest-sdk/` in a directory of its
//! own, compile with nothing inherited from Vigil's workspace, and the guide's test of that
//! guard, with the SDK's test kit, passes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The body of the first fenced block of `language` after `heading` in `markdown`.
fn fenced_block<'a>(markdown: &'a str, heading: &str, language: &str) -> &'a str {
    let section = &markdown[markdown.find(heading).expect("the section exists")..];
    let fence = format!("```{language}\n");
    let start = section.find(&fence).expect("the section has the block") + fence.len();
    let length = section[start..].find("```").expect("the block is closed");
    &section[start..start + length]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_documented_guard_crate_builds_against_a_copy_of_the_sdk() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(repository.join("docs/guards.md")).unwrap();
    let manifest = fenced_block(&guide, "## In Rust", "toml");
    let source = fenced_block(&guide, "## In Rust", "rust");
    // And the guide's test of it, with the SDK's test kit.
    let test_manifest = fenced_block(&guide, "### Testing a guard", "toml");
    let test_source = fenced_block(&guide, "### Testing a guard", "rust");
    let documented_dependency = r#"vigil-guest = { path = "../vigil/guest-sdk" }"#;
    assert!(
        manifest.contains(documented_dependency),
        "the guide's Cargo.toml depends on the SDK by path:\n{manifest}"
    );

    // Outside the repository, where no workspace of Vigil's is found above the crates.
    let outside = std::env::temp_dir().join(format!("vigil-guest-sdk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    let sdk = outside.join("vigil/guest-sdk");
    copy_dir(&repository.join("guest-sdk"), &sdk);
    let guard = outside.join("login-throttle");
    std::fs::create_dir_all(guard.join("src")).unwrap();
    let sdk_path = format!("{:?}", sdk.display().to_string());
    let manifest = manifest.replace(
        documented_dependency,
        &format!("vigil-guest = {{ path = {sdk_path} }}"),
    ) + "\n"
        + &test_manifest.replace("\"../vigil/guest-sdk\"", &sdk_path);
    std::fs::write(guard.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(guard.join("src/lib.rs"), format!("{source}\n{test_source}")).unwrap();

    // Kept between runs: the SDK's dependencies are then compiled once.
    let target: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("standalone-guard");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["test", "--quiet", "--lib"])
        .current_dir(&guard)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let _ = std::fs::remove_dir_all(&outside);
    assert!(
        output.status.success(),
        "the documented guard crate and its test do not build and pass against a copy of the \
         SDK:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
