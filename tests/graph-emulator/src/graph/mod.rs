//! Routing of `/v1.0/...` and `/beta/...` requests (also used for `$batch` items) to the
//! handlers; the version is in the request context.

pub mod read;
pub mod write;

use crate::delta;
use crate::errors::{GraphError, GraphResult};
use crate::odata::Query;
use crate::response::{GraphResponse, RequestCtx};
use crate::state::AppState;
use crate::store::Kind;
use crate::urlenc;
use read::{CountTarget, Relation};

/// The four spellings of the delta function segment.
pub fn is_delta(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"
    )
}

fn entity_set(segment: &str) -> Option<Kind> {
    match segment.to_ascii_lowercase().as_str() {
        "users" => Some(Kind::User),
        "groups" => Some(Kind::Group),
        "devices" => Some(Kind::Device),
        _ => None,
    }
}

/// `microsoft.graph.user` → User (OData type cast segments).
fn cast(segment: &str) -> Option<Kind> {
    match segment.to_ascii_lowercase().as_str() {
        "microsoft.graph.user" => Some(Kind::User),
        "microsoft.graph.group" => Some(Kind::Group),
        "microsoft.graph.device" => Some(Kind::Device),
        _ => None,
    }
}

/// Serve one Graph request. `path` is below the version root (e.g.
/// `/groups/x/members/$ref`), `query` is the raw query string.
pub fn dispatch(
    state: &AppState,
    ctx: &RequestCtx,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> GraphResponse {
    match route(state, ctx, method, path, query, body) {
        Ok(r) => r,
        Err(e) => e.into_response(ctx),
    }
}

fn route(
    state: &AppState,
    ctx: &RequestCtx,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> GraphResult<GraphResponse> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| urlenc::decode(s, false))
        .collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let low: Vec<&str> = lower.iter().map(String::as_str).collect();
    let q = Query::parse(query);
    let method = method.to_ascii_uppercase();
    let m = method.as_str();

    // Collections of users, groups and devices.
    if let Some(kind) = seg.first().and_then(|s| entity_set(s)) {
        if m == "GET" {
            read::may_read(ctx, kind)?;
        }
        return match (m, &seg[1..], &low[1..]) {
            ("GET", [], _) => read::list(state, ctx, kind, &q),
            ("POST", [], _) => write::create(state, ctx, kind, body),
            ("GET", [_], ["$count"]) => read::count(state, ctx, CountTarget::Collection(kind)),
            ("GET", [d], _) if is_delta(d) => delta::delta(state, ctx, kind, &q),
            ("GET", [id], _) => read::get(state, ctx, kind, id, &q),
            ("PATCH", [id], _) => write::update(state, ctx, kind, id, body),
            ("DELETE", [id], _) => write::delete(state, ctx, kind, id),
            ("GET", [id, rel], _) => {
                let rel = relation(kind, rel)?;
                read::relationship(state, ctx, kind, id, rel, None, &q)
            }
            ("GET", [id, rel, c], _) if cast(c).is_some() => {
                let rel = relation(kind, rel)?;
                read::relationship(state, ctx, kind, id, rel, cast(c), &q)
            }
            ("GET", [id, rel, _], [_, _, "$count"]) => {
                let rel = relation(kind, rel)?;
                read::count(state, ctx, CountTarget::Related(kind, id, rel))
            }
            ("POST", [id, _, _], [_, "members", "$ref"]) if kind == Kind::Group => {
                write::add_member_ref(state, id, body)
            }
            ("DELETE", [id, _, member, _], [_, "members", _, "$ref"]) if kind == Kind::Group => {
                write::remove_member_ref(state, id, member)
            }
            ("POST", [id, _, _], [_, "owners", "$ref"]) if kind == Kind::Group => {
                write::add_owner_ref(state, ctx, id, body)
            }
            ("DELETE", [id, _, owner, _], [_, "owners", _, "$ref"]) if kind == Kind::Group => {
                write::remove_owner_ref(state, ctx, id, owner)
            }
            (_, [_], _) | (_, [], _) => Err(GraphError::method_not_allowed()),
            _ => Err(GraphError::bad_segment(seg.last().copied().unwrap_or(""))),
        };
    }
    match (m, &seg[..], &low[..]) {
        ("GET", [_, _, c], ["directory", "deleteditems", _]) if cast(c).is_some() => {
            read::deleted_items(state, ctx, cast(c).unwrap_or(Kind::Group), &q)
        }
        ("GET", [_, _, id], ["directory", "deleteditems", _]) => {
            read::directory_object(state, ctx, id, true)
        }
        ("DELETE", [_, _, id], ["directory", "deleteditems", _]) => write::purge(state, id),
        (
            "POST",
            [_, _, id, _],
            ["directory", "deleteditems", _, "restore" | "microsoft.graph.restore"],
        ) => write::restore(state, ctx, id),
        ("POST", [_, _], ["directoryobjects", "getbyids" | "microsoft.graph.getbyids"]) => {
            let body = write::json_body(body)?;
            read::get_by_ids(state, ctx, &body)
        }
        ("GET", [_, id], ["directoryobjects", _]) => read::directory_object(state, ctx, id, false),
        _ => Err(GraphError::bad_segment(seg.first().copied().unwrap_or(""))),
    }
}

fn relation(kind: Kind, segment: &str) -> GraphResult<Relation> {
    match Relation::parse(segment) {
        Some(Relation::Members | Relation::TransitiveMembers | Relation::Owners)
            if kind != Kind::Group =>
        {
            Err(GraphError::bad_segment(segment))
        }
        Some(r) => Ok(r),
        None => Err(GraphError::bad_segment(segment)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_spellings() {
        for s in [
            "delta",
            "delta()",
            "microsoft.graph.delta",
            "Microsoft.Graph.Delta()",
        ] {
            assert!(is_delta(s), "{s}");
        }
        assert!(!is_delta("deltas"));
    }
}
