//! Loading, diagnostics, evaluation errors, the sandbox and concurrency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::*;
use crate::rules::{
    Decision, Diagnostic, EvalError, EvalErrorKind, FileKind, Limits, LoadError, MemberPolicy,
    RuleSet,
};

const MINIMAL_MAP: &str =
    r#"#{ parent: "OU=Groups,DC=corp,DC=example,DC=test", cn: group.displayName }"#;

fn rule(scope: &str, map: &str) -> String {
    format!("fn scope(group) {{ {scope} }}\nfn map(group) {{ {map} }}\n")
}

fn load_err(dir: &std::path::Path) -> LoadError {
    match load(dir) {
        Ok(set) => panic!("expected a load error, loaded {:?}", set.files()),
        Err(e) => e,
    }
}

fn eval_err(set: &RuleSet, group: &serde_json::Value) -> EvalError {
    match set.evaluate(group) {
        Ok(d) => panic!("expected an evaluation error, got {d:?}"),
        Err(e) => e,
    }
}

fn only(e: &LoadError) -> &Diagnostic {
    assert_eq!(e.diagnostics.len(), 1, "one diagnostic expected:\n{e}");
    &e.diagnostics[0]
}

#[test]
fn syntax_error_points_at_file_line_and_column() {
    let text = "fn scope(group) { true }\nfn map(group) {\n    let x = ;\n}\n";
    let dir = rules_dir(&[("10-broken.rhai", text)]);
    let e = load_err(dir.path());
    let d = only(&e);
    assert_eq!(d.file, dir.path().join("10-broken.rhai"));
    assert_eq!((d.line, d.column), (Some(3), Some(13)), "{d}");
    assert!(d.message.starts_with("syntax error"), "{d}");
    // Display: `path:line:col: message`.
    let shown = e.to_string();
    let expected_prefix = format!(
        "{}:3:13: syntax error",
        dir.path().join("10-broken.rhai").display()
    );
    assert!(shown.starts_with(&expected_prefix), "{shown}");
}

#[test]
fn every_broken_file_is_reported_one_per_line() {
    let dir = rules_dir(&[
        (
            "10-a.rhai",
            "fn scope(group) { true }\nfn map(group) { ( }\n",
        ),
        ("20-b.rhai", "fn scope(group) { true }\n"),
        ("30-ok.rhai", &rule("true", MINIMAL_MAP)),
    ]);
    let e = load_err(dir.path());
    assert_eq!(e.diagnostics.len(), 2, "{e}");
    let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(
        lines[0].starts_with(&format!("{}:2:", dir.path().join("10-a.rhai").display())),
        "{e}"
    );
    assert!(
        lines[1].starts_with(&format!("{}: ", dir.path().join("20-b.rhai").display())),
        "{e}"
    );
    assert!(lines[1].contains("fn map(group)"), "{e}");
}

#[test]
fn missing_entry_points_and_wrong_arity_are_diagnostics() {
    let dir = rules_dir(&[
        ("10-none.rhai", "let x = 1;\n"),
        (
            "20-arity.rhai",
            "fn in_scope() { true }\nfn to_ad(group) { () }\n",
        ),
        ("30-half.rhai", "fn to_ad(group) { () }\n"),
        (
            "40-both.rhai",
            "fn in_scope(group) { true }\nfn to_ad(group) { () }\nfn map(group) { () }\n",
        ),
    ]);
    let e = load_err(dir.path());
    let text = e.to_string();
    assert_eq!(e.diagnostics.len(), 4, "{text}");
    assert!(
        text.contains("10-none.rhai: the file defines no `fn in_scope(group)` and `fn to_ad(group)`, and no trigger or schedule"),
        "{text}"
    );
    assert!(
        text.contains("20-arity.rhai: `fn in_scope` must take exactly one parameter"),
        "{text}"
    );
    assert!(
        text.contains("30-half.rhai: the rule defines no `fn in_scope(group)`"),
        "{text}"
    );
    assert!(
        text.contains(
            "40-both.rhai: the rule defines both `in_scope`/`to_ad` and the old `scope`/`map`"
        ),
        "{text}"
    );
}

#[test]
fn the_old_entry_point_names_still_work_and_the_new_ones_free_map_calls() {
    // Old names: evaluated as before (a warning is logged at load).
    let old = rules_dir(&[(
        "10-old.rhai",
        "fn scope(group) { true }\nfn map(group) { #{ parent: \"OU=A,DC=x\", cn: \"old\" } }\n",
    )]);
    let set = load(old.path()).expect("old names load");
    assert_eq!(
        desired(set.evaluate(&json!({"id": "1"})).expect("ok")).cn,
        "old"
    );
    // New names: `.map(...)` is Rhai's array method again, not the rule.
    let new = rules_dir(&[(
        "10-new.rhai",
        "fn in_scope(group) { true }\nfn to_ad(group) {\n    let tags = [\"a\", \"b\"].map(|t| t.to_upper());\n    #{ parent: \"OU=A,DC=x\", cn: \"new\", attributes: #{ info: tags } }\n}\n",
    )]);
    let set = load(new.path()).expect("new names load, .map( allowed");
    let g = desired(set.evaluate(&json!({"id": "1"})).expect("ok"));
    assert_eq!(
        values(&g, "info"),
        Some(vec!["A".to_string(), "B".to_string()])
    );
    // The old names keep the `.map(` check: it would call the rule.
    let shadow = rules_dir(&[(
        "10-old.rhai",
        "fn scope(group) { true }\nfn map(group) { [1].map(|x| x); () }\n",
    )]);
    assert!(load_err(shadow.path()).to_string().contains("`.map(...)`"));
}

#[test]
fn a_file_with_only_a_trigger_or_a_schedule_needs_no_entry_points() {
    let dir = rules_dir(&[
        ("10-rule.rhai", &rule("true", MINIMAL_MAP)),
        (
            "50-notify.rhai",
            "const SCHEDULE = \"5m\";\nfn on_schedule(info) { () }\n",
        ),
    ]);
    let set = load(dir.path()).expect("a schedule-only file loads");
    // It takes no part in deciding groups: the rule file still maps every group.
    let g = desired(
        set.evaluate(&json!({"id": "1", "displayName": "G"}))
            .expect("ok"),
    );
    assert_eq!(g.rule, "10-rule.rhai");
    assert_eq!(set.hooks().schedules().len(), 1, "the schedule is kept");
}

#[test]
fn empty_rules_folder_is_refused() {
    let dir = rules_dir(&[("lib/helper.rhai", "fn f() { 1 }"), ("README.md", "x")]);
    let e = load_err(dir.path());
    assert!(only(&e).message.contains("no rule files"), "{e}");
}

#[test]
fn missing_stdlib_module_names_the_module_at_the_import() {
    let text = format!(
        "// header\nimport \"std/nope\" as nope;\n{}",
        rule("true", MINIMAL_MAP)
    );
    let dir = rules_dir(&[("10-x.rhai", &text)]);
    let e = load_err(dir.path());
    let d = only(&e);
    assert_eq!(d.file, dir.path().join("10-x.rhai"));
    assert_eq!((d.line, d.column), (Some(2), Some(8)), "{d}");
    assert!(d.message.contains("\"std/nope\" not found"), "{d}");
    assert!(
        d.message
            .contains(&stdlib().join("nope.rhai").display().to_string()),
        "{d}"
    );
}

#[test]
fn syntax_error_in_a_module_points_into_the_module() {
    let module = "fn ok() { 1 }\n\nfn broken() {\n    let = 2;\n}\n";
    let text = format!(
        "import \"lib/helpers\" as h;\n{}",
        rule("true", MINIMAL_MAP)
    );
    let dir = rules_dir(&[("10-x.rhai", &text), ("lib/helpers.rhai", module)]);
    let e = load_err(dir.path());
    let d = only(&e);
    assert_eq!(d.file, dir.path().join("lib/helpers.rhai"), "{d}");
    assert_eq!(d.line, Some(4), "{d}");
    assert!(d.column.is_some(), "{d}");
    assert!(d.message.contains("\"lib/helpers\""), "{d}");
}

#[test]
fn broken_nested_import_names_the_chain() {
    let dir = rules_dir(&[
        (
            "10-x.rhai",
            &format!("import \"lib/a\" as a;\n{}", rule("true", MINIMAL_MAP)),
        ),
        ("lib/a.rhai", "import \"lib/b\" as b;\nfn f() { b::g() }\n"),
        ("lib/b.rhai", "fn g() { 1 +* 2 }\n"),
    ]);
    let e = load_err(dir.path());
    let d = only(&e);
    assert_eq!(d.file, dir.path().join("lib/b.rhai"), "{d}");
    assert_eq!(d.line, Some(1), "{d}");
    assert!(d.message.contains("\"lib/a\" -> \"lib/b\""), "{d}");
}

#[test]
fn import_paths_cannot_leave_their_folder() {
    for bad in ["../outside", "/etc/passwd", "std/../scripts/x", "lib/"] {
        let text = format!("import \"{bad}\" as m;\n{}", rule("true", MINIMAL_MAP));
        let dir = rules_dir(&[("10-x.rhai", &text)]);
        let e = load_err(dir.path());
        let d = only(&e);
        assert!(d.message.contains("invalid module path"), "{bad}: {d}");
        assert_eq!(d.line, Some(1), "{bad}: {d}");
    }
}

#[test]
fn rules_run_in_file_name_order_and_the_first_scope_wins() {
    let dir = rules_dir(&[
        (
            "20-second.rhai",
            &rule("true", r#"#{ parent: "OU=B,DC=x", cn: "second" }"#),
        ),
        (
            "10-first.rhai",
            &rule(
                "group.displayName == \"A\"",
                r#"#{ parent: "OU=A,DC=x", cn: "first" }"#,
            ),
        ),
        (
            "lib/not-a-rule.rhai",
            "fn scope(group) { true }\nfn map(group) { throw \"never\" }",
        ),
        (".#10-first.rhai", "editor lock file"),
    ]);
    let set = load(dir.path()).expect("loads");
    assert_eq!(set.rule_names(), vec!["10-first.rhai", "20-second.rhai"]);
    let a = desired(
        set.evaluate(&json!({"id": "1", "displayName": "A"}))
            .expect("ok"),
    );
    assert_eq!((a.rule.as_str(), a.cn.as_str()), ("10-first.rhai", "first"));
    let b = desired(
        set.evaluate(&json!({"id": "2", "displayName": "B"}))
            .expect("ok"),
    );
    assert_eq!(
        (b.rule.as_str(), b.cn.as_str()),
        ("20-second.rhai", "second")
    );
}

#[test]
fn out_of_scope_and_skip() {
    let dir = rules_dir(&[("10-x.rhai", &rule("group.displayName != \"none\"", "()"))]);
    let set = load(dir.path()).expect("loads");
    assert_eq!(
        set.evaluate(&json!({"id": "1", "displayName": "none"}))
            .expect("ok"),
        Decision::OutOfScope
    );
    // map() returning () skips the group: no object.
    assert_eq!(
        set.evaluate(&json!({"id": "1", "displayName": "x"}))
            .expect("ok"),
        Decision::OutOfScope
    );
}

#[test]
fn to_cloud_takes_directory_extensions_and_plain_values() {
    let ext = "extension_0123456789abcdef0123456789abcdef_onPremDn";
    let ok = format!(
        r#"#{{ parent: "OU=X,DC=t", cn: "g", to_cloud: #{{ {ext}: "{{dn}}", extension_0123456789abcdef0123456789abcdef_n: 3, extension_0123456789abcdef0123456789abcdef_b: true, extension_0123456789abcdef0123456789abcdef_gone: () }} }}"#
    );
    let dir = rules_dir(&[("10-x.rhai", &rule("true", &ok))]);
    let set = load(dir.path()).expect("loads");
    let d = super::support::desired(set.evaluate(&json!({"id": "1"})).expect("ok"));
    assert_eq!(d.to_cloud[ext], json!("{dn}"));
    assert_eq!(
        d.to_cloud["extension_0123456789abcdef0123456789abcdef_n"],
        json!(3)
    );
    assert_eq!(
        d.to_cloud["extension_0123456789abcdef0123456789abcdef_gone"],
        json!(null)
    );
    for (bad, says) in [
        (
            r#"#{ displayName: "x" }"#,
            "only directory extension properties",
        ),
        (
            r#"#{ extension_0123_x: "x" }"#,
            "only directory extension properties",
        ),
        (
            &format!("#{{ {ext}: [1] }}") as &str,
            "a string, an integer, a bool or ()",
        ),
        (r#""x""#, "takes a map"),
    ] {
        let text = format!(r#"#{{ parent: "OU=X,DC=t", cn: "g", to_cloud: {bad} }}"#);
        let dir = rules_dir(&[("10-x.rhai", &rule("true", &text))]);
        let set = load(dir.path()).expect("loads");
        let e = eval_err(&set, &json!({"id": "1"}));
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

#[test]
fn owners_names_one_attribute_the_rule_does_not_set_itself() {
    let ok = r#"#{ parent: "OU=X,DC=t", cn: "g", owners: "managedBy" }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("true", ok))]);
    let set = load(dir.path()).expect("loads");
    let d = super::support::desired(set.evaluate(&json!({"id": "1"})).expect("ok"));
    assert_eq!(d.owners.as_deref(), Some("managedBy"));
    let none = r#"#{ parent: "OU=X,DC=t", cn: "g", owners: () }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("true", none))]);
    let set = load(dir.path()).expect("loads");
    let d = super::support::desired(set.evaluate(&json!({"id": "1"})).expect("ok"));
    assert_eq!(d.owners, None);
    for (bad, says) in [
        (
            r#"owners: ["managedBy"]"#,
            "takes the name of a DN attribute",
        ),
        (r#"owners: "managed By""#, "not an LDAP attribute name"),
        (r#"owners: "member""#, "the host owns `member`"),
        (
            r#"owners: "managedBy", attributes: #{ ManagedBy: "CN=x,DC=t" }"#,
            "sets `ManagedBy` itself",
        ),
    ] {
        let text = format!(r#"#{{ parent: "OU=X,DC=t", cn: "g", {bad} }}"#);
        let dir = rules_dir(&[("10-x.rhai", &rule("true", &text))]);
        let set = load(dir.path()).expect("loads");
        let e = eval_err(&set, &json!({"id": "1"}));
        assert!(e.to_string().contains(says), "{bad}: {e}");
        assert!(e.to_string().contains("10-x.rhai"), "{bad}: {e}");
    }
}

#[test]
fn leave_keep_and_delete_after() {
    let map = r#"if group.displayName == "k" { #{ leave: "keep" } } else if group.displayName == "d" { #{ leave: "delete", after: "2h" } } else { #{ leave: "sometime" } }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("true", map))]);
    let set = load(dir.path()).expect("loads");
    assert_eq!(
        set.evaluate(&json!({"id": "1", "displayName": "k"}))
            .expect("ok"),
        Decision::Keep
    );
    assert_eq!(
        set.evaluate(&json!({"id": "1", "displayName": "d"}))
            .expect("ok"),
        Decision::DeleteAfter { secs: 7_200 }
    );
    let e = eval_err(&set, &json!({"id": "1", "displayName": "x"}));
    assert!(
        e.to_string().contains("10-x.rhai") && e.to_string().contains("\"sometime\""),
        "{e}"
    );
}

#[test]
fn runtime_error_names_rule_function_group_and_position() {
    let text = "fn scope(group) { true }\nfn map(group) {\n    let n = group.displayName;\n    n + group.nope\n}\n";
    let dir = rules_dir(&[("10-x.rhai", text)]);
    let set = load(dir.path()).expect("loads");
    let e = eval_err(&set, &json!({"id": "abc-123", "displayName": "A"}));
    assert_eq!(e.rule, "10-x.rhai");
    assert_eq!(e.function, "map");
    assert_eq!(e.group_id, "abc-123");
    assert_eq!(e.file, dir.path().join("10-x.rhai"));
    assert_eq!((e.line, e.column), (Some(4), Some(14)), "{e}");
    assert_eq!(e.kind, EvalErrorKind::Runtime);
    assert!(e.message.contains("nope"), "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}:4:14: ",
            dir.path().join("10-x.rhai").display()
        )),
        "{shown}"
    );
    assert!(
        shown.contains("rule 10-x.rhai")
            && shown.contains("map()")
            && shown.contains("group abc-123"),
        "{shown}"
    );
}

#[test]
fn error_inside_a_module_function_points_into_the_module() {
    let module = "fn helper(g) {\n    throw \"bad group \" + g.id;\n}\n";
    let text = format!(
        "import \"lib/m\" as m;\n{}",
        rule("m::helper(group)", MINIMAL_MAP)
    );
    let dir = rules_dir(&[("10-x.rhai", &text), ("lib/m.rhai", module)]);
    let set = load(dir.path()).expect("loads");
    let e = eval_err(&set, &json!({"id": "g1", "displayName": "A"}));
    assert_eq!(e.function, "scope");
    assert_eq!(e.file, dir.path().join("lib/m.rhai"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");
    assert_eq!(e.message, "bad group g1");
}

#[test]
fn misspelt_property_fails_but_an_absent_documented_one_is_unit() {
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule(
            "true",
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{ info: group.theme, description: group.onPremisesSamAccountName } }"#,
        ),
    )]);
    let set = load(dir.path()).expect("loads");
    let g = desired(
        set.evaluate(&json!({"id": "1"}))
            .expect("absent Graph properties read as ()"),
    );
    assert_eq!(g.attributes.get("info"), Some(&None));

    let dir = rules_dir(&[("10-x.rhai", &rule("group.dispayName == \"x\"", "()"))]);
    let set = load(dir.path()).expect("loads");
    let e = eval_err(&set, &json!({"id": "1", "displayName": "x"}));
    assert!(e.message.contains("dispayName"), "{e}");
    // Open-type extras are read with get(): () when absent.
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule("group.get(\"extension_abc_dept\") == ()", "()"),
    )]);
    let set = load(dir.path()).expect("loads");
    assert!(set.evaluate(&json!({"id": "1"})).is_ok());
}

#[test]
fn endless_loop_is_stopped_by_the_operation_limit() {
    // A generous clock, so the operation counter is what stops the loop (debug builds are slow).
    let limits = Limits {
        max_operations: 100_000,
        call_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let dir = rules_dir(&[("10-x.rhai", &rule("let i = 0; loop { i += 1; }", "()"))]);
    let set = RuleSet::load(dir.path(), &stdlib(), settings(), limits).expect("loads");
    let started = Instant::now();
    let e = eval_err(&set, &json!({"id": "g1"}));
    assert_eq!(e.kind, EvalErrorKind::Limit, "{e}");
    assert!(e.message.contains("100000 operations"), "{e}");
    assert_eq!(e.function, "scope");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn slow_call_is_stopped_by_the_time_limit() {
    let limits = Limits {
        max_operations: 0, // Rhai: unlimited, so only the clock can stop the loop
        call_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule("true", "let s = 0; while true { s += 1; } ()"),
    )]);
    let set = RuleSet::load(dir.path(), &stdlib(), settings(), limits).expect("loads");
    let started = Instant::now();
    let e = eval_err(&set, &json!({"id": "g1"}));
    let took = started.elapsed();
    assert_eq!(e.kind, EvalErrorKind::Limit, "{e}");
    assert!(e.message.contains("200 ms"), "{e}");
    assert_eq!(e.function, "map");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // The engine goes back to the pool and works for the next call.
    let e2 = eval_err(&set, &json!({"id": "g2"}));
    assert_eq!(e2.group_id, "g2");
}

#[test]
fn endless_recursion_hits_the_call_depth_limit() {
    let text = "fn down(n) { down(n + 1) }\nfn scope(group) { down(0) }\nfn map(group) { () }\n";
    let dir = rules_dir(&[("10-x.rhai", text)]);
    let set = load(dir.path()).expect("loads");
    let e = eval_err(&set, &json!({"id": "g1"}));
    assert_eq!(e.kind, EvalErrorKind::Limit, "{e}");
    assert!(e.message.contains("nested function calls"), "{e}");
}

#[test]
fn sleep_exit_eval_and_time_are_unavailable() {
    for (body, needle) in [
        ("sleep(100); true", "`sleep` is not available"),
        ("exit(1); true", "`exit` is not available"),
        ("timestamp(); true", "timestamp"),
    ] {
        let dir = rules_dir(&[("10-x.rhai", &rule(body, "()"))]);
        let set = load(dir.path()).expect("loads");
        let e = eval_err(&set, &json!({"id": "g1"}));
        assert!(e.message.contains(needle), "{body}: {e}");
    }
    let dir = rules_dir(&[("10-x.rhai", &rule("eval(\"true\")", "()"))]);
    let e = load_err(dir.path());
    assert!(only(&e).message.contains("eval"), "{e}");
}

#[test]
fn print_and_debug_do_not_fail() {
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule("print(`scope ${group.id}`); debug(group.id); false", "()"),
    )]);
    let set = load(dir.path()).expect("loads");
    assert_eq!(
        set.evaluate(&json!({"id": "g1"})).expect("ok"),
        Decision::OutOfScope
    );
}

#[test]
fn reserved_attributes_are_refused_case_insensitively() {
    for attr in [
        "objectClass",
        "member",
        "CN",
        "name",
        "distinguishedName",
        "objectGUID",
        "objectSid",
        "msDS-ExternalDirectoryObjectId",
        "admindescription",
    ] {
        let map =
            format!(r#"#{{ parent: "OU=A,DC=x", cn: "c", attributes: #{{ "{attr}": "x" }} }}"#);
        let dir = rules_dir(&[("10-x.rhai", &rule("true", &map))]);
        let set = load(dir.path()).expect("loads");
        let e = eval_err(&set, &json!({"id": "g1"}));
        assert_eq!(e.kind, EvalErrorKind::Output);
        assert!(
            e.message.contains("10-x.rhai") && e.message.contains(attr),
            "{attr}: {e}"
        );
        assert!(e.message.contains("host owns"), "{e}");
    }
}

#[test]
fn a_cn_is_measured_in_utf16_units_and_the_error_names_rule_group_and_limit() {
    let map = r#"#{ parent: "OU=A,DC=x", cn: group.displayName }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("true", map))]);
    let set = load(dir.path()).expect("loads");
    // 32 emoji, 31 + a letter + a combining mark, CJK: each exactly 64 units.
    for fits in [
        "😀".repeat(32),
        format!("{}e\u{301}", "𝔸".repeat(31)),
        "東".repeat(64),
    ] {
        let g = desired(
            set.evaluate(&json!({"id": "g1", "displayName": fits}))
                .expect("fits"),
        );
        assert_eq!(g.cn, fits);
    }
    let e = eval_err(
        &set,
        &json!({"id": "g1", "displayName": format!("{}a", "😀".repeat(32))}),
    );
    assert_eq!(e.kind, EvalErrorKind::Output);
    let text = e.to_string();
    for needle in [
        "10-x.rhai returned cn of 65 UTF-16 code units (33 characters)",
        "at most 64",
        "group g1",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

#[test]
fn unknown_keys_and_bad_shapes_are_refused() {
    for (map, needle) in [
        (
            r#"#{ parent: "OU=A,DC=x", cn: "c", mail: "a@b" }"#,
            "unknown key `mail`",
        ),
        (r#"#{ cn: "c" }"#, "no `parent`"),
        (r#"#{ parent: "OU=A,DC=x" }"#, "no `cn`"),
        (r#"#{ parent: "OU=A,DC=x", cn: "  " }"#, "empty `cn`"),
        (
            r#"#{ parent: "corp", cn: "c" }"#,
            "not a distinguished name",
        ),
        (r#"#{ parent: "OU=A,DC=x", cn: 5 }"#, "`cn` as integer"),
        (
            r#"#{ parent: "OU=A,DC=x", cn: "c", members: "all" }"#,
            "`members`",
        ),
        (
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: [] }"#,
            "`attributes` as array",
        ),
        (
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{ info: 1.5 } }"#,
            "attribute `info`",
        ),
        (
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{ info: [[1]] } }"#,
            "nested array",
        ),
        (
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{ "bad name": 1 } }"#,
            "not an LDAP attribute name",
        ),
        (
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{ info: 1, Info: 2 } }"#,
            "twice",
        ),
        (
            r#"let s = ""; s.pad(65, "é"); #{ parent: "OU=A,DC=x", cn: s }"#,
            "65 UTF-16 code units (65 characters)",
        ),
        // AD counts UTF-16 code units: 33 emoji are 66 of them.
        (
            r#"let s = ""; s.pad(33, "😀"); #{ parent: "OU=A,DC=x", cn: s }"#,
            "cn of 66 UTF-16 code units (33 characters); Active Directory allows at most 64",
        ),
        (
            r#"let s = "a"; s.pad(33, "𝔸"); #{ parent: "OU=A,DC=x", cn: s }"#,
            "cn of 65 UTF-16 code units (33 characters)",
        ),
        ("42", "must return (), #{ leave: ... } or a map"),
        ("group", "not Group"),
    ] {
        let dir = rules_dir(&[("10-x.rhai", &rule("true", map))]);
        let set = load(dir.path()).expect("loads");
        let e = eval_err(&set, &json!({"id": "g1"}));
        assert_eq!(e.kind, EvalErrorKind::Output, "{map}: {e}");
        assert!(e.message.contains(needle), "{map}: {e}");
        assert!(e.message.contains("10-x.rhai"), "{map}: {e}");
    }
    let dir = rules_dir(&[("10-x.rhai", &rule("\"yes\"", "()"))]);
    let e = eval_err(&load(dir.path()).expect("loads"), &json!({"id": "g1"}));
    assert!(
        e.message.contains("scope() must return true or false"),
        "{e}"
    );
}

#[test]
fn attribute_values_are_converted_for_ldap() {
    let map = r#"#{
        parent: "OU=A,DC=x",
        cn: "c",
        members: "none",
        attributes: #{
            groupType: -2147483640,
            msExchHideFromAddressLists: true,
            flag: false,
            info: (),
            description: "",
            proxyAddresses: ["SMTP:a@x", (), "", "smtp:b@x", "SMTP:a@x", 7, true],
            extensionAttribute1: 'c',
        }
    }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("true", map))]);
    let set = load(dir.path()).expect("loads");
    let g = desired(set.evaluate(&json!({"id": "g1"})).expect("ok"));
    assert_eq!(g.members, MemberPolicy::None);
    let expected: BTreeMap<String, Option<Vec<String>>> = [
        ("groupType", Some(vec!["-2147483640"])),
        ("msExchHideFromAddressLists", Some(vec!["TRUE"])),
        ("flag", Some(vec!["FALSE"])),
        ("info", None),
        ("description", None),
        (
            "proxyAddresses",
            Some(vec!["SMTP:a@x", "smtp:b@x", "7", "TRUE"]),
        ),
        ("extensionAttribute1", Some(vec!["c"])),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_string(),
            v.map(|v| v.into_iter().map(str::to_string).collect()),
        )
    })
    .collect();
    assert_eq!(g.attributes, expected);
}

#[test]
fn settings_are_visible_and_a_missing_one_is_named() {
    let mut s = settings();
    s.insert("limit".into(), json!(3));
    s.insert("tags".into(), json!(["a", "b"]));
    s.insert("nested".into(), json!({"ou": "OU=N,DC=x"}));
    let map = r#"#{ parent: setting("nested").ou, cn: "c", attributes: #{
        info: setting("m365_container"), c: setting("limit") + 1, tags: setting("tags"),
        d: setting_or("absent", "fallback") } }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("true", map))]);
    let set = RuleSet::load(dir.path(), &stdlib(), s, Limits::default()).expect("loads");
    let g = desired(set.evaluate(&json!({"id": "g1"})).expect("ok"));
    assert_eq!(g.parent, "OU=N,DC=x");
    assert_eq!(value(&g, "info"), M365_OU);
    assert_eq!(value(&g, "c"), "4");
    assert_eq!(
        values(&g, "tags"),
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(value(&g, "d"), "fallback");

    // A literal name that is not configured stops the load, at the call.
    let text = "fn scope(group) { true }\nfn map(group) {\n    #{ parent: setting(\"ou_for_sales\"), cn: \"c\" }\n}\n";
    let dir = rules_dir(&[("10-x.rhai", text)]);
    let e = load_err(dir.path());
    let d = only(&e);
    assert!(
        d.message.contains("\"ou_for_sales\"") && d.message.contains("not defined"),
        "{e}"
    );
    assert_eq!((d.line, d.column), (Some(3), Some(16)), "{e}");
    // A computed name can only fail when it is called.
    let text = "fn scope(group) { true }\nfn map(group) {\n    let n = \"ou_\" + \"for_sales\";\n    #{ parent: setting(n), cn: \"c\" }\n}\n";
    let dir = rules_dir(&[("10-x.rhai", text)]);
    let set = load(dir.path()).expect("loads");
    let e = eval_err(&set, &json!({"id": "g1"}));
    assert!(e.message.contains("not defined"), "{e}");
    assert_eq!((e.line, e.function.as_str()), (Some(4), "map"), "{e}");
}

#[test]
fn modules_are_read_afresh_on_every_load() {
    let text = format!(
        "import \"lib/names\" as names;\n{}",
        rule("true", r#"#{ parent: "OU=A,DC=x", cn: names::cn(group) }"#)
    );
    let dir = rules_dir(&[
        ("10-x.rhai", &text),
        ("lib/names.rhai", "fn cn(g) { \"one\" }"),
    ]);
    let first = load(dir.path()).expect("loads");
    let group = json!({"id": "g1"});
    assert_eq!(desired(first.evaluate(&group).expect("ok")).cn, "one");
    let module_path = dir.path().join("lib/names.rhai");
    let hash_of = |set: &RuleSet| {
        set.files()
            .iter()
            .find(|f| f.path == module_path)
            .map(|f| (f.kind, f.sha256.clone()))
    };
    let (kind, h1) = hash_of(&first).expect("module listed in files()");
    assert_eq!(kind, FileKind::Module);

    std::fs::write(&module_path, "fn cn(g) { \"two\" }").expect("edit module");
    let second = load(dir.path()).expect("reloads");
    assert_eq!(desired(second.evaluate(&group).expect("ok")).cn, "two");
    let (_, h2) = hash_of(&second).expect("module listed");
    assert_ne!(h1, h2);
    // The old set keeps its own compiled copy.
    assert_eq!(desired(first.evaluate(&group).expect("ok")).cn, "one");

    let rule_file = &second.files()[0];
    assert_eq!(
        (rule_file.kind, rule_file.sha256.len()),
        (FileKind::Rule, 64)
    );
}

#[test]
fn check_reports_files_or_diagnostics() {
    let dir = rules_dir(&[("10-x.rhai", &rule("true", MINIMAL_MAP))]);
    let files = crate::rules::check(dir.path(), &stdlib(), settings(), true, None).expect("valid");
    assert_eq!(files.len(), 1);
    let dir = rules_dir(&[("10-x.rhai", "fn scope(group) {")]);
    assert!(crate::rules::check(dir.path(), &stdlib(), settings(), true, None).is_err());
}

#[test]
fn rule_set_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
    assert_send_sync::<std::sync::Arc<RuleSet>>();
}

#[test]
fn two_threads_evaluate_identically() {
    let set = std::sync::Arc::new(shipped());
    let groups: Vec<serde_json::Value> = (0..200)
        .map(|i| {
            let base = if i % 2 == 0 {
                m365_group()
            } else {
                security_group()
            };
            with(
                base,
                json!({
                    "id": format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7919),
                    "displayName": format!("Group {i}, \"quoted\" + <{i}>"),
                }),
            )
        })
        .collect();
    let serial: Vec<_> = groups
        .iter()
        .map(|g| set.evaluate(g).expect("ok"))
        .collect();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let set = set.clone();
            let groups = groups.clone();
            std::thread::spawn(move || {
                groups
                    .iter()
                    .map(|g| set.evaluate(g).expect("ok"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        let got = h.join().expect("thread");
        assert_eq!(got, serial);
    }
}

#[test]
fn group_reads_like_a_map_without_being_copied() {
    let map = r#"
        let m = group.members;
        let users = map(m.filter(|x| x.type == "user"), |x| x.id);
        let as_map = group.to_map();
        let keep = [group, group];
        #{
            parent: "OU=A,DC=x",
            cn: type_of(group),
            attributes: #{
                info: users,
                description: group["displayName"],
                c: m.len(),
                a: "displayName" in group,
                b: "theme" in group,
                d: as_map.displayName,
                e: group.keys().len() > 2,
                f: group.get("extension_x"),
                g: keep[1].id,
                h: `${group.displayName}`,
            }
        }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("print(group); true", map))]);
    let set = load(dir.path()).expect("loads");
    let g = desired(set.evaluate(&m365_group()).expect("ok"));
    assert_eq!(g.cn, "Group");
    assert_eq!(
        values(&g, "info"),
        Some(vec!["87d349ed-44d7-43e1-9a83-5f2406dee5bd".to_string()])
    );
    assert_eq!(value(&g, "description"), "OutlookGroup101");
    assert_eq!(value(&g, "c"), "2");
    assert_eq!(value(&g, "a"), "TRUE");
    assert_eq!(value(&g, "b"), "TRUE");
    assert_eq!(value(&g, "d"), "OutlookGroup101");
    assert_eq!(value(&g, "e"), "TRUE");
    assert_eq!(values(&g, "f"), None);
    assert_eq!(value(&g, "g"), "4c5ee71b-e6a5-4343-9e2c-4244bc7e0938");
    assert!(value(&g, "h").contains("OutlookGroup101"));
}

/// A cached group with `members` users and one nested group; `extra` overlays its properties.
fn cached_group(members: usize, extra: serde_json::Value) -> crate::graph::model::CloudObject {
    use crate::graph::model::{CloudObject, MemberRef};
    let mut props = m365_group().as_object().cloned().unwrap_or_default();
    props.remove("id");
    props.remove("members");
    if let Some(extra) = extra.as_object() {
        props.extend(extra.clone());
    }
    let mut g = CloudObject {
        id: "4c5ee71b-e6a5-4343-9e2c-4244bc7e0938".into(),
        props,
        ..Default::default()
    };
    for i in 0..members {
        let id = format!("{i:08x}-0000-4000-8000-000000000000");
        let odata_type = "#microsoft.graph.user".to_string();
        g.members.insert(id.clone(), MemberRef { odata_type, id });
    }
    let nested = "ffffffff-0000-4000-8000-000000000000".to_string();
    g.members.insert(
        nested.clone(),
        MemberRef {
            odata_type: "#microsoft.graph.group".into(),
            id: nested,
        },
    );
    g
}

#[test]
fn a_cached_group_reads_the_same_without_its_json_form() {
    // Everything a rule can read of a group, its members included.
    let map = r#"
        let m = group.members;
        #{
            parent: "OU=A,DC=x",
            cn: `${type_of(group)} ${group.id} ${group.deleted}`,
            attributes: #{
                info: map(m.filter(|x| x.type == "group"), |x| x.id),
                description: `${m.len()} ${m[0].id} ${m[0].type}`,
                adminDisplayName: group.keys(),
                displayName: `${group.to_map().len()} ${group.to_map().members.len()}`,
                c: [group.displayName, group.get("extension_x"), "members" in group, is_m365(group)],
            }
        }"#;
    let dir = rules_dir(&[("10-x.rhai", &rule("print(group); true", map))]);
    let set = load(dir.path()).expect("loads");
    let now = crate::rules::Now::current();
    let groups = [
        cached_group(3, json!({})),
        cached_group(0, json!({ "extension_x": "y", "groupTypes": [] })),
        crate::graph::model::CloudObject {
            soft_deleted: true,
            ..cached_group(1, json!({}))
        },
        // What the delta parser marks as malformed, and more properties than accepted.
        cached_group(
            1,
            json!({ "@writeback.invalid": "members@delta is not an array" }),
        ),
        cached_group(
            1,
            serde_json::Value::Object(
                (0..crate::rules::MAX_CLOUD_PROPERTIES)
                    .map(|i| (format!("extension_{i}"), json!(i)))
                    .collect(),
            ),
        ),
    ];
    let json: Vec<serde_json::Value> = groups.iter().map(|g| g.to_rule_json()).collect();
    let objects: Vec<&crate::graph::model::CloudObject> = groups.iter().collect();
    let by_json = set.evaluate_batch(&json, now);
    let by_object = set.evaluate_objects(&objects, now);
    assert_eq!(by_object.len(), groups.len());
    for (i, (a, b)) in by_json.iter().zip(&by_object).enumerate() {
        assert_eq!(
            format!("{:?}", a.0),
            format!("{:?}", b.0),
            "group {i} reads differently"
        );
    }
    let first = desired(by_object[0].0.clone().expect("in scope"));
    assert_eq!(
        value(&first, "description"),
        "4 00000000-0000-4000-8000-000000000000 user"
    );
    assert!(by_object[3].0.is_err() && by_object[4].0.is_err());
}

#[test]
fn big_groups_fit_the_default_limits() {
    let members: Vec<serde_json::Value> = (0..100_000)
        .map(|i| json!({"id": format!("{i:08x}-0000-4000-8000-000000000000"), "type": "user"}))
        .collect();
    let group = with(m365_group(), json!({ "members": members }));
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule("group.members.len() > 50000", MINIMAL_MAP),
    )]);
    let set = load(dir.path()).expect("loads");
    let g = desired(
        set.evaluate(&group)
            .expect("a 100,000-member group is readable"),
    );
    assert_eq!(g.cn, "OutlookGroup101");
}

#[test]
fn method_calls_that_would_hit_the_entry_points_are_refused() {
    // `list.map(f)` would call the rule's own `map(group)`: refused in rules and modules alike.
    let text = rule("true", "let ids = group.members.map(|m| m.id); ()");
    let dir = rules_dir(&[("10-x.rhai", &text)]);
    let e = load_err(dir.path());
    let d = only(&e);
    assert_eq!((d.line, d.column), (Some(2), Some(40)), "{d}");
    assert!(d.message.contains("`map(value, ...)`"), "{d}");

    let text = format!("import \"lib/m\" as m;\n{}", rule("true", MINIMAL_MAP));
    let dir = rules_dir(&[
        ("10-x.rhai", &text),
        ("lib/m.rhai", "fn f() {\n    [1, 2].map(|x| x + 1)\n}\n"),
    ]);
    let e = load_err(dir.path());
    let d = only(&e);
    assert_eq!(d.file, dir.path().join("lib/m.rhai"), "{d}");
    assert_eq!((d.line, d.column), (Some(2), Some(11)), "{d}");

    // The function form works.
    let body = "#{ parent: \"OU=A,DC=x\", cn: \"c\", attributes: #{ info: map(group.members, |m| m.id) } }";
    let dir = rules_dir(&[("10-x.rhai", &rule("true", body))]);
    let g = desired(
        load(dir.path())
            .expect("loads")
            .evaluate(&m365_group())
            .expect("ok"),
    );
    assert_eq!(values(&g, "info").map(|v| v.len()), Some(2));
}

#[test]
fn absent_or_null_properties_read_with_their_defaults() {
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule(
            "true",
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{
                info: [type_of(group.groupTypes), group.groupTypes.len(), group.proxyAddresses.len()],
                description: [group.mailEnabled, group.onPremisesSyncEnabled, group.securityEnabled],
                adminDisplayName: [type_of(group.mail), type_of(group.get("extension_abc_x"))],
            } }"#,
        ),
    )]);
    let set = load(dir.path()).expect("loads");
    for group in [
        json!({"id": "1"}),
        json!({"id": "1", "groupTypes": null, "proxyAddresses": null, "mailEnabled": null,
               "onPremisesSyncEnabled": null, "securityEnabled": null, "mail": null,
               "extension_abc_x": null}),
    ] {
        let g = desired(set.evaluate(&group).expect("ok"));
        assert_eq!(
            values(&g, "info"),
            Some(vec!["array".into(), "0".into()]),
            "{group}"
        );
        assert_eq!(
            values(&g, "description"),
            Some(vec!["FALSE".into()]),
            "{group}"
        );
        assert_eq!(
            values(&g, "adminDisplayName"),
            Some(vec!["()".into()]),
            "{group}"
        );
    }
    // Values Graph sent are read as sent.
    let g = desired(
        set.evaluate(
            &json!({"id": "1", "groupTypes": ["Unified"], "proxyAddresses": ["a", "b"],
                             "mailEnabled": true, "onPremisesSyncEnabled": false}),
        )
        .expect("ok"),
    );
    assert_eq!(
        values(&g, "info"),
        Some(vec!["array".into(), "1".into(), "2".into()])
    );
    assert_eq!(
        values(&g, "description"),
        Some(vec!["TRUE".into(), "FALSE".into()])
    );
}

#[test]
fn group_kind_helpers() {
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule(
            "true",
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{
                info: `${is_m365(group)} ${is_security(group)} ${is_dynamic(group)}` } }"#,
        ),
    )]);
    let set = load(dir.path()).expect("loads");
    let kinds =
        |group: serde_json::Value| value(&desired(set.evaluate(&group).expect("ok")), "info");
    assert_eq!(
        kinds(
            json!({"id": "1", "groupTypes": ["Unified"], "mailEnabled": true, "securityEnabled": false})
        ),
        "true false false"
    );
    assert_eq!(
        kinds(
            json!({"id": "1", "groupTypes": ["Unified", "DynamicMembership"], "mailEnabled": true, "securityEnabled": true})
        ),
        "true false true"
    );
    assert_eq!(
        kinds(json!({"id": "1", "groupTypes": [], "mailEnabled": false, "securityEnabled": true})),
        "false true false"
    );
    assert_eq!(
        kinds(json!({"id": "1", "groupTypes": ["DynamicMembership"], "securityEnabled": true})),
        "false true true"
    );
    // A mail-enabled security group is not what Cloud Sync writes back.
    assert_eq!(
        kinds(json!({"id": "1", "mailEnabled": true, "securityEnabled": true})),
        "false false false"
    );
    assert_eq!(kinds(json!({"id": "1"})), "false false false");
}

#[test]
fn on_create_attributes_are_returned_apart_and_may_not_repeat_kept_ones() {
    let dir = rules_dir(&[(
        "10-x.rhai",
        &rule(
            "true",
            r#"#{ parent: "OU=A,DC=x", cn: "c", attributes: #{ displayName: "D" },
                on_create: #{ sAMAccountName: "acct", info: () } }"#,
        ),
    )]);
    let set = load(dir.path()).expect("loads");
    let g = desired(set.evaluate(&json!({"id": "1"})).expect("ok"));
    assert_eq!(
        g.on_create.get("sAMAccountName"),
        Some(&Some(vec!["acct".to_string()]))
    );
    assert_eq!(g.on_create.get("info"), Some(&None));
    assert!(!g.attributes.contains_key("sAMAccountName"));

    for (on_create, wanted) in [
        (
            r#"#{ DISPLAYNAME: "x" }"#,
            "both in `attributes` and in `on_create`",
        ),
        (r#"#{ member: "x" }"#, "the host owns `member`"),
        (
            r#""sAMAccountName""#,
            "`on_create` as string; it must be a map",
        ),
    ] {
        let dir = rules_dir(&[(
            "10-x.rhai",
            &rule(
                "true",
                &format!(
                    r#"#{{ parent: "OU=A,DC=x", cn: "c", attributes: #{{ displayName: "D" }}, on_create: {on_create} }}"#
                ),
            ),
        )]);
        let set = load(dir.path()).expect("loads");
        let e = eval_err(&set, &json!({"id": "1"}));
        assert!(e.message.contains(wanted), "{on_create}: {e}");
    }
}
