//! `docs/configuration.md` against the schema of `vigil.toml`: every key of the schema is in
//! its tables and no other, each with the default the code gives it. A reference that drifts
//! from the code is worse than none, so the drift fails here.

use std::collections::BTreeMap;
use std::path::Path;
use vigil::config::{default_keys, Config, Overrides, SchemaDefault};

const REFERENCE: &str = "docs/configuration.md";

fn reference_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(REFERENCE);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One row of a section's table.
struct Row {
    line: usize,
    default: String,
}

/// The section a heading names: `` ## `[listen]` `` is `listen`, `` ## `[[guard]]` `` is `guard`.
fn section_of(heading: &str) -> Option<String> {
    let start = heading.find("`[")?;
    let rest = &heading[start + 1..];
    let end = rest.find(']')?;
    let name = rest[..end].trim_start_matches('[');
    Some(name.to_string())
}

/// The cells of a table row, without the outer pipes.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// Every documented key as a dotted path, with its default cell and line. Rows of tables under
/// a heading that names a section count; the header and separator rows, and code blocks, do
/// not.
fn documented(text: &str) -> Result<BTreeMap<String, Row>, Vec<String>> {
    let mut rows = BTreeMap::new();
    let mut problems = Vec::new();
    let mut section: Option<String> = None;
    let mut in_code = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if line.starts_with('#') {
            section = section_of(line);
            continue;
        }
        let Some(section) = &section else { continue };
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let cells = cells(line);
        let is_separator = cells
            .iter()
            .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'));
        if is_separator || cells[0] == "key" {
            continue;
        }
        if cells.len() != 5 {
            problems.push(format!(
                "{REFERENCE}:{line_no}: expected 5 columns (key, type, default, bounds, meaning), found {}",
                cells.len()
            ));
            continue;
        }
        let Some(key) = cells[0].strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
            problems.push(format!(
                "{REFERENCE}:{line_no}: the key {:?} is not written as `key`",
                cells[0]
            ));
            continue;
        };
        let key = format!("{section}.{key}");
        let row = Row {
            line: line_no,
            default: cells[2].clone(),
        };
        if let Some(first) = rows.insert(key.clone(), row) {
            problems.push(format!(
                "{REFERENCE}:{line_no}: {key} is documented twice (first at line {})",
                first.line
            ));
        }
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

/// A default cell as the schema would say it: `required`, — (or `none`) for an unset key, or
/// the value in TOML syntax as one code span.
fn parse_default(cell: &str) -> Option<SchemaDefault> {
    match cell {
        "required" => Some(SchemaDefault::Required),
        "—" | "none" => Some(SchemaDefault::Unset),
        _ => {
            let value = cell.strip_prefix('`')?.strip_suffix('`')?;
            (!value.contains('`')).then(|| SchemaDefault::Value(value.to_string()))
        }
    }
}

fn describe(default: &SchemaDefault) -> String {
    match default {
        SchemaDefault::Required => "required".into(),
        SchemaDefault::Unset => "— (unset)".into(),
        SchemaDefault::Value(value) => format!("`{value}`"),
    }
}

#[test]
fn the_reference_documents_every_key_of_the_schema_and_no_other() {
    let documented = documented(&reference_text()).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let schema: Vec<String> = default_keys().into_iter().map(|(k, _)| k).collect();
    let missing: Vec<&String> = schema
        .iter()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    let extra: Vec<String> = documented
        .iter()
        .filter(|(k, _)| !schema.contains(k))
        .map(|(k, row)| format!("{k} (line {})", row.line))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{REFERENCE} and the schema (proxy/src/config/raw.rs) disagree.\n\
         In the schema but not documented: {missing:?}\n\
         Documented but not in the schema: {extra:?}"
    );
}

#[test]
fn each_documented_default_is_the_schemas() {
    let documented = documented(&reference_text()).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let mut wrong = Vec::new();
    for (key, default) in default_keys() {
        let Some(row) = documented.get(&key) else {
            continue;
        };
        match parse_default(&row.default) {
            Some(written) if written == default => {}
            Some(written) => wrong.push(format!(
                "{REFERENCE}:{}: {key} is documented as {}, the schema's default is {}",
                row.line,
                describe(&written),
                describe(&default)
            )),
            None => wrong.push(format!(
                "{REFERENCE}:{}: {key}'s default {:?} is neither `value`, required, — nor none; \
                 the schema's is {}",
                row.line,
                row.default,
                describe(&default)
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_schema_lists_defaults_in_toml_syntax() {
    let keys: BTreeMap<String, SchemaDefault> = default_keys().into_iter().collect();
    let value = |v: &str| SchemaDefault::Value(v.into());
    for (key, expected) in [
        ("listen.address", value("\"0.0.0.0:8080\"")),
        ("listen.upgrades", value("[\"websocket\"]")),
        ("listen.max_headers", value("100")),
        ("listen.workers", SchemaDefault::Unset),
        ("upstream.url", SchemaDefault::Required),
        ("upstream.rewrite_host", value("false")),
        ("identity.trusted_proxies", value("[]")),
        ("guard.module", SchemaDefault::Required),
        ("guard.mode", value("\"enforce\"")),
        ("guard.config", SchemaDefault::Unset),
        ("log.format", value("\"text\"")),
        ("report.spool_dir", value("\"vigil-spool\"")),
    ] {
        assert_eq!(keys.get(key), Some(&expected), "{key}");
    }
}

/// The schema refuses what it does not know in every section, so a misspelt key in a file is
/// an error rather than a default silently kept.
#[test]
fn every_section_refuses_unknown_keys() {
    let upstream = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";
    let mut sections: Vec<String> = default_keys()
        .into_iter()
        .filter_map(|(key, _)| key.split_once('.').map(|(s, _)| s.to_string()))
        .collect();
    sections.dedup();
    for section in sections {
        let text = match section.as_str() {
            "upstream" => format!("{upstream}no_such_key = 1\n"),
            "guard" => {
                format!("{upstream}[[guard]]\nname = \"g\"\nmodule = \"g.wasm\"\nno_such_key = 1\n")
            }
            _ => format!("{upstream}[{section}]\nno_such_key = 1\n"),
        };
        let error = Config::parse(Path::new("vigil.toml"), &text, &Overrides::default())
            .expect_err(&section)
            .to_string();
        assert!(
            error.contains("unknown field `no_such_key`"),
            "[{section}]: {error}"
        );
    }
    let error = Config::parse(
        Path::new("vigil.toml"),
        &format!("{upstream}[no_such_section]\n"),
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("unknown field `no_such_section`"), "{error}");
}
