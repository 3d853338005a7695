//! Writes: create/update/delete users and groups, membership `$ref`s, deletedItems.

use serde_json::{json, Map, Value};

use crate::clock::format_graph;
use crate::errors::{GraphError, GraphResult};
use crate::render::{self, Unset};
use crate::response::{GraphResponse, RequestCtx};
use crate::schema::{self, ApiVersion};
use crate::state::AppState;
use crate::store::{Kind, Life, Store, StoreError};
use crate::tenant;

/// Set by the directory, never by clients.
const READ_ONLY_COMMON: &[&str] = &[
    "id",
    "createdDateTime",
    "deletedDateTime",
    "securityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesSecurityIdentifier",
    "onPremisesSamAccountName",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
];
const READ_ONLY_GROUP: &[&str] = &[
    "mail",
    "proxyAddresses",
    "onPremisesNetBiosName",
    "renewedDateTime",
    "expirationDateTime",
];
const READ_ONLY_USER: &[&str] = &[
    "onPremisesUserPrincipalName",
    "onPremisesDistinguishedName",
    "proxyAddresses",
];
/// Device properties the device resource marks read-only (besides the common ones).
const READ_ONLY_DEVICE: &[&str] = &[
    "approximateLastSignInDateTime",
    "complianceExpirationDateTime",
    "manufacturer",
    "mdmAppId",
    "model",
    "onPremisesLastSyncDateTime",
    "trustType",
];
/// How many `@odata.bind` references one create/update may carry.
const MAX_BINDS: usize = 20;

fn resource_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "User",
        Kind::Group => "Group",
        Kind::Device => "Device",
    }
}

fn invalid_value(kind: Kind, p: &str) -> GraphError {
    GraphError::bad_request(format!(
        "Invalid value specified for property '{p}' of resource '{}'.",
        resource_name(kind)
    ))
}

fn store_error(e: StoreError) -> GraphError {
    match e {
        StoreError::NotFound(id) | StoreError::NotMember(_, id) => GraphError::not_found(&id),
        StoreError::AlreadyMember(..) => GraphError::bad_request(
            "One or more added object references already exist for the following modified properties: 'members'.",
        ),
        StoreError::Duplicate(id) => GraphError::bad_request(format!(
            "Another object with the same value for property id already exists: {id}."
        )),
        StoreError::Invalid(m) => GraphError::bad_request(m),
    }
}

/// Parse a JSON request body.
pub fn json_body(body: &[u8]) -> GraphResult<Value> {
    serde_json::from_slice(body).map_err(|_| {
        GraphError::new(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    })
}

/// The id at the end of an `@odata.id` / `@odata.bind` URL.
fn reference_id(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let last = last
        .trim_start_matches("directoryObjects(")
        .trim_end_matches(')');
    let last = last.trim_matches('\'');
    (!last.is_empty()).then(|| last.to_ascii_lowercase())
}

/// Validated property changes plus references from `members@odata.bind` and
/// `owners@odata.bind`.
struct Payload {
    props: Map<String, Value>,
    member_binds: Vec<String>,
    owner_binds: Vec<String>,
}

fn payload(kind: Kind, body: &Value, version: ApiVersion) -> GraphResult<Payload> {
    let obj = body
        .as_object()
        .ok_or_else(|| GraphError::bad_request("The request body must be a JSON object."))?;
    let read_only = |p: &str| {
        READ_ONLY_COMMON.contains(&p)
            || match kind {
                Kind::Group => READ_ONLY_GROUP.contains(&p),
                Kind::User => READ_ONLY_USER.contains(&p),
                Kind::Device => READ_ONLY_DEVICE.contains(&p),
            }
    };
    let mut props = Map::new();
    let mut member_binds = Vec::new();
    let mut owner_binds = Vec::new();
    for (k, v) in obj {
        if let Some(nav) = k.strip_suffix("@odata.bind") {
            let urls = match v {
                Value::Array(a) => a.iter().map(|x| x.as_str()).collect::<Option<Vec<_>>>(),
                Value::String(s) => Some(vec![s.as_str()]),
                _ => None,
            }
            .ok_or_else(|| invalid_value(kind, k))?;
            if urls.len() > MAX_BINDS {
                return Err(GraphError::bad_request(format!(
                    "A maximum of {MAX_BINDS} references can be added in a single request."
                )));
            }
            match (kind, nav.to_ascii_lowercase().as_str()) {
                (Kind::Group, "members") => {
                    for u in urls {
                        member_binds.push(reference_id(u).ok_or_else(|| invalid_value(kind, k))?);
                    }
                }
                (Kind::Group, "owners") => {
                    for u in urls {
                        owner_binds.push(reference_id(u).ok_or_else(|| invalid_value(kind, k))?);
                    }
                }
                _ => {
                    return Err(GraphError::bad_request(format!(
                    "Property '{nav}' does not exist as a declared property or extension property."
                )))
                }
            }
            continue;
        }
        if k.starts_with('@') {
            continue;
        }
        if let Some(name) = schema::extension_property(k) {
            if !extension_value(v) {
                return Err(invalid_value(kind, k));
            }
            props.insert(name, v.clone());
            continue;
        }
        let Some(p) = schema::canonical_property(kind, k, version) else {
            return Err(GraphError::bad_request(format!(
                "Property '{k}' does not exist as a declared property or extension property."
            )));
        };
        if schema::is_navigation(kind, p) {
            return Err(GraphError::bad_request(format!(
                "Property '{p}' is a navigation property; use '{p}@odata.bind' or the $ref endpoint."
            )));
        }
        if read_only(p) {
            return Err(GraphError::bad_request(format!(
                "Property '{p}' is read-only and cannot be set."
            )));
        }
        if p == schema::WRITEBACK_CONFIGURATION {
            // Only the fields sent; they are merged onto the stored value on write.
            let fields = schema::writeback_fields(v).map_err(GraphError::bad_request)?;
            props.insert(p.to_string(), Value::Object(fields));
            continue;
        }
        check_type(kind, p, v)?;
        if p == "passwordProfile" {
            // Write-only: accepted, never returned.
            continue;
        }
        props.insert(p.to_string(), v.clone());
    }
    Ok(Payload {
        props,
        member_binds,
        owner_binds,
    })
}

fn check_type(kind: Kind, p: &str, v: &Value) -> GraphResult<()> {
    if v.is_null() && !schema::nullable(kind, p) {
        return Err(invalid_value(kind, p));
    }
    let ok = match p {
        "mailEnabled" | "securityEnabled" | "accountEnabled" | "isAssignableToRole" => {
            v.is_boolean() || v.is_null()
        }
        "groupTypes" | "businessPhones" | "otherMails" | "resourceBehaviorOptions" => {
            v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }
        "displayName" => v.is_string(),
        "mailNickname" => v.as_str().is_some_and(|s| valid_nickname(kind, s)),
        "passwordProfile" => v.is_object() || v.is_null(),
        // Only the 15 keys, each a string or null (onPremisesExtensionAttributes resource).
        "onPremisesExtensionAttributes" => v.as_object().is_some_and(|m| {
            m.iter().all(|(k, x)| {
                schema::extension_attribute_keys().any(|n| n == *k)
                    && (x.is_string() || x.is_null())
            })
        }),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid_value(kind, p))
    }
}

/// A directory extension holds one value of a simple type (String, Integer, Boolean,
/// DateTime as a string, Binary as base64) or a collection of them; `null` clears it.
fn extension_value(v: &Value) -> bool {
    let simple = |x: &Value| x.is_string() || x.is_number() || x.is_boolean();
    match v {
        Value::Null => true,
        Value::Array(items) => items.iter().all(simple),
        other => simple(other),
    }
}

/// ASCII, at most 64 characters, none of `@ ( ) \ [ ] " ; : . < > ,` or space.
fn valid_nickname(kind: Kind, s: &str) -> bool {
    s.len() <= 64
        && s.is_ascii()
        && !s
            .chars()
            .any(|c| "@()\\[]\";:<>, ".contains(c) || c.is_control())
        && (kind == Kind::User || !s.contains('.'))
}

fn require(kind: Kind, props: &Map<String, Value>, names: &[&str]) -> GraphResult<()> {
    for n in names {
        if props.get(*n).is_none_or(Value::is_null) {
            return Err(GraphError::bad_request(format!(
                "A value is required for property '{n}' of resource '{}'.",
                resource_name(kind)
            )));
        }
    }
    Ok(())
}

fn unified(props: &Map<String, Value>) -> bool {
    props
        .get("groupTypes")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|t| {
                t.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("Unified"))
            })
        })
}

/// Is this address some object's mail already? (Graph refuses a second M365 group with the
/// same address as a proxyAddresses conflict.)
fn proxy_taken(store: &Store, address: &str) -> bool {
    store.lookup("mail", address).is_some()
}

fn created_response(
    ctx: &RequestCtx,
    store: &Store,
    kind: Kind,
    id: &str,
) -> GraphResult<GraphResponse> {
    let obj = store.get(id).ok_or_else(|| GraphError::not_found(id))?;
    let mut m = render::render(obj, None, Unset::Null);
    m.insert(
        "@odata.context".into(),
        json!(render::context(
            &ctx.graph_root(),
            kind.entity_set(),
            None,
            "/$entity"
        )),
    );
    Ok(GraphResponse::json(201, Value::Object(m)))
}

/// POST /groups, POST /users
pub fn create(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    body: &[u8],
) -> GraphResult<GraphResponse> {
    may_write(ctx, kind)?;
    let body = json_body(body)?;
    let Payload {
        mut props,
        member_binds,
        owner_binds,
    } = payload(kind, &body, ctx.version)?;
    let now = json!(format_graph(ctx.now));
    let id = state.new_id();
    let mut store = state.store();
    match kind {
        Kind::Group => {
            require(
                kind,
                &props,
                &[
                    "displayName",
                    "mailEnabled",
                    "mailNickname",
                    "securityEnabled",
                ],
            )?;
            let nick = props
                .get("mailNickname")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mail_enabled = props.get("mailEnabled") == Some(&Value::Bool(true));
            if unified(&props) {
                let mail = format!("{nick}@{}", store.domain);
                if proxy_taken(&store, &mail) {
                    return Err(GraphError::bad_request(
                        "Another object with the same value for property proxyAddresses already exists.",
                    ));
                }
                props.insert("mail".into(), json!(mail));
                props.insert("proxyAddresses".into(), json!([format!("SMTP:{mail}")]));
                props.entry("visibility").or_insert(json!("Public"));
                props.insert("renewedDateTime".into(), now.clone());
            } else {
                if mail_enabled {
                    return Err(GraphError::bad_request(
                        "Cannot create a mail-enabled security groups and or distribution list.",
                    ));
                }
                props.insert("mail".into(), Value::Null);
                props.insert("proxyAddresses".into(), json!([]));
            }
            for m in &member_binds {
                if !may_be_member(&store, m) {
                    return Err(GraphError::not_found(m));
                }
            }
            for o in &owner_binds {
                may_own(&store, o)?;
            }
        }
        Kind::User => {
            require(
                kind,
                &props,
                &[
                    "accountEnabled",
                    "displayName",
                    "mailNickname",
                    "userPrincipalName",
                ],
            )?;
            if body.get("passwordProfile").is_none_or(Value::is_null) {
                return Err(GraphError::bad_request(
                    "A value is required for property 'passwordProfile' of resource 'User'.",
                ));
            }
            let upn = props
                .get("userPrincipalName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let domain_ok = upn.rsplit_once('@').is_some_and(|(local, d)| {
                !local.is_empty() && d.eq_ignore_ascii_case(&store.domain)
            });
            if !domain_ok {
                return Err(GraphError::bad_request(
                    "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
                ));
            }
            let taken = store.lookup("userPrincipalName", &upn).is_some();
            if taken {
                return Err(GraphError::bad_request(
                    "Another object with the same value for property userPrincipalName already exists.",
                ));
            }
            props.entry("userType").or_insert(json!("Member"));
            props.entry("mail").or_insert(Value::Null);
            props.entry("onPremisesSyncEnabled").or_insert(Value::Null);
        }
        Kind::Device => {
            // The "Create device" page's required properties; a device registered this way is
            // not joined to anything (Entra sets trustType when a device joins).
            require(
                kind,
                &props,
                &[
                    "accountEnabled",
                    "alternativeSecurityIds",
                    "deviceId",
                    "displayName",
                    "operatingSystem",
                    "operatingSystemVersion",
                ],
            )?;
            props.insert("registrationDateTime".into(), now.clone());
        }
    }
    if let Some(Value::Object(sent)) = props.get(schema::WRITEBACK_CONFIGURATION) {
        let full = schema::writeback_merged(None, sent);
        props.insert(schema::WRITEBACK_CONFIGURATION.into(), full);
    }
    tenant::normalise(kind, &id, &mut props, &now);
    if kind != Kind::Device {
        props.insert("createdDateTime".into(), now);
    }
    store
        .insert(kind, &id, props, Life::Live, true)
        .map_err(store_error)?;
    for m in member_binds {
        match store.add_member(&id, &m, true) {
            Ok(()) | Err(StoreError::AlreadyMember(..)) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    for o in owner_binds {
        match store.set_owner(&id, &o, true) {
            Ok(()) | Err(StoreError::AlreadyMember(..)) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    created_response(ctx, &store, kind, &id)
}

/// The application permission a write of `kind` needs, as Microsoft's "Create group", "Update
/// group" and "Delete group" (and the user equivalents) document: 403 without it.
fn may_write(ctx: &RequestCtx, kind: Kind) -> GraphResult<()> {
    let needed: &[&str] = match kind {
        Kind::Group => &["Group.ReadWrite.All", "Directory.ReadWrite.All"],
        Kind::User => &["User.ReadWrite.All", "Directory.ReadWrite.All"],
        Kind::Device => &["Device.ReadWrite.All", "Directory.ReadWrite.All"],
    };
    if ctx.has_role(needed) {
        Ok(())
    } else {
        Err(GraphError::forbidden())
    }
}

/// PATCH /groups/{id}, PATCH /users/{id}
pub fn update(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    id: &str,
    body: &[u8],
) -> GraphResult<GraphResponse> {
    may_write(ctx, kind)?;
    let body = json_body(body)?;
    let Payload {
        mut props,
        member_binds,
        owner_binds,
    } = payload(kind, &body, ctx.version)?;
    let mut store = state.store();
    let obj = store
        .live(kind, id)
        .ok_or_else(|| GraphError::not_found(id))?;
    let id = obj.id.clone();
    if kind == Kind::Group && !member_binds.is_empty() {
        for m in &member_binds {
            if !may_be_member(&store, m) {
                return Err(GraphError::not_found(m));
            }
            if store.get(&id).is_some_and(|g| g.members.contains(m)) {
                return Err(store_error(StoreError::AlreadyMember(
                    id.clone(),
                    m.clone(),
                )));
            }
        }
    }
    for o in &owner_binds {
        may_own(&store, o)?;
        if store.get(&id).is_some_and(|g| g.owners.contains(o)) {
            return Err(owner_exists());
        }
    }
    if props.get("displayName").is_some_and(Value::is_null) {
        return Err(invalid_value(kind, "displayName"));
    }
    // The keys sent are set, the others kept (the documented PATCH clears one with `null`).
    if let Some(Value::Object(sent)) = props.get("onPremisesExtensionAttributes") {
        let mut merged = match obj.props.get("onPremisesExtensionAttributes") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        merged.extend(sent.clone());
        let full = schema::extension_attributes(Some(&merged));
        props.insert("onPremisesExtensionAttributes".into(), full);
    }
    if let Some(Value::Object(sent)) = props.get(schema::WRITEBACK_CONFIGURATION) {
        let full = schema::writeback_merged(obj.props.get(schema::WRITEBACK_CONFIGURATION), sent);
        props.insert(schema::WRITEBACK_CONFIGURATION.into(), full);
    }
    if kind == Kind::User {
        if let Some(upn) = props.get("userPrincipalName").and_then(Value::as_str) {
            let taken = store
                .lookup("userPrincipalName", upn)
                .is_some_and(|o| o.id != id);
            if taken {
                return Err(GraphError::bad_request(
                    "Another object with the same value for property userPrincipalName already exists.",
                ));
            }
        }
    }
    store.update(&id, props).map_err(store_error)?;
    for m in member_binds {
        store.add_member(&id, &m, true).map_err(store_error)?;
    }
    for o in owner_binds {
        store.set_owner(&id, &o, true).map_err(store_error)?;
    }
    Ok(GraphResponse::no_content())
}

/// An owner must be a live user (service principals are not modelled; a group cannot own).
fn may_own(store: &crate::store::Store, id: &str) -> GraphResult<()> {
    match store.get(id).filter(|o| o.is_live()) {
        None => Err(GraphError::not_found(id)),
        Some(o) if o.kind != Kind::User => Err(GraphError::bad_request(
            "Unsupported referenced-object resource identifier for link property 'owners'.",
        )),
        Some(_) => Ok(()),
    }
}

fn owner_exists() -> GraphError {
    GraphError::bad_request(
        "One or more added object references already exist for the following modified properties: 'owners'.",
    )
}

/// A live user, group or device: what a group's `members@odata.bind` may name.
fn may_be_member(store: &crate::store::Store, id: &str) -> bool {
    [Kind::User, Kind::Group, Kind::Device]
        .iter()
        .any(|k| store.live(*k, id).is_some())
}

/// DELETE /groups/{id} (Microsoft 365: soft, security: permanent), DELETE /users/{id} (soft),
/// DELETE /devices/{id} (permanent: deletedItems holds no devices).
pub fn delete(
    state: &AppState,
    ctx: &RequestCtx,
    kind: Kind,
    id: &str,
) -> GraphResult<GraphResponse> {
    may_write(ctx, kind)?;
    let mut store = state.store();
    let obj = store
        .live(kind, id)
        .ok_or_else(|| GraphError::not_found(id))?;
    let id = obj.id.clone();
    if (kind == Kind::Group && !obj.is_unified()) || kind == Kind::Device {
        store.hard_delete(&id).map_err(store_error)?;
    } else {
        store
            .soft_delete(&id, json!(format_graph(ctx.now)))
            .map_err(store_error)?;
    }
    Ok(GraphResponse::no_content())
}

/// DELETE /directory/deletedItems/{id}: permanent.
pub fn purge(state: &AppState, id: &str) -> GraphResult<GraphResponse> {
    let mut store = state.store();
    if store.get(id).is_none_or(|o| o.is_live()) {
        return Err(GraphError::not_found(id));
    }
    store.hard_delete(id).map_err(store_error)?;
    Ok(GraphResponse::no_content())
}

/// POST /directory/deletedItems/{id}/restore
pub fn restore(state: &AppState, ctx: &RequestCtx, id: &str) -> GraphResult<GraphResponse> {
    let mut store = state.store();
    store.restore(id).map_err(store_error)?;
    let obj = store.get(id).ok_or_else(|| GraphError::not_found(id))?;
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

/// The id a `$ref` body names: `{"@odata.id": ".../directoryObjects/{id}"}`.
fn referenced_id(body: &[u8]) -> GraphResult<String> {
    json_body(body)?
        .get("@odata.id")
        .and_then(Value::as_str)
        .and_then(reference_id)
        .ok_or_else(|| GraphError::bad_request("Invalid object identifier ''."))
}

/// The stored id of the live group `group` (any case), or 404.
fn live_group_id(store: &crate::store::Store, group: &str) -> GraphResult<String> {
    store
        .live(Kind::Group, group)
        .map(|g| g.id.clone())
        .ok_or_else(|| GraphError::not_found(group))
}

/// POST /groups/{id}/members/$ref {"@odata.id": ".../directoryObjects/{id}"}
pub fn add_member_ref(state: &AppState, group: &str, body: &[u8]) -> GraphResult<GraphResponse> {
    let member = referenced_id(body)?;
    let mut store = state.store();
    let g = store
        .live(Kind::Group, group)
        .ok_or_else(|| GraphError::not_found(group))?;
    let gid = g.id.clone();
    let unified_target = g.is_unified();
    let m = store
        .get(&member)
        .filter(|o| o.is_live())
        .ok_or_else(|| GraphError::not_found(&member))?;
    if unified_target && m.kind == Kind::Group {
        return Err(GraphError::bad_request(
            "Groups cannot be added as members of a Microsoft 365 group.",
        ));
    }
    // Microsoft 365 groups hold users only; devices go into security groups.
    if unified_target && m.kind == Kind::Device {
        return Err(GraphError::bad_request(
            "Devices cannot be added as members of a Microsoft 365 group.",
        ));
    }
    store.add_member(&gid, &member, true).map_err(store_error)?;
    Ok(GraphResponse::no_content())
}

/// POST /groups/{id}/owners/$ref {"@odata.id": ".../directoryObjects/{id}"}
pub fn add_owner_ref(
    state: &AppState,
    ctx: &RequestCtx,
    group: &str,
    body: &[u8],
) -> GraphResult<GraphResponse> {
    may_write(ctx, Kind::Group)?;
    let owner = referenced_id(body)?;
    let mut store = state.store();
    let gid = live_group_id(&store, group)?;
    may_own(&store, &owner)?;
    match store.set_owner(&gid, &owner, true) {
        Ok(()) => Ok(GraphResponse::no_content()),
        Err(StoreError::AlreadyMember(..)) => Err(owner_exists()),
        Err(e) => Err(store_error(e)),
    }
}

/// DELETE /groups/{id}/owners/{ownerId}/$ref
pub fn remove_owner_ref(
    state: &AppState,
    ctx: &RequestCtx,
    group: &str,
    owner: &str,
) -> GraphResult<GraphResponse> {
    may_write(ctx, Kind::Group)?;
    let mut store = state.store();
    let gid = live_group_id(&store, group)?;
    store.set_owner(&gid, owner, false).map_err(store_error)?;
    Ok(GraphResponse::no_content())
}

/// DELETE /groups/{id}/members/{memberId}/$ref
pub fn remove_member_ref(
    state: &AppState,
    group: &str,
    member: &str,
) -> GraphResult<GraphResponse> {
    let mut store = state.store();
    let gid = live_group_id(&store, group)?;
    store.remove_member(&gid, member).map_err(store_error)?;
    Ok(GraphResponse::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_ids() {
        assert_eq!(
            reference_id("https://graph.microsoft.com/v1.0/directoryObjects/ABC").as_deref(),
            Some("abc")
        );
        assert_eq!(
            reference_id("http://x/v1.0/users/u1/").as_deref(),
            Some("u1")
        );
        assert_eq!(reference_id("directoryObjects('x')").as_deref(), Some("x"));
    }

    #[test]
    fn nicknames() {
        assert!(valid_nickname(Kind::Group, "sales-team_1"));
        assert!(!valid_nickname(Kind::Group, "sales team"));
        assert!(!valid_nickname(Kind::Group, "a@b"));
        assert!(!valid_nickname(Kind::Group, &"x".repeat(65)));
    }

    #[test]
    fn read_only_properties_are_rejected() {
        let e = payload(Kind::Group, &json!({"mail": "x@y"}), ApiVersion::V1)
            .err()
            .unwrap();
        assert_eq!(e.message, "Property 'mail' is read-only and cannot be set.");
        let e = payload(Kind::Group, &json!({"nope": 1}), ApiVersion::V1)
            .err()
            .unwrap();
        assert_eq!(e.code, "Request_BadRequest");
    }

    #[test]
    fn writeback_configuration_is_a_beta_property() {
        let body = json!({"writebackConfiguration": {"isEnabled": false}});
        let e = payload(Kind::Group, &body, ApiVersion::V1).err().unwrap();
        assert_eq!(
            e.message,
            "Property 'writebackConfiguration' does not exist as a declared property or extension property."
        );
        let p = payload(Kind::Group, &body, ApiVersion::Beta).ok().unwrap();
        assert_eq!(
            p.props["writebackConfiguration"],
            json!({"isEnabled": false})
        );
        let e = payload(
            Kind::Group,
            &json!({"writebackConfiguration": {"isEnabled": 1}}),
            ApiVersion::Beta,
        )
        .err()
        .unwrap();
        assert_eq!(
            e.message,
            "Invalid value specified for property 'isEnabled' of resource 'Group'."
        );
        assert!(payload(Kind::User, &body, ApiVersion::Beta).is_err());
    }
}
