//! Delta rounds: follow `@odata.nextLink` pages to the `@odata.deltaLink` and merge what they
//! say per object id ([`DeltaMerger`], pure), restarting from the initial query when Graph
//! resets the sync state ([`run_round`]).

use super::api::GraphApi;
use super::error::GraphError;
use super::model::{DeltaItem, DeltaRound, MemberRef, RemovedReason, INVALID_MARKER};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// Group properties a writeback round needs (plus `members`, which turns on `members@delta`).
pub const DEFAULT_GROUP_SELECT: &[&str] = &[
    "id",
    "displayName",
    "description",
    "groupTypes",
    "mailEnabled",
    "securityEnabled",
    "mail",
    "mailNickname",
    "proxyAddresses",
    "visibility",
    "createdDateTime",
    "deletedDateTime",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
    "onPremisesSamAccountName",
    "securityIdentifier",
    "members",
];

/// User properties needed to resolve members to on-premises accounts.
pub const DEFAULT_USER_SELECT: &[&str] = &[
    "id",
    "displayName",
    "userPrincipalName",
    "mail",
    "onPremisesSecurityIdentifier",
    "onPremisesImmutableId",
    "onPremisesSyncEnabled",
    "onPremisesSamAccountName",
    "onPremisesDistinguishedName",
    "accountEnabled",
];

/// Device properties member resolution needs: the SID a hybrid-joined device carries (its AD
/// computer's objectSid) and what a reason names when it has none. Nothing more: a tenant's
/// devices are many and rules never see their properties.
pub const DEFAULT_DEVICE_SELECT: &[&str] = &[
    "id",
    "displayName",
    "trustType",
    "onPremisesSecurityIdentifier",
];

/// `<graph_base>/groups/delta?$select=...` (`members` always included). An empty `select`
/// means [`DEFAULT_GROUP_SELECT`].
pub fn groups_delta_url(graph_base: &str, select: &[&str]) -> String {
    let select = if select.is_empty() {
        DEFAULT_GROUP_SELECT
    } else {
        select
    };
    delta_url(graph_base, "groups", select, Some("members"))
}

/// `<graph_base>/users/delta?$select=...`. An empty `select` means [`DEFAULT_USER_SELECT`].
pub fn users_delta_url(graph_base: &str, select: &[&str]) -> String {
    let select = if select.is_empty() {
        DEFAULT_USER_SELECT
    } else {
        select
    };
    delta_url(graph_base, "users", select, None)
}

/// The initial query of a delta round and the `$select` it asks for.
///
/// A deltaLink carries the properties of the query that started it, so the select is stored
/// beside the link: when the rules ask for other properties, the round starts again from this
/// query instead of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialQuery {
    pub url: String,
    /// The selected names, comma-joined as in the URL.
    pub select: String,
}

impl InitialQuery {
    /// Names selected here and not in `stored` (an earlier query's `select`), and the reverse.
    pub fn select_changes<'a>(&'a self, stored: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
        let names =
            |s: &'a str| -> Vec<&'a str> { s.split(',').filter(|n| !n.is_empty()).collect() };
        let (now, before) = (names(&self.select), names(stored));
        let added = now
            .iter()
            .filter(|n| !before.contains(n))
            .copied()
            .collect();
        let removed = before
            .iter()
            .filter(|n| !now.contains(n))
            .copied()
            .collect();
        (added, removed)
    }
}

/// Names a round's query selects that the stored link's query did not, and the reverse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl SelectChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// The one line logged before the full re-read a change causes; `object` is `group` or
    /// `user`.
    pub fn describe(&self, object: &str) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!(
                "the rules read new Graph properties: {}",
                self.added.join(", ")
            ));
        }
        if !self.removed.is_empty() {
            parts.push(format!(
                "the rules no longer read Graph properties: {}",
                self.removed.join(", ")
            ));
        }
        format!("{}; reading every {object} again", parts.join("; "))
    }
}

/// Where a round starts: from the stored link when it came from a query that selected what
/// `query` selects, else from `query` itself (a full round) with what changed. A link stored
/// before selects were recorded counts as coming from `unrecorded` (the host's own select).
pub fn choose_start(
    query: &InitialQuery,
    stored: Option<(String, Option<String>)>,
    unrecorded: &str,
) -> (DeltaStart, SelectChange) {
    let initial = || DeltaStart::Initial {
        url: query.url.clone(),
    };
    let Some((link, select)) = stored else {
        return (initial(), SelectChange::default());
    };
    let (added, removed) = query.select_changes(select.as_deref().unwrap_or(unrecorded));
    let change = SelectChange {
        added: added.into_iter().map(str::to_string).collect(),
        removed: removed.into_iter().map(str::to_string).collect(),
    };
    if change.is_empty() {
        let start = DeltaStart::Link {
            link,
            initial_url: query.url.clone(),
        };
        (start, change)
    } else {
        (initial(), change)
    }
}

/// `groups/delta` with [`DEFAULT_GROUP_SELECT`] plus `extra` (the properties rules declare).
pub fn groups_delta_query(graph_base: &str, extra: &[String]) -> InitialQuery {
    let beta;
    let base = if extra.iter().any(|p| is_beta_only_group_property(p)) {
        beta = beta_root(graph_base);
        beta.as_str()
    } else {
        graph_base
    };
    delta_query(base, "groups", DEFAULT_GROUP_SELECT, extra, Some("members"))
}

/// Group properties Graph has only in its beta API (v1.0 refuses them in `$select` with a
/// 400). A rule that declares one moves the groups' delta to the beta endpoint; users and
/// everything else stay on v1.0.
pub const BETA_ONLY_GROUP_PROPERTIES: &[&str] = &["writebackConfiguration"];

/// Whether `name` is in [`BETA_ONLY_GROUP_PROPERTIES`] (Graph matches names ignoring case).
pub fn is_beta_only_group_property(name: &str) -> bool {
    BETA_ONLY_GROUP_PROPERTIES
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// `<origin>/beta` for a `<origin>/v1.0` Graph root; a root that names no `v1.0` (already the
/// beta root, or a proxy's own path) is used as it is.
pub fn beta_root(graph_base: &str) -> String {
    let base = graph_base.trim_end_matches('/');
    match base.strip_suffix("/v1.0") {
        Some(origin) => format!("{origin}/beta"),
        None => base.to_string(),
    }
}

/// `users/delta` with [`DEFAULT_USER_SELECT`] plus `extra` (the properties rules declare).
pub fn users_delta_query(graph_base: &str, extra: &[String]) -> InitialQuery {
    delta_query(graph_base, "users", DEFAULT_USER_SELECT, extra, None)
}

/// `devices/delta` with [`DEFAULT_DEVICE_SELECT`]; rules declare no device properties.
pub fn devices_delta_query(graph_base: &str) -> InitialQuery {
    delta_query(graph_base, "devices", DEFAULT_DEVICE_SELECT, &[], None)
}

fn delta_url(graph_base: &str, resource: &str, select: &[&str], required: Option<&str>) -> String {
    delta_query(graph_base, resource, select, &[], required).url
}

/// The host's names first, then the extras, each once: a rule declaring a name the host already
/// selects changes nothing.
fn delta_query(
    graph_base: &str,
    resource: &str,
    select: &[&str],
    extra: &[String],
    required: Option<&str>,
) -> InitialQuery {
    let mut names: Vec<&str> = Vec::with_capacity(select.len() + extra.len() + 1);
    let all = select
        .iter()
        .copied()
        .chain(required)
        .chain(extra.iter().map(String::as_str));
    for name in all {
        let name = name.trim();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    let select = names.join(",");
    // Literal `$` and commas, as the Graph SDKs send them.
    InitialQuery {
        url: format!(
            "{}/{resource}/delta?$select={select}",
            graph_base.trim_end_matches('/'),
        ),
        select,
    }
}

/// Where a page says to go next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageLink {
    /// More pages: follow this `@odata.nextLink`.
    Next(String),
    /// The round is complete: the `@odata.deltaLink` for the next round.
    Delta(String),
}

/// Merges the pages of one delta round per object id. Later pages overlay earlier ones:
/// properties are replaced key by key, `members@delta` entries are applied in order (the last
/// add or removal of a member wins), and `@removed` on the object sets or clears its removal.
///
/// Malformed entries never fail the round: an entry without a usable id is skipped with a
/// warning (there is no object to refuse), and a group whose `members@delta` cannot be read in
/// full keeps what could be read and carries [`INVALID_MARKER`] with the reason, so the rules
/// refuse it (its AD object stays as it is) until Graph sends its members cleanly again.
#[derive(Debug, Default)]
pub struct DeltaMerger {
    items: BTreeMap<String, DeltaItem>,
    pages: usize,
    skipped_without_id: usize,
    /// What was wrong with each object in this round, kept across chunks: a later clean page
    /// of the same object does not clear it.
    problems: BTreeMap<String, Problems>,
}

/// An object id is a GUID in Graph; anything longer is not an id.
pub const MAX_ID_BYTES: usize = 128;

/// `@odata.type` values longer than this are cut where they are kept (an unknown type is
/// reported, never written).
const MAX_TYPE_BYTES: usize = 128;

/// Problems of one object, counted; the first few are described.
#[derive(Debug, Default, Clone)]
struct Problems {
    described: Vec<String>,
    count: usize,
}

impl Problems {
    const DESCRIBED: usize = 3;

    fn add(&mut self, what: String) {
        if self.described.len() < Self::DESCRIBED {
            self.described.push(what);
        }
        self.count += 1;
    }

    fn merge(&mut self, other: Problems) {
        let room = Self::DESCRIBED.saturating_sub(self.described.len());
        self.described
            .extend(other.described.into_iter().take(room));
        self.count += other.count;
    }

    fn reason(&self) -> String {
        let mut text = self.described.join("; ");
        if self.count > self.described.len() {
            text.push_str(&format!(
                " (and {} more)",
                self.count - self.described.len()
            ));
        }
        format!(
            "Graph sent a malformed entry: {text}; nothing is written for the group until Graph sends it cleanly again or a full sync (`writeback sync --full`)"
        )
    }
}

/// `text` for a log line or a reason: at most 80 characters, with its length when cut.
fn short(text: &str) -> String {
    const CHARS: usize = 80;
    match text.char_indices().nth(CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!(
            "{:?}... ({} characters)",
            &text[..end],
            text.chars().count()
        ),
    }
}

/// What makes a delta entry (or a `members@delta` entry) unusable. Messages read on from
/// "it ..." / "members@delta entry N of M ...", and never quote more than a cut-down id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EntryProblem {
    #[error("has no id")]
    NoId,
    #[error("has an empty id")]
    EmptyId,
    #[error("has an id of {len} bytes (at most {max})", max = MAX_ID_BYTES)]
    LongId { len: usize },
    #[error("has the id {shown}, with control characters")]
    ControlCharacters { shown: String },
    #[error("has an id that is {kind}")]
    IdNotAString { kind: &'static str },
    #[error("is {kind}, not an object")]
    NotAnObject { kind: &'static str },
}

/// The id of an entry, or why it has none that can be used.
fn entry_id(entry: &serde_json::Map<String, Value>) -> Result<&str, EntryProblem> {
    match entry.get("id") {
        None => Err(EntryProblem::NoId),
        Some(Value::String(id)) if id.is_empty() => Err(EntryProblem::EmptyId),
        Some(Value::String(id)) if id.len() > MAX_ID_BYTES => {
            Err(EntryProblem::LongId { len: id.len() })
        }
        Some(Value::String(id)) if id.chars().any(char::is_control) => {
            Err(EntryProblem::ControlCharacters { shown: short(id) })
        }
        Some(Value::String(id)) => Ok(id),
        Some(other) => Err(EntryProblem::IdNotAString {
            kind: crate::printable::json_kind(other),
        }),
    }
}

impl DeltaMerger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pages seen so far.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Entries skipped because they were not objects or had no usable `id` (documentation
    /// samples are truncated like that; Graph itself always sends `id`). Each was logged.
    pub fn skipped_without_id(&self) -> usize {
        self.skipped_without_id
    }

    /// Objects of this round that carry [`INVALID_MARKER`], with the reason.
    pub fn malformed(&self) -> impl Iterator<Item = (&str, String)> + '_ {
        self.problems
            .iter()
            .map(|(id, p)| (id.as_str(), p.reason()))
    }

    /// The items merged since the last call. In a full round the cache replaces every object,
    /// so a `null` marker (nothing to clear) is dropped.
    fn take_items(&mut self, full: bool) -> BTreeMap<String, DeltaItem> {
        let mut items = std::mem::take(&mut self.items);
        if full {
            for item in items.values_mut() {
                if item.props.get(INVALID_MARKER).is_some_and(Value::is_null) {
                    item.props.remove(INVALID_MARKER);
                }
            }
        }
        items
    }

    /// Merges one page already parsed and says where to go next: the tests' oracle for
    /// [`Self::add_page_body`], which the cycle uses. A page must have a `value` array and a
    /// nextLink or a deltaLink.
    #[cfg(test)]
    pub fn add_page(&mut self, page: &Value) -> Result<PageLink, GraphError> {
        let values = page.get("value").and_then(Value::as_array).ok_or_else(|| {
            GraphError::InvalidResponse("delta page without a `value` array".into())
        })?;
        for (index, value) in values.iter().enumerate() {
            self.add_object(index, value);
        }
        self.pages += 1;
        page_link(page.get("@odata.nextLink"), page.get("@odata.deltaLink"))
    }

    /// Merges one page from its body (`url` names it in errors) and says where to go next. A
    /// page must have a `value` array and a nextLink or a deltaLink. Parsed one entry at a
    /// time: a page parsed whole holds every member entry as a map of its own (about 600 bytes
    /// each; a page of 100 big groups is tens of MB). Also returns the entries merged (objects
    /// plus member entries).
    pub fn add_page_body(
        &mut self,
        body: &[u8],
        url: &str,
    ) -> Result<(PageLink, usize), GraphError> {
        #[derive(serde::Deserialize)]
        struct Shape<'a> {
            #[serde(borrow, default)]
            value: Option<&'a RawValue>,
            #[serde(rename = "@odata.nextLink", default)]
            next: Option<Value>,
            #[serde(rename = "@odata.deltaLink", default)]
            delta: Option<Value>,
        }
        let page: Shape<'_> = serde_json::from_slice(body).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => "is not a delta page",
                _ => "is not JSON",
            };
            GraphError::InvalidResponse(format!("body of GET {url} {what}: {e}"))
        })?;
        // A struct also parses from an array, by position.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(GraphError::InvalidResponse(format!(
                "body of GET {url} is not a delta page: not a JSON object"
            )));
        }
        let values: Vec<&RawValue> = page
            .value
            .and_then(|v| serde_json::from_str(v.get()).ok())
            .ok_or_else(|| {
                GraphError::InvalidResponse("delta page without a `value` array".into())
            })?;
        let mut entries = 0;
        for (index, raw) in values.iter().enumerate() {
            // Valid JSON already (the page parsed): this cannot fail.
            let value: Value = serde_json::from_str(raw.get()).map_err(|e| {
                GraphError::InvalidResponse(format!("body of GET {url}: entry {}: {e}", index + 1))
            })?;
            entries += entry_count(&value);
            self.add_object(index, &value);
        }
        self.pages += 1;
        let link = page_link(page.next.as_ref(), page.delta.as_ref())?;
        Ok((link, entries))
    }

    /// The merged round.
    pub fn finish(mut self, delta_link: String, full: bool) -> DeltaRound {
        DeltaRound {
            items: self.take_items(full),
            delta_link,
            full,
        }
    }

    fn add_object(&mut self, index: usize, value: &Value) {
        let page = self.pages + 1;
        let Some(obj) = value.as_object() else {
            self.skipped_without_id += 1;
            tracing::warn!(
                page,
                entry = index + 1,
                "delta entry skipped: it is {}, not an object",
                crate::printable::json_kind(value)
            );
            return;
        };
        let id = match entry_id(obj) {
            Ok(id) => id,
            Err(why) => {
                self.skipped_without_id += 1;
                let name = obj
                    .get("displayName")
                    .and_then(Value::as_str)
                    .map(short)
                    .unwrap_or_else(|| "(none)".into());
                tracing::warn!(
                    page,
                    entry = index + 1,
                    display_name = %name,
                    "delta entry skipped: it {why}"
                );
                return;
            }
        };
        let mut problems = Problems::default();
        match obj.get("@odata.type") {
            None => {}
            Some(Value::String(t))
                if t == "#microsoft.graph.group" || t == "#microsoft.graph.user" => {}
            Some(Value::String(t)) => problems.add(format!("its @odata.type is {}", short(t))),
            Some(other) => problems.add(format!(
                "its @odata.type is {}",
                crate::printable::json_kind(other)
            )),
        }
        let item = self
            .items
            .entry(id.to_owned())
            .or_insert_with(|| DeltaItem {
                id: id.to_owned(),
                ..Default::default()
            });
        for (key, v) in obj {
            // `id` is the key; every name containing `@` is an annotation (`@odata.type`,
            // `@removed`, `members@delta`, `manager@delta`, ...), not a property.
            if key != "id" && !key.contains('@') {
                item.props.insert(key.clone(), v.clone());
            }
        }
        // The latest occurrence decides: a restored object reappears without the annotation.
        item.removed = obj.get("@removed").map(removed_reason);
        let mut members_read = false;
        match obj.get("members@delta") {
            None => {}
            Some(Value::Array(members)) => {
                members_read = true;
                for (n, m) in members.iter().enumerate() {
                    if let Err(why) = apply_member(item, m) {
                        problems.add(format!(
                            "members@delta entry {} of {} {why}",
                            n + 1,
                            members.len()
                        ));
                    }
                }
            }
            Some(other) => problems.add(format!(
                "members@delta is {}",
                crate::printable::json_kind(other)
            )),
        }
        if problems.count > 0 {
            tracing::warn!(
                group = %id,
                page,
                problems = problems.count,
                "malformed delta entry: {}; a group is refused until Graph sends it cleanly",
                problems.described.join("; ")
            );
            self.problems
                .entry(id.to_owned())
                .or_default()
                .merge(problems);
        }
        match self.problems.get(id) {
            Some(round) => {
                item.props
                    .insert(INVALID_MARKER.into(), Value::String(round.reason()));
            }
            // Members read in full: a reason an earlier round left in the cache is cleared.
            None if members_read => {
                item.props.insert(INVALID_MARKER.into(), Value::Null);
            }
            None => {}
        }
    }
}

/// Applies one `members@delta` entry; `Err` says what is wrong with it (it is then skipped).
fn apply_member(item: &mut DeltaItem, m: &Value) -> Result<(), EntryProblem> {
    let Some(entry) = m.as_object() else {
        return Err(EntryProblem::NotAnObject {
            kind: crate::printable::json_kind(m),
        });
    };
    let member_id = entry_id(entry)?;
    let entry = Some(entry);
    if entry.is_some_and(|e| e.contains_key("@removed")) {
        item.members_added.remove(member_id);
        item.members_removed.insert(member_id.to_owned());
    } else {
        // An unknown type is kept (the member is reported as unresolved); a huge one is cut.
        let odata_type = entry
            .and_then(|e| e.get("@odata.type"))
            .and_then(Value::as_str)
            .map(|t| {
                if t.len() > MAX_TYPE_BYTES {
                    short(t)
                } else {
                    t.to_owned()
                }
            })
            .unwrap_or_default();
        item.members_removed.remove(member_id);
        item.members_added.insert(
            member_id.to_owned(),
            MemberRef {
                odata_type,
                id: member_id.to_owned(),
            },
        );
    }
    Ok(())
}

fn removed_reason(removed: &Value) -> RemovedReason {
    match removed.get("reason").and_then(Value::as_str) {
        Some(r) if r.eq_ignore_ascii_case("deleted") => RemovedReason::Deleted,
        Some(r) if r.eq_ignore_ascii_case("changed") => RemovedReason::Changed,
        other => {
            // Unknown reasons are taken as the restorable kind: the object is gone from the
            // tenant's view either way, and the softer reading never purges anything for good.
            tracing::warn!(reason = ?other, "unknown @removed reason, treated as `changed`");
            RemovedReason::Changed
        }
    }
}

/// Where a round starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaStart {
    /// A full round from the initial query (see [`groups_delta_url`], [`users_delta_url`]).
    Initial { url: String },
    /// An incremental round from a stored deltaLink. `initial_url` is the initial query to restart
    /// from when Graph resets the sync state without naming one (`Location`).
    Link { link: String, initial_url: String },
}

/// Follows one delta round to its deltaLink and merges it. `full` is set for initial rounds.
/// On a sync reset (410 Gone, `syncStateNotFound`, `resyncRequired`, `Badly formed token`) the
/// round restarts once from the initial query (a 410's `Location` if given) as a full round.
/// Holds the whole round: the sync cycle uses [`run_round_chunked`].
pub async fn run_round(
    client: &impl GraphApi,
    start: DeltaStart,
) -> Result<DeltaRound, GraphError> {
    let mut items = BTreeMap::new();
    // One chunk per (re)started round: no size limit.
    let done = run_round_chunked(client, start, usize::MAX, |c| {
        if c.first {
            items.clear();
        }
        items.extend(c.items);
        Ok::<(), std::convert::Infallible>(())
    })
    .await;
    let (delta_link, full) = match done {
        Ok(d) => d,
        Err(ChunkedRoundError::Graph(e)) => return Err(e),
        Err(ChunkedRoundError::Sink(never)) => match never {},
    };
    Ok(DeltaRound {
        items,
        delta_link,
        full,
    })
}

/// A part of a delta round handed over while the round is still being read (see
/// [`run_round_chunked`]).
#[derive(Debug)]
pub struct DeltaChunk {
    /// Items merged from the pages read since the previous chunk.
    pub items: BTreeMap<String, DeltaItem>,
    /// The round carries the whole tenant (initial query or reset).
    pub full: bool,
    /// The first chunk of a round (or of a round restarted after a sync reset): whatever an
    /// earlier chunk of the same call said is superseded by a full round.
    pub first: bool,
}

/// Why a chunked round stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChunkedRoundError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The sink refused a chunk (e.g. the state store could not write it).
    #[error(transparent)]
    Sink(E),
}

/// Merged entries (objects plus member entries) the sync cycle holds before a chunk is handed
/// over: bounds the memory of a first sync whatever the tenant's size (a few MB per chunk).
pub const CHUNK_ENTRIES: usize = 20_000;

/// Follows one round like [`run_round`], but hands the merged items to `sink` every
/// `chunk_entries` entries instead of holding the whole round; the last chunk is handed over
/// (possibly empty) before the deltaLink is returned with the round's `full` flag. A sync reset
/// restarts once as a full round, whose first chunk has `first` set.
pub async fn run_round_chunked<E, F>(
    client: &impl GraphApi,
    start: DeltaStart,
    chunk_entries: usize,
    mut sink: F,
) -> Result<(String, bool), ChunkedRoundError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(DeltaChunk) -> Result<(), E>,
{
    let (mut url, initial_url, mut full) = match start {
        DeltaStart::Initial { url } => (url.clone(), url, true),
        DeltaStart::Link { link, initial_url } => (link, initial_url, false),
    };
    let mut restarted = false;
    let limits = client.round_limits();
    'round: loop {
        let mut merger = DeltaMerger::new();
        let mut first = true;
        let mut held = 0usize;
        let mut page_url = url.clone();
        let started = std::time::Instant::now();
        // Hashes of the pages read: a nextLink back to one of them (A -> B -> A) is a loop.
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        loop {
            if let Some(why) = round_bound(&mut seen, &page_url, started.elapsed(), limits) {
                return Err(GraphError::InvalidResponse(why).into());
            }
            let body = match client.get_body(&page_url).await {
                Ok(b) => b,
                Err(e) if e.is_sync_reset() && !restarted => {
                    let restart = e.reset_location().unwrap_or(&initial_url).to_owned();
                    tracing::warn!(error = %e, restart_url = %restart, "Graph reset the delta sync state; starting a full round");
                    url = restart;
                    full = true;
                    restarted = true;
                    continue 'round;
                }
                Err(e) => return Err(e.into()),
            };
            let (link, entries) = merger.add_page_body(&body, &page_url)?;
            drop(body);
            held += entries;
            let done = match link {
                PageLink::Delta(link) => Some(link),
                PageLink::Next(next) if next == page_url => {
                    return Err(GraphError::InvalidResponse(format!(
                        "delta nextLink points to itself: {next}"
                    ))
                    .into());
                }
                PageLink::Next(next) => {
                    page_url = next;
                    None
                }
            };
            if done.is_some() || held >= chunk_entries {
                let pages = merger.pages();
                let items = merger.take_items(full);
                tracing::debug!(pages, items = items.len(), full, "delta chunk");
                sink(DeltaChunk { items, full, first }).map_err(ChunkedRoundError::Sink)?;
                first = false;
                held = 0;
            }
            if let Some(link) = done {
                return Ok((link, full));
            }
        }
    }
}

/// Why the round stops before reading `url`, if it must: `url` was read already in this round,
/// or the round has read `limits.max_pages` pages or run `limits.timeout`. Records `url`.
fn round_bound(
    seen: &mut std::collections::HashSet<u64>,
    url: &str,
    elapsed: std::time::Duration,
    limits: super::client::RoundLimits,
) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    if !seen.insert(h.finish()) {
        return Some(format!(
            "delta nextLink leads back to a page already read in this round (a loop): {url}"
        ));
    }
    if seen.len() > limits.max_pages {
        return Some(format!(
            "delta round read {} pages without reaching its deltaLink (graph.max_pages_per_round); given up",
            limits.max_pages
        ));
    }
    if elapsed > limits.timeout {
        return Some(format!(
            "delta round ran {} s without reaching its deltaLink (graph.round_timeout_secs); given up",
            limits.timeout.as_secs()
        ));
    }
    None
}

/// Objects plus member entries on one page: what merging it holds in memory.
/// One delta entry and its member entries.
fn entry_count(entry: &Value) -> usize {
    1 + entry
        .get("members@delta")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// Where a page says to go next. Graph never sends both links; should it, there is more to read.
fn page_link(next: Option<&Value>, delta: Option<&Value>) -> Result<PageLink, GraphError> {
    fn link(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|l| !l.is_empty())
    }
    if let Some(next) = link(next) {
        Ok(PageLink::Next(next.to_owned()))
    } else if let Some(delta) = link(delta) {
        Ok(PageLink::Delta(delta.to_owned()))
    } else {
        Err(GraphError::InvalidResponse(
            "delta page with neither @odata.nextLink nor @odata.deltaLink".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn page(json: &str) -> Value {
        serde_json::from_str(json).expect("fixture is JSON")
    }

    /// The large-group samples (`_06`, `_07`) are not JSON: they hold `<...>` placeholder lines
    /// and the trailing commas those leave behind. Drop both.
    fn doc_page(text: &str) -> Value {
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('<'))
            .collect();
        let joined = kept.join("\n");
        let mut out = String::with_capacity(joined.len());
        let chars: Vec<char> = joined.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if *c == ',' {
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if matches!(next, Some(']') | Some('}')) {
                    continue;
                }
            }
            out.push(*c);
        }
        serde_json::from_str(&out).expect("cleaned doc sample is JSON")
    }

    fn user(id: &str) -> MemberRef {
        MemberRef {
            odata_type: "#microsoft.graph.user".into(),
            id: id.into(),
        }
    }

    fn ids<'a>(it: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
        it.into_iter().map(String::as_str).collect()
    }

    const G01: &str = include_str!("testdata/delta/delta-query-groups_01_initial.json");
    const G02: &str = include_str!("testdata/delta/delta-query-groups_02_nextlink.json");
    const G03: &str =
        include_str!("testdata/delta/delta-query-groups_03_final-nextlink-deltalink.json");
    const G04: &str = include_str!("testdata/delta/delta-query-groups_04_deltalink-empty.json");
    const G05: &str = include_str!("testdata/delta/delta-query-groups_05_deltalink-changes.json");
    const G06: &str = include_str!("testdata/delta/delta-query-groups_06_large-group-page1.txt");
    const G07: &str = include_str!("testdata/delta/delta-query-groups_07_large-group-page2.txt");
    const U01: &str = include_str!("testdata/delta/delta-query-users_01_initial.json");
    const U02: &str = include_str!("testdata/delta/delta-query-users_02_nextlink.json");
    const U03: &str =
        include_str!("testdata/delta/delta-query-users_03_final-nextlink-deltalink.json");
    const U05: &str =
        include_str!("testdata/delta/delta-query-users_05_deltalink-changes-removed.json");
    const GROUP_DEFAULT: &str =
        include_str!("testdata/delta/group-delta_v1_response1_default.json");

    const DELTA_LINK: &str = "https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=sZwAFZibx-LQOdZIo1hHhmmDhHzCY0Hs6snoIHJCSIfCHdqKdWNZ2VX3kErpyna9GygROwBk-rqWWMFxJC3pw";

    #[test]
    fn groups_initial_round_across_three_pages() {
        let mut m = DeltaMerger::new();
        assert_eq!(
            m.add_page(&page(G01)).expect("page 1"),
            PageLink::Next("https://graph.microsoft.com/v1.0/groups/delta?$skiptoken=pqwSUjGYvb3jQpbwVAwEL7yuI3dU1LecfkkfLPtnIjvB7XnF_yllFsCrZJ".into())
        );
        assert!(matches!(
            m.add_page(&page(G02)).expect("page 2"),
            PageLink::Next(_)
        ));
        assert_eq!(
            m.add_page(&page(G03)).expect("page 3"),
            PageLink::Delta(DELTA_LINK.into())
        );
        assert_eq!(m.pages(), 3);
        let round = m.finish(DELTA_LINK.into(), true);
        assert!(round.full);
        assert_eq!(round.delta_link, DELTA_LINK);
        assert_eq!(
            ids(round.items.keys()),
            [
                "2e5807ce-58f3-4a94-9b37-ffff2e085957",
                "421e797f-9406-4934-b778-4908421e3505",
                "421e797f-9406-ffff-b778-4908421e3505",
                "bed7f0d4-750e-4e7e-ffff-169002d06fc9",
                "c2f798fd-f95d-4623-8824-63aec21fffff",
                "ec22655c-8eb2-432a-b4ea-8b8a254bffff",
            ]
        );

        let all_company = &round.items["c2f798fd-f95d-4623-8824-63aec21fffff"];
        assert_eq!(
            Value::Object(all_company.props.clone()),
            serde_json::json!({
                "displayName": "All Company",
                "description": "This is the default group for everyone in the network",
            })
        );
        assert_eq!(
            all_company.members_added,
            BTreeMap::from([
                (
                    "49320844-be99-4164-8167-87ff5d047ace".to_string(),
                    user("49320844-be99-4164-8167-87ff5d047ace")
                ),
                (
                    "693acd06-2877-4339-8ade-b704261fe7a0".to_string(),
                    user("693acd06-2877-4339-8ade-b704261fe7a0")
                ),
            ])
        );
        assert!(all_company.members_removed.is_empty());
        assert_eq!(all_company.removed, None);

        // A group without members has no members@delta at all.
        let hr = &round.items["ec22655c-8eb2-432a-b4ea-8b8a254bffff"];
        assert_eq!(hr.props["displayName"], "sg-HR");
        assert!(hr.members_added.is_empty() && hr.members_removed.is_empty());

        let sales = &round.items["421e797f-9406-4934-b778-4908421e3505"];
        assert_eq!(
            ids(sales.members_added.keys()),
            [
                "3c8ac7c4-d365-4df9-abfa-356a9dd7763c",
                "49320844-be99-4164-8167-87ff5d047ace"
            ]
        );
        let mark8 = &round.items["2e5807ce-58f3-4a94-9b37-ffff2e085957"];
        assert_eq!(
            ids(mark8.members_added.keys()),
            ["632f6bb2-3ec8-4c1f-9073-0027a8c68593"]
        );
        let all_employees = &round.items["bed7f0d4-750e-4e7e-ffff-169002d06fc9"];
        assert_eq!(
            Value::Object(all_employees.props.clone()),
            serde_json::json!({"displayName": "All Employees"})
        );
    }

    #[test]
    fn empty_deltalink_page() {
        let mut m = DeltaMerger::new();
        assert_eq!(
            m.add_page(&page(G04)).expect("page"),
            PageLink::Delta(DELTA_LINK.into())
        );
        let round = m.finish(DELTA_LINK.into(), false);
        assert!(round.items.is_empty());
        assert!(!round.full);
    }

    #[test]
    fn deltalink_changes_with_member_removal() {
        let mut m = DeltaMerger::new();
        assert_eq!(
            m.add_page(&page(G05)).expect("page"),
            PageLink::Delta(DELTA_LINK.into())
        );
        let round = m.finish(DELTA_LINK.into(), false);
        assert_eq!(round.items.len(), 1);
        let g = &round.items["2e5807ce-58f3-4a94-9b37-ffff2e085957"];
        assert_eq!(
            Value::Object(g.props.clone()),
            serde_json::json!({"displayName": "TestGroup3", "description": "A test group for change tracking",
                               // members read cleanly: an earlier reason is cleared
                               INVALID_MARKER: null})
        );
        // The doc's 35-character id is kept as sent.
        assert_eq!(
            g.members_removed,
            BTreeSet::from(["632f6bb2-3ec8-4c1f-9073-0027a8c6859".to_string()])
        );
        assert_eq!(
            g.members_added,
            BTreeMap::from([(
                "37de1ae3-408f-4702-8636-20824abda004".to_string(),
                user("37de1ae3-408f-4702-8636-20824abda004")
            )])
        );
        assert_eq!(g.removed, None);
    }

    #[test]
    fn large_group_repeated_across_pages_is_merged() {
        let mut m = DeltaMerger::new();
        assert!(matches!(
            m.add_page(&doc_page(G06)).expect("page 1"),
            PageLink::Next(_)
        ));
        assert!(matches!(
            m.add_page(&doc_page(G07)).expect("page 2"),
            PageLink::Next(_)
        ));
        // The samples stop before the last page; end the round with the empty deltaLink page.
        assert!(matches!(
            m.add_page(&page(G04)).expect("page 3"),
            PageLink::Delta(_)
        ));
        let round = m.finish(DELTA_LINK.into(), false);
        assert_eq!(round.items.len(), 1, "the repeated group is one item");
        let g = &round.items["2e5807ce-58f3-4a94-9b37-ffff2e085957"];
        assert_eq!(
            Value::Object(g.props.clone()),
            serde_json::json!({"displayName": "LargeGroup", "description": "A group containing thousands of users",
                               // members read cleanly: an earlier reason is cleared
                               INVALID_MARKER: null})
        );
        assert_eq!(
            ids(g.members_added.keys()),
            [
                "23423fa6-821e-44b2-aae4-d039d33884c2",
                "37de1ae3-408f-4702-8636-20824abda004"
            ]
        );
        assert_eq!(
            ids(&g.members_removed),
            [
                "632f6bb2-3ec8-4c1f-9073-0027a8c6859",
                "c08a463b-7b8a-40a4-aa31-f9bf690b9551"
            ]
        );
        assert_eq!(
            g.members_added["23423fa6-821e-44b2-aae4-d039d33884c2"].odata_type,
            "#microsoft.graph.user"
        );
    }

    #[test]
    fn users_round_with_soft_deleted_user() {
        let mut m = DeltaMerger::new();
        m.add_page(&page(U01)).expect("page 1");
        m.add_page(&page(U02)).expect("page 2");
        let link = match m.add_page(&page(U03)).expect("page 3") {
            PageLink::Delta(l) => l,
            other => panic!("expected a deltaLink, got {other:?}"),
        };
        let initial = m.finish(link, true);
        assert_eq!(initial.items.len(), 6);
        assert_eq!(
            Value::Object(
                initial.items["605d1257-ffff-40b6-8e6f-528a53f5dc55"]
                    .props
                    .clone()
            ),
            serde_json::json!({"displayName": "Testuser2", "givenName": "Jane", "surname": "Doe"})
        );
        assert!(initial
            .items
            .values()
            .all(|i| i.removed.is_none() && i.members_added.is_empty()));

        let mut m = DeltaMerger::new();
        m.add_page(&page(U05)).expect("changes");
        let changes = m.finish("next".into(), false);
        assert_eq!(
            ids(changes.items.keys()),
            [
                "25dcffff-959e-4ece-9973-e5d9b800e8cc",
                "8ffff70c-1c63-4860-b963-e34ec660931d"
            ]
        );
        let renamed = &changes.items["25dcffff-959e-4ece-9973-e5d9b800e8cc"];
        assert_eq!(renamed.props["displayName"], "Testuser7");
        assert_eq!(renamed.removed, None);
        let gone = &changes.items["8ffff70c-1c63-4860-b963-e34ec660931d"];
        assert_eq!(gone.removed, Some(RemovedReason::Changed));
        assert!(
            gone.props.is_empty(),
            "@removed is an annotation, not a property"
        );
    }

    #[test]
    fn truncated_doc_object_without_id_is_skipped() {
        let mut m = DeltaMerger::new();
        assert!(matches!(
            m.add_page(&page(GROUP_DEFAULT)).expect("page"),
            PageLink::Next(_)
        ));
        assert_eq!(m.skipped_without_id(), 1);
        assert!(m.finish(String::new(), true).items.is_empty());
    }

    #[test]
    fn props_overlay_and_annotations_dropped() {
        let mut m = DeltaMerger::new();
        m.add_page(&serde_json::json!({
            "@odata.nextLink": "n",
            "value": [{"@odata.type": "#microsoft.graph.group", "id": "g", "displayName": "Old", "mail": "a@x",
                       "displayName@odata.type": "#String", "members@delta": []}]
        }))
        .expect("page 1");
        m.add_page(&serde_json::json!({
            "@odata.deltaLink": "d",
            "value": [{"id": "g", "displayName": "New", "description": null}]
        }))
        .expect("page 2");
        let round = m.finish("d".into(), false);
        assert_eq!(
            Value::Object(round.items["g"].props.clone()),
            serde_json::json!({"displayName": "New", "mail": "a@x", "description": null,
                               INVALID_MARKER: null})
        );
    }

    #[test]
    fn last_member_change_in_a_round_wins() {
        let mut m = DeltaMerger::new();
        let removed = |id: &str| serde_json::json!({"@odata.type": "#microsoft.graph.user", "id": id, "@removed": {"reason": "deleted"}});
        let added =
            |id: &str| serde_json::json!({"@odata.type": "#microsoft.graph.group", "id": id});
        m.add_page(&serde_json::json!({"@odata.nextLink": "n", "value": [
            {"id": "g", "members@delta": [added("a"), removed("b")]}
        ]}))
        .expect("page 1");
        m.add_page(&serde_json::json!({"@odata.deltaLink": "d", "value": [
            {"id": "g", "members@delta": [removed("a"), added("b")]}
        ]}))
        .expect("page 2");
        let g = &m.finish("d".into(), false).items["g"];
        assert_eq!(ids(&g.members_removed), ["a"]);
        assert_eq!(ids(g.members_added.keys()), ["b"]);
        assert_eq!(g.members_added["b"].odata_type, "#microsoft.graph.group");
    }

    #[test]
    fn object_removal_last_occurrence_wins() {
        let mut m = DeltaMerger::new();
        m.add_page(&serde_json::json!({"@odata.nextLink": "n", "value": [
            {"id": "a", "@removed": {"reason": "deleted"}},
            {"id": "b", "displayName": "B"},
            {"id": "c", "@removed": {"reason": "vanished"}}
        ]}))
        .expect("page 1");
        m.add_page(&serde_json::json!({"@odata.deltaLink": "d", "value": [
            {"id": "a", "displayName": "A restored"},
            {"id": "b", "@removed": {"reason": "deleted"}}
        ]}))
        .expect("page 2");
        let r = m.finish("d".into(), false);
        assert_eq!(r.items["a"].removed, None);
        assert_eq!(r.items["b"].removed, Some(RemovedReason::Deleted));
        assert_eq!(r.items["c"].removed, Some(RemovedReason::Changed));
    }

    #[test]
    fn a_round_stops_at_a_loop_at_its_page_limit_and_at_its_deadline() {
        use super::super::client::RoundLimits;
        use std::time::Duration;
        let limits = RoundLimits {
            max_pages: 3,
            timeout: Duration::from_secs(60),
        };
        let mut seen = std::collections::HashSet::new();
        let t = Duration::ZERO;
        assert_eq!(round_bound(&mut seen, "a", t, limits), None);
        assert_eq!(round_bound(&mut seen, "b", t, limits), None);
        let e = round_bound(&mut seen, "a", t, limits).unwrap_or_default();
        assert!(e.contains("a loop"), "{e}");
        assert_eq!(round_bound(&mut seen, "c", t, limits), None);
        let e = round_bound(&mut seen, "d", t, limits).unwrap_or_default();
        assert!(e.contains("graph.max_pages_per_round"), "{e}");
        let mut fresh = std::collections::HashSet::new();
        let e = round_bound(&mut fresh, "a", Duration::from_secs(61), limits).unwrap_or_default();
        assert!(e.contains("graph.round_timeout_secs"), "{e}");
    }

    #[test]
    fn malformed_pages_are_errors() {
        let mut m = DeltaMerger::new();
        for bad in [
            serde_json::json!({"@odata.deltaLink": "d"}),
            serde_json::json!({"value": []}),
            serde_json::json!({"value": [], "@odata.nextLink": ""}),
        ] {
            assert!(
                matches!(m.add_page(&bad), Err(GraphError::InvalidResponse(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_page_read_from_its_body_merges_as_the_parsed_page_does() {
        let malformed = serde_json::json!({"@odata.deltaLink": "d", "value": [
            {"id": "ok", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "u1"}]},
            1, {"displayName": "No id"},
            {"id": "bad", "members@delta": [{"id": 7}, "u9",
                {"@odata.type": "#microsoft.graph.user", "id": "u2", "@removed": {"reason": "deleted"}}]}
        ]});
        let rounds: Vec<Vec<Value>> = vec![
            vec![page(G01), page(G02), page(G03)],
            vec![page(G05)],
            vec![doc_page(G06), doc_page(G07)],
            vec![page(U01), page(U02), page(U03)],
            vec![malformed],
        ];
        for pages in rounds {
            let (mut parsed, mut read) = (DeltaMerger::new(), DeltaMerger::new());
            for p in &pages {
                let body = serde_json::to_vec(p).expect("json");
                let (link, entries) = read.add_page_body(&body, "u").expect("body");
                assert_eq!(link, parsed.add_page(p).expect("page"));
                let want: usize = p["value"]
                    .as_array()
                    .map_or(0, |v| v.iter().map(entry_count).sum());
                assert_eq!(entries, want);
            }
            assert_eq!(read.skipped_without_id(), parsed.skipped_without_id());
            let why = |m: &DeltaMerger| {
                m.malformed()
                    .map(|(i, r)| format!("{i}: {r}"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(why(&read), why(&parsed));
            assert_eq!(
                read.finish("d".into(), true),
                parsed.finish("d".into(), true)
            );
        }
    }

    #[test]
    fn a_body_that_is_no_delta_page_is_an_error_naming_the_url() {
        let mut m = DeltaMerger::new();
        for (body, says) in [
            (&b"<html>busy</html>"[..], "is not JSON"),
            (b"{\"value\": [", "is not JSON"),
            (b"[1, 2]", "is not a delta page"),
            (
                b"{\"value\": 5, \"@odata.deltaLink\": \"d\"}",
                "without a `value` array",
            ),
            (
                b"{\"value\": []}",
                "neither @odata.nextLink nor @odata.deltaLink",
            ),
        ] {
            match m.add_page_body(body, "https://graph/groups/delta") {
                Err(GraphError::InvalidResponse(e)) => assert!(e.contains(says), "{e}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        let err = format!(
            "{:?}",
            m.add_page_body(b"nope", "https://graph/groups/delta")
        );
        assert!(err.contains("https://graph/groups/delta"), "{err}");
    }

    fn marker(item: &DeltaItem) -> Option<&Value> {
        item.props.get(INVALID_MARKER)
    }

    fn reason(item: &DeltaItem) -> &str {
        match marker(item) {
            Some(Value::String(r)) => r,
            other => panic!("{}: expected a reason, got {other:?}", item.id),
        }
    }

    #[test]
    fn malformed_entries_are_per_object_and_the_rest_of_the_page_is_merged() {
        let huge = "x".repeat(100_000);
        let mut m = DeltaMerger::new();
        let link = m
            .add_page(&serde_json::json!({"@odata.deltaLink": "d", "value": [
                {"id": "ok", "displayName": "Fine", "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "u1"}
                ]},
                1,
                "a-string",
                {"displayName": "No id"},
                {"id": 5},
                {"id": ""},
                {"id": huge.clone(), "displayName": huge.clone()},
                {"id": "bad", "displayName": "Broken members", "members@delta": [
                    {"@odata.type": "#microsoft.graph.user"},
                    "u9",
                    {"@odata.type": "#microsoft.graph.user", "id": "u2"},
                    {"@odata.type": "#microsoft.graph.user", "id": 7, "@removed": {"reason": "deleted"}},
                    {"id": huge.clone()}
                ]},
                {"id": "odd", "members@delta": {"id": "u3"}},
                {"id": "alien", "@odata.type": "#microsoft.graph.spaceship"},
                {"id": "types", "members@delta": [
                    {"@odata.type": "#microsoft.graph.spaceship", "id": "s1"},
                    {"id": "s2"},
                    {"@odata.type": huge.clone(), "id": "s3"}
                ]}
            ]}))
            .expect("a malformed entry does not fail the page");
        assert_eq!(link, PageLink::Delta("d".into()));
        assert_eq!(m.skipped_without_id(), 6);
        let malformed: Vec<(String, String)> =
            m.malformed().map(|(id, r)| (id.to_string(), r)).collect();
        assert_eq!(
            malformed
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["alien", "bad", "odd"]
        );
        let round = m.finish("d".into(), false);
        assert_eq!(
            ids(round.items.keys()),
            ["alien", "bad", "odd", "ok", "types"]
        );

        // The clean group is merged as ever; its members were read, so an old reason clears.
        let ok = &round.items["ok"];
        assert_eq!(ids(ok.members_added.keys()), ["u1"]);
        assert_eq!(marker(ok), Some(&Value::Null));

        // The broken group keeps what could be read and says what could not.
        let bad = &round.items["bad"];
        assert_eq!(ids(bad.members_added.keys()), ["u2"]);
        assert_eq!(bad.props["displayName"], "Broken members");
        let why = reason(bad);
        assert!(
            why.contains("members@delta entry 1 of 5 has no id"),
            "{why}"
        );
        assert!(
            why.contains("entry 2 of 5 is a string, not an object"),
            "{why}"
        );
        assert!(
            why.contains("entry 4 of 5 has an id that is a number"),
            "{why}"
        );
        assert!(why.contains("(and 1 more)"), "{why}");
        assert!(why.len() < 600 && !why.contains(&huge[..100]), "{why}");
        assert_eq!(malformed[1].1, why);

        assert!(
            reason(&round.items["odd"]).contains("members@delta is an object"),
            "{:?}",
            round.items["odd"].props
        );
        assert!(reason(&round.items["alien"])
            .contains("its @odata.type is \"#microsoft.graph.spaceship\""));

        // Members of unknown types are kept (reported as unresolved later); a huge type is cut.
        let types = &round.items["types"];
        assert_eq!(ids(types.members_added.keys()), ["s1", "s2", "s3"]);
        assert_eq!(
            types.members_added["s1"].odata_type,
            "#microsoft.graph.spaceship"
        );
        assert_eq!(types.members_added["s2"].odata_type, "");
        assert!(types.members_added["s3"].odata_type.len() < 200);
        assert_eq!(marker(types), Some(&Value::Null));
    }

    #[test]
    fn a_reason_lasts_the_round_and_a_clean_round_clears_it() {
        let bad = serde_json::json!({"@odata.nextLink": "n", "value": [
            {"id": "g", "members@delta": [{"@odata.type": "#microsoft.graph.user"}]}
        ]});
        let clean = |link: &str| {
            serde_json::json!({link: "x", "value": [
                {"id": "g", "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": "u1"}]}
            ]})
        };
        let mut m = DeltaMerger::new();
        m.add_page(&bad).expect("page 1");
        // A chunk handed over mid-round, then a clean page of the same group.
        let first = m.take_items(false);
        assert!(reason(&first["g"]).contains("has no id"));
        m.add_page(&clean("@odata.deltaLink")).expect("page 2");
        let rest = m.finish("d".into(), false);
        assert!(reason(&rest.items["g"]).contains("has no id"));
        assert_eq!(ids(rest.items["g"].members_added.keys()), ["u1"]);

        // The next round reads the members cleanly: the reason is cleared.
        let mut m = DeltaMerger::new();
        m.add_page(&clean("@odata.deltaLink")).expect("next round");
        assert_eq!(
            marker(&m.finish("d".into(), false).items["g"]),
            Some(&Value::Null)
        );

        // A full round replaces the cached properties: no null marker is stored at all.
        let mut m = DeltaMerger::new();
        m.add_page(&clean("@odata.deltaLink")).expect("full round");
        m.add_page(&serde_json::json!({"@odata.deltaLink": "x", "value": [
            {"id": "h", "members@delta": {}}
        ]}))
        .expect("full round, page 2");
        let full = m.finish("d".into(), true);
        assert_eq!(marker(&full.items["g"]), None);
        assert!(reason(&full.items["h"]).contains("members@delta is an object"));
    }

    #[test]
    fn huge_values_are_kept_for_the_rules_to_refuse() {
        // The parser keeps what Graph sent: the rules refuse the group with a reason (nothing
        // is dropped without a trace).
        let name = "n".repeat(10 * 1024 * 1024);
        let mut m = DeltaMerger::new();
        m.add_page(&serde_json::json!({"@odata.deltaLink": "d", "value": [
            {"id": "big", "displayName": name.clone()},
            {"id": "small", "displayName": "Small"}
        ]}))
        .expect("page");
        let round = m.finish("d".into(), true);
        assert_eq!(
            round.items["big"].props["displayName"]
                .as_str()
                .map(str::len),
            Some(name.len())
        );
        assert_eq!(round.items["small"].props["displayName"], "Small");
        assert_eq!(marker(&round.items["big"]), None);
    }

    #[test]
    fn delta_urls() {
        assert_eq!(
            groups_delta_url("https://graph.microsoft.com/v1.0/", &["id", "displayName"]),
            "https://graph.microsoft.com/v1.0/groups/delta?$select=id,displayName,members"
        );
        assert_eq!(
            groups_delta_url(
                "http://127.0.0.1:1/v1.0",
                &["members", "displayName", "displayName"]
            ),
            "http://127.0.0.1:1/v1.0/groups/delta?$select=members,displayName"
        );
        assert_eq!(
            groups_delta_url("https://g/v1.0", &[]),
            format!(
                "https://g/v1.0/groups/delta?$select={}",
                DEFAULT_GROUP_SELECT.join(",")
            )
        );
        assert!(DEFAULT_GROUP_SELECT.contains(&"members"));
        assert_eq!(
            users_delta_url("https://g/v1.0", &[]),
            "https://g/v1.0/users/delta?$select=id,displayName,userPrincipalName,mail,onPremisesSecurityIdentifier,\
             onPremisesImmutableId,onPremisesSyncEnabled,onPremisesSamAccountName,onPremisesDistinguishedName,accountEnabled"
        );
        assert_eq!(
            users_delta_url("https://g/v1.0", &["id"]),
            "https://g/v1.0/users/delta?$select=id"
        );
    }

    #[test]
    fn declared_properties_join_the_select() {
        let ext = "extension_0123456789abcdef0123456789abcdef_costCenter".to_string();
        let q = groups_delta_query("https://g/v1.0/", &[ext.clone(), "classification".into()]);
        let defaults = DEFAULT_GROUP_SELECT.join(",");
        assert_eq!(
            q.url,
            format!("https://g/v1.0/groups/delta?$select={defaults},{ext},classification")
        );
        assert_eq!(q.select, format!("{defaults},{ext},classification"));
        // Names the host already selects are not repeated.
        let same = groups_delta_query("https://g/v1.0", &["displayName".into(), "members".into()]);
        assert_eq!(same, groups_delta_query("https://g/v1.0", &[]));
        assert_eq!(same.url, groups_delta_url("https://g/v1.0", &[]));

        let u = users_delta_query("https://g/v1.0", &["onPremisesExtensionAttributes".into()]);
        assert_eq!(
            u.url,
            format!(
                "{},onPremisesExtensionAttributes",
                users_delta_url("https://g/v1.0", &[])
            )
        );

        let (added, removed) = q.select_changes(&same.select);
        assert_eq!(added, vec![ext.as_str(), "classification"]);
        assert!(removed.is_empty());
        let (added, removed) = same.select_changes(&q.select);
        assert!(added.is_empty());
        assert_eq!(removed, vec![ext.as_str(), "classification"]);
        assert_eq!(q.select_changes(&q.select), (vec![], vec![]));
    }

    #[test]
    fn a_beta_only_property_moves_the_groups_delta_to_beta() {
        let beta = groups_delta_query(
            "https://graph.microsoft.com/v1.0/",
            &["WritebackConfiguration".into(), "classification".into()],
        );
        let defaults = DEFAULT_GROUP_SELECT.join(",");
        assert_eq!(
            beta.url,
            format!(
                "https://graph.microsoft.com/beta/groups/delta?$select={defaults},WritebackConfiguration,classification"
            )
        );
        // Without one, v1.0 as before; users never move.
        let v1 = groups_delta_query(
            "https://graph.microsoft.com/v1.0",
            &["classification".into()],
        );
        assert!(v1
            .url
            .starts_with("https://graph.microsoft.com/v1.0/groups/delta?"));
        let users = users_delta_query("https://graph.microsoft.com/v1.0", &[]);
        assert!(users
            .url
            .starts_with("https://graph.microsoft.com/v1.0/users/"));
        // The select change (the new property) is what re-reads the tenant once.
        let (added, _) = beta.select_changes(&v1.select);
        assert_eq!(added, vec!["WritebackConfiguration"]);

        assert_eq!(
            beta_root("http://127.0.0.1:1/v1.0"),
            "http://127.0.0.1:1/beta"
        );
        assert_eq!(
            beta_root("https://proxy.example/graph/"),
            "https://proxy.example/graph"
        );
        assert_eq!(beta_root("https://g/beta"), "https://g/beta");
    }

    #[test]
    fn a_link_is_followed_only_under_the_select_it_was_started_with() {
        let ext = "extension_0123456789abcdef0123456789abcdef_costCenter".to_string();
        let plain = groups_delta_query("https://g/v1.0", &[]);
        let wide = groups_delta_query("https://g/v1.0", std::slice::from_ref(&ext));
        let link = || {
            Some((
                "https://g/v1.0/groups/delta?$deltatoken=T".to_string(),
                None,
            ))
        };
        let with = |sel: &str| {
            Some((
                "https://g/v1.0/groups/delta?$deltatoken=T".to_string(),
                Some(sel.to_string()),
            ))
        };
        let is_link = |s: &DeltaStart| matches!(s, DeltaStart::Link { .. });

        // No link: initial, nothing to report.
        let (start, change) = choose_start(&wide, None, &plain.select);
        assert_eq!(
            start,
            DeltaStart::Initial {
                url: wide.url.clone()
            }
        );
        assert!(change.is_empty());
        // Same select: the link.
        let (start, change) = choose_start(&wide, with(&wide.select), &plain.select);
        assert!(is_link(&start) && change.is_empty());
        // An unrecorded select counts as the host's own.
        let (start, _) = choose_start(&plain, link(), &plain.select);
        assert!(is_link(&start));
        let (start, change) = choose_start(&wide, link(), &plain.select);
        assert_eq!(
            start,
            DeltaStart::Initial {
                url: wide.url.clone()
            }
        );
        assert_eq!(change.added, vec![ext.clone()]);
        // A property dropped: read again too (its old values would linger in the cache).
        let (start, change) = choose_start(&plain, with(&wide.select), &plain.select);
        assert!(!is_link(&start));
        assert_eq!(
            change.describe("group"),
            format!("the rules no longer read Graph properties: {ext}; reading every group again")
        );
        assert_eq!((change.added.len(), change.removed), (0, vec![ext.clone()]));
        let both = SelectChange {
            added: vec!["classification".into(), "theme".into()],
            removed: vec![ext.clone()],
        };
        assert_eq!(
            both.describe("user"),
            format!("the rules read new Graph properties: classification, theme; the rules no longer read Graph properties: {ext}; reading every user again")
        );
    }
}
