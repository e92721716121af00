//! The deployment files in `deploy/` are copied by operators as they stand, so they are checked
//! here: the systemd unit by systemd's own `systemd-analyze` (verify, and the exposure score of
//! its hardening), the Kubernetes manifest as the objects a pod needs, with the configuration
//! it carries accepted by `vigil check`.

use serde::Deserialize as _;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vigil-deploy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `KEY=value` lines of the unit's `[Service]` section, in order.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').expect("KEY=value");
            settings.push((key.to_string(), value.to_string()));
        }
    }
    settings
}

#[test]
fn the_systemd_unit_runs_vigil_hardened() {
    let unit = std::fs::read_to_string(deploy("systemd/vigil.service")).unwrap();
    let settings = service_settings(&unit);
    let value = |key: &str| {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    for (key, expected) in [
        (
            "ExecStart",
            "/usr/local/bin/vigil run --config /etc/vigil/vigil.toml",
        ),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("StateDirectory", "vigil"),
        ("ReadOnlyPaths", "/etc/vigil"),
        ("ReadWritePaths", "/var/lib/vigil /var/cache/vigil"),
        ("RestartPreventExitStatus", "64"),
    ] {
        assert_eq!(
            value(key),
            [expected],
            "{key}= in deploy/systemd/vigil.service"
        );
    }
    // The arguments the unit gives are arguments this vigil takes.
    let out = Command::new(VIGIL)
        .args(["check", "--config", "/nonexistent/vigil.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/vigil.toml"),
        "vigil check takes --config: {stderr}"
    );

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed here");
        return;
    };
    assert!(version.status.success());
    // verify checks that the programs exist: the unit's, pointed at the vigil just built.
    let dir = temp_dir("systemd");
    let copy = dir.join("vigil.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/vigil", VIGIL)).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    // An unknown or misspelt key is only a warning to verify, and a lost hardening setting.
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify deploy/systemd/vigil.service:\n{complaints}"
    );
    // systemd's exposure score, 0 (locked down) to 10: at most 2.0, its "OK" band.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(
        security.status.success(),
        "systemd-analyze security: exposure above 2.0:\n{report}"
    );
    eprintln!(
        "{}",
        report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Every document of a multi-document YAML file.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .collect()
}

/// The value at a path of mapping keys and sequence indices, panicking with the path.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, step| {
        let next = match step.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(step),
        };
        next.unwrap_or_else(|| panic!("missing {path} (at {step:?})"))
    })
}

fn text<'a>(value: &'a Value, path: &str) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// The `containerPort` of the port called `name` in a container.
fn port_named(container: &Value, name: &str) -> u64 {
    at(container, "ports")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort")?.as_u64())
        .unwrap_or_else(|| panic!("no port named {name}"))
}

#[test]
fn the_kubernetes_manifest_is_a_pod_with_vigil_in_front_of_the_app() {
    let file = deploy("kubernetes/vigil-sidecar.yaml");
    let docs = documents(&std::fs::read_to_string(&file).unwrap());
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} in {}", file.display()))
    };
    for doc in &docs {
        text(doc, "apiVersion");
        text(doc, "metadata.name");
    }
    let pod = of_kind("Pod");
    assert_eq!(text(pod, "apiVersion"), "v1");
    let containers = at(pod, "spec.containers").as_sequence().unwrap();
    let container = |name: &str| {
        containers
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    let vigil = container("vigil");
    let app = container("app");
    for c in [vigil, app] {
        text(c, "image");
    }

    // The configuration: a ConfigMap volume mounted where the arguments read it.
    let args: Vec<&str> = at(vigil, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..2], ["run", "--config"]);
    let config_path = Path::new(args[2]);
    let mount = at(vigil, "volumeMounts")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| config_path.starts_with(text(m, "mountPath")))
        .expect("the configuration's directory is mounted");
    let volume = at(pod, "spec.volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| text(v, "name") == text(mount, "name"))
        .expect("the mounted volume exists");
    let config_map = of_kind("ConfigMap");
    assert_eq!(
        text(volume, "configMap.name"),
        text(config_map, "metadata.name")
    );
    let key = config_path.file_name().unwrap().to_str().unwrap();
    let toml = at(config_map, "data")
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the ConfigMap has no {key}"));

    // vigil check accepts it, with the built-in guards it names and no file beside it.
    let dir = temp_dir("kubernetes");
    let config_file = dir.join(key);
    std::fs::write(&config_file, toml).unwrap();
    let out = Command::new(VIGIL)
        .arg("check")
        .arg("--config")
        .arg(&config_file)
        .env_remove("VIGIL_LISTEN")
        .env_remove("VIGIL_ADMIN")
        .env_remove("VIGIL_UPSTREAM")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vigil check of the ConfigMap's {key}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(toml.contains("module = \"builtin:"), "{toml}");
    let config: toml::Table = toml.parse().unwrap();
    let address = |section: &str| -> std::net::SocketAddr {
        config[section]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };

    // Ports: clients on `http`, the probes on `admin`, where the kubelet can reach them.
    let (listen, admin) = (address("listen"), address("admin"));
    assert_eq!(u64::from(listen.port()), port_named(vigil, "http"));
    assert_eq!(u64::from(admin.port()), port_named(vigil, "admin"));
    assert!(
        admin.ip().is_unspecified(),
        "the kubelet probes over the pod's address, not loopback: admin.address = {admin}"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(text(vigil, &format!("{probe}.httpGet.path")), path);
        assert_eq!(text(vigil, &format!("{probe}.httpGet.port")), "admin");
    }

    // The app listens where Vigil forwards, on loopback only: nothing goes around Vigil.
    let upstream = config["upstream"]["url"].as_str().unwrap();
    let upstream = upstream.trim_start_matches("http://");
    let app_args = at(app, "args").as_sequence().unwrap();
    assert!(
        app_args
            .iter()
            .any(|a| a.as_str() == Some(&format!("-listen={upstream}"))),
        "the app listens on {upstream}: {app_args:?}"
    );
    assert!(upstream.starts_with("127.0.0.1:"), "{upstream}");

    // The Service sends clients to Vigil's port, not the app's.
    let service = of_kind("Service");
    assert_eq!(text(service, "spec.ports.0.targetPort"), "http");
    assert_eq!(
        at(service, "spec.selector"),
        at(pod, "metadata.labels"),
        "the Service selects the pod"
    );
    let _ = std::fs::remove_dir_all(dir);
}
