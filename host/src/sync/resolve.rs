//! Where the cloud members of the groups being written live in AD: each kind of member by its
//! join key (`[members]`; by default `onPremisesSecurityIdentifier` → `objectSid`), on the DC
//! or a Global Catalog; every lookup batched. [`wanted`] (pure) says whom to look for.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ad::join::{Compare, JoinFor, JoinKey, NoValue};
use crate::ad::{AdError, JoinAttribute};

use super::devices;
use super::directory::Directory;
use super::state::CycleState;
use crate::config::Config;
use crate::graph::model::{CloudObject, MemberKind, MemberRef};
use crate::rules::MemberPolicy;
use crate::state::ObjectKind;

use super::desired::transitive_users;
use super::types::MemberDirectory;
use super::SyncError;

/// The cloud members the groups being written name, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub devices: BTreeSet<String>,
}

impl Named {
    /// Everything `other` names too.
    pub fn extend(&mut self, other: Named) {
        self.users.extend(other.users);
        self.groups.extend(other.groups);
        self.devices.extend(other.devices);
    }
}

/// The cached cloud objects of a [`Named`] set (those the cache has).
#[derive(Debug, Clone, Default)]
pub struct Cached {
    pub users: BTreeMap<String, CloudObject>,
    pub groups: BTreeMap<String, CloudObject>,
    pub devices: BTreeMap<String, CloudObject>,
    /// Graph refused the last devices round (no `Device.Read.All`): no device member is
    /// resolved, each is reported with the permission named (`sync::devices`).
    pub devices_unreadable: bool,
}

impl Cached {
    /// Reads the objects `named` names from the cache by key; a kind with nothing named is
    /// not read at all.
    pub fn load<S: CycleState>(store: &S, named: &Named) -> Result<Cached, SyncError> {
        let read = |kind, ids: &BTreeSet<String>| match ids.is_empty() {
            true => Ok(BTreeMap::new()),
            false => store.load_by_ids(kind, ids),
        };
        let devices_unreadable =
            !named.devices.is_empty() && devices::Readable::load(store)? == devices::Readable::No;
        Ok(Cached {
            users: read(ObjectKind::User, &named.users)?,
            groups: read(ObjectKind::Group, &named.groups)?,
            devices: read(ObjectKind::Device, &named.devices)?,
            devices_unreadable,
        })
    }
}

/// The cloud users, groups and devices the members of `ids` name (flattened for
/// `"flatten"`; `groups` must hold the nested groups then).
pub fn wanted(
    ids: impl IntoIterator<Item = impl AsRef<str>>,
    policies: &BTreeMap<String, MemberPolicy>,
    groups: &BTreeMap<String, CloudObject>,
) -> Named {
    let mut out = Named::default();
    for id in ids {
        let id = id.as_ref();
        let flat;
        let members: Box<dyn Iterator<Item = &MemberRef>> = match (policies.get(id), groups.get(id))
        {
            (Some(MemberPolicy::Flatten), _) => {
                flat = transitive_users(groups, id);
                Box::new(flat.iter())
            }
            (Some(MemberPolicy::None), _) | (_, None) => Box::new(std::iter::empty()),
            (_, Some(g)) => Box::new(g.members.values()),
        };
        for m in members {
            match m.kind() {
                MemberKind::User => {
                    out.users.insert(m.id.clone());
                }
                MemberKind::Group => {
                    out.groups.insert(m.id.clone());
                }
                MemberKind::Device => {
                    out.devices.insert(m.id.clone());
                }
                MemberKind::Other => {}
            }
        }
    }
    out
}

/// Entries a cycle's [`Lookups`] holds at most; past it, they are forgotten and asked again.
const LOOKUPS_KEPT: usize = 250_000;

/// DNs an ambiguous-match reason names.
const AMBIGUOUS_SHOWN: usize = 3;

/// What AD answered for one join value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Found(String),
    Missing,
    /// Two or more objects hold the value: none is picked.
    Ambiguous(Vec<String>),
}

impl Answer {
    fn from_dns(dns: Option<&Vec<String>>) -> Answer {
        match dns.map(Vec::as_slice) {
            None | Some([]) => Answer::Missing,
            Some([one]) => Answer::Found(one.clone()),
            Some(many) => Answer::Ambiguous(many.to_vec()),
        }
    }
}

/// What a cycle has already asked AD: join value → answer, per kind of member (`None`-like
/// answers included). The batches of a cycle share it, so a user who is a member of groups in
/// many batches is looked up once, not once a batch. Bounded by [`LOOKUPS_KEPT`]; dropped
/// with the cycle (AD may change between), with the Global Catalog connection it opened.
#[derive(Debug)]
pub struct Lookups<D> {
    users: HashMap<String, Answer>,
    groups: HashMap<String, Answer>,
    /// Devices' SIDs: the computer objects holding them.
    devices: HashMap<String, Answer>,
    /// Opened on the first lookup of a cycle when `ad.gc_url` is set.
    gc: Option<D>,
    /// The join attributes were checked against the schema this cycle.
    checked: bool,
}

impl<D> Default for Lookups<D> {
    fn default() -> Self {
        Lookups {
            users: HashMap::new(),
            groups: HashMap::new(),
            devices: HashMap::new(),
            gc: None,
            checked: false,
        }
    }
}

impl<D> Lookups<D> {
    /// Makes room for `wanted` keys about to be looked up and used. Called before the keys
    /// to ask are picked: forgetting afterwards would drop answers the caller still reads.
    fn make_room(&mut self, wanted: usize) {
        if self.users.len() + self.groups.len() + self.devices.len() + wanted > LOOKUPS_KEPT {
            self.users.clear();
            self.groups.clear();
            self.devices.clear();
        }
    }
}

/// The keys of `wanted` that `known` has no answer for.
fn unknown<K: Clone + Eq + std::hash::Hash, V>(
    wanted: impl Iterator<Item = K>,
    known: &HashMap<K, V>,
) -> Vec<K> {
    wanted.filter(|k| !known.contains_key(k)).collect()
}

/// Records AD's answers for `asked` (absent from `found`: no such object).
fn remember(
    known: &mut HashMap<String, Answer>,
    asked: Vec<String>,
    found: &BTreeMap<String, Vec<String>>,
) {
    for k in asked {
        let a = Answer::from_dns(found.get(&k));
        known.insert(k, a);
    }
}

/// How members are matched and where, as the rules fingerprint holds it. The default
/// spellings (`Sid`, `ImmutableId`) are the ones earlier versions wrote, so an upgrade does
/// not re-evaluate every group.
pub fn match_fingerprint(config: &Config) -> String {
    let j = &config.members;
    let sid = JoinKey::sid();
    let mut out = if j.groups != sid {
        format!(
            "users={};groups={}",
            j.users.describe(),
            j.groups.describe()
        )
    } else if j.users == sid {
        "Sid".to_string()
    } else if j.users == JoinKey::immutable_id() {
        "ImmutableId".to_string()
    } else {
        format!("users={}", j.users.describe())
    };
    if let Some(gc) = &config.ad.gc_url {
        out.push_str(";gc=");
        out.push_str(gc);
    }
    out
}

/// The extra names of a delta `$select`: the rules' `declared` ones and the join key's property.
pub fn with_join(declared: &[String], key: &JoinKey) -> Vec<String> {
    let mut all = declared.to_vec();
    all.push(key.select_name().to_string());
    all
}

/// Why a cloud user has nothing to join on.
fn no_value_reason(key: &JoinKey, why: NoValue) -> String {
    let synced = key.cloud().starts_with("onPremises");
    match (why, synced) {
        (NoValue::Missing, true) => format!("cloud-only user (no {})", key.cloud()),
        (NoValue::Unusable, true) => format!("cloud-only user (no usable {})", key.cloud()),
        (NoValue::Missing, false) => format!("the cloud user has no {}", key.cloud()),
        (NoValue::Unusable, false) => format!(
            "the cloud user's {} is not a usable {} value",
            key.cloud(),
            key.ad()
        ),
    }
}

/// The value as a reason shows it: SIDs and GUIDs bare (as before), text quoted.
fn shown(key: &JoinKey, value: &str) -> String {
    match key.compare() {
        Compare::Text => format!("{value:?}"),
        Compare::Sid | Compare::Guid | Compare::GuidBytes => value.to_string(),
    }
}

/// Why a user whose join value AD answered for is not written.
fn answer_reason(key: &JoinKey, value: &str, a: &Answer) -> Option<String> {
    match a {
        Answer::Found(_) => None,
        Answer::Missing => Some(format!(
            "no AD account has {} {}",
            key.ad(),
            shown(key, value)
        )),
        Answer::Ambiguous(dns) => {
            // quoted, so like reasons still count together in a summary
            let mut names = dns
                .iter()
                .take(AMBIGUOUS_SHOWN)
                .map(|d| format!("{d:?}"))
                .collect::<Vec<_>>()
                .join("; ");
            if dns.len() > AMBIGUOUS_SHOWN {
                names.push_str("; ...");
            }
            Some(format!(
                "ambiguous: {} AD accounts have {} {} ({names}); none is picked",
                dns.len(),
                key.ad(),
                shown(key, value)
            ))
        }
    }
}

/// Finds the AD accounts of the members of the groups being written, in batches.
///
/// `cached` holds the cloud objects among `named` that the cache has; it is let go once their
/// join values are read (a big group's cached members are not held through the lookups). Devices are found by
/// the SID a hybrid-joined device carries (`onPremisesSecurityIdentifier`), among AD's
/// computer objects. With `ad.gc_url` the lookups go to the Global Catalog (the whole forest
/// when no search base is configured).
pub async fn resolve_members<D: Directory>(
    config: &Config,
    conn: &mut D,
    named: &Named,
    cached: Cached,
    known: &mut Lookups<D>,
) -> Result<MemberDirectory, SyncError> {
    let mut dir = MemberDirectory::default();
    let wanted = join_values(config, named, &cached, &mut dir);
    drop(cached);
    if wanted.users.is_empty() && wanted.groups.is_empty() && wanted.devices.is_empty() {
        return Ok(dir);
    }
    ask(config, conn, known, &wanted).await?;
    read_answers(config, known, &wanted, &mut dir);
    Ok(dir)
}

/// Join value → the cloud ids that carry it, for users and for member groups; for devices,
/// SID → the devices (id and name) that carry it.
#[derive(Debug, Default)]
struct Wanted {
    users: BTreeMap<String, Vec<String>>,
    groups: BTreeMap<String, Vec<String>>,
    devices: BTreeMap<String, Vec<(String, String)>>,
}

/// A device as reasons name it: its display name quoted (a summary counts like reasons
/// together), or its id.
fn device_name(d: &CloudObject) -> String {
    match d.str_prop("displayName") {
        Some(n) if !n.is_empty() => format!("{n:?}"),
        _ => d.id.clone(),
    }
}

/// Why a device has no SID to find its computer by: it is not hybrid-joined (Entra-joined or
/// registered devices have no on-premises computer).
fn device_no_sid_reason(d: &CloudObject, why: NoValue) -> String {
    let name = device_name(d);
    match (why, d.str_prop("trustType")) {
        (NoValue::Unusable, _) => {
            format!("device {name} has no usable onPremisesSecurityIdentifier; it is not written")
        }
        (NoValue::Missing, Some(t)) if !t.is_empty() && !t.eq_ignore_ascii_case("ServerAd") => {
            format!(
                "device {name} is not hybrid-joined (trustType {t}, no onPremisesSecurityIdentifier)"
            )
        }
        (NoValue::Missing, _) => {
            format!("device {name} is not hybrid-joined (no onPremisesSecurityIdentifier)")
        }
    }
}

/// Why a device whose SID AD answered for is not written.
fn device_answer_reason(sid: &str, name: &str, a: &Answer) -> Option<String> {
    match a {
        Answer::Found(_) => None,
        Answer::Missing => Some(format!(
            "no computer with objectSid {sid} in AD (device {name})"
        )),
        Answer::Ambiguous(dns) => Some(format!(
            "ambiguous: {} computers have objectSid {sid} (device {name}); none is picked",
            dns.len()
        )),
    }
}

/// The join values of the wanted members; users and devices without one get their reason in
/// `dir`.
fn join_values(
    config: &Config,
    named: &Named,
    cached: &Cached,
    dir: &mut MemberDirectory,
) -> Wanted {
    let joins = &config.members;
    let mut out = Wanted::default();
    for uid in &named.users {
        let Some(u) = cached.users.get(uid) else {
            dir.user_reasons
                .insert(uid.clone(), "user not found in the cloud cache".into());
            continue;
        };
        match joins.users.value_of(&u.props) {
            Ok(v) => out.users.entry(v).or_default().push(uid.clone()),
            Err(why) => {
                dir.user_reasons
                    .insert(uid.clone(), no_value_reason(&joins.users, why));
            }
        }
    }
    for gid in &named.groups {
        // a cloud group without the value was not synced from AD: it is not looked up
        if let Some(v) = cached
            .groups
            .get(gid)
            .and_then(|g| joins.groups.value_of(&g.props).ok())
        {
            out.groups.entry(v).or_default().push(gid.clone());
        }
    }
    // A device is found by its SID whatever the user join is: only a hybrid-joined device
    // has an AD computer, and the SID is what Entra copied from it.
    let sid = JoinKey::sid();
    for did in &named.devices {
        if cached.devices_unreadable {
            // What the cache holds may be stale: nothing is looked up for a device while
            // Graph refuses them (and a group keeps its computers meanwhile, see
            // `devices::keep_computers`).
            let reason = devices::unreadable_reason(did, cached.devices.get(did));
            dir.device_reasons.insert(did.clone(), reason);
            continue;
        }
        let Some(d) = cached.devices.get(did) else {
            dir.device_reasons
                .insert(did.clone(), "device not found in the cloud cache".into());
            continue;
        };
        match sid.value_of(&d.props) {
            Ok(v) => out
                .devices
                .entry(v)
                .or_default()
                .push((did.clone(), device_name(d))),
            Err(why) => {
                dir.device_reasons
                    .insert(did.clone(), device_no_sid_reason(d, why));
            }
        }
    }
    out
}

/// Asks AD (or the Global Catalog) for the join values not answered yet this cycle.
async fn ask<D: Directory>(
    config: &Config,
    conn: &mut D,
    known: &mut Lookups<D>,
    wanted: &Wanted,
) -> Result<(), SyncError> {
    let joins = &config.members;
    if !known.checked {
        check_joins(config, conn).await?;
        known.checked = true;
    }
    known.make_room(wanted.users.len() + wanted.groups.len() + wanted.devices.len());
    let Lookups {
        users: known_users,
        groups: known_groups,
        devices: known_devices,
        gc,
        ..
    } = known;
    let (lookup, bases) = match &config.ad.gc_url {
        Some(url) => {
            if gc.is_none() {
                *gc = Some(open_gc(conn, url).await?);
            }
            let Some(g) = gc.as_mut() else {
                return Err(SyncError::GlobalCatalog {
                    url: url.clone(),
                    source: AdError::Settings("no connection".into()),
                });
            };
            // "" on a Global Catalog is the whole forest
            let bases = match config.ad.member_search_bases.is_empty() {
                true => vec![String::new()],
                false => config.ad.member_search_bases.clone(),
            };
            (g, bases)
        }
        // empty = the domain root (the connector asks AD for it)
        None => (conn, config.ad.member_search_bases.clone()),
    };
    let gc_url = config.ad.gc_url.as_deref();
    let sid = JoinKey::sid();
    for (key, class, ask, answers) in [
        (
            &joins.users,
            JoinFor::Users.ad_class(),
            unknown(wanted.users.keys().cloned(), known_users),
            known_users,
        ),
        (
            &joins.groups,
            JoinFor::Groups.ad_class(),
            unknown(wanted.groups.keys().cloned(), known_groups),
            known_groups,
        ),
        (
            &sid,
            DEVICE_CLASS,
            unknown(wanted.devices.keys().cloned(), known_devices),
            known_devices,
        ),
    ] {
        if ask.is_empty() {
            continue;
        }
        let found = lookup
            .resolve_join(key, Some(class), &ask, &bases)
            .await
            .map_err(|e| match gc_url {
                Some(url) => SyncError::GlobalCatalog {
                    url: url.to_string(),
                    source: e,
                },
                None => SyncError::Ad(e),
            })?;
        remember(answers, ask, &found);
    }
    Ok(())
}

/// The AD class a device's SID must be found on: a user or group holding the SID (a
/// migrated SID in sidHistory is not searched) is not the device.
const DEVICE_CLASS: &str = "computer";

/// Fills `dir` from AD's answers: the DN of each member found, the reason for the others.
fn read_answers<D>(
    config: &Config,
    known: &Lookups<D>,
    wanted: &Wanted,
    dir: &mut MemberDirectory,
) {
    let joins = &config.members;
    for (value, ids) in &wanted.users {
        let a = known.users.get(value).cloned().unwrap_or(Answer::Missing);
        for id in ids {
            match (&a, answer_reason(&joins.users, value, &a)) {
                (Answer::Found(dn), _) => {
                    dir.users.insert(id.clone(), dn.clone());
                }
                (_, Some(reason)) => {
                    dir.user_reasons.insert(id.clone(), reason);
                }
                (_, None) => {}
            }
        }
    }
    for (value, ids) in &wanted.groups {
        match known.groups.get(value) {
            Some(Answer::Found(dn)) => {
                for id in ids {
                    dir.synced_groups.insert(id.clone(), dn.clone());
                }
            }
            Some(Answer::Ambiguous(dns)) => tracing::warn!(
                key = %joins.groups.describe(),
                value = %value,
                count = dns.len(),
                "a synced group matches several AD groups; none is picked"
            ),
            _ => {}
        }
    }
    for (sid, devices) in &wanted.devices {
        let a = known.devices.get(sid).cloned().unwrap_or(Answer::Missing);
        for (id, name) in devices {
            match (&a, device_answer_reason(sid, name, &a)) {
                (Answer::Found(dn), _) => {
                    dir.devices.insert(id.clone(), dn.clone());
                }
                (_, Some(reason)) => {
                    dir.device_reasons.insert(id.clone(), reason);
                }
                (_, None) => {}
            }
        }
    }
}

/// Refuses join attributes a lookup cannot use (see [`attribute_problem`]).
async fn check_joins(config: &Config, conn: &mut impl Directory) -> Result<(), SyncError> {
    for (name, key) in [
        ("members.users.ad", &config.members.users),
        ("members.groups.ad", &config.members.groups),
    ] {
        let attr = conn.join_attribute(key.ad()).await?;
        if let Some(message) = attribute_problem(key, attr.as_ref(), config.ad.gc_url.is_some()) {
            return Err(SyncError::Join {
                key: name.into(),
                message,
            });
        }
    }
    Ok(())
}

/// What is wrong with joining on `attr` (the schema's definition of the key's AD attribute,
/// `None`: not in the schema): unknown, binary beyond objectSid and objectGUID, or, looked up
/// in a Global Catalog (`gc`), not held by it.
fn attribute_problem(key: &JoinKey, attr: Option<&JoinAttribute>, gc: bool) -> Option<String> {
    let Some(attr) = attr else {
        return Some(format!("attribute {} is not in the AD schema", key.ad()));
    };
    let binary = matches!(attr.syntax.as_str(), "2.5.5.10" | "2.5.5.17");
    if binary && key.compare() == Compare::Text {
        return Some(format!(
            "attribute {} is binary; the binary attributes a join can use are objectSid, objectGUID and mS-DS-ConsistencyGuid",
            attr.name
        ));
    }
    if gc && !attr.in_global_catalog {
        return Some(format!(
            "attribute {} is not in the Global Catalog (isMemberOfPartialAttributeSet); join on an attribute the Global Catalog holds, add it to the partial attribute set, or drop ad.gc_url",
            attr.name
        ));
    }
    None
}

/// A bound connection to the Global Catalog (see [`Directory::global_catalog`]).
async fn open_gc<D: Directory>(dc: &D, url: &str) -> Result<D, SyncError> {
    dc.global_catalog(url)
        .await
        .map_err(|source| SyncError::GlobalCatalog {
            url: url.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_stay_bounded_and_keep_what_fits() {
        let mut l: Lookups<crate::ad::AdConn> = Lookups::default();
        for i in 0..LOOKUPS_KEPT - 1 {
            l.users.insert(format!("S-1-5-21-{i}"), Answer::Missing);
        }
        l.make_room(1);
        assert_eq!(l.users.len(), LOOKUPS_KEPT - 1, "room for one more");
        l.make_room(2);
        assert!(l.users.is_empty(), "over the bound: forgotten");
    }

    #[test]
    fn every_wanted_key_is_asked_after_room_was_made() {
        let mut l: Lookups<crate::ad::AdConn> = Lookups::default();
        for i in 0..LOOKUPS_KEPT {
            l.users
                .insert(format!("S-1-5-21-{i}"), Answer::Found(format!("CN=U{i}")));
        }
        // A batch wanting a known SID and a new one: the room is made first, so the known one
        // is asked again rather than read from a map that was just emptied.
        let wanted = ["S-1-5-21-0".to_string(), "S-1-5-21-new".to_string()];
        l.make_room(wanted.len());
        let ask = unknown(wanted.iter().cloned(), &l.users);
        assert_eq!(ask, wanted);
        let found: BTreeMap<String, Vec<String>> =
            [("S-1-5-21-0".to_string(), vec!["CN=U0".to_string()])]
                .into_iter()
                .collect();
        remember(&mut l.users, ask, &found);
        assert_eq!(
            l.users.get("S-1-5-21-0"),
            Some(&Answer::Found("CN=U0".to_string()))
        );
        assert_eq!(l.users.get("S-1-5-21-new"), Some(&Answer::Missing));
    }

    #[test]
    fn two_objects_holding_a_value_are_ambiguous_and_none_is_picked() {
        let dns = vec!["CN=A,DC=x".to_string(), "CN=B,DC=x".to_string()];
        let a = Answer::from_dns(Some(&dns));
        assert_eq!(a, Answer::Ambiguous(dns));
        let mail = JoinKey::new(JoinFor::Users, "mail", "mail").unwrap();
        let r = answer_reason(&mail, "ada@x", &a).unwrap();
        assert_eq!(
            r,
            "ambiguous: 2 AD accounts have mail \"ada@x\" (\"CN=A,DC=x\"; \"CN=B,DC=x\"); none is picked"
        );
        assert_eq!(
            super::super::report::reason_kind(&r),
            "ambiguous: 2 AD accounts have mail … (…; …); none is picked"
        );
        let many: Vec<String> = (0..5).map(|i| format!("CN={i}")).collect();
        let r = answer_reason(&mail, "a", &Answer::Ambiguous(many)).unwrap();
        assert!(
            r.contains("5 AD accounts") && r.contains("\"CN=2\"; ...") && !r.contains("CN=3"),
            "{r}"
        );
        assert_eq!(Answer::from_dns(Some(&Vec::new())), Answer::Missing);
        assert_eq!(Answer::from_dns(None), Answer::Missing);
        assert_eq!(
            answer_reason(&JoinKey::sid(), "S-1-5-21-1", &Answer::Missing).as_deref(),
            Some("no AD account has objectSid S-1-5-21-1")
        );
    }

    #[test]
    fn the_join_property_is_selected_once() {
        use crate::graph::delta::users_delta_query;
        let key = JoinKey::new(JoinFor::Users, "employeeId", "employeeID").unwrap();
        let q = users_delta_query("https://g/v1.0", &with_join(&[], &key));
        assert!(
            q.select.split(',').any(|n| n == "employeeId"),
            "{}",
            q.select
        );
        // the default key is selected by the host already: the query is the default one
        let plain = users_delta_query("https://g/v1.0", &[]);
        let sid = users_delta_query("https://g/v1.0", &with_join(&[], &JoinKey::sid()));
        assert_eq!(sid, plain);
        let ea = JoinKey::new(
            JoinFor::Users,
            "onPremisesExtensionAttributes.extensionAttribute2",
            "info",
        )
        .unwrap();
        let declared = vec!["onPremisesExtensionAttributes".to_string()];
        let q = users_delta_query("https://g/v1.0", &with_join(&declared, &ea));
        let n = q
            .select
            .split(',')
            .filter(|n| *n == "onPremisesExtensionAttributes")
            .count();
        assert_eq!(n, 1, "{}", q.select);
    }

    #[test]
    fn the_default_match_keeps_the_fingerprint_earlier_versions_wrote() {
        let text = r#"
[graph]
tenant_id = "t"
client_id = "c"
client_secret_env = "WB_RESOLVE_TEST_SECRET"
[ad]
url = "ldaps://dc1.corp.example.test"
bind_dn = "CN=svc,DC=corp,DC=example,DC=test"
password_env = "WB_RESOLVE_TEST_SECRET"
managed_ous = ["OU=G,DC=corp,DC=example,DC=test"]
[rules]
folder = "rules"
[state]
path = "state.db"
"#;
        std::env::set_var("WB_RESOLVE_TEST_SECRET", "s");
        let load = |extra: &str| {
            Config::parse(std::path::Path::new("/x/w.toml"), &format!("{text}{extra}"))
                .expect("valid config")
        };
        assert_eq!(match_fingerprint(&load("")), "Sid");
        assert_eq!(
            match_fingerprint(&load("[members]\nuser_match = \"immutable_id\"\n")),
            "ImmutableId"
        );
        assert_eq!(
            match_fingerprint(&load(
                "[members]\nusers = { cloud = \"mail\", ad = \"mail\" }\n"
            )),
            "users=mail = mail"
        );
    }

    #[test]
    fn join_attributes_are_checked_against_the_schema() {
        let attr = |name: &str, syntax: &str, gc: bool| JoinAttribute {
            name: name.into(),
            syntax: syntax.into(),
            in_global_catalog: gc,
        };
        let emp = JoinKey::new(JoinFor::Users, "employeeId", "employeeid").unwrap();
        let def = attr("employeeID", "2.5.5.12", false);
        assert_eq!(attribute_problem(&emp, Some(&def), false), None);
        let e = attribute_problem(&emp, Some(&def), true).unwrap_or_default();
        assert!(e.contains("employeeID is not in the Global Catalog"), "{e}");
        let e = attribute_problem(&emp, None, false).unwrap_or_default();
        assert!(e.contains("employeeid is not in the AD schema"), "{e}");
        let photo = JoinKey::new(JoinFor::Users, "mail", "thumbnailPhoto").unwrap();
        let e = attribute_problem(
            &photo,
            Some(&attr("thumbnailPhoto", "2.5.5.10", true)),
            false,
        )
        .unwrap_or_default();
        assert!(e.contains("is binary"), "{e}");
        let cg = JoinKey::new(
            JoinFor::Users,
            "onPremisesImmutableId",
            "mS-DS-ConsistencyGuid",
        )
        .unwrap();
        let def = attr("mS-DS-ConsistencyGuid", "2.5.5.10", true);
        assert_eq!(attribute_problem(&cg, Some(&def), true), None);
        let sid = attr("objectSid", "2.5.5.17", true);
        assert_eq!(attribute_problem(&JoinKey::sid(), Some(&sid), true), None);
    }

    #[test]
    fn reasons_for_users_without_a_value_name_the_property() {
        assert_eq!(
            no_value_reason(&JoinKey::sid(), NoValue::Missing),
            "cloud-only user (no onPremisesSecurityIdentifier)"
        );
        assert_eq!(
            no_value_reason(&JoinKey::immutable_id(), NoValue::Unusable),
            "cloud-only user (no usable onPremisesImmutableId)"
        );
        let e = JoinKey::new(JoinFor::Users, "employeeId", "employeeID").unwrap();
        assert_eq!(
            no_value_reason(&e, NoValue::Missing),
            "the cloud user has no employeeId"
        );
    }
}
