//! `writeback explain <cloud id | displayName | DN>`: what the rules make of one group, and what
//! a sync would do about it, without doing it.
//!
//! Read-only: the cloud group comes from the cache (Graph is not asked), the decision from the
//! rules, the desired object, member lookups and the diff from the same steps a cycle takes
//! (`sync::desired`, `sync::resolve`, `sync::actual`, `sync::ownership`, `sync::plan`). AD is
//! read, never written; the state is read, never written (no run is recorded, no mark moved).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::ad::{AdConn, AdError};
use crate::config::Config;
use crate::graph::model::CloudObject;
use crate::rules::{quoted, Decision, DesiredGroup, MemberPolicy, Now, RuleSet};
use crate::state::{Anchor, HeldDelete, ObjectKind, Quarantined, StateError, Store};
use crate::sync::desired::DesiredBuilder;
use crate::sync::evaluate::desired_hash;
use crate::sync::job::{claim_of, load_nested, member_group_dns};
use crate::sync::select::Verdict as SyncVerdict;
use crate::sync::types::{dn_key, ActualObject, Change, DesiredObject, Op, Unresolved};
use crate::sync::{actual, leave, ownership, plan, resolve, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl From<AdError> for ExplainError {
    fn from(e: AdError) -> Self {
        ExplainError::Sync(SyncError::Ad(e))
    }
}

/// How the query was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lookup {
    /// One cached group.
    Found,
    /// Known by its anchor (Writeback owns its AD object), but not in the cloud cache: deleted
    /// in the cloud, or never read.
    NotCached,
    /// Several cached groups have this displayName: see `candidates`.
    Ambiguous,
    NotFound,
}

/// What the rules decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    InScope,
    OutOfScope,
    /// The rule keeps its AD object as it is (`#{ leave: "keep" }`).
    Keep,
    /// The rule deletes its AD object after this long out of scope.
    DeleteAfter {
        secs: u64,
        after: String,
    },
    RuleError,
    /// Not in the cloud cache: nothing to evaluate.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopeView {
    pub verdict: Verdict,
    /// The rule file that put the group in scope, or whose `scope`/`map` failed.
    pub rule: Option<String>,
    /// The rule files in the order they are tried (an out-of-scope group was refused by all).
    pub rules: Vec<String>,
    /// The rule error, with file:line:column.
    pub error: Option<String>,
    /// The decision read `now()`: it may change with time alone.
    pub timed: bool,
}

/// The AD object carrying the group's anchor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdObjectView {
    pub dn: String,
    pub object_guid: Option<String>,
    /// Writeback's own (recorded, or created by a run that stopped before recording it), or
    /// another's (`foreign`: never modified or deleted).
    pub owned: bool,
}

/// Whether the applied fingerprint matches what the rules want now (a sync skips a group whose
/// fingerprint matches, unless it reconciles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    Current,
    Stale,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub query: String,
    pub lookup: Lookup,
    /// `(id, displayName)` of the groups an ambiguous displayName matched.
    pub candidates: Vec<(String, String)>,
    /// Found by a displayName that differs from the query in case or surrounding spaces.
    pub loose_name: bool,
    pub cloud_id: Option<String>,
    pub display_name: Option<String>,
    pub soft_deleted: bool,
    pub scope: Option<ScopeView>,
    /// The AD object the rules ask for, members resolved.
    pub desired: Option<DesiredObject>,
    /// Why the host would not write it (outside the managed OUs, schema, another tool's object).
    pub refused: Option<String>,
    /// Members that do not resolve to AD objects, and why.
    pub unresolved_members: Vec<Unresolved>,
    /// The objects carrying the group's anchor in the managed OUs.
    pub ad_objects: Vec<AdObjectView>,
    /// The anchor Writeback recorded for the group.
    pub anchor: Option<Anchor>,
    /// What the plan would do: empty when the AD object is in step.
    pub changes: Vec<Change>,
    /// True when the owned AD object is what the rules want (`changes` is empty).
    pub in_step: bool,
    pub applied: Applied,
    /// A cloud change of the group read and not applied yet.
    pub pending: bool,
    pub quarantine: Option<Quarantined>,
    pub held_delete: Option<HeldDelete>,
    /// Released with `writeback release`: no longer managed, its AD object left as it was.
    pub released: Option<crate::state::Released>,
    /// Kept or waiting for its delete since an earlier sync (Unix seconds).
    pub leaving: Option<crate::state::Leaving>,
    /// AD could not be read: the parts that need it are missing.
    pub ad_error: Option<String>,
    /// When the groups' delta was last read into the cloud cache (RFC 3339): the cloud group
    /// explained is as of then, AD as of now.
    pub cache_as_of: Option<String>,
    /// Seconds from `cache_as_of` to the explanation.
    pub cache_age_secs: Option<i64>,
    /// When the explanation was made (Unix seconds): a retry time is told against it.
    #[serde(skip)]
    pub now: i64,
}

impl Explanation {
    fn new(query: &str, lookup: Lookup) -> Explanation {
        Explanation {
            query: query.to_string(),
            lookup,
            candidates: Vec::new(),
            loose_name: false,
            cloud_id: None,
            display_name: None,
            soft_deleted: false,
            scope: None,
            desired: None,
            refused: None,
            unresolved_members: Vec::new(),
            ad_objects: Vec::new(),
            anchor: None,
            changes: Vec::new(),
            in_step: false,
            applied: Applied::None,
            pending: false,
            quarantine: None,
            held_delete: None,
            released: None,
            leaving: None,
            ad_error: None,
            cache_as_of: None,
            cache_age_secs: None,
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }

    /// Found (cached or anchored) and explained.
    pub fn found(&self) -> bool {
        matches!(self.lookup, Lookup::Found | Lookup::NotCached)
    }
}

/// How the query matched, the cloud id it names, the groups an ambiguous name matched, and
/// whether a displayName matched only ignoring case or surrounding spaces.
type Found = (Lookup, Option<String>, Vec<(String, String)>, bool);

/// What the query names: a cloud id, a DN (through the anchors), or a displayName (through the
/// cache).
fn find(store: &Store, query: &str) -> Result<Found, StateError> {
    let q = query.trim();
    if store.load_object(ObjectKind::Group, q)?.is_some() {
        return Ok((Lookup::Found, Some(q.to_string()), Vec::new(), false));
    }
    if store.anchor(q)?.is_some() {
        return Ok((Lookup::NotCached, Some(q.to_string()), Vec::new(), false));
    }
    if q.contains('=') && crate::ad::dn::parse_dn(q).is_ok() {
        let key = dn_key(q);
        let ids: Vec<String> = store
            .anchors()?
            .into_values()
            .filter(|a| dn_key(&a.dn) == key)
            .map(|a| a.cloud_id)
            .collect();
        if let [id] = ids.as_slice() {
            let cached = store.load_object(ObjectKind::Group, id)?.is_some();
            let how = if cached {
                Lookup::Found
            } else {
                Lookup::NotCached
            };
            return Ok((how, Some(id.clone()), Vec::new(), false));
        }
    }
    // The name as given, spaces and all: displayNames keep theirs.
    let named = store.cached_groups_named(query)?;
    let loose = !named.iter().any(|(_, n)| n == query);
    Ok(match named.as_slice() {
        [] => (Lookup::NotFound, None, Vec::new(), false),
        [(id, _)] => (Lookup::Found, Some(id.clone()), Vec::new(), loose),
        _ => (Lookup::Ambiguous, None, named, loose),
    })
}

/// Explains one group. `conn` is `Err` when AD could not be reached: the rules' part is still
/// explained.
pub async fn explain(
    config: &Config,
    rules: &RuleSet,
    store: &Store,
    conn: Result<&mut AdConn, &AdError>,
    query: &str,
) -> Result<Explanation, ExplainError> {
    let (lookup, id, candidates, loose_name) = find(store, query)?;
    let mut x = Explanation::new(query, lookup);
    x.candidates = candidates;
    x.loose_name = loose_name;
    let Some(id) = id else { return Ok(x) };
    x.cloud_id = Some(id.clone());
    x.cache_as_of = store.delta_link_updated(ObjectKind::Group)?;
    x.cache_age_secs = x.cache_as_of.as_deref().and_then(|at| {
        super::age_secs(
            at,
            time::OffsetDateTime::from_unix_timestamp(x.now)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        )
    });
    x.anchor = store.anchor(&id)?;
    x.pending = store.pending(ObjectKind::Group)?.contains(&id);
    x.quarantine = store.quarantined()?.remove(&id);
    x.held_delete = store.held_deletes()?.remove(&id);
    x.released = store.released()?.remove(&id);
    x.leaving = store.leaving()?.remove(&id);
    let names: Vec<String> = rules.rule_names().iter().map(|s| s.to_string()).collect();
    let now = Now::current();

    let group = store.load_object(ObjectKind::Group, &id)?;
    let desired = match &group {
        None => {
            x.scope = Some(ScopeView {
                verdict: Verdict::Gone,
                rule: None,
                rules: names,
                error: None,
                timed: false,
            });
            None
        }
        Some(g) => {
            x.display_name = g.str_prop("displayName").map(str::to_string);
            x.soft_deleted = g.soft_deleted;
            let (decision, timed) = rules.evaluate_timed(&g.to_rule_json(), now);
            let (verdict, rule, error, desired) = match decision {
                Ok(Decision::Desired(d)) => (Verdict::InScope, Some(d.rule.clone()), None, Some(d)),
                Ok(Decision::OutOfScope) => (Verdict::OutOfScope, None, None, None),
                Ok(Decision::Keep) => (Verdict::Keep, None, None, None),
                Ok(Decision::DeleteAfter { secs }) => (
                    Verdict::DeleteAfter {
                        secs,
                        after: crate::rules::format_duration(secs),
                    },
                    None,
                    None,
                    None,
                ),
                Err(e) => (
                    Verdict::RuleError,
                    (!e.rule.is_empty()).then(|| e.rule.clone()),
                    Some(e.to_string()),
                    None,
                ),
            };
            x.scope = Some(ScopeView {
                verdict,
                rule,
                rules: names,
                error,
                timed,
            });
            desired
        }
    };

    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            x.ad_error = Some(e.to_string());
            if let (Some(d), Some(_)) = (&desired, &group) {
                let builder = DesiredBuilder {
                    managed_ous: &config.ad.managed_ous,
                    link_targets: &config.ad.link_targets,
                    readable: &rules.graph_properties().groups,
                    schema: None,
                };
                match builder.object(&id, d) {
                    Ok(o) => x.desired = Some(o),
                    Err(r) => x.refused = Some(r.reason),
                }
            }
            return Ok(x);
        }
    };

    match (desired, group) {
        (Some(d), Some(g)) => in_scope(config, rules, store, conn, now, &id, d, g, &mut x).await?,
        _ => {
            // Out of scope, failing or gone: its owned object, if any, is what a sync deletes
            // (a rule error leaves it as it is).
            let found = actual::locate_owned(conn, config, None, &[&id]).await?;
            let mut owned = BTreeMap::new();
            for a in found {
                let own = claim_of(store, &a, false)?.owned();
                x.ad_objects.push(view(&a, own));
                if own {
                    owned.insert(id.clone(), a);
                }
            }
            // A failing rule leaves the object as it is; a kept one stays; one deleted later
            // goes only once its delay is over.
            let deletes = match x.scope.as_ref().map(|s| &s.verdict) {
                Some(Verdict::RuleError | Verdict::Keep) => false,
                Some(Verdict::DeleteAfter { secs, .. }) => {
                    let verdicts = [(id.clone(), SyncVerdict::DeleteAfter(*secs))].into();
                    let owned_ids = owned.keys().cloned().collect();
                    let recorded = x.leaving.iter().map(|l| (id.clone(), *l)).collect();
                    let decided =
                        leave::leave(&verdicts, &owned_ids, &recorded, now.unix_seconds());
                    if let Some(Some(l)) = decided.record.get(&id) {
                        x.leaving = Some(*l);
                    }
                    !decided.due.is_empty()
                }
                _ => true,
            };
            if deletes {
                x.changes = plan::plan(&BTreeMap::new(), &owned);
            }
            x.in_step = x.changes.is_empty();
        }
    }
    Ok(x)
}

fn view(a: &ActualObject, owned: bool) -> AdObjectView {
    AdObjectView {
        dn: a.dn.clone(),
        object_guid: a.guid.clone(),
        owned,
    }
}

/// The in-scope part: the object built in full (checked against the schema), its members
/// resolved, the owned object read by anchor, the diff.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the steps of a batch, for one group"
)]
async fn in_scope(
    config: &Config,
    rules: &RuleSet,
    store: &Store,
    conn: &mut AdConn,
    now: Now,
    id: &str,
    d: DesiredGroup,
    g: CloudObject,
    x: &mut Explanation,
) -> Result<(), ExplainError> {
    let mut groups: BTreeMap<String, CloudObject> = BTreeMap::new();
    groups.insert(id.to_string(), g);
    if d.members == MemberPolicy::Flatten {
        load_nested(store, &[id.to_string()], &mut groups)?;
    }
    let schema = conn.load_schema().await?;
    let builder = DesiredBuilder {
        managed_ous: &config.ad.managed_ous,
        link_targets: &config.ad.link_targets,
        readable: &rules.graph_properties().groups,
        schema: Some(&schema),
    };
    // Read by anchor whether or not the rules' output is writable: the object is shown either
    // way.
    let mut probe = BTreeMap::new();
    let built = builder.object(id, &d).map(|mut o| {
        if let Some(g) = groups.get(id) {
            o.cloud_now = crate::sync::desired::cloud_values(&o.to_cloud, g);
        }
        o
    });
    if let Ok(o) = &built {
        probe.insert(id.to_string(), o.clone());
    }
    let attrs = actual::managed_attributes(&probe);
    let ids = [&id.to_string()];
    let found = actual::read_owned(conn, config, None, &ids, &attrs).await?;
    let mut owned = BTreeMap::new();
    let mut foreign = None;
    for a in found {
        let own = claim_of(store, &a, false)?.owned();
        x.ad_objects.push(view(&a, own));
        if own {
            owned.insert(id.to_string(), a);
        } else {
            foreign.get_or_insert(a);
        }
    }
    let mut o = match built {
        Ok(o) => o,
        Err(r) => {
            x.refused = Some(r.reason);
            return Ok(());
        }
    };
    let Some(group) = groups.get(id) else {
        return Ok(());
    };
    x.applied = match store.applied_hash(id)? {
        Some(h) if h == desired_hash(&d, group, &groups) => Applied::Current,
        Some(_) => Applied::Stale,
        None => Applied::None,
    };
    let policies = BTreeMap::from([(id.to_string(), d.members)]);
    let named = resolve::wanted([id], &policies, &groups);
    let mut verdicts = BTreeMap::new();
    let written = member_group_dns(store, rules, now, &named.groups, &mut verdicts, false)?;
    let cached = resolve::Cached::load(store, &named)?;
    let directory = resolve::resolve_members(
        config,
        conn,
        &named,
        cached,
        &mut resolve::Lookups::default(),
    )
    .await?;
    o.members = builder.members(
        group,
        &groups,
        d.members,
        &written,
        &directory,
        &mut x.unresolved_members,
    );
    x.unresolved_members.sort();
    if owned.is_empty() {
        if let Some(f) = &foreign {
            // As a cycle does: never a second object beside one another tool owns.
            x.refused = Some(match &x.released {
                Some(r) => format!(
                    "{} was released with `writeback release` at {}: it is left as it is; `writeback adopt` takes it back",
                    f.dn, r.released_at
                ),
                None => ownership::foreign_reason(f),
            });
            x.desired = Some(o);
            return Ok(());
        }
    }
    // As a cycle does while devices cannot be read: the computers the group has stay.
    if !crate::sync::devices::holding_unreadable(&x.unresolved_members).is_empty() {
        if let Some(a) = owned.get(id) {
            crate::sync::devices::keep_computers(conn, &mut o, a).await?;
        }
    }
    let desired = BTreeMap::from([(id.to_string(), o.clone())]);
    let mut links = store.links_of(owned.keys())?;
    for (id, a) in owned.iter_mut() {
        a.links = links.remove(id).unwrap_or_default();
    }
    x.changes = plan::plan(&desired, &owned);
    x.in_step = x.changes.is_empty();
    x.desired = Some(o);
    Ok(())
}

/// The explanation as text, section by section.
pub fn render(x: &Explanation) -> String {
    let mut s = String::new();
    let q = quoted(&x.query);
    match x.lookup {
        Lookup::NotFound => {
            let _ = writeln!(
                s,
                "not found: no cached cloud group has the id or displayName {q}, and no anchor has that id or DN"
            );
            return s;
        }
        Lookup::Ambiguous => {
            let _ = writeln!(
                s,
                "{} cached groups are named {q}; explain one by its cloud id:",
                x.candidates.len()
            );
            for (id, name) in &x.candidates {
                let _ = writeln!(s, "  {id}  {}", quoted(name));
            }
            return s;
        }
        _ => {}
    }
    let id = x.cloud_id.as_deref().unwrap_or_default();
    match (&x.lookup, &x.display_name) {
        (Lookup::NotCached, _) => {
            let _ = writeln!(
                s,
                "group {id}: not in the cloud cache (deleted in the cloud?), but Writeback has its anchor"
            );
        }
        (_, Some(name)) => {
            let _ = writeln!(
                s,
                "group {id} {}{}",
                quoted(name),
                if x.soft_deleted {
                    " (soft-deleted in the cloud)"
                } else {
                    ""
                }
            );
            if x.loose_name {
                let _ = writeln!(
                    s,
                    "  (no cached group is named exactly {q}; this one matches ignoring case or surrounding spaces)"
                );
            }
        }
        (_, None) => {
            let _ = writeln!(s, "group {id} (no displayName)");
        }
    }
    if let Some(sc) = &x.scope {
        let rules = sc.rules.join(", ");
        let line = match sc.verdict {
            Verdict::InScope => format!(
                "scope: in scope, mapped by {}",
                sc.rule.as_deref().unwrap_or("?")
            ),
            Verdict::OutOfScope => format!(
                "scope: out of scope: no rule takes it (the scope() of each of {rules} returned false, or the rule that took it returned () from map())"
            ),
            Verdict::Keep => format!(
                "scope: out of scope, and the rule keeps its AD object as it is (leave: \"keep\"): no longer written, deleted when the cloud group is deleted (rules: {rules})"
            ),
            Verdict::DeleteAfter { ref after, .. } => format!(
                "scope: out of scope, and the rule deletes its AD object {after} after it left scope (leave: \"delete\"); not written meanwhile (rules: {rules})"
            ),
            Verdict::RuleError => format!(
                "scope: rule error in {}: {}; its AD object is left as it is",
                sc.rule.as_deref().unwrap_or("the rules"),
                sc.error.as_deref().unwrap_or_default()
            ),
            Verdict::Gone => format!("scope: nothing to evaluate (rules: {rules})"),
        };
        let _ = writeln!(s, "{line}");
        if sc.timed {
            let _ = writeln!(
                s,
                "  (the decision read now(): it may change with time alone)"
            );
        }
    }
    if let Some(d) = &x.desired {
        let _ = writeln!(s, "desired: {}", d.dn);
        for (attr, vals) in &d.attributes {
            let shown = match vals {
                Some(v) if !v.is_empty() => {
                    v.iter().map(|v| quoted(v)).collect::<Vec<_>>().join(", ")
                }
                _ => "(cleared)".into(),
            };
            let _ = writeln!(s, "  {attr}: {shown}");
        }
        for (attr, vals) in &d.on_create {
            let shown = vals
                .iter()
                .map(|v| quoted(v))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "  {attr}: {shown} (written only when the group is created)"
            );
        }
        if let Some(o) = d
            .owners
            .as_ref()
            .filter(|o| !d.attributes.contains_key(&o.attribute))
        {
            let _ = writeln!(
                s,
                "  {}: the cloud group's owners found in AD{}, read from Graph when a sync compares the group (explain does not ask Graph)",
                o.attribute,
                if o.single_valued { " (the first by DN)" } else { "" }
            );
        }
        match &d.members {
            None => {
                let _ = writeln!(s, "  members: left alone (the rule manages none)");
            }
            Some(m) => {
                let _ = writeln!(s, "  members ({}):", m.len());
                for dn in m {
                    let _ = writeln!(s, "    {dn}");
                }
            }
        }
    }
    if !x.unresolved_members.is_empty() {
        let _ = writeln!(s, "unresolved members ({}):", x.unresolved_members.len());
        for u in &x.unresolved_members {
            let _ = writeln!(s, "  {} {}: {}", u.member_type, u.member_id, u.reason);
        }
    }
    if let Some(r) = &x.refused {
        let _ = writeln!(s, "refused: {r}");
    }
    if x.ad_objects.is_empty() && x.ad_error.is_none() {
        let _ = writeln!(s, "AD: no object carries its anchor in the managed OUs");
    }
    for a in &x.ad_objects {
        let _ = writeln!(
            s,
            "AD: {} (objectGUID {}){}",
            a.dn,
            a.object_guid.as_deref().unwrap_or("?"),
            if a.owned {
                ", Writeback's"
            } else {
                ", NOT Writeback's: another object carries its anchor; it is left alone"
            }
        );
    }
    if let Some(e) = &x.ad_error {
        let _ = writeln!(s, "AD: not read ({e}); no diff");
    } else if x.refused.is_none()
        && !matches!(
            x.scope.as_ref().map(|s| &s.verdict),
            Some(Verdict::RuleError)
        )
    {
        let compared = compared(x);
        if x.changes.is_empty() {
            let _ = writeln!(s, "diff: in step, a sync changes nothing ({compared})");
        } else {
            let _ = writeln!(s, "diff: a sync would ({compared}):");
            for c in &x.changes {
                render_change(&mut s, c);
            }
        }
    }
    if x.applied == Applied::Stale {
        let _ = writeln!(
            s,
            "applied: the last applied state differs from what the rules want now"
        );
    }
    if x.pending {
        let _ = writeln!(
            s,
            "pending: a cloud change of the group is read and not applied yet"
        );
    }
    match &x.quarantine {
        Some(q) => {
            let next = if q.retry_at > x.now {
                format!(
                    "the next try is at {} (in {}), or at once when the group changes",
                    crate::state::rfc3339_at(q.retry_at),
                    super::human_age(q.retry_at - x.now)
                )
            } else {
                "its wait is over: the next sync tries it again".to_string()
            };
            let _ = writeln!(
                s,
                "quarantine: yes, {} failure(s) since {}; {next}; last error: {}",
                q.failures,
                q.first_at,
                q.error.trim_end()
            );
        }
        None => {
            let _ = writeln!(s, "quarantine: no");
        }
    }
    if let Some(r) = &x.released {
        let _ = writeln!(
            s,
            "released: yes, at {} (`writeback adopt` takes it back)",
            r.released_at
        );
    }
    if let Some(l) = &x.leaving {
        let since = leave::rfc3339(l.since);
        let _ = match l.delete_at {
            None => writeln!(s, "kept: yes, since {since}: no longer written"),
            Some(at) => writeln!(
                s,
                "delete later: yes, out of scope since {since}, deleted at {}",
                leave::rfc3339(at)
            ),
        };
    }
    match &x.held_delete {
        Some(h) => {
            let _ = writeln!(
                s,
                "held delete: yes, {} since {}{}",
                h.dn,
                h.held_at,
                if h.approved {
                    " (approved)"
                } else {
                    " (waiting for `writeback approve`)"
                }
            );
        }
        None => {
            let _ = writeln!(s, "held delete: no");
        }
    }
    s
}

/// What the diff compared: the cloud side is the cache, as of the last groups delta read; a
/// change made in the cloud since then is not in it.
fn compared(x: &Explanation) -> String {
    let when = match (&x.cache_as_of, x.cache_age_secs) {
        (Some(at), Some(age)) => format!(" at {at}, {} ago", super::human_age(age.max(0))),
        (Some(at), None) => format!(" at {at}"),
        _ => String::new(),
    };
    format!(
        "the cloud group as cached by the last sync{when}, against AD read now; a cloud change since is not seen"
    )
}

/// The group's links into groups Writeback does not own (`member_of`).
fn render_links(s: &mut String, links: &crate::sync::types::Links) {
    for t in &links.add {
        let _ = writeln!(s, "    + member of {t}");
    }
    for t in &links.remove {
        let _ = writeln!(s, "    - member of {t}");
    }
}

fn render_change(s: &mut String, c: &Change) {
    match &c.op {
        Op::Create {
            cloud,
            dn,
            attributes,
            members,
            links,
        } => {
            let _ = writeln!(
                s,
                "  create {dn} with {} attribute(s) and {} member(s)",
                attributes.len(),
                members.len()
            );
            render_links(s, links);
            for (k, v) in cloud {
                let _ = writeln!(s, "    cloud {k}: {v}");
            }
        }
        Op::Update {
            cloud,
            dn,
            move_to,
            changes,
            members_add,
            members_remove,
            links,
        } => {
            let _ = writeln!(s, "  update {dn}");
            if let Some(to) = move_to {
                let _ = writeln!(s, "    move to {to}");
            }
            for ch in changes {
                let (attr, old, new) = match ch {
                    crate::sync::types::AttrChange::Replace { attr, values, old } => {
                        (attr, old, Some(values))
                    }
                    crate::sync::types::AttrChange::Clear { attr, old } => (attr, old, None),
                };
                let list = |v: &[String]| {
                    if v.is_empty() {
                        "(none)".to_string()
                    } else {
                        v.iter().map(|v| quoted(v)).collect::<Vec<_>>().join(", ")
                    }
                };
                let _ = writeln!(
                    s,
                    "    {attr}: {} -> {}",
                    list(old),
                    new.map(|n| list(n)).unwrap_or_else(|| "(cleared)".into())
                );
            }
            for m in members_add {
                let _ = writeln!(s, "    + member {m}");
            }
            for m in members_remove {
                let _ = writeln!(s, "    - member {m}");
            }
            render_links(s, links);
            for (k, v) in cloud {
                let _ = writeln!(s, "    cloud {k}: {v}");
            }
        }
        Op::Delete { dn, reason } => {
            let _ = writeln!(s, "  delete {dn} ({reason})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::types::AttrChange;

    /// A displayName is matched as Graph holds it, spaces and all; a trimmed or case-folded
    /// match is found too and said to be one.
    #[test]
    fn a_group_is_found_by_its_name_with_its_spaces() -> anyhow::Result<()> {
        use crate::graph::model::{DeltaItem, DeltaRound};
        let mut store = Store::open_in_memory()?;
        let name = " R&D, \"Labs\" ‹Zürich> #1; a+b=c \\ ";
        let item = |id: &str, n: &str| {
            let props = serde_json::json!({ "displayName": n });
            let props = props.as_object().cloned().unwrap_or_default();
            (
                id.to_string(),
                DeltaItem {
                    id: id.into(),
                    props,
                    ..Default::default()
                },
            )
        };
        store.apply_delta(
            ObjectKind::Group,
            &DeltaRound {
                items: [item("g1", name), item("g2", "Sales")]
                    .into_iter()
                    .collect(),
                delta_link: "L".into(),
                full: true,
            },
        )?;
        let (lookup, id, _, loose) = find(&store, name)?;
        assert_eq!(
            (lookup, id.as_deref(), loose),
            (Lookup::Found, Some("g1"), false)
        );
        let (lookup, id, _, loose) = find(&store, name.trim())?;
        assert_eq!(
            (lookup, id.as_deref(), loose),
            (Lookup::Found, Some("g1"), true)
        );
        let (_, id, _, loose) = find(&store, "SALES")?;
        assert_eq!((id.as_deref(), loose), (Some("g2"), true));
        let mut x = Explanation::new(name.trim(), Lookup::Found);
        x.cloud_id = Some("g1".into());
        x.display_name = Some(name.into());
        x.loose_name = true;
        assert!(render(&x).contains("matches ignoring case or surrounding spaces"));
        Ok(())
    }

    fn base(lookup: Lookup) -> Explanation {
        let mut x = Explanation::new("Sales", lookup);
        x.cloud_id = Some("g1".into());
        x.display_name = Some("Sales".into());
        x
    }

    #[test]
    fn not_found_and_ambiguous_say_so() {
        let x = Explanation::new("Nobody", Lookup::NotFound);
        assert!(!x.found());
        assert!(render(&x).starts_with("not found:"), "{}", render(&x));
        let mut x = Explanation::new("Sales", Lookup::Ambiguous);
        x.candidates = vec![("g1".into(), "Sales".into()), ("g2".into(), "Sales".into())];
        let t = render(&x);
        assert!(t.contains("2 cached groups are named \"Sales\""), "{t}");
        assert!(
            t.contains("  g1  \"Sales\"") && t.contains("  g2  \"Sales\""),
            "{t}"
        );
    }

    #[test]
    fn in_step_and_pending_changes_are_told_apart() {
        let mut x = base(Lookup::Found);
        x.scope = Some(ScopeView {
            verdict: Verdict::InScope,
            rule: Some("20-security.rhai".into()),
            rules: vec!["10-microsoft-365.rhai".into(), "20-security.rhai".into()],
            error: None,
            timed: false,
        });
        x.desired = Some(DesiredObject {
            cloud_now: Default::default(),
            owners: None,
            to_cloud: Default::default(),
            member_of: Default::default(),
            cloud_id: "g1".into(),
            rule: "20-security.rhai".into(),
            dn: "CN=Sales,OU=W,DC=x".into(),
            attributes: BTreeMap::from([("description".to_string(), Some(vec!["d".to_string()]))]),
            on_create: BTreeMap::new(),
            members: Some(vec!["CN=U1,DC=x".into()]),
        });
        x.ad_objects = vec![AdObjectView {
            dn: "CN=Sales,OU=W,DC=x".into(),
            object_guid: Some("guid".into()),
            owned: true,
        }];
        x.in_step = true;
        x.cache_as_of = Some("2026-12-02T09:48:00.000Z".into());
        x.cache_age_secs = Some(720);
        let t = render(&x);
        assert!(
            t.contains("scope: in scope, mapped by 20-security.rhai"),
            "{t}"
        );
        assert!(t.contains("desired: CN=Sales,OU=W,DC=x"), "{t}");
        // What was compared, and how old the cloud side is.
        assert!(
            t.contains("diff: in step, a sync changes nothing (the cloud group as cached by the last sync at 2026-12-02T09:48:00.000Z, 12 min ago, against AD read now"),
            "{t}"
        );
        assert!(
            t.contains("quarantine: no") && t.contains("held delete: no"),
            "{t}"
        );

        x.in_step = false;
        x.changes = vec![Change {
            cloud_id: "g1".into(),
            rule: Some("20-security.rhai".into()),
            op: Op::Update {
                cloud: Default::default(),
                links: Default::default(),
                dn: "CN=Sales,OU=W,DC=x".into(),
                move_to: Some("CN=Sales 2,OU=W,DC=x".into()),
                changes: vec![AttrChange::Replace {
                    attr: "description".into(),
                    values: vec!["new".into()],
                    old: vec!["old".into()],
                }],
                members_add: vec!["CN=U2,DC=x".into()],
                members_remove: vec![],
            },
        }];
        x.quarantine = Some(Quarantined {
            cloud_id: "g1".into(),
            error: "update CN=Sales,OU=W,DC=x: already exists".into(),
            failures: 2,
            first_at: "2026-12-02T10:00:00.000Z".into(),
            last_at: "2026-12-02T10:01:00.000Z".into(),
            retry_at: 0,
        });
        x.now = 1_000;
        let t = render(&x);
        assert!(
            t.contains("its wait is over: the next sync tries it again; last error: update"),
            "{t}"
        );
        if let Some(q) = x.quarantine.as_mut() {
            q.retry_at = 1_300;
        }
        let t = render(&x);
        assert!(
            t.contains("; the next try is at 1970-01-01T00:21:40.000Z (in 5 min), or at once when the group changes; last error:"),
            "{t}"
        );
        assert!(
            t.contains("diff: a sync would (the cloud group as cached"),
            "{t}"
        );
        assert!(!t.contains("in step"), "{t}");
        assert!(t.contains("move to CN=Sales 2,OU=W,DC=x"), "{t}");
        assert!(t.contains("description: \"old\" -> \"new\""), "{t}");
        assert!(t.contains("+ member CN=U2,DC=x"), "{t}");
        assert!(t.contains("quarantine: yes, 2 failure(s)"), "{t}");
        let json = serde_json::to_value(&x).unwrap_or_default();
        assert_eq!(json["lookup"], "found");
        assert_eq!(json["scope"]["verdict"], "in_scope");
        assert_eq!(json["changes"][0]["action"], "update");
    }

    #[test]
    fn out_of_scope_names_the_rules_and_a_rule_error_its_file() {
        let mut x = base(Lookup::Found);
        x.scope = Some(ScopeView {
            verdict: Verdict::OutOfScope,
            rule: None,
            rules: vec!["10-microsoft-365.rhai".into(), "20-security.rhai".into()],
            error: None,
            timed: false,
        });
        x.in_step = true;
        let t = render(&x);
        assert!(
            t.contains("out of scope") && t.contains("10-microsoft-365.rhai, 20-security.rhai"),
            "{t}"
        );
        assert!(t.contains("AD: no object carries its anchor"), "{t}");
        x.scope = Some(ScopeView {
            verdict: Verdict::RuleError,
            rule: Some("20-security.rhai".into()),
            rules: vec![],
            error: Some("20-security.rhai:3:5: boom".into()),
            timed: false,
        });
        let t = render(&x);
        assert!(
            t.contains("rule error in 20-security.rhai: 20-security.rhai:3:5: boom"),
            "{t}"
        );
        assert!(
            !t.contains("diff:"),
            "a failing group is left as it is: {t}"
        );
    }
}
