//! The emulator's responses compared by *shape* with Microsoft's documented examples (copied
//! under `conformance/fixtures/`, sources in `conformance/SOURCES.md`): the same top-level keys
//! and annotations, exactly one of nextLink/deltaLink, `@removed` in the same places with the
//! same `reason`, the same value types, links rooted at the emulator, and item keys within
//! those the fixture shows plus `id`. Each scenario runs on a tenant built to mirror the doc's.

#[allow(dead_code)]
#[path = "../conformance/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{json, Value};
use support::{
    delta_round, fixture, lenient_fixture, token_request, Emulator, Graph, CLIENT_ID,
    CLIENT_SECRET, GRAPH_SCOPE, TENANT_ID,
};

// ---------------------------------------------------------------------------------------------
// Shape comparison

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One object standing for every element of a fixture array: union of the keys, non-null
/// values preferred, nested objects and arrays merged the same way.
fn merge_shapes(values: &[Value]) -> Value {
    let mut out: Option<Value> = None;
    for v in values {
        out = Some(match (out.take(), v) {
            (None, v) => v.clone(),
            (Some(Value::Object(mut a)), Value::Object(b)) => {
                for (k, bv) in b {
                    let merged = match a.remove(k) {
                        Some(av) => merge_shapes(&[av, bv.clone()]),
                        None => bv.clone(),
                    };
                    a.insert(k.clone(), merged);
                }
                Value::Object(a)
            }
            (Some(Value::Array(mut a)), Value::Array(b)) => {
                a.extend(b.iter().cloned());
                Value::Array(a)
            }
            (Some(Value::Null), v) => v.clone(),
            (Some(a), _) => a,
        });
    }
    out.unwrap_or(Value::Null)
}

/// Keys whose value is an open map (only "object of strings" is checked).
const OPEN_OBJECTS: &[&str] = &["headers"];

/// Compare `actual` with `expected` (a fixture) by shape and push "<json path>: <problem>".
/// Objects: every actual key must appear in the fixture (`id` is always allowed, as doc
/// examples are truncated) with a compatible type; fixture keys may be missing. Arrays: each
/// element against the merged shape of the fixture's elements. `null` on either side is
/// compatible with anything (a nullable property).
fn shape(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    shape_with(expected, actual, path, &[], out);
}

/// [`shape`] that also accepts the keys in `extra` (at any depth) without a fixture counterpart.
fn shape_with(expected: &Value, actual: &Value, path: &str, extra: &[&str], out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, av) in a {
                let p = format!("{path}.{k}");
                match e.get(k) {
                    Some(_) if OPEN_OBJECTS.contains(&k.as_str()) => match av {
                        Value::Object(m) => {
                            for (hk, hv) in m {
                                if !hv.is_string() {
                                    out.push(format!(
                                        "{p}.{hk}: expected string, got {}",
                                        type_name(hv)
                                    ));
                                }
                            }
                        }
                        other => {
                            out.push(format!("{p}: expected object, got {}", type_name(other)))
                        }
                    },
                    Some(ev) => shape_with(ev, av, &p, extra, out),
                    None if extra.contains(&k.as_str()) => {}
                    None if k == "id" => {
                        if !av.is_string() {
                            out.push(format!("{p}: expected string, got {}", type_name(av)));
                        }
                    }
                    None => out.push(format!("{p}: key not in the fixture")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.is_empty() {
                if !a.is_empty() {
                    out.push(format!(
                        "{path}: fixture array is empty, got {} elements",
                        a.len()
                    ));
                }
                return;
            }
            let merged = merge_shapes(e);
            for (i, av) in a.iter().enumerate() {
                shape_with(&merged, av, &format!("{path}[{i}]"), extra, out);
            }
        }
        (e, a) if type_name(e) != type_name(a) => {
            out.push(format!(
                "{path}: expected {}, got {}",
                type_name(e),
                type_name(a)
            ));
        }
        _ => {}
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Same key set at the top level (used for envelopes and error bodies).
fn same_keys(
    expected: &Value,
    actual: &Value,
    path: &str,
    allow_extra: &[&str],
    out: &mut Vec<String>,
) {
    let e = keys(expected);
    let a = keys(actual);
    for k in e.difference(&a) {
        out.push(format!("{path}.{k}: missing (the fixture has it)"));
    }
    for k in a.difference(&e) {
        if !allow_extra.contains(&k.as_str()) {
            out.push(format!("{path}.{k}: key not in the fixture"));
        }
    }
}

fn check(label: &str, diffs: Vec<String>, actual: &Value) {
    assert!(
        diffs.is_empty(),
        "{label}: shape differs from the fixture:\n  {}\nactual: {}",
        diffs.join("\n  "),
        serde_json::to_string_pretty(actual).unwrap_or_default()
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Next,
    Delta,
    /// The fixture is truncated: either link is fine, but exactly one.
    Either,
}

/// A delta/collection page against a fixture page: envelope keys, context and links rooted
/// at the emulator, `value` items by shape, `id` on every item, `@removed` placement.
fn delta_page(label: &str, fx: &Value, page: &Value, base: &str, set: &str, link: Link) {
    let mut d = Vec::new();
    let link_keys = ["@odata.nextLink", "@odata.deltaLink"];
    let mut fx_env = fx.clone();
    let mut page_env = page.clone();
    if link == Link::Either {
        for k in link_keys {
            fx_env.as_object_mut().map(|m| m.remove(k));
            page_env.as_object_mut().map(|m| m.remove(k));
        }
    }
    same_keys(&fx_env, &page_env, "$", &[], &mut d);
    let next = page.get("@odata.nextLink").and_then(Value::as_str);
    let delta = page.get("@odata.deltaLink").and_then(Value::as_str);
    match (next, delta, link) {
        (Some(_), None, Link::Next | Link::Either) | (None, Some(_), Link::Delta | Link::Either) => {}
        _ => d.push(format!("$: expected exactly one of nextLink/deltaLink (nextLink {next:?}, deltaLink {delta:?})")),
    }
    let root = format!("{base}/v1.0/");
    if let Some(n) = next {
        if !n.starts_with(&format!("{root}{set}/delta?$skiptoken="))
            && !n.starts_with(&format!("{root}{set}?"))
        {
            d.push(format!("$.@odata.nextLink: not rooted at {root}{set}: {n}"));
        }
    }
    if let Some(l) = delta {
        if !l.starts_with(&format!("{root}{set}/delta?$deltatoken=")) {
            d.push(format!(
                "$.@odata.deltaLink: not rooted at {root}{set}/delta?$deltatoken=: {l}"
            ));
        }
    }
    match page.get("@odata.context").and_then(Value::as_str) {
        Some(c) if c.starts_with(&format!("{base}/v1.0/$metadata#{set}")) => {}
        other => d.push(format!(
            "$.@odata.context: expected {base}/v1.0/$metadata#{set}…, got {other:?}"
        )),
    }
    let empty = Vec::new();
    let items = page
        .get("value")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let fx_items = fx
        .get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let fx_item = merge_shapes(&fx_items);
    for (i, item) in items.iter().enumerate() {
        let p = format!("$.value[{i}]");
        if !item.get("id").is_some_and(Value::is_string) {
            d.push(format!("{p}.id: missing"));
        }
        if item.get("@removed").is_some() {
            removed_item(item, &p, &mut d);
            continue;
        }
        shape(&fx_item, item, &p, &mut d);
        if let Some(ms) = item.get("members@delta").and_then(Value::as_array) {
            for (j, m) in ms.iter().enumerate() {
                member_entry(m, &format!("{p}.members@delta[{j}]"), &mut d);
            }
        }
    }
    check(label, d, page);
}

/// A removed object: exactly `id` and `@removed: {reason: changed|deleted}`.
fn removed_item(item: &Value, p: &str, d: &mut Vec<String>) {
    let k = keys(item);
    let want: BTreeSet<String> = ["id", "@removed"].iter().map(|s| s.to_string()).collect();
    if k != want {
        d.push(format!(
            "{p}: a removed object carries only id and @removed, got {k:?}"
        ));
    }
    reason(
        item.get("@removed"),
        &["changed", "deleted"],
        &format!("{p}.@removed"),
        d,
    );
}

fn reason(v: Option<&Value>, allowed: &[&str], p: &str, d: &mut Vec<String>) {
    match v {
        Some(Value::Object(m)) if m.len() == 1 => match m.get("reason").and_then(Value::as_str) {
            Some(r) if allowed.contains(&r) => {}
            other => d.push(format!(
                "{p}.reason: expected one of {allowed:?}, got {other:?}"
            )),
        },
        other => d.push(format!("{p}: expected {{\"reason\": …}}, got {other:?}")),
    }
}

/// A `members@delta` entry: `@odata.type`, `id`, optionally `@removed: {reason: deleted}`.
fn member_entry(m: &Value, p: &str, d: &mut Vec<String>) {
    for k in keys(m) {
        if !["@odata.type", "id", "@removed"].contains(&k.as_str()) {
            d.push(format!(
                "{p}.{k}: key not in the fixture's members@delta entries"
            ));
        }
    }
    match m.get("@odata.type").and_then(Value::as_str) {
        Some("#microsoft.graph.user" | "#microsoft.graph.group") => {}
        other => d.push(format!("{p}.@odata.type: got {other:?}")),
    }
    if !m.get("id").is_some_and(Value::is_string) {
        d.push(format!("{p}.id: missing"));
    }
    if m.get("@removed").is_some() {
        reason(m.get("@removed"), &["deleted"], &format!("{p}.@removed"), d);
    }
}

fn items(page: &Value) -> Vec<Value> {
    page.get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn all_items(pages: &[Value]) -> Vec<Value> {
    pages.iter().flat_map(items).collect()
}

/// Member ids of a group item's `members@delta`: (added, removed).
fn member_ids(item: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut added = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for m in item
        .get("members@delta")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = m["id"].as_str().unwrap_or_default().to_string();
        if m.get("@removed").is_some() {
            removed.insert(id);
        } else {
            added.insert(id);
        }
    }
    (added, removed)
}

#[test]
fn shape_helper_reports_json_paths() {
    let fx = json!({"value": [{"displayName": "a", "members@delta": [{"@odata.type": "x", "id": "1"}]}, {"description": null}]});
    let ok = json!({"value": [{"id": "g", "displayName": "b", "description": "d", "members@delta": [{"id": "2", "@odata.type": "y"}]}]});
    let mut d = Vec::new();
    shape(&fx, &ok, "$", &mut d);
    assert!(d.is_empty(), "{d:?}");
    let bad = json!({"value": [{"displayName": 1, "mail": "x", "members@delta": [{"id": "2", "extra": true}]}]});
    let mut d = Vec::new();
    shape(&fx, &bad, "$", &mut d);
    assert_eq!(
        d,
        vec![
            "$.value[0].displayName: expected string, got number",
            "$.value[0].mail: key not in the fixture",
            "$.value[0].members@delta[0].extra: key not in the fixture",
        ]
    );
    let cleaned = lenient_fixture("delta/delta-query-groups_06_large-group-page1.txt");
    assert_eq!(
        cleaned["value"][0]["members@delta"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let batch = lenient_fixture("batch/json-batching_response.txt");
    assert_eq!(batch["responses"].as_array().map(Vec::len), Some(5));
}

// ---------------------------------------------------------------------------------------------
// Tenants mirroring the doc scenarios

fn app() -> Value {
    json!([{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}])
}

fn user(id: &str, display: &str, given: &str, surname: &str) -> Value {
    let nick = display.to_lowercase().replace(' ', "");
    json!({
        "id": id, "displayName": display, "givenName": given, "surname": surname,
        "mailNickname": nick, "userPrincipalName": format!("{nick}@contoso.onmicrosoft.com"),
        "accountEnabled": true,
    })
}

fn security(id: &str, name: &str, description: Option<&str>, members: &[&str]) -> Value {
    let mut g = json!({
        "id": id, "displayName": name, "groupTypes": [], "mailEnabled": false,
        "securityEnabled": true, "mailNickname": name.to_lowercase().replace(' ', ""), "members": members,
    });
    if let Some(d) = description {
        g["description"] = json!(d);
    }
    g
}

fn m365(id: &str, name: &str, description: &str, members: &[&str]) -> Value {
    let nick = name.to_lowercase().replace(' ', "");
    json!({
        "id": id, "displayName": name, "description": description, "groupTypes": ["Unified"],
        "mailEnabled": true, "securityEnabled": false, "mailNickname": nick,
        "mail": format!("{nick}@contoso.onmicrosoft.com"), "visibility": "Public", "members": members,
    })
}

fn tenant(users: Vec<Value>, groups: Vec<Value>) -> Value {
    json!({"tenantId": TENANT_ID, "domain": "contoso.onmicrosoft.com", "apps": app(), "users": users, "groups": groups})
}

// Ids from delta-query-groups (the 35-character doc typo replaced by its 36-character form).
const U_A: &str = "693acd06-2877-4339-8ade-b704261fe7a0";
const U_B: &str = "49320844-be99-4164-8167-87ff5d047ace";
const U_C: &str = "632f6bb2-3ec8-4c1f-9073-0027a8c68593";
const U_D: &str = "3c8ac7c4-d365-4df9-abfa-356a9dd7763c";
const U_E: &str = "37de1ae3-408f-4702-8636-20824abda004";
const U_F: &str = "c08a463b-7b8a-40a4-aa31-f9bf690b9551";
const U_G: &str = "23423fa6-821e-44b2-aae4-d039d33884c2";
const U_H: &str = "71cc716a-8147-4397-a5ba-b2105951cc0b";
const G_ALL: &str = "c2f798fd-f95d-4623-8824-63aec21fffff";
const G_HR: &str = "ec22655c-8eb2-432a-b4ea-8b8a254bffff";
const G_MARK8: &str = "2e5807ce-58f3-4a94-9b37-ffff2e085957";
const G_SALES: &str = "421e797f-9406-4934-b778-4908421e3505";
const G_EMPLOYEES: &str = "bed7f0d4-750e-4e7e-ffff-169002d06fc9";
const G_REMOTE: &str = "421e797f-9406-ffff-b778-4908421e3505";

fn doc_users() -> Vec<Value> {
    [U_A, U_B, U_C, U_D, U_E, U_F, U_G, U_H]
        .iter()
        .enumerate()
        .map(|(i, id)| user(id, &format!("Member {i}"), "Member", &format!("{i}")))
        .collect()
}

/// delta-query-groups: six groups in the doc's page order.
fn groups_tenant() -> Value {
    tenant(
        doc_users(),
        vec![
            m365(
                G_ALL,
                "All Company",
                "This is the default group for everyone in the network",
                &[U_A, U_B],
            ),
            security(G_HR, "sg-HR", Some("All HR personnel"), &[]),
            security(
                G_MARK8,
                "Mark 8 Project Team",
                Some("Mark 8 Project Team"),
                &[U_C],
            ),
            security(
                G_SALES,
                "Sales and Marketing",
                Some("Sales and Marketing"),
                &[U_D, U_B],
            ),
            security(G_EMPLOYEES, "All Employees", None, &[]),
            security(G_REMOTE, "Remote living", Some("Remote living"), &[]),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Delta: groups

#[tokio::test]
async fn groups_delta_rounds_match_the_documented_exchanges() {
    let emu = Emulator::start(&groups_tenant(), &["--delta-page-size", "2"]);
    let g = Graph::new(&emu).await;
    let base = emu.base.as_str();

    // Initial round: initial → nextLink → final page with the deltaLink.
    let start = emu.graph("/groups/delta?$select=displayName,description,members");
    let (pages, link) = delta_round(&g, &start, &[]).await;
    assert_eq!(pages.len(), 3, "6 groups at 2 per page");
    let fx = [
        ("delta-query-groups_01_initial", Link::Next),
        ("delta-query-groups_02_nextlink", Link::Next),
        (
            "delta-query-groups_03_final-nextlink-deltalink",
            Link::Delta,
        ),
    ];
    for ((name, l), page) in fx.iter().zip(&pages) {
        delta_page(
            name,
            &fixture(&format!("delta/{name}.json")),
            page,
            base,
            "groups",
            *l,
        );
    }
    let first = all_items(&pages);
    let want: BTreeMap<&str, BTreeSet<String>> = [
        (G_ALL, vec![U_A, U_B]),
        (G_HR, vec![]),
        (G_MARK8, vec![U_C]),
        (G_SALES, vec![U_D, U_B]),
        (G_EMPLOYEES, vec![]),
        (G_REMOTE, vec![]),
    ]
    .into_iter()
    .map(|(g, m)| (g, m.into_iter().map(str::to_string).collect()))
    .collect();
    let got: BTreeMap<&str, BTreeSet<String>> = first
        .iter()
        .map(|i| (i["id"].as_str().unwrap_or_default(), member_ids(i).0))
        .collect();
    assert_eq!(got, want);
    // A group without members has no members@delta (fixture _01, sg-HR).
    let hr = first
        .iter()
        .find(|i| i["id"] == G_HR)
        .cloned()
        .unwrap_or_default();
    assert!(hr.get("members@delta").is_none(), "{hr}");
    // A never-set property is omitted (fixture _03, All Employees has no description).
    let emp = first
        .iter()
        .find(|i| i["id"] == G_EMPLOYEES)
        .cloned()
        .unwrap_or_default();
    assert!(emp.get("description").is_none(), "{emp}");

    // deltaLink round without changes: value [] and a deltaLink.
    let (quiet, link) = delta_round(&g, &link, &[]).await;
    assert_eq!(quiet.len(), 1);
    delta_page(
        "delta-query-groups_04_deltalink-empty",
        &fixture("delta/delta-query-groups_04_deltalink-empty.json"),
        &quiet[0],
        base,
        "groups",
        Link::Delta,
    );
    assert_eq!(items(&quiet[0]), Vec::<Value>::new());

    // deltaLink round with changes: rename + member removed + member added (fixture _05).
    g.write(Method::PATCH, &emu.graph(&format!("/groups/{G_MARK8}")), Some(&json!({"displayName": "TestGroup3", "description": "A test group for change tracking"}))).await;
    g.write(
        Method::DELETE,
        &emu.graph(&format!("/groups/{G_MARK8}/members/{U_C}/$ref")),
        None,
    )
    .await;
    let r = json!({"@odata.id": format!("{base}/v1.0/directoryObjects/{U_E}")});
    g.write(
        Method::POST,
        &emu.graph(&format!("/groups/{G_MARK8}/members/$ref")),
        Some(&r),
    )
    .await;
    let (changed, link) = delta_round(&g, &link, &[]).await;
    assert_eq!(changed.len(), 1);
    delta_page(
        "delta-query-groups_05_deltalink-changes",
        &fixture("delta/delta-query-groups_05_deltalink-changes.json"),
        &changed[0],
        base,
        "groups",
        Link::Delta,
    );
    let its = items(&changed[0]);
    assert_eq!(its.len(), 1, "{its:?}");
    assert_eq!(its[0]["id"], G_MARK8);
    assert_eq!(its[0]["displayName"], "TestGroup3");
    let (added, removed) = member_ids(&its[0]);
    assert_eq!(added, BTreeSet::from([U_E.to_string()]));
    assert_eq!(removed, BTreeSet::from([U_C.to_string()]));

    // Deleted groups: Microsoft 365 → @removed changed (soft), security → deleted (permanent).
    g.write(
        Method::DELETE,
        &emu.graph(&format!("/groups/{G_ALL}")),
        None,
    )
    .await;
    g.write(Method::DELETE, &emu.graph(&format!("/groups/{G_HR}")), None)
        .await;
    let (gone, _) = delta_round(&g, &link, &[]).await;
    let fx = fixture("delta/delta-query-users_05_deltalink-changes-removed.json");
    for p in &gone {
        delta_page(
            "deleted groups (users_05 rule)",
            &fx,
            p,
            base,
            "groups",
            Link::Either,
        );
    }
    let reasons: BTreeMap<String, Value> = all_items(&gone)
        .into_iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_string(),
                i["@removed"]["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        BTreeMap::from([
            (G_ALL.to_string(), json!("changed")),
            (G_HR.to_string(), json!("deleted"))
        ])
    );
}

#[tokio::test]
async fn large_group_is_split_and_repeated_across_pages() {
    let large = security(
        G_MARK8,
        "LargeGroup",
        Some("A group containing thousands of users"),
        &[U_A, U_B, U_C, U_D, U_E],
    );
    let emu = Emulator::start(
        &tenant(doc_users(), vec![large]),
        &["--member-page-size", "2"],
    );
    let g = Graph::new(&emu).await;
    let base = emu.base.as_str();

    let start = emu.graph("/groups/delta?$select=displayName,description,members");
    let (pages, link) = delta_round(&g, &start, &[]).await;
    assert_eq!(pages.len(), 3, "5 members at 2 per page");
    let p1 = lenient_fixture("delta/delta-query-groups_06_large-group-page1.txt");
    let p2 = lenient_fixture("delta/delta-query-groups_07_large-group-page2.txt");
    delta_page(
        "delta-query-groups_06_large-group-page1",
        &p1,
        &pages[0],
        base,
        "groups",
        Link::Next,
    );
    delta_page(
        "delta-query-groups_07_large-group-page2",
        &p2,
        &pages[1],
        base,
        "groups",
        Link::Next,
    );
    let mut seen = BTreeSet::new();
    for p in &pages {
        let its = items(p);
        assert_eq!(its.len(), 1, "the group fills the page: {p}");
        assert_eq!(its[0]["id"], G_MARK8, "the same group is repeated");
        let (added, _) = member_ids(&its[0]);
        assert!(!added.is_empty() && added.len() <= 2, "{added:?}");
        assert!(seen.is_disjoint(&added), "slices overlap: {added:?}");
        seen.extend(added);
    }
    assert_eq!(
        seen,
        [U_A, U_B, U_C, U_D, U_E]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // A deltaLink round with removals and additions is split the same way (fixture _06 shows
    // a removal on the first page).
    for m in [U_A, U_B] {
        g.write(
            Method::DELETE,
            &emu.graph(&format!("/groups/{G_MARK8}/members/{m}/$ref")),
            None,
        )
        .await;
    }
    for m in [U_F, U_G, U_H] {
        let r = json!({"@odata.id": format!("{base}/v1.0/directoryObjects/{m}")});
        g.write(
            Method::POST,
            &emu.graph(&format!("/groups/{G_MARK8}/members/$ref")),
            Some(&r),
        )
        .await;
    }
    let (pages, _) = delta_round(&g, &link, &[]).await;
    assert_eq!(pages.len(), 3, "5 member changes at 2 per page");
    delta_page(
        "delta-query-groups_06 (deltaLink round)",
        &p1,
        &pages[0],
        base,
        "groups",
        Link::Next,
    );
    delta_page(
        "delta-query-groups_07 (deltaLink round)",
        &p2,
        &pages[1],
        base,
        "groups",
        Link::Next,
    );
    let mut added = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for it in all_items(&pages) {
        assert_eq!(it["id"], G_MARK8);
        let (a, r) = member_ids(&it);
        added.extend(a);
        removed.extend(r);
    }
    assert_eq!(removed, [U_A, U_B].iter().map(|s| s.to_string()).collect());
    assert_eq!(
        added,
        [U_F, U_G, U_H].iter().map(|s| s.to_string()).collect()
    );
}

// ---------------------------------------------------------------------------------------------
// Delta: users

const T1: &str = "ffff7b1a-13b6-477b-8c0c-380905cd99f7";
const T2: &str = "605d1257-ffff-40b6-8e6f-528a53f5dc55";
const T3: &str = "d8c37826-ffff-4cae-b348-e2725b1e814b";
const T4: &str = "8b1ee412-cd8f-4d59-ffff-24010edb9f1f";
const T5: &str = "25dcffff-959e-4ece-9973-e5d9b800e8cc";
const T6: &str = "f6ede700-27d0-4c42-bfb9-4dffff43c74a";

fn users_tenant() -> Value {
    tenant(
        vec![
            user(T1, "Testuser1", "John", "Doe"),
            user(T2, "Testuser2", "Jane", "Doe"),
            user(T3, "Testuser3", "Pat", "Doe"),
            user(T4, "Testuser4", "Meghan", "Doe"),
            user(T5, "Testuser5", "Al", "Doe"),
            user(T6, "Testuser6", "Sam", "Doe"),
        ],
        vec![],
    )
}

#[tokio::test]
async fn users_delta_rounds_match_the_documented_exchanges() {
    let emu = Emulator::start(&users_tenant(), &["--delta-page-size", "2"]);
    let g = Graph::new(&emu).await;
    let base = emu.base.as_str();

    let start = emu.graph("/users/delta?$select=displayName,givenName,surname");
    let (pages, link) = delta_round(&g, &start, &[]).await;
    assert_eq!(pages.len(), 3);
    let fx = [
        ("delta-query-users_01_initial", Link::Next),
        ("delta-query-users_02_nextlink", Link::Next),
        ("delta-query-users_03_final-nextlink-deltalink", Link::Delta),
    ];
    for ((name, l), page) in fx.iter().zip(&pages) {
        delta_page(
            name,
            &fixture(&format!("delta/{name}.json")),
            page,
            base,
            "users",
            *l,
        );
    }
    assert_eq!(all_items(&pages).len(), 6);

    let (quiet, link) = delta_round(&g, &link, &[]).await;
    assert_eq!(quiet.len(), 1);
    delta_page(
        "delta-query-users_04_deltalink-empty",
        &fixture("delta/delta-query-users_04_deltalink-empty.json"),
        &quiet[0],
        base,
        "users",
        Link::Delta,
    );
    assert!(items(&quiet[0]).is_empty());

    g.write(
        Method::PATCH,
        &emu.graph(&format!("/users/{T5}")),
        Some(&json!({"displayName": "Testuser7", "givenName": "Joe"})),
    )
    .await;
    g.write(Method::DELETE, &emu.graph(&format!("/users/{T6}")), None)
        .await;
    let (changed, _) = delta_round(&g, &link, &[]).await;
    assert_eq!(changed.len(), 1);
    delta_page(
        "delta-query-users_05_deltalink-changes-removed",
        &fixture("delta/delta-query-users_05_deltalink-changes-removed.json"),
        &changed[0],
        base,
        "users",
        Link::Delta,
    );
    let its = items(&changed[0]);
    let by_id: BTreeMap<&str, &Value> = its
        .iter()
        .map(|i| (i["id"].as_str().unwrap_or_default(), i))
        .collect();
    assert_eq!(by_id.keys().copied().collect::<Vec<_>>(), {
        let mut v = vec![T5, T6];
        v.sort();
        v
    });
    assert_eq!(by_id[T5]["displayName"], "Testuser7");
    assert_eq!(
        by_id[T6],
        &json!({"id": T6, "@removed": {"reason": "changed"}}),
        "a deleted user is soft deleted"
    );
}

// ---------------------------------------------------------------------------------------------
// $select, default properties, Prefer: return=minimal

#[tokio::test]
async fn select_and_default_shapes() {
    let mut adele = user(
        "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
        "Adele Vance",
        "Adele",
        "Vance",
    );
    for (k, v) in [
        ("businessPhones", json!(["+1 425 555 0109"])),
        ("jobTitle", json!("Retail Manager")),
        ("mail", json!("AdeleV@contoso.onmicrosoft.com")),
        ("mobilePhone", json!("+1 425 555 0109")),
        ("officeLocation", json!("18/2111")),
        ("preferredLanguage", json!("en-US")),
        ("userPrincipalName", json!("AdeleV@contoso.onmicrosoft.com")),
        ("department", json!("Retail")),
        ("onPremisesSecurityIdentifier", json!("S-1-5-21-1-2-3-1101")),
    ] {
        adele[k] = v;
    }
    let mut all = m365(
        G_ALL,
        "All Company",
        "This is the default group for everyone in the network",
        &[U_A, U_B],
    );
    all["description"] = Value::Null;
    all["createdDateTime"] = json!("2021-03-12T10:36:14Z");
    let mut users = doc_users();
    users.push(adele);
    let emu = Emulator::start(&tenant(users, vec![all]), &[]);
    let g = Graph::new(&emu).await;
    let base = emu.base.as_str();

    // $select on groups (group-delta Response 2).
    let (pages, _) = delta_round(
        &g,
        &emu.graph("/groups/delta?$select=displayName,description,mailNickname"),
        &[],
    )
    .await;
    let fx = fixture("delta/group-delta_v1_response2_select.json");
    for p in &pages {
        delta_page(
            "group-delta_v1_response2_select",
            &fx,
            p,
            base,
            "groups",
            Link::Either,
        );
    }
    let it = &all_items(&pages)[0];
    assert_eq!(
        it.get("description"),
        Some(&Value::Null),
        "a selected property set to null is returned as null: {it}"
    );

    // $select on users (user-delta Example 2).
    let (pages, _) = delta_round(
        &g,
        &emu.graph("/users/delta?$select=displayName,jobTitle,mobilePhone"),
        &[],
    )
    .await;
    let fx = fixture("delta/user-delta_v1_example2_select.json");
    for p in &pages {
        delta_page(
            "user-delta_v1_example2_select",
            &fx,
            p,
            base,
            "users",
            Link::Either,
        );
    }

    // Users without $select: only the default set (user-delta Example 1) — no department,
    // no on-premises properties.
    let (pages, _) = delta_round(&g, &emu.graph("/users/delta"), &[]).await;
    let fx = fixture("delta/user-delta_v1_example1_default.json");
    for p in &pages {
        delta_page(
            "user-delta_v1_example1_default",
            &fx,
            p,
            base,
            "users",
            Link::Either,
        );
    }
    let adele = all_items(&pages)
        .into_iter()
        .find(|i| i["displayName"] == "Adele Vance")
        .unwrap_or_default();
    let mut d = Vec::new();
    same_keys(&fx["value"][0], &adele, "$.value[Adele]", &[], &mut d);
    check(
        "user-delta_v1_example1_default (all default properties of a fully set user)",
        d,
        &adele,
    );

    // Groups without $select: the doc example is truncated, so its keys must be a subset of
    // ours (with the same types), and members@delta is included by default.
    let (pages, _) = delta_round(&g, &emu.graph("/groups/delta"), &[]).await;
    let fx = fixture("delta/group-delta_v1_response1_default.json");
    let it = all_items(&pages)
        .into_iter()
        .find(|i| i["id"] == G_ALL)
        .unwrap_or_default();
    let mut d = Vec::new();
    for k in keys(&fx["value"][0]) {
        match it.get(&k) {
            None => d.push(format!("$.value[0].{k}: missing (the default set has it)")),
            Some(v) => shape(&fx["value"][0][&k], v, &format!("$.value[0].{k}"), &mut d),
        }
    }
    check("group-delta_v1_response1_default", d, &it);
}

#[tokio::test]
async fn prefer_return_minimal_returns_only_changed_properties() {
    let emu = Emulator::start(
        &tenant(
            vec![user(T1, "Adele Vance", "Adele", "Vance")],
            vec![security(G_HR, "All Company", Some("old"), &[])],
        ),
        &[],
    );
    let g = Graph::new(&emu).await;
    let base = emu.base.as_str();
    let minimal = [("Prefer", "return=minimal")];

    let (_, glink) = delta_round(
        &g,
        &emu.graph("/groups/delta?$select=displayName,description,mailNickname"),
        &[],
    )
    .await;
    let (_, ulink) = delta_round(
        &g,
        &emu.graph("/users/delta?$select=displayName,jobTitle,mobilePhone"),
        &[],
    )
    .await;
    g.write(
        Method::PATCH,
        &emu.graph(&format!("/groups/{G_HR}")),
        Some(&json!({"displayName": "Everyone", "description": null})),
    )
    .await;
    g.write(
        Method::PATCH,
        &emu.graph(&format!("/users/{T1}")),
        Some(&json!({"displayName": "Vance Adele", "jobTitle": "Product Marketing Manager"})),
    )
    .await;

    let (pages, _) = delta_round(&g, &glink, &minimal).await;
    let fx = fixture("delta/group-delta_v1_response3_minimal.json");
    for p in &pages {
        delta_page(
            "group-delta_v1_response3_minimal",
            &fx,
            p,
            base,
            "groups",
            Link::Either,
        );
    }
    let its = all_items(&pages);
    assert_eq!(
        its,
        vec![json!({"id": G_HR, "displayName": "Everyone", "description": null})]
    );

    let (pages, _) = delta_round(&g, &ulink, &minimal).await;
    let fx = fixture("delta/user-delta_v1_example3_minimal.json");
    for p in &pages {
        delta_page(
            "user-delta_v1_example3_minimal",
            &fx,
            p,
            base,
            "users",
            Link::Either,
        );
    }
    let its = all_items(&pages);
    assert_eq!(
        its,
        vec![
            json!({"id": T1, "displayName": "Vance Adele", "jobTitle": "Product Marketing Manager"})
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

fn aad_error(label: &str, fx: &Value, body: &Value, allow_extra: &[&str]) {
    let mut d = Vec::new();
    same_keys(fx, body, "$", allow_extra, &mut d);
    shape_with(fx, body, "$", allow_extra, &mut d);
    let desc = body["error_description"].as_str().unwrap_or_default();
    for part in [
        "AADSTS",
        "\r\nTrace ID: ",
        "\r\nCorrelation ID: ",
        "\r\nTimestamp: ",
    ] {
        if !desc.contains(part) {
            d.push(format!("$.error_description: lacks {part:?}"));
        }
    }
    check(label, d, body);
}

#[tokio::test]
async fn token_success_and_error_bodies() {
    let emu = Emulator::start(&users_tenant(), &[]);
    let http = support::http();
    let url = emu.token_url(TENANT_ID);
    let form = |secret: &'static str, scope: &'static str| {
        vec![
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ]
    };

    let (status, body) = token_request(&http, &url, &form(CLIENT_SECRET, GRAPH_SCOPE)).await;
    assert_eq!(status, 200, "{body}");
    let fx = fixture("auth/token_response_success.json");
    let mut d = Vec::new();
    // Real responses also carry ext_expires_in.
    same_keys(&fx, &body, "$", &["ext_expires_in"], &mut d);
    shape_with(&fx, &body, "$", &["ext_expires_in"], &mut d);
    check("token_response_success", d, &body);
    assert_eq!(body["token_type"], "Bearer");

    // Wrong secret: 401 invalid_client AADSTS7000215 (observed real body).
    let (status, body) = token_request(&http, &url, &form("wrong", GRAPH_SCOPE)).await;
    let fx = fixture("auth/observed_token_error_invalid-client-401.json");
    assert_eq!(status, 401, "{body}");
    aad_error("observed_token_error_invalid-client-401", &fx, &body, &[]);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));

    // The doc's error example: scope https://foo.microsoft.com/.default → 400 invalid_scope
    // AADSTS70011 (the reference sample adds error_uri).
    let (status, body) = token_request(
        &http,
        &url,
        &form(CLIENT_SECRET, "https://foo.microsoft.com/.default"),
    )
    .await;
    let fx = fixture("auth/token_response_error_invalid-scope.json");
    assert_eq!(status, 400, "{body}");
    aad_error(
        "token_response_error_invalid-scope",
        &fx,
        &body,
        &["error_uri"],
    );
    aad_error(
        "token_response_error_reference-sample",
        &fixture("auth/token_response_error_reference-sample.json"),
        &body,
        &[],
    );
    assert_eq!(body["error"], "invalid_scope", "{body}");
    assert_eq!(body["error_codes"], json!([70011]), "{body}");
}

// ---------------------------------------------------------------------------------------------
// Graph error bodies

/// `YYYY-MM-DDTHH:MM:SS` as in every innerError.date example.
fn is_inner_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// A Graph error against a fixture: same keys at `error` level, innerError keys within the
/// directory set (date, request-id, client-request-id), request-id matching the header.
fn graph_error(label: &str, fx: &Value, reply: &support::Reply, extra_inner: &[&str]) {
    let body = &reply.body;
    let mut d = Vec::new();
    same_keys(fx, body, "$", &[], &mut d);
    same_keys(&fx["error"], &body["error"], "$.error", &[], &mut d);
    let mut allowed: Vec<&str> = vec!["date", "request-id", "client-request-id"];
    allowed.extend(extra_inner);
    shape_with(fx, body, "$", &allowed, &mut d);
    let inner = &body["error"]["innerError"];
    for k in keys(inner) {
        if !allowed.contains(&k.as_str()) && fx["error"]["innerError"].get(&k).is_none() {
            d.push(format!("$.error.innerError.{k}: key not in the fixture"));
        }
    }
    for k in ["date", "request-id"] {
        if !inner.get(k).is_some_and(Value::is_string) {
            d.push(format!("$.error.innerError.{k}: missing"));
        }
    }
    if !inner["date"].as_str().is_some_and(is_inner_date) {
        d.push(format!(
            "$.error.innerError.date: not YYYY-MM-DDTHH:MM:SS: {}",
            inner["date"]
        ));
    }
    if inner["request-id"].as_str() != reply.header("request-id") {
        d.push(format!(
            "$.error.innerError.request-id: differs from the request-id header {:?}",
            reply.header("request-id")
        ));
    }
    check(label, d, body);
}

#[tokio::test]
async fn graph_error_bodies() {
    let emu = Emulator::start(&groups_tenant(), &[]);
    let g = Graph::new(&emu).await;

    // Observed real response: deltatoken without `$`.
    let fx = fixture("errors/observed_deltatoken-without-dollar-400.json");
    let r = g
        .send(
            Method::GET,
            &emu.graph("/groups/delta?deltatoken=latest"),
            &[("client-request-id", "f7d27604-49ba-7cfd-b151-19d46c093e3f")],
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    graph_error("observed_deltatoken-without-dollar-400", &fx, &r, &[]);
    assert_eq!(r.body["error"]["code"], fx["error"]["code"]);
    assert_eq!(r.body["error"]["message"], fx["error"]["message"]);
    assert_eq!(
        r.body["error"]["innerError"]["client-request-id"],
        "f7d27604-49ba-7cfd-b151-19d46c093e3f"
    );

    // /users/$count without ConsistencyLevel.
    let fx = fixture("errors/advanced-queries_count-segment-without-consistencylevel-400.json");
    let r = g.get(&emu.graph("/users/$count")).await;
    assert_eq!(r.status, 400);
    graph_error(
        "advanced-queries_count-segment-without-consistencylevel-400",
        &fx,
        &r,
        &[],
    );
    assert_eq!(r.body["error"]["code"], fx["error"]["code"]);
    assert_eq!(r.body["error"]["message"], fx["error"]["message"]);

    // Unknown object: Request_ResourceNotFound, same shape.
    let r = g
        .get(&emu.graph("/groups/00000000-0000-0000-0000-00000000dead"))
        .await;
    assert_eq!(r.status, 404);
    graph_error(
        "Request_ResourceNotFound (shape of the observed 400)",
        &fx,
        &r,
        &[],
    );
    assert_eq!(r.body["error"]["code"], "Request_ResourceNotFound");

    // No token / a well-formed token with a wrong signature.
    let http = support::http();
    let forged = match g.token.rsplit_once('.') {
        Some((signed, _)) => format!("Bearer {signed}.c2lnbmF0dXJlLW5vdC1ieS10aGUtZW11bGF0b3I"),
        None => panic!("the emulator's access token is not a JWT: {}", g.token),
    };
    for (auth, name) in [
        (None, "observed_invalidauthenticationtoken-empty-401"),
        (
            Some(forged.as_str()),
            "observed_invalidauthenticationtoken-validation-401",
        ),
    ] {
        let mut req = http.get(emu.graph("/users"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let r = support::Reply {
            status,
            headers,
            body,
        };
        let fx = fixture(&format!("errors/{name}.json"));
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        graph_error(name, &fx, &r, &[]);
        assert_eq!(r.body["error"]["code"], fx["error"]["code"], "{name}");
        assert_eq!(r.body["error"]["message"], fx["error"]["message"], "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Throttling

#[tokio::test]
async fn throttling_429_body_and_retry_after() {
    let emu = Emulator::start(
        &groups_tenant(),
        &[
            "--fault-429-rate",
            "1",
            "--seed",
            "7",
            "--retry-after",
            "10",
        ],
    );
    let g = Graph::new(&emu).await;
    let fx = fixture("errors/throttling_429_body.json");
    let http_fx = support::read_text("fixtures/errors/throttling_429_response.http");
    assert!(http_fx.contains("Retry-After: 10"));

    let r = g
        .get(&emu.graph("/groups/delta?$select=displayName,members"))
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("10"));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
    let mut d = Vec::new();
    same_keys(&fx, &r.body, "$", &[], &mut d);
    same_keys(&fx["error"], &r.body["error"], "$.error", &[], &mut d);
    // Directory errors also carry client-request-id in innerError.
    same_keys(
        &fx["error"]["innerError"],
        &r.body["error"]["innerError"],
        "$.error.innerError",
        &["client-request-id"],
        &mut d,
    );
    shape_with(&fx, &r.body, "$", &["client-request-id"], &mut d);
    check("throttling_429_body", d, &r.body);
    let e = &r.body["error"];
    assert_eq!(e["code"], "TooManyRequests");
    assert_eq!(e["message"], "Please retry again later.");
    assert_eq!(e["innerError"]["code"], "429");
    assert_eq!(e["innerError"]["status"], "429");
    assert_eq!(e["innerError"]["message"], "Please retry after");
    assert!(e["innerError"]["date"].as_str().is_some_and(is_inner_date));

    // Inside $batch each item is throttled on its own: batch 200, item 429 + Retry-After.
    let batch = json!({"requests": [{"id": "1", "method": "GET", "url": "/users"}]});
    let r = g
        .send(Method::POST, &emu.graph("/$batch"), &[], Some(&batch))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let item = &r.body["responses"][0];
    assert_eq!(item["status"], 429, "{item}");
    let ra = item["headers"].as_object().and_then(|h| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .map(|(_, v)| v.clone())
    });
    assert_eq!(ra, Some(json!("10")), "{item}");
    let mut d = Vec::new();
    shape_with(
        &fx,
        &item["body"],
        "$.responses[0].body",
        &["client-request-id"],
        &mut d,
    );
    check("throttled $batch item", d, item);
}

// ---------------------------------------------------------------------------------------------
// $batch

#[tokio::test]
async fn batch_response_shape() {
    let emu = Emulator::start(&groups_tenant(), &[]);
    let g = Graph::new(&emu).await;
    let base = emu.base.as_str();

    // The doc's request with its URLs pointed at directory resources (same ids, methods,
    // headers and the PATCH body with its Content-Type).
    let mut req = fixture("batch/json-batching_request.json");
    let urls: BTreeMap<&str, String> = [
        (
            "1",
            "/users/00000000-0000-0000-0000-00000000dead".to_string(),
        ),
        ("2", "/groups?$select=displayName".to_string()),
        ("3", format!("/groups/{G_SALES}/members")),
        ("4", format!("/users/{U_A}")),
        (
            "5",
            "users?$select=id,displayName,userPrincipalName&$count=true".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    for r in req["requests"].as_array_mut().into_iter().flatten() {
        let id = r["id"].as_str().unwrap_or_default().to_string();
        r["url"] = json!(urls[id.as_str()]);
    }
    let reply = g
        .send(Method::POST, &emu.graph("/$batch"), &[], Some(&req))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = &reply.body;

    let fx = lenient_fixture("batch/json-batching_response.txt");
    let mut d = Vec::new();
    same_keys(&fx, body, "$", &[], &mut d);
    // Item envelopes by shape; item bodies answer other requests than the doc's, so only
    // their kind is compared here (item 5 below has the doc's own shape).
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        for r in v["responses"].as_array_mut().into_iter().flatten() {
            if let Some(m) = r.as_object_mut() {
                if let Some(b) = m.get_mut("body") {
                    if b.is_object() {
                        *b = json!({});
                    }
                }
            }
        }
        v
    };
    shape(&strip(&fx), &strip(body), "$", &mut d);
    check("json-batching_response", d, body);

    let by_id: BTreeMap<String, Value> = body["responses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["id"].as_str().unwrap_or_default().to_string(), r.clone()))
        .collect();
    assert_eq!(
        by_id.keys().cloned().collect::<Vec<_>>(),
        vec!["1", "2", "3", "4", "5"]
    );
    assert_eq!(by_id["1"]["status"], 404);
    assert_eq!(
        by_id["1"]["body"]["error"]["code"],
        "Request_ResourceNotFound"
    );
    assert!(by_id["1"]["body"]["error"]["innerError"]["request-id"].is_string());
    assert_eq!(by_id["4"]["status"], 204);
    assert!(
        by_id["4"].get("body").is_none_or(Value::is_null),
        "{}",
        by_id["4"]
    );
    for id in ["2", "3", "5"] {
        assert_eq!(by_id[id]["status"], 200, "{}", by_id[id]);
        let ctx = by_id[id]["body"]["@odata.context"]
            .as_str()
            .unwrap_or_default();
        assert!(ctx.starts_with(&format!("{base}/v1.0/$metadata#")), "{ctx}");
    }
    let five = &by_id["5"]["body"];
    assert!(
        five["@odata.count"].is_u64(),
        "ConsistencyLevel + $count=true: {five}"
    );
    let mut d = Vec::new();
    shape(
        &fx["responses"][2]["body"],
        five,
        "$.responses[5].body",
        &mut d,
    );
    check("json-batching_response item 5", d, five);
    // The PATCH of item 4 happened.
    let u = g
        .get_ok(&emu.graph(&format!("/users/{U_A}?$select=city")))
        .await;
    assert_eq!(u["city"], "Redmond");
}

// ---------------------------------------------------------------------------------------------
// Properties stored outside the directory

#[tokio::test]
async fn property_stored_outside_the_directory_is_not_implemented() {
    // delta-query-overview: `GET /users?$select=skills` → 501 NotImplemented.
    let emu = Emulator::start(&users_tenant(), &[]);
    let g = Graph::new(&emu).await;
    let fx = fixture("delta/delta-query-overview_501-not-implemented.json");
    let r = g.get(&emu.graph("/users?$select=skills")).await;
    assert_eq!(r.status, 501, "{}", r.body);
    graph_error("delta-query-overview_501-not-implemented", &fx, &r, &[]);
    assert_eq!(r.body["error"]["code"], "NotImplemented");
    assert_eq!(r.body["error"]["message"], fx["error"]["message"]);
}
