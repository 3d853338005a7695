//! An in-memory tenant behind [`GraphApi`]: users, devices and groups with a change log, answered as
//! Graph's delta queries answer (everything on a first round; on a round from a deltaLink,
//! the objects changed since, with their member changes in `members@delta` and removed
//! objects as `@removed`), owners by `$batch`, and `to_cloud` PATCHes recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::graph::api::GraphApi;
use crate::graph::client::RoundLimits;
use crate::graph::error::GraphError;

const BASE: &str = "https://graph.fake.test/v1.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    User,
    Group,
    Device,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Group => "groups",
            Kind::Device => "devices",
        }
    }

    fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
            Kind::Device => "#microsoft.graph.device",
        }
    }
}

const USER: &str = "#microsoft.graph.user";

/// One change, for the rounds that start before it.
#[derive(Debug, Clone)]
struct Change {
    kind: Kind,
    id: String,
    /// Members added (`true`) or removed, by id, with their `@odata.type`.
    members: Vec<(String, bool, String)>,
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, Map<String, Value>>,
    groups: BTreeMap<String, Map<String, Value>>,
    devices: BTreeMap<String, Map<String, Value>>,
    /// Group → member id → `@odata.type`.
    members: BTreeMap<String, BTreeMap<String, String>>,
    owners: BTreeMap<String, Vec<String>>,
    log: Vec<Change>,
    /// PATCHes received, one line each.
    patches: Vec<String>,
    /// How rounds are paged, when they are (see [`FakeTenant::page`]).
    paging: Option<Paging>,
    /// Every devices delta request is answered with this status (403: the app lacks
    /// `Device.Read.All`), as Graph answers it.
    devices_refused: Option<u16>,
    /// The next this many delta requests that carry a token are answered 410 Gone
    /// (`resyncRequired`): Graph asks for a full round.
    resets: usize,
}

/// Rounds split as Graph splits them: a big group's `members@delta` in slices, each slice in
/// an entry of its own that repeats the group, in no particular order, over several pages.
#[derive(Debug, Clone, Copy)]
struct Paging {
    entries_per_page: usize,
    members_per_entry: usize,
}

/// The in-memory tenant. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct FakeTenant {
    state: Arc<Mutex<State>>,
}

fn api_error(status: u16, code: &str, message: &str) -> GraphError {
    GraphError::Api(Box::new(crate::graph::error::ApiError {
        status,
        code: code.into(),
        message: message.into(),
        request_id: None,
        client_request_id: None,
        retry_after: None,
        location: None,
    }))
}

impl FakeTenant {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers the devices delta with `status` from now on (`None`: answers it again). 403 is
    /// what Graph says to an app without `Device.Read.All`.
    pub fn refuse_devices(&self, status: Option<u16>) {
        self.lock().devices_refused = status;
    }

    /// The next `count` delta requests from a deltaLink get Graph's 410 `resyncRequired`, as
    /// after a sync state Graph dropped.
    pub fn reset_delta(&self, count: usize) {
        self.lock().resets = count;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces a user (`props` without `id`).
    pub fn user(&self, id: &str, props: Value) {
        let mut s = self.lock();
        s.users.insert(id.into(), object(props));
        s.log.push(Change {
            kind: Kind::User,
            id: id.into(),
            members: Vec::new(),
        });
    }

    /// Adds or replaces a device (`props` without `id`).
    pub fn device(&self, id: &str, props: Value) {
        let mut s = self.lock();
        s.devices.insert(id.into(), object(props));
        s.log.push(Change {
            kind: Kind::Device,
            id: id.into(),
            members: Vec::new(),
        });
    }

    /// Adds or changes a group's properties (merged into what it has).
    pub fn group(&self, id: &str, props: Value) {
        let mut s = self.lock();
        let entry = s.groups.entry(id.into()).or_default();
        for (k, v) in object(props) {
            entry.insert(k, v);
        }
        s.members.entry(id.into()).or_default();
        s.log.push(Change {
            kind: Kind::Group,
            id: id.into(),
            members: Vec::new(),
        });
    }

    /// Adds users (`#microsoft.graph.user`) to a group.
    pub fn add_members(&self, group: &str, users: &[&str]) {
        self.member_change(group, users, true, USER);
    }

    /// Adds devices (`#microsoft.graph.device`) to a group.
    pub fn add_devices(&self, group: &str, devices: &[&str]) {
        self.member_change(group, devices, true, Kind::Device.odata_type());
    }

    /// Removes members from a group (a removal names the member's type, as Graph's does).
    pub fn remove_members(&self, group: &str, ids: &[&str]) {
        self.member_change(group, ids, false, USER);
    }

    fn member_change(&self, group: &str, ids: &[&str], add: bool, odata_type: &str) {
        let mut s = self.lock();
        let members = s.members.entry(group.into()).or_default();
        let mut logged = Vec::new();
        for id in ids {
            let t = match add {
                true => {
                    members.insert(id.to_string(), odata_type.into());
                    odata_type.to_string()
                }
                false => members.remove(*id).unwrap_or_else(|| odata_type.into()),
            };
            logged.push((id.to_string(), add, t));
        }
        s.log.push(Change {
            kind: Kind::Group,
            id: group.into(),
            members: logged,
        });
    }

    /// Sets a group's owners (not in delta, as in Graph).
    pub fn owners(&self, group: &str, users: &[&str]) {
        self.lock()
            .owners
            .insert(group.into(), users.iter().map(|u| u.to_string()).collect());
    }

    /// Deletes a group for good (`@removed` with reason `deleted`; a soft delete keeps the AD
    /// group, see the shipped rules).
    pub fn delete_group(&self, id: &str) {
        let mut s = self.lock();
        s.groups.remove(id);
        s.members.remove(id);
        s.log.push(Change {
            kind: Kind::Group,
            id: id.into(),
            members: Vec::new(),
        });
    }

    /// Rounds from now on come in pages of `entries` entries, a group's member changes in
    /// slices of `members` per entry; the slices of one group are spread over the round, its
    /// entry repeated after other objects' (Graph: "the same group object repeated on later
    /// pages with the next slice", no ordering guarantee).
    pub fn page(&self, entries: usize, members: usize) {
        self.lock().paging = Some(Paging {
            entries_per_page: entries.max(1),
            members_per_entry: members.max(1),
        });
    }

    /// The `to_cloud` writes so far, and forgets them.
    pub fn take_patches(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().patches)
    }

    /// One page of a round: `since` is where the round starts (`None`: the initial query),
    /// `page` which of its pages.
    fn delta(&self, kind: Kind, since: Option<usize>, page: usize) -> Value {
        let entries = self.round_entries(kind, since);
        let s = self.lock();
        let path = kind.path();
        let Some(p) = s.paging else {
            return json!({
                "value": entries,
                "@odata.deltaLink": format!("{BASE}/{path}/delta?$deltatoken={}", s.log.len()),
            });
        };
        let entries = sliced(entries, p.members_per_entry);
        let pages: Vec<&[Value]> = entries.chunks(p.entries_per_page).collect();
        let value = pages.get(page).map(|v| v.to_vec()).unwrap_or_default();
        if page + 1 < pages.len() {
            let from = since.map_or("i".to_string(), |n| n.to_string());
            json!({
                "value": value,
                "@odata.nextLink": format!("{BASE}/{path}/delta?$skiptoken={from}.{}", page + 1),
            })
        } else {
            json!({
                "value": value,
                "@odata.deltaLink": format!("{BASE}/{path}/delta?$deltatoken={}", s.log.len()),
            })
        }
    }

    /// Every entry of a round, one per object, unpaged.
    fn round_entries(&self, kind: Kind, since: Option<usize>) -> Vec<Value> {
        let s = self.lock();
        let mut value = Vec::new();
        let objects = match kind {
            Kind::User => &s.users,
            Kind::Group => &s.groups,
            Kind::Device => &s.devices,
        };
        let odata_type = kind.odata_type();
        match since {
            None => {
                for (id, props) in objects {
                    let mut o = props.clone();
                    o.insert("id".into(), json!(id));
                    o.insert("@odata.type".into(), json!(odata_type));
                    if kind == Kind::Group {
                        let members: Vec<Value> = s
                            .members
                            .get(id)
                            .into_iter()
                            .flatten()
                            .map(|(m, t)| json!({"@odata.type": t, "id": m}))
                            .collect();
                        o.insert("members@delta".into(), Value::Array(members));
                    }
                    value.push(Value::Object(o));
                }
            }
            Some(since) => {
                // Per object: the member changes since, the last one deciding.
                let mut changed: BTreeMap<&str, BTreeMap<&str, (bool, &str)>> = BTreeMap::new();
                for c in s.log.iter().skip(since).filter(|c| c.kind == kind) {
                    let m = changed.entry(c.id.as_str()).or_default();
                    for (id, add, t) in &c.members {
                        m.insert(id.as_str(), (*add, t.as_str()));
                    }
                }
                for (id, members) in changed {
                    let Some(props) = objects.get(id) else {
                        value.push(json!({"id": id, "@removed": {"reason": "deleted"}}));
                        continue;
                    };
                    let mut o = props.clone();
                    o.insert("id".into(), json!(id));
                    o.insert("@odata.type".into(), json!(odata_type));
                    if kind == Kind::Group && !members.is_empty() {
                        let list: Vec<Value> = members
                            .into_iter()
                            .map(|(m, (add, t))| match add {
                                true => json!({"@odata.type": t, "id": m}),
                                false => json!({"@odata.type": t, "id": m, "@removed": {"reason": "deleted"}}),
                            })
                            .collect();
                        o.insert("members@delta".into(), Value::Array(list));
                    }
                    value.push(Value::Object(o));
                }
            }
        }
        value
    }

    fn batch(&self, body: Option<&Value>) -> Result<Value, GraphError> {
        let s = self.lock();
        let mut responses = Vec::new();
        let requests = body
            .and_then(|b| b.get("requests"))
            .and_then(Value::as_array)
            .ok_or_else(|| api_error(400, "BadRequest", "no requests"))?;
        for r in requests {
            let id = r.get("id").cloned().unwrap_or(Value::Null);
            let url = r.get("url").and_then(Value::as_str).unwrap_or_default();
            let group = url
                .trim_start_matches("/groups/")
                .split('/')
                .next()
                .unwrap_or_default();
            let answer = match (s.groups.contains_key(group), s.owners.get(group)) {
                (false, _) => json!({"id": id, "status": 404, "body": {}}),
                (true, owners) => {
                    let value: Vec<Value> = owners
                        .into_iter()
                        .flatten()
                        .map(|o| json!({"@odata.type": USER, "id": o}))
                        .collect();
                    json!({"id": id, "status": 200, "body": {"value": value}})
                }
            };
            responses.push(answer);
        }
        Ok(json!({ "responses": responses }))
    }
}

/// `entries` with each `members@delta` longer than `per` split into slices of `per`: the first
/// slice stays in the object's entry, each later one goes in a repeat of it (`id` and
/// `@odata.type` only), and the repeats come after every other entry's slice of the same rank,
/// so one group comes back later in the round, after other objects.
fn sliced(entries: Vec<Value>, per: usize) -> Vec<Value> {
    let mut ranks: Vec<Vec<Value>> = Vec::new();
    for mut e in entries {
        let members = e
            .as_object_mut()
            .and_then(|o| o.remove("members@delta"))
            .and_then(|m| match m {
                Value::Array(a) => Some(a),
                _ => None,
            });
        let Some(members) = members else {
            push_rank(&mut ranks, 0, e);
            continue;
        };
        let id = e.get("id").cloned().unwrap_or(Value::Null);
        let odata_type = e.get("@odata.type").cloned().unwrap_or(Value::Null);
        for (rank, slice) in members.chunks(per).enumerate() {
            let mut entry = match rank {
                0 => e.as_object().cloned().unwrap_or_default(),
                _ => Map::from_iter([
                    ("id".to_string(), id.clone()),
                    ("@odata.type".to_string(), odata_type.clone()),
                ]),
            };
            entry.insert("members@delta".into(), Value::Array(slice.to_vec()));
            push_rank(&mut ranks, rank, Value::Object(entry));
        }
        if members.is_empty() {
            let mut entry = e.as_object().cloned().unwrap_or_default();
            entry.insert("members@delta".into(), Value::Array(Vec::new()));
            push_rank(&mut ranks, 0, Value::Object(entry));
        }
    }
    ranks.into_iter().flatten().collect()
}

fn push_rank(ranks: &mut Vec<Vec<Value>>, rank: usize, v: Value) {
    while ranks.len() <= rank {
        ranks.push(Vec::new());
    }
    if let Some(r) = ranks.get_mut(rank) {
        r.push(v);
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl GraphApi for FakeTenant {
    fn graph_base(&self) -> &str {
        BASE
    }

    fn round_limits(&self) -> RoundLimits {
        RoundLimits::default()
    }

    async fn get_json(&self, url_or_path: &str) -> Result<Value, GraphError> {
        let path = url_or_path.trim_start_matches(BASE);
        let kind = if path.starts_with("/users/delta") {
            Kind::User
        } else if path.starts_with("/groups/delta") {
            Kind::Group
        } else if path.starts_with("/devices/delta") {
            match self.lock().devices_refused {
                Some(403) => {
                    return Err(api_error(
                        403,
                        "Authorization_RequestDenied",
                        "Insufficient privileges to complete the operation.",
                    ))
                }
                Some(status) => return Err(api_error(status, "ServiceUnavailable", path)),
                None => Kind::Device,
            }
        } else {
            return Err(api_error(404, "Request_ResourceNotFound", path));
        };
        let bad = || api_error(400, "BadRequest", "Badly formed token.");
        if let Some((_, token)) = path.split_once("$skiptoken=") {
            let (from, page) = token.split_once('.').ok_or_else(bad)?;
            let since = match from {
                "i" => None,
                n => Some(n.parse::<usize>().map_err(|_| bad())?),
            };
            let page = page.parse::<usize>().map_err(|_| bad())?;
            return Ok(self.delta(kind, since, page));
        }
        if path.contains("$deltatoken=") {
            let mut s = self.lock();
            if s.resets > 0 {
                s.resets -= 1;
                return Err(api_error(
                    410,
                    "resyncRequired",
                    "Resync required. Replace any local cached data with a full delta sync.",
                ));
            }
        }
        let since = path
            .split_once("$deltatoken=")
            .map(|(_, t)| t.parse::<usize>())
            .transpose()
            .map_err(|_| bad())?;
        Ok(self.delta(kind, since, 0))
    }

    async fn send_json(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> Result<Value, GraphError> {
        match (method, url_or_path) {
            (Method::POST, "$batch") => self.batch(json),
            (_, other) => Err(api_error(404, "Request_ResourceNotFound", other)),
        }
    }

    async fn send(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> Result<(), GraphError> {
        let id = url_or_path.trim_start_matches("groups/").to_string();
        if method != Method::PATCH || id.contains('/') {
            return Err(api_error(404, "Request_ResourceNotFound", url_or_path));
        }
        let mut s = self.lock();
        let Some(group) = s.groups.get_mut(&id) else {
            return Err(api_error(404, "Request_ResourceNotFound", url_or_path));
        };
        let body = json.cloned().map(object).unwrap_or_default();
        for (k, v) in body.clone() {
            group.insert(k, v);
        }
        let line = format!("PATCH groups/{id}: {}", Value::Object(body));
        s.patches.push(line);
        Ok(())
    }
}
