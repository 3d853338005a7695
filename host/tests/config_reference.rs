//! The configuration reference in docs/OPERATIONS.md against the parser (`Config`):
//!
//! - every documented key is accepted with the documented type, and a value of another type is
//!   refused (an enumeration's words are exactly the parser's);
//! - every key the parser accepts is documented: the parser refuses unknown keys and names the
//!   ones it expects, so a probe key in each section lists them, from the parser itself;
//! - the keys documented as required are required, the others are not.
//!
//! Every load is offline (`Config::load_offline`): no secret is read.

// A test file: its helpers stop the test where something is not as documented.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use toml::{Table, Value};
use writeback::config::{Config, ConfigError};

const PROBE: &str = "zz_reference_probe";

/// A valid config holding the required keys and one credential of each kind.
const BASE: &str = r#"
[graph]
tenant_id = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_env = "WB_REFERENCE_TEST_SECRET"

[ad]
url = "ldaps://dc1.corp.example.test"
bind_dn = "CN=svc,DC=corp,DC=example,DC=test"
password_env = "WB_REFERENCE_TEST_SECRET"
managed_ous = ["OU=Cloud Groups,DC=corp,DC=example,DC=test"]

[rules]
folder = "rules"

[state]
path = "state.db"
"#;

/// One row of the reference table.
#[derive(Debug)]
struct Row {
    key: String,
    ty: String,
    required: String,
    line: usize,
}

impl Row {
    fn section(&self) -> &str {
        self.key.split('.').next().unwrap_or_default()
    }
    fn field(&self) -> &str {
        self.key.split('.').nth(1).unwrap_or_default()
    }
}

fn reference_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md")
}

/// The cells of a Markdown table row (`\|` is a pipe inside a cell).
fn cells(line: &str) -> Vec<String> {
    let escaped = line.replace("\\|", "\u{1}");
    let inner = escaped.trim().trim_start_matches('|').trim_end_matches('|');
    inner
        .split('|')
        .map(|c| c.replace('\u{1}', "|").trim().to_string())
        .collect()
}

fn is_key(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The rows of the "Configuration reference" section whose first cell is `section.key`.
fn reference() -> Vec<Row> {
    let path = reference_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut rows = Vec::new();
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(title) = line.strip_prefix("## ") {
            inside = title.trim() == "Configuration reference";
            continue;
        }
        if !inside || !line.trim_start().starts_with('|') {
            continue;
        }
        let c = cells(line);
        let Some(key) = c
            .first()
            .and_then(|k| k.strip_prefix('`'))
            .and_then(|k| k.strip_suffix('`'))
        else {
            continue;
        };
        if !is_key(key) {
            continue;
        }
        assert!(
            c.len() >= 5,
            "OPERATIONS.md:{}: a key row needs key | type | default | required | what it does",
            i + 1
        );
        rows.push(Row {
            key: key.to_string(),
            ty: c[1].clone(),
            required: c[3].clone(),
            line: i + 1,
        });
    }
    assert!(
        !rows.is_empty(),
        "no `section.key` rows under \"## Configuration reference\" in {}",
        path.display()
    );
    rows
}

fn base() -> Table {
    BASE.parse::<Table>()
        .unwrap_or_else(|e| panic!("the test's base config is not TOML: {e}"))
}

/// Loads `config` offline from a file in `dir`.
fn load(dir: &Path, config: &Table) -> Result<Config, ConfigError> {
    let text = toml::to_string(config).unwrap_or_else(|e| panic!("serialise the config: {e}"));
    let path = dir.join("writeback.toml");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    Config::load_offline(&path)
}

/// `config` with `section.field` set to `value` (the section created when missing).
fn with(config: &Table, section: &str, field: &str, value: Value) -> Table {
    let mut c = config.clone();
    let t = c
        .entry(section.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    match t {
        Value::Table(t) => {
            t.insert(field.to_string(), value);
        }
        other => panic!("[{section}] is not a table in the base config: {other}"),
    }
    c
}

fn without(config: &Table, section: &str, field: &str) -> Table {
    let mut c = config.clone();
    if let Some(Value::Table(t)) = c.get_mut(section) {
        t.remove(field);
    }
    c
}

fn has(config: &Table, section: &str, field: &str) -> bool {
    config
        .get(section)
        .and_then(Value::as_table)
        .is_some_and(|t| t.contains_key(field))
}

/// The names serde lists after "unknown field/variant `x`, expected ...".
fn expected_names(message: &str, what: &str) -> Option<BTreeSet<String>> {
    let at = message.find(what)?;
    let rest = &message[at + what.len()..];
    let rest = rest.lines().next().unwrap_or_default();
    if rest.contains("there are no fields") || rest.contains("there are no variants") {
        return Some(BTreeSet::new());
    }
    let list = &rest[rest.find("expected")?..];
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

fn parse_message(r: Result<Config, ConfigError>) -> Option<String> {
    match r {
        Err(ConfigError::Parse { message, .. }) => Some(message),
        _ => None,
    }
}

/// Every key the parser accepts, as `section.key`, from what it says about a probe key.
fn accepted_keys(dir: &Path) -> BTreeSet<String> {
    let unknown = format!("unknown field `{PROBE}`, ");
    let mut top = base();
    top.insert(PROBE.to_string(), Value::Integer(1));
    let message = parse_message(load(dir, &top)).unwrap_or_else(|| {
        panic!("a top-level `{PROBE}` was accepted: unknown keys must be errors")
    });
    let sections = expected_names(&message, &unknown)
        .unwrap_or_else(|| panic!("the parser did not list the sections: {message}"));
    assert!(!sections.is_empty(), "no sections listed: {message}");
    let mut keys = BTreeSet::new();
    for section in sections {
        if section == "targets" {
            // Its keys are names; what a target holds is checked by `target_keys`.
            continue;
        }
        let probed = with(&base(), &section, PROBE, Value::Integer(1));
        let message = parse_message(load(dir, &probed)).unwrap_or_else(|| {
            panic!("`{section}.{PROBE}` was accepted: [{section}] must refuse unknown keys")
        });
        let fields = expected_names(&message, &unknown).unwrap_or_else(|| {
            panic!("the parser did not list the keys of [{section}]: {message}")
        });
        keys.extend(fields.into_iter().map(|f| format!("{section}.{f}")));
    }
    keys
}

/// The words of an enumeration type (`` `"a" | "b"` ``), or `None` for another type.
fn variants(ty: &str) -> Option<Vec<String>> {
    let inner = ty.strip_prefix('`')?.strip_suffix('`')?;
    inner
        .split('|')
        .map(|w| {
            w.trim()
                .strip_prefix('"')
                .and_then(|w| w.strip_suffix('"'))
                .filter(|w| !w.is_empty())
                .map(str::to_string)
        })
        .collect()
}

/// Values of the documented type (each must be accepted) and of other types (each refused).
fn samples(row: &Row) -> (Vec<Value>, Vec<Value>) {
    let s = |v: &str| Value::String(v.to_string());
    match row.ty.as_str() {
        "string" | "path" => (vec![s("x")], vec![Value::Integer(1), Value::Boolean(true)]),
        "integer" => (vec![Value::Integer(7)], vec![Value::Float(1.5), s("7")]),
        "float" => (
            vec![Value::Float(2.5), Value::Integer(2)],
            vec![s("2.5"), Value::Boolean(true)],
        ),
        "boolean" => (
            vec![Value::Boolean(true)],
            vec![s("true"), Value::Integer(1)],
        ),
        "array of strings" => (
            vec![Value::Array(vec![s("OU=X,DC=example,DC=test")])],
            vec![
                s("OU=X,DC=example,DC=test"),
                Value::Array(vec![Value::Integer(1)]),
            ],
        ),
        "table" => (
            vec![Value::Table(Table::new())],
            vec![Value::Integer(1), s("x")],
        ),
        ty => match variants(ty) {
            Some(words) => (
                words.iter().map(|w| s(w)).collect(),
                vec![s("zz-not-a-variant"), Value::Integer(1)],
            ),
            None => panic!(
                "OPERATIONS.md:{}: `{}` has a type this test does not know: {ty:?}",
                row.line, row.key
            ),
        },
    }
}

#[test]
fn the_reference_documents_exactly_the_keys_the_parser_accepts() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let rows = reference();
    let mut documented = BTreeSet::new();
    for r in &rows {
        assert!(
            documented.insert(r.key.clone()),
            "OPERATIONS.md:{}: `{}` is documented twice",
            r.line,
            r.key
        );
    }
    let accepted = accepted_keys(dir.path());
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/OPERATIONS.md and the parser disagree.\n  accepted but not documented: {undocumented:?}\n  documented but not accepted: {unknown:?}"
    );
}

#[test]
fn documented_types_are_the_parsers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let base = base();
    for row in reference() {
        let (section, field) = (row.section(), row.field());
        let at = format!("OPERATIONS.md:{} `{}` ({})", row.line, row.key, row.ty);
        if row.ty == "refused" {
            // Known to the parser only to be refused with a hint.
            match load(dir.path(), &with(&base, section, field, "x".into())) {
                Err(ConfigError::Invalid { key, message, .. }) => assert!(
                    key == row.key && message.contains("inline"),
                    "{at}: refused as `{key}`: {message}"
                ),
                other => panic!("{at}: expected a refusal, got {other:?}"),
            }
            continue;
        }
        let (good, bad) = samples(&row);
        for v in good {
            // Accepted as a value of its type: it may still fail validation (a range, a
            // combination), but never as a parse error.
            if let Some(m) =
                parse_message(load(dir.path(), &with(&base, section, field, v.clone())))
            {
                panic!("{at}: {v} does not parse: {m}");
            }
        }
        for v in bad {
            if parse_message(load(dir.path(), &with(&base, section, field, v.clone()))).is_none() {
                panic!("{at}: {v} was accepted, so the type is not the documented one");
            }
        }
        if let Some(words) = variants(&row.ty) {
            let m = parse_message(load(
                dir.path(),
                &with(&base, section, field, "zz-not-a-variant".into()),
            ))
            .unwrap_or_default();
            let listed = expected_names(&m, "unknown variant `zz-not-a-variant`, ")
                .unwrap_or_else(|| panic!("{at}: the parser did not list the words: {m}"));
            let documented: BTreeSet<String> = words.into_iter().collect();
            assert_eq!(documented, listed, "{at}: documented words vs the parser's");
        }
    }
}

#[test]
fn required_keys_are_the_documented_ones() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let base = base();
    if let Err(e) = load(dir.path(), &base) {
        panic!("the base config (required keys and one credential) does not load: {e}");
    }
    let rows = reference();
    for row in &rows {
        let (section, field) = (row.section(), row.field());
        let at = format!("OPERATIONS.md:{} `{}`", row.line, row.key);
        match row.required.as_str() {
            "yes" => {
                assert!(
                    has(&base, section, field),
                    "{at}: documented as required, but the base config loads without it"
                );
                match load(dir.path(), &without(&base, section, field)) {
                    Ok(_) => panic!("{at}: documented as required, but a config without it loads"),
                    Err(e) => assert!(
                        e.to_string().contains(field),
                        "{at}: the error for a missing key does not name it: {e}"
                    ),
                }
            }
            "no" => {
                if has(&base, section, field) {
                    if let Err(e) = load(dir.path(), &without(&base, section, field)) {
                        panic!("{at}: documented as optional, but a config without it fails: {e}");
                    }
                }
            }
            condition => {
                assert!(!condition.is_empty(), "{at}: the required column is empty");
                // A conditional key the base holds is the one that meets its condition.
                if has(&base, section, field) {
                    assert!(
                        load(dir.path(), &without(&base, section, field)).is_err(),
                        "{at}: required when {condition:?}, but the base config loads without it"
                    );
                }
            }
        }
    }
    // Every key of the base config is documented as required or conditional.
    for (section, t) in &base {
        for field in t
            .as_table()
            .map(|t| t.keys().collect())
            .unwrap_or_else(Vec::new)
        {
            let key = format!("{section}.{field}");
            let row = rows
                .iter()
                .find(|r| r.key == key)
                .unwrap_or_else(|| panic!("`{key}` of the base config is not documented"));
            assert_ne!(
                row.required, "no",
                "OPERATIONS.md:{} `{key}`: documented as optional, but it is needed",
                row.line
            );
        }
    }
}

/// `[targets.<name>]`: the keys a target holds, as the parser names them, are each documented
/// (as `targets.<name>.<key>`), and a documented one is accepted.
#[test]
fn the_reference_documents_what_a_target_holds() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut probe = Table::new();
    probe.insert(PROBE.to_string(), Value::Integer(1));
    let mut targets = Table::new();
    targets.insert("b".to_string(), Value::Table(probe));
    let mut config = base();
    config.insert("targets".to_string(), Value::Table(targets));
    let message = match load(dir.path(), &config) {
        Err(ConfigError::Invalid { key, message, .. }) => {
            assert_eq!(key, format!("targets.b.{PROBE}"), "{message}");
            message
        }
        other => panic!("an unknown key in a target was not refused: {other:?}"),
    };
    let held: Vec<&str> = message
        .split("a target holds ")
        .nth(1)
        .unwrap_or_else(|| panic!("the parser did not list a target's keys: {message}"))
        .split(", ")
        .map(str::trim)
        .collect();
    assert!(held.contains(&"ad") && held.contains(&"state"), "{held:?}");
    let path = reference_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for k in held {
        assert!(
            text.contains(&format!("| `targets.<name>.{k}` |")),
            "docs/OPERATIONS.md does not document `targets.<name>.{k}` in a table row"
        );
    }
}
