//! Property names of `user` and `group` in Graph v1.0, to validate `$select`, and the default
//! property sets. Names copied from the CSDL subset of microsoftgraph/msgraph-metadata
//! `clean_v10_metadata/cleanMetadata.xml` (MIT, commit f54f11b6); default sets from the v1.0
//! user/group resource pages.

use crate::store::Kind;

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
        (Kind::User, "birthday" | "hireDate") => json!("0001-01-01T00:00:00Z"),
        (Kind::User, "deviceEnrollmentLimit") => json!(5),
        (_, "onPremisesExtensionAttributes") => extension_attributes(None),
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
    }
}

pub fn navigation(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::User => USER_NAVIGATION,
        Kind::Group => GROUP_NAVIGATION,
    }
}

pub fn default_properties(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::User => USER_DEFAULT,
        Kind::Group => GROUP_DEFAULT,
    }
}

/// The schema's spelling of a property name (Graph matches `$select` case-insensitively).
pub fn canonical_property(kind: Kind, name: &str) -> Option<&'static str> {
    properties(kind)
        .iter()
        .chain(navigation(kind).iter())
        .find(|p| p.eq_ignore_ascii_case(name))
        .copied()
}

pub fn is_navigation(kind: Kind, name: &str) -> bool {
    navigation(kind)
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}
