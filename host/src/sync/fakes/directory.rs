//! An in-memory domain behind [`Directory`]: entries by DN, AD's answers to what a cycle asks
//! (anchors, owned-group scans, joins, writes with their result codes), a log of every write,
//! and a switch that makes the DC go away after a number of writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ad::join::{Compare, JoinKey};
use crate::ad::schema::{syntax, AttrDef, ClassDef, Schema};
use crate::ad::{dn, AdEntry, AdError, AdOp, AttrChange, JoinAttribute, MemberChangeOutcome, Uuid};
use crate::sync::directory::Directory;
use crate::sync::types::{anchor_value, dn_key};

/// One object: attribute names lowercased, as [`AdEntry`] has them.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub dn: String,
    pub attrs: BTreeMap<String, Vec<String>>,
    pub guid: Uuid,
    pub sid: Option<String>,
}

impl Entry {
    fn has_class(&self, class: &str) -> bool {
        self.values("objectclass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(class))
    }

    fn values(&self, attr: &str) -> &[String] {
        self.attrs
            .get(&attr.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn to_ad_entry(&self, want: &[&str]) -> AdEntry {
        let want: BTreeSet<String> = want.iter().map(|a| a.to_ascii_lowercase()).collect();
        AdEntry {
            dn: self.dn.clone(),
            attrs: self
                .attrs
                .iter()
                .filter(|(k, _)| want.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            guid: Some(self.guid),
            sid: self.sid.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Domain {
    /// By [`dn_key`].
    entries: BTreeMap<String, Entry>,
    /// Every write that reached the DC, in order, one line each.
    log: Vec<String>,
    /// Writes answered before the DC goes away (`None`: it never does).
    writes_left: Option<usize>,
    /// Writes to DNs containing the text are refused with the result code.
    refused: Vec<(String, u32)>,
    next_guid: u128,
    reads: Reads,
}

/// What the cycle asked the DC to read, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// Groups whose `member` values were read.
    pub member_lists: usize,
    /// Join values looked up (members matched to their AD objects).
    pub join_values: usize,
    /// Terms of the searches by anchor: ids asked for, times the attributes searched.
    pub anchor_terms: usize,
}

/// The in-memory domain. Clones share it, like clones of one LDAP connection.
#[derive(Debug, Clone, Default)]
pub struct FakeDirectory {
    domain: Arc<Mutex<Domain>>,
}

impl FakeDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Domain> {
        // A test that panicked while holding the lock has failed already.
        self.domain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts an object in place as an administrator would (not logged as a write).
    pub fn put(&self, dn: &str, attrs: &[(&str, &[&str])]) -> Uuid {
        let mut d = self.lock();
        let guid = d.guid();
        let entry = Entry {
            dn: dn.to_string(),
            attrs: crate::sync::types::lower_attrs(attrs),
            guid,
            sid: None,
        };
        d.entries.insert(dn_key(dn), entry);
        guid
    }

    /// An OU.
    pub fn ou(&self, dn: &str) {
        self.put(dn, &[("objectClass", &["organizationalUnit"])]);
    }

    /// A user with `sid` (what members are matched on by default).
    pub fn user(&self, dn: &str, sid: &str) {
        self.put(dn, &[("objectClass", &["user"])]);
        let mut d = self.lock();
        if let Some(e) = d.entries.get_mut(&dn_key(dn)) {
            e.sid = Some(sid.to_string());
        }
    }

    /// A computer with `sid` (what a hybrid-joined device is matched on).
    pub fn computer(&self, dn: &str, sid: &str) {
        // A computer is a user in AD's class hierarchy, as objectClass lists it.
        self.put(
            dn,
            &[("objectClass", &["top", "person", "user", "computer"])],
        );
        let mut d = self.lock();
        if let Some(e) = d.entries.get_mut(&dn_key(dn)) {
            e.sid = Some(sid.to_string());
        }
    }

    /// The DC stops answering after `n` more writes (connection errors from then on).
    pub fn fail_after_writes(&self, n: usize) {
        self.lock().writes_left = Some(n);
    }

    /// The DC answers again, and takes every write.
    pub fn recover(&self) {
        let mut d = self.lock();
        d.writes_left = None;
        d.refused.clear();
    }

    /// Writes to DNs containing `dn_part` are refused with `rc` (e.g. 19, a constraint
    /// violation), as a DC refuses what a policy or a bad value forbids.
    pub fn refuse_writes_to(&self, dn_part: &str, rc: u32) {
        self.lock().refused.push((dn_part.to_string(), rc));
    }

    /// Changes an object as an administrator would (not logged as a write).
    pub fn hand_edit(&self, dn: &str, attr: &str, values: &[&str]) {
        let mut d = self.lock();
        if let Some(e) = d.entries.get_mut(&dn_key(dn)) {
            e.attrs.insert(
                attr.to_ascii_lowercase(),
                values.iter().map(|v| v.to_string()).collect(),
            );
        }
    }

    /// The writes so far, and forgets them.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().log)
    }

    /// The reads so far, and forgets them.
    pub fn take_reads(&self) -> Reads {
        std::mem::take(&mut self.lock().reads)
    }

    /// The entry at `dn`, if any.
    pub fn get(&self, dn: &str) -> Option<Entry> {
        self.lock().entries.get(&dn_key(dn)).cloned()
    }

    /// How many groups the domain holds.
    pub fn group_count(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.has_class("group"))
            .count()
    }
}

impl Domain {
    fn guid(&mut self) -> Uuid {
        self.next_guid += 1;
        Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 | self.next_guid)
    }

    /// Counts a write; a connection error once the DC has gone away.
    fn write(&mut self, op: AdOp, dn: &str, line: String) -> Result<(), AdError> {
        match &mut self.writes_left {
            Some(0) => {
                return Err(AdError::Transport {
                    op,
                    dn: dn.to_string(),
                    message: "connection closed".into(),
                })
            }
            Some(n) => *n -= 1,
            None => {}
        }
        if let Some((_, rc)) = self
            .refused
            .iter()
            .find(|(part, _)| dn.contains(part.as_str()))
        {
            return Err(ldap(op, dn, *rc, "refused by the test's DC"));
        }
        self.log.push(line);
        Ok(())
    }

    fn entry_mut(&mut self, op: AdOp, dn: &str) -> Result<&mut Entry, AdError> {
        self.entries
            .get_mut(&dn_key(dn))
            .ok_or_else(|| ldap(op, dn, 32, "no such object"))
    }
}

fn ldap(op: AdOp, dn: &str, rc: u32, message: &str) -> AdError {
    AdError::Ldap {
        op,
        dn: dn.to_string(),
        rc,
        message: message.into(),
    }
}

/// The attributes a cycle writes on groups, as a DC's schema defines them.
fn schema() -> Schema {
    let attr = |name: &str, syntax: &str, single: bool, linked: bool| AttrDef {
        name: name.into(),
        single_valued: single,
        range_lower: None,
        range_upper: None,
        syntax: syntax.into(),
        system_only: false,
        linked,
    };
    let dn_syntax = "2.5.5.1";
    let attrs = vec![
        attr("cn", syntax::UNICODE_STRING, true, false),
        attr("description", syntax::UNICODE_STRING, false, false),
        attr("displayName", syntax::UNICODE_STRING, true, false),
        attr("info", syntax::UNICODE_STRING, true, false),
        attr("mail", syntax::UNICODE_STRING, true, false),
        attr("mailNickname", syntax::UNICODE_STRING, true, false),
        attr("proxyAddresses", syntax::UNICODE_STRING, false, false),
        attr("sAMAccountName", syntax::UNICODE_STRING, true, false),
        attr("groupType", "2.5.5.9", true, false),
        attr("adminDescription", syntax::UNICODE_STRING, true, false),
        attr(
            "msDS-ExternalDirectoryObjectId",
            syntax::UNICODE_STRING,
            true,
            false,
        ),
        attr("member", dn_syntax, false, true),
        attr("managedBy", dn_syntax, true, true),
        attr("objectClass", "2.5.5.2", false, false),
        // Exchange's schema extension, which the Microsoft 365 rule writes.
        attr(
            "msExchRecipientTypeDetails",
            syntax::LARGE_INTEGER,
            true,
            false,
        ),
        attr("msExchRecipientDisplayType", syntax::INTEGER, true, false),
    ];
    let names: BTreeSet<String> = attrs.iter().map(|a| a.name.to_ascii_lowercase()).collect();
    let classes = vec![
        ClassDef {
            name: "top".into(),
            ..Default::default()
        },
        ClassDef {
            name: "group".into(),
            sub_class_of: Some("top".into()),
            attrs: names,
            aux: BTreeSet::new(),
        },
    ];
    Schema::from_parts(attrs, classes)
}

fn apply_change(e: &mut Entry, c: &AttrChange) -> Result<(), AdError> {
    match c {
        AttrChange::Replace(a, vs) => {
            if vs.is_empty() {
                e.attrs.remove(&a.to_ascii_lowercase());
            } else {
                e.attrs.insert(a.to_ascii_lowercase(), vs.clone());
            }
        }
        AttrChange::Add(a, vs) => {
            let have = e.attrs.entry(a.to_ascii_lowercase()).or_default();
            for v in vs {
                if have.iter().any(|h| h.eq_ignore_ascii_case(v)) {
                    return Err(ldap(AdOp::Modify, &e.dn, 20, "attribute or value exists"));
                }
                have.push(v.clone());
            }
        }
        AttrChange::Delete(a, vs) => {
            let key = a.to_ascii_lowercase();
            if vs.is_empty() {
                if e.attrs.remove(&key).is_none() {
                    return Err(ldap(AdOp::Modify, &e.dn, 16, "no such attribute"));
                }
            } else if let Some(have) = e.attrs.get_mut(&key) {
                have.retain(|h| !vs.iter().any(|v| v.eq_ignore_ascii_case(h)));
                if have.is_empty() {
                    e.attrs.remove(&key);
                }
            }
        }
    }
    Ok(())
}

fn change_line(c: &AttrChange) -> String {
    let (op, a, vs) = match c {
        AttrChange::Replace(a, vs) => ("replace", a, vs),
        AttrChange::Add(a, vs) => ("add", a, vs),
        AttrChange::Delete(a, vs) => ("delete", a, vs),
    };
    format!("{op} {a}={}", vs.join("|"))
}

impl FakeDirectory {
    fn members(&self, op: AdOp, group_dn: &str, members: &[String], add: bool) -> MemberResult {
        let mut d = self.lock();
        let verb = if add { "add-members" } else { "remove-members" };
        d.write(
            op,
            group_dn,
            format!("{verb} {group_dn}: {}", members.join(" | ")),
        )?;
        let exists: Vec<bool> = members
            .iter()
            .map(|m| d.entries.contains_key(&dn_key(m)))
            .collect();
        let e = d.entry_mut(op, group_dn)?;
        let have = e.attrs.entry("member".into()).or_default();
        // Keyed once per request, so a big group's batches stay linear.
        let mut present: HashSet<String> = have.iter().map(|h| dn_key(h)).collect();
        let mut gone: HashSet<String> = HashSet::new();
        let mut out = MemberChangeOutcome::default();
        for (m, exists) in members.iter().zip(exists) {
            let key = dn_key(m);
            match (add, present.contains(&key), exists) {
                (true, true, _) | (false, false, _) => out.already += 1,
                (true, false, false) => out.missing.push((m.clone(), "no such object".into())),
                (true, false, true) => {
                    have.push(m.clone());
                    present.insert(key);
                    out.applied += 1;
                }
                (false, true, _) => {
                    present.remove(&key);
                    gone.insert(key);
                    out.applied += 1;
                }
            }
        }
        if !gone.is_empty() {
            have.retain(|h| !gone.contains(&dn_key(h)));
        }
        if have.is_empty() {
            e.attrs.remove("member");
        }
        Ok(out)
    }
}

type MemberResult = Result<MemberChangeOutcome, AdError>;

impl Directory for FakeDirectory {
    fn url(&self) -> &str {
        "ldaps://dc.fake.test"
    }

    async fn find_by_anchor(
        &mut self,
        base: &str,
        ids: &[&String],
        by: &[&str],
        want: &[&str],
    ) -> Result<Vec<AdEntry>, AdError> {
        let anchors: BTreeSet<String> = ids.iter().map(|id| anchor_value(id)).collect();
        let mut d = self.lock();
        d.reads.anchor_terms += ids.len() * by.len();
        let found: Vec<AdEntry> = d
            .entries
            .values()
            .filter(|e| e.has_class("group") && dn::is_within(&e.dn, base))
            .filter(|e| {
                by.iter()
                    .any(|a| e.values(a).iter().any(|v| anchors.contains(v)))
            })
            .map(|e| e.to_ad_entry(want))
            .collect();
        if want.iter().any(|a| a.eq_ignore_ascii_case("member")) {
            d.reads.member_lists += found.len();
        }
        Ok(found)
    }

    async fn for_each_owned_group<F: FnMut(AdEntry)>(
        &mut self,
        bases: &[String],
        anchor_attr: &str,
        prefix: &str,
        attrs: &[&str],
        mut f: F,
    ) -> Result<(), AdError> {
        let mut want: Vec<&str> = attrs.to_vec();
        want.push(anchor_attr);
        let found: Vec<AdEntry> = {
            let d = self.lock();
            d.entries
                .values()
                .filter(|e| bases.iter().any(|b| dn::is_within(&e.dn, b)))
                .filter(|e| {
                    e.values(anchor_attr)
                        .iter()
                        .any(|v| v.to_lowercase().starts_with(&prefix.to_lowercase()))
                })
                .map(|e| e.to_ad_entry(&want))
                .collect()
        };
        found.into_iter().for_each(&mut f);
        Ok(())
    }

    async fn resolve_join(
        &mut self,
        key: &JoinKey,
        class: Option<&str>,
        values: &[String],
        bases: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AdError> {
        let mut d = self.lock();
        d.reads.join_values += values.len();
        // The values asked for by their lowercase form: one pass over the domain per request.
        let mut asked: HashMap<String, Vec<&String>> = HashMap::new();
        for v in values {
            asked.entry(v.to_lowercase()).or_default().push(v);
        }
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in d.entries.values() {
            if class.is_some_and(|c| !e.has_class(c))
                || !(bases.is_empty() || bases.iter().any(|b| dn::is_within(&e.dn, b)))
            {
                continue;
            }
            let held: Vec<String> = match key.compare() {
                Compare::Sid => e.sid.iter().cloned().collect(),
                Compare::Guid => vec![e.guid.to_string()],
                Compare::GuidBytes | Compare::Text => e
                    .values(key.ad())
                    .iter()
                    .map(|v| v.to_lowercase())
                    .collect(),
            };
            let held: BTreeSet<String> = held.iter().map(|h| h.to_lowercase()).collect();
            for h in &held {
                for v in asked.get(h).into_iter().flatten() {
                    out.entry((*v).clone()).or_default().push(e.dn.clone());
                }
            }
        }
        Ok(out)
    }

    async fn join_attribute(&mut self, name: &str) -> Result<Option<JoinAttribute>, AdError> {
        let binary = ["objectSid", "objectGUID", "mS-DS-ConsistencyGuid"]
            .iter()
            .any(|b| b.eq_ignore_ascii_case(name));
        Ok(Some(JoinAttribute {
            name: name.to_string(),
            syntax: if binary {
                "2.5.5.17"
            } else {
                syntax::UNICODE_STRING
            }
            .into(),
            in_global_catalog: true,
        }))
    }

    async fn load_schema(&mut self) -> Result<Schema, AdError> {
        Ok(schema())
    }

    async fn global_catalog(&self, _url: &str) -> Result<Self, AdError> {
        Ok(self.clone())
    }

    async fn add(
        &mut self,
        dn: &str,
        attrs: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), AdError> {
        let mut d = self.lock();
        let mut line = format!("add {dn}");
        for (k, v) in attrs {
            line.push_str(&format!("; {k}={}", v.join("|")));
        }
        d.write(AdOp::Add, dn, line)?;
        if d.entries.contains_key(&dn_key(dn)) {
            return Err(ldap(AdOp::Add, dn, 68, "entry already exists"));
        }
        let missing = attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("member"))
            .flat_map(|(_, v)| v)
            .any(|m| !d.entries.contains_key(&dn_key(m)));
        if missing {
            return Err(ldap(AdOp::Add, dn, 32, "a member does not exist"));
        }
        let guid = d.guid();
        let entry = Entry {
            dn: dn.to_string(),
            attrs: attrs
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            guid,
            sid: None,
        };
        d.entries.insert(dn_key(dn), entry);
        Ok(())
    }

    async fn modify(&mut self, dn: &str, changes: &[AttrChange]) -> Result<(), AdError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut d = self.lock();
        let lines: Vec<String> = changes.iter().map(change_line).collect();
        d.write(
            AdOp::Modify,
            dn,
            format!("modify {dn}: {}", lines.join("; ")),
        )?;
        // Atomic, as an LDAP modify is: applied to a copy, kept only when all went through.
        let mut e = d.entry_mut(AdOp::Modify, dn)?.clone();
        for c in changes {
            apply_change(&mut e, c)?;
        }
        d.entries.insert(dn_key(dn), e);
        Ok(())
    }

    async fn rename(
        &mut self,
        dn: &str,
        new_rdn: &str,
        new_parent: Option<&str>,
    ) -> Result<String, AdError> {
        let mut d = self.lock();
        let parent = match new_parent {
            Some(p) => p.to_string(),
            None => dn::parent(dn).ok_or_else(|| ldap(AdOp::Rename, dn, 53, "no parent"))?,
        };
        let new_dn = format!("{new_rdn},{parent}");
        d.write(AdOp::Rename, dn, format!("rename {dn} -> {new_dn}"))?;
        if d.entries.contains_key(&dn_key(&new_dn)) && dn_key(&new_dn) != dn_key(dn) {
            return Err(ldap(AdOp::Rename, dn, 68, "entry already exists"));
        }
        let mut e = d
            .entries
            .remove(&dn_key(dn))
            .ok_or_else(|| ldap(AdOp::Rename, dn, 32, "no such object"))?;
        e.dn = new_dn.clone();
        if let Some(cn) = new_rdn.split_once('=').map(|(_, v)| v.to_string()) {
            e.attrs.insert("cn".into(), vec![cn]);
        }
        d.entries.insert(dn_key(&new_dn), e);
        // Links follow the object, as AD keeps them.
        for other in d.entries.values_mut() {
            for attr in ["member", "managedby"] {
                if let Some(vs) = other.attrs.get_mut(attr) {
                    for v in vs.iter_mut() {
                        if dn_key(v) == dn_key(dn) {
                            *v = new_dn.clone();
                        }
                    }
                }
            }
        }
        Ok(new_dn)
    }

    async fn exists(&mut self, dn: &str) -> Result<bool, AdError> {
        Ok(self.lock().entries.contains_key(&dn_key(dn)))
    }

    async fn computers(&mut self, dns: &[String]) -> Result<BTreeSet<String>, AdError> {
        let d = self.lock();
        Ok(dns
            .iter()
            .filter(|dn| {
                d.entries
                    .get(&dn_key(dn))
                    .is_some_and(|e| e.has_class("computer"))
            })
            .cloned()
            .collect())
    }

    async fn delete(&mut self, dn: &str) -> Result<(), AdError> {
        let mut d = self.lock();
        d.write(AdOp::Delete, dn, format!("delete {dn}"))?;
        d.entries
            .remove(&dn_key(dn))
            .map(|_| ())
            .ok_or_else(|| ldap(AdOp::Delete, dn, 32, "no such object"))?;
        for other in d.entries.values_mut() {
            if let Some(vs) = other.attrs.get_mut("member") {
                vs.retain(|v| dn_key(v) != dn_key(dn));
            }
        }
        Ok(())
    }

    async fn add_members(&mut self, group_dn: &str, members: &[String]) -> MemberResult {
        self.members(AdOp::Modify, group_dn, members, true)
    }

    async fn remove_members(&mut self, group_dn: &str, members: &[String]) -> MemberResult {
        self.members(AdOp::Modify, group_dn, members, false)
    }
}
