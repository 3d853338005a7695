//! Delta query for users and groups.
//!
//! A round is either *full* (no token: every live object now) or *incremental* (a deltaLink:
//! the changes in the log window `(s, h]`, folded per object to its net effect). Tokens carry
//! the whole state (kind, query, window, cursor), so any link can be replayed. Incremental
//! rounds are planned once per window and cached; the plan depends only on the append-only
//! log, so a recomputed plan is identical and cursors stay valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock::unix_ms;
use crate::errors::{GraphError, GraphResult};
use crate::odata::{self, Query};
use crate::render::{self, Unset};
use crate::response::{GraphResponse, RequestCtx};
use crate::schema::{self, ApiVersion};
use crate::state::AppState;
use crate::statetoken;
use crate::store::{ChangeKind, Kind, Obj, Store};
use crate::urlenc;

/// Directory delta tokens live 7 days.
pub const TOKEN_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;
/// At most this many ids in a delta `$filter`.
pub const MAX_FILTER_IDS: usize = 50;
const PLAN_CACHE: usize = 16;

/// Delta switches the control endpoint sets.
#[derive(Debug)]
pub struct DeltaControl {
    /// The next N token requests get 410 Gone.
    pub force_reset: u32,
    /// Tokens issued at or before this (emulator ms) are gone (400 syncStateNotFound).
    pub invalid_before_ms: i64,
    /// Changes when the tenant is replaced; older tokens get 410.
    pub epoch: u64,
    cache: Vec<(String, Arc<Vec<PlanItem>>)>,
}

impl Default for DeltaControl {
    fn default() -> Self {
        Self::new()
    }
}

impl DeltaControl {
    pub fn new() -> Self {
        DeltaControl {
            force_reset: 0,
            invalid_before_ms: i64::MIN,
            epoch: rand::random::<u32>() as u64,
            cache: Vec::new(),
        }
    }

    pub fn new_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.cache.clear();
    }
}

/// The query a round was started with, carried in every token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
struct DeltaQuery {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    sel: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    ids: Option<Vec<String>>,
    /// Legacy `$expand=members`.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    exp: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    top: Option<usize>,
}

impl DeltaQuery {
    fn tracks_members(&self, kind: Kind) -> bool {
        kind == Kind::Group
            && (self.exp
                || self
                    .sel
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|p| p == "members")))
    }

    /// Properties whose change surfaces an object.
    fn tracks_property(&self, kind: Kind, p: &str) -> bool {
        match &self.sel {
            Some(sel) => sel.iter().any(|s| s == p),
            None => schema::default_properties(kind).contains(&p),
        }
    }

    /// The initial-request URL (for 410 `Location`).
    fn initial_url(&self, root: &str, kind: Kind) -> String {
        let mut params = Vec::new();
        if let Some(sel) = &self.sel {
            params.push(format!("$select={}", sel.join(",")));
        }
        if let Some(ids) = &self.ids {
            let f = ids
                .iter()
                .map(|i| format!("id eq '{i}'"))
                .collect::<Vec<_>>()
                .join(" or ");
            params.push(format!("$filter={}", urlenc::encode_query_value(&f)));
        }
        if self.exp {
            params.push("$expand=members".into());
        }
        if let Some(t) = self.top {
            params.push(format!("$top={t}"));
        }
        let qs = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        format!("{root}/{}/delta{qs}", kind.entity_set())
    }
}

/// Token payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenState {
    /// "skip" (mid-round) or "delta" (start of the next round).
    ph: String,
    k: String,
    q: DeltaQuery,
    /// Tenant epoch.
    e: u64,
    /// Issued at, emulator ms.
    t: i64,
    /// Round base sequence; None = full round. For "delta" tokens, the next round's base.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    s: Option<u64>,
    /// Round head (skip tokens only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    h: Option<u64>,
    /// Cursor: listing order key (full rounds) or plan index (incremental rounds).
    #[serde(default)]
    i: u64,
    /// Last member id emitted for the object at the cursor (a split group).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    m: Option<String>,
    /// Page number within the round.
    #[serde(default)]
    p: u32,
}

fn kind_name(kind: Kind) -> &'static str {
    kind.entity_set()
}

/// One object of an incremental round.
#[derive(Debug, Clone, PartialEq)]
enum PlanItem {
    /// Created or restored in the window: full representation.
    New(String),
    /// Existing object: changed tracked properties and net member changes (sorted by id).
    Changed {
        id: String,
        props: Vec<String>,
        members: Vec<(String, bool)>,
    },
    Removed {
        id: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Live,
    Soft,
    Hard,
}

#[derive(Default)]
struct Acc {
    created_new: bool,
    end: Option<End>,
    props: BTreeSet<String>,
    /// member → (was it a member at the window start, is it one at the end)
    members: BTreeMap<String, (bool, bool)>,
}

/// Fold the log window into one item per object, ordered by first change.
fn build_plan(store: &Store, kind: Kind, q: &DeltaQuery, s: u64, h: u64) -> Vec<PlanItem> {
    let ids: Option<BTreeSet<&str>> = q
        .ids
        .as_ref()
        .map(|v| v.iter().map(String::as_str).collect());
    let mut accs: HashMap<&str, Acc> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for c in store.changes(s, h) {
        if c.kind != kind || ids.as_ref().is_some_and(|f| !f.contains(c.id.as_str())) {
            continue;
        }
        let acc = accs.entry(c.id.as_str()).or_insert_with(|| {
            order.push(c.id.as_str());
            Acc {
                created_new: matches!(c.what, ChangeKind::Created { restored: false }),
                ..Default::default()
            }
        });
        match &c.what {
            ChangeKind::Created { .. } => acc.end = Some(End::Live),
            ChangeKind::SoftDeleted => acc.end = Some(End::Soft),
            ChangeKind::HardDeleted => acc.end = Some(End::Hard),
            ChangeKind::Props(ps) => acc.props.extend(ps.iter().cloned()),
            ChangeKind::MemberAdded(m) => {
                acc.members.entry(m.clone()).or_insert((false, true)).1 = true;
            }
            ChangeKind::MemberRemoved(m) => {
                acc.members.entry(m.clone()).or_insert((true, false)).1 = false;
            }
        }
    }
    let tracks_members = q.tracks_members(kind);
    order
        .into_iter()
        .filter_map(|id| {
            let acc = accs.remove(id)?;
            let id = id.to_string();
            match acc.end {
                Some(End::Hard) if !acc.created_new => Some(PlanItem::Removed {
                    id,
                    reason: "deleted",
                }),
                Some(End::Soft) if !acc.created_new => Some(PlanItem::Removed {
                    id,
                    reason: "changed",
                }),
                Some(End::Hard | End::Soft) => None,
                Some(End::Live) => Some(PlanItem::New(id)),
                None => {
                    let props: Vec<String> = acc
                        .props
                        .into_iter()
                        .filter(|p| q.tracks_property(kind, p))
                        .collect();
                    let members: Vec<(String, bool)> = if tracks_members {
                        acc.members
                            .into_iter()
                            .filter(|(_, (before, after))| before != after)
                            .map(|(m, (_, after))| (m, after))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (!props.is_empty() || !members.is_empty()).then_some(PlanItem::Changed {
                        id,
                        props,
                        members,
                    })
                }
            }
        })
        .collect()
}

fn plan(
    state: &AppState,
    store: &Store,
    kind: Kind,
    q: &DeltaQuery,
    s: u64,
    h: u64,
) -> Arc<Vec<PlanItem>> {
    let key = format!(
        "{}:{s}:{h}:{}",
        kind_name(kind),
        serde_json::to_string(q).unwrap_or_default()
    );
    let mut ctl = state.delta_control();
    if let Some((_, p)) = ctl.cache.iter().find(|(k, _)| *k == key) {
        return p.clone();
    }
    let p = Arc::new(build_plan(store, kind, q, s, h));
    if ctl.cache.len() >= PLAN_CACHE {
        ctl.cache.remove(0);
    }
    ctl.cache.push((key, p.clone()));
    p
}

fn member_ref(store: &Store, id: &str, removed: bool) -> Value {
    let kind = store.kind_of(id).unwrap_or(Kind::User);
    let mut m = Map::new();
    m.insert("@odata.type".into(), json!(kind.odata_type()));
    m.insert("id".into(), json!(id));
    if removed {
        m.insert("@removed".into(), json!({"reason": "deleted"}));
    }
    Value::Object(m)
}

/// Paging budget of one response.
struct Budget {
    objects: usize,
    members: usize,
}

/// Where the next page starts.
type Cursor = (u64, Option<String>);

/// Full representation of an object, members from `after` on. Returns the item and, when the
/// member list was cut, the last member id emitted.
fn render_new(
    store: &Store,
    obj: &Obj,
    q: &DeltaQuery,
    after: Option<&str>,
    budget: &Budget,
) -> (Value, Option<String>) {
    let mut m = render::render(obj, q.sel.as_deref(), Unset::Omit);
    let mut cut = None;
    if q.tracks_members(obj.kind) {
        let range: Box<dyn Iterator<Item = &String>> = match after {
            Some(a) => Box::new(
                obj.members
                    .range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(obj.members.iter()),
        };
        let mut chunk: Vec<&String> = range.take(budget.members + 1).collect();
        if chunk.len() > budget.members {
            chunk.truncate(budget.members);
            cut = chunk.last().map(|s| s.to_string());
        }
        if !chunk.is_empty() {
            m.insert(
                "members@delta".into(),
                Value::Array(
                    chunk
                        .iter()
                        .map(|id| member_ref(store, id, false))
                        .collect(),
                ),
            );
        }
    }
    (Value::Object(m), cut)
}

fn needs_split(members: usize, tracked: bool, budget: &Budget) -> bool {
    tracked && members > budget.members
}

fn full_page(
    store: &Store,
    kind: Kind,
    q: &DeltaQuery,
    cursor: Cursor,
    budget: &Budget,
) -> (Vec<Value>, Option<Cursor>) {
    let (pos, mut after) = cursor;
    let objs: Box<dyn Iterator<Item = &Obj>> = match &q.ids {
        Some(ids) => {
            let mut v: Vec<&Obj> = ids
                .iter()
                .filter_map(|id| store.get(id))
                .filter(|o| o.kind == kind && o.order >= pos)
                .collect();
            v.sort_by_key(|o| o.order);
            v.dedup_by_key(|o| o.order);
            Box::new(v.into_iter())
        }
        None => Box::new(store.iter_from(kind, pos)),
    };
    let mut out = Vec::new();
    for obj in objs.filter(|o| o.is_live()) {
        if out.len() >= budget.objects {
            return (out, Some((obj.order, None)));
        }
        let resume = if obj.order == pos { after.take() } else { None };
        if !out.is_empty() && needs_split(obj.members.len(), q.tracks_members(obj.kind), budget) {
            // A group that must be split starts its own page (and fills it).
            return (out, Some((obj.order, None)));
        }
        let (item, cut) = render_new(store, obj, q, resume.as_deref(), budget);
        out.push(item);
        if let Some(last) = cut {
            // A split group ends the page; it is repeated on the next one.
            return (out, Some((obj.order, Some(last))));
        }
    }
    (out, None)
}

fn incremental_page(
    store: &Store,
    kind: Kind,
    q: &DeltaQuery,
    plan: &[PlanItem],
    cursor: Cursor,
    budget: &Budget,
    minimal: bool,
) -> (Vec<Value>, Option<Cursor>) {
    let (mut idx, mut after) = (cursor.0 as usize, cursor.1);
    let mut out = Vec::new();
    while idx < plan.len() {
        if out.len() >= budget.objects {
            return (out, Some((idx as u64, None)));
        }
        let resume = after.take();
        if !out.is_empty() {
            let split = match &plan[idx] {
                PlanItem::New(id) => store
                    .live(kind, id)
                    .is_some_and(|o| needs_split(o.members.len(), q.tracks_members(kind), budget)),
                PlanItem::Changed { members, .. } => needs_split(members.len(), true, budget),
                PlanItem::Removed { .. } => false,
            };
            if split {
                return (out, Some((idx as u64, None)));
            }
        }
        match &plan[idx] {
            PlanItem::Removed { id, reason } => {
                out.push(json!({"id": id, "@removed": {"reason": reason}}));
            }
            PlanItem::New(id) => {
                if let Some(obj) = store.live(kind, id) {
                    let (item, cut) = render_new(store, obj, q, resume.as_deref(), budget);
                    out.push(item);
                    if let Some(last) = cut {
                        return (out, Some((idx as u64, Some(last))));
                    }
                }
            }
            PlanItem::Changed { id, props, members } => {
                if let Some(obj) = store.live(kind, id) {
                    let mut m = if minimal {
                        let mut m = Map::new();
                        m.insert("id".into(), json!(obj.id));
                        for p in props {
                            m.insert(p.clone(), obj.props.get(p).cloned().unwrap_or(Value::Null));
                        }
                        m
                    } else {
                        let mut m = render::render(obj, q.sel.as_deref(), Unset::Omit);
                        // A cleared extension property is reported as null, or a client
                        // following the round could not tell it lost its value.
                        for p in props {
                            if schema::is_extension_property(p)
                                && q.tracks_property(kind, p)
                                && obj.props.get(p).is_some_and(Value::is_null)
                            {
                                m.insert(p.clone(), Value::Null);
                            }
                        }
                        m
                    };
                    let start = match &resume {
                        Some(a) => members.partition_point(|(mid, _)| mid <= a),
                        None => 0,
                    };
                    let rest = &members[start..];
                    let take = rest.len().min(budget.members);
                    if take > 0 {
                        m.insert(
                            "members@delta".into(),
                            Value::Array(
                                rest[..take]
                                    .iter()
                                    .map(|(mid, added)| member_ref(store, mid, !added))
                                    .collect(),
                            ),
                        );
                    }
                    out.push(Value::Object(m));
                    if take < rest.len() {
                        return (out, Some((idx as u64, Some(rest[take - 1].0.clone()))));
                    }
                }
            }
        }
        idx += 1;
    }
    (out, None)
}

fn sync_state_not_found() -> GraphError {
    GraphError::new(
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

fn badly_formed() -> GraphError {
    GraphError::bad_request("Badly formed token.")
}

/// Parse the options of an initial delta request.
fn initial_query(kind: Kind, q: &Query, version: ApiVersion) -> GraphResult<DeltaQuery> {
    if q.has("$orderby") || q.has("$search") || q.has("$count") {
        return Err(GraphError::unsupported_query("Unsupported Query."));
    }
    let sel = match q.get("$select") {
        Some(s) => Some(odata::parse_select(kind, s, version)?),
        None => None,
    };
    if let Some(sel) = &sel {
        schema::check_collection_select(kind, sel)?;
    }
    let ids = match q.get("$filter") {
        Some(f) => {
            let expr = odata::parse_filter(kind, f)?;
            let ids = odata::id_list(&expr).ok_or_else(|| {
                GraphError::unsupported_query(
                    "Unsupported query: only filters of the form id eq '<id>' joined with 'or' are supported for delta.",
                )
            })?;
            if ids.len() > MAX_FILTER_IDS {
                return Err(GraphError::bad_request(format!(
                    "Too many ids in the filter: {} given, at most {MAX_FILTER_IDS} are allowed.",
                    ids.len()
                )));
            }
            Some(ids)
        }
        None => None,
    };
    let exp = match q.get("$expand") {
        None => false,
        Some(e) if kind == Kind::Group && e.trim().eq_ignore_ascii_case("members") => true,
        Some(_) => return Err(GraphError::unsupported_query("Unsupported Query.")),
    };
    let top = match q.get("$top") {
        Some(t) => Some(odata::parse_top(t)?),
        None => None,
    };
    Ok(DeltaQuery { sel, ids, exp, top })
}

/// GET /users/delta, GET /groups/delta (all spellings).
pub fn delta(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    q: &Query,
) -> GraphResult<GraphResponse> {
    for plain in ["deltatoken", "skiptoken"] {
        if q.pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(plain)) {
            return Err(GraphError::bad_request(format!(
                "Unrecognized query argument specified: '{plain}'."
            )));
        }
    }
    let now_ms = unix_ms(ctx.now);
    let epoch = state.delta_control().epoch;
    let skip = q.get("$skiptoken").filter(|t| !t.is_empty());
    let delta = q.get("$deltatoken").filter(|t| !t.is_empty());

    let round = match (skip, delta) {
        (None, None) => TokenState {
            ph: "skip".into(),
            k: kind_name(kind).into(),
            q: initial_query(kind, q, ctx.version)?,
            e: epoch,
            t: now_ms,
            s: None,
            h: None,
            i: 0,
            m: None,
            p: 0,
        },
        (None, Some(t)) if t.eq_ignore_ascii_case("latest") => {
            let dq = initial_query(kind, q, ctx.version)?;
            let head = state.store().head();
            let link = TokenState {
                ph: "delta".into(),
                k: kind_name(kind).into(),
                q: dq,
                e: epoch,
                t: now_ms,
                s: Some(head),
                h: None,
                i: 0,
                m: None,
                p: 0,
            };
            return Ok(page_response(
                ctx,
                kind,
                &link,
                Vec::new(),
                None,
                Some(&link),
                false,
            ));
        }
        (Some(t), _) | (None, Some(t)) => {
            let phase = if skip.is_some() { "skip" } else { "delta" };
            let tok: TokenState = statetoken::open(t)
                .and_then(|v| serde_json::from_value(v).ok())
                .filter(|s: &TokenState| s.ph == phase)
                .ok_or_else(badly_formed)?;
            check_token(state, ctx, kind, &tok, now_ms)?;
            // A link whose query names properties this version lacks (a beta link sent to
            // v1.0) is refused as that query would be.
            if let (true, Some(sel)) = (tok.k == kind_name(kind), &tok.q.sel) {
                odata::parse_select(kind, &sel.join(","), ctx.version)?;
            }
            if tok.k != kind_name(kind) {
                // Observed on the real service: another resource's link is accepted, empty.
                return Ok(page_response(
                    ctx,
                    kind,
                    &tok,
                    Vec::new(),
                    None,
                    Some(&tok),
                    false,
                ));
            }
            if phase == "delta" {
                TokenState {
                    ph: "skip".into(),
                    t: now_ms,
                    h: None,
                    i: 0,
                    m: None,
                    p: 0,
                    ..tok
                }
            } else {
                tok
            }
        }
    };
    render_round(state, ctx, kind, round, now_ms)
}

fn check_token(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    tok: &TokenState,
    now_ms: i64,
) -> GraphResult<()> {
    let mut ctl = state.delta_control();
    if tok.e != ctl.epoch || ctl.force_reset > 0 {
        ctl.force_reset = ctl.force_reset.saturating_sub(1);
        let location = tok.q.initial_url(&ctx.graph_root(), kind);
        return Err(GraphError::new(
            410,
            "resyncRequired",
            "The delta token is no longer valid, and the app must reset the sync state.",
        )
        .with_header("Location", location));
    }
    if now_ms - tok.t > TOKEN_LIFETIME_MS || tok.t <= ctl.invalid_before_ms {
        return Err(sync_state_not_found());
    }
    Ok(())
}

fn render_round(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    mut round: TokenState,
    now_ms: i64,
) -> GraphResult<GraphResponse> {
    let settings = state.settings();
    let budget = Budget {
        objects: round.q.top.unwrap_or(settings.delta_page_size).max(1),
        members: settings.member_page_size.max(1),
    };
    let incremental = round.s.is_some();
    let minimal = incremental && ctx.prefers_minimal();
    let store = state.store();
    let h = *round.h.get_or_insert(store.head());
    let cursor: Cursor = (round.i, round.m.clone());

    let (items, next) = if settings.empty_delta_page && round.p == 1 {
        // The injected empty page: nothing, same cursor.
        (Vec::new(), Some(cursor))
    } else {
        match round.s {
            None => full_page(&store, kind, &round.q, cursor, &budget),
            Some(s) => {
                let mut p = plan(state, &store, kind, &round.q, s, h);
                if settings.delta_replay {
                    // Graph gives no order and replays entities within a round: every
                    // object comes again after all the others (a split group's slices too).
                    p = std::sync::Arc::new(p.iter().chain(p.iter()).cloned().collect());
                }
                incremental_page(&store, kind, &round.q, &p, cursor, &budget, minimal)
            }
        }
    };
    drop(store);
    let next = match next {
        Some(c) => Some(c),
        // Keep going so that page 1 is the empty one.
        None if settings.empty_delta_page && round.p == 0 => Some((u64::MAX, None)),
        None => None,
    };
    round.t = now_ms;
    let resp = match next {
        Some((i, m)) => {
            let next_tok = TokenState {
                i,
                m,
                p: round.p + 1,
                ..round.clone()
            };
            page_response(ctx, kind, &round, items, Some(&next_tok), None, minimal)
        }
        None => {
            let link = TokenState {
                ph: "delta".into(),
                s: Some(h),
                h: None,
                i: 0,
                m: None,
                p: 0,
                ..round.clone()
            };
            page_response(ctx, kind, &round, items, None, Some(&link), minimal)
        }
    };
    Ok(resp)
}

fn page_response(
    ctx: &RequestCtx,
    kind: Kind,
    round: &TokenState,
    items: Vec<Value>,
    next: Option<&TokenState>,
    delta_link: Option<&TokenState>,
    minimal: bool,
) -> GraphResponse {
    let root = ctx.graph_root();
    let set = kind.entity_set();
    let select = if round.s.is_none() && round.p == 0 {
        round.q.sel.as_deref()
    } else {
        None
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(render::context(&root, set, select, "")),
    );
    let token_value =
        |t: &TokenState| statetoken::seal(&serde_json::to_value(t).unwrap_or(Value::Null));
    if let Some(n) = next {
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("{root}/{set}/delta?$skiptoken={}", token_value(n))),
        );
    }
    if let Some(d) = delta_link {
        body.insert(
            "@odata.deltaLink".into(),
            json!(format!("{root}/{set}/delta?$deltatoken={}", token_value(d))),
        );
    }
    body.insert("value".into(), Value::Array(items));
    let resp = GraphResponse::ok(Value::Object(body));
    if minimal {
        resp.with_header("Preference-Applied", "return=minimal")
    } else {
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Life;

    fn store() -> Store {
        let mut s = Store::new("t".into(), "d".into(), Vec::new());
        for u in ["u1", "u2", "u3"] {
            s.insert(Kind::User, u, Map::new(), Life::Live, false)
                .unwrap();
        }
        let mut props = Map::new();
        props.insert("displayName".into(), json!("G"));
        s.insert(Kind::Group, "g", props, Life::Live, false)
            .unwrap();
        s.add_member("g", "u1", false).unwrap();
        s
    }

    #[test]
    fn plan_folds_member_changes() {
        let mut s = store();
        let base = s.head();
        s.add_member("g", "u2", true).unwrap();
        s.remove_member("g", "u1").unwrap();
        s.add_member("g", "u3", true).unwrap();
        s.remove_member("g", "u3").unwrap();
        let p = build_plan(&s, Kind::Group, &DeltaQuery::default(), base, s.head());
        assert_eq!(
            p,
            vec![PlanItem::Changed {
                id: "g".into(),
                props: vec![],
                members: vec![("u1".into(), false), ("u2".into(), true)],
            }]
        );
    }

    #[test]
    fn plan_untracked_changes_do_not_surface() {
        let mut s = store();
        let base = s.head();
        let mut c = Map::new();
        c.insert("description".into(), json!("x"));
        s.update("g", c).unwrap();
        s.add_member("g", "u2", true).unwrap();
        let q = DeltaQuery {
            sel: Some(vec!["displayName".into()]),
            ..Default::default()
        };
        assert!(build_plan(&s, Kind::Group, &q, base, s.head()).is_empty());
    }

    #[test]
    fn plan_removals_and_creations() {
        let mut s = store();
        let base = s.head();
        s.soft_delete("u1", Value::Null).unwrap();
        s.hard_delete("u2").unwrap();
        s.insert(Kind::User, "u4", Map::new(), Life::Live, true)
            .unwrap();
        s.insert(Kind::User, "u5", Map::new(), Life::Live, true)
            .unwrap();
        s.hard_delete("u5").unwrap();
        let p = build_plan(&s, Kind::User, &DeltaQuery::default(), base, s.head());
        assert_eq!(
            p,
            vec![
                PlanItem::Removed {
                    id: "u1".into(),
                    reason: "changed"
                },
                PlanItem::Removed {
                    id: "u2".into(),
                    reason: "deleted"
                },
                PlanItem::New("u4".into()),
            ]
        );
    }
}
