//! Property names of `user`, `group` and `device` in Graph v1.0, to validate `$select`, and the
//! default property sets. User and group names copied from the CSDL subset of
//! microsoftgraph/msgraph-metadata `clean_v10_metadata/cleanMetadata.xml` (MIT, commit f54f11b6);
//! device names from the v1.0 `device` model of msgraph-sdk 1.65.0 (generated from the same
//! metadata; the subset has no device); default sets from the v1.0 resource pages. The beta endpoint serves the same properties plus
//! [`BETA_GROUP_PROPERTIES`].

use serde_json::{json, Map, Value};

use crate::store::Kind;

/// The Graph API version a request was made on: `/v1.0` or `/beta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    Beta,
}

impl ApiVersion {
    /// The version of a URL's first path segment (Graph matches it case-insensitively).
    pub fn from_segment(segment: &str) -> Option<Self> {
        match segment.to_ascii_lowercase().as_str() {
            "v1.0" => Some(ApiVersion::V1),
            "beta" => Some(ApiVersion::Beta),
            _ => None,
        }
    }

    /// The path segment of this version (`v1.0`, `beta`).
    pub fn segment(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1.0",
            ApiVersion::Beta => "beta",
        }
    }
}

/// `group.writebackConfiguration` (groupWritebackConfiguration), beta only.
pub const WRITEBACK_CONFIGURATION: &str = "writebackConfiguration";

/// Group properties that beta has and v1.0 does not (beta group resource; absent from the
/// v1.0 CSDL). Only the ones Writeback reads are modelled; none is returned by default.
pub const BETA_GROUP_PROPERTIES: &[&str] = &[WRITEBACK_CONFIGURATION];

/// The values of `groupWritebackConfiguration.onPremisesGroupType`.
pub const ON_PREMISES_GROUP_TYPES: &[&str] = &[
    "universalDistributionGroup",
    "universalSecurityGroup",
    "universalMailEnabledSecurityGroup",
];

pub const GROUP_PROPERTIES: &[&str] = &[
    "id",
    "deletedDateTime",
    "accessType",
    "allowExternalSenders",
    "assignedLabels",
    "assignedLicenses",
    "autoSubscribeNewMembers",
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "hasMembersWithLicenseErrors",
    "hideFromAddressLists",
    "hideFromOutlookClients",
    "infoCatalogs",
    "isArchived",
    "isAssignableToRole",
    "isFavorite",
    "isManagementRestricted",
    "isSubscribedByMail",
    "licenseProcessingState",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "organizationId",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "securityIdentifier",
    "serviceProvisioningErrors",
    "theme",
    "uniqueName",
    "unseenConversationsCount",
    "unseenCount",
    "unseenMessagesCount",
    "visibility",
    "welcomeMessageEnabled",
];

pub const GROUP_NAVIGATION: &[&str] = &[
    "acceptedSenders",
    "appRoleAssignments",
    "calendar",
    "calendarView",
    "conversations",
    "createdOnBehalfOf",
    "drive",
    "drives",
    "events",
    "extensions",
    "groupLifecyclePolicies",
    "memberOf",
    "members",
    "membersWithLicenseErrors",
    "onenote",
    "onPremisesSyncBehavior",
    "owners",
    "permissionGrants",
    "photo",
    "photos",
    "planner",
    "rejectedSenders",
    "settings",
    "sites",
    "team",
    "threads",
    "transitiveMemberOf",
    "transitiveMembers",
];

/// The v1.0 `device` entity's properties (with `deletedDateTime` and `id` from
/// directoryObject and entity), as Microsoft's v1.0 metadata declares them.
pub const DEVICE_PROPERTIES: &[&str] = &[
    "id",
    "deletedDateTime",
    "accountEnabled",
    "alternativeSecurityIds",
    "approximateLastSignInDateTime",
    "complianceExpirationDateTime",
    "deviceCategory",
    "deviceId",
    "deviceMetadata",
    "deviceOwnership",
    "deviceVersion",
    "displayName",
    "enrollmentProfileName",
    "enrollmentType",
    "isCompliant",
    "isManaged",
    "isManagementRestricted",
    "isRooted",
    "managementType",
    "manufacturer",
    "mdmAppId",
    "model",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "operatingSystem",
    "operatingSystemVersion",
    "physicalIds",
    "profileType",
    "registrationDateTime",
    "systemLabels",
    "trustType",
];

pub const DEVICE_NAVIGATION: &[&str] = &[
    "extensions",
    "memberOf",
    "registeredOwners",
    "registeredUsers",
    "transitiveMemberOf",
];

/// Returned without `$select`: every property but `onPremisesSecurityIdentifier`, which the
/// device resource says requires `$select` to be retrieved.
pub const DEVICE_DEFAULT: &[&str] = &[
    "deletedDateTime",
    "accountEnabled",
    "alternativeSecurityIds",
    "approximateLastSignInDateTime",
    "complianceExpirationDateTime",
    "deviceCategory",
    "deviceId",
    "deviceMetadata",
    "deviceOwnership",
    "deviceVersion",
    "displayName",
    "enrollmentProfileName",
    "enrollmentType",
    "isCompliant",
    "isManaged",
    "isManagementRestricted",
    "isRooted",
    "managementType",
    "manufacturer",
    "mdmAppId",
    "model",
    "onPremisesLastSyncDateTime",
    "onPremisesSyncEnabled",
    "operatingSystem",
    "operatingSystemVersion",
    "physicalIds",
    "profileType",
    "registrationDateTime",
    "systemLabels",
    "trustType",
];

pub const USER_PROPERTIES: &[&str] = &[
    "id",
    "deletedDateTime",
    "aboutMe",
    "accountEnabled",
    "ageGroup",
    "assignedLicenses",
    "assignedPlans",
    "authorizationInfo",
    "birthday",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "createdDateTime",
    "creationType",
    "customSecurityAttributes",
    "department",
    "deviceEnrollmentLimit",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "externalUserStateChangeDateTime",
    "faxNumber",
    "givenName",
    "hireDate",
    "identities",
    "identityParentId",
    "imAddresses",
    "interests",
    "isManagementRestricted",
    "isResourceAccount",
    "jobTitle",
    "lastPasswordChangeDateTime",
    "legalAgeGroupClassification",
    "licenseAssignmentStates",
    "mail",
    "mailboxSettings",
    "mailNickname",
    "mobilePhone",
    "mySite",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "passwordProfile",
    "pastProjects",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "preferredName",
    "print",
    "provisionedPlans",
    "proxyAddresses",
    "responsibilities",
    "schools",
    "securityIdentifier",
    "serviceProvisioningErrors",
    "showInAddressList",
    "signInActivity",
    "signInSessionsValidFromDateTime",
    "skills",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

pub const USER_NAVIGATION: &[&str] = &[
    "activities",
    "adhocCalls",
    "agreementAcceptances",
    "appRoleAssignments",
    "authentication",
    "calendar",
    "calendarGroups",
    "calendars",
    "calendarView",
    "chats",
    "cloudClipboard",
    "cloudPCs",
    "contactFolders",
    "contacts",
    "createdObjects",
    "dataSecurityAndGovernance",
    "deviceManagementTroubleshootingEvents",
    "directReports",
    "drive",
    "drives",
    "employeeExperience",
    "events",
    "extensions",
    "followedSites",
    "inferenceClassification",
    "insights",
    "joinedTeams",
    "licenseDetails",
    "mailFolders",
    "managedAppRegistrations",
    "managedDevices",
    "manager",
    "memberOf",
    "messages",
    "oauth2PermissionGrants",
    "onenote",
    "onlineMeetings",
    "onPremisesSyncBehavior",
    "outlook",
    "ownedDevices",
    "ownedObjects",
    "people",
    "permissionGrants",
    "photo",
    "photos",
    "planner",
    "presence",
    "registeredDevices",
    "scopedRoleMemberOf",
    "settings",
    "solutions",
    "sponsorOf",
    "sponsors",
    "teamwork",
    "todo",
    "transitiveMemberOf",
];

/// Returned by GET/list users without `$select` (user resource page, "Returned by default").
pub const USER_DEFAULT: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

/// Returned by GET/list groups without `$select` (group resource page, "Returned by default").
pub const GROUP_DEFAULT: &[&str] = &[
    "deletedDateTime",
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesDomainName",
    "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName",
    "onPremisesProvisioningErrors",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "securityIdentifier",
    "theme",
    "visibility",
];

/// User properties kept outside the directory store: a list or delta that selects them is
/// answered 501 (delta-query-overview, "Properties stored outside the main data store").
pub const USER_OUTSIDE_DIRECTORY: &[&str] = &[
    "aboutMe",
    "birthday",
    "hireDate",
    "interests",
    "mySite",
    "pastProjects",
    "preferredName",
    "responsibilities",
    "schools",
    "skills",
];

/// The 501 for selecting such a property on a collection.
pub fn check_collection_select(kind: Kind, select: &[String]) -> crate::errors::GraphResult<()> {
    if kind == Kind::User
        && select
            .iter()
            .any(|p| USER_OUTSIDE_DIRECTORY.contains(&p.as_str()))
    {
        return Err(crate::errors::GraphError::new(
            501,
            "NotImplemented",
            "This operation target is not yet supported.",
        ));
    }
    Ok(())
}

/// The prefix of a directory extension property.
const EXTENSION_PREFIX: &str = "extension_";

/// A directory extension property's name in its canonical spelling (app id in lowercase):
/// `extension_<appId, 32 hex digits without dashes>_<name>` (extensionProperty resource). Any
/// well-formed name is accepted; the emulator keeps no extension definitions.
pub fn extension_property(name: &str) -> Option<String> {
    let prefix = name.get(..EXTENSION_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(EXTENSION_PREFIX) {
        return None;
    }
    let rest = &name[EXTENSION_PREFIX.len()..];
    let app = rest.get(..32)?;
    let tail = rest.get(32..)?.strip_prefix('_')?;
    let ok = app.chars().all(|c| c.is_ascii_hexdigit())
        && !tail.is_empty()
        && tail.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| format!("{EXTENSION_PREFIX}{}_{tail}", app.to_ascii_lowercase()))
}

pub fn is_extension_property(name: &str) -> bool {
    extension_property(name).is_some()
}

/// The keys of `onPremisesExtensionAttributes` (onPremisesExtensionAttributes resource).
pub fn extension_attribute_keys() -> impl Iterator<Item = String> {
    (1..=15).map(|n| format!("extensionAttribute{n}"))
}

/// `onPremisesExtensionAttributes` with all 15 keys: Graph returns every key, `null` when unset.
pub fn extension_attributes(
    given: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for key in extension_attribute_keys() {
        let v = given
            .and_then(|g| g.get(&key))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        out.insert(key, v);
    }
    serde_json::Value::Object(out)
}

/// Properties the schema declares `Nullable="false"` (besides `id`), with the value Graph
/// returns when the object has none.
pub fn unset_value(kind: Kind, name: &str) -> serde_json::Value {
    use serde_json::json;
    match (kind, name) {
        (
            Kind::Group,
            "groupTypes"
            | "infoCatalogs"
            | "proxyAddresses"
            | "resourceBehaviorOptions"
            | "resourceProvisioningOptions",
        )
        | (
            Kind::User,
            "assignedLicenses" | "assignedPlans" | "businessPhones" | "otherMails"
            | "provisionedPlans" | "proxyAddresses",
        ) => json!([]),
        (Kind::Device, "alternativeSecurityIds" | "physicalIds" | "systemLabels") => json!([]),
        (Kind::User, "birthday" | "hireDate") => json!("0001-01-01T00:00:00Z"),
        (Kind::User, "deviceEnrollmentLimit") => json!(5),
        (_, "onPremisesExtensionAttributes") => extension_attributes(None),
        (Kind::Group, WRITEBACK_CONFIGURATION) => writeback_unset(),
        _ => serde_json::Value::Null,
    }
}

/// May this property be set to `null`?
pub fn nullable(kind: Kind, name: &str) -> bool {
    unset_value(kind, name).is_null()
}

pub fn properties(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::User => USER_PROPERTIES,
        Kind::Group => GROUP_PROPERTIES,
        Kind::Device => DEVICE_PROPERTIES,
    }
}

pub fn navigation(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::User => USER_NAVIGATION,
        Kind::Group => GROUP_NAVIGATION,
        Kind::Device => DEVICE_NAVIGATION,
    }
}

pub fn default_properties(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::User => USER_DEFAULT,
        Kind::Group => GROUP_DEFAULT,
        Kind::Device => DEVICE_DEFAULT,
    }
}

/// Properties only `version` has on top of v1.0's.
fn version_properties(kind: Kind, version: ApiVersion) -> &'static [&'static str] {
    match (kind, version) {
        (Kind::Group, ApiVersion::Beta) => BETA_GROUP_PROPERTIES,
        _ => &[],
    }
}

/// The schema's spelling of a property name in `version` (Graph matches `$select`
/// case-insensitively).
pub fn canonical_property(kind: Kind, name: &str, version: ApiVersion) -> Option<&'static str> {
    properties(kind)
        .iter()
        .chain(version_properties(kind, version))
        .chain(navigation(kind).iter())
        .find(|p| p.eq_ignore_ascii_case(name))
        .copied()
}

/// Is this a declared property in any version served? For code that handles names already
/// checked against the request's version (rendering a validated `$select`).
pub fn is_declared(kind: Kind, name: &str) -> bool {
    canonical_property(kind, name, ApiVersion::Beta).is_some()
}

/// Selected properties that are reported even in delta when never set: Graph returns a
/// complex value with null fields rather than leaving it out.
pub fn reported_when_unset(kind: Kind, name: &str) -> bool {
    kind == Kind::Group && name == WRITEBACK_CONFIGURATION
}

/// `writebackConfiguration` of a group that never had one: both fields null (the service
/// applies its documented defaults itself; Graph returns null).
pub fn writeback_unset() -> Value {
    json!({"isEnabled": null, "onPremisesGroupType": null})
}

/// Check a `writebackConfiguration` value (PATCH body or tenant file) and return the fields it
/// sets in their canonical spelling; `null` sets both to null. The error is Graph's message.
pub fn writeback_fields(v: &Value) -> Result<Map<String, Value>, String> {
    let invalid =
        |p: &str| format!("Invalid value specified for property '{p}' of resource 'Group'.");
    let sent = match v {
        Value::Null => return Ok(writeback_unset().as_object().cloned().unwrap_or_default()),
        Value::Object(m) => m,
        _ => return Err(invalid(WRITEBACK_CONFIGURATION)),
    };
    let mut out = Map::new();
    for (k, x) in sent {
        if k.eq_ignore_ascii_case("@odata.type") {
            let t = x.as_str().unwrap_or_default().trim_start_matches('#');
            if !t.eq_ignore_ascii_case("microsoft.graph.groupWritebackConfiguration") {
                return Err(invalid(WRITEBACK_CONFIGURATION));
            }
            continue;
        }
        if k.starts_with('@') {
            continue;
        }
        if k.eq_ignore_ascii_case("isEnabled") {
            if !(x.is_boolean() || x.is_null()) {
                return Err(invalid("isEnabled"));
            }
            out.insert("isEnabled".into(), x.clone());
        } else if k.eq_ignore_ascii_case("onPremisesGroupType") {
            let value = match x {
                Value::Null => Value::Null,
                Value::String(s) => ON_PREMISES_GROUP_TYPES
                    .iter()
                    .find(|t| t.eq_ignore_ascii_case(s))
                    .map(|t| json!(t))
                    .ok_or_else(|| invalid("onPremisesGroupType"))?,
                _ => return Err(invalid("onPremisesGroupType")),
            };
            out.insert("onPremisesGroupType".into(), value);
        } else {
            // groupWritebackConfiguration is not an open type.
            return Err(format!(
                "Property '{k}' does not exist as a declared property or extension property."
            ));
        }
    }
    Ok(out)
}

/// `current` (or the unset value) with `fields` applied: a PATCH of a complex property
/// replaces the fields it sends and keeps the others.
pub fn writeback_merged(current: Option<&Value>, fields: &Map<String, Value>) -> Value {
    let mut merged = match current {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    for (k, v) in writeback_unset().as_object().into_iter().flatten() {
        merged.entry(k.clone()).or_insert_with(|| v.clone());
    }
    merged.extend(fields.clone());
    Value::Object(merged)
}

pub fn is_navigation(kind: Kind, name: &str) -> bool {
    navigation(kind)
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_configuration_is_a_beta_group_property() {
        assert_eq!(
            canonical_property(Kind::Group, "WritebackConfiguration", ApiVersion::Beta),
            Some(WRITEBACK_CONFIGURATION)
        );
        assert_eq!(
            canonical_property(Kind::Group, "writebackConfiguration", ApiVersion::V1),
            None
        );
        assert_eq!(
            canonical_property(Kind::User, "writebackConfiguration", ApiVersion::Beta),
            None
        );
        assert!(!default_properties(Kind::Group).contains(&WRITEBACK_CONFIGURATION));
        assert_eq!(ApiVersion::from_segment("BETA"), Some(ApiVersion::Beta));
        assert_eq!(ApiVersion::from_segment("v2.0"), None);
    }

    #[test]
    fn writeback_fields_are_checked_and_merged() {
        let f = writeback_fields(&json!({"isEnabled": false})).unwrap();
        let current = json!({"isEnabled": true, "onPremisesGroupType": "universalSecurityGroup"});
        assert_eq!(
            writeback_merged(Some(&current), &f),
            json!({"isEnabled": false, "onPremisesGroupType": "universalSecurityGroup"})
        );
        let f = writeback_fields(&json!({
            "@odata.type": "#microsoft.graph.groupWritebackConfiguration",
            "onpremisesgrouptype": "UniversalDistributionGroup"
        }))
        .unwrap();
        assert_eq!(
            writeback_merged(None, &f),
            json!({"isEnabled": null, "onPremisesGroupType": "universalDistributionGroup"})
        );
        let f = writeback_fields(&Value::Null).unwrap();
        assert_eq!(writeback_merged(Some(&current), &f), writeback_unset());
        for bad in [
            json!({"isEnabled": "yes"}),
            json!({"onPremisesGroupType": "globalSecurityGroup"}),
            json!({"onPremisesGroupType": 1}),
            json!({"other": true}),
            json!({"@odata.type": "#microsoft.graph.group"}),
            json!(true),
            json!([]),
        ] {
            assert!(writeback_fields(&bad).is_err(), "{bad}");
        }
    }
}
