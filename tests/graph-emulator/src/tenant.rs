//! The tenant file: parsing it into a [`Store`] (filling the properties Graph would have set)
//! and writing the current state back in the same format.

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::auth::cert::AppCertificate;
use crate::clock::format_graph;
use crate::store::{App, Kind, Life, Store, StoreError};

/// Used when the tenant file names no domain.
pub const DEFAULT_DOMAIN: &str = "contoso.onmicrosoft.com";

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant file: {0}")]
    Format(String),
    #[error("tenant file: app {client_id}: {message}")]
    Certificate { client_id: String, message: String },
    #[error("tenant file: {0}")]
    Store(#[from] StoreError),
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

/// Build a store from tenant-file JSON.
pub fn load(tenant: &Value, now: OffsetDateTime) -> Result<Store, TenantError> {
    let tenant_id = field(tenant, "tenantId")
        .ok_or_else(|| TenantError::Format("missing \"tenantId\"".into()))?
        .to_ascii_lowercase();
    let domain = field(tenant, "domain")
        .unwrap_or(DEFAULT_DOMAIN)
        .to_ascii_lowercase();
    let apps = load_apps(tenant)?;
    let mut store = Store::new(tenant_id, domain, apps);
    let created = json!(format_graph(now));

    let empty = Vec::new();
    let users = array(tenant, "users", &empty)?;
    let groups = array(tenant, "groups", &empty)?;
    let devices = array(tenant, "devices", &empty)?;
    for (kind, list) in [
        (Kind::User, users),
        (Kind::Device, devices),
        (Kind::Group, groups),
    ] {
        for entry in list {
            let mut props = entry.as_object().cloned().ok_or_else(|| {
                TenantError::Format(format!("a {} is not an object", kind.type_name()))
            })?;
            props.remove("members");
            props.remove("owners");
            let id = match props.remove("id") {
                Some(Value::String(id)) if !id.is_empty() => id,
                _ => {
                    return Err(TenantError::Format(format!(
                        "a {} has no \"id\"",
                        kind.type_name()
                    )))
                }
            };
            let life = if props.get("deletedDateTime").is_some_and(|v| !v.is_null()) {
                Life::SoftDeleted
            } else {
                Life::Live
            };
            if kind == Kind::Group {
                seed_writeback(&id, &mut props)?;
            }
            normalise(kind, &id, &mut props, &created);
            store.insert(kind, &id, props, life, false)?;
        }
    }
    for g in groups {
        let gid = field(g, "id").unwrap_or_default();
        for (rel, owners) in [("members", false), ("owners", true)] {
            let ids = match g.get(rel) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(m)) => m,
                Some(_) => {
                    return Err(TenantError::Format(format!(
                        "group {gid}: \"{rel}\" is not an array"
                    )))
                }
            };
            for m in ids {
                let mid = m.as_str().ok_or_else(|| {
                    TenantError::Format(format!(
                        "group {gid}: an entry of \"{rel}\" is not an id string"
                    ))
                })?;
                let added = match owners {
                    false => store.add_member(gid, mid, false),
                    true => store.set_owner(gid, mid, true),
                };
                match added {
                    Ok(()) | Err(StoreError::AlreadyMember(..)) => {}
                    Err(StoreError::NotFound(x)) => {
                        return Err(TenantError::Format(format!(
                        "group {gid}: {rel} entry {x} is not a user, group or device of this file"
                    )))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(store)
}

fn array<'a>(
    tenant: &'a Value,
    name: &str,
    empty: &'a Vec<Value>,
) -> Result<&'a Vec<Value>, TenantError> {
    match tenant.get(name) {
        None | Some(Value::Null) => Ok(empty),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(TenantError::Format(format!("\"{name}\" is not an array"))),
    }
}

fn load_apps(tenant: &Value) -> Result<Vec<App>, TenantError> {
    let empty = Vec::new();
    let mut apps = Vec::new();
    for a in array(tenant, "apps", &empty)? {
        let client_id = field(a, "clientId")
            .ok_or_else(|| TenantError::Format("an app has no \"clientId\"".into()))?
            .to_ascii_lowercase();
        let mut pems: Vec<&str> = field(a, "certificatePem").into_iter().collect();
        if let Some(list) = a.get("certificatePems").and_then(Value::as_array) {
            pems.extend(list.iter().filter_map(Value::as_str));
        }
        let certificates = pems
            .into_iter()
            .map(|pem| {
                AppCertificate::from_pem(pem).map_err(|message| TenantError::Certificate {
                    client_id: client_id.clone(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        apps.push(App {
            client_id,
            client_secret: field(a, "clientSecret").map(str::to_string),
            certificates,
            source: a.clone(),
        });
    }
    Ok(apps)
}

/// A seeded `writebackConfiguration` is checked as a PATCH of it would be and stored with both
/// fields.
fn seed_writeback(id: &str, props: &mut Map<String, Value>) -> Result<(), TenantError> {
    let name = crate::schema::WRITEBACK_CONFIGURATION;
    let Some(v) = props.get(name) else {
        return Ok(());
    };
    let fields = crate::schema::writeback_fields(v)
        .map_err(|m| TenantError::Format(format!("group {id}: {name}: {m}")))?;
    props.insert(name.into(), crate::schema::writeback_merged(None, &fields));
    Ok(())
}

/// Fill the read-only properties Graph always has, so output looks like Graph's.
pub fn normalise(kind: Kind, id: &str, props: &mut Map<String, Value>, created: &Value) {
    props.entry("deletedDateTime").or_insert(Value::Null);
    // A device has neither (its time of registration is `registrationDateTime`).
    if kind != Kind::Device {
        props
            .entry("createdDateTime")
            .or_insert_with(|| created.clone());
        if let Some(sid) = cloud_sid(id) {
            props.entry("securityIdentifier").or_insert(json!(sid));
        }
    }
    // Directory extension properties in their canonical spelling; one without a value is not
    // stored (Graph never returns it).
    let extensions: Vec<String> = props
        .keys()
        .filter(|k| crate::schema::is_extension_property(k))
        .cloned()
        .collect();
    for k in extensions {
        if let Some(v) = props.remove(&k) {
            if let (false, Some(name)) = (v.is_null(), crate::schema::extension_property(&k)) {
                props.insert(name, v);
            }
        }
    }
    // Every one of the 15 keys, as Graph returns them.
    if let Some(Value::Object(given)) = props.get("onPremisesExtensionAttributes") {
        let full = crate::schema::extension_attributes(Some(given));
        props.insert("onPremisesExtensionAttributes".into(), full);
    }
    // Non-nullable properties given as null get the schema's empty value.
    for (k, v) in props.iter_mut() {
        if v.is_null() && !crate::schema::nullable(kind, k) {
            *v = crate::schema::unset_value(kind, k);
        }
    }
    match kind {
        Kind::User => {
            props.entry("businessPhones").or_insert(json!([]));
        }
        Kind::Group => {
            props.entry("groupTypes").or_insert(json!([]));
            props.entry("proxyAddresses").or_insert(json!([]));
        }
        Kind::Device => {
            props.entry("alternativeSecurityIds").or_insert(json!([]));
            props.entry("physicalIds").or_insert(json!([]));
            props.entry("systemLabels").or_insert(json!([]));
        }
    }
}

/// The cloud SID Entra derives from an object id: `S-1-12-1-` and the GUID's 16 bytes (in
/// .NET `Guid.ToByteArray` order) as four little-endian u32s.
pub fn cloud_sid(id: &str) -> Option<String> {
    let guid = uuid::Uuid::parse_str(id).ok()?;
    let b = guid.to_bytes_le();
    let parts: Vec<String> = b
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]).to_string())
        .collect();
    Some(format!("S-1-12-1-{}", parts.join("-")))
}

/// The store's current state in tenant-file format (soft-deleted objects keep `deletedDateTime`).
pub fn dump(store: &Store) -> Value {
    let mut out = Map::new();
    out.insert("tenantId".into(), json!(store.tenant_id));
    out.insert("domain".into(), json!(store.domain));
    out.insert(
        "apps".into(),
        Value::Array(store.apps.iter().map(|a| a.source.clone()).collect()),
    );
    for kind in [Kind::User, Kind::Group, Kind::Device] {
        let list: Vec<Value> = store
            .iter(kind)
            .map(|o| {
                let mut m = o.props.clone();
                m.insert("id".into(), json!(o.id));
                if kind == Kind::Group {
                    m.insert(
                        "members".into(),
                        Value::Array(o.members.iter().map(|x| json!(x)).collect()),
                    );
                    if !o.owners.is_empty() {
                        m.insert(
                            "owners".into(),
                            Value::Array(o.owners.iter().map(|x| json!(x)).collect()),
                        );
                    }
                }
                Value::Object(m)
            })
            .collect();
        out.insert(kind.entity_set().into(), Value::Array(list));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_sid_matches_entra_derivation() {
        // Data1 0x12345678 → 305419896; Data2/Data3 0x9abc/0xdef0 → 0xdef09abc.
        let sid = cloud_sid("12345678-9abc-def0-0102-030405060708").unwrap();
        assert_eq!(sid, "S-1-12-1-305419896-3740310204-67305985-134678021");
    }

    #[test]
    fn unknown_member_is_an_error() {
        let t = json!({"tenantId":"T","groups":[{"id":"g","members":["nope"]}]});
        let err = load(&t, OffsetDateTime::UNIX_EPOCH).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn extension_properties_are_seeded_as_graph_holds_them() {
        let t = json!({"tenantId":"T",
            "users":[{"id":"u","displayName":"U",
                      "onPremisesExtensionAttributes": {"extensionAttribute3": "x"}}],
            "groups":[{"id":"g","displayName":"G",
                       "extension_0123456789ABCDEF0123456789abcdef_costCenter": "CC-1",
                       "extension_0123456789abcdef0123456789abcdef_unset": null}]});
        let store = load(&t, OffsetDateTime::UNIX_EPOCH).unwrap();
        let g = &store.get("g").unwrap().props;
        assert_eq!(
            g.get("extension_0123456789abcdef0123456789abcdef_costCenter"),
            Some(&json!("CC-1"))
        );
        assert!(!g.contains_key("extension_0123456789abcdef0123456789abcdef_unset"));
        let attrs = &store.get("u").unwrap().props["onPremisesExtensionAttributes"];
        let attrs = attrs.as_object().unwrap();
        assert_eq!(attrs.len(), 15);
        assert_eq!(attrs["extensionAttribute3"], "x");
        assert!(attrs["extensionAttribute15"].is_null());
    }

    #[test]
    fn writeback_configuration_is_seeded_checked() {
        let t = json!({"tenantId":"T","groups":[
            {"id":"g1","writebackConfiguration":{"isEnabled":true}},
            {"id":"g2","writebackConfiguration":null}]});
        let store = load(&t, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            store.get("g1").unwrap().props["writebackConfiguration"],
            json!({"isEnabled": true, "onPremisesGroupType": null})
        );
        assert_eq!(
            store.get("g2").unwrap().props["writebackConfiguration"],
            json!({"isEnabled": null, "onPremisesGroupType": null})
        );
        for bad in [
            json!({"onPremisesGroupType": "domainLocalGroup"}),
            json!({"isEnabled": "true"}),
            json!("yes"),
        ] {
            let t = json!({"tenantId":"T","groups":[{"id":"g","writebackConfiguration":bad}]});
            let err = load(&t, OffsetDateTime::UNIX_EPOCH).unwrap_err();
            assert!(
                err.to_string().contains("group g: writebackConfiguration"),
                "{err}"
            );
        }
    }

    #[test]
    fn devices_are_loaded_as_members_and_dumped() {
        let t = json!({"tenantId":"T",
                       "devices":[{"id":"d","displayName":"PC-01","trustType":"ServerAd",
                                   "onPremisesSecurityIdentifier":"S-1-5-21-1-2-3-1001"}],
                       "groups":[{"id":"g","displayName":"G","members":["d"]}]});
        let s = load(&t, OffsetDateTime::UNIX_EPOCH).unwrap();
        let d = s.get("d").unwrap();
        assert_eq!(d.kind, Kind::Device);
        assert!(!d.props.contains_key("securityIdentifier"));
        assert_eq!(d.props["physicalIds"], json!([]));
        assert!(s.get("g").unwrap().members.contains("d"));
        let dumped = dump(&s);
        assert_eq!(dumped["devices"][0]["displayName"], "PC-01");
        assert_eq!(dumped["groups"][0]["members"], json!(["d"]));
    }

    #[test]
    fn loads_and_dumps() {
        let t = json!({"tenantId":"T","users":[{"id":"u","displayName":"U"}],
                       "groups":[{"id":"g","displayName":"G","members":["u"]}]});
        let s = load(&t, OffsetDateTime::UNIX_EPOCH).unwrap();
        let d = dump(&s);
        assert_eq!(d["groups"][0]["members"], json!(["u"]));
        assert_eq!(d["users"][0]["displayName"], "U");
        assert_eq!(d["tenantId"], "t");
    }
}
