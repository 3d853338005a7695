//! Shared fixtures: the repository's stdlib and scripts folders, settings, sample groups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::rules::{Decision, DesiredGroup, Limits, RuleSet};

pub(super) const M365_OU: &str = "OU=M365,OU=Writeback,DC=corp,DC=example,DC=test";
pub(super) const SECURITY_OU: &str = "OU=Security,OU=Writeback,DC=corp,DC=example,DC=test";

pub(super) fn repo_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

pub(super) fn stdlib() -> PathBuf {
    repo_dir("stdlib")
}

pub(super) fn settings() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("m365_container".to_string(), json!(M365_OU)),
        ("security_container".to_string(), json!(SECURITY_OU)),
    ])
}

/// The shipped default rules.
pub(super) fn shipped() -> RuleSet {
    match RuleSet::load(
        &repo_dir("scripts"),
        &stdlib(),
        settings(),
        Limits::default(),
    ) {
        Ok(set) => set,
        Err(e) => panic!("shipped rules must load:\n{e}"),
    }
}

/// A temporary rules folder holding `files` (name, content); names may contain subfolders.
pub(super) fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write rule");
    }
    dir
}

pub(super) fn load(dir: &Path) -> Result<RuleSet, crate::rules::LoadError> {
    RuleSet::load(dir, &stdlib(), settings(), Limits::default())
}

pub(super) fn desired(d: Decision) -> DesiredGroup {
    match d {
        Decision::Desired(g) => g,
        other => panic!("expected a desired group, got {other:?}"),
    }
}

/// An attribute's values, from `attributes` or, for a create-only one, `on_create`.
pub(super) fn values(g: &DesiredGroup, attr: &str) -> Option<Vec<String>> {
    match g.attributes.get(attr).or_else(|| g.on_create.get(attr)) {
        Some(v) => v.clone(),
        None => panic!(
            "attribute {attr} not returned; got {:?} and on create {:?}",
            g.attributes, g.on_create
        ),
    }
}

pub(super) fn value(g: &DesiredGroup, attr: &str) -> String {
    match values(g, attr).as_deref() {
        Some([one]) => one.clone(),
        other => panic!("attribute {attr}: expected one value, got {other:?}"),
    }
}

/// Microsoft 365 group as Graph documents it (groups-overview example), with members.
pub(super) fn m365_group() -> Value {
    json!({
        "id": "4c5ee71b-e6a5-4343-9e2c-4244bc7e0938",
        "deletedDateTime": null,
        "classification": "MBI",
        "createdDateTime": "2016-08-23T14:46:56Z",
        "description": "This is a group in Outlook",
        "displayName": "OutlookGroup101",
        "groupTypes": ["Unified"],
        "mail": "outlookgroup101@service.microsoft.com",
        "mailEnabled": true,
        "mailNickname": "outlookgroup101",
        "preferredLanguage": null,
        "proxyAddresses": [
            "smtp:outlookgroup101@microsoft.onmicrosoft.com",
            "SMTP:outlookgroup101@service.microsoft.com"
        ],
        "securityEnabled": false,
        "theme": null,
        "visibility": "Public",
        "deleted": false,
        "members": [
            {"id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd", "type": "user"},
            {"id": "f87faa71-57a8-4c14-91f0-517f54645106", "type": "group"}
        ]
    })
}

/// Security group as Graph documents it (groups-overview example).
pub(super) fn security_group() -> Value {
    json!({
        "id": "f87faa71-57a8-4c14-91f0-517f54645106",
        "deletedDateTime": null,
        "classification": null,
        "createdDateTime": "2016-07-20T09:21:23Z",
        "description": "This group is a Security Group",
        "displayName": "SecurityGroup101",
        "groupTypes": [],
        "mail": null,
        "mailEnabled": false,
        "mailNickname": "",
        "preferredLanguage": null,
        "proxyAddresses": [],
        "securityEnabled": true,
        "deleted": false,
        "members": []
    })
}

/// `base` with some properties replaced.
pub(super) fn with(mut base: Value, changes: Value) -> Value {
    if let (Some(b), Some(c)) = (base.as_object_mut(), changes.as_object()) {
        for (k, v) in c {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}
