//! docs/SCRIPTING.md's examples are real: every ```rhai block starting with `// file: NAME`
//! is loaded (rule files one at a time, modules under a subfolder shared by all) with the
//! shipped stdlib and the ```toml settings block, run on the ```json sample-group block, and
//! compared with the ```json expect block that follows it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::support::{rules_dir, stdlib};
use crate::rules::{Limits, RuleSet};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SCRIPTING.md"));

/// Fenced blocks as (info string, content).
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                if let Some(done) = current.take() {
                    out.push(done);
                }
            }
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "unterminated code block in SCRIPTING.md");
    out
}

fn settings(blocks: &[(String, String)]) -> BTreeMap<String, Value> {
    let (_, text) = blocks
        .iter()
        .find(|(info, _)| info == "toml settings")
        .expect("a ```toml settings block");
    let parsed: toml::Table = toml::from_str(text).expect("settings block is TOML");
    let table = parsed
        .get("rules")
        .and_then(|r| r.get("settings"))
        .and_then(toml::Value::as_table)
        .expect("[rules.settings]");
    table
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).expect("JSON value")))
        .collect()
}

#[test]
fn scripting_guide_examples_run_as_documented() {
    let blocks = blocks(DOC);
    let settings = settings(&blocks);
    let group: Value = blocks
        .iter()
        .find(|(info, _)| info == "json sample-group")
        .map(|(_, t)| serde_json::from_str(t).expect("sample group is JSON"))
        .expect("a ```json sample-group block");

    let files: Vec<(String, String, Option<Value>)> = blocks
        .iter()
        .enumerate()
        .filter(|(_, (info, _))| info == "rhai")
        .filter_map(|(i, (_, text))| {
            let name = text
                .lines()
                .next()?
                .strip_prefix("// file: ")?
                .trim()
                .to_string();
            let expect = blocks.get(i + 1).and_then(|(info, t)| {
                (info == "json expect")
                    .then(|| serde_json::from_str(t).expect("expect block is JSON"))
            });
            Some((name, text.clone(), expect))
        })
        .collect();
    let modules: Vec<(&str, &str)> = files
        .iter()
        .filter(|(name, _, _)| name.contains('/'))
        .map(|(n, t, _)| (n.as_str(), t.as_str()))
        .collect();
    let rules: Vec<_> = files
        .iter()
        .filter(|(name, _, _)| !name.contains('/'))
        .collect();
    assert!(rules.len() >= 4, "the guide's rule examples were not found");

    for (name, text, expect) in rules {
        let expect = expect
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no ```json expect block after the example"));
        let mut set_files = modules.clone();
        set_files.push((name.as_str(), text.as_str()));
        let dir = rules_dir(&set_files);
        let set = RuleSet::load(dir.path(), &stdlib(), settings.clone(), Limits::default())
            .unwrap_or_else(|e| panic!("{name} does not load:\n{e}"));
        let decision = set
            .evaluate(&group)
            .unwrap_or_else(|e| panic!("{name} fails on the sample group: {e}"));
        let got = serde_json::to_value(&decision).expect("serialises");
        assert_eq!(
            &got,
            expect,
            "{name}: SCRIPTING.md shows another result; actual:\n{}",
            serde_json::to_string_pretty(&got).unwrap_or_default()
        );
    }
}
