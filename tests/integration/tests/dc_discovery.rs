//! `[ad] discover`: the DCs come from DNS SRV records (`_ldap._tcp.dc._msdcs.<domain>`),
//! asked of a loopback name server (`ad.dns_servers`), in RFC 2782 order; a DC that DNS lists
//! but that does not answer is passed over. The live DC is the Samba test bed, by its name
//! `dc1.corp.example.test` (which its certificate carries); the dead one is 127.0.0.2.

use std::net::Ipv4Addr;

use writeback::ad::discover::{self, Discovery};
use writeback_integration::dns::{DnsServer, Srv, Zone};
use writeback_integration::harness::{new_id, security_group, succeeded, Bed};

const DOMAIN: &str = "corp.example.test";
const SRV_NAME: &str = "_ldap._tcp.dc._msdcs.corp.example.test";

fn srv(priority: u16, weight: u16, target: &str) -> Srv {
    Srv {
        priority,
        weight,
        port: 389,
        target: target.to_string(),
    }
}

fn zone() -> Zone {
    Zone::default()
        .with_srv(
            SRV_NAME,
            vec![
                srv(10, 100, "dc1.corp.example.test"),
                srv(0, 0, "dc0.corp.example.test"),
                srv(20, 0, "."),
            ],
        )
        .with_a("dc0.corp.example.test", Ipv4Addr::new(127, 0, 0, 2))
        .with_a("dc1.corp.example.test", Ipv4Addr::LOCALHOST)
}

#[tokio::test]
async fn srv_records_are_read_in_priority_order_and_names_resolved_by_the_same_servers() {
    let dns = DnsServer::start(zone());
    let d = Discovery {
        domain: DOMAIN.into(),
        servers: vec![dns.addr],
    };
    let r = discover::resolver(&d, std::time::Duration::from_secs(5)).expect("resolver");
    let found = discover::lookup(&d, &r).await.expect("SRV lookup");
    let names: Vec<&str> = found.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(names, ["dc0.corp.example.test", "dc1.corp.example.test"]);
    assert_eq!(found[0].port, 389);
    let ips = discover::addresses(&d, &r, "dc1.corp.example.test")
        .await
        .expect("A lookup");
    assert_eq!(ips, [std::net::IpAddr::from(Ipv4Addr::LOCALHOST)]);

    let missing = Discovery {
        domain: "nowhere.example.test".into(),
        servers: vec![dns.addr],
    };
    let e = discover::lookup(&missing, &r)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere.example.test"), "{e}");
}

#[tokio::test]
async fn a_sync_finds_the_dcs_in_dns_and_passes_over_one_that_does_not_answer() {
    let dns = DnsServer::start(zone());
    let mut bed = Bed::new("wb-discover-sync", 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    bed.seed(vec![], vec![security_group(&id, "Discovered", &[])], &[]);
    let config = bed.write_config(None, "", "");
    bed.replace_dc_url(
        &config,
        &format!("discover = \"{DOMAIN}\"\ndns_servers = [\"{}\"]", dns.addr),
    );

    let out = bed.run(&["sync", "--json"]);
    let stderr = succeeded(&out);
    let switch = stderr
        .lines()
        .find(|l| l.contains("switched to another domain controller"))
        .unwrap_or_else(|| panic!("no switch logged:\n{stderr}"));
    assert!(
        switch.contains("ldaps://dc1.corp.example.test:636")
            && switch.contains("ldaps://dc0.corp.example.test:636"),
        "{switch}"
    );
    assert_eq!(bed.groups().await.len(), 1, "the group was written");
    bed.cleanup().await;
}
