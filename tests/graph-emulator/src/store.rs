//! The directory in memory: users, groups and devices, their memberships, and an append-only change log
//! that delta rounds are computed from.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

/// The directory object types the emulator models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Group,
    Device,
}

impl Kind {
    pub fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
            Kind::Device => "#microsoft.graph.device",
        }
    }

    pub fn entity_set(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Group => "groups",
            Kind::Device => "devices",
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Device => "device",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::User => 0,
            Kind::Group => 1,
            Kind::Device => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Live,
    /// In deletedItems: restorable, hidden from lists.
    SoftDeleted,
}

#[derive(Debug, Clone)]
pub struct Obj {
    pub id: String,
    pub kind: Kind,
    /// Graph properties except `id`; a key with `null` was set to null, a missing key was never set.
    pub props: Map<String, Value>,
    /// Direct members (ids of users, groups or devices); groups only.
    pub members: BTreeSet<String>,
    /// Owners (ids of users or service principals); groups only. Not tracked by delta: Graph
    /// reports owner changes only to a client that reads `/groups/{id}/owners`.
    pub owners: BTreeSet<String>,
    pub life: Life,
    /// Listing position; a restored object gets a new one (it reappears as new).
    pub order: u64,
}

impl Obj {
    pub fn is_live(&self) -> bool {
        self.life == Life::Live
    }

    pub fn is_unified(&self) -> bool {
        self.props
            .get("groupTypes")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().any(|t| {
                    t.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("Unified"))
                })
            })
    }
}

/// What one change-log entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created, or restored from deletedItems (`restored`).
    Created {
        restored: bool,
    },
    /// These properties got a new value.
    Props(Vec<String>),
    MemberAdded(String),
    MemberRemoved(String),
    SoftDeleted,
    HardDeleted,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub id: String,
    pub kind: Kind,
    pub what: ChangeKind,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("{1} is already a member of {0}")]
    AlreadyMember(String, String),
    #[error("{1} is not a member of {0}")]
    NotMember(String, String),
    #[error("object {0} already exists")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
}

/// An app registration allowed to get tokens.
#[derive(Debug, Clone)]
pub struct App {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub certificates: Vec<crate::auth::cert::AppCertificate>,
    /// The tenant-file entry, kept for state dumps.
    pub source: Value,
}

#[derive(Debug, Default)]
pub struct Store {
    pub tenant_id: String,
    pub domain: String,
    pub apps: Vec<App>,
    objects: HashMap<String, Obj>,
    by_order: [BTreeMap<u64, String>; 3],
    /// Reverse membership: member id → groups that list it.
    member_of: HashMap<String, BTreeSet<String>>,
    /// Permanently deleted ids and their type (to render member removals).
    purged: HashMap<String, Kind>,
    log: Vec<Change>,
    next_order: u64,
    /// Lower-cased values of [`INDEXED`] properties → object ids (uniqueness checks and
    /// lookups without scans).
    index: HashMap<&'static str, HashMap<String, String>>,
}

/// Properties with a value index.
pub const INDEXED: &[&str] = &["mail", "userPrincipalName"];

impl Store {
    pub fn new(tenant_id: String, domain: String, apps: Vec<App>) -> Self {
        Store {
            tenant_id,
            domain,
            apps,
            ..Default::default()
        }
    }

    /// The sequence number of the newest change (0 = none).
    pub fn head(&self) -> u64 {
        self.log.len() as u64
    }

    /// Changes with sequence numbers in `(from, to]`.
    pub fn changes(&self, from: u64, to: u64) -> &[Change] {
        let to = (to as usize).min(self.log.len());
        let from = (from as usize).min(to);
        &self.log[from..to]
    }

    pub fn get(&self, id: &str) -> Option<&Obj> {
        self.objects.get(&id.to_ascii_lowercase())
    }

    /// A live object of the given type.
    pub fn live(&self, kind: Kind, id: &str) -> Option<&Obj> {
        self.get(id).filter(|o| o.kind == kind && o.is_live())
    }

    /// The type of any id ever seen, including permanently deleted ones.
    pub fn kind_of(&self, id: &str) -> Option<Kind> {
        let id = id.to_ascii_lowercase();
        self.objects
            .get(&id)
            .map(|o| o.kind)
            .or_else(|| self.purged.get(&id).copied())
    }

    /// Objects of one type (live and soft-deleted) in listing order, from `order` on.
    pub fn iter_from(&self, kind: Kind, order: u64) -> impl Iterator<Item = &Obj> + '_ {
        self.by_order[kind.index()]
            .range(order..)
            .filter_map(|(_, id)| self.objects.get(id))
    }

    pub fn iter(&self, kind: Kind) -> impl Iterator<Item = &Obj> + '_ {
        self.iter_from(kind, 0)
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.by_order[kind.index()].len()
    }

    /// Groups that list `id` as a direct member.
    pub fn groups_of(&self, id: &str) -> impl Iterator<Item = &String> + '_ {
        self.member_of
            .get(&id.to_ascii_lowercase())
            .into_iter()
            .flat_map(|s| s.iter())
    }

    /// The object whose indexed property has this value (case-insensitive).
    pub fn lookup(&self, prop: &str, value: &str) -> Option<&Obj> {
        let id = self.index.get(prop)?.get(&value.to_ascii_lowercase())?;
        self.objects.get(id)
    }

    fn index_add(&mut self, id: &str, props: &Map<String, Value>) {
        for p in INDEXED {
            if let Some(v) = props.get(*p).and_then(Value::as_str) {
                self.index
                    .entry(p)
                    .or_default()
                    .insert(v.to_ascii_lowercase(), id.to_string());
            }
        }
    }

    fn index_remove(&mut self, id: &str, props: &Map<String, Value>) {
        for p in INDEXED {
            if let Some(v) = props.get(*p).and_then(Value::as_str) {
                if let Some(ix) = self.index.get_mut(p) {
                    if ix.get(&v.to_ascii_lowercase()).is_some_and(|x| x == id) {
                        ix.remove(&v.to_ascii_lowercase());
                    }
                }
            }
        }
    }

    fn record(&mut self, id: &str, kind: Kind, what: ChangeKind) {
        self.log.push(Change {
            id: id.to_string(),
            kind,
            what,
        });
    }

    /// Add an object. `log` false is for loading a tenant (the initial state has no history).
    pub fn insert(
        &mut self,
        kind: Kind,
        id: &str,
        props: Map<String, Value>,
        life: Life,
        log: bool,
    ) -> Result<(), StoreError> {
        let id = id.to_ascii_lowercase();
        if self.objects.contains_key(&id) || self.purged.contains_key(&id) {
            return Err(StoreError::Duplicate(id));
        }
        let order = self.next_order;
        self.next_order += 1;
        self.by_order[kind.index()].insert(order, id.clone());
        self.index_add(&id, &props);
        self.objects.insert(
            id.clone(),
            Obj {
                id: id.clone(),
                kind,
                props,
                members: BTreeSet::new(),
                owners: BTreeSet::new(),
                life,
                order,
            },
        );
        if log {
            self.record(&id, kind, ChangeKind::Created { restored: false });
        }
        Ok(())
    }

    /// Set properties; logs the names whose value changed. Returns them.
    pub fn update(
        &mut self,
        id: &str,
        changes: Map<String, Value>,
    ) -> Result<Vec<String>, StoreError> {
        let id = id.to_ascii_lowercase();
        let obj = self
            .objects
            .get(&id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let before = obj.props.clone();
        let kind = obj.kind;
        let mut changed = Vec::new();
        let mut after = before.clone();
        for (k, v) in changes {
            if after.get(&k) != Some(&v) {
                changed.push(k.clone());
                after.insert(k, v);
            }
        }
        if changed.iter().any(|k| INDEXED.contains(&k.as_str())) {
            self.index_remove(&id, &before);
            self.index_add(&id, &after);
        }
        if let Some(obj) = self.objects.get_mut(&id) {
            obj.props = after;
        }
        if !changed.is_empty() {
            self.record(&id, kind, ChangeKind::Props(changed.clone()));
        }
        Ok(changed)
    }

    /// Add a direct member. `log` false while loading a tenant.
    pub fn add_member(&mut self, group: &str, member: &str, log: bool) -> Result<(), StoreError> {
        let group = group.to_ascii_lowercase();
        let member = member.to_ascii_lowercase();
        if !self.objects.contains_key(&member) {
            return Err(StoreError::NotFound(member));
        }
        let g = self
            .objects
            .get_mut(&group)
            .filter(|g| g.kind == Kind::Group)
            .ok_or_else(|| StoreError::NotFound(group.clone()))?;
        if group == member {
            return Err(StoreError::Invalid(
                "A group cannot be a member of itself.".into(),
            ));
        }
        if !g.members.insert(member.clone()) {
            return Err(StoreError::AlreadyMember(group, member));
        }
        self.member_of
            .entry(member.clone())
            .or_default()
            .insert(group.clone());
        if log {
            self.record(&group, Kind::Group, ChangeKind::MemberAdded(member));
        }
        Ok(())
    }

    pub fn remove_member(&mut self, group: &str, member: &str) -> Result<(), StoreError> {
        let group = group.to_ascii_lowercase();
        let member = member.to_ascii_lowercase();
        let g = self
            .objects
            .get_mut(&group)
            .filter(|g| g.kind == Kind::Group)
            .ok_or_else(|| StoreError::NotFound(group.clone()))?;
        if !g.members.remove(&member) {
            return Err(StoreError::NotMember(group, member));
        }
        if let Some(set) = self.member_of.get_mut(&member) {
            set.remove(&group);
        }
        self.record(&group, Kind::Group, ChangeKind::MemberRemoved(member));
        Ok(())
    }

    /// Adds (`add`) or removes an owner of a group. Not logged: owners are not in delta.
    pub fn set_owner(&mut self, group: &str, owner: &str, add: bool) -> Result<(), StoreError> {
        let group = group.to_ascii_lowercase();
        let owner = owner.to_ascii_lowercase();
        if add && !self.objects.contains_key(&owner) {
            return Err(StoreError::NotFound(owner));
        }
        let g = self
            .objects
            .get_mut(&group)
            .filter(|g| g.kind == Kind::Group)
            .ok_or_else(|| StoreError::NotFound(group.clone()))?;
        match add {
            true if !g.owners.insert(owner.clone()) => Err(StoreError::AlreadyMember(group, owner)),
            false if !g.owners.remove(&owner) => Err(StoreError::NotMember(group, owner)),
            _ => Ok(()),
        }
    }

    /// Move a live object to deletedItems. Memberships are kept (restorable).
    pub fn soft_delete(&mut self, id: &str, deleted_at: Value) -> Result<(), StoreError> {
        let id = id.to_ascii_lowercase();
        let obj = self
            .objects
            .get_mut(&id)
            .filter(|o| o.is_live())
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        obj.life = Life::SoftDeleted;
        obj.props.insert("deletedDateTime".into(), deleted_at);
        let kind = obj.kind;
        self.record(&id, kind, ChangeKind::SoftDeleted);
        Ok(())
    }

    /// Bring an object back from deletedItems; it reappears as a new object.
    pub fn restore(&mut self, id: &str) -> Result<(), StoreError> {
        let id = id.to_ascii_lowercase();
        let order = self.next_order;
        let obj = self
            .objects
            .get_mut(&id)
            .filter(|o| o.life == Life::SoftDeleted)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        obj.life = Life::Live;
        obj.props.insert("deletedDateTime".into(), Value::Null);
        let (kind, old_order) = (obj.kind, obj.order);
        obj.order = order;
        self.next_order += 1;
        let index = &mut self.by_order[kind.index()];
        index.remove(&old_order);
        index.insert(order, id.clone());
        self.record(&id, kind, ChangeKind::Created { restored: true });
        Ok(())
    }

    /// Delete for good: the object leaves every group it was in (logged as member removals).
    pub fn hard_delete(&mut self, id: &str) -> Result<(), StoreError> {
        let id = id.to_ascii_lowercase();
        let obj = self
            .objects
            .remove(&id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        self.by_order[obj.kind.index()].remove(&obj.order);
        self.index_remove(&id, &obj.props);
        for m in &obj.members {
            if let Some(set) = self.member_of.get_mut(m) {
                set.remove(&id);
            }
        }
        for g in self.objects.values_mut() {
            g.owners.remove(&id);
        }
        let parents = self.member_of.remove(&id).unwrap_or_default();
        for parent in parents {
            if let Some(g) = self.objects.get_mut(&parent) {
                g.members.remove(&id);
                self.record(&parent, Kind::Group, ChangeKind::MemberRemoved(id.clone()));
            }
        }
        self.purged.insert(id.clone(), obj.kind);
        self.record(&id, obj.kind, ChangeKind::HardDeleted);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let mut s = Store::new("t".into(), "d".into(), Vec::new());
        s.insert(Kind::Group, "G", Map::new(), Life::Live, false)
            .unwrap();
        s.insert(Kind::User, "u1", Map::new(), Life::Live, false)
            .unwrap();
        s.add_member("g", "u1", false).unwrap();
        s
    }

    #[test]
    fn hard_delete_logs_member_removal_on_parents() {
        let mut s = store();
        s.hard_delete("u1").unwrap();
        let log = s.changes(0, s.head());
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].what, ChangeKind::MemberRemoved("u1".into()));
        assert_eq!(log[1].what, ChangeKind::HardDeleted);
        assert!(s.get("g").unwrap().members.is_empty());
        assert_eq!(s.kind_of("u1"), Some(Kind::User));
    }

    #[test]
    fn soft_delete_keeps_membership_and_restore_reorders() {
        let mut s = store();
        s.soft_delete("u1", Value::Null).unwrap();
        assert!(s.get("g").unwrap().members.contains("u1"));
        let before = s.get("u1").unwrap().order;
        s.restore("u1").unwrap();
        assert!(s.get("u1").unwrap().order > before);
        assert_eq!(s.iter(Kind::User).count(), 1);
    }

    #[test]
    fn value_index_follows_updates_and_deletes() {
        let mut s = store();
        let mut p = Map::new();
        p.insert("mail".into(), Value::String("A@x".into()));
        s.update("u1", p).unwrap();
        assert_eq!(s.lookup("mail", "a@X").map(|o| o.id.as_str()), Some("u1"));
        let mut p = Map::new();
        p.insert("mail".into(), Value::String("b@x".into()));
        s.update("u1", p).unwrap();
        assert!(s.lookup("mail", "a@x").is_none());
        assert!(s.lookup("mail", "b@x").is_some());
        s.hard_delete("u1").unwrap();
        assert!(s.lookup("mail", "b@x").is_none());
    }

    #[test]
    fn duplicate_member_is_rejected() {
        let mut s = store();
        assert_eq!(
            s.add_member("g", "u1", true),
            Err(StoreError::AlreadyMember("g".into(), "u1".into()))
        );
    }
}
