//! `writeback check --online`: what the first sync needs, asked without writing anything. A
//! Graph token and the first page of each delta query as the rules configure it; a bind to each
//! DC; each managed OU there, and AD's own answer to whether the account may create groups in
//! it (`allowedChildClassesEffective`) and write what the host always writes on them
//! (`allowedAttributesEffective`, on a group below when there is one); `member` on each link
//! target; whether the devices can be read (a warning when not: a sync works without them).
//! Each failure names the setting and what to do.

use crate::ad::conn::AdSettings;
use crate::ad::{AdConn, Scope};
use crate::config::Config;
use crate::graph::delta;
use crate::rules::RuleSet;
use crate::sync::resolve;
use crate::sync::types::ANCHOR_ATTRS;

/// One thing checked: what, and the problem when it is not as the sync needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub problem: Option<String>,
    /// Something to know that does not fail the check (a sync works, with less).
    pub warning: Option<String>,
}

impl Step {
    fn ok(what: impl Into<String>) -> Step {
        Step {
            what: what.into(),
            problem: None,
            warning: None,
        }
    }

    fn failed(what: impl Into<String>, problem: impl Into<String>) -> Step {
        Step {
            what: what.into(),
            problem: Some(problem.into()),
            warning: None,
        }
    }

    fn warned(what: impl Into<String>, warning: impl Into<String>) -> Step {
        Step {
            what: what.into(),
            problem: None,
            warning: Some(warning.into()),
        }
    }
}

/// Attributes the host writes on every group it creates, whatever the rules say.
fn always_written() -> Vec<String> {
    let mut v = vec!["member".to_string()];
    v.extend(ANCHOR_ATTRS.map(String::from));
    v
}

/// Every check, in order; the AD part runs even when Graph fails, and the other way round.
pub async fn check(config: &Config, rules: &RuleSet) -> Vec<Step> {
    let mut written = always_written();
    let mut out = graph(config, rules, &mut written).await;
    written.sort_by_key(|a| a.to_ascii_lowercase());
    written.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    out.extend(ad(config, &written).await);
    out
}

/// The attributes the rules write on the groups of a delta page (`attributes`, `on_create`,
/// `owners`): what the account must be allowed to write besides [`always_written`].
fn attributes_written(rules: &RuleSet, page: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let items = page.get("value").and_then(serde_json::Value::as_array);
    for item in items.into_iter().flatten() {
        let Some(obj) = item.as_object() else {
            continue;
        };
        if obj.contains_key("@removed") {
            continue;
        }
        // The group as rules see it: its properties, no members (their rights are `member`).
        let mut group: serde_json::Map<String, serde_json::Value> = obj
            .iter()
            .filter(|(k, _)| !k.contains('@'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        group.insert("deleted".into(), false.into());
        group.insert("members".into(), serde_json::Value::Array(Vec::new()));
        if let Ok(crate::rules::Decision::Desired(d)) =
            rules.evaluate(&serde_json::Value::Object(group))
        {
            out.extend(d.attributes.into_keys());
            out.extend(d.on_create.into_keys());
            out.extend(d.owners);
        }
    }
    out
}

async fn graph(config: &Config, rules: &RuleSet, written: &mut Vec<String>) -> Vec<Step> {
    let client = match crate::setup::graph_client(config) {
        Ok(c) => c,
        Err(e) => return vec![Step::failed("Graph client (`graph`)", e.to_string())],
    };
    let mut out = Vec::new();
    match client.tokens().token().await {
        Ok(_) => out.push(Step::ok(format!(
            "Graph token for app {} (`graph.client_id`)",
            config.graph.client_id
        ))),
        Err(e) => {
            out.push(Step::failed(
                format!("Graph token for app {} (`graph.client_id`, the credential)", config.graph.client_id),
                format!("{e}; check the tenant id, the client id and the secret or certificate registered on the app"),
            ));
            return out;
        }
    }
    let base = client.graph_base();
    let declared = rules.graph_properties();
    let joins = &config.members;
    let mut device_groups = 0;
    // (label, query, whether the page's groups tell what the rules write)
    for (what, query, groups) in [
        (
            "groups",
            delta::groups_delta_query(base, &resolve::with_join(&declared.groups, &joins.groups)),
            true,
        ),
        (
            "users",
            delta::users_delta_query(base, &resolve::with_join(&declared.users, &joins.users)),
            false,
        ),
    ] {
        let label = format!("Graph {what} delta, first page (`$select` as the rules need it)");
        out.push(match client.get_json(&query.url).await {
            Ok(page) => {
                let n = page
                    .get("value")
                    .and_then(serde_json::Value::as_array)
                    .map_or(0, Vec::len);
                if groups {
                    written.extend(attributes_written(rules, &page));
                    device_groups = groups_with_devices(&page);
                }
                Step::ok(format!("{label}: {n} {what}"))
            }
            Err(e) => {
                let hint = match e.status() {
                    Some(403) => "; grant the app GroupMember.Read.All and User.Read.All (application permissions, admin consent): docs/OPERATIONS.md, \"The Entra app registration\"",
                    Some(400) => "; a property the rules declare (GRAPH_GROUP_PROPERTIES / GRAPH_USER_PROPERTIES) or a join key is one Graph refuses",
                    _ => "",
                };
                Step::failed(label, format!("{e}{hint}"))
            }
        });
    }
    out.push(devices(&client, base, device_groups).await);
    out
}

/// Groups on a groups delta page holding device members.
fn groups_with_devices(page: &serde_json::Value) -> usize {
    let items = page.get("value").and_then(serde_json::Value::as_array);
    items
        .into_iter()
        .flatten()
        .filter(|g| {
            g.get("members@delta")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|ms| {
                    ms.iter().any(|m| {
                        m.get("@odata.type").and_then(serde_json::Value::as_str)
                            == Some("#microsoft.graph.device")
                    })
                })
        })
        .count()
}

/// Whether the devices can be read (`Device.Read.All`). Without it a sync still works: device
/// members are reported, not written, and computers already written stay (docs/OPERATIONS.md,
/// "Device members"). So a 403 is a warning, never a failed check, whatever the groups hold
/// (a sync would not fail either); any other error fails the check as it fails a sync.
async fn devices(client: &crate::graph::GraphClient, base: &str, device_groups: usize) -> Step {
    let label = "Graph devices delta, first page (device members, `Device.Read.All`)";
    match client.get_json(&delta::devices_delta_query(base).url).await {
        Ok(page) => {
            let n = page
                .get("value")
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len);
            Step::ok(format!("{label}: {n} devices"))
        }
        Err(e) if crate::sync::devices::denied(&e) => {
            let seen = match device_groups {
                0 => "no group on the groups' first page holds devices".to_string(),
                n => format!("{n} group(s) on the groups' first page hold devices"),
            };
            Step::warned(
                label,
                format!(
                    "not readable, the app lacks {} (Graph answered 403); {seen}. A sync reports device members instead of writing them and keeps the computers groups have; grant it (application permission, admin consent) to write them: docs/OPERATIONS.md, \"The Entra app registration\"",
                    crate::sync::devices::PERMISSION
                ),
            )
        }
        Err(e) => Step::failed(label, e.to_string()),
    }
}

/// The config's AD settings with `urls` in place of the configured ones.
fn settings(config: &Config, urls: Vec<String>) -> AdSettings {
    AdSettings {
        urls,
        ..crate::setup::ad_settings(config)
    }
}

async fn ad(config: &Config, written: &[String]) -> Vec<Step> {
    let who = match &config.ad.kerberos {
        Some(k) => format!("Kerberos principal {}", k.principal),
        None => config.ad.bind_dn.clone(),
    };
    // Each configured DC on its own (the sync fails over between them); with discovery, the
    // one it finds.
    let targets: Vec<Vec<String>> = match config.ad.discover {
        Some(_) => vec![Vec::new()],
        None => config.ad.urls.iter().map(|u| vec![u.clone()]).collect(),
    };
    let mut out = Vec::new();
    let mut first: Option<AdConn> = None;
    for urls in targets {
        let label = match urls.first() {
            Some(u) => format!("AD bind to {u} as {who} (`ad.url`, `ad.bind_dn`, its password)"),
            None => format!("AD bind to a discovered DC as {who} (`ad.discover`)"),
        };
        match AdConn::connect(&settings(config, urls)).await {
            Ok(conn) => {
                out.push(Step::ok(format!("AD bind to {} as {who}", conn.url())));
                if first.is_none() {
                    first = Some(conn);
                }
            }
            Err(e) => out.push(Step::failed(label, e.to_string())),
        }
    }
    let Some(mut conn) = first else { return out };
    for ou in &config.ad.managed_ous {
        out.extend(managed_ou(&mut conn, ou, &who, written).await);
    }
    for target in &config.ad.link_targets {
        out.push(link_target(&mut conn, target, &who).await);
    }
    conn.close().await;
    out
}

/// The OU exists, the account may create groups in it, and may write `written` (what the host
/// always writes and what the rules write on the first page's groups) on a group below it
/// (when one is there to ask).
async fn managed_ou(conn: &mut AdConn, ou: &str, who: &str, written: &[String]) -> Vec<Step> {
    let label = format!("managed OU {ou} (`ad.managed_ous`)");
    let entry = match conn.read_entry(ou, &["allowedChildClassesEffective"]).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return vec![Step::failed(
                label,
                format!("does not exist, or {who} may not read it: create it, or correct the DN"),
            )]
        }
        Err(e) => return vec![Step::failed(label, e.to_string())],
    };
    let mut out = Vec::new();
    let may_create = entry
        .values("allowedChildClassesEffective")
        .iter()
        .any(|c| c.eq_ignore_ascii_case("group"));
    out.push(match may_create {
        true => Step::ok(format!("{label}: {who} may create groups")),
        false => Step::failed(
            label.clone(),
            format!("{who} may not create groups there (the Create group objects right): delegate it, e.g. packaging/delegate-samba.sh or dsacls \"{ou}\" /I:T /G \"<account>:CCDC;group\" (docs/OPERATIONS.md, \"The AD service account\")"),
        ),
    });
    // A group below the OU answers for the rights inherited by the groups the host creates.
    let sample = conn
        .first_entry(ou, Scope::Subtree, "(objectClass=group)", &["objectClass"])
        .await
        .ok()
        .flatten();
    let Some(sample) = sample else {
        out.push(Step::ok(format!(
            "{label}: no group below it yet, so AD cannot be asked about the attributes on groups (the first sync will show)"
        )));
        return out;
    };
    let dn = sample.dn.clone();
    let allowed = match conn.read_entry(&dn, &["allowedAttributesEffective"]).await {
        Ok(Some(e)) => e
            .values("allowedAttributesEffective")
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect::<Vec<_>>(),
        _ => return out,
    };
    let missing: Vec<&str> = written
        .iter()
        .filter(|a| !allowed.contains(&a.to_ascii_lowercase()))
        .map(String::as_str)
        .collect();
    out.push(match missing.is_empty() {
        true => Step::ok(format!(
            "{label}: {who} may write {} on its groups (asked on {dn})",
            written.join(", ")
        )),
        false => Step::failed(
            label,
            format!(
                "{who} may not write {} on the groups below it (asked on {dn}): delegate Read/Write Property for them on group objects (packaging/delegate-samba.sh, or dsacls \"{ou}\" /I:S /G \"<account>:RPWP;<attribute>;group\")",
                missing.join(", ")
            ),
        ),
    });
    out
}

/// The account may write `member` on the link target (or, for an OU, on a group below it).
async fn link_target(conn: &mut AdConn, target: &str, who: &str) -> Step {
    let label = format!("link target {target} (`ad.link_targets`)");
    let group = match conn
        .first_entry(
            target,
            Scope::Subtree,
            "(objectClass=group)",
            &["objectClass"],
        )
        .await
    {
        Ok(g) => g,
        Err(e) if e.rc() == Some(32) => {
            return Step::failed(label, "does not exist: create it, or correct the DN")
        }
        Err(e) => return Step::failed(label, e.to_string()),
    };
    let Some(group) = group else {
        return Step::ok(format!(
            "{label}: exists (no group below it to ask about member yet)"
        ));
    };
    let dn = group.dn.clone();
    let may = match conn.read_entry(&dn, &["allowedAttributesEffective"]).await {
        Ok(Some(e)) => e
            .values("allowedAttributesEffective")
            .iter()
            .any(|a| a.eq_ignore_ascii_case("member")),
        _ => false,
    };
    match may {
        true => Step::ok(format!("{label}: {who} may write member (asked on {dn})")),
        false => Step::failed(
            label,
            format!("{who} may not write member on {dn}: packaging/delegate-samba.sh -l \"{target}\" <account>, or dsacls \"{target}\" /I:T /G \"<account>:WP;member\""),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rules_attributes_come_from_the_groups_of_the_page() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rule = r#"
fn in_scope(group) { group.securityEnabled == true }
fn to_ad(group) {
    #{ parent: "OU=G,DC=x", cn: group.displayName,
       attributes: #{ description: "d", info: () },
       on_create: #{ sAMAccountName: "s" }, owners: "managedBy" }
}
"#;
        std::fs::write(dir.path().join("10-t.rhai"), rule).expect("write");
        let stdlib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../stdlib");
        let rules = RuleSet::load(
            dir.path(),
            &stdlib,
            Default::default(),
            crate::rules::Limits::default(),
        )
        .expect("loads");
        let page = json!({"value": [
            {"id": "g1", "displayName": "A", "securityEnabled": true,
             "members@delta": [{"id": "u1", "@odata.type": "#microsoft.graph.user"}]},
            {"id": "g2", "displayName": "B", "securityEnabled": false},
            {"id": "g3", "@removed": {"reason": "deleted"}}
        ]});
        let mut got = attributes_written(&rules, &page);
        got.sort();
        assert_eq!(got, ["description", "info", "managedBy", "sAMAccountName"]);
        assert!(attributes_written(&rules, &json!({"value": []})).is_empty());
    }
}
