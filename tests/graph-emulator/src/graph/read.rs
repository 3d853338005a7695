//! GET handlers: user/group collections, single objects, members, memberOf, `$count`.

use std::collections::{BTreeSet, VecDeque};

use serde_json::{json, Map, Value};

use crate::errors::{GraphError, GraphResult};
use crate::odata::{self, Expr, Query};
use crate::render::{self, Unset};
use crate::response::{GraphResponse, RequestCtx};
use crate::schema::ApiVersion;
use crate::state::AppState;
use crate::statetoken;
use crate::store::{Kind, Obj, Store};
use crate::urlenc;

/// The application permission a read of `kind` needs: for devices (list, get, delta, a
/// device's relationships) one of those Microsoft documents for "List devices" and "device:
/// delta", 403 `Authorization_RequestDenied` without it. Users and groups are read with any
/// token (their read permissions are not modelled).
pub fn may_read(ctx: &RequestCtx, kind: Kind) -> GraphResult<()> {
    let needed: &[&str] = match kind {
        Kind::Device => &[
            "Device.Read.All",
            "Device.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
        Kind::User | Kind::Group => return Ok(()),
    };
    if ctx.has_role(needed) {
        Ok(())
    } else {
        Err(GraphError::forbidden())
    }
}

/// Options common to collection reads.
struct ListOptions {
    select: Option<Vec<String>>,
    filter: Option<Expr>,
    top: usize,
    count: bool,
}

fn eventual(ctx: &RequestCtx) -> bool {
    ctx.header("ConsistencyLevel")
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
}

fn list_options(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Option<Kind>,
    q: &Query,
) -> GraphResult<ListOptions> {
    if q.has("$search") {
        return Err(if eventual(ctx) {
            GraphError::unsupported_query("Unsupported Query.")
        } else {
            GraphError::unsupported_query("Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'")
        });
    }
    if q.has("$skip") {
        return Err(GraphError::bad_request(
            "'$skip' is not supported by the service.",
        ));
    }
    if q.has("$orderby") {
        return Err(GraphError::unsupported_query("Unsupported Query."));
    }
    if q.has("$expand") {
        return Err(GraphError::unsupported_query(
            "$expand is not supported by the emulator.",
        ));
    }
    let select = match q.get("$select") {
        Some(s) => Some(parse_select_any(kind, s, ctx.version)?),
        None => None,
    };
    let filter = match (q.get("$filter"), kind) {
        (Some(f), Some(kind)) => Some(odata::parse_filter(kind, f)?),
        (Some(_), None) => return Err(GraphError::unsupported_query("Unsupported Query.")),
        (None, _) => None,
    };
    let top = match q.get("$top") {
        Some(t) => odata::parse_top(t)?,
        None => state.settings().page_size.clamp(1, 999),
    };
    // `$count=true` without the advanced-query header is silently ignored.
    let count = q
        .get("$count")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        && eventual(ctx);
    Ok(ListOptions {
        select,
        filter,
        top,
        count,
    })
}

/// `$select` on a directoryObject collection may name user, group or device properties.
fn parse_select_any(
    kind: Option<Kind>,
    raw: &str,
    version: ApiVersion,
) -> GraphResult<Vec<String>> {
    match kind {
        Some(kind) => odata::parse_select(kind, raw, version),
        None => odata::parse_select(Kind::User, raw, version).or_else(|e| {
            odata::parse_select(Kind::Group, raw, version)
                .or_else(|_| odata::parse_select(Kind::Device, raw, version))
                .map_err(|_| {
                    GraphError::bad_request(
                        e.message
                            .replace("microsoft.graph.user", "microsoft.graph.directoryObject"),
                    )
                })
        }),
    }
}

/// The original query minus `$skiptoken`, for nextLinks.
fn carry_query(q: &Query) -> String {
    q.pairs
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"))
        .map(|(k, v)| format!("{k}={}", urlenc::encode_query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn next_link(ctx: &RequestCtx, path: &str, q: &Query, token: &Value) -> String {
    let carried = carry_query(q);
    let sep = if carried.is_empty() { "" } else { "&" };
    format!(
        "{}/{path}?{carried}{sep}$skiptoken={}",
        ctx.graph_root(),
        statetoken::seal(token)
    )
}

fn skip_cursor(q: &Query, field: &str) -> GraphResult<Option<Value>> {
    match q.get("$skiptoken") {
        None => Ok(None),
        Some(t) => statetoken::open(t)
            .and_then(|v| v.get(field).cloned())
            .map(Some)
            .ok_or_else(|| GraphError::bad_request("Badly formed token.")),
    }
}

fn collection(
    context: String,
    items: Vec<Value>,
    next: Option<String>,
    count: Option<usize>,
) -> GraphResponse {
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context));
    if let Some(c) = count {
        body.insert("@odata.count".into(), json!(c));
    }
    if let Some(n) = next {
        body.insert("@odata.nextLink".into(), json!(n));
    }
    body.insert("value".into(), Value::Array(items));
    GraphResponse::ok(Value::Object(body))
}

/// GET /users, GET /groups
pub fn list(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    q: &Query,
) -> GraphResult<GraphResponse> {
    let opts = list_options(state, ctx, Some(kind), q)?;
    if let Some(sel) = &opts.select {
        crate::schema::check_collection_select(kind, sel)?;
    }
    let from = skip_cursor(q, "o")?.and_then(|v| v.as_u64()).unwrap_or(0);
    let store = state.store();
    let matches =
        |o: &&Obj| o.is_live() && opts.filter.as_ref().is_none_or(|f| odata::matches(f, o));

    // An id filter is answered by lookup rather than a scan.
    let by_id: Option<Vec<&Obj>> = opts.filter.as_ref().and_then(odata::id_list).map(|ids| {
        let mut objs: Vec<&Obj> = ids
            .iter()
            .filter_map(|id| store.get(id))
            .filter(|o| o.kind == kind)
            .collect();
        objs.sort_by_key(|o| o.order);
        objs.dedup_by_key(|o| o.order);
        objs
    });
    let mut page: Vec<&Obj> = Vec::with_capacity(opts.top + 1);
    match &by_id {
        Some(objs) => page.extend(
            objs.iter()
                .copied()
                .filter(|o| o.order >= from)
                .filter(matches)
                .take(opts.top + 1),
        ),
        None => page.extend(
            store
                .iter_from(kind, from)
                .filter(matches)
                .take(opts.top + 1),
        ),
    }
    let next = if page.len() > opts.top {
        let resume = page[opts.top].order;
        page.truncate(opts.top);
        Some(next_link(ctx, kind.entity_set(), q, &json!({"o": resume})))
    } else {
        None
    };
    let count = (opts.count && from == 0).then(|| match &by_id {
        Some(objs) => objs.iter().copied().filter(matches).count(),
        None => store.iter(kind).filter(matches).count(),
    });
    let items = page
        .iter()
        .map(|o| Value::Object(render::render(o, opts.select.as_deref(), Unset::Null)))
        .collect();
    let context = render::context(
        &ctx.graph_root(),
        kind.entity_set(),
        opts.select.as_deref(),
        "",
    );
    Ok(collection(context, items, next, count))
}

/// Resolve `/users/{id-or-upn}` or `/groups/{id}` to a live object.
pub fn find<'a>(store: &'a Store, kind: Kind, key: &str) -> GraphResult<&'a Obj> {
    if let Some(o) = store.live(kind, key) {
        return Ok(o);
    }
    if kind == Kind::User && key.contains('@') {
        if let Some(o) = store
            .lookup("userPrincipalName", key)
            .filter(|o| o.is_live() && o.kind == Kind::User)
        {
            return Ok(o);
        }
    }
    Err(GraphError::not_found(key))
}

/// GET /users/{id}, GET /groups/{id}
pub fn get(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    id: &str,
    q: &Query,
) -> GraphResult<GraphResponse> {
    let select = match q.get("$select") {
        Some(s) => Some(odata::parse_select(kind, s, ctx.version)?),
        None => None,
    };
    let expand_members = match q.get("$expand") {
        None => false,
        Some(e) if kind == Kind::Group && e.trim().eq_ignore_ascii_case("members") => true,
        Some(e) => {
            return Err(GraphError::bad_request(format!(
                "Could not find a property named '{e}' on type 'microsoft.graph.{}'.",
                kind.type_name()
            )))
        }
    };
    let store = state.store();
    let obj = find(&store, kind, id)?;
    let mut m = render::render(obj, select.as_deref(), Unset::Null);
    if expand_members {
        // Graph expands at most 20 related objects.
        let members: Vec<Value> = obj
            .members
            .iter()
            .filter_map(|mid| store.get(mid))
            .filter(|o| o.is_live())
            .take(20)
            .map(|o| render::render_directory_object(o, None))
            .collect();
        m.insert("members".into(), Value::Array(members));
    }
    m.insert(
        "@odata.context".into(),
        json!(render::context(
            &ctx.graph_root(),
            kind.entity_set(),
            select.as_deref(),
            "/$entity"
        )),
    );
    Ok(GraphResponse::ok(Value::Object(m)))
}

/// Which related objects a relationship read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Members,
    TransitiveMembers,
    MemberOf,
    TransitiveMemberOf,
    Owners,
}

impl Relation {
    pub fn parse(segment: &str) -> Option<Self> {
        match segment.to_ascii_lowercase().as_str() {
            "members" => Some(Relation::Members),
            "transitivemembers" => Some(Relation::TransitiveMembers),
            "memberof" => Some(Relation::MemberOf),
            "transitivememberof" => Some(Relation::TransitiveMemberOf),
            "owners" => Some(Relation::Owners),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Relation::Members => "members",
            Relation::TransitiveMembers => "transitiveMembers",
            Relation::MemberOf => "memberOf",
            Relation::TransitiveMemberOf => "transitiveMemberOf",
            Relation::Owners => "owners",
        }
    }
}

/// Related ids, sorted (the paging order).
fn related(store: &Store, obj: &Obj, rel: Relation) -> BTreeSet<String> {
    let step = |id: &str| -> Vec<String> {
        match rel {
            Relation::Members | Relation::TransitiveMembers => store
                .get(id)
                .map(|o| o.members.iter().cloned().collect())
                .unwrap_or_default(),
            Relation::MemberOf | Relation::TransitiveMemberOf => {
                store.groups_of(id).cloned().collect()
            }
            Relation::Owners => store
                .get(id)
                .map(|o| o.owners.iter().cloned().collect())
                .unwrap_or_default(),
        }
    };
    let transitive = matches!(
        rel,
        Relation::TransitiveMembers | Relation::TransitiveMemberOf
    );
    let mut out = BTreeSet::new();
    let mut queue: VecDeque<String> = step(&obj.id).into();
    while let Some(id) = queue.pop_front() {
        if out.insert(id.clone()) && transitive && store.kind_of(&id) == Some(Kind::Group) {
            queue.extend(step(&id));
        }
    }
    out.remove(&obj.id);
    out
}

/// GET /groups/{id}/members (and transitiveMembers, memberOf; optional type cast).
#[allow(clippy::too_many_arguments)]
pub fn relationship(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    id: &str,
    rel: Relation,
    cast: Option<Kind>,
    q: &Query,
) -> GraphResult<GraphResponse> {
    if q.has("$filter") && !eventual(ctx) {
        return Err(GraphError::unsupported_query("Unsupported Query."));
    }
    let opts = list_options(state, ctx, cast, q)?;
    let after = skip_cursor(q, "m")?.and_then(|v| v.as_str().map(str::to_string));
    let store = state.store();
    let obj = find(&store, kind, id)?;
    let ids = related(&store, obj, rel);
    let range = match &after {
        Some(a) => {
            ids.range::<String, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
        }
        None => ids.range::<String, _>(..),
    };
    let visible = |o: &&Obj| {
        o.is_live()
            && cast.is_none_or(|c| o.kind == c)
            && opts.filter.as_ref().is_none_or(|f| odata::matches(f, o))
    };
    let mut page: Vec<&Obj> = range
        .filter_map(|m| store.get(m))
        .filter(visible)
        .take(opts.top + 1)
        .collect();
    let path = format!(
        "{}/{}/{}{}",
        kind.entity_set(),
        obj.id,
        rel.name(),
        cast.map(|c| format!("/microsoft.graph.{}", c.type_name()))
            .unwrap_or_default()
    );
    let next = if page.len() > opts.top {
        page.truncate(opts.top);
        let last = page.last().map(|o| o.id.clone()).unwrap_or_default();
        Some(next_link(ctx, &path, q, &json!({"m": last})))
    } else {
        None
    };
    let count = (opts.count && after.is_none()).then(|| {
        ids.iter()
            .filter_map(|m| store.get(m))
            .filter(visible)
            .count()
    });
    let items = page
        .iter()
        .map(|o| render::render_directory_object(o, opts.select.as_deref()))
        .collect();
    let set = match cast {
        Some(c) => c.entity_set(),
        None => "directoryObjects",
    };
    let context = render::context(&ctx.graph_root(), set, opts.select.as_deref(), "");
    Ok(collection(context, items, next, count))
}

/// GET /users/$count, /groups/$count, /groups/{id}/members/$count: text/plain, needs the
/// advanced-query header.
pub fn count(
    state: &AppState,
    ctx: &RequestCtx,
    target: CountTarget<'_>,
) -> GraphResult<GraphResponse> {
    if !eventual(ctx) {
        return Err(GraphError::bad_request(
            "$count is not currently supported.",
        ));
    }
    let store = state.store();
    let n = match target {
        CountTarget::Collection(kind) => store.iter(kind).filter(|o| o.is_live()).count(),
        CountTarget::Related(kind, id, rel) => {
            let obj = find(&store, kind, id)?;
            related(&store, obj, rel)
                .iter()
                .filter_map(|m| store.get(m))
                .filter(|o| o.is_live())
                .count()
        }
    };
    Ok(GraphResponse::text(200, n.to_string()))
}

pub enum CountTarget<'a> {
    Collection(Kind),
    Related(Kind, &'a str, Relation),
}

/// GET /directory/deletedItems/microsoft.graph.group (or .user)
pub fn deleted_items(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    q: &Query,
) -> GraphResult<GraphResponse> {
    let select = match q.get("$select") {
        Some(s) => Some(odata::parse_select(kind, s, ctx.version)?),
        None => None,
    };
    let store = state.store();
    let items = store
        .iter(kind)
        .filter(|o| !o.is_live())
        .map(|o| Value::Object(render::render(o, select.as_deref(), Unset::Null)))
        .collect();
    let context = render::context(&ctx.graph_root(), kind.entity_set(), select.as_deref(), "");
    Ok(collection(context, items, None, None))
}

/// GET /directory/deletedItems/{id}, GET /directoryObjects/{id}
pub fn directory_object(
    state: &AppState,
    ctx: &RequestCtx,
    id: &str,
    deleted: bool,
) -> GraphResult<GraphResponse> {
    let store = state.store();
    let obj = store
        .get(id)
        .filter(|o| o.is_live() != deleted)
        .ok_or_else(|| GraphError::not_found(id))?;
    let Value::Object(mut m) = render::render_directory_object(obj, None) else {
        return Err(GraphError::not_found(id));
    };
    m.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#directoryObjects/$entity",
            ctx.graph_root()
        )),
    );
    Ok(GraphResponse::ok(Value::Object(m)))
}

/// POST /directoryObjects/getByIds {"ids": [...], "types": ["user"|"group"]}
pub fn get_by_ids(state: &AppState, ctx: &RequestCtx, body: &Value) -> GraphResult<GraphResponse> {
    let ids = body.get("ids").and_then(Value::as_array).ok_or_else(|| {
        GraphError::bad_request("A value is required for property 'ids' of resource 'getByIds'.")
    })?;
    if ids.len() > 1000 {
        return Err(GraphError::bad_request(
            "The number of ids exceeds the limit of 1000.",
        ));
    }
    let types: Option<Vec<Kind>> = body.get("types").and_then(Value::as_array).map(|t| {
        t.iter()
            .filter_map(Value::as_str)
            .filter_map(|s| {
                match s
                    .trim_start_matches("microsoft.graph.")
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "user" => Some(Kind::User),
                    "group" => Some(Kind::Group),
                    "device" => Some(Kind::Device),
                    _ => None,
                }
            })
            .collect()
    });
    let store = state.store();
    let items = ids
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|id| store.get(id))
        .filter(|o| o.is_live() && types.as_ref().is_none_or(|t| t.contains(&o.kind)))
        .map(|o| render::render_directory_object(o, None))
        .collect();
    let context = format!("{}/$metadata#directoryObjects", ctx.graph_root());
    Ok(collection(context, items, None, None))
}
