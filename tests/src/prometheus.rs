//! `/metrics` answers read by a real Prometheus parser: the Prometheus project's Python client
//! (`prometheus_client`, Debian's python3-prometheus-client, which `scripts/setup.sh`
//! installs), through `prometheus_parse.py` beside this file.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// The interpreter that has `prometheus_client`: Debian's, unless `VIGIL_TEST_PYTHON` names
/// another.
fn python() -> String {
    std::env::var("VIGIL_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// One metric family as the parser read it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Family {
    /// The family's name, as the parser names it (a counter's without `_total`).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `info`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// One sample: its name, labels and value (`+Inf`/`-Inf` read as infinities).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Sample(
    pub String,
    pub BTreeMap<String, String>,
    #[serde(deserialize_with = "number")] pub f64,
);

fn number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Value {
        Number(f64),
        Text(String),
    }
    match <Value as serde::Deserialize>::deserialize(deserializer)? {
        Value::Number(n) => Ok(n),
        Value::Text(t) if t == "+Inf" => Ok(f64::INFINITY),
        Value::Text(t) if t == "-Inf" => Ok(f64::NEG_INFINITY),
        Value::Text(t) => Err(serde::de::Error::custom(format!("not a number: {t}"))),
    }
}

/// A parsed exposition.
#[derive(Clone, Debug)]
pub struct Exposition {
    /// Its families, in order.
    pub families: Vec<Family>,
}

impl Exposition {
    /// Parses `text` as `format`: `prometheus` (the text format 0.0.4) or `openmetrics`.
    /// Panics with the parser's message when it refuses the text.
    pub fn parse(text: &str, format: &str) -> Exposition {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(include_str!("prometheus_parse.py"))
            .arg(format)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/setup.sh", python()));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("ModuleNotFoundError"),
            "{} has no prometheus_client: run scripts/setup.sh (python3-prometheus-client)\n{stderr}",
            python()
        );
        assert!(
            out.status.success(),
            "the {format} parser refused the exposition: {stderr}\n{text}"
        );
        Exposition {
            families: serde_json::from_slice(&out.stdout).unwrap(),
        }
    }

    /// The family named `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The values of the samples named `sample` whose labels include all of `labels`.
    pub fn values(&self, sample: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|Sample(name, have, _)| {
                name == sample
                    && labels
                        .iter()
                        .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|Sample(_, _, value)| *value)
            .collect()
    }

    /// The one sample named `sample` with exactly `labels`; panics when there is none.
    pub fn value(&self, sample: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|Sample(name, have, _)| name == sample && *have == wanted)
            .map(|Sample(_, _, value)| *value)
            .unwrap_or_else(|| panic!("no {sample}{labels:?} in {:#?}", self.families))
    }

    /// The sum of the samples [`Exposition::values`] finds.
    pub fn sum(&self, sample: &str, labels: &[(&str, &str)]) -> f64 {
        self.values(sample, labels).iter().sum()
    }
}
