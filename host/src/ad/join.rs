//! Join keys: which cloud property names a member's AD account and which AD attribute holds the
//! same value; how a value is normalised, put in a filter, and recognised in AD's answer.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::dn;
use super::search::AdEntry;

/// The prefix of a directory extension property: `extension_<appId without dashes>_<name>`.
const EXTENSION_PREFIX: &str = "extension_";
/// The complex property holding Exchange's extensionAttribute1..15.
const EXTENSION_ATTRIBUTES: &str = "onPremisesExtensionAttributes";

/// Plain string properties a user join may read (Graph's spelling).
const USER_PROPERTIES: &[&str] = &[
    "userPrincipalName",
    "mail",
    "mailNickname",
    "employeeId",
    "onPremisesSamAccountName",
    "onPremisesUserPrincipalName",
    "onPremisesImmutableId",
    "onPremisesSecurityIdentifier",
    "onPremisesDistinguishedName",
];

/// Plain string properties a group join may read.
const GROUP_PROPERTIES: &[&str] = &[
    "onPremisesSecurityIdentifier",
    "onPremisesSamAccountName",
    "mail",
    "mailNickname",
];

/// Which cloud objects a join key matches: it decides the properties allowed and the AD class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinFor {
    Users,
    Groups,
}

impl JoinFor {
    /// The objectClass the AD side must have: a mail join must not find a group or a contact
    /// that carries the same address.
    pub fn ad_class(self) -> &'static str {
        match self {
            JoinFor::Users => "user",
            JoinFor::Groups => "group",
        }
    }

    fn properties(self) -> &'static [&'static str] {
        match self {
            JoinFor::Users => USER_PROPERTIES,
            JoinFor::Groups => GROUP_PROPERTIES,
        }
    }
}

/// How the AD attribute's values are written in a filter and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// `objectSid`: binary, the cloud value is `S-1-5-...`.
    Sid,
    /// `objectGUID`: binary, the cloud value is base64 of its bytes (Connect's immutableId)
    /// or the GUID's text form.
    Guid,
    /// `mS-DS-ConsistencyGuid`: a GUID's bytes in a binary attribute (Connect's source anchor,
    /// copied from objectGUID); the cloud value as for [`Compare::Guid`].
    GuidBytes,
    /// Any other attribute: text, compared case-insensitively as AD does.
    Text,
}

/// The binary attribute holding Connect's source anchor.
const CONSISTENCY_GUID: &str = "mS-DS-ConsistencyGuid";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinKeyError {
    #[error("{name:?} is not a cloud property a {what} join can read; use one of {}, a directory extension `extension_<application id, 32 hex digits>_<name>`, or `onPremisesExtensionAttributes.extensionAttribute1` .. `extensionAttribute15`", .allowed.join(", "))]
    CloudProperty {
        name: String,
        what: &'static str,
        allowed: Vec<&'static str>,
    },
    #[error("{name:?} is not an AD attribute name (letters, digits and `-`)")]
    AdAttribute { name: String },
}

/// One validated join: a cloud property and the AD attribute that holds the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinKey {
    cloud: String,
    ad: String,
    compare: Compare,
}

/// Why a cloud object has no value to join on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoValue {
    /// The property is absent, null or empty.
    Missing,
    /// Present but not of the form the AD attribute needs (a SID, a GUID).
    Unusable,
}

impl JoinKey {
    /// Validates `cloud` for `what` and `ad`; the cloud name is kept in Graph's spelling.
    pub fn new(what: JoinFor, cloud: &str, ad: &str) -> Result<JoinKey, JoinKeyError> {
        let cloud = cloud_property(what, cloud.trim())?;
        let ad = ad.trim();
        if !dn::is_attr_name(ad) || ad.contains(';') || ad.contains('=') {
            return Err(JoinKeyError::AdAttribute { name: ad.into() });
        }
        let compare = if ad.eq_ignore_ascii_case("objectSid") {
            Compare::Sid
        } else if ad.eq_ignore_ascii_case("objectGUID") {
            Compare::Guid
        } else if ad.eq_ignore_ascii_case(CONSISTENCY_GUID) {
            Compare::GuidBytes
        } else {
            Compare::Text
        };
        Ok(JoinKey {
            cloud,
            ad: ad.to_string(),
            compare,
        })
    }

    /// `onPremisesSecurityIdentifier` = `objectSid`: the default for users and groups.
    pub fn sid() -> JoinKey {
        JoinKey {
            cloud: "onPremisesSecurityIdentifier".into(),
            ad: "objectSid".into(),
            compare: Compare::Sid,
        }
    }

    /// `onPremisesImmutableId` = base64 of `objectGUID` (Connect's default source anchor).
    pub fn immutable_id() -> JoinKey {
        JoinKey {
            cloud: "onPremisesImmutableId".into(),
            ad: "objectGUID".into(),
            compare: Compare::Guid,
        }
    }

    pub fn cloud(&self) -> &str {
        &self.cloud
    }

    pub fn ad(&self) -> &str {
        &self.ad
    }

    pub fn compare(&self) -> Compare {
        self.compare
    }

    /// The name the Graph `$select` needs for this key (the complex property for an
    /// `onPremisesExtensionAttributes.*` key).
    pub fn select_name(&self) -> &str {
        self.cloud.split('.').next().unwrap_or(&self.cloud)
    }

    /// The join value of a cloud object's properties, normalised (see [`JoinKey::keys_in`]).
    pub fn value_of(&self, props: &Map<String, Value>) -> Result<String, NoValue> {
        let raw = self.raw_value(props).ok_or(NoValue::Missing)?;
        match self.compare {
            Compare::Sid => dn::sid_from_string(&raw)
                .ok()
                .and_then(|b| dn::sid_to_string(&b).ok())
                .ok_or(NoValue::Unusable),
            Compare::Guid | Compare::GuidBytes => guid_of(&raw)
                .map(|g| g.to_string())
                .ok_or(NoValue::Unusable),
            Compare::Text => Ok(raw.to_lowercase()),
        }
    }

    fn raw_value(&self, props: &Map<String, Value>) -> Option<String> {
        let (top, inner) = match self.cloud.split_once('.') {
            Some((t, i)) => (t, Some(i)),
            None => (self.cloud.as_str(), None),
        };
        let mut v = get_ci(props, top)?;
        if let Some(inner) = inner {
            v = get_ci(v.as_object()?, inner)?;
        }
        let text = match v {
            Value::String(s) => s.clone(),
            // directory extensions may be integers
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        (!text.trim().is_empty()).then_some(text)
    }

    /// The filter term finding the AD object holding the normalised value `key`; `None` when
    /// `key` is not of the attribute's form.
    pub fn term(&self, key: &str) -> Option<String> {
        match self.compare {
            Compare::Sid => dn::sid_filter(key).ok(),
            Compare::Guid => Uuid::parse_str(key).ok().map(|g| dn::guid_filter(&g)),
            Compare::GuidBytes => Uuid::parse_str(key).ok().map(|g| {
                format!(
                    "({}={})",
                    self.ad,
                    dn::escape_filter_bytes(&dn::guid_to_ad_bytes(&g))
                )
            }),
            Compare::Text => Some(format!("({}={})", self.ad, dn::escape_filter_value(key))),
        }
    }

    /// The normalised values an AD entry carries in the join attribute.
    pub fn keys_in(&self, e: &AdEntry) -> BTreeSet<String> {
        match self.compare {
            Compare::Sid => e.sid.iter().cloned().collect(),
            Compare::Guid => e.guid.iter().map(Uuid::to_string).collect(),
            Compare::GuidBytes => e
                .values(&self.ad)
                .iter()
                .filter_map(|v| guid_in_entry(v))
                .map(|g| g.to_string())
                .collect(),
            Compare::Text => e
                .values(&self.ad)
                .iter()
                .map(|v| v.to_lowercase())
                .collect(),
        }
    }

    /// `cloud = ad`, as reasons and logs show the key.
    pub fn describe(&self) -> String {
        format!("{} = {}", self.cloud, self.ad)
    }
}

/// A property by name: exact first, then ignoring ASCII case (Graph's names are
/// case-insensitive; an extension's application id may come back in either case).
fn get_ci<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A GUID given as base64 of AD's bytes (immutableId) or as text.
fn guid_of(v: &str) -> Option<Uuid> {
    if let Ok(g) = Uuid::parse_str(v.trim()) {
        return Some(g);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()?;
    dn::guid_from_ad_bytes(&bytes).ok()
}

/// A GUID-sized binary value as an [`AdEntry`] carries it: base64 (24 characters) when its
/// bytes are not UTF-8, else the 16 bytes as text.
fn guid_in_entry(v: &str) -> Option<Uuid> {
    let bytes = match v.len() {
        16 => v.as_bytes().to_vec(),
        _ => base64::engine::general_purpose::STANDARD.decode(v).ok()?,
    };
    dn::guid_from_ad_bytes(&bytes).ok()
}

/// The cloud property in Graph's spelling, or why it cannot be joined on.
fn cloud_property(what: JoinFor, name: &str) -> Result<String, JoinKeyError> {
    let refuse = || JoinKeyError::CloudProperty {
        name: name.into(),
        what: match what {
            JoinFor::Users => "user",
            JoinFor::Groups => "group",
        },
        allowed: what.properties().to_vec(),
    };
    if let Some(p) = what
        .properties()
        .iter()
        .find(|p| p.eq_ignore_ascii_case(name))
    {
        return Ok((*p).to_string());
    }
    if let Some((top, inner)) = name.split_once('.') {
        let n = inner
            .get(..18)
            .filter(|p| p.eq_ignore_ascii_case("extensionAttribute"))
            .and_then(|_| inner.get(18..))
            .and_then(|d| d.parse::<u8>().ok());
        return match n {
            Some(n)
                if top.eq_ignore_ascii_case(EXTENSION_ATTRIBUTES)
                    && (1..=15).contains(&n)
                    && inner.get(18..) == Some(n.to_string().as_str()) =>
            {
                Ok(format!("{EXTENSION_ATTRIBUTES}.extensionAttribute{n}"))
            }
            _ => Err(refuse()),
        };
    }
    if is_extension_name(name) {
        return Ok(name.to_string());
    }
    Err(refuse())
}

/// `extension_<32 hex digits>_<name>`, the name letters, digits and `_`.
fn is_extension_name(name: &str) -> bool {
    let Some(rest) = name.get(..EXTENSION_PREFIX.len()).and_then(|p| {
        p.eq_ignore_ascii_case(EXTENSION_PREFIX)
            .then(|| &name[EXTENSION_PREFIX.len()..])
    }) else {
        return false;
    };
    let (app, tail) = (rest.get(..32), rest.get(32..));
    matches!((app, tail), (Some(app), Some(tail))
        if app.chars().all(|c| c.is_ascii_hexdigit())
            && tail.len() > 1
            && tail.starts_with('_')
            && tail.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXT: &str = "extension_0123456789abcdef0123456789abcdef_costCenter";

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn cloud_names_are_checked_and_spelled_as_graph_does() {
        let k = JoinKey::new(JoinFor::Users, "userprincipalname", "userPrincipalName").unwrap();
        assert_eq!(k.cloud(), "userPrincipalName");
        assert_eq!(k.compare(), Compare::Text);
        let k = JoinKey::new(
            JoinFor::Users,
            "onpremisesextensionattributes.EXTENSIONATTRIBUTE7",
            "extensionAttribute7",
        )
        .unwrap();
        assert_eq!(
            k.cloud(),
            "onPremisesExtensionAttributes.extensionAttribute7"
        );
        assert_eq!(k.select_name(), "onPremisesExtensionAttributes");
        let k = JoinKey::new(JoinFor::Users, EXT, "msDS-cloudExtensionAttribute1").unwrap();
        assert_eq!(k.select_name(), EXT);
        assert_eq!(
            JoinKey::new(JoinFor::Groups, "onPremisesSecurityIdentifier", "OBJECTSID")
                .unwrap()
                .compare(),
            Compare::Sid
        );
        for bad in [
            "displayName",
            "members",
            "onPremisesExtensionAttributes.extensionAttribute16",
            "onPremisesExtensionAttributes.extensionAttribute0",
            "onPremisesExtensionAttributes.extensionAttribute01",
            "onPremisesExtensionAttributes",
            "extension_0123_costCenter",
            "extension_0123456789abcdef0123456789abcdef_",
            "extension_0123456789abcdef0123456789abcdef_a-b",
            "",
        ] {
            let e = JoinKey::new(JoinFor::Users, bad, "mail").unwrap_err();
            assert!(e.to_string().contains("userPrincipalName"), "{bad}: {e}");
        }
        // employeeId exists on users only
        assert!(JoinKey::new(JoinFor::Groups, "employeeId", "employeeID").is_err());
        for bad in ["", "mail;binary", "a b", "mail=x", "(mail)"] {
            assert!(
                matches!(
                    JoinKey::new(JoinFor::Users, "mail", bad),
                    Err(JoinKeyError::AdAttribute { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn values_are_normalised_per_attribute() {
        let upn = JoinKey::new(JoinFor::Users, "userPrincipalName", "userPrincipalName").unwrap();
        let p = props(json!({"userPrincipalName": "Ada.Lovelace@Contoso.Example"}));
        assert_eq!(
            upn.value_of(&p),
            Ok("ada.lovelace@contoso.example".to_string())
        );
        assert_eq!(upn.value_of(&props(json!({}))), Err(NoValue::Missing));
        assert_eq!(
            upn.value_of(&props(json!({"userPrincipalName": ""}))),
            Err(NoValue::Missing)
        );
        assert_eq!(
            upn.value_of(&props(json!({"userPrincipalName": null}))),
            Err(NoValue::Missing)
        );

        let sid = JoinKey::sid();
        let p = props(json!({"onPremisesSecurityIdentifier": "s-1-5-21-1-2-3-1105"}));
        assert_eq!(sid.value_of(&p), Ok("S-1-5-21-1-2-3-1105".to_string()));
        let p = props(json!({"onPremisesSecurityIdentifier": "not a sid"}));
        assert_eq!(sid.value_of(&p), Err(NoValue::Unusable));

        let g = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(dn::guid_to_ad_bytes(&g));
        let imm = JoinKey::immutable_id();
        let p = props(json!({ "onPremisesImmutableId": b64 }));
        assert_eq!(imm.value_of(&p), Ok(g.to_string()));
        let p = props(json!({"onPremisesImmutableId": "00112233-4455-6677-8899-AABBCCDDEEFF"}));
        assert_eq!(imm.value_of(&p), Ok(g.to_string()));
        let p = props(json!({"onPremisesImmutableId": "c2hvcnQ="}));
        assert_eq!(imm.value_of(&p), Err(NoValue::Unusable));

        let ea = JoinKey::new(
            JoinFor::Users,
            "onPremisesExtensionAttributes.extensionAttribute3",
            "employeeNumber",
        )
        .unwrap();
        let p = props(json!({"onPremisesExtensionAttributes": {"extensionAttribute3": "E-42"}}));
        assert_eq!(ea.value_of(&p), Ok("e-42".to_string()));
        let p = props(json!({"onPremisesExtensionAttributes": {"extensionAttribute3": null}}));
        assert_eq!(ea.value_of(&p), Err(NoValue::Missing));

        // an extension's application id may come back in another case; integers are values
        let ext = JoinKey::new(JoinFor::Users, EXT, "employeeNumber").unwrap();
        let p = props(json!({ "extension_0123456789ABCDEF0123456789abcdef_costCenter": 4711 }));
        assert_eq!(ext.value_of(&p), Ok("4711".to_string()));
    }

    #[test]
    fn terms_escape_values_and_parse() {
        let mail = JoinKey::new(JoinFor::Users, "mail", "mail").unwrap();
        let t = mail.term("a*b(c)\\d@x").unwrap();
        assert_eq!(t, "(mail=a\\2ab\\28c\\29\\5cd@x)");
        assert!(ldap3::parse_filter(&t).is_ok());
        let t = JoinKey::sid().term("S-1-5-21-1-2-3-1105").unwrap();
        assert!(t.starts_with("(objectSid=\\01"), "{t}");
        assert!(JoinKey::sid().term("garbage").is_none());
        let t = JoinKey::immutable_id()
            .term("00112233-4455-6677-8899-aabbccddeeff")
            .unwrap();
        assert_eq!(
            t,
            "(objectGUID=\\33\\22\\11\\00\\55\\44\\77\\66\\88\\99\\aa\\bb\\cc\\dd\\ee\\ff)"
        );
    }

    #[test]
    fn the_consistency_guid_is_matched_as_bytes() {
        let k = JoinKey::new(
            JoinFor::Users,
            "onPremisesImmutableId",
            "ms-ds-consistencyGuid",
        )
        .unwrap();
        assert_eq!(k.compare(), Compare::GuidBytes);
        let g = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let bytes = dn::guid_to_ad_bytes(&g);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let key = k
            .value_of(&props(json!({ "onPremisesImmutableId": b64 })))
            .unwrap();
        assert_eq!(key, g.to_string());
        let t = k.term(&key).unwrap();
        assert!(t.starts_with("(ms-ds-consistencyGuid=\\33\\22"), "{t}");
        assert!(ldap3::parse_filter(&t).is_ok());
        let mut e = AdEntry::default();
        e.attrs.insert("ms-ds-consistencyguid".into(), vec![b64]);
        assert_eq!(
            k.keys_in(&e).into_iter().collect::<Vec<_>>(),
            vec![key.clone()]
        );
        // bytes that happen to be UTF-8 come back as text
        let ascii = *b"0123456789abcdef";
        let g2 = Uuid::from_bytes_le(ascii);
        e.attrs.insert(
            "ms-ds-consistencyguid".into(),
            vec!["0123456789abcdef".into()],
        );
        assert_eq!(
            k.keys_in(&e).into_iter().collect::<Vec<_>>(),
            vec![g2.to_string()]
        );
    }

    #[test]
    fn answers_are_read_back_case_insensitively() {
        let mail = JoinKey::new(JoinFor::Users, "mail", "Mail").unwrap();
        let mut e = AdEntry::default();
        e.attrs.insert(
            "mail".into(),
            vec!["Ada@Contoso.Example".into(), "ADA2@x".into()],
        );
        let keys = mail.keys_in(&e);
        assert!(keys.contains("ada@contoso.example") && keys.contains("ada2@x"));
        e.sid = Some("S-1-5-21-1-2-3-4".into());
        assert_eq!(
            JoinKey::sid().keys_in(&e).into_iter().collect::<Vec<_>>(),
            vec!["S-1-5-21-1-2-3-4"]
        );
    }
}
