//! The files in `examples/` are what a user copies first, so they must keep working: `vigil
//! check` accepts the sidecar's configuration with the stock guards it names, the collector
//! loads its own with the vulnerability list it names, and the two agree with each other.

use std::path::{Path, PathBuf};
use std::process::Command;
use vigil::config::{Config, Overrides};
use vigil::routing::ApiSpec;
use vigil_collector::config::CollectorConfig;
use vigil_collector::Collector;
use vigil_tests::process::{temp_dir, vigil_binary};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A copy of `examples/`, so that what `vigil check` writes (the spool) stays out of the
/// source tree. The example's guards are the built-in ones: it works as it stands wherever
/// `vigil` is installed, with no guard built.
fn examples_copy() -> PathBuf {
    let dir = temp_dir("examples");
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let text = std::fs::read_to_string(examples().join("vigil.toml")).unwrap();
    let guard_tables = text.lines().filter(|l| l.trim() == "[[guard]]").count();
    let modules: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("module = \""))
        .collect();
    assert_eq!(
        modules.len(),
        guard_tables,
        "each [[guard]] of examples/vigil.toml names its module on a line of its own"
    );
    for module in &modules {
        assert!(
            module.starts_with("builtin:"),
            "examples/vigil.toml: module {module:?} is not a built-in guard"
        );
    }
    dir
}

#[test]
fn vigil_check_accepts_the_sidecar_example() {
    let dir = examples_copy();
    let config = dir.join("vigil.toml");
    let mut check = Command::new(vigil_binary());
    check.args(["check", "--config"]).arg(&config);
    for variable in [
        "VIGIL_LISTEN",
        "VIGIL_UPSTREAM",
        "VIGIL_LOG",
        "VIGIL_REPORT_TOKEN",
    ] {
        check.env_remove(variable);
    }
    let out = check.output().expect("vigil runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "vigil check --config examples/vigil.toml failed:\n{stderr}"
    );
    assert!(
        stdout.contains("is valid; 6 guard(s) loaded and initialised"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_collector_example_loads_with_its_vulnerability_list() {
    let file = examples().join("collector.toml");
    let mut config = CollectorConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !config.vulnerabilities.known.is_empty(),
        "examples/collector.toml names a list of known vulnerabilities"
    );
    // The example's database stays out of the source tree.
    let dir = temp_dir("example-collector");
    config.storage = vigil_collector::config::Storage::Sqlite(dir.join("collector.db"));
    let collector = Collector::open(config).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!collector.vulnerabilities.is_empty());

    let sidecar = Config::load(&examples().join("vigil.toml"), &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let spec = ApiSpec::load(
        sidecar
            .api
            .spec
            .as_deref()
            .expect("the example names a spec"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let documented: Vec<(&str, &str)> = spec.operations().collect();
    for v in &collector.vulnerabilities {
        assert!(
            documented.contains(&(v.method.as_str(), v.route.as_str())),
            "{} ({} {}) is not an operation of examples/openapi.yaml",
            v.id,
            v.method,
            v.route
        );
    }

    let report = sidecar.report.expect("the sidecar example reports");
    let token = collector
        .config
        .tokens
        .iter()
        .find(|t| Some(&t.secret) == report.token.as_ref())
        .expect("the sidecar example's token is one of the collector example's");
    assert!(
        token.service.is_none() || token.service.as_deref() == Some(report.service.as_str()),
        "the collector example's token may report for the sidecar example's service"
    );
    assert_eq!(
        report.collector.port_u16(),
        Some(collector.config.listen.address.port()),
        "the sidecar example reports to the collector example's port"
    );
    let _ = std::fs::remove_dir_all(dir);
}
