//! `[ad] discover`: the DCs come from DNS SRV records (`_ldap._tcp.dc._msdcs.<domain>`),
//! asked of a loopback name server (`ad.dns_servers`), in RFC 2782 order; a DC that DNS lists
//! but that does not answer is passed over; a DNS answer naming a host outside the domain is
//! never contacted, even when that host's certificate would pass. The live DC is the Samba test
//! bed, by its name `dc1.corp.example.test` (which its certificate carries, with `localhost`);
//! the dead one is 127.0.0.2.

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
        allowed_domains: vec![],
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
        allowed_domains: vec![],
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

/// Connections accepted on a loopback listener, counted until it is dropped.
struct Listener {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind listener");
        let port = l.local_addr().expect("listener addr").port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        Listener { port, accepted }
    }
    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_dns_answer_naming_a_host_outside_the_domain_gets_no_connection_and_no_bind() {
    // `localhost` is outside corp.example.test, and the test bed's certificate names it: today's
    // trust in the CA alone would let the bind through. A second target, on a listener that
    // counts connections, stands for an attacker's host over StartTLS.
    let trap = Listener::start();
    let dns = DnsServer::start(
        Zone::default()
            .with_srv(
                SRV_NAME,
                vec![
                    srv(1, 0, "localhost"),
                    Srv {
                        priority: 0,
                        weight: 0,
                        port: trap.port,
                        target: "dc.attacker.example".into(),
                    },
                ],
            )
            .with_a("localhost", Ipv4Addr::LOCALHOST)
            .with_a("dc.attacker.example", Ipv4Addr::LOCALHOST),
    );
    let mut bed = Bed::new("wb-discover-outside", 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    bed.seed(vec![], vec![security_group(&id, "Spoofed", &[])], &[]);
    let config = bed.write_config(None, "", "");
    bed.replace_dc_url(
        &config,
        &format!("discover = \"{DOMAIN}\"\ndns_servers = [\"{}\"]", dns.addr),
    );
    let out = bed.run(&["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "the sync went through:\n{stderr}");
    assert!(
        stderr.contains("outside corp.example.test")
            && stderr.contains("localhost")
            && stderr.contains("dc.attacker.example"),
        "the error names the refused targets:\n{stderr}"
    );
    assert!(bed.groups().await.is_empty(), "a group was written");

    // Over StartTLS the record's own port is used: the listener sees no connection at all.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, text.replace("ca_file", "starttls = true\nca_file")).expect("write");
    let out = bed.run(&["sync"]);
    assert!(!out.status.success());
    assert_eq!(
        trap.accepted(),
        0,
        "a host outside the domain was contacted"
    );

    // Allowed on purpose, the same answer is followed (the test bed's certificate names
    // localhost): the allow-list is what decides.
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(
        &config,
        text.replace("starttls = true\n", "").replace(
            "ca_file",
            "discover_allowed_domains = [\"localhost\"]\nca_file",
        ),
    )
    .expect("write config");
    let out = bed.run(&["sync"]);
    succeeded(&out);
    assert_eq!(bed.groups().await.len(), 1, "the group was written");
    assert_eq!(trap.accepted(), 0);
    bed.cleanup().await;
}
