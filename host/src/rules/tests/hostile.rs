//! Hostile values: a rule that returns (or builds) a huge string, a huge array, deep nesting or
//! too many values, and cloud groups Graph would never send. Each is refused for its group
//! alone, with a short message that names the rule or the group and the limit and never holds
//! the value; the next group of the same rule set is evaluated as ever.

use std::time::Duration;

use serde_json::{json, Value};

use super::support::*;
use crate::graph::model::INVALID_MARKER;
use crate::rules::{Decision, EvalError, EvalErrorKind, Limits, RuleSet};

/// No message may be longer than this (a line in a report).
const SHORT: usize = 600;

const PARENT: &str = "OU=Groups,DC=corp,DC=example,DC=test";

/// A rule set where `10-hostile.rhai` handles the group named "hostile" with `body` (the map's
/// statements, ending in the value of `info`), and `20-normal.rhai` every other group.
fn set_with(body: &str) -> (tempfile::TempDir, RuleSet) {
    let hostile = format!(
        "fn scope(group) {{ group.displayName == \"hostile\" }}\nfn map(group) {{\n{body}\n}}\n"
    );
    let normal = format!(
        "fn scope(group) {{ true }}\nfn map(group) {{ #{{ parent: \"{PARENT}\", cn: group.displayName, attributes: #{{ info: \"fine\" }} }} }}\n"
    );
    let dir = rules_dir(&[("10-hostile.rhai", &hostile), ("20-normal.rhai", &normal)]);
    // A generous clock: debug builds are slow, and the limits, not the clock, must refuse.
    let limits = Limits {
        call_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let set = match RuleSet::load(dir.path(), &stdlib(), settings(), limits) {
        Ok(s) => s,
        Err(e) => panic!("rules load:\n{e}"),
    };
    (dir, set)
}

fn group(id: &str, name: &str) -> Value {
    json!({"id": id, "displayName": name, "members": []})
}

fn refused(set: &RuleSet, g: &Value) -> EvalError {
    match set.evaluate(g) {
        Ok(d) => panic!("expected a refusal, got {d:?}"),
        Err(e) => e,
    }
}

/// The refusal is short, names what it must and does not hold `needle` (a piece of the value).
fn assert_short(e: &EvalError, must: &[&str], needle: &str) -> String {
    let shown = e.to_string();
    assert!(
        shown.len() < SHORT,
        "{} bytes: {}",
        shown.len(),
        cut(&shown)
    );
    assert!(
        !shown.contains(needle),
        "the value is echoed: {}",
        cut(&shown)
    );
    for m in must {
        assert!(shown.contains(m), "{m:?} missing in: {shown}");
    }
    shown
}

fn cut(s: &str) -> String {
    s.chars().take(300).collect()
}

/// The normal group beside the hostile one is evaluated as ever.
fn assert_normal_still_fine(set: &RuleSet) {
    match set.evaluate(&group("g-normal", "Normal")) {
        Ok(Decision::Desired(d)) => {
            assert_eq!(d.rule, "20-normal.rhai");
            assert_eq!(d.attributes["info"], Some(vec!["fine".to_string()]));
        }
        other => panic!("the normal group: {other:?}"),
    }
}

#[test]
fn a_10_mb_string_is_refused_without_the_value() {
    let (_dir, set) = set_with(&format!(
        "let s = \"xxxxxxxxxx\"; while s.len() < 10_000_000 {{ s += s; }}\n#{{ parent: \"{PARENT}\", cn: \"c\", attributes: #{{ info: s }} }}"
    ));
    let e = refused(&set, &group("g-hostile", "hostile"));
    assert_eq!(e.kind, EvalErrorKind::Output, "{}", cut(&e.to_string()));
    let shown = assert_short(
        &e,
        &[
            "10-hostile.rhai",
            "g-hostile",
            "`info`",
            "10485760 bytes",
            "at most 1048576 bytes",
        ],
        &"x".repeat(40),
    );
    assert!(shown.contains("map()"), "{shown}");
    assert_normal_still_fine(&set);
}

#[test]
fn a_10_mb_cn_parent_or_attribute_name_is_refused_without_the_value() {
    for (what, map, needle, must) in [
        (
            "cn",
            format!("let s = \"cccccccccc\"; while s.len() < 10_000_000 {{ s += s; }}\n#{{ parent: \"{PARENT}\", cn: s }}"),
            "c".repeat(100),
            "cn of 10485760 UTF-16 code units",
        ),
        (
            "parent",
            "let s = \"pppppppppp\"; while s.len() < 10_000_000 { s += s; }\n#{ parent: s, cn: \"c\" }".to_string(),
            "p".repeat(100),
            "(10485760 characters)",
        ),
        (
            "attribute name",
            format!("let s = \"aaaaaaaaaa\"; while s.len() < 100_000 {{ s += s; }}\nlet a = #{{}}; a[s] = 1;\n#{{ parent: \"{PARENT}\", cn: \"c\", attributes: a }}"),
            "a".repeat(100),
            "not an LDAP attribute name",
        ),
        (
            "unknown key",
            "let s = \"kkkkkkkkkk\"; while s.len() < 100_000 { s += s; }\nlet m = #{ parent: \"OU=A,DC=x\", cn: \"c\" }; m[s] = 1; m".to_string(),
            "k".repeat(100),
            "unknown key",
        ),
    ] {
        let (_dir, set) = set_with(&map);
        let e = refused(&set, &group("g-hostile", "hostile"));
        assert_eq!(e.kind, EvalErrorKind::Output, "{what}");
        assert_short(&e, &["10-hostile.rhai", "g-hostile", must], &needle);
        assert_normal_still_fine(&set);
    }
}

#[test]
fn a_million_element_array_is_refused_by_its_length() {
    let (_dir, set) = set_with(&format!(
        "let a = []; a.pad(1_000_000, \"smtp:a@x.test\");\n#{{ parent: \"{PARENT}\", cn: \"c\", attributes: #{{ proxyAddresses: a }} }}"
    ));
    let e = refused(&set, &group("g-hostile", "hostile"));
    assert_eq!(e.kind, EvalErrorKind::Output);
    assert_short(
        &e,
        &[
            "10-hostile.rhai",
            "g-hostile",
            "1000000 values",
            "`proxyAddresses`",
            "at most 4000",
        ],
        "smtp:a@x.test",
    );
    assert_normal_still_fine(&set);
}

#[test]
fn an_attribute_with_100000_values_is_refused_before_repeats_are_dropped() {
    let (_dir, set) = set_with(&format!(
        "let a = []; a.pad(100_000, \"smtp:u1@x.test\");\n#{{ parent: \"{PARENT}\", cn: \"c\", attributes: #{{ proxyAddresses: a }} }}"
    ));
    let e = refused(&set, &group("g-hostile", "hostile"));
    assert_short(
        &e,
        &["100000 values", "`proxyAddresses`", "at most 4000"],
        "smtp:u1@x.test",
    );
    assert_normal_still_fine(&set);
    // At the limit the values are written, repeats dropped in the rule's order.
    let (_dir, set) = set_with(&format!(
        "let a = []; a.pad(4_000, 0); a = map(a, |v, i| `smtp:u${{i % 3999}}@x.test`);\n#{{ parent: \"{PARENT}\", cn: \"c\", attributes: #{{ proxyAddresses: a }} }}"
    ));
    let g = desired(set.evaluate(&group("g-hostile", "hostile")).expect("fits"));
    let v = values(&g, "proxyAddresses").expect("values");
    assert_eq!(v.len(), 3999);
    assert_eq!(v[0], "smtp:u0@x.test");
    assert_eq!(v[3998], "smtp:u3998@x.test");
}

#[test]
fn too_many_bytes_or_attributes_in_one_group_are_refused() {
    // 20 values of 600 KB each: each fits, together they do not fit one LDAP request.
    let (_dir, set) = set_with(&format!(
        "let s = \"vvvvvvvvvv\"; while s.len() < 600_000 {{ s += s; }}\nlet a = #{{}}; for i in 0..20 {{ a[`extensionAttribute${{i}}`] = s; }}\n#{{ parent: \"{PARENT}\", cn: \"c\", attributes: a }}"
    ));
    let e = refused(&set, &group("g-hostile", "hostile"));
    assert_short(&e, &["more than 8388608 bytes"], &"v".repeat(40));
    let (_dir, set) = set_with(&format!(
        "let a = #{{}}; for i in 0..5000 {{ a[`a${{i}}`] = 1; }}\n#{{ parent: \"{PARENT}\", cn: \"c\", attributes: a }}"
    ));
    let e = refused(&set, &group("g-hostile", "hostile"));
    assert_short(&e, &["5000 attributes", "at most 1000"], "a4999");
    assert_normal_still_fine(&set);
}

#[test]
fn a_1000_deep_nested_map_is_refused_by_its_shape() {
    let build = "let m = #{ leaf: \"deep-leaf-value\" }; for i in 0..1000 { m = #{ a: m }; }";
    for (returned, must) in [
        (
            format!("#{{ parent: \"{PARENT}\", cn: \"c\", attributes: #{{ info: m }} }}"),
            "map in attribute `info`",
        ),
        (
            format!("#{{ parent: \"{PARENT}\", cn: \"c\", attributes: m }}"),
            "map in attribute `a`",
        ),
        (
            format!("#{{ parent: \"{PARENT}\", cn: \"c\", attributes: #{{ info: [m] }} }}"),
            "nested map in attribute `info`",
        ),
        ("m".to_string(), "unknown key `a`"),
    ] {
        let (_dir, set) = set_with(&format!("{build}\n{returned}"));
        let e = refused(&set, &group("g-hostile", "hostile"));
        assert_eq!(e.kind, EvalErrorKind::Output, "{returned}");
        assert_short(&e, &["10-hostile.rhai", must], "deep-leaf-value");
        assert_normal_still_fine(&set);
    }
}

#[test]
fn nesting_built_until_a_limit_stops_it_does_not_crash_a_worker() {
    // The caller is a thread with the default 2 MiB stack, as the sync's evaluation threads
    // are; nesting grows until a limit stops the script, and the value is dropped there.
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let limits = Limits {
                call_timeout: Duration::from_secs(3),
                max_operations: 200_000,
                ..Limits::default()
            };
            let text =
                "fn scope(group) { true }\nfn map(group) { let m = []; loop { m = [m]; } }\n";
            let dir = rules_dir(&[("10-deep.rhai", text)]);
            let set = RuleSet::load(dir.path(), &stdlib(), settings(), limits).expect("loads");
            let e = refused(&set, &group("g-deep", "deep"));
            (e.kind, e.to_string())
        })
        .expect("spawn");
    let (kind, shown) = handle.join().expect("the worker survives");
    assert_eq!(kind, EvalErrorKind::Limit, "{shown}");
    assert!(shown.len() < SHORT, "{shown}");
}

#[test]
fn a_string_over_the_sandbox_limit_stops_the_script_with_a_short_message() {
    let (_dir, set) = set_with(&format!(
        "let s = \"zzzzzzzzzz\"; while true {{ s += s; }}\n#{{ parent: \"{PARENT}\", cn: s }}"
    ));
    let e = refused(&set, &group("g-hostile", "hostile"));
    assert_eq!(e.kind, EvalErrorKind::Limit);
    assert_short(
        &e,
        &["10-hostile.rhai", "g-hostile", "over the sandbox limit"],
        &"z".repeat(40),
    );
    assert_normal_still_fine(&set);
}

// Cloud data Graph would never send: refused before any rule runs.

#[test]
fn a_display_name_over_graphs_limit_is_refused_for_that_group() {
    let (_dir, set) = set_with("()");
    let at_limit = "é".repeat(256);
    // Graph's own limit passes to the rules (whose cn of 256 AD then refuses).
    match set.evaluate(&group("g-256", &at_limit)) {
        Err(e) => assert_eq!(e.kind, EvalErrorKind::Output, "{e}"),
        other => panic!("the rule runs on a 256-character name: {other:?}"),
    }
    for (len, unit) in [(257, "a"), (10 * 1024 * 1024, "b")] {
        let name = unit.repeat(len);
        let e = refused(&set, &group("g-long", &name));
        assert_eq!(e.kind, EvalErrorKind::Input);
        let shown = assert_short(
            &e,
            &[
                "cloud group g-long",
                &format!("displayName is {len} characters long"),
                "Graph allows at most 256",
            ],
            &unit.repeat(60),
        );
        assert!(shown.starts_with("cloud group g-long: "), "{shown}");
        assert_normal_still_fine(&set);
    }
    // Two emoji are four UTF-16 units, as Graph counts.
    let e = refused(&set, &group("g-emoji", &"😀".repeat(129)));
    assert!(e.message.contains("258 characters"), "{e}");
    let e = refused(
        &set,
        &json!({"id": "g-num", "displayName": 5, "members": []}),
    );
    assert!(e.message.contains("displayName is a number"), "{e}");
}

#[test]
fn huge_cloud_values_are_refused_for_that_group() {
    let (_dir, set) = set_with("()");
    let long = "d".repeat(100_000);
    let many: Vec<String> = (0..20_000).map(|i| format!("smtp:a{i}@x.test")).collect();
    let mut wide = serde_json::Map::new();
    for i in 0..2_000 {
        wide.insert(format!("extension_{i}"), json!(1));
    }
    wide.insert("id".into(), json!("g-wide"));
    for (g, must, needle) in [
        (
            json!({"id": "g-desc", "displayName": "D", "description": long, "members": []}),
            "property \"description\" holds a string of 100000 bytes",
            "d".repeat(60),
        ),
        (
            json!({"id": "g-many", "displayName": "M", "proxyAddresses": many, "members": []}),
            "property \"proxyAddresses\" holds 20000 values",
            "smtp:a1@x.test".to_string(),
        ),
        (
            json!({"id": "g-nested", "displayName": "N",
                   "onPremisesExtensionAttributes": {"extensionAttribute1": long}, "members": []}),
            "property \"onPremisesExtensionAttributes\" holds a string",
            "d".repeat(60),
        ),
        (
            Value::Object(wide),
            "2001 properties",
            "extension_1".to_string(),
        ),
        (
            json!({"id": "g-key", "displayName": "K", "members": [], long.clone(): 1}),
            "(100000 characters); names are at most 256",
            "d".repeat(100),
        ),
    ] {
        let e = refused(&set, &g);
        assert_eq!(e.kind, EvalErrorKind::Input, "{e}");
        assert_short(&e, &[must], &needle);
    }
    assert_normal_still_fine(&set);
}

#[test]
fn a_group_the_delta_parser_marked_is_refused_with_its_reason() {
    let (_dir, set) = set_with("()");
    let marked = json!({"id": "g-marked", "displayName": "Marked", "members": [],
                        INVALID_MARKER: "Graph sent a malformed entry: members@delta entry 1 of 2 has no id"});
    let e = refused(&set, &marked);
    assert_eq!(e.kind, EvalErrorKind::Input);
    assert_eq!(
        e.to_string(),
        "cloud group g-marked: Graph sent a malformed entry: members@delta entry 1 of 2 has no id"
    );
    // A cleared marker (null) is no reason, and rules never see the annotation.
    let text = format!(
        "fn scope(group) {{ true }}\nfn map(group) {{ #{{ parent: \"{PARENT}\", cn: group.keys().len().to_string(), attributes: #{{ info: group.get(\"{INVALID_MARKER}\") }} }} }}\n"
    );
    let dir = rules_dir(&[("10-keys.rhai", &text)]);
    let set = load(dir.path()).expect("loads");
    let clean = json!({"id": "g", "displayName": "G", "members": [], INVALID_MARKER: null});
    let g = desired(set.evaluate(&clean).expect("a null marker is no reason"));
    // id, displayName, members: the marker is not a property.
    assert_eq!(g.cn, "3");
    assert_eq!(g.attributes["info"], None);
}
