//! Device members against the Samba AD DC and the Graph emulator: a cloud group holding
//! hybrid-joined devices is written with their AD computer objects (found by the SID Entra
//! copied from them), a cloud-only device is reported (`sync`, `explain`, `status`) and not
//! written, and a device leaving the cloud group leaves the AD group on the next sync.

use serde_json::{json, Value};
use writeback_integration::harness::{lowercased, new_id, security_group, Bed};

/// A device as the tenant file seeds it: hybrid-joined (`trustType` ServerAd, the computer's
/// SID) when `sid` is given, else registered in the cloud only.
fn device(id: &str, name: &str, sid: Option<&str>) -> Value {
    let mut d = json!({
        "id": id,
        "deviceId": new_id(),
        "displayName": name,
        "accountEnabled": true,
        "operatingSystem": "Windows",
        "operatingSystemVersion": "10.0.22631.4460",
        "trustType": "AzureAd",
    });
    if let Some(sid) = sid {
        d["trustType"] = json!("ServerAd");
        d["onPremisesSecurityIdentifier"] = json!(sid);
        d["onPremisesSyncEnabled"] = json!(true);
    }
    d
}

/// Runs the binary; returns exit code, stdout, stderr.
fn run(bed: &Bed, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bed.run(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn hybrid_joined_devices_are_written_as_their_computers_and_a_cloud_only_one_is_reported() {
    let mut bed = Bed::new("wb-devices", 1).await;
    bed.create_default_containers().await;
    let tag = &new_id()[..6];
    let (pc1_dn, pc1_sid) = bed.add_computer(&format!("PC1-{tag}")).await;
    let (pc2_dn, pc2_sid) = bed.add_computer(&format!("PC2-{tag}")).await;
    let (g, d1, d2, d3) = (new_id(), new_id(), new_id(), new_id());
    let user = bed.users[0].cloud_id.clone();
    let user_dn = bed.users[0].dn.clone();
    let mut tenant = json!({
        "tenantId": writeback_integration::harness::TENANT_ID,
        "apps": [{
            "clientId": writeback_integration::harness::CLIENT_ID,
            "clientSecret": writeback_integration::harness::CLIENT_SECRET,
        }],
    });
    tenant["users"] = Value::Array(bed.synced_users());
    tenant["devices"] = json!([
        device(&d1, &format!("PC1-{tag}"), Some(&pc1_sid)),
        device(&d2, &format!("PC2-{tag}"), Some(&pc2_sid)),
        device(&d3, "Kiosk tablet", None),
    ]);
    tenant["groups"] = json!([security_group(
        &g,
        "Hybrid Laptops",
        &[&user, &d1, &d2, &d3]
    )]);
    bed.seed_tenant(tenant, &[]);
    bed.write_config(None, "", "");

    let report = bed.run_json(&["sync"], 0);
    assert_eq!(
        bed.group_members(&g).await,
        lowercased(&[&user_dn, &pc1_dn, &pc2_dn]),
        "{report:#}"
    );
    let unresolved: Vec<(String, String, String)> = report["plan"]["unresolved_members"]
        .as_array()
        .unwrap_or_else(|| panic!("no unresolved_members: {report:#}"))
        .iter()
        .map(|u| {
            let s = |k: &str| u[k].as_str().unwrap_or_default().to_string();
            (s("member_id"), s("member_type"), s("reason"))
        })
        .collect();
    assert_eq!(
        unresolved,
        [(
            d3.clone(),
            "device".to_string(),
            "device \"Kiosk tablet\" is not hybrid-joined (trustType AzureAd, no onPremisesSecurityIdentifier)"
                .to_string()
        )],
        "{report:#}"
    );

    // `explain` names the device and why; `status` holds it in the standing total.
    let (code, out, err) = run(&bed, &["explain", &g]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "device {d3}: device \"Kiosk tablet\" is not hybrid-joined"
        )),
        "{out}"
    );
    let (code, out, _) = run(&bed, &["status", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let s: Value = serde_json::from_str(&out).expect("status --json");
    assert_eq!(s["unresolved"], json!({"members": 1, "groups": 1}), "{s:#}");

    // A second sync writes nothing.
    let again = bed.run_json(&["sync"], 0);
    assert_eq!(
        again["plan"]["changes"].as_array().map(Vec::len),
        Some(0),
        "{again:#}"
    );

    // PC2 leaves the cloud group: it leaves the AD group on the next sync.
    bed.graph("DELETE", &format!("/groups/{g}/members/{d2}/$ref"), None)
        .await;
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(
        bed.group_members(&g).await,
        lowercased(&[&user_dn, &pc1_dn]),
        "{report:#}"
    );
    // The computer account itself is untouched.
    assert_eq!(bed.values_of(&pc2_dn, "sAMAccountName").await.len(), 1);
    bed.cleanup().await;
}

/// The unresolved members of a report: (member id, reason).
fn unresolved_reasons(report: &Value) -> Vec<(String, String)> {
    report["plan"]["unresolved_members"]
        .as_array()
        .unwrap_or_else(|| panic!("no unresolved_members: {report:#}"))
        .iter()
        .map(|u| {
            let s = |k: &str| u[k].as_str().unwrap_or_default().to_string();
            (s("member_id"), s("reason"))
        })
        .collect()
}

/// The permissions of an installation registered before device members: no device read.
const WITHOUT_DEVICES: [&str; 3] = [
    "Group.ReadWrite.All",
    "User.ReadWrite.All",
    "GroupMember.ReadWrite.All",
];

#[tokio::test]
async fn without_device_read_all_users_are_written_devices_reported_and_computers_kept() {
    let mut bed = Bed::new("wb-devices-perm", 2).await;
    bed.create_default_containers().await;
    let tag = &new_id()[..6];
    let (pc1_name, pc2_name) = (format!("PC1-{tag}"), format!("PC2-{tag}"));
    let (pc1_dn, pc1_sid) = bed.add_computer(&pc1_name).await;
    let (pc2_dn, pc2_sid) = bed.add_computer(&pc2_name).await;
    let (g, d1, d2) = (new_id(), new_id(), new_id());
    let (u0, u1) = (bed.users[0].cloud_id.clone(), bed.users[1].cloud_id.clone());
    let (u0_dn, u1_dn) = (bed.users[0].dn.clone(), bed.users[1].dn.clone());
    let mut tenant = json!({
        "tenantId": writeback_integration::harness::TENANT_ID,
        "apps": [{
            "clientId": writeback_integration::harness::CLIENT_ID,
            "clientSecret": writeback_integration::harness::CLIENT_SECRET,
        }],
    });
    tenant["users"] = Value::Array(bed.synced_users());
    tenant["devices"] = json!([
        device(&d1, &pc1_name, Some(&pc1_sid)),
        device(&d2, &pc2_name, Some(&pc2_sid)),
    ]);
    tenant["groups"] = json!([security_group(&g, "Fleet", &[&u0, &d1])]);
    bed.seed_tenant(tenant, &[]);
    bed.write_config(None, "", "");

    // Devices readable: PC1 is written with the user.
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(
        bed.group_members(&g).await,
        lowercased(&[&u0_dn, &pc1_dn]),
        "{report:#}"
    );

    // In the cloud: a second user and PC2 join, the group is renamed (compared in full).
    for m in [&u1, &d2] {
        bed.graph(
            "POST",
            &format!("/groups/{g}/members/$ref"),
            Some(json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{m}")})),
        )
        .await;
    }
    bed.graph(
        "PATCH",
        &format!("/groups/{g}"),
        Some(json!({"displayName": "Fleet EU"})),
    )
    .await;
    // The permission is revoked: Graph answers the devices' delta with 403 from the next
    // token on (each `sync` gets its own).
    bed.emulator
        .control("roles", Some(json!({ "roles": WITHOUT_DEVICES })))
        .await;

    // Exit 0, an ok run: members not found are reported, not failures, as for a cloud-only
    // user. The user is written, PC1 stays, PC2 is not written; each device names the
    // permission, and the log says it once.
    let out = bed.run(&["sync", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stderr
            .matches("devices not read: the app lacks Device.Read.All (Graph answered 403)")
            .count(),
        1,
        "{stderr}"
    );
    let report: Value = serde_json::from_str(&stdout).expect("sync --json");
    assert_eq!(
        bed.group_members(&g).await,
        lowercased(&[&u0_dn, &u1_dn, &pc1_dn]),
        "{report:#}"
    );
    let why = "not resolved: devices cannot be read (grant the app Device.Read.All)";
    let mut want = vec![
        (d1.clone(), format!("device \"{pc1_name}\" {why}")),
        (d2.clone(), format!("device \"{pc2_name}\" {why}")),
    ];
    want.sort();
    let mut got = unresolved_reasons(&report);
    got.sort();
    assert_eq!(got, want, "{report:#}");

    let (code, out, err) = run(&bed, &["explain", &g]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!("device {d2}: device \"{pc2_name}\" {why}")),
        "{out}"
    );
    // What a sync would do now: nothing (PC1 kept, not removed).
    assert!(
        out.contains("diff: in step, a sync changes nothing"),
        "PC1 is not to be removed:\n{out}"
    );
    let (code, out, _) = run(&bed, &["status", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let s: Value = serde_json::from_str(&out).expect("status --json");
    assert_eq!(s["unresolved"], json!({"members": 2, "groups": 1}), "{s:#}");

    // Granted: the next sync reads the devices and writes PC2.
    let mut granted: Vec<&str> = WITHOUT_DEVICES.to_vec();
    granted.push("Device.Read.All");
    bed.emulator
        .control("roles", Some(json!({ "roles": granted })))
        .await;
    let report = bed.run_json(&["sync"], 0);
    assert_eq!(
        bed.group_members(&g).await,
        lowercased(&[&u0_dn, &u1_dn, &pc1_dn, &pc2_dn]),
        "{report:#}"
    );
    assert_eq!(unresolved_reasons(&report), [], "{report:#}");
    let (_, out, _) = run(&bed, &["status", "--json"]);
    let s: Value = serde_json::from_str(&out).expect("status --json");
    assert_eq!(s["unresolved"], json!({"members": 0, "groups": 0}), "{s:#}");
    bed.cleanup().await;
}

#[tokio::test]
async fn check_online_warns_when_devices_cannot_be_read_and_passes() {
    let mut bed = Bed::new("wb-devices-check", 1).await;
    bed.create_default_containers().await;
    let (g, d1) = (new_id(), new_id());
    let user = bed.users[0].cloud_id.clone();
    let mut tenant = json!({
        "tenantId": writeback_integration::harness::TENANT_ID,
        "apps": [{
            "clientId": writeback_integration::harness::CLIENT_ID,
            "clientSecret": writeback_integration::harness::CLIENT_SECRET,
        }],
    });
    tenant["users"] = Value::Array(bed.synced_users());
    tenant["devices"] = json!([device(&d1, "Kiosk tablet", None)]);
    tenant["groups"] = json!([security_group(&g, "Kiosks", &[&user, &d1])]);
    let roles = WITHOUT_DEVICES.join(",");
    bed.seed_tenant(tenant, &["--app-roles", &roles]);
    bed.write_config(None, "", "");

    // A warning, not a failure: a sync works without the permission.
    let (code, out, err) = run(&bed, &["check", "--online"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("Graph devices delta"))
        .unwrap_or_default();
    assert!(
        line.starts_with("WARNING: Graph devices delta")
            && line.contains("not readable, the app lacks Device.Read.All (Graph answered 403)")
            && line.contains("1 group(s) on the groups' first page hold devices"),
        "{out}\n{err}"
    );

    let mut granted: Vec<&str> = WITHOUT_DEVICES.to_vec();
    granted.push("Device.Read.All");
    bed.emulator
        .control("roles", Some(json!({ "roles": granted })))
        .await;
    let (code, out, err) = run(&bed, &["check", "--online"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(
            "ok: Graph devices delta, first page (device members, `Device.Read.All`): 1 devices"
        ),
        "{out}\n{err}"
    );
    bed.cleanup().await;
}
