//! The rules over a whole cache, without AD, Graph or the state: what a rule edit's `rules`
//! phase spends in the host per group (building the value scripts see, the engines, the
//! verdict and its fingerprint), chunk by chunk as a cycle runs it.
//!
//! `cargo bench -p writeback --bench evaluate` (WB_EVAL_GROUPS, default 100000; WB_EVAL_MEMBERS
//! a group, default 24). Groups as `graph-emulator generate` makes them: half Microsoft 365,
//! half security, the default rules (scripts/) with their settings; WB_EVAL_SCOPE_PREFIX
//! narrows their scope to the group ids starting with it, as `bench/scale.sh` does (its rule
//! edit evaluates 100,000 groups of which a few hundred are in scope). Baseline in the same
//! run: the same chunks with only the value scripts see built (`to_rule_json`), no engine.

// A measuring program, run by hand: a failed set-up stops it there, as in a test.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use writeback::graph::model::{CloudObject, MemberRef};
use writeback::rules::{Limits, Now, RuleSet};
use writeback::sync::evaluate::{evaluate_all, verdict};

const CHUNK: usize = 2_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn group(i: usize, members: usize) -> CloudObject {
    // Spread like random ids: a prefix of two hex digits picks about 1 in 256.
    let id = format!(
        "{:08x}-0000-4000-8000-{i:012x}",
        (i as u32).wrapping_mul(2_654_435_761)
    );
    let unified = i.is_multiple_of(2);
    let props = json!({
        "displayName": format!("Group {i}"),
        "description": format!("Generated group number {i}"),
        "mailNickname": format!("group{i}"),
        "mail": if unified { Value::String(format!("group{i}@contoso.example")) } else { Value::Null },
        "mailEnabled": unified,
        "securityEnabled": !unified,
        "groupTypes": if unified { json!(["Unified"]) } else { json!([]) },
        "visibility": if unified { Value::String("Private".into()) } else { Value::Null },
        "createdDateTime": "2024-01-01T00:00:00Z",
    });
    let Value::Object(props) = props else {
        unreachable!("a JSON object literal")
    };
    let members = (0..members)
        .map(|k| {
            let uid = format!("{:08x}-1111-4000-8000-{:012x}", (i * 31 + k) % 100_000, k);
            (
                uid.clone(),
                MemberRef {
                    odata_type: "#microsoft.graph.user".into(),
                    id: uid,
                },
            )
        })
        .collect();
    CloudObject {
        id,
        props,
        members,
        soft_deleted: false,
    }
}

/// The default rules, their scope narrowed to ids starting with `prefix` when there is one.
fn rules(prefix: Option<&str>, scratch: &std::path::Path) -> RuleSet {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut folder = root.join("scripts");
    if let Some(prefix) = prefix {
        for entry in std::fs::read_dir(&folder).expect("read scripts/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "rhai") {
                let text = std::fs::read_to_string(&path).expect("read rule");
                let narrowed = text.replace(
                    "fn in_scope(group) {\n",
                    &format!("fn in_scope(group) {{\n    group.id.starts_with(\"{prefix}\") &&\n"),
                );
                assert_ne!(
                    text,
                    narrowed,
                    "{} has no in_scope to narrow",
                    path.display()
                );
                std::fs::write(scratch.join(path.file_name().expect("name")), narrowed)
                    .expect("write rule");
            }
        }
        folder = scratch.to_path_buf();
    }
    let settings = BTreeMap::from([
        (
            "m365_container".to_string(),
            json!("OU=Microsoft 365,OU=Cloud Groups,DC=corp,DC=example,DC=test"),
        ),
        (
            "security_container".to_string(),
            json!("OU=Security,OU=Cloud Groups,DC=corp,DC=example,DC=test"),
        ),
    ]);
    match RuleSet::load(&folder, &root.join("stdlib"), settings, Limits::default()) {
        Ok(r) => r,
        Err(e) => panic!("the default rules do not load:\n{e}"),
    }
}

fn main() {
    let n = env_usize("WB_EVAL_GROUPS", 100_000);
    let members = env_usize("WB_EVAL_MEMBERS", 24);
    let prefix = std::env::var("WB_EVAL_SCOPE_PREFIX").ok();
    let scratch = tempfile::tempdir().expect("tempdir");
    let rules = rules(prefix.as_deref(), scratch.path());
    let now = Now::current();
    let chunks: Vec<BTreeMap<String, CloudObject>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(CHUNK)
        .map(|c| {
            c.iter()
                .map(|i| {
                    let g = group(*i, members);
                    (g.id.clone(), g)
                })
                .collect()
        })
        .collect();

    // Baseline: the value scripts see, built for each group, nothing evaluated.
    let started = Instant::now();
    let mut bytes = 0usize;
    for chunk in &chunks {
        for g in chunk.values() {
            bytes += g.to_rule_json().as_object().map_or(0, |m| m.len());
        }
    }
    let baseline = started.elapsed();

    let started = Instant::now();
    let mut evaluate = Duration::ZERO;
    let (mut in_scope, mut other) = (0usize, 0usize);
    for chunk in &chunks {
        let t = Instant::now();
        let results = evaluate_all(&rules, chunk, now);
        evaluate += t.elapsed();
        for e in results {
            match verdict(&e.id, e.decision, chunk, chunk).0 {
                writeback::sync::select::Verdict::InScope { .. } => in_scope += 1,
                _ => other += 1,
            }
        }
    }
    let total = started.elapsed();
    assert_eq!(in_scope + other, n);
    assert!(
        in_scope > 0,
        "no group in scope: the rules or the groups changed"
    );
    println!(
        "groups: {n}, {members} members each, chunks of {CHUNK}; {in_scope} in scope (prefix {prefix:?})"
    );
    println!(
        "baseline (the value scripts see, no engine): {:.3} s ({bytes} keys)",
        baseline.as_secs_f64()
    );
    println!(
        "rules + verdicts: {:.3} s = {:.1}x the baseline; of it evaluate_all {:.3} s; {:.1} µs a group",
        total.as_secs_f64(),
        total.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
        evaluate.as_secs_f64(),
        total.as_secs_f64() * 1e6 / n as f64
    );
}
