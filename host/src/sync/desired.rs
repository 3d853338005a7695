//! The desired AD state: what the rules returned for each cloud group, made concrete (full DN,
//! anchor attributes, resolved member DNs) and checked against the host's safety limits (managed
//! OUs, schema). Pure: member resolution arrives as data.

use serde::Serialize;
use std::collections::BTreeMap;

use crate::graph::model::{CloudObject, MemberKind};
use crate::rules::{DesiredGroup, MemberPolicy};

use super::plan::{Refusal, Unresolved};

/// The anchor both Microsoft products write: `Group_<objectId>`.
pub fn anchor_value(cloud_id: &str) -> String {
    format!("Group_{cloud_id}")
}

/// Attributes that carry the anchor; the host sets them, rules cannot.
pub const ANCHOR_ATTRS: [&str; 2] = ["msDS-ExternalDirectoryObjectId", "adminDescription"];

/// One cloud group's AD object as it should be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredObject {
    pub cloud_id: String,
    pub rule: String,
    pub dn: String,
    /// Managed attributes; `None` = must be absent.
    pub attributes: BTreeMap<String, Option<Vec<String>>>,
    /// Member DNs, or `None` when the rule leaves membership alone.
    pub members: Option<Vec<String>>,
}

/// Where cloud members live in AD, found by the job before planning.
#[derive(Debug, Clone, Default)]
pub struct MemberDirectory {
    /// Cloud user id -> AD DN.
    pub users: BTreeMap<String, String>,
    /// Cloud group id -> AD DN, for groups synced from AD (matched by SID).
    pub synced_groups: BTreeMap<String, String>,
    /// Why a cloud user could not be matched (e.g. cloud-only), by user id.
    pub user_reasons: BTreeMap<String, String>,
}

/// A DN in the form AD compares (case-folded, escapes canonical); unparsable DNs compare as
/// lowercased text.
pub fn dn_key(dn: &str) -> String {
    crate::ad::dn::normalize(dn).unwrap_or_else(|_| dn.to_lowercase())
}

pub use crate::ad::dn::is_within;

/// Turns rule output into desired objects, refusing what the host may not write.
pub struct DesiredBuilder<'a> {
    pub managed_ous: &'a [String],
    pub schema: Option<&'a crate::ad::schema::Schema>,
}

impl DesiredBuilder<'_> {
    /// First pass: the object without members (its DN is what nested groups need).
    pub fn object(&self, cloud_id: &str, g: &DesiredGroup) -> Result<DesiredObject, Refusal> {
        let refuse = |reason: String| Refusal {
            cloud_id: cloud_id.to_string(),
            rule: Some(g.rule.clone()),
            reason,
        };
        if g.cn.trim().is_empty() {
            return Err(refuse("the rule returned an empty cn".into()));
        }
        if crate::ad::dn::parse_dn(&g.parent).is_err() {
            return Err(refuse(format!(
                "the rule returned parent {:?}, which is not a valid DN",
                g.parent
            )));
        }
        if !self.managed_ous.iter().any(|ou| is_within(&g.parent, ou)) {
            return Err(refuse(format!(
                "the rule returned parent {:?}, which is outside the managed OUs ({})",
                g.parent,
                self.managed_ous.join("; ")
            )));
        }
        let dn = format!("{},{}", crate::ad::dn::rdn("CN", &g.cn), g.parent);
        let mut attributes = g.attributes.clone();
        let anchor = anchor_value(cloud_id);
        for a in ANCHOR_ATTRS {
            attributes.insert(a.to_string(), Some(vec![anchor.clone()]));
        }
        if let Some(schema) = self.schema {
            let cn = vec![g.cn.clone()];
            if let Err(e) = schema.check("cn", &cn) {
                return Err(refuse(format!("cn: {e}")));
            }
            for (attr, vals) in &attributes {
                if let Some(vals) = vals {
                    if let Err(e) = schema.check(attr, vals) {
                        return Err(refuse(e.to_string()));
                    }
                } else if let Err(e) = schema.check(attr, &[]) {
                    return Err(refuse(e.to_string()));
                }
            }
        }
        Ok(DesiredObject {
            cloud_id: cloud_id.to_string(),
            rule: g.rule.clone(),
            dn,
            attributes,
            members: None,
        })
    }

    /// Second pass: member DNs, from users found in AD and groups the host writes or that came
    /// from AD. Members without an AD object are reported, not written.
    pub fn members(
        &self,
        group: &CloudObject,
        policy: MemberPolicy,
        written_groups: &BTreeMap<String, String>,
        dir: &MemberDirectory,
        unresolved: &mut Vec<Unresolved>,
    ) -> Option<Vec<String>> {
        if policy == MemberPolicy::None {
            return None;
        }
        let mut dns = Vec::new();
        for m in group.members.values() {
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
                MemberKind::Other => Err("only users and groups can be written to AD".into()),
            };
            match found {
                Ok(dn) => dns.push(dn.clone()),
                Err(reason) => unresolved.push(Unresolved {
                    group_id: group.id.clone(),
                    member_id: m.id.clone(),
                    member_type: m
                        .odata_type
                        .trim_start_matches("#microsoft.graph.")
                        .to_string(),
                    reason,
                }),
            }
        }
        dns.sort();
        dns.dedup();
        Some(dns)
    }
}
