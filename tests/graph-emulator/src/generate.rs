//! Deterministic synthetic tenants: the same options give byte-identical output.
//!
//! Users are half synced from an on-prem AD (SID, immutable id, sync metadata) and half
//! cloud-only. Groups mix Microsoft 365, cloud security and AD-synced security groups; most are
//! small, a few are large, and a few security groups nest others (without cycles).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};

use crate::tenant::DEFAULT_DOMAIN;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub users: usize,
    pub groups: usize,
    pub seed: u64,
    /// Extra-large groups (placed first) and their size.
    pub large_groups: usize,
    pub large_size: usize,
    pub domain: Option<String>,
}

const FIRST: &[&str] = &[
    "Adele", "Alex", "Ana", "Ben", "Chloe", "Daniel", "Diego", "Elena", "Emma", "Farid", "Grace",
    "Hana", "Ivan", "Jonas", "Julia", "Kenji", "Lea", "Lucas", "Maria", "Mateo", "Mia", "Nadia",
    "Noah", "Olga", "Omar", "Paula", "Priya", "Rafael", "Sara", "Sven", "Tariq", "Uma", "Victor",
    "Wei", "Yara", "Zoe",
];
const LAST: &[&str] = &[
    "Adams",
    "Berg",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Kowalski",
    "Larsen",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Urban",
    "Varga",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zimmermann",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Analyst",
    "Manager",
    "Designer",
    "Consultant",
    "Accountant",
    "Technician",
    "Recruiter",
];
const DEPARTMENTS: &[&str] = &[
    "Sales",
    "Finance",
    "Engineering",
    "Marketing",
    "HR",
    "Legal",
    "Operations",
    "Support",
    "Research",
    "Facilities",
];
const TOPICS: &[&str] = &[
    "Project",
    "Team",
    "Committee",
    "Guild",
    "Office",
    "Program",
    "Community",
    "Squad",
];

const AD_DOMAIN: &str = "corp.contoso.com";
const AD_BASE_DN: &str = "DC=corp,DC=contoso,DC=com";
const CREATED: &str = "2024-03-01T09:00:00Z";
const LAST_SYNC: &str = "2026-01-15T06:30:00Z";

fn uuid(rng: &mut StdRng) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// Small most of the time, occasionally a few hundred or a thousand.
fn group_size(rng: &mut StdRng) -> usize {
    let r: f64 = rng.random();
    if r < 0.60 {
        rng.random_range(0..=8)
    } else if r < 0.90 {
        rng.random_range(9..=40)
    } else if r < 0.99 {
        rng.random_range(41..=150)
    } else {
        rng.random_range(151..=1000)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Unified,
    CloudSecurity,
    SyncedSecurity,
}

pub fn generate(opts: &GenerateOptions) -> Value {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let domain = opts
        .domain
        .clone()
        .unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
    let tenant_id = uuid(&mut rng);
    let domain_sid = format!(
        "S-1-5-21-{}-{}-{}",
        rng.random_range(1_000_000_000u32..4_000_000_000),
        rng.random_range(1_000_000_000u32..4_000_000_000),
        rng.random_range(1_000_000_000u32..4_000_000_000)
    );
    let client_id = uuid(&mut rng);
    let secret: String = (0..40)
        .map(|_| {
            const CHARS: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789~._-";
            CHARS[rng.random_range(0..CHARS.len())] as char
        })
        .collect();

    let mut user_ids = Vec::with_capacity(opts.users);
    let mut users = Vec::with_capacity(opts.users);
    for i in 0..opts.users {
        let id = uuid(&mut rng);
        let given = pick(&mut rng, FIRST);
        let sur = pick(&mut rng, LAST);
        let nick = format!("{}.{}{}", given.to_lowercase(), sur.to_lowercase(), i);
        let upn = format!("{nick}@{domain}");
        let display = format!("{given} {sur}");
        let mut u = json!({
            "id": id,
            "displayName": display,
            "givenName": given,
            "surname": sur,
            "mailNickname": nick,
            "userPrincipalName": upn,
            "mail": upn,
            "jobTitle": pick(&mut rng, TITLES),
            "department": pick(&mut rng, DEPARTMENTS),
            "accountEnabled": true,
            "userType": "Member",
            "businessPhones": [],
            "createdDateTime": CREATED,
            "onPremisesSyncEnabled": null,
        });
        if i % 2 == 0 {
            let mut guid = [0u8; 16];
            rng.fill_bytes(&mut guid);
            let sam: String = nick.chars().filter(|c| *c != '.').take(20).collect();
            u["onPremisesSyncEnabled"] = json!(true);
            u["onPremisesSecurityIdentifier"] = json!(format!("{domain_sid}-{}", 1100 + i));
            u["onPremisesImmutableId"] = json!(STANDARD.encode(guid));
            u["onPremisesSamAccountName"] = json!(sam);
            u["onPremisesUserPrincipalName"] = json!(format!("{nick}@{AD_DOMAIN}"));
            u["onPremisesDomainName"] = json!(AD_DOMAIN);
            u["onPremisesDistinguishedName"] =
                json!(format!("CN={display} {i},OU=Users,OU=Corp,{AD_BASE_DN}"));
            u["onPremisesLastSyncDateTime"] = json!(LAST_SYNC);
        }
        user_ids.push(id);
        users.push(u);
    }

    let mut group_ids: Vec<String> = Vec::with_capacity(opts.groups);
    let mut kinds: Vec<GroupKind> = Vec::with_capacity(opts.groups);
    let mut groups = Vec::with_capacity(opts.groups);
    let mut synced_rid = 5000;
    for j in 0..opts.groups {
        let id = uuid(&mut rng);
        let large = j < opts.large_groups;
        let r: f64 = rng.random();
        let kind = if r < 0.4 {
            GroupKind::Unified
        } else if r < 0.9 {
            GroupKind::CloudSecurity
        } else {
            GroupKind::SyncedSecurity
        };
        let dept = pick(&mut rng, DEPARTMENTS);
        let topic = pick(&mut rng, TOPICS);
        let display = if large {
            format!("All {dept} {j:05}")
        } else {
            format!("{dept} {topic} {j:05}")
        };
        let nick = display.to_lowercase().replace(' ', "-");
        let mut g = json!({
            "id": id,
            "displayName": display,
            "description": format!("{topic} group for {dept}"),
            "createdDateTime": CREATED,
            "onPremisesSyncEnabled": null,
        });
        match kind {
            GroupKind::Unified => {
                let mail = format!("{nick}@{domain}");
                g["groupTypes"] = json!(["Unified"]);
                g["mailEnabled"] = json!(true);
                g["securityEnabled"] = json!(rng.random_bool(0.2));
                g["mailNickname"] = json!(nick);
                g["mail"] = json!(mail);
                g["proxyAddresses"] = json!([format!("SMTP:{mail}")]);
                g["visibility"] = json!(if rng.random_bool(0.8) {
                    "Public"
                } else {
                    "Private"
                });
                g["renewedDateTime"] = json!(CREATED);
            }
            GroupKind::CloudSecurity | GroupKind::SyncedSecurity => {
                g["groupTypes"] = json!([]);
                g["mailEnabled"] = json!(false);
                g["securityEnabled"] = json!(true);
                g["mailNickname"] = json!(format!("{:08x}", rng.next_u32()));
                g["mail"] = Value::Null;
                g["proxyAddresses"] = json!([]);
            }
        }
        if kind == GroupKind::SyncedSecurity {
            let sam: String = nick.chars().take(64).collect();
            g["onPremisesSyncEnabled"] = json!(true);
            g["onPremisesSecurityIdentifier"] = json!(format!("{domain_sid}-{synced_rid}"));
            g["onPremisesSamAccountName"] = json!(sam);
            g["onPremisesDomainName"] = json!(AD_DOMAIN);
            g["onPremisesNetBiosName"] = json!("CORP");
            g["onPremisesLastSyncDateTime"] = json!(LAST_SYNC);
            synced_rid += 1;
        }
        let size = if large {
            opts.large_size
        } else {
            group_size(&mut rng)
        }
        .min(opts.users);
        let mut picked = rand::seq::index::sample(&mut rng, opts.users, size).into_vec();
        picked.sort_unstable();
        let mut members: Vec<Value> = picked.iter().map(|&u| json!(user_ids[u])).collect();
        // A few security groups nest earlier security groups (never a cycle).
        if kind != GroupKind::Unified && j > 0 && rng.random_bool(0.03) {
            let n = rng.random_range(1..=3);
            for _ in 0..n {
                let child = rng.random_range(0..j);
                if kinds[child] != GroupKind::Unified {
                    let cid = json!(group_ids[child]);
                    if !members.contains(&cid) {
                        members.push(cid);
                    }
                }
            }
        }
        g["members"] = Value::Array(members);
        group_ids.push(id);
        kinds.push(kind);
        groups.push(g);
    }

    json!({
        "tenantId": tenant_id,
        "domain": domain,
        "apps": [{
            "clientId": client_id,
            "clientSecret": secret,
            "displayName": "Writeback",
        }],
        "users": users,
        "groups": groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64) -> GenerateOptions {
        GenerateOptions {
            users: 50,
            groups: 20,
            seed,
            large_groups: 1,
            large_size: 40,
            domain: None,
        }
    }

    #[test]
    fn deterministic() {
        assert_eq!(
            generate(&opts(1)).to_string(),
            generate(&opts(1)).to_string()
        );
        assert_ne!(
            generate(&opts(1)).to_string(),
            generate(&opts(2)).to_string()
        );
    }

    #[test]
    fn loads_as_a_tenant() {
        let t = generate(&opts(3));
        let store = crate::tenant::load(&t, time::OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(store.count(crate::store::Kind::User), 50);
        let synced = t["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["onPremisesSyncEnabled"] == json!(true))
            .count();
        assert_eq!(synced, 25);
        assert_eq!(t["groups"][0]["members"].as_array().unwrap().len(), 40);
    }

    #[test]
    fn some_security_groups_nest_without_cycles() {
        let t = generate(&GenerateOptions {
            users: 100,
            groups: 400,
            seed: 5,
            large_groups: 0,
            large_size: 0,
            domain: None,
        });
        let groups = t["groups"].as_array().unwrap();
        let index: std::collections::HashMap<&str, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g["id"].as_str().unwrap(), i))
            .collect();
        let mut nested = 0;
        for (i, g) in groups.iter().enumerate() {
            for m in g["members"].as_array().unwrap() {
                if let Some(&child) = index.get(m.as_str().unwrap()) {
                    nested += 1;
                    assert!(child < i, "children come earlier: no cycles");
                    assert_ne!(g["groupTypes"], json!(["Unified"]));
                    assert_ne!(groups[child]["groupTypes"], json!(["Unified"]));
                }
            }
        }
        assert!(nested > 0);
    }
}
