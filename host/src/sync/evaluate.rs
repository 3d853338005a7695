//! The rules over a set of cloud groups: decisions on all cores, the fingerprint of each
//! decision (what the applied hash is compared with), and the fingerprint of the rule set and
//! the settings that shape every decision (a change of it means every group is evaluated).

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::config::Config;
use crate::graph::model::CloudObject;
use crate::rules::{Decision, DesiredGroup, EvalError, MemberPolicy, Now, RuleSet};
use crate::state::{GroupHead, MemberDigest};

use super::desired::{transitive_users, DesiredBuilder};
use super::select::Verdict;
use super::types::Refusal;

/// What the rules decided for one group.
#[derive(Debug)]
pub struct Evaluation {
    pub id: String,
    /// The decision, or the rule's error (with file:line:column).
    pub decision: Result<Decision, EvalError>,
    /// The decision read `now()`: it may change with time alone.
    pub timed: bool,
}

/// Groups handed to an engine at once (`cargo bench --bench evaluate`: 9.6x the input's own
/// cost at one, 5.2x at a whole part), unless their members reach `HANDOVER_MEMBERS` first:
/// the rule input of a batch is held at once, a few hundred bytes a member.
const HANDOVER: usize = 64;
const HANDOVER_MEMBERS: usize = 16_384;

/// `part` cut into hand-overs: at most `HANDOVER` groups, and no more members than
/// `HANDOVER_MEMBERS` unless one group alone has more.
fn handovers<'p, 'g>(
    part: &'p [(&'g String, &'g CloudObject)],
) -> impl Iterator<Item = &'p [(&'g String, &'g CloudObject)]> {
    let mut rest = part;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut members = 0;
        let mut n = 0;
        for (_, g) in rest.iter().take(HANDOVER) {
            members += g.members.len();
            if n > 0 && members > HANDOVER_MEMBERS {
                break;
            }
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        Some(batch)
    })
}

/// Evaluates the rules for every group, on all cores (the rule set is thread-safe and pure).
/// Every group is judged against the same instant, `now`.
pub fn evaluate_all(
    rules: &RuleSet,
    groups: &BTreeMap<String, CloudObject>,
    now: Now,
) -> Vec<Evaluation> {
    let all: Vec<(&String, &CloudObject)> = groups.iter().collect();
    // Each thread hands its part to an engine a batch at once: one hand-over per group cost two
    // thread switches each, while a whole part's rule input (members included) held at once
    // would grow with the chunk.
    on_all_cores(&all, |part| {
        let mut out = Vec::with_capacity(part.len());
        for batch in handovers(part) {
            let groups: Vec<&CloudObject> = batch.iter().map(|(_, g)| *g).collect();
            out.extend(batch.iter().zip(rules.evaluate_objects(&groups, now)).map(
                |((id, _), (r, timed))| Evaluation {
                    id: (*id).clone(),
                    decision: r,
                    timed,
                },
            ));
        }
        out
    })
}

/// [`evaluate_all`] over groups read without their members: each evaluation comes with
/// whether the rules read the group's members (then it is not the group's answer).
pub fn evaluate_heads(
    rules: &RuleSet,
    heads: &BTreeMap<String, GroupHead>,
    now: Now,
) -> Vec<(Evaluation, bool)> {
    let all: Vec<(&String, &GroupHead)> = heads.iter().collect();
    on_all_cores(&all, |part| {
        let mut out = Vec::with_capacity(part.len());
        for batch in part.chunks(HANDOVER) {
            let groups: Vec<&CloudObject> = batch.iter().map(|(_, h)| &h.props_only).collect();
            out.extend(batch.iter().zip(rules.evaluate_heads(&groups, now)).map(
                |((id, _), (r, timed, read_members))| {
                    let e = Evaluation {
                        id: (*id).clone(),
                        decision: r,
                        timed,
                    };
                    (e, read_members)
                },
            ));
        }
        out
    })
}

/// `eval` over `all`, split into one part per core when there are enough items; the answers
/// in `all`'s order.
fn on_all_cores<T: Sync, R: Send>(all: &[T], eval: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads < 2 || all.len() < 256 {
        return eval(all);
    }
    let chunk = all.len().div_ceil(threads);
    let eval = &eval;
    std::thread::scope(|s| {
        let handles: Vec<_> = all
            .chunks(chunk)
            .map(|part| s.spawn(move || eval(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                // A panicking rule evaluation is a bug in the host, not in a rule: surface it.
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect()
    })
}

/// What one group's decision means for the cycle: its verdict (in scope with the hash and DN to
/// compare, out of scope, kept, deleted later, failed, gone) and, when the rule failed, the
/// refusal to report. `groups` holds the group, `with_nested` also the groups nested in it
/// (for a flattening rule's hash).
pub fn verdict(
    id: &str,
    decision: Result<Decision, EvalError>,
    groups: &BTreeMap<String, CloudObject>,
    with_nested: &BTreeMap<String, CloudObject>,
) -> (Verdict, Option<Refusal>) {
    verdict_by(id, decision, |d| {
        groups.get(id).map(|g| desired_hash(d, g, with_nested))
    })
}

/// [`verdict`] with the hash of a wanted group given by `hash` (`None`: the group is gone).
pub fn verdict_by(
    id: &str,
    decision: Result<Decision, EvalError>,
    hash: impl FnOnce(&DesiredGroup) -> Option<String>,
) -> (Verdict, Option<Refusal>) {
    match decision {
        Ok(Decision::Desired(d)) => match hash(&d) {
            Some(hash) => (
                Verdict::InScope {
                    hash,
                    dn: DesiredBuilder::dn(&d),
                },
                None,
            ),
            None => (Verdict::Gone, None),
        },
        Ok(Decision::OutOfScope) => (Verdict::OutOfScope, None),
        Ok(Decision::Keep) => (Verdict::Keep, None),
        Ok(Decision::DeleteAfter { secs }) => (Verdict::DeleteAfter(secs), None),
        Err(e) => (
            Verdict::Failed,
            Some(Refusal {
                cloud_id: id.to_string(),
                rule: None,
                reason: e.to_string(),
            }),
        ),
    }
}

/// A stable fingerprint of what the rules want for a group, and of its cloud members (the
/// flattened users for `"flatten"`: `groups` must then hold the nested groups too).
pub fn desired_hash(
    d: &DesiredGroup,
    g: &CloudObject,
    groups: &BTreeMap<String, CloudObject>,
) -> String {
    let members = match d.members {
        MemberPolicy::Flatten => {
            let users = transitive_users(groups, &g.id);
            MemberDigest::of(users.iter().map(|m| m.id.as_str()))
        }
        _ => MemberDigest::of(g.members.keys().map(String::as_str)),
    };
    desired_hash_with(d, g, members)
}

/// [`desired_hash`] with the cloud members as their digest: what a group read without its
/// members is fingerprinted with (`g.members` is not looked at), so a member change of a big
/// group costs no pass over its members.
pub fn desired_hash_with(d: &DesiredGroup, g: &CloudObject, members: MemberDigest) -> String {
    let mut h = Sha256::new();
    // `on_create` is left out: a change there never leads to an AD write.
    h.update(
        serde_json::to_vec(&(&d.rule, &d.parent, &d.cn, &d.attributes, d.members))
            .unwrap_or_default(),
    );
    // Only when set, so the fingerprints of groups without links stay what they were.
    if !d.member_of.is_empty() {
        h.update(b"member_of\0");
        for t in &d.member_of {
            h.update(t.as_bytes());
            h.update(b"\n");
        }
    }
    // Where owners go (their ids are not in delta; a change of them arrives with the
    // reconciliation): declaring or moving it compares the group.
    if let Some(owners) = &d.owners {
        h.update(b"owners\0");
        h.update(owners.as_bytes());
    }
    // The cloud's own values of what the rule writes there: a change of them (someone cleared
    // the property) makes the group compared again, so it is put back.
    if !d.to_cloud.is_empty() {
        h.update(b"to_cloud\0");
        h.update(serde_json::to_vec(&d.to_cloud).unwrap_or_default());
        h.update(
            serde_json::to_vec(&super::desired::cloud_values(&d.to_cloud, g)).unwrap_or_default(),
        );
    }
    h.update(b"members\0");
    h.update(members.bytes());
    format!("{:x}", h.finalize())
}

/// The fingerprint of everything besides the cloud data that shapes a desired object: the
/// compiled rule files (path and content hash), the rules' settings, the managed OUs, how
/// members are matched and where. The applied hashes are only comparable under the same one.
pub fn rules_fingerprint(config: &Config, rules: &RuleSet) -> String {
    let mut h = Sha256::new();
    for f in rules.files() {
        h.update(f.path.to_string_lossy().as_bytes());
        h.update(b"\0");
        h.update(f.sha256.as_bytes());
        h.update(b"\n");
    }
    h.update(serde_json::to_vec(&config.rules.settings).unwrap_or_default());
    h.update(
        serde_json::to_vec(&(
            &config.ad.managed_ous,
            &config.ad.member_search_bases,
            super::resolve::match_fingerprint(config),
        ))
        .unwrap_or_default(),
    );
    format!("{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(cn: &str) -> DesiredGroup {
        DesiredGroup {
            rule: "10-x.rhai".into(),
            parent: "OU=W,DC=x".into(),
            cn: cn.into(),
            attributes: BTreeMap::new(),
            on_create: BTreeMap::new(),
            members: MemberPolicy::OnPremises,
            member_of: Vec::new(),
            to_cloud: BTreeMap::new(),
            owners: None,
        }
    }

    fn with_members(id: &str, n: usize) -> CloudObject {
        let members = (0..n)
            .map(|i| {
                let m = crate::graph::model::MemberRef {
                    odata_type: "#microsoft.graph.user".into(),
                    id: format!("{id}-u{i}"),
                };
                (m.id.clone(), m)
            })
            .collect();
        CloudObject {
            id: id.into(),
            members,
            ..Default::default()
        }
    }

    #[test]
    fn hand_overs_are_bounded_by_groups_and_by_members_and_lose_none() {
        // 100 small groups, then three big ones, one of them bigger than a hand-over alone.
        let mut groups: Vec<(String, CloudObject)> = (0..100)
            .map(|i| (format!("s{i:03}"), with_members(&format!("s{i}"), 2)))
            .collect();
        for (id, n) in [("t1", 10_000), ("t2", 10_000), ("t3", 40_000)] {
            groups.push((id.to_string(), with_members(id, n)));
        }
        let part: Vec<(&String, &CloudObject)> = groups.iter().map(|(k, g)| (k, g)).collect();
        let sizes: Vec<usize> = handovers(&part).map(<[_]>::len).collect();
        // 64 small; 36 small + t1 (10,072 members); t2 alone (t2 + t3 is over); t3 alone.
        assert_eq!(sizes, vec![64, 37, 1, 1]);
        let ids: Vec<&String> = handovers(&part).flatten().map(|(k, _)| *k).collect();
        assert_eq!(ids, part.iter().map(|(k, _)| *k).collect::<Vec<_>>());
        assert_eq!(handovers(&[]).count(), 0);
    }

    #[test]
    fn each_decision_has_its_verdict_and_a_rule_error_is_reported() {
        let g = CloudObject {
            id: "g1".into(),
            ..Default::default()
        };
        let groups = BTreeMap::from([("g1".to_string(), g)]);
        let (v, r) = verdict(
            "g1",
            Ok(Decision::Desired(desired("A, B"))),
            &groups,
            &groups,
        );
        match v {
            Verdict::InScope { hash, dn } => {
                assert_eq!(dn, "CN=A\\, B,OU=W,DC=x");
                assert!(!hash.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(r.is_none());
        // The same decision for a group gone from the cache meanwhile.
        let (v, _) = verdict("g2", Ok(Decision::Desired(desired("A"))), &groups, &groups);
        assert_eq!(v, Verdict::Gone);
        assert_eq!(
            verdict("g1", Ok(Decision::OutOfScope), &groups, &groups).0,
            Verdict::OutOfScope
        );
        assert_eq!(
            verdict("g1", Ok(Decision::Keep), &groups, &groups).0,
            Verdict::Keep
        );
        assert_eq!(
            verdict(
                "g1",
                Ok(Decision::DeleteAfter { secs: 60 }),
                &groups,
                &groups
            )
            .0,
            Verdict::DeleteAfter(60)
        );
        let boom = EvalError {
            rule: "10-x.rhai".into(),
            function: "to_ad".into(),
            group_id: "g1".into(),
            file: "10-x.rhai".into(),
            line: Some(3),
            column: Some(1),
            message: "boom".into(),
            kind: crate::rules::EvalErrorKind::Runtime,
        };
        let (v, r) = verdict("g1", Err(boom), &groups, &groups);
        assert_eq!(v, Verdict::Failed);
        let r = r.expect("a refusal");
        assert_eq!(
            (r.cloud_id.as_str(), r.reason.as_str()),
            (
                "g1",
                "10-x.rhai:3:1: boom (rule 10-x.rhai, to_ad(), group g1)"
            )
        );
    }
}
