//! Apply: carries a plan out over LDAP, in an order AD accepts (create, move, modify, members,
//! delete). An object AD refuses is reported with AD's message and skipped; the rest goes on.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use crate::ad::{self, AdError};

use super::directory::Directory;
use tokio::task::JoinSet;

/// Adds in flight at once during creates.
const PARALLEL_CREATES: usize = 4;

use super::progress::Progress;
use super::types::{dn_key, is_within, AttrChange, Change, Links, Op, Plan, ANCHOR_ATTRS};

/// What kind of change an outcome is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one planned change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub cloud_id: String,
    pub action: Action,
    /// The DN the object has after the change (the new DN after a move).
    pub dn: String,
    /// AD's objectGUID after a create (for the anchor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// `None` when everything succeeded; otherwise what failed, with AD's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Member values AD did not take (e.g. the member object vanished), with AD's message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_errors: Vec<String>,
    /// The failure was the connection's (DC down, connection cut), not the object's: retried
    /// on the next cycle, not quarantined.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
    /// A create AD answered with a refusal (or the host refused before sending it): no object
    /// was made, so the intent recorded before the add is settled (see `sync::ownership`).
    #[serde(skip)]
    pub not_created: bool,
    /// Links into other groups (`member_of`) this change added: recorded as Writeback's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links_added: Vec<String>,
    /// Links this change removed (or found gone already): their records go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links_removed: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.member_errors.is_empty()
    }

    /// Records `e` as this change's failure (with `context` before AD's message, if any).
    fn fail(&mut self, context: &str, e: &AdError) {
        self.error = Some(format!("{context}{e}"));
        self.transient |= e.is_connection_error();
    }
}

/// How a create that met an existing object of the same name is reported.
const CONFLICT: &str =
    "conflict: an object Writeback does not own already uses this name or sAMAccountName";

/// What to do about an object that holds the name a create of `cloud_id` needs.
pub fn conflict_next(cloud_id: &str) -> String {
    format!(
        "Next: rename or move that object, or give this group another name in the rules; or, to hand that object to Writeback, set its adminDescription to {} and run `writeback adopt --dry-run`, then `writeback adopt`",
        super::types::anchor_value(cloud_id)
    )
}

/// Member adds held back until the groups they name exist: (cloud id, group DN, member DNs).
pub type Deferred = Vec<(String, String, Vec<String>)>;

/// Runs `plan` against AD. Every DN is checked against the managed OUs once more here, so no
/// plan, whatever produced it, writes elsewhere.
///
/// `created_elsewhere` holds the DNs (as [`dn_key`]s) of groups this cycle creates in other
/// batches: member adds that name them are not sent here but returned, for the cycle to send
/// once every batch has run. A create carries at most [`ad::MEMBERS_IN_ADD`] members; the rest
/// follow as modifies of [`ad::MEMBER_BATCH`].
pub async fn apply(
    conn: &mut impl Directory,
    plan: &Plan,
    managed_ous: &[String],
    link_targets: &[String],
    created_elsewhere: &BTreeSet<String>,
) -> (Vec<Outcome>, Deferred) {
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    // 1. Creates, with their members in the same add (one request per group, as an LDIF
    // import does); the members that could not go with them wait for step 3.
    let later = create_all(conn, plan, managed_ous, &mut outcomes).await;
    record_guids(conn, managed_ous, &mut outcomes).await;
    // 2. Moves and attribute changes.
    update_all(conn, plan, managed_ous, &mut outcomes).await;
    // 3. Members, once every group of this plan exists.
    let deferred = members_all(conn, plan, &later, created_elsewhere, &mut outcomes).await;
    // 4. Links into groups Writeback does not own, once the group exists where it stays.
    links_all(conn, plan, link_targets, &mut outcomes).await;
    // 5. Deletes last, so members moved elsewhere first are not lost.
    delete_all(conn, plan, managed_ous, &mut outcomes).await;
    (outcomes.into_values().collect(), deferred)
}

/// Whether `dn` is inside one of the managed OUs.
fn inside(managed_ous: &[String], dn: &str) -> bool {
    managed_ous.iter().any(|ou| is_within(dn, ou))
}

impl Outcome {
    /// The outcome of `c` before anything is sent: no error yet.
    fn start(c: &Change, action: Action, dn: &str) -> Outcome {
        Outcome {
            cloud_id: c.cloud_id.clone(),
            action,
            dn: dn.to_string(),
            guid: None,
            error: None,
            member_errors: Vec::new(),
            transient: false,
            not_created: false,
            links_added: Vec::new(),
            links_removed: Vec::new(),
        }
    }
}

/// A finished add: the group's cloud id, AD's answer and the members still to add.
type Created = (String, Result<(), AdError>, Vec<String>);

/// Sends the plan's creates, a few in flight at once, and returns the members each still
/// needs (groups this plan creates, or what did not fit in the add).
async fn create_all<D: Directory>(
    conn: &mut D,
    plan: &Plan,
    managed_ous: &[String],
    outcomes: &mut BTreeMap<String, Outcome>,
) -> BTreeMap<String, Vec<String>> {
    // Members that are groups created by this same plan may not exist yet.
    let created_here: BTreeSet<String> = plan
        .changes
        .iter()
        .filter_map(|c| match &c.op {
            Op::Create { dn, .. } => Some(dn_key(dn)),
            _ => None,
        })
        .collect();
    let mut later: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // A few adds in flight on the one multiplexed connection hide the round trips (AD still
    // applies writes one at a time); results are keyed by cloud id, so order does not matter.
    let mut running: JoinSet<Created> = JoinSet::new();
    let mut creating = Progress::new(
        "creating",
        plan.changes
            .iter()
            .filter(|c| matches!(c.op, Op::Create { .. }))
            .count(),
    );
    for c in &plan.changes {
        let Op::Create {
            dn,
            attributes,
            members,
            ..
        } = &c.op
        else {
            continue;
        };
        creating.tick();
        let mut o = Outcome::start(c, Action::Create, dn);
        if !inside(managed_ous, dn) {
            o.error = Some(format!("refused: {dn} is outside the managed OUs"));
            o.not_created = true;
            outcomes.insert(c.cloud_id.clone(), o);
            continue;
        }
        outcomes.insert(c.cloud_id.clone(), o);
        let (now, after) = split_create_members(members, &created_here);
        let mut attrs = attributes.clone();
        attrs.insert("objectClass".into(), vec!["group".into()]);
        while running.len() >= PARALLEL_CREATES {
            match running.join_next().await {
                Some(Ok(done)) => created(outcomes, &mut later, done),
                Some(Err(e)) => tracing::error!("a create task failed: {e}"),
                None => break,
            }
        }
        let mut conn = conn.clone();
        let (id, dn, all) = (c.cloud_id.clone(), dn.clone(), members.clone());
        running.spawn(async move {
            if !now.is_empty() {
                attrs.insert("member".into(), now);
            }
            let result = conn.add(&dn, &attrs).await;
            if result.as_ref().is_err_and(|e| e.rc() != Some(68)) && attrs.contains_key("member") {
                // A member AD refuses (e.g. deleted meanwhile) must not block the group:
                // create it bare and add the members in batches, which reports each refusal.
                attrs.remove("member");
                (id, conn.add(&dn, &attrs).await, all)
            } else {
                (id, result, after)
            }
        });
    }
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(done) => created(outcomes, &mut later, done),
            // A panicked task is a host bug; its group stays without a GUID and is reported.
            Err(e) => tracing::error!("a create task failed: {e}"),
        }
    }
    later
}

/// Records a finished add in its outcome, and the members it still needs in `later`.
fn created(
    outcomes: &mut BTreeMap<String, Outcome>,
    later: &mut BTreeMap<String, Vec<String>>,
    (id, result, rest): Created,
) {
    later.insert(id.clone(), rest);
    if let (Some(o), Err(e)) = (outcomes.get_mut(&id), result) {
        // An LDAP add is atomic: when AD answers with a result code, nothing was made. A
        // lost connection leaves it open (the add may have landed), so the intent stays.
        o.not_created = e.rc().is_some();
        if e.rc() == Some(68) {
            o.error = Some(format!(
                "{CONFLICT}; left untouched ({e}). {}",
                conflict_next(&id)
            ));
        } else {
            o.fail("", &e);
        }
    }
}

/// The new objects' GUIDs (for the anchors), in batches rather than one read per object.
/// A create AD answered with "already exists" is looked for too: when the connection was
/// cut after AD took the add, the add sent again meets the object this cycle created, and
/// it carries this group's anchor (a foreign object with it would have stopped the plan).
async fn record_guids(
    conn: &mut impl Directory,
    managed_ous: &[String],
    outcomes: &mut BTreeMap<String, Outcome>,
) {
    let created: Vec<String> = outcomes
        .values()
        .filter(|o| o.action == Action::Create)
        .filter(|o| {
            o.error.is_none() || o.error.as_deref().is_some_and(|e| e.starts_with(CONFLICT))
        })
        .map(|o| o.cloud_id.clone())
        .collect();
    match read_guids(conn, &created, managed_ous).await {
        Ok(guids) => {
            for id in &created {
                let Some(o) = outcomes.get_mut(id) else {
                    continue;
                };
                match (guids.get(id), o.error.is_some()) {
                    (Some(g), _) => {
                        o.guid = Some(g.clone());
                        o.error = None;
                        o.not_created = false;
                    }
                    (None, true) => {}
                    (None, false) => {
                        o.error = Some("created, but AD returned no objectGUID".into())
                    }
                }
            }
        }
        Err(e) => {
            for id in &created {
                if let Some(o) = outcomes.get_mut(id).filter(|o| o.error.is_none()) {
                    o.fail("created, but reading objectGUID failed: ", &e);
                }
            }
        }
    }
}

/// Sends the plan's moves and attribute changes.
async fn update_all(
    conn: &mut impl Directory,
    plan: &Plan,
    managed_ous: &[String],
    outcomes: &mut BTreeMap<String, Outcome>,
) {
    let mut updating = Progress::new(
        "updating",
        plan.changes
            .iter()
            .filter(|c| matches!(c.op, Op::Update { .. }))
            .count(),
    );
    for c in &plan.changes {
        let Op::Update {
            dn,
            move_to,
            changes,
            ..
        } = &c.op
        else {
            continue;
        };
        updating.tick();
        let mut o = Outcome::start(c, Action::Update, dn);
        if !inside(managed_ous, dn) || move_to.as_deref().is_some_and(|t| !inside(managed_ous, t)) {
            o.error =
                Some("refused: the object or its new place is outside the managed OUs".into());
            outcomes.insert(c.cloud_id.clone(), o);
            continue;
        }
        if let Some(target) = move_to {
            match (ad::dn::leaf_value(target), ad::dn::parent(target)) {
                (Some(cn), Some(parent)) => {
                    let new_parent =
                        (!ad::dn::dn_eq(&parent, &ad::dn::parent(dn).unwrap_or_default()))
                            .then_some(parent.as_str());
                    match conn.rename(dn, &ad::dn::rdn("CN", &cn), new_parent).await {
                        Ok(new_dn) => o.dn = new_dn,
                        Err(e) => o.fail("", &e),
                    }
                }
                _ => o.error = Some(format!("cannot move to {target:?}: not a valid DN")),
            }
        }
        if o.error.is_none() && !changes.is_empty() {
            let mods: Vec<ad::AttrChange> = changes
                .iter()
                .map(|ch| match ch {
                    AttrChange::Replace { attr, values, .. } => {
                        ad::AttrChange::Replace(attr.clone(), values.clone())
                    }
                    AttrChange::Clear { attr, .. } => ad::AttrChange::Delete(attr.clone(), vec![]),
                })
                .collect();
            if let Err(e) = conn.modify(&o.dn, &mods).await {
                o.fail("", &e);
            }
        }
        outcomes.insert(c.cloud_id.clone(), o);
    }
}

/// Sends the member adds and removals of the plan's groups that went through; adds naming
/// groups another batch creates are returned to wait for them.
async fn members_all(
    conn: &mut impl Directory,
    plan: &Plan,
    later: &BTreeMap<String, Vec<String>>,
    created_elsewhere: &BTreeSet<String>,
    outcomes: &mut BTreeMap<String, Outcome>,
) -> Deferred {
    let mut deferred: Deferred = Vec::new();
    for c in &plan.changes {
        let (add, remove): (&[String], &[String]) = match &c.op {
            Op::Create { .. } => (
                later.get(&c.cloud_id).map(Vec::as_slice).unwrap_or(&[]),
                &[],
            ),
            Op::Update {
                members_add,
                members_remove,
                ..
            } => (members_add, members_remove),
            Op::Delete { .. } => continue,
        };
        let Some(o) = outcomes.get_mut(&c.cloud_id).filter(|o| o.error.is_none()) else {
            continue;
        };
        let (add, wait): (Vec<String>, Vec<String>) = add
            .iter()
            .cloned()
            .partition(|m| !created_elsewhere.contains(&dn_key(m)));
        if !wait.is_empty() {
            deferred.push((c.cloud_id.clone(), o.dn.clone(), wait));
        }
        if !add.is_empty() {
            match conn.add_members(&o.dn, &add).await {
                Ok(r) => o.member_errors.extend(
                    r.missing
                        .into_iter()
                        .map(|(m, msg)| format!("add {m}: {msg}")),
                ),
                Err(e) => o.fail("", &e),
            }
        }
        if o.error.is_none() && !remove.is_empty() {
            match conn.remove_members(&o.dn, remove).await {
                Ok(r) => o.member_errors.extend(
                    r.missing
                        .into_iter()
                        .map(|(m, msg)| format!("remove {m}: {msg}")),
                ),
                Err(e) => o.fail("", &e),
            }
        }
    }
    deferred
}

/// Sends the links of the plan's groups that went through.
async fn links_all(
    conn: &mut impl Directory,
    plan: &Plan,
    link_targets: &[String],
    outcomes: &mut BTreeMap<String, Outcome>,
) {
    for c in &plan.changes {
        let links = match &c.op {
            Op::Create { links, .. } | Op::Update { links, .. } => links,
            Op::Delete { .. } => continue,
        };
        if links.is_empty() {
            continue;
        }
        if let Some(o) = outcomes.get_mut(&c.cloud_id).filter(|o| o.error.is_none()) {
            apply_links(conn, o, links, link_targets).await;
        }
    }
}

/// Sends the plan's deletes.
async fn delete_all(
    conn: &mut impl Directory,
    plan: &Plan,
    managed_ous: &[String],
    outcomes: &mut BTreeMap<String, Outcome>,
) {
    for c in &plan.changes {
        let Op::Delete { dn, .. } = &c.op else {
            continue;
        };
        let mut o = Outcome::start(c, Action::Delete, dn);
        if !inside(managed_ous, dn) {
            o.error = Some(format!("refused: {dn} is outside the managed OUs"));
        } else if let Err(e) = conn.delete(dn).await {
            // Already gone is what we wanted.
            if e.rc() != Some(32) {
                o.fail("", &e);
            }
        }
        outcomes.insert(c.cloud_id.clone(), o);
    }
}

/// Adds the group of `o` to the targets of `links.add` and removes it from `links.remove`, one
/// modify per target (each is another object). A target outside `ad.link_targets` is refused
/// here too, whatever produced the plan. A link already there (added by someone else) is not
/// recorded as Writeback's; one already gone counts as removed.
async fn apply_links(
    conn: &mut impl Directory,
    o: &mut Outcome,
    links: &Links,
    targets: &[String],
) {
    let allowed = |t: &str| targets.iter().any(|l| is_within(t, l));
    let member = [o.dn.clone()];
    for t in &links.add {
        if !allowed(t) {
            o.member_errors
                .push(format!("link {t}: refused, outside ad.link_targets"));
            continue;
        }
        match conn.add_members(t, &member).await {
            Ok(r) if r.applied > 0 => o.links_added.push(t.clone()),
            // Already a member: someone else's link, left as it is and not recorded.
            Ok(r) if r.missing.is_empty() => {}
            Ok(r) => o.member_errors.extend(
                r.missing
                    .into_iter()
                    .map(|(_, msg)| format!("link {t}: {msg}")),
            ),
            Err(e) => {
                o.member_errors.push(format!("link {t}: {e}"));
                o.transient |= e.is_connection_error();
            }
        }
    }
    for t in &links.remove {
        if !allowed(t) {
            o.member_errors
                .push(format!("unlink {t}: refused, outside ad.link_targets"));
            continue;
        }
        match conn.remove_members(t, &member).await {
            // Gone already (removed by hand, or the target deleted) is what was wanted.
            Ok(_) => o.links_removed.push(t.clone()),
            Err(e) if e.rc() == Some(32) => o.links_removed.push(t.clone()),
            Err(e) => {
                o.member_errors.push(format!("unlink {t}: {e}"));
                o.transient |= e.is_connection_error();
            }
        }
    }
}

/// The members a create sends in its add, and those that follow as modifies: groups created by
/// the same plan wait until they exist, and one add carries at most [`ad::MEMBERS_IN_ADD`], so
/// a huge group is created with its first thousand members.
fn split_create_members(
    members: &[String],
    created_here: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let (mut now, mut after): (Vec<String>, Vec<String>) = members
        .iter()
        .cloned()
        .partition(|m| !created_here.contains(&dn_key(m)));
    if now.len() > ad::MEMBERS_IN_ADD {
        after.extend(now.split_off(ad::MEMBERS_IN_ADD));
    }
    (now, after)
}

/// Sends the member adds [`apply`] held back, once every batch's creates are done; a failure
/// lands in the group's outcome (`outcomes` holds the cycle's outcomes).
pub async fn apply_deferred(
    conn: &mut impl Directory,
    deferred: Deferred,
    outcomes: &mut [Outcome],
) {
    // Indexed once: a first sync can hold thousands of deferred adds.
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        at.entry(o.cloud_id.clone()).or_insert(i);
    }
    for (id, dn, members) in deferred {
        let result = conn.add_members(&dn, &members).await;
        let Some(o) = at.get(&id).and_then(|&i| outcomes.get_mut(i)) else {
            continue;
        };
        match result {
            Ok(r) => o.member_errors.extend(
                r.missing
                    .into_iter()
                    .map(|(m, msg)| format!("add {m}: {msg}")),
            ),
            Err(e) => o.fail("", &e),
        }
    }
}

/// objectGUIDs of owned objects by cloud id, found by anchor in batches.
async fn read_guids(
    conn: &mut impl Directory,
    ids: &[String],
    managed_ous: &[String],
) -> Result<BTreeMap<String, String>, AdError> {
    let ids: Vec<&String> = ids.iter().collect();
    let want = [ANCHOR_ATTRS[0], ANCHOR_ATTRS[1], "objectGUID"];
    let found = super::actual::search_created(conn, managed_ous, &ids, &want).await?;
    // A create is refused when another object carries its anchor, so each id has one object.
    Ok(found
        .into_iter()
        .filter_map(|(id, e)| e.guid.map(|g| (id, g.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_carries_one_write_batch_of_members_and_waits_for_groups_it_creates() {
        let members: Vec<String> = (0..2_500).map(|i| format!("CN=U{i:05},OU=U")).collect();
        let (now, after) = split_create_members(&members, &BTreeSet::new());
        assert_eq!(now.len(), ad::MEMBERS_IN_ADD);
        assert_eq!(after.len(), 1_500);
        assert_eq!(now[0], "CN=U00000,OU=U");
        assert_eq!(after[0], "CN=U01000,OU=U");

        let mut few = vec!["CN=Nested,OU=G".to_string(), "CN=U1,OU=U".to_string()];
        let created: BTreeSet<String> = [dn_key("cn=nested,ou=g")].into_iter().collect();
        let (now, after) = split_create_members(&few, &created);
        assert_eq!(now, vec!["CN=U1,OU=U".to_string()]);
        assert_eq!(after, vec!["CN=Nested,OU=G".to_string()]);
        few.clear();
        assert_eq!(split_create_members(&few, &created), (vec![], vec![]));
    }
}
