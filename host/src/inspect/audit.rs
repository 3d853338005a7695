//! `writeback audit`: every AD write and trigger the runs recorded (`run_event`), filtered by
//! group, DN subtree and time, as one text line or one JSON object per event.
//!
//! The JSON lines are for a SIEM: every object has the same keys ([`AuditLine`]), `null` or
//! empty when an event has no such part, whatever the event was.

use std::collections::BTreeSet;
use std::io::Write;
use std::ops::ControlFlow;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::ad::dn;
use crate::rules::quoted;
use crate::state::{EventQuery, EventRecord, EventSubjects, StateError, Store};
use crate::sync::types::dn_key;

use super::{parse_time, InspectError};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Time(#[from] InspectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("--dn-under {0}: not a DN (e.g. OU=Groups,DC=corp,DC=example)")]
    BadDn(String),
    #[error("--group {0}: no cached group has this id or displayName, and no anchor or audit event has this cloud id or DN")]
    UnknownGroup(String),
    #[error("--until is before --since: no event can match")]
    EmptyWindow,
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}

/// The command line's filters, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditOptions {
    /// A cloud id, a displayName or a DN.
    pub group: Option<String>,
    /// Events whose DN is this one or below it.
    pub dn_under: Option<String>,
    /// RFC 3339, or an age (`30m`, `12h`, `7d`).
    pub since: Option<String>,
    pub until: Option<String>,
    /// The newest `n` matching events (still printed oldest first).
    pub limit: Option<usize>,
    pub json_lines: bool,
}

/// One event as `--json-lines` prints it. The keys are stable; add, never rename.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditLine {
    /// When the event was recorded (RFC 3339, UTC).
    pub time: String,
    pub run_id: i64,
    pub event_id: i64,
    /// `create`, `update`, `delete`, `trigger:<hook>`, `schedule`.
    pub action: String,
    /// `ok`, `failed` or `skipped`.
    pub outcome: String,
    pub cloud_id: String,
    pub dn: String,
    /// The rule file that handled the group (or whose trigger or schedule ran), when recorded.
    pub rule: Option<String>,
    /// The new DN of a move.
    pub moved_to: Option<String>,
    /// Attribute values before and after (`before` is `null` for a create).
    pub changes: Vec<ValueChange>,
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
    /// Why a delete happened.
    pub reason: Option<String>,
    /// A trigger's or schedule's error.
    pub error: Option<String>,
    /// On a shared state ([state.postgres]): the instance that wrote it.
    pub instance: Option<String>,
}

/// One attribute's values before and after; `null` means absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueChange {
    pub attribute: String,
    pub before: Option<Vec<String>>,
    pub after: Option<Vec<String>>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

impl AuditLine {
    /// Reads the event's detail: the change as planned (`sync::types::Change`) for writes,
    /// `{rule, error}` for triggers and schedules. Unknown shapes leave the parts empty.
    pub fn from_event(e: &EventRecord) -> AuditLine {
        let d = &e.event.detail;
        let mut changes = Vec::new();
        if let Some(Value::Object(attrs)) = d.get("attributes") {
            for (attr, vals) in attrs {
                changes.push(ValueChange {
                    attribute: attr.clone(),
                    before: None,
                    after: Some(strings(Some(vals))),
                });
            }
        }
        if let Some(Value::Array(list)) = d.get("changes") {
            for c in list {
                let before = strings(c.get("old"));
                changes.push(ValueChange {
                    attribute: text(c, "attr").unwrap_or_default(),
                    before: (!before.is_empty()).then_some(before),
                    after: match c.get("op").and_then(Value::as_str) {
                        Some("clear") => None,
                        _ => Some(strings(c.get("values"))),
                    },
                });
            }
        }
        let mut members_added = strings(d.get("members_add"));
        if d.get("action").and_then(Value::as_str) == Some("create") {
            members_added.extend(strings(d.get("members")));
        }
        AuditLine {
            time: e.at.clone(),
            run_id: e.run_id,
            event_id: e.id,
            action: e.event.action.clone(),
            outcome: e.event.outcome.clone(),
            cloud_id: e.event.cloud_id.clone(),
            dn: e.event.dn.clone(),
            rule: text(d, "rule"),
            moved_to: text(d, "move_to"),
            changes,
            members_added,
            members_removed: strings(d.get("members_remove")),
            reason: text(d, "reason"),
            error: text(d, "error"),
            instance: text(d, "instance"),
        }
    }

    /// One line: time, run, action, outcome, DN, cloud id, then what changed.
    pub fn to_text(&self) -> String {
        let mut line = format!(
            "{}  run {}  {}  {}  {}",
            self.time,
            self.run_id,
            self.action,
            self.outcome,
            if self.dn.is_empty() { "-" } else { &self.dn }
        );
        if !self.cloud_id.is_empty() {
            line.push_str(&format!("  (cloud id {})", self.cloud_id));
        }
        let parts = self.details();
        if !parts.is_empty() {
            line.push_str("  ");
            line.push_str(&parts.join("; "));
        }
        line
    }

    /// What changed, one part each: the rule, a move, each attribute's values before and after,
    /// members added and removed, the reason, the error.
    pub fn details(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if let Some(r) = &self.rule {
            parts.push(format!("rule {r}"));
        }
        if let Some(to) = &self.moved_to {
            parts.push(format!("moved to {to}"));
        }
        for c in &self.changes {
            parts.push(format!(
                "{}: {} -> {}",
                c.attribute,
                values(c.before.as_deref()),
                values(c.after.as_deref())
            ));
        }
        if !self.members_added.is_empty() {
            parts.push(format!(
                "members +{}: {}",
                self.members_added.len(),
                some(&self.members_added)
            ));
        }
        if !self.members_removed.is_empty() {
            parts.push(format!(
                "members -{}: {}",
                self.members_removed.len(),
                some(&self.members_removed)
            ));
        }
        if let Some(r) = &self.reason {
            parts.push(format!("reason: {r}"));
        }
        if let Some(e) = &self.error {
            parts.push(format!("error: {}", quoted(e)));
        }
        if let Some(i) = &self.instance {
            parts.push(format!("by {i}"));
        }
        parts
    }
}

/// Values as a line shows them: quoted (and cut when long), `(none)` when absent.
fn values(v: Option<&[String]>) -> String {
    match v {
        None | Some([]) => "(none)".into(),
        Some([one]) => shown(one),
        Some(many) => format!(
            "[{}]",
            many.iter().map(|s| shown(s)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Characters of a DN shown whole; a longer one is cut after a whole RDN.
const DN_CHARS: usize = 240;

/// A value quoted: a DN whole up to [`DN_CHARS`] (cutting one in the middle of a name makes it
/// unreadable), cut after its last whole RDN within them beyond; anything else as `quoted`.
fn shown(value: &str) -> String {
    if !looks_like_dn(value) {
        return quoted(value);
    }
    let Some((limit, _)) = value.char_indices().nth(DN_CHARS) else {
        return format!("{value:?}");
    };
    // The last RDN separator before the limit: a ',' not escaped by a '\'.
    let bytes = value.as_bytes();
    let cut = (1..limit)
        .rev()
        .find(|&i| {
            let escapes = bytes
                .get(..i)
                .map_or(0, |b| b.iter().rev().take_while(|c| **c == b'\\').count());
            bytes.get(i) == Some(&b',') && escapes % 2 == 0
        })
        .unwrap_or(limit);
    format!(
        "{:?}... ({} characters)",
        value.get(..cut).unwrap_or(value),
        value.chars().count()
    )
}

/// The first few DNs of a long member list (the JSON line has them all).
fn some(dns: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = dns
        .iter()
        .take(SHOWN)
        .map(|d| shown(d))
        .collect::<Vec<_>>()
        .join(", ");
    if dns.len() > SHOWN {
        s.push_str(&format!(" and {} more", dns.len() - SHOWN));
    }
    s
}

/// A text that names an entry by DN (rather than an id or a name).
fn looks_like_dn(s: &str) -> bool {
    s.contains('=') && dn::parse_dn(s).is_ok_and(|p| !p.rdns.is_empty())
}

/// The objects `--group` names, and the cached groups a displayName matched (several groups
/// may share one: all their events are shown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupMatch {
    pub subjects: EventSubjects,
    pub named: Vec<(String, String)>,
    /// The names matched only ignoring case or surrounding spaces.
    pub loose: bool,
}

/// Resolves `--group`: a DN through the anchors (the AD object Writeback owns there) and the
/// events recorded at it; a cloud id as it is when anything knows it; a displayName through the
/// cloud cache.
pub fn resolve_group(store: &Store, group: &str) -> Result<GroupMatch, AuditError> {
    // A displayName keeps its spaces; ids and DNs do not have any to keep.
    let as_given = group;
    let group = group.trim();
    let mut m = GroupMatch::default();
    if looks_like_dn(group) {
        let key = dn_key(group);
        m.subjects.dns.insert(group.to_string());
        for a in store.anchors()?.into_values() {
            if dn_key(&a.dn) == key {
                m.subjects.dns.insert(a.dn.clone());
                m.subjects.cloud_ids.insert(a.cloud_id);
            }
        }
        let dns: Vec<String> = m.subjects.dns.iter().cloned().collect();
        for d in dns {
            m.subjects.cloud_ids.extend(store.event_cloud_ids_at(&d)?);
        }
        if m.subjects.cloud_ids.is_empty() {
            return Err(AuditError::UnknownGroup(group.to_string()));
        }
        return Ok(m);
    }
    let known = store
        .load_object(crate::state::ObjectKind::Group, group)?
        .is_some()
        || store.anchor(group)?.is_some()
        || has_events(store, group)?;
    if known {
        m.subjects.cloud_ids.insert(group.to_string());
    }
    m.named = store.cached_groups_named(as_given)?;
    m.loose = !m.named.is_empty() && !m.named.iter().any(|(_, n)| n == as_given);
    m.subjects
        .cloud_ids
        .extend(m.named.iter().map(|(id, _)| id.clone()));
    if m.subjects.cloud_ids.is_empty() {
        return Err(AuditError::UnknownGroup(group.to_string()));
    }
    Ok(m)
}

fn has_events(store: &Store, cloud_id: &str) -> Result<bool, StateError> {
    let mut found = false;
    let q = EventQuery {
        subjects: Some(EventSubjects {
            cloud_ids: BTreeSet::from([cloud_id.to_string()]),
            dns: BTreeSet::new(),
        }),
        newest_first: true,
        ..Default::default()
    };
    store.for_each_event(&q, |_| {
        found = true;
        ControlFlow::Break(())
    })?;
    Ok(found)
}

/// The events the filters select: the query for the state, and the DN subtree they must be in.
#[derive(Debug, Clone)]
pub struct Selection {
    query: EventQuery,
    under: Option<String>,
}

impl Selection {
    /// Reads the filters; notes about how `--group` matched go to `notes`.
    pub fn new(
        store: &Store,
        opts: &AuditOptions,
        now: OffsetDateTime,
        notes: &mut dyn Write,
    ) -> Result<Selection, AuditError> {
        let since = opts
            .since
            .as_deref()
            .map(|s| parse_time("--since", s, now))
            .transpose()?;
        let until = opts
            .until
            .as_deref()
            .map(|s| parse_time("--until", s, now))
            .transpose()?;
        if let (Some(s), Some(u)) = (&since, &until) {
            if u < s {
                return Err(AuditError::EmptyWindow);
            }
        }
        let under = match opts.dn_under.as_deref().map(str::trim) {
            Some(d) if looks_like_dn(d) => Some(d.to_string()),
            Some(d) => return Err(AuditError::BadDn(quoted(d))),
            None => None,
        };
        let subjects = match &opts.group {
            Some(g) => {
                let m = resolve_group(store, g)?;
                if m.loose {
                    writeln!(
                        notes,
                        "note: no cached group is named exactly {}; showing the groups that match ignoring case or surrounding spaces",
                        quoted(g)
                    )?;
                }
                if m.named.len() > 1 {
                    writeln!(
                        notes,
                        "note: {} cached groups are named {}; showing the events of all of them:",
                        m.named.len(),
                        quoted(g)
                    )?;
                    for (id, name) in &m.named {
                        writeln!(notes, "  {id}  {}", quoted(name))?;
                    }
                }
                Some(m.subjects)
            }
            None => None,
        };
        let query = EventQuery {
            since,
            until,
            subjects,
            newest_first: false,
        };
        Ok(Selection { query, under })
    }

    fn keep(&self, e: &EventRecord) -> bool {
        match &self.under {
            Some(base) => !e.event.dn.is_empty() && dn::is_within(&e.event.dn, base),
            None => true,
        }
    }

    /// The newest `limit` matching events, oldest first.
    pub fn newest(&self, store: &Store, limit: usize) -> Result<Vec<AuditLine>, AuditError> {
        let mut newest = Vec::new();
        if limit == 0 {
            return Ok(newest);
        }
        // Read from the end, returned in time order.
        let q = EventQuery {
            newest_first: true,
            ..self.query.clone()
        };
        store.for_each_event(&q, |e| {
            if self.keep(&e) {
                newest.push(AuditLine::from_event(&e));
            }
            if newest.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        newest.reverse();
        Ok(newest)
    }

    /// Calls `each` with every matching event, oldest first, until it breaks.
    pub fn each(
        &self,
        store: &Store,
        mut each: impl FnMut(AuditLine) -> ControlFlow<()>,
    ) -> Result<(), AuditError> {
        store.for_each_event(&self.query, |e| {
            if self.keep(&e) {
                each(AuditLine::from_event(&e))
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(())
    }
}

/// Prints the events `opts` selects to `out` (oldest first), notes to `notes`; returns how many
/// were printed.
pub fn run(
    store: &Store,
    opts: &AuditOptions,
    target: Option<&str>,
    now: OffsetDateTime,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<usize, AuditError> {
    let selection = Selection::new(store, opts, now, notes)?;
    let mut printed = 0usize;
    let mut failed: Option<std::io::Error> = None;
    match opts.limit {
        Some(limit) => {
            for line in selection.newest(store, limit)? {
                write_line(out, &line, target, opts.json_lines)?;
                printed += 1;
            }
        }
        None => selection.each(store, |line| {
            match write_line(out, &line, target, opts.json_lines) {
                Ok(()) => {
                    printed += 1;
                    ControlFlow::Continue(())
                }
                Err(err) => {
                    failed = Some(err);
                    ControlFlow::Break(())
                }
            }
        })?,
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    out.flush()?;
    Ok(printed)
}

/// A line with the AD target it was written to (configs with several targets).
#[derive(Serialize)]
struct TargetLine<'a> {
    target: &'a str,
    #[serde(flatten)]
    line: &'a AuditLine,
}

fn write_line(
    out: &mut dyn Write,
    line: &AuditLine,
    target: Option<&str>,
    json: bool,
) -> std::io::Result<()> {
    match (json, target) {
        (true, None) => serde_json::to_writer(&mut *out, line)?,
        (true, Some(target)) => serde_json::to_writer(&mut *out, &TargetLine { target, line })?,
        // One event, one line: a DN or an error from outside cannot forge another.
        (false, None) => {
            return writeln!(out, "{}", crate::printable::one_line(&line.to_text()));
        }
        (false, Some(t)) => {
            return writeln!(
                out,
                "target {t}  {}",
                crate::printable::one_line(&line.to_text())
            );
        }
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dn_is_shown_whole_or_cut_after_a_whole_rdn() {
        let short =
            "CN=User 0 u1234,OU=Users,OU=wb-ex-finance-b274eb87ffef4c15,DC=corp,DC=example,DC=test";
        assert_eq!(
            shown(short),
            format!("{short:?}"),
            "a usual DN is never cut"
        );
        let long = format!("CN=A\\,B,{}DC=x", "OU=Department of Long Names,".repeat(12));
        let s = shown(&long);
        assert!(
            s.ends_with(&format!("... ({} characters)", long.chars().count())),
            "{s}"
        );
        assert!(
            s.contains("OU=Department of Long Names\"... ("),
            "cut after an RDN: {s}"
        );
        assert!(
            s.starts_with("\"CN=A\\\\,B,OU="),
            "the escaped comma is not a cut: {s}"
        );
        assert!(s.chars().count() < DN_CHARS + 40, "{s}");
        // Not a DN: cut as any text.
        assert!(shown(&"x".repeat(300)).contains("(300 characters)"));
    }
    use crate::state::{AuditEvent, Store};
    use serde_json::json;

    fn store() -> Store {
        Store::open_in_memory().unwrap_or_else(|e| panic!("store: {e}"))
    }

    fn ev(cloud_id: &str, dn: &str, detail: Value) -> AuditEvent {
        AuditEvent {
            cloud_id: cloud_id.into(),
            action: detail
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or("trigger:on_created")
                .into(),
            dn: dn.into(),
            detail,
            outcome: "ok".into(),
        }
    }

    fn run_to_string(s: &Store, opts: &AuditOptions) -> Result<(String, String), AuditError> {
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        run(
            s,
            opts,
            None,
            OffsetDateTime::now_utc(),
            &mut out,
            &mut notes,
        )?;
        Ok((
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&notes).into_owned(),
        ))
    }

    /// Two groups created and one updated (moved, an attribute replaced and one cleared,
    /// members), a trigger, and a group in another OU.
    fn seeded() -> anyhow::Result<Store> {
        let mut s = store();
        s.apply_delta(
            crate::state::ObjectKind::Group,
            &crate::graph::model::DeltaRound {
                items: [("g1", "Sales"), ("g2", "Sales"), ("g3", "Ops")]
                    .iter()
                    .map(|(id, name)| {
                        let item = crate::graph::model::DeltaItem {
                            id: id.to_string(),
                            props: json!({ "displayName": name })
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                            ..Default::default()
                        };
                        (id.to_string(), item)
                    })
                    .collect(),
                delta_link: "L".into(),
                full: true,
            },
        )?;
        let r = s.begin_run(crate::state::RunMode::Sync)?;
        s.record_event(
            r,
            &ev(
                "g1",
                "CN=Sales,OU=Sec,OU=W,DC=x",
                json!({"cloud_id": "g1", "rule": "20-security.rhai", "action": "create",
                       "dn": "CN=Sales,OU=Sec,OU=W,DC=x",
                       "attributes": {"displayName": ["Sales"]}, "members": ["CN=U1,DC=x"]}),
            ),
        )?;
        s.record_event(
            r,
            &ev(
                "g3",
                "CN=Ops,OU=Other,DC=x",
                json!({"cloud_id": "g3", "action": "create", "dn": "CN=Ops,OU=Other,DC=x",
                       "attributes": {}, "members": []}),
            ),
        )?;
        s.record_event(
            r,
            &ev(
                "g1",
                "CN=Sales,OU=Sec,OU=W,DC=x",
                json!({"rule": "20-security.rhai", "error": null}),
            ),
        )?;
        s.finish_run(r, crate::state::RunStatus::Ok, &json!({}))?;
        let r = s.begin_run(crate::state::RunMode::Sync)?;
        s.record_event(
            r,
            &ev(
                "g2",
                "CN=Sales2,OU=Sec,OU=W,DC=x",
                json!({"cloud_id": "g2", "rule": "20-security.rhai", "action": "update",
                       "dn": "CN=Sales2,OU=Sec,OU=W,DC=x", "move_to": "CN=Sales3,OU=Sec,OU=W,DC=x",
                       "changes": [
                           {"op": "replace", "attr": "description", "values": ["new"], "old": ["old"]},
                           {"op": "clear", "attr": "info", "old": ["gone"]}],
                       "members_add": ["CN=U2,DC=x"], "members_remove": ["CN=U3,DC=x"]}),
            ),
        )?;
        s.finish_run(r, crate::state::RunStatus::Ok, &json!({}))?;
        Ok(s)
    }

    #[test]
    fn lines_say_what_changed_before_and_after() -> anyhow::Result<()> {
        let s = seeded()?;
        let (out, _) = run_to_string(&s, &AuditOptions::default())?;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].contains("  create  ok  CN=Sales,OU=Sec,OU=W,DC=x  (cloud id g1)"));
        assert!(
            lines[0].contains("displayName: (none) -> \"Sales\""),
            "{out}"
        );
        assert!(lines[0].contains("members +1: \"CN=U1,DC=x\""), "{out}");
        assert!(lines[2].contains("trigger:on_created  ok"), "{out}");
        let upd = lines[3];
        assert!(upd.contains("moved to CN=Sales3,OU=Sec,OU=W,DC=x"), "{upd}");
        assert!(upd.contains("description: \"old\" -> \"new\""), "{upd}");
        assert!(upd.contains("info: \"gone\" -> (none)"), "{upd}");
        assert!(
            upd.contains("members +1") && upd.contains("members -1"),
            "{upd}"
        );
        Ok(())
    }

    #[test]
    fn json_lines_have_the_same_keys_for_every_event() -> anyhow::Result<()> {
        let s = seeded()?;
        let opts = AuditOptions {
            json_lines: true,
            ..Default::default()
        };
        let (out, _) = run_to_string(&s, &opts)?;
        let mut keys: Option<Vec<String>> = None;
        for line in out.lines() {
            let v: Value = serde_json::from_str(line)?;
            let k: Vec<String> = v
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            assert_eq!(keys.get_or_insert_with(|| k.clone()), &k, "{line}");
        }
        let last: Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
        assert_eq!(last["changes"][0]["before"], json!(["old"]));
        assert_eq!(last["changes"][1]["after"], Value::Null);
        assert_eq!(last["members_removed"], json!(["CN=U3,DC=x"]));
        assert_eq!(keys.map(|k| k.len()), Some(15));
        Ok(())
    }

    #[test]
    fn filters_by_group_dn_subtree_time_and_limit() -> anyhow::Result<()> {
        let s = seeded()?;
        let count = |o: AuditOptions| -> anyhow::Result<(usize, String)> {
            let (out, notes) = run_to_string(&s, &o)?;
            Ok((out.lines().count(), notes))
        };
        let by = |g: &str| AuditOptions {
            group: Some(g.into()),
            ..Default::default()
        };
        assert_eq!(count(by("g3"))?.0, 1);
        // A displayName two groups share: both, with a note naming them.
        let (n, notes) = count(by("Sales"))?;
        assert_eq!(n, 3);
        assert!(notes.contains("g1") && notes.contains("g2"), "{notes}");
        // A DN, in any case, through the events recorded at it.
        assert_eq!(count(by("cn=ops,ou=other,dc=x"))?.0, 1);
        assert!(matches!(
            run_to_string(&s, &by("Nobody")),
            Err(AuditError::UnknownGroup(_))
        ));
        let under = |d: &str| AuditOptions {
            dn_under: Some(d.into()),
            ..Default::default()
        };
        assert_eq!(count(under("ou=sec,OU=W,DC=x"))?.0, 3);
        assert_eq!(count(under("OU=Other,DC=x"))?.0, 1);
        assert!(matches!(
            run_to_string(&s, &under("not a dn")),
            Err(AuditError::BadDn(_))
        ));
        let window = |since: &str| AuditOptions {
            since: Some(since.into()),
            ..Default::default()
        };
        assert_eq!(count(window("1h"))?.0, 4);
        assert_eq!(count(window("2999-01-01T00:00:00Z"))?.0, 0);
        assert!(matches!(
            run_to_string(&s, &window("tomorrow")),
            Err(AuditError::Time(_))
        ));
        let limited = AuditOptions {
            limit: Some(2),
            ..Default::default()
        };
        let (out, _) = run_to_string(&s, &limited)?;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("trigger:"),
            "the newest two, oldest first: {out}"
        );
        assert!(lines[1].contains("update"), "{out}");
        Ok(())
    }
}
