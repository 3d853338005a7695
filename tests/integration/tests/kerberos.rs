//! `[ad] auth = "kerberos"`: the `writeback` binary binds with the service account's keys from
//! a keytab (SASL GSSAPI over LDAPS), its ticket from the Samba DC's own KDC on 127.0.0.1:88.
//! The DC is reached by its name `dc1.corp.example.test` (its SPN is `ldap/<name>`), found
//! through `[ad] discover` and a loopback name server, so the system's resolver is left alone.
//!
//! Built only with the `kerberos` feature (`--features writeback-integration/kerberos`), as
//! the binary under test must be.
#![cfg(feature = "kerberos")]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use writeback_integration::dns::{DnsServer, Srv, Zone};
use writeback_integration::harness::{
    new_id, security_group, succeeded, writeback_bin, Bed, CLIENT_SECRET,
};

const DOMAIN: &str = "corp.example.test";
const DC_NAME: &str = "dc1.corp.example.test";

/// CORP.EXAMPLE.TEST from DC=corp,DC=example,DC=test.
fn realm(base_dn: &str) -> String {
    base_dn
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("DC="))
        .collect::<Vec<_>>()
        .join(".")
        .to_ascii_uppercase()
}

/// A krb5.conf naming the test bed's KDC by address: no DNS, no reverse lookups, the host
/// name taken as given.
fn write_krb5_conf(path: &Path, realm: &str) {
    let text = format!(
        "[libdefaults]\n\
         \tdefault_realm = {realm}\n\
         \tdns_lookup_kdc = false\n\
         \tdns_lookup_realm = false\n\
         \trdns = false\n\
         \tdns_canonicalize_hostname = false\n\
         [realms]\n\
         \t{realm} = {{\n\t\tkdc = 127.0.0.1\n\t}}\n\
         [domain_realm]\n\
         \t.{DOMAIN} = {realm}\n\
         \t{DOMAIN} = {realm}\n"
    );
    std::fs::write(path, text).expect("write krb5.conf");
}

#[tokio::test]
async fn a_sync_binds_with_a_keytab_over_ldaps_and_writes_the_group() {
    sync_with_kerberos("wb-kerberos-tls", "").await;
}

/// StartTLS on the SRV record's port 389 (`ldap://dc1.corp.example.test:389`).
#[tokio::test]
async fn a_sync_binds_with_a_keytab_over_starttls() {
    sync_with_kerberos("wb-kerberos-starttls", "starttls = true\n").await;
}

/// Syncs one group with a Kerberos bind; `extra_ad` goes into `[ad]`.
async fn sync_with_kerberos(prefix: &str, extra_ad: &str) {
    let mut bed = Bed::new(prefix, 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    bed.seed(vec![], vec![security_group(&id, "Kerberos", &[])], &[]);
    let realm = realm(&bed.ad.base_dn);
    let principal = format!("{}@{realm}", bed.ad.service_account);

    let keytab = bed.dir.path().join("svc-writeback.keytab");
    let conf = bed.ad.instance_dir.join("etc/smb.conf");
    let out = Command::new("samba-tool")
        .args(["domain", "exportkeytab"])
        .arg(&keytab)
        .arg(format!("--principal={principal}"))
        .arg("-s")
        .arg(&conf)
        .output()
        .expect("run samba-tool");
    assert!(
        out.status.success() && keytab.exists(),
        "exportkeytab failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Readable by the service only, as the host requires of a keytab.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keytab, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let krb5_conf = bed.dir.path().join("krb5.conf");
    write_krb5_conf(&krb5_conf, &realm);
    let dns = DnsServer::start(
        Zone::default()
            .with_srv(
                &format!("_ldap._tcp.dc._msdcs.{DOMAIN}"),
                vec![Srv {
                    priority: 0,
                    weight: 100,
                    port: 389,
                    target: DC_NAME.into(),
                }],
            )
            .with_a(DC_NAME, Ipv4Addr::LOCALHOST),
    );

    let config = bed.write_config(None, "", "");
    let text = std::fs::read_to_string(&config).expect("read config");
    let url = format!("url = \"{}\"\n", bed.ad.ldaps_url);
    let bind = format!("bind_dn = \"{}\"\n", bed.ad.service_dn);
    let password = "password_env = \"WRITEBACK_TEST_AD_PASSWORD\"\n";
    for line in [&url, &bind, password] {
        assert!(text.contains(line), "the bed's config has no {line}");
    }
    let text = text
        .replace(
            &url,
            &format!(
                "discover = \"{DOMAIN}\"\ndns_servers = [\"{}\"]\n",
                dns.addr
            ),
        )
        .replace(
            &bind,
            &format!(
                "auth = \"kerberos\"\nprincipal = \"{principal}\"\nkeytab = \"{}\"\n{extra_ad}",
                keytab.display()
            ),
        )
        .replace(password, "");
    std::fs::write(&config, text).expect("write config");

    // No password anywhere: the keytab is the only credential.
    let out = Command::new(writeback_bin())
        .arg("--config")
        .arg(&config)
        .args(["sync", "--json"])
        .env("KRB5_CONFIG", &krb5_conf)
        .env_remove("KRB5CCNAME")
        .env_remove("WRITEBACK_TEST_AD_PASSWORD")
        .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
        .output()
        .expect("run writeback");
    succeeded(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let actions: Vec<&str> = report["plan"]["changes"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(actions, ["create"], "{report}");
    assert_eq!(bed.groups().await.len(), 1, "the group was written");
    bed.cleanup().await;
}
