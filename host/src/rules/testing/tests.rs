//! The rule test runner: parsing (with positions), each kind of failure and its text, skips,
//! error expectations, settings and `now`, rendering.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;

const RULE: &str = r#"
import "std/time" as time;

fn scope(group) { group.displayName != "skip me" }

fn map(group) {
    if group.displayName == "boom" { throw "boom happened"; }
    if group.displayName == "nothing" { return (); }
    if group.displayName == "keep me" { return #{ leave: "keep" }; }
    if group.displayName == "later" { return #{ leave: "delete", after: "30d" }; }
    #{
        parent: setting("ou"),
        cn: group.displayName + "_" + group.id.sub_string(24),
        attributes: #{
            groupType: 8,
            flag: true,
            mail: group.mail,
            proxyAddresses: ["SMTP:a@x.test", "smtp:b@x.test"],
            info: (),
            age: time::days_since(group.createdDateTime, now()),
            memberCount: group.members.len(),
        },
        members: if group.securityEnabled == true { "flatten" } else { "on-premises" },
        owners: "managedBy",
        member_of: ["CN=Share RW,OU=Shares,DC=x,DC=test"],
    }
}
"#;

fn stdlib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib")
}

fn settings() -> BTreeMap<String, Value> {
    BTreeMap::from([("ou".to_string(), json!("OU=Groups,DC=x,DC=test"))])
}

/// A rules folder with the probe rule and the given test files (name, text).
fn folder(tests: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("10-probe.rhai"), RULE).expect("write rule");
    std::fs::create_dir_all(dir.path().join(TESTS_FOLDER)).expect("mkdir tests");
    for (name, text) in tests {
        std::fs::write(dir.path().join(TESTS_FOLDER).join(name), text).expect("write test");
    }
    dir
}

fn run_one(test: &str) -> TestReport {
    let dir = folder(&[("a.toml", test)]);
    run(dir.path(), &stdlib(), &settings()).expect("rules load")
}

/// The mismatches of the only case of the only file.
fn mismatches(test: &str) -> Vec<String> {
    let report = run_one(test);
    let cases = match &report.files[..] {
        [f] => f.outcome.clone().expect("file parses"),
        other => panic!("one file expected: {other:?}"),
    };
    assert_eq!(cases.len(), 1);
    cases[0]
        .mismatches
        .iter()
        .map(|m| format!("{}: expected {} got {}", m.field, m.expected, m.actual))
        .collect()
}

fn broken(test: &str) -> Diagnostic {
    let report = run_one(test);
    assert_eq!(report.failed(), 1);
    match &report.files[..] {
        [f] => f.outcome.clone().expect_err("file is broken"),
        other => panic!("one file expected: {other:?}"),
    }
}

#[test]
fn a_passing_case_checks_every_field() {
    let report = run_one(
        r#"
now = "2024-06-11T12:00:00Z"

[[case]]
name = "all fields"
group = { displayName = "Sales", mail = "sales@x.test", createdDateTime = "2024-06-01T06:00:00Z", members = [{ id = "u1" }, { id = "g1", type = "group" }] }
[case.expect]
rule = "10-probe"
parent = "OU=Groups,DC=x,DC=test"
cn = "Sales_123456789abc"
members = "on-premises"
exact_attributes = true
attributes = { groupType = 8, flag = true, MAIL = "sales@x.test", proxyAddresses = ["smtp:b@x.test", "SMTP:a@x.test"], info = "(cleared)", age = 10, memberCount = 2 }
"#,
    );
    assert!(report.ok(), "{}", render(&report));
    assert_eq!((report.passed(), report.failed()), (1, 0));
    let text = render(&report);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ok      ") && lines[0].ends_with("a.toml:4: all fields"),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"1 passed, 0 failed"));
}

#[test]
fn field_mismatches_read_as_expected_and_got() {
    let got = mismatches(
        r#"
[[case]]
name = "wrong"
group = { id = "00000000-0000-4000-8000-000000001234", displayName = "A", securityEnabled = true }
[case.expect]
rule = "20-other.rhai"
parent = "OU=Elsewhere,DC=x,DC=test"
cn = "A_123"
members = "on-premises"
attributes = { groupType = -2147483640, mail = "a@x.test", info = "note", flag = "(cleared)", proxyAddresses = ["SMTP:a@x.test"], missing = "x" }
"#,
    );
    assert_eq!(
        got,
        vec![
            r#"rule: expected "20-other.rhai" got "10-probe.rhai""#,
            r#"parent: expected "OU=Elsewhere,DC=x,DC=test" got "OU=Groups,DC=x,DC=test""#,
            r#"cn: expected "A_123" got "A_000000001234""#,
            r#"members: expected "on-premises" got "flatten""#,
            r#"attributes.flag: expected (cleared) got "TRUE""#,
            r#"attributes.groupType: expected "-2147483640" got "8""#,
            r#"attributes.info: expected "note" got (cleared)"#,
            r#"attributes.mail: expected "a@x.test" got (cleared)"#,
            r#"attributes.missing: expected "x" got (not returned)"#,
            r#"attributes.proxyAddresses: expected "SMTP:a@x.test" got ["SMTP:a@x.test", "smtp:b@x.test"]"#,
        ]
    );
}

#[test]
fn owners_and_member_of_are_checked_when_the_case_names_them() {
    let case = |expect: &str| {
        format!("[[case]]\nname = \"links\"\ngroup = {{ displayName = \"A\" }}\n[case.expect]\n{expect}\n")
    };
    // DNs compare as AD compares them.
    assert!(mismatches(&case(
        "owners = \"managedBy\"\nmember_of = \"cn=share rw, ou=Shares,DC=x,DC=test\""
    ))
    .is_empty());
    assert_eq!(
        mismatches(&case("owners = \"\"\nmember_of = []")),
        vec![
            r#"owners: expected "" got "managedBy""#,
            r#"member_of: expected [] got "CN=Share RW,OU=Shares,DC=x,DC=test""#,
        ]
    );
    assert!(broken(&case("member_of = 3"))
        .message
        .contains("expect.member_of must be a DN or an array of DNs"));
}

#[test]
fn exact_attributes_reports_attributes_the_test_does_not_list() {
    let got = mismatches(
        r#"
[[case]]
name = "exact"
group = { displayName = "A", mail = "a@x.test" }
[case.expect]
exact_attributes = true
attributes = { groupType = 8, flag = true, mail = "a@x.test", proxyAddresses = ["SMTP:a@x.test", "smtp:b@x.test"], info = [] }
"#,
    );
    assert_eq!(
        got,
        vec![
            r#"attributes.age: expected (not returned) got (cleared)"#,
            r#"attributes.memberCount: expected (not returned) got "0""#,
        ]
    );
    // Without exact_attributes, unlisted attributes are not checked.
    assert!(mismatches(
        "[[case]]\nname = \"loose\"\ngroup = { displayName = \"A\" }\nexpect = { cn = \"A_123456789abc\" }\n"
    )
    .is_empty());
}

#[test]
fn skip_expectations() {
    let pass = run_one(
        "[[case]]\nname = \"out of scope\"\ngroup = { displayName = \"skip me\" }\nexpect = \"skip\"\n\n\
         [[case]]\nname = \"map returns ()\"\ngroup = { displayName = \"nothing\" }\nexpect = \"skip\"\n",
    );
    assert_eq!((pass.passed(), pass.failed()), (2, 0), "{}", render(&pass));
    assert_eq!(
        mismatches("[[case]]\nname = \"n\"\ngroup = { displayName = \"B\" }\nexpect = \"skip\"\n"),
        vec![
            r#"result: expected skip got cn "B_123456789abc" in "OU=Groups,DC=x,DC=test" (rule 10-probe.rhai)"#
        ]
    );
    assert_eq!(
        mismatches("[[case]]\nname = \"n\"\ngroup = { displayName = \"skip me\" }\nexpect = { cn = \"x\" }\n"),
        vec!["result: expected a group got skip (no rule's scope() was true, or map() returned ())"]
    );
}

#[test]
fn keep_and_delete_after_expectations() {
    let case = |name: &str, expect: &str| {
        format!("[[case]]\nname = \"c\"\nexpect = \"{expect}\"\ngroup = {{ displayName = \"{name}\" }}\n")
    };
    assert!(mismatches(&case("keep me", "keep")).is_empty());
    assert!(mismatches(&case("later", "delete after 30d")).is_empty());
    assert_eq!(
        mismatches(&case("later", "delete after 7d")),
        ["result: expected delete after 7d got delete after 30d"]
    );
    assert_eq!(
        mismatches(&case("keep me", "skip")),
        ["result: expected skip got keep"]
    );
    assert_eq!(
        mismatches(&case("nothing", "keep")),
        ["result: expected keep got skip"]
    );
    let e = broken(&case("later", "delete after soon"));
    assert!(e.message.contains("\"soon\""), "{}", e.message);
}

#[test]
fn error_expectations() {
    assert!(mismatches(
        "[[case]]\nname = \"e\"\ngroup = { displayName = \"boom\" }\nexpect = { error = \"boom happened\" }\n"
    )
    .is_empty());
    let wrong = mismatches(
        "[[case]]\nname = \"e\"\ngroup = { displayName = \"boom\" }\nexpect = { error = \"kaput\" }\n",
    );
    assert_eq!(wrong.len(), 1);
    assert!(
        wrong[0].starts_with(r#"error: expected an error containing "kaput" got ""#)
            && wrong[0].contains("10-probe.rhai:7:")
            && wrong[0].contains("boom happened (rule 10-probe.rhai, map(), group 00000000-0000-4000-8000-123456789abc)"),
        "{wrong:?}"
    );
    assert_eq!(
        mismatches("[[case]]\nname = \"e\"\ngroup = { displayName = \"skip me\" }\nexpect = { error = \"x\" }\n"),
        vec![r#"error: expected an error containing "x" got no error (skip)"#]
    );
    let unexpected = mismatches(
        "[[case]]\nname = \"e\"\ngroup = { displayName = \"boom\" }\nexpect = \"skip\"\n",
    );
    assert!(
        unexpected[0].starts_with("result: expected skip got error \"")
            && unexpected[0].contains("boom happened"),
        "{unexpected:?}"
    );
    // A setting the file's [settings] lacks stops the rules from loading, with its position.
    let dir = folder(&[(
        "s.toml",
        "[settings]\nother = 1\n\n[[case]]\nname = \"no ou\"\ngroup = { displayName = \"A\" }\nexpect = \"skip\"\n",
    )]);
    let report = run(dir.path(), &stdlib(), &settings()).expect("runs");
    let text = render(&report);
    assert!(!report.ok(), "{text}");
    assert!(
        text.contains("10-probe.rhai:12:17: setting \"ou\" is not defined"),
        "{text}"
    );
}

#[test]
fn settings_and_now_come_from_the_file_and_the_case() {
    let report = run_one(
        r#"
now = 2024-06-11T00:00:00Z

[settings]
ou = "OU=Test,DC=x,DC=test"

[[case]]
name = "file now"
group = { displayName = "A", createdDateTime = "2024-06-01T00:00:00Z" }
expect = { parent = "OU=Test,DC=x,DC=test", attributes = { age = 10 } }

[[case]]
name = "case now"
now = "2024-07-01T00:00:00+02:00"
[case.group]
displayName = "A"
createdDateTime = 2024-06-01T00:00:00Z
[case.expect]
attributes = { age = 29 }
"#,
    );
    assert!(report.ok(), "{}", render(&report));
}

#[test]
fn malformed_files_name_file_line_and_column() {
    let d = broken("[[case]]\nname = \"x\"\nexpectt = \"skip\"\n");
    assert_eq!((d.line, d.column), (Some(3), Some(1)), "{d}");
    assert!(d.file.ends_with("tests/a.toml"), "{d}");
    assert!(d.message.contains("unknown field `expectt`"), "{d}");

    let d = broken("[[case]]\nname = \"x\"\nexpect = skip\n");
    assert_eq!(d.line, Some(3), "{d}");

    let d = broken("\n[[case]]\nname = \"x\"\ngroup = {}\n[case.expect]\nmembers = \"all\"\n");
    assert_eq!(d.line, Some(5), "{d}");
    assert!(
        d.message.contains(
            r#"case "x": expect.members must be "on-premises", "flatten" or "none", not "all""#
        ),
        "{d}"
    );

    let d = broken("[[case]]\nname = \"x\"\ngroup = { members = [\"u1\"] }\nexpect = \"skip\"\n");
    assert_eq!(d.line, Some(3), "{d}");
    assert!(d.message.contains("group.members[0] must be"), "{d}");

    let d = broken("[[case]]\nname = \"x\"\nexpect = { error = \"a\", cn = \"b\" }\n");
    assert!(d.message.contains("cannot be combined"), "{d}");

    let d = broken("[[case]]\nname = \"x\"\nexpect = { atributes = {} }\n");
    assert!(d.message.contains("unknown key `atributes`"), "{d}");

    let d = broken("now = \"yesterday\"\n[[case]]\nname = \"x\"\nexpect = \"skip\"\n");
    assert_eq!(d.line, Some(1), "{d}");
    assert!(d.message.contains("not an RFC 3339 time"), "{d}");

    let d = broken("[[case]]\nexpect = \"skip\"\n");
    assert!(d.message.contains("missing field `name`"), "{d}");

    let d = broken("# nothing yet\n");
    assert!(d.message.contains("no test cases"), "{d}");

    // A broken file shows as one failure, rendered with its position.
    let text = render(&run_one("[[case]]\nname = \"x\"\nexpectt = \"skip\"\n"));
    assert!(
        text.contains("FAILED  ") && text.contains("a.toml:3:1: unknown field `expectt`"),
        "{text}"
    );
    assert!(text.ends_with("\n0 passed, 1 failed\n"), "{text}");
}

#[test]
fn failures_render_with_their_diff_under_the_case() {
    let report = run_one(
        "[[case]]\nname = \"good\"\ngroup = { displayName = \"A\" }\nexpect = { cn = \"A_123456789abc\" }\n\n\
         [[case]]\nname = \"bad\"\ngroup = { displayName = \"A\" }\nexpect = { cn = \"A_123\" }\n",
    );
    let text = render(&report);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ok      ") && lines[0].ends_with("a.toml:1: good"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("FAILED  ") && lines[1].ends_with("a.toml:6: bad"),
        "{text}"
    );
    assert_eq!(
        lines[2],
        r#"            cn: expected "A_123" got "A_123456789abc""#
    );
    assert_eq!(lines.last(), Some(&"1 passed, 1 failed"));
    assert!(!report.ok());
}

#[test]
fn rules_that_do_not_load_are_an_error_and_test_files_are_never_rules() {
    let dir = folder(&[("a.toml", "[[case]]\nname = \"x\"\nexpect = \"skip\"\n")]);
    std::fs::write(
        dir.path().join(TESTS_FOLDER).join("helper.rhai"),
        "fn nope(",
    )
    .expect("write");
    let set = RuleSet::load(dir.path(), &stdlib(), settings(), Limits::default())
        .expect("tests/ holds no rules");
    assert_eq!(set.rule_names(), vec!["10-probe.rhai"]);
    assert!(set
        .files()
        .iter()
        .all(|f| !f.path.starts_with(dir.path().join(TESTS_FOLDER))));

    std::fs::write(dir.path().join("20-broken.rhai"), "fn scope(group) { true ").expect("write");
    let err = run(dir.path(), &stdlib(), &settings()).expect_err("does not load");
    assert!(err.to_string().contains("20-broken.rhai:1:"), "{err}");
}

#[test]
fn no_tests_folder_is_an_empty_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("10-probe.rhai"), RULE).expect("write rule");
    let report = run(dir.path(), &stdlib(), &settings()).expect("loads");
    assert!(report.files.is_empty() && report.ok());
    let text = render(&report);
    assert!(text.starts_with("no test files (*.toml) in "), "{text}");
    assert!(text.ends_with("\n0 passed, 0 failed\n"), "{text}");
}

#[test]
fn time_helpers_count_days_and_format_dates() {
    let rule = r#"
import "std/time" as time;
fn scope(group) { true }
fn map(group) {
    #{ parent: "OU=T,DC=x", cn: "t", attributes: #{
        now: now(),
        days: time::days_since(group.createdDateTime, now()),
        ahead: time::days_since("2024-06-12T00:00:01Z", now()),
        unknown: type_of(time::days_since(group.deletedDateTime, now())),
        secs: time::seconds_since("2024-06-10T23:59:00Z", now()),
        later: time::add_days(group.createdDateTime, 30),
        date: time::date("2024-06-10T23:30:00-02:00"),
    } }
}
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("10-t.rhai"), rule).expect("write");
    let set = RuleSet::load(dir.path(), &stdlib(), settings(), Limits::default()).expect("loads");
    let file = spec::parse(
        Path::new("t.toml"),
        r#"
now = "2024-06-11T00:00:00Z"
[[case]]
name = "t"
group = { createdDateTime = "2024-05-11T00:00:01Z" }
[case.expect]
attributes = { now = "2024-06-11T00:00:00Z", days = 30, ahead = -2, unknown = "()", secs = 60, later = "2024-06-10T00:00:01Z", date = "2024-06-11" }
"#,
    )
    .expect("parses");
    let reports = run_file(&set, &file, Now::current());
    assert!(reports[0].passed(), "{:?}", reports[0].mismatches);
}

#[test]
fn the_scripting_guide_test_file_passes_against_the_default_rules() {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SCRIPTING.md"));
    let start = doc
        .find("```toml test-file\n")
        .expect("a ```toml test-file block in SCRIPTING.md");
    let body = &doc[start..];
    let body = &body[body.find('\n').map_or(0, |i| i + 1)..];
    let text = &body[..body.find("```").expect("the block ends")];
    let file = spec::parse(Path::new("SCRIPTING.md"), text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(file.cases.len(), 3);
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let set = RuleSet::load(
        &scripts,
        &stdlib(),
        file.settings.clone().unwrap_or_default(),
        Limits::default(),
    )
    .expect("the default rules load");
    for case in run_file(&set, &file, Now::current()) {
        assert!(case.passed(), "{}: {:?}", case.name, case.mismatches);
    }
}

/// A case whose expectation is exactly what the rule returns, with `display_name` and `mail`.
fn expecting_what_the_rule_returns(display_name: &str, mail: &str) -> String {
    format!(
        "[[case]]\nname = \"wide\"\ngroup = {{ id = \"00000000-0000-4000-8000-0000000000aa\", displayName = \"{display_name}\", mail = \"{mail}\" }}\n\
         [case.expect]\ncn = \"{display_name}_0000000000aa\"\nattributes = {{ mail = \"{mail}\" }}\n"
    )
}

#[test]
fn a_cn_over_64_utf16_units_fails_even_when_expected() {
    // 26 emoji + "_" + 12 = 39 characters but 65 UTF-16 code units: AD refuses it.
    let name = "😀".repeat(26);
    let report = run_one(&expecting_what_the_rule_returns(&name, "a@x.test"));
    assert_eq!(
        (report.passed(), report.failed()),
        (0, 1),
        "{}",
        render(&report)
    );
    let got = mismatches(&expecting_what_the_rule_returns(&name, "a@x.test"));
    assert_eq!(got.len(), 1, "{got:?}");
    let text = &got[0];
    assert!(
        text.starts_with("result: expected a group got error"),
        "{text}"
    );
    for needle in [
        "10-probe.rhai returned cn of 65 UTF-16 code units (39 characters)",
        "Active Directory allows at most 64",
        "outside the Basic Multilingual Plane",
        "group 00000000-0000-4000-8000-0000000000aa",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }

    // One unit less (a BMP letter for an emoji) is exactly 64 and passes.
    let fits = format!("{}a", "😀".repeat(25));
    let report = run_one(&expecting_what_the_rule_returns(&fits, "a@x.test"));
    assert!(report.ok(), "{}", render(&report));
}

#[test]
fn an_attribute_over_its_ad_limit_fails_even_when_expected() {
    // 129 non-BMP letters: 129 characters, 258 UTF-16 code units; mail allows 256.
    let mail = "𝔸".repeat(129);
    let got = mismatches(&expecting_what_the_rule_returns("Sales", &mail));
    assert_eq!(
        got,
        vec![
            "attributes.mail: expected at most 256 UTF-16 code units (Active Directory's limit for mail) \
             got 10-probe.rhai returned mail of 258 UTF-16 code units (129 characters); Active Directory allows at most 256 \
             (an emoji or other character outside the Basic Multilingual Plane counts 2) \
             (group 00000000-0000-4000-8000-0000000000aa)"
                .to_string()
        ]
    );
    let fits = "𝔸".repeat(128);
    let report = run_one(&expecting_what_the_rule_returns("Sales", &fits));
    assert!(report.ok(), "{}", render(&report));
}
