//! The desired AD state: what the rules returned for each cloud group, made concrete (full DN,
//! anchor attributes, resolved member DNs) and checked against the host's safety limits (managed
//! OUs, schema). Pure: member resolution arrives as data.

use std::collections::BTreeMap;

use crate::graph::model::{CloudObject, MemberKind, MemberRef};
use crate::rules::{quoted, DesiredGroup, MemberPolicy};

use super::types::{
    anchor_value, is_within, DesiredObject, MemberDirectory, OwnersInto, Refusal, Unresolved,
    ANCHOR_ATTRS,
};

/// The cloud group's current values of the properties in `to_cloud` (null when unset).
pub fn cloud_values(
    to_cloud: &BTreeMap<String, serde_json::Value>,
    g: &CloudObject,
) -> BTreeMap<String, serde_json::Value> {
    to_cloud
        .keys()
        .map(|k| {
            let now = g
                .props
                .iter()
                .find(|(p, _)| p.eq_ignore_ascii_case(k))
                .map_or(serde_json::Value::Null, |(_, v)| v.clone());
            (k.clone(), now)
        })
        .collect()
}

/// Turns rule output into desired objects, refusing what the host may not write.
pub struct DesiredBuilder<'a> {
    pub managed_ous: &'a [String],
    /// Where `member_of` may point (`ad.link_targets`).
    pub link_targets: &'a [String],
    /// The group properties the rules read (`GRAPH_GROUP_PROPERTIES`): `to_cloud` may only set
    /// those, so the host knows the current value before it writes.
    pub readable: &'a [String],
    pub schema: Option<&'a crate::ad::schema::Schema>,
}

/// Why a rule's `owners` attribute cannot hold the owners.
#[derive(Debug, thiserror::Error)]
pub enum OwnersError {
    /// The schema refuses the attribute on a group (unknown, not allowed by the class, ...).
    #[error("owners: {0}")]
    Schema(#[from] crate::ad::SchemaViolation),
    #[error("owners: attribute `{attr}` is not in the AD schema")]
    NotInSchema { attr: String },
    #[error("owners: attribute `{attr}` does not hold DNs (syntax {syntax}); use a DN attribute such as managedBy")]
    NotDn { attr: String, syntax: String },
}

impl DesiredBuilder<'_> {
    /// The DN a rule's output names (no checks).
    pub fn dn(g: &DesiredGroup) -> String {
        format!("{},{}", crate::ad::dn::rdn("CN", &g.cn), g.parent)
    }

    /// First pass: the object without members (its DN is what nested groups need).
    pub fn object(&self, cloud_id: &str, g: &DesiredGroup) -> Result<DesiredObject, Refusal> {
        let refuse = |reason: String| Refusal {
            cloud_id: cloud_id.to_string(),
            rule: Some(g.rule.clone()),
            reason,
        };
        if let Some(reason) = self.placement_problem(g) {
            return Err(refuse(reason));
        }
        let dn = Self::dn(g);
        let to_cloud = g
            .to_cloud
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => {
                        serde_json::Value::String(s.replace("{dn}", &dn))
                    }
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        let mut attributes = g.attributes.clone();
        let anchor = anchor_value(cloud_id);
        for a in ANCHOR_ATTRS {
            attributes.insert(a.to_string(), Some(vec![anchor.clone()]));
        }
        let on_create: BTreeMap<String, Vec<String>> = g
            .on_create
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let owners = match &g.owners {
            None => None,
            Some(attr) => Some(self.owners_into(attr).map_err(|e| refuse(e.to_string()))?),
        };
        if let Some(reason) = self.schema_problem(g, &on_create, &attributes) {
            return Err(refuse(reason));
        }
        Ok(DesiredObject {
            cloud_id: cloud_id.to_string(),
            rule: g.rule.clone(),
            dn,
            attributes,
            on_create,
            members: None,
            member_of: g.member_of.clone(),
            to_cloud,
            cloud_now: BTreeMap::new(),
            owners,
        })
    }

    /// Why the rule's output cannot be placed: an empty cn, a parent that is not a DN or is
    /// outside the managed OUs, a link target outside `ad.link_targets`, a `to_cloud`
    /// property the rules do not read.
    fn placement_problem(&self, g: &DesiredGroup) -> Option<String> {
        if g.cn.trim().is_empty() {
            return Some("the rule returned an empty cn".into());
        }
        if crate::ad::dn::parse_dn(&g.parent).is_err() {
            return Some(format!(
                "the rule returned parent {}, which is not a valid DN",
                quoted(&g.parent)
            ));
        }
        if !self.managed_ous.iter().any(|ou| is_within(&g.parent, ou)) {
            return Some(format!(
                "the rule returned parent {}, which is outside the managed OUs ({})",
                quoted(&g.parent),
                self.managed_ous.join("; ")
            ));
        }
        if let Some(t) = g
            .member_of
            .iter()
            .find(|t| !self.link_targets.iter().any(|l| is_within(t, l)))
        {
            return Some(format!(
                "the rule returned member_of {}, which is not inside ad.link_targets ({})",
                quoted(t),
                if self.link_targets.is_empty() {
                    "none configured".to_string()
                } else {
                    self.link_targets.join("; ")
                }
            ));
        }
        if let Some(k) = g
            .to_cloud
            .keys()
            .find(|k| !self.readable.iter().any(|r| r.eq_ignore_ascii_case(k)))
        {
            return Some(format!(
                "the rule returned to_cloud `{k}`, which the rules do not read: declare it in GRAPH_GROUP_PROPERTIES, so the host compares the cloud's value before it writes"
            ));
        }
        None
    }

    /// Why the schema refuses the object's cn or attributes.
    fn schema_problem(
        &self,
        g: &DesiredGroup,
        on_create: &BTreeMap<String, Vec<String>>,
        attributes: &BTreeMap<String, Option<Vec<String>>>,
    ) -> Option<String> {
        let schema = self.schema?;
        let cn = vec![g.cn.clone()];
        if let Err(e) = schema.check("cn", &cn) {
            return Some(format!("cn: {e}"));
        }
        for (attr, vals) in on_create {
            if let Err(e) = schema.check(attr, vals) {
                return Some(e.to_string());
            }
        }
        for (attr, vals) in attributes {
            if let Some(vals) = vals {
                if let Err(e) = schema.check(attr, vals) {
                    return Some(e.to_string());
                }
            } else if let Err(e) = schema.check(attr, &[]) {
                return Some(e.to_string());
            }
        }
        None
    }

    /// The attribute a rule's `owners` names, if the schema lets a group hold DNs in it.
    fn owners_into(&self, attr: &str) -> Result<OwnersInto, OwnersError> {
        let Some(schema) = self.schema else {
            // Without a schema (explain with no DC at hand) one value is the safe reading.
            return Ok(OwnersInto {
                attribute: attr.to_string(),
                single_valued: true,
            });
        };
        schema.check(attr, &[])?;
        let def = schema.attr(attr).ok_or_else(|| OwnersError::NotInSchema {
            attr: attr.to_string(),
        })?;
        if def.syntax != crate::ad::schema::syntax::DN {
            return Err(OwnersError::NotDn {
                attr: def.name.clone(),
                syntax: def.syntax.clone(),
            });
        }
        Ok(OwnersInto {
            attribute: def.name.clone(),
            single_valued: def.single_valued,
        })
    }

    /// Second pass: member DNs, from users and hybrid-joined devices found in AD and groups the
    /// host writes or that came from AD. Members without an AD object are reported, not written.
    pub fn members(
        &self,
        group: &CloudObject,
        groups: &BTreeMap<String, CloudObject>,
        policy: MemberPolicy,
        written_groups: &BTreeMap<String, String>,
        dir: &MemberDirectory,
        unresolved: &mut Vec<Unresolved>,
    ) -> Option<Vec<String>> {
        let flattened;
        let members: Box<dyn Iterator<Item = &MemberRef>> = match policy {
            MemberPolicy::None => return None,
            MemberPolicy::OnPremises => Box::new(group.members.values()),
            MemberPolicy::Flatten => {
                flattened = transitive_users(groups, &group.id);
                Box::new(flattened.iter())
            }
        };
        let mut dns = Vec::new();
        for m in members {
            let found = match m.kind() {
                MemberKind::User => dir.users.get(&m.id).ok_or_else(|| {
                    dir.user_reasons
                        .get(&m.id)
                        .cloned()
                        .unwrap_or_else(|| "user has no matching AD account".into())
                }),
                MemberKind::Group => written_groups
                    .get(&m.id)
                    .or_else(|| dir.synced_groups.get(&m.id))
                    .ok_or_else(|| {
                        "group is neither written by Writeback nor synced from AD".to_string()
                    }),
                MemberKind::Device => dir.devices.get(&m.id).ok_or_else(|| {
                    dir.device_reasons
                        .get(&m.id)
                        .cloned()
                        .unwrap_or_else(|| "device has no matching AD computer".into())
                }),
                MemberKind::Other => Err(other_reason(&m.odata_type)),
            };
            match found {
                Ok(dn) => dns.push(dn.clone()),
                Err(reason) => unresolved.push(Unresolved {
                    group_id: group.id.clone(),
                    member_id: m.id.clone(),
                    member_type: member_type(&m.odata_type),
                    reason,
                }),
            }
        }
        dns.sort();
        dns.dedup();
        Some(dns)
    }
}

/// The type as reports show it (`user`, `device`), cut when Graph sent something huge.
pub(crate) fn member_type(odata_type: &str) -> String {
    let t = odata_type.trim_start_matches("#microsoft.graph.");
    match t.char_indices().nth(crate::rules::QUOTE_CHARS) {
        Some((end, _)) => format!("{}...", &t[..end]),
        None => t.to_string(),
    }
}

/// Why a member that is neither a user, a group nor a device is not written: Graph's other
/// directory objects are named; a type Graph does not document (or none at all) is said to be
/// unknown.
pub(crate) fn other_reason(odata_type: &str) -> String {
    const KNOWN: &[&str] = &[
        "#microsoft.graph.orgContact",
        "#microsoft.graph.servicePrincipal",
        "#microsoft.graph.application",
    ];
    if odata_type.is_empty() {
        "Graph sent the member without an @odata.type; only users, groups and devices can be written to AD"
            .into()
    } else if KNOWN.contains(&odata_type) {
        "only users, groups and devices can be written to AD".into()
    } else {
        format!(
            "unknown member type {}; only users, groups and devices can be written to AD",
            quoted(odata_type)
        )
    }
}

/// Why a group with `count` cloud members is not written when the cap is `cap`: a group that
/// suddenly holds millions (a hostile or broken tenant) must not take the cycle's time and
/// memory. It goes to quarantine with this reason and comes back when it changes.
pub fn over_member_cap(count: usize, cap: usize) -> Option<String> {
    (count > cap).then(|| {
        format!(
            "has {count} members, more than safety.max_members_per_group ({cap}); not written (raise the limit if the group is meant to be this large)"
        )
    })
}

/// Every user and device reached from `group_id` through nested groups (cycles are followed
/// once): what `members: "flatten"` writes.
pub fn transitive_users(groups: &BTreeMap<String, CloudObject>, group_id: &str) -> Vec<MemberRef> {
    let mut seen = std::collections::BTreeSet::new();
    let mut users = BTreeMap::new();
    let mut todo = vec![group_id.to_string()];
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(g) = groups.get(&id) else { continue };
        for m in g.members.values() {
            match m.kind() {
                MemberKind::User | MemberKind::Device => {
                    users.insert(m.id.clone(), m.clone());
                }
                MemberKind::Group => todo.push(m.id.clone()),
                MemberKind::Other => {}
            }
        }
    }
    users.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_over_the_member_cap_are_refused_with_the_numbers() {
        assert_eq!(over_member_cap(10, 10), None);
        let r = over_member_cap(11, 10).unwrap_or_default();
        assert!(
            r.contains("11 members") && r.contains("safety.max_members_per_group (10)"),
            "{r}"
        );
    }

    fn group(id: &str, members: &[(&str, &str)]) -> CloudObject {
        CloudObject {
            id: id.into(),
            members: members
                .iter()
                .map(|(t, m)| {
                    (
                        m.to_string(),
                        MemberRef {
                            odata_type: format!("#microsoft.graph.{t}"),
                            id: m.to_string(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn flattening_follows_nesting_and_survives_cycles() {
        let mut g = BTreeMap::new();
        g.insert(
            "a".to_string(),
            group("a", &[("user", "u1"), ("group", "b")]),
        );
        g.insert(
            "b".to_string(),
            group("b", &[("user", "u2"), ("group", "c"), ("device", "d1")]),
        );
        g.insert(
            "c".to_string(),
            group("c", &[("user", "u1"), ("group", "a")]),
        );
        let ids: Vec<String> = transitive_users(&g, "a")
            .into_iter()
            .map(|m| m.id)
            .collect();
        // Devices are reached too: a flattened group holds the computers of nested groups.
        assert_eq!(ids, vec!["d1", "u1", "u2"]);
    }

    /// A message that stays one line and never holds the value.
    fn assert_short(text: &str, needle: &str) {
        assert!(text.len() < 600, "{} bytes", text.len());
        assert!(!text.contains(needle), "the value is echoed");
    }

    fn desired(parent: &str, attributes: &[(&str, &str)]) -> DesiredGroup {
        DesiredGroup {
            to_cloud: Default::default(),
            owners: None,
            member_of: Default::default(),
            rule: "10-x.rhai".into(),
            parent: parent.into(),
            cn: "G".into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), Some(vec![v.to_string()])))
                .collect(),
            on_create: BTreeMap::new(),
            members: MemberPolicy::OnPremises,
        }
    }

    #[test]
    fn a_huge_parent_is_refused_without_the_value() {
        let ous = vec!["OU=Cloud,DC=x".to_string()];
        let b = DesiredBuilder {
            link_targets: &[],
            readable: &[],
            managed_ous: &ous,
            schema: None,
        };
        let outside = format!("OU={},DC=x", "o".repeat(10 * 1024 * 1024));
        let r = b.object("g-big", &desired(&outside, &[])).unwrap_err();
        assert!(
            r.reason.contains("outside the managed OUs"),
            "{}",
            &r.reason[..200]
        );
        assert!(r.reason.contains("(10485768 characters)"), "{}", r.reason);
        assert_short(&r.reason, &"o".repeat(100));
        let broken = "x".repeat(10 * 1024 * 1024);
        let r = b.object("g-big", &desired(&broken, &[])).unwrap_err();
        assert!(r.reason.contains("not a valid DN"), "{}", r.reason);
        assert_short(&r.reason, &"x".repeat(100));
        // The group next to it is built as ever.
        assert!(b.object("g-ok", &desired("OU=Cloud,DC=x", &[])).is_ok());
    }

    /// A schema of `attrs` (name, syntax, single-valued, upper range), all of them allowed on
    /// `group` except `not_on_group`.
    fn group_schema(
        attrs: &[(&str, &str, bool, Option<u32>)],
        not_on_group: &[&str],
    ) -> crate::ad::schema::Schema {
        use crate::ad::schema::{AttrDef, ClassDef, Schema};
        let defs = attrs
            .iter()
            .map(|(name, syntax, single_valued, upper)| AttrDef {
                name: name.to_string(),
                single_valued: *single_valued,
                range_lower: None,
                range_upper: *upper,
                syntax: syntax.to_string(),
                system_only: false,
                linked: false,
            })
            .collect();
        let on_group = attrs
            .iter()
            .map(|a| a.0)
            .filter(|n| !not_on_group.contains(n))
            .map(str::to_string)
            .collect();
        let group = ClassDef {
            name: "group".into(),
            attrs: on_group,
            ..Default::default()
        };
        Schema::from_parts(defs, vec![group])
    }

    fn builder<'a>(ous: &'a [String], schema: &'a crate::ad::schema::Schema) -> DesiredBuilder<'a> {
        DesiredBuilder {
            link_targets: &[],
            readable: &[],
            managed_ous: ous,
            schema: Some(schema),
        }
    }

    #[test]
    fn owners_go_only_to_a_dn_attribute_a_group_may_hold() {
        use crate::ad::schema::syntax;
        let schema = group_schema(
            &[
                ("cn", syntax::UNICODE_STRING, true, None),
                ("managedBy", syntax::DN, true, None),
                ("msExchCoManagedByLink", syntax::DN, false, None),
                ("info", syntax::UNICODE_STRING, true, None),
                ("manager", syntax::DN, true, None),
                (
                    "msDS-ExternalDirectoryObjectId",
                    syntax::UNICODE_STRING,
                    true,
                    None,
                ),
                ("adminDescription", syntax::UNICODE_STRING, true, None),
            ],
            &["manager"],
        );
        let ous = vec!["OU=Cloud,DC=x".to_string()];
        let b = builder(&ous, &schema);
        let with = |attr: &str| DesiredGroup {
            owners: Some(attr.into()),
            ..desired("OU=Cloud,DC=x", &[])
        };
        let o = b.object("g", &with("managedby")).map_err(|r| r.reason);
        assert_eq!(
            o.map(|o| o.owners),
            Ok(Some(OwnersInto {
                attribute: "managedBy".into(),
                single_valued: true
            })),
            "the schema's spelling and its single value"
        );
        let o = b.object("g", &with("msExchCoManagedByLink"));
        assert_eq!(
            o.ok().and_then(|o| o.owners).map(|o| o.single_valued),
            Some(false)
        );
        for (attr, says) in [
            ("info", "does not hold DNs"),
            ("manager", "not allowed on class group"),
            ("nosuch", "not in the AD schema"),
        ] {
            let r = b.object("g", &with(attr)).unwrap_err();
            assert!(r.reason.contains(says), "{attr}: {}", r.reason);
            assert_eq!(r.rule.as_deref(), Some("10-x.rhai"));
        }
    }

    #[test]
    fn a_value_over_the_schemas_range_is_refused_without_the_value() {
        use crate::ad::schema::syntax;
        let schema = group_schema(
            &[
                ("cn", syntax::UNICODE_STRING, true, Some(64)),
                ("displayName", syntax::UNICODE_STRING, true, Some(256)),
                ("managedBy", syntax::DN, true, None),
                (
                    "msDS-ExternalDirectoryObjectId",
                    syntax::UNICODE_STRING,
                    true,
                    None,
                ),
                ("adminDescription", syntax::UNICODE_STRING, true, Some(1024)),
            ],
            &[],
        );
        let ous = vec!["OU=Cloud,DC=x".to_string()];
        let b = builder(&ous, &schema);
        let name = "n".repeat(1024 * 1024);
        let r = b
            .object(
                "g-long",
                &desired("OU=Cloud,DC=x", &[("displayName", &name)]),
            )
            .unwrap_err();
        assert!(
            r.reason
                .contains("1048576 characters long, the schema allows at most 256"),
            "{}",
            r.reason
        );
        assert_short(&r.reason, &"n".repeat(100));
        let dn = format!("CN={}", ",".repeat(1024 * 1024));
        let r = b
            .object("g-dn", &desired("OU=Cloud,DC=x", &[("managedBy", &dn)]))
            .unwrap_err();
        assert!(r.reason.contains("is not a valid value"), "{}", r.reason);
        assert_short(&r.reason, &",".repeat(300));
        let unknown = "a".repeat(100_000);
        let r = b
            .object("g-attr", &desired("OU=Cloud,DC=x", &[(&unknown, "v")]))
            .unwrap_err();
        assert!(r.reason.contains("is not in the AD schema"), "{}", r.reason);
        assert_short(&r.reason, &"a".repeat(100));
        assert!(b
            .object(
                "g-ok",
                &desired("OU=Cloud,DC=x", &[("displayName", "Fine")])
            )
            .is_ok());
    }

    #[test]
    fn links_and_cloud_properties_are_checked_and_the_dn_filled_in() {
        let ous = vec!["OU=Cloud,DC=x".to_string()];
        let targets = vec!["OU=Shares,DC=x".to_string()];
        let ext = "extension_0123456789abcdef0123456789abcdef_dn".to_string();
        let readable = vec![ext.to_ascii_uppercase()];
        let b = DesiredBuilder {
            link_targets: &targets,
            readable: &readable,
            managed_ous: &ous,
            schema: None,
        };
        let mut d = desired("OU=Cloud,DC=x", &[]);
        d.member_of = vec!["CN=RW,OU=Shares,DC=x".into()];
        d.to_cloud = [(ext.clone(), serde_json::json!("at {dn}"))].into();
        let o = b.object("g", &d).expect("allowed");
        assert_eq!(o.to_cloud[&ext], serde_json::json!("at CN=G,OU=Cloud,DC=x"));
        assert_eq!(o.member_of, d.member_of);

        d.member_of = vec!["CN=Domain Admins,CN=Users,DC=x".into()];
        let r = b.object("g", &d).unwrap_err();
        assert!(
            r.reason.contains("not inside ad.link_targets"),
            "{}",
            r.reason
        );
        d.member_of.clear();
        d.to_cloud = [(
            "extension_0123456789abcdef0123456789abcdef_other".to_string(),
            serde_json::json!(1),
        )]
        .into();
        let r = b.object("g", &d).unwrap_err();
        assert!(r.reason.contains("GRAPH_GROUP_PROPERTIES"), "{}", r.reason);
    }

    #[test]
    fn members_of_unknown_or_missing_types_are_unresolved_with_a_reason() {
        let ous = vec!["OU=Cloud,DC=x".to_string()];
        let b = DesiredBuilder {
            link_targets: &[],
            readable: &[],
            managed_ous: &ous,
            schema: None,
        };
        let huge = format!("#microsoft.graph.{}", "q".repeat(10_000));
        let mut g = group(
            "g",
            &[("user", "u1"), ("device", "d1"), ("spaceship", "s1")],
        );
        for (id, t) in [("none", ""), ("huge", huge.as_str())] {
            g.members.insert(
                id.into(),
                MemberRef {
                    odata_type: t.into(),
                    id: id.into(),
                },
            );
        }
        let dir = MemberDirectory {
            users: BTreeMap::from([("u1".to_string(), "CN=U1,DC=x".to_string())]),
            ..Default::default()
        };
        let mut unresolved = Vec::new();
        let dns = b.members(
            &g,
            &BTreeMap::new(),
            MemberPolicy::OnPremises,
            &BTreeMap::new(),
            &dir,
            &mut unresolved,
        );
        assert_eq!(dns, Some(vec!["CN=U1,DC=x".to_string()]));
        let by_id: BTreeMap<&str, &Unresolved> = unresolved
            .iter()
            .map(|u| (u.member_id.as_str(), u))
            .collect();
        assert_eq!(by_id.len(), 4);
        assert_eq!(by_id["d1"].reason, "device has no matching AD computer");
        assert_eq!(by_id["d1"].member_type, "device");
        assert_eq!(
            by_id["s1"].reason,
            "unknown member type \"#microsoft.graph.spaceship\"; only users, groups and devices can be written to AD"
        );
        assert_eq!(by_id["s1"].member_type, "spaceship");
        assert!(by_id["none"].reason.contains("without an @odata.type"));
        assert!(by_id["huge"].reason.contains("unknown member type"));
        assert_short(&by_id["huge"].reason, &"q".repeat(100));
        assert!(by_id["huge"].member_type.len() < 100);
        assert!(unresolved.iter().all(|u| u.group_id == "g"));
    }

    #[test]
    fn outside_managed_ous_is_refused() {
        let ous = vec!["OU=Cloud,DC=x".to_string()];
        let b = DesiredBuilder {
            link_targets: &[],
            readable: &[],
            managed_ous: &ous,
            schema: None,
        };
        let d = DesiredGroup {
            to_cloud: Default::default(),
            owners: None,
            member_of: Default::default(),
            rule: "10-x.rhai".into(),
            parent: "OU=Elsewhere,DC=x".into(),
            cn: "G".into(),
            attributes: BTreeMap::new(),
            on_create: BTreeMap::new(),
            members: MemberPolicy::OnPremises,
        };
        let r = b.object("id1", &d).unwrap_err();
        assert!(r.reason.contains("outside the managed OUs"), "{}", r.reason);
        let ok = DesiredGroup {
            parent: "ou=sub,OU=Cloud,DC=x".into(),
            cn: "A, B".into(),
            ..d
        };
        let o = b.object("id1", &ok).expect("inside");
        assert_eq!(o.dn, "CN=A\\, B,ou=sub,OU=Cloud,DC=x");
        assert_eq!(
            o.attributes["msDS-ExternalDirectoryObjectId"],
            Some(vec!["Group_id1".to_string()])
        );
    }
}
