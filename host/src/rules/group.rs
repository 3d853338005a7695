//! The group as scripts see it: `CloudObject::to_rule_json()` as a Rhai object map, completed
//! with every documented Graph v1.0 group property (`()` when the cache does not hold it).
//!
//! The engine fails on unknown map properties, so a misspelt `group.displayname` is an error
//! instead of a silent `()` that would clear an attribute in AD; a real property Graph did not
//! send still reads as `()`. Open-type extras (`extension_<app>_<name>`) are read with
//! `group.get("name")`.

use rhai::{Dynamic, Map};

/// Properties of `microsoft.graph.group` (and `directoryObject`) in the v1.0 metadata
/// (copied from the Graph v1.0 CSDL, `EntityType Name="group"`), plus the rule extras.
const GROUP_PROPERTIES: &[&str] = &[
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

/// Converts the group JSON; never fails (a JSON value always has a Rhai form).
pub(crate) fn to_script_value(group: &serde_json::Value) -> Dynamic {
    let value = rhai::serde::to_dynamic(group).unwrap_or(Dynamic::UNIT);
    if !value.is_map() {
        return value;
    }
    let mut map = value.cast::<Map>();
    for name in GROUP_PROPERTIES {
        map.entry((*name).into()).or_insert(Dynamic::UNIT);
    }
    map.entry("members".into())
        .or_insert_with(|| Dynamic::from_array(Vec::new()));
    map.entry("deleted".into()).or_insert(Dynamic::FALSE);
    Dynamic::from_map(map)
}
