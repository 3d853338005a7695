//! What the operational hooks are told after an applied cycle: a new held set (`on_held`), a
//! group that entered quarantine or fails differently (`on_failed`), a group the host newly
//! refused to write (`on_refused`: a foreign object, the schema, the managed OUs; a rule error
//! is a failure only). Pure: the cycle's report parts in, one call per event and
//! per rule file defining the hook out. Each event fires once, when it starts (a held set that
//! waits, a group failing the same way again, fire nothing more), so a ticket is opened once.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::rules::{Hook, TriggerEvent};
use crate::state::Seen;

use super::gate::Held;
use super::outcome::QuarantineNote;
use super::removals::HeldRemovals;
use super::triggers::Alert;
use super::types::Refusal;

/// The parts of an applied cycle the hooks hear about.
#[derive(Debug, Clone, Copy)]
pub struct Cycle<'a> {
    pub held: Option<&'a Held>,
    pub held_removals: Option<&'a HeldRemovals>,
    pub quarantined: &'a [QuarantineNote],
    pub refused: &'a [Refusal],
    /// displayName by cloud id, for the groups above (what a ticket names).
    pub names: &'a BTreeMap<String, String>,
}

/// One event: the hook, the group it is about (none for a held set) and what it says.
type Event = (Hook, String, Value);

/// The alerts of `c`, for the rule files `defining(hook)` returns (in its order).
pub fn alerts(c: Cycle<'_>, defining: impl Fn(Hook) -> Vec<String>) -> Vec<Alert> {
    let mut events = held_events(&c);
    events.extend(failure_events(&c));
    let mut out = Vec::new();
    for (hook, cloud_id, detail) in events {
        for rule in defining(hook) {
            out.push(Alert {
                rule,
                event: TriggerEvent {
                    hook,
                    cloud_id: cloud_id.clone(),
                    dn: String::new(),
                    group: None,
                    changes: detail.clone(),
                    members: Vec::new(),
                },
            });
        }
    }
    out
}

/// The displayName of a group, or null.
fn name(c: &Cycle<'_>, id: &str) -> Value {
    c.names.get(id).map_or(Value::Null, |n| json!(n))
}

/// `on_held` for a new held set of deletes or of member removals.
fn held_events(c: &Cycle<'_>) -> Vec<Event> {
    let mut events = Vec::new();
    if let Some(h) = c.held.filter(|h| h.new) {
        let groups: Vec<Value> = h
            .deletes
            .iter()
            .map(|e| json!({ "cloud_id": e.cloud_id, "dn": e.dn, "display_name": name(c, &e.cloud_id) }))
            .collect();
        events.push((
            Hook::OnHeld,
            String::new(),
            json!({
                "kind": "deletes",
                "set_id": h.set_id,
                "reason": h.reason,
                "approve": format!("writeback approve {}", h.set_id),
                "groups": groups,
            }),
        ));
    }
    if let Some(h) = c.held_removals.filter(|h| h.new) {
        let groups: Vec<Value> = h
            .groups
            .iter()
            .map(|g| {
                json!({
                    "cloud_id": g.cloud_id,
                    "dn": g.dn,
                    "display_name": name(c, &g.cloud_id),
                    "removals": g.removals,
                    "members": g.members,
                })
            })
            .collect();
        events.push((
            Hook::OnHeld,
            String::new(),
            json!({
                "kind": "member_removals",
                "set_id": h.set_id,
                "reason": "member removals over safety.member_removal_threshold_percent of a group's members",
                "approve": format!("writeback approve {}", h.set_id),
                "groups": groups,
            }),
        ));
    }
    events
}

/// `on_failed` for a group that entered quarantine or fails differently, and `on_refused`
/// for one the host newly refused.
fn failure_events(c: &Cycle<'_>) -> Vec<Event> {
    let mut events = Vec::new();
    let starting: BTreeMap<&str, &QuarantineNote> = c
        .quarantined
        .iter()
        .filter(|q| matches!(q.seen, Seen::New | Seen::Changed))
        .map(|q| (q.cloud_id.as_str(), q))
        .collect();
    for q in starting.values() {
        events.push((
            Hook::OnFailed,
            q.cloud_id.clone(),
            json!({
                "cloud_id": q.cloud_id,
                "display_name": name(c, &q.cloud_id),
                "error": q.reason,
                "failures": q.failures,
                "retry_at": q.retry_at,
                "seen": q.seen,
            }),
        ));
    }
    // A refusal without a rule is a rule error: a failure, not a refusal.
    for r in c.refused.iter().filter(|r| r.rule.is_some()) {
        if starting.contains_key(r.cloud_id.as_str()) {
            events.push((
                Hook::OnRefused,
                r.cloud_id.clone(),
                json!({
                    "cloud_id": r.cloud_id,
                    "display_name": name(c, &r.cloud_id),
                    "rule": r.rule,
                    "reason": r.reason,
                }),
            ));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::gate::HeldEntry;
    use crate::sync::removals::HeldRemoval;

    fn note(id: &str, seen: Seen) -> QuarantineNote {
        QuarantineNote {
            cloud_id: id.into(),
            reason: format!("{id} failed"),
            failures: 1,
            retry_at: "2026-12-06T00:00:00Z".into(),
            seen,
        }
    }

    fn held(new: bool) -> Held {
        Held {
            set_id: "s1".into(),
            reason: "3 deletes over the threshold".into(),
            deletes: vec![HeldEntry {
                cloud_id: "g1".into(),
                dn: "CN=G1,OU=W".into(),
            }],
            new,
        }
    }

    fn everywhere(_: Hook) -> Vec<String> {
        vec!["90-tickets.rhai".into()]
    }

    #[test]
    fn each_event_fires_once_when_it_starts() {
        let names: BTreeMap<String, String> = [("g1".to_string(), "Finance".to_string())].into();
        let removals = HeldRemovals {
            set_id: "r1".into(),
            new: true,
            groups: vec![HeldRemoval {
                cloud_id: "g2".into(),
                dn: "CN=G2,OU=W".into(),
                removals: 40,
                members: 50,
                removal_hash: "h".into(),
            }],
        };
        let quarantined = [
            note("new", Seen::New),
            note("other", Seen::Changed),
            note("same", Seen::Repeated),
        ];
        let refused = [
            Refusal {
                cloud_id: "new".into(),
                rule: Some("10-r.rhai".into()),
                reason: "CN=X carries this group's anchor".into(),
            },
            Refusal {
                cloud_id: "same".into(),
                rule: Some("10-r.rhai".into()),
                reason: "again".into(),
            },
            Refusal {
                cloud_id: "other".into(),
                rule: None,
                reason: "rules/10-r.rhai:3:5: a rule error".into(),
            },
        ];
        let got = alerts(
            Cycle {
                held: Some(&held(true)),
                held_removals: Some(&removals),
                quarantined: &quarantined,
                refused: &refused,
                names: &names,
            },
            everywhere,
        );
        let kinds: Vec<(Hook, &str)> = got
            .iter()
            .map(|a| (a.event.hook, a.event.cloud_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Hook::OnHeld, ""),
                (Hook::OnHeld, ""),
                (Hook::OnFailed, "new"),
                (Hook::OnFailed, "other"),
                (Hook::OnRefused, "new"),
            ]
        );
        let deletes = &got[0].event.changes;
        assert_eq!(deletes["approve"], "writeback approve s1");
        assert_eq!(deletes["groups"][0]["display_name"], "Finance");
        assert_eq!(got[1].event.changes["groups"][0]["removals"], 40);
        assert_eq!(got[2].event.changes["seen"], "new");
        assert_eq!(got[4].event.changes["rule"], "10-r.rhai");
        assert!(got.iter().all(|a| a.rule == "90-tickets.rhai"));
    }

    #[test]
    fn a_set_still_waiting_or_no_rule_with_the_hook_fires_nothing() {
        let names = BTreeMap::new();
        let c = Cycle {
            held: Some(&held(false)),
            held_removals: None,
            quarantined: &[note("same", Seen::Repeated)],
            refused: &[],
            names: &names,
        };
        assert!(alerts(c, everywhere).is_empty());
        let c = Cycle {
            held: Some(&held(true)),
            ..c
        };
        assert!(alerts(c, |_| Vec::new()).is_empty());
    }
}
