//! Every user and group object the emulator emits, checked against the Graph v1.0 CSDL
//! subset copied to `conformance/schema/` (source in `conformance/SOURCES.md`): each property
//! must exist on the entity (following `BaseType` to directoryObject/entity) with a JSON value
//! matching its EDM type. Annotations (`@odata.*`, `members@delta`, `@removed`) are exempt.
//! The tenant is `graph-emulator generate --users 50 --groups 30 --seed 7`.

#[allow(dead_code)]
#[path = "../conformance/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};
use support::{delta_round, Emulator, Graph};

// ---------------------------------------------------------------------------------------------
// A tiny CSDL scanner (no XML library): tags, a few attributes, the current type.

#[derive(Debug, Clone)]
struct Prop {
    ty: String,
    nullable: bool,
}

#[derive(Debug, Default)]
struct TypeDef {
    base: Option<String>,
    open: bool,
    entity: bool,
    props: BTreeMap<String, Prop>,
    nav: BTreeMap<String, Prop>,
}

#[derive(Debug, Default)]
struct Schema {
    types: BTreeMap<String, TypeDef>,
    enums: BTreeSet<String>,
}

/// `Name="x"` in a tag (a leading space keeps `Type` from matching `BaseType`/`OpenType`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// `graph.user` / `microsoft.graph.user` → `user`; EDM and Collection() types unchanged.
fn local(ty: &str) -> String {
    ty.trim_start_matches("microsoft.graph.")
        .trim_start_matches("graph.")
        .to_string()
}

impl Schema {
    fn parse(xml: &str) -> Schema {
        let mut schema = Schema::default();
        let mut current: Option<String> = None;
        let mut rest = xml;
        while let Some(lt) = rest.find('<') {
            rest = &rest[lt..];
            if rest.starts_with("<!--") {
                rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
                continue;
            }
            let Some(gt) = rest.find('>') else { break };
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            let self_closing = tag.ends_with('/');
            let tag_name = tag
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("");
            match tag_name {
                "EntityType" | "ComplexType" => {
                    let Some(name) = attr(tag, "Name") else {
                        continue;
                    };
                    schema.types.insert(
                        name.to_string(),
                        TypeDef {
                            base: attr(tag, "BaseType").map(local),
                            open: attr(tag, "OpenType") == Some("true"),
                            entity: tag_name == "EntityType",
                            ..Default::default()
                        },
                    );
                    current = (!self_closing).then(|| name.to_string());
                }
                "" if tag.starts_with("/EntityType") || tag.starts_with("/ComplexType") => {
                    current = None;
                }
                "EnumType" => {
                    if let Some(name) = attr(tag, "Name") {
                        schema.enums.insert(name.to_string());
                    }
                }
                "Property" | "NavigationProperty" => {
                    let (Some(cur), Some(name), Some(ty)) =
                        (current.as_ref(), attr(tag, "Name"), attr(tag, "Type"))
                    else {
                        continue;
                    };
                    let prop = Prop {
                        ty: ty.to_string(),
                        nullable: attr(tag, "Nullable") != Some("false"),
                    };
                    if let Some(t) = schema.types.get_mut(cur) {
                        let map = if tag_name == "Property" {
                            &mut t.props
                        } else {
                            &mut t.nav
                        };
                        map.insert(name.to_string(), prop);
                    }
                }
                _ => {}
            }
        }
        schema
    }

    /// The type and its base types, most derived first.
    fn chain(&self, name: &str) -> Vec<&TypeDef> {
        let mut out = Vec::new();
        let mut next = Some(name.to_string());
        while let Some(n) = next {
            match self.types.get(&n) {
                Some(t) if out.len() < 16 => {
                    next = t.base.clone();
                    out.push(t);
                }
                _ => break,
            }
        }
        out
    }

    /// A structural or navigation property of `ty` or a base type.
    fn property(&self, ty: &str, name: &str) -> Option<(&Prop, bool)> {
        self.chain(ty).into_iter().find_map(|t| {
            t.props
                .get(name)
                .map(|p| (p, false))
                .or_else(|| t.nav.get(name).map(|p| (p, true)))
        })
    }

    /// Names of the structural properties of `ty` and its bases.
    fn structural(&self, ty: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .chain(ty)
            .into_iter()
            .flat_map(|t| t.props.keys().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn is_annotation(key: &str) -> bool {
    key.contains('@')
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Check `v` against EDM type `ty`; push "<path>: <problem>".
fn check_value(s: &Schema, ty: &str, nullable: bool, v: &Value, path: &str, out: &mut Vec<String>) {
    if v.is_null() {
        if !nullable {
            out.push(format!("{path}: null, but {ty} is Nullable=\"false\""));
        }
        return;
    }
    if let Some(inner) = ty
        .strip_prefix("Collection(")
        .and_then(|t| t.strip_suffix(')'))
    {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_value(s, inner, false, item, &format!("{path}[{i}]"), out);
                }
            }
            other => out.push(format!(
                "{path}: {ty} needs an array, got {}",
                json_kind(other)
            )),
        }
        return;
    }
    let want = |ok: bool, what: &str, out: &mut Vec<String>| {
        if !ok {
            out.push(format!(
                "{path}: {ty} needs {what}, got {}: {v}",
                json_kind(v)
            ));
        }
    };
    match ty {
        "Edm.String" | "Edm.Binary" | "Edm.Duration" => want(v.is_string(), "a string", out),
        "Edm.Boolean" => want(v.is_boolean(), "a boolean", out),
        "Edm.Int16" | "Edm.Int32" | "Edm.Int64" | "Edm.Byte" => {
            want(v.is_i64() || v.is_u64(), "an integer", out)
        }
        "Edm.Double" | "Edm.Single" | "Edm.Decimal" => want(v.is_number(), "a number", out),
        "Edm.Guid" => want(
            v.as_str().is_some_and(|g| uuid::Uuid::parse_str(g).is_ok()),
            "a GUID string",
            out,
        ),
        "Edm.DateTimeOffset" => want(
            v.as_str().is_some_and(|d| {
                time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339)
                    .is_ok()
            }),
            "an RFC 3339 date-time string",
            out,
        ),
        "Edm.Date" | "Edm.TimeOfDay" => want(v.is_string(), "a string", out),
        other => {
            let name = local(other);
            if s.enums.contains(&name) {
                want(v.is_string(), "an enum member string", out);
            } else if let Some(def) = s.types.get(&name) {
                match v {
                    Value::Object(_) if def.entity => check_object(s, &name, v, path, out),
                    Value::Object(_) => check_object(s, &name, v, path, out),
                    other => out.push(format!(
                        "{path}: {ty} needs an object, got {}",
                        json_kind(other)
                    )),
                }
            } else {
                out.push(format!("{path}: type {ty} is not in the schema subset"));
            }
        }
    }
}

/// Every non-annotation key of `obj` must be a property of `ty` (or a base) with a matching value.
fn check_object(s: &Schema, ty: &str, obj: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = obj.as_object() else {
        out.push(format!("{path}: expected an object"));
        return;
    };
    let open = s.chain(ty).iter().any(|t| t.open && !t.entity);
    for (k, v) in map {
        if is_annotation(k) {
            continue;
        }
        let p = format!("{path}.{k}");
        match s.property(ty, k) {
            Some((prop, _nav)) => check_value(s, &prop.ty, prop.nullable, v, &p, out),
            None if open => {}
            None => out.push(format!("{p}: no property '{k}' on {ty} or its base types")),
        }
    }
}

/// The entity type of an emitted item: its `@odata.type`, else the endpoint's.
fn entity_of(item: &Value, default: &str) -> String {
    item.get("@odata.type")
        .and_then(Value::as_str)
        .map(|t| local(t.trim_start_matches('#')))
        .unwrap_or_else(|| default.to_string())
}

/// Collects objects and the problems found in them (one entry per distinct problem, with how
/// often it occurred and where first).
#[derive(Default)]
struct Walk {
    problems: BTreeMap<String, (usize, String)>,
    checked: BTreeMap<String, usize>,
}

impl Walk {
    fn object(&mut self, s: &Schema, default_ty: &str, v: &Value, origin: &str) {
        let ty = entity_of(v, default_ty);
        let mut found = Vec::new();
        if ty != "user" && ty != "group" {
            found.push(format!("unexpected object type {ty}"));
        }
        *self.checked.entry(ty.clone()).or_default() += 1;
        check_object(s, &ty, v, &ty, &mut found);
        for f in found {
            let e = self
                .problems
                .entry(f)
                .or_insert_with(|| (0, origin.to_string()));
            e.0 += 1;
        }
    }

    fn page(&mut self, s: &Schema, default_ty: &str, page: &Value, origin: &str) {
        for (i, item) in page["value"].as_array().into_iter().flatten().enumerate() {
            self.object(s, default_ty, item, &format!("{origin} value[{i}]"));
        }
    }
}

fn schema() -> Schema {
    let s = Schema::parse(&support::read_text("schema/v1.0-directory-subset.csdl.xml"));
    for t in ["entity", "directoryObject", "user", "group"] {
        assert!(s.types.contains_key(t), "schema subset lacks {t}");
    }
    s
}

#[test]
fn scanner_reads_the_subset() {
    let s = schema();
    assert_eq!(s.types["group"].base.as_deref(), Some("directoryObject"));
    assert_eq!(s.types["directoryObject"].base.as_deref(), Some("entity"));
    let (id, _) = s.property("group", "id").expect("id via entity");
    assert_eq!((id.ty.as_str(), id.nullable), ("Edm.String", false));
    let (gt, _) = s.property("group", "groupTypes").expect("groupTypes");
    assert_eq!(
        (gt.ty.as_str(), gt.nullable),
        ("Collection(Edm.String)", false)
    );
    assert!(s.property("group", "members").is_some_and(|(_, nav)| nav));
    assert!(s.property("user", "onPremisesSecurityIdentifier").is_some());
    assert!(s.property("user", "writebackConfiguration").is_none());
    assert!(s.enums.contains("groupAccessType"));
    assert!(s.structural("user").len() > 50);

    let mut d = Vec::new();
    check_object(
        &s,
        "group",
        &json!({"id": "x", "groupTypes": null, "mailEnabled": "yes", "nope": 1, "members@delta": []}),
        "$",
        &mut d,
    );
    assert_eq!(
        d,
        vec![
            "$.groupTypes: null, but Collection(Edm.String) is Nullable=\"false\"",
            "$.mailEnabled: Edm.Boolean needs a boolean, got string: \"yes\"",
            "$.nope: no property 'nope' on group or its base types",
        ]
    );
    let mut d = Vec::new();
    check_object(
        &s,
        "user",
        &json!({"createdDateTime": "2021-03-12 10:36:14", "onPremisesExtensionAttributes": {"extensionAttribute1": "a"}}),
        "$",
        &mut d,
    );
    assert_eq!(d.len(), 1, "{d:?}");
}

// ---------------------------------------------------------------------------------------------
// The walk over a generated tenant

fn generated_tenant() -> Value {
    let out = Command::new(support::binary())
        .args(["generate", "--users", "50", "--groups", "30", "--seed", "7"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run graph-emulator generate: {e}"));
    assert!(
        out.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("generate prints JSON")
}

/// Follow nextLinks of a collection; returns the pages.
async fn list_pages(g: &Graph, url: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = Some(url.to_string());
    while let Some(u) = next {
        let page = g.get_ok(&u).await;
        next = page
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
        pages.push(page);
        assert!(pages.len() < 200, "list {url} does not end");
    }
    pages
}

/// Properties a writeback client selects (reference notes §2).
const GROUP_SELECT: &str = "id,displayName,description,groupTypes,mailEnabled,securityEnabled,mail,mailNickname,proxyAddresses,visibility,createdDateTime,deletedDateTime,onPremisesSyncEnabled,onPremisesSecurityIdentifier,onPremisesSamAccountName,onPremisesDomainName,onPremisesNetBiosName,onPremisesLastSyncDateTime,onPremisesProvisioningErrors,securityIdentifier,isAssignableToRole,membershipRule,membershipRuleProcessingState";
const USER_SELECT: &str = "id,displayName,userPrincipalName,mail,mailNickname,givenName,surname,accountEnabled,userType,createdDateTime,onPremisesSecurityIdentifier,onPremisesImmutableId,onPremisesDistinguishedName,onPremisesSamAccountName,onPremisesUserPrincipalName,onPremisesDomainName,onPremisesSyncEnabled,onPremisesLastSyncDateTime,onPremisesExtensionAttributes,securityIdentifier,proxyAddresses,businessPhones";

#[tokio::test]
async fn every_emitted_user_and_group_matches_the_schema() {
    let s = schema();
    let tenant = generated_tenant();
    let tenant_id = tenant["tenantId"].as_str().expect("tenantId").to_string();
    let client = tenant["apps"][0]["clientId"]
        .as_str()
        .expect("clientId")
        .to_string();
    let secret = tenant["apps"][0]["clientSecret"]
        .as_str()
        .expect("clientSecret")
        .to_string();
    let users: Vec<String> = tenant["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect();
    let groups: Vec<(String, bool, Vec<String>)> = tenant["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let unified = g["groupTypes"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == "Unified"));
            let members = g["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect();
            (
                g["id"].as_str().unwrap_or_default().to_string(),
                unified,
                members,
            )
        })
        .collect();
    assert_eq!((users.len(), groups.len()), (50, 30));

    let emu = Emulator::start(
        &tenant,
        &[
            "--page-size",
            "20",
            "--delta-page-size",
            "7",
            "--member-page-size",
            "10",
        ],
    );
    let http = support::http();
    let token = support::token(&http, &emu, &tenant_id, &client, &secret).await;
    let g = Graph { http, token };
    let mut w = Walk::default();
    let all_user = s.structural("user").join(",");
    let all_group = s.structural("group").join(",");

    // Lists, with and without $select, through every page.
    for (set, ty, sel) in [
        ("users", "user", USER_SELECT),
        ("groups", "group", GROUP_SELECT),
    ] {
        for url in [
            emu.graph(&format!("/{set}")),
            emu.graph(&format!("/{set}?$select={sel}")),
        ] {
            for (i, p) in list_pages(&g, &url).await.iter().enumerate() {
                w.page(&s, ty, p, &format!("GET {url} page {i}"));
            }
        }
    }

    // Single objects, with and without $select (all structural properties on a few).
    for (i, id) in users.iter().enumerate() {
        let url = emu.graph(&format!("/users/{id}"));
        w.object(&s, "user", &g.get_ok(&url).await, &format!("GET {url}"));
        if i % 10 == 0 {
            for sel in [USER_SELECT, all_user.as_str()] {
                let url = emu.graph(&format!("/users/{id}?$select={sel}"));
                w.object(
                    &s,
                    "user",
                    &g.get_ok(&url).await,
                    &format!("GET /users/{id}?$select=…"),
                );
            }
            let url = emu.graph(&format!("/users/{id}/memberOf"));
            for (j, p) in list_pages(&g, &url).await.iter().enumerate() {
                w.page(&s, "group", p, &format!("GET {url} page {j}"));
            }
        }
    }
    for (i, (id, _, _)) in groups.iter().enumerate() {
        let url = emu.graph(&format!("/groups/{id}"));
        w.object(&s, "group", &g.get_ok(&url).await, &format!("GET {url}"));
        if i % 5 == 0 {
            for sel in [GROUP_SELECT, all_group.as_str()] {
                let url = emu.graph(&format!("/groups/{id}?$select={sel}"));
                w.object(
                    &s,
                    "group",
                    &g.get_ok(&url).await,
                    &format!("GET /groups/{id}?$select=…"),
                );
            }
        }
        let url = emu.graph(&format!("/groups/{id}/members"));
        for (j, p) in list_pages(&g, &url).await.iter().enumerate() {
            w.page(&s, "user", p, &format!("GET {url} page {j}"));
        }
    }

    // Full delta rounds, with and without $select.
    let starts = [
        ("users", "user", emu.graph("/users/delta")),
        (
            "users",
            "user",
            emu.graph(&format!("/users/delta?$select={USER_SELECT}")),
        ),
        ("groups", "group", emu.graph("/groups/delta")),
        (
            "groups",
            "group",
            emu.graph(&format!("/groups/delta?$select={GROUP_SELECT},members")),
        ),
    ];
    let mut links = Vec::new();
    for (set, ty, url) in &starts {
        let (pages, link) = delta_round(&g, url, &[]).await;
        for (i, p) in pages.iter().enumerate() {
            w.page(&s, ty, p, &format!("{set} delta round page {i}"));
        }
        links.push((*set, *ty, link));
    }

    // Changes, then incremental rounds (default and return=minimal).
    let (m365, _, m365_members) = groups
        .iter()
        .find(|(_, u, m)| *u && !m.is_empty())
        .expect("a Microsoft 365 group with members");
    let (sec, _, _) = groups
        .iter()
        .find(|(id, u, _)| !*u && id != m365)
        .expect("a security group");
    g.write(
        Method::PATCH,
        &emu.graph(&format!("/users/{}", users[1])),
        Some(&json!({"displayName": "Renamed User", "jobTitle": null})),
    )
    .await;
    g.write(
        Method::PATCH,
        &emu.graph(&format!("/groups/{sec}")),
        Some(&json!({"description": "changed", "displayName": "Renamed Group"})),
    )
    .await;
    g.write(
        Method::DELETE,
        &emu.graph(&format!("/groups/{m365}/members/{}/$ref", m365_members[0])),
        None,
    )
    .await;
    let outsider = users
        .iter()
        .find(|u| !m365_members.contains(u))
        .expect("a user outside the group");
    let r = json!({"@odata.id": emu.graph(&format!("/directoryObjects/{outsider}"))});
    g.write(
        Method::POST,
        &emu.graph(&format!("/groups/{m365}/members/$ref")),
        Some(&r),
    )
    .await;
    let created = json!({"displayName": "Created Group", "mailEnabled": false, "mailNickname": "created-group", "securityEnabled": true, "groupTypes": []});
    let reply = g
        .write(Method::POST, &emu.graph("/groups"), Some(&created))
        .await;
    w.object(&s, "group", &reply.body, "POST /groups (201 body)");
    g.write(
        Method::DELETE,
        &emu.graph(&format!("/users/{}", users[2])),
        None,
    )
    .await;
    g.write(Method::DELETE, &emu.graph(&format!("/groups/{sec}")), None)
        .await;
    let deleted = list_pages(
        &g,
        &emu.graph("/directory/deletedItems/microsoft.graph.user"),
    )
    .await;
    for (i, p) in deleted.iter().enumerate() {
        w.page(&s, "user", p, &format!("deletedItems users page {i}"));
    }
    let by_ids = json!({"ids": [users[3], users[4], groups[0].0], "types": ["user", "group"]});
    let reply = g
        .write(
            Method::POST,
            &emu.graph("/directoryObjects/getByIds"),
            Some(&by_ids),
        )
        .await;
    w.page(&s, "user", &reply.body, "POST /directoryObjects/getByIds");

    for (set, ty, link) in &links {
        for prefer in [&[][..], &[("Prefer", "return=minimal")][..]] {
            let (pages, _) = delta_round(&g, link, prefer).await;
            let n: usize = pages
                .iter()
                .map(|p| p["value"].as_array().map_or(0, Vec::len))
                .sum();
            assert!(n > 0, "{set}: the incremental round shows the changes");
            for (i, p) in pages.iter().enumerate() {
                w.page(
                    &s,
                    ty,
                    p,
                    &format!("{set} incremental round {prefer:?} page {i}"),
                );
            }
        }
    }

    let users_seen = w.checked.get("user").copied().unwrap_or(0);
    let groups_seen = w.checked.get("group").copied().unwrap_or(0);
    assert!(
        users_seen > 300 && groups_seen > 150,
        "walk too small: {:?}",
        w.checked
    );
    let problems: Vec<String> = w
        .problems
        .iter()
        .map(|(p, (n, first))| format!("{p}  ({n}x, first in {first})"))
        .collect();
    assert!(
        problems.is_empty(),
        "{} distinct schema problems in emulator output (over {:?} objects):\n  {}",
        problems.len(),
        w.checked,
        problems.join("\n  ")
    );
}
