//! Compares what the rules decided for a case with what the case expects, field by field.
//! Values are rendered for people: strings quoted, lists in brackets, `(cleared)` for an attribute
//! the rule clears and `(not returned)` for one it leaves alone.

use std::collections::BTreeMap;

use crate::rules::{format_duration, output, Decision, DesiredGroup, EvalError, MemberPolicy};

use super::spec::{Expect, ExpectedGroup, ExpectedValue};
use super::Mismatch;

const NOT_RETURNED: &str = "(not returned)";
const SKIP: &str = "skip";

pub(super) fn compare(expect: &Expect, result: &Result<Decision, EvalError>) -> Vec<Mismatch> {
    match (expect, result) {
        (Expect::Skip, Ok(Decision::OutOfScope)) | (Expect::Keep, Ok(Decision::Keep)) => Vec::new(),
        (Expect::DeleteAfter(want), Ok(Decision::DeleteAfter { secs })) if want == secs => {
            Vec::new()
        }
        (Expect::Error(wanted), Err(e)) if e.to_string().contains(wanted.as_str()) => Vec::new(),
        (Expect::Error(wanted), outcome) => vec![mismatch(
            "error",
            format!("an error containing {wanted:?}"),
            match outcome {
                Err(e) => quote(&e.to_string()),
                Ok(d) => format!("no error ({})", outcome_text(d)),
            },
        )],
        (Expect::Group(want), Ok(Decision::Desired(got))) => group_mismatches(want, got),
        (Expect::Group(_), Ok(Decision::OutOfScope)) => vec![mismatch(
            "result",
            "a group",
            "skip (no rule's scope() was true, or map() returned ())",
        )],
        (want, got) => vec![mismatch(
            "result",
            expectation_text(want),
            match got {
                Ok(d) => outcome_text(d),
                Err(e) => error_text(e),
            },
        )],
    }
}

/// What a case expects, as `writeback test` shows it.
fn expectation_text(e: &Expect) -> String {
    match e {
        Expect::Skip => SKIP.to_string(),
        Expect::Keep => "keep".to_string(),
        Expect::DeleteAfter(secs) => format!("delete after {}", format_duration(*secs)),
        Expect::Error(w) => format!("an error containing {w:?}"),
        Expect::Group(_) => "a group".to_string(),
    }
}

/// What a rule decided, as `writeback test` shows it.
fn outcome_text(d: &Decision) -> String {
    match d {
        Decision::OutOfScope => SKIP.to_string(),
        Decision::Keep => "keep".to_string(),
        Decision::DeleteAfter { secs } => format!("delete after {}", format_duration(*secs)),
        Decision::Desired(g) => summary(g),
    }
}

fn group_mismatches(want: &ExpectedGroup, got: &DesiredGroup) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut text = |field: &str, want: &Option<String>, got: &str| {
        if let Some(w) = want {
            if w != got {
                out.push(mismatch(field, quote(w), quote(got)));
            }
        }
    };
    text("rule", &want.rule, &got.rule);
    text("parent", &want.parent, &got.parent);
    text("cn", &want.cn, &got.cn);
    text(
        "owners",
        &want.owners,
        got.owners.as_deref().unwrap_or_default(),
    );
    if let Some(w) = &want.member_of {
        // DNs compare as AD compares them: case and spacing do not matter.
        let key = |dns: &[String]| -> Vec<String> {
            let mut k: Vec<String> = dns.iter().map(|d| crate::ad::dn::key(d)).collect();
            k.sort();
            k
        };
        if key(w) != key(&got.member_of) {
            out.push(mismatch(
                "member_of",
                values_text(w),
                values_text(&got.member_of),
            ));
        }
    }
    if let Some(m) = want.members {
        if m != got.members {
            out.push(mismatch(
                "members",
                quote(policy(m)),
                quote(policy(got.members)),
            ));
        }
    }
    compare_attributes(
        "attributes",
        &want.attributes,
        &got.attributes,
        want,
        &mut out,
    );
    compare_attributes("on_create", &want.on_create, &got.on_create, want, &mut out);
    out
}

fn compare_attributes(
    key: &str,
    wanted_set: &BTreeMap<String, ExpectedValue>,
    got_set: &BTreeMap<String, Option<Vec<String>>>,
    want: &ExpectedGroup,
    out: &mut Vec<Mismatch>,
) {
    for (name, wanted) in wanted_set {
        let actual = got_set
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v);
        let same = match (wanted, actual) {
            (ExpectedValue::Cleared, Some(None)) => true,
            (ExpectedValue::Values(w), Some(Some(a))) => same_values(w, a),
            _ => false,
        };
        if !same {
            out.push(mismatch(
                &format!("{key}.{name}"),
                expected_text(wanted),
                actual_text(actual),
            ));
        }
    }
    if want.exact_attributes {
        for (name, value) in got_set {
            if !wanted_set.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                out.push(mismatch(
                    &format!("{key}.{name}"),
                    NOT_RETURNED,
                    actual_text(Some(value)),
                ));
            }
        }
    }
}

/// One mismatch per value longer than AD allows (`cn`, `attributes.<name>`), naming the rule
/// file, the group and the limit.
pub(super) fn over_limits(got: &DesiredGroup, group: &serde_json::Value) -> Vec<Mismatch> {
    let id = group
        .get("id")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("<no id>");
    output::over_known_limits(got)
        .into_iter()
        .map(|e| {
            let field = if e.attr == "cn" {
                "cn".to_string()
            } else {
                format!("attributes.{}", e.attr)
            };
            mismatch(
                &field,
                format!(
                    "at most {} UTF-16 code units (Active Directory's limit for {})",
                    e.max, e.attr
                ),
                format!("{e} (group {id})"),
            )
        })
        .collect()
}

/// AD keeps no order among the values of an attribute: compare as sets (both sides hold no
/// repeats, the host drops them).
fn same_values(want: &[String], got: &[String]) -> bool {
    let mut w: Vec<&String> = want.iter().collect();
    let mut g: Vec<&String> = got.iter().collect();
    w.sort();
    g.sort();
    w == g
}

fn mismatch(field: &str, expected: impl Into<String>, actual: impl Into<String>) -> Mismatch {
    Mismatch {
        field: field.to_string(),
        expected: expected.into(),
        actual: actual.into(),
    }
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn values_text(values: &[String]) -> String {
    match values {
        [one] => quote(one),
        many => format!(
            "[{}]",
            many.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn expected_text(v: &ExpectedValue) -> String {
    match v {
        ExpectedValue::Cleared => super::spec::CLEARED.to_string(),
        ExpectedValue::Values(values) => values_text(values),
    }
}

fn actual_text(v: Option<&Option<Vec<String>>>) -> String {
    match v {
        None => NOT_RETURNED.to_string(),
        Some(None) => super::spec::CLEARED.to_string(),
        Some(Some(values)) => values_text(values),
    }
}

fn policy(m: MemberPolicy) -> &'static str {
    match m {
        MemberPolicy::OnPremises => "on-premises",
        MemberPolicy::Flatten => "flatten",
        MemberPolicy::None => "none",
    }
}

/// One line for a group a rule returned: `cn "X" in "OU=..." (rule 10-x.rhai)`.
fn summary(g: &DesiredGroup) -> String {
    format!("cn {:?} in {:?} (rule {})", g.cn, g.parent, g.rule)
}

fn error_text(e: &EvalError) -> String {
    format!("error {}", quote(&e.to_string()))
}
