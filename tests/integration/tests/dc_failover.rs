//! Several domain controllers (`[ad] urls`): a DC that does not answer is passed over, the
//! next one is used and stays in use, and a connection that drops moves on to the next DC.
//! The second "DC" of each test is the Samba test bed; the broken ones are loopback ports.

use std::net::TcpListener as StdListener;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use writeback::ad::{AdConn, AdSettings};
use writeback_integration::harness::{new_id, security_group, succeeded, Bed};
use writeback_integration::testbed::AdTestbed;

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

/// A port that accepts connections and closes them at once (a DC that is going down).
fn closing_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = l.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    port
}

/// A TCP relay to the test bed's LDAPS port; aborting the handle drops every relayed
/// connection, as a DC that dies would.
async fn relay_to(target: &str) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let port = l.local_addr().expect("relay addr").port();
    let target = target.to_string();
    let handle = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = l.accept().await {
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, handle)
}

fn settings(tb: &AdTestbed, urls: Vec<String>) -> AdSettings {
    AdSettings {
        urls,
        discover: None,
        bind_dn: tb.bind_dn.clone(),
        password: tb.bind_password.clone().into(),
        kerberos: None,
        ca_file: Some(tb.ca_file.clone()),
        starttls: false,
        allow_plain: false,
        timeout: Duration::from_secs(10),
    }
}

/// `ldaps://127.0.0.1:636` -> `127.0.0.1:636`.
fn host_port(url: &str) -> String {
    url.split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(url)
        .to_string()
}

#[tokio::test]
async fn a_sync_passes_over_dcs_that_do_not_answer_and_says_so() {
    let mut bed = Bed::new("wb-failover-sync", 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    bed.seed(vec![], vec![security_group(&id, "Failover", &[])], &[]);
    let config = bed.write_config(None, "", "");
    let dead = format!("ldaps://127.0.0.1:{}", dead_port());
    let closing = format!("ldaps://127.0.0.1:{}", closing_port());
    bed.replace_dc_url(
        &config,
        &format!(
            "urls = [\"{dead}\", \"{closing}\", \"{}\"]",
            bed.ad.ldaps_url
        ),
    );

    let out = bed.run(&["sync", "--json"]);
    let stderr = succeeded(&out);
    let switches: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("switched to another domain controller"))
        .collect();
    assert_eq!(switches.len(), 1, "one switch, logged once:\n{stderr}");
    let line = switches[0];
    for want in [bed.ad.ldaps_url.as_str(), dead.as_str(), closing.as_str()] {
        assert!(line.contains(want), "{want} not in the log line: {line}");
    }
    assert!(
        !stderr.contains(&bed.ad.service_password),
        "the password is in the log"
    );
    let groups = bed.groups().await;
    assert_eq!(groups.len(), 1, "the group was written: {groups:?}");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_dropped_connection_moves_on_to_the_next_dc_and_stays_there() -> Result<()> {
    let tb = AdTestbed::load();
    let (port, relay) = relay_to(&host_port(&tb.ldaps_url)).await;
    let first = format!("ldaps://127.0.0.1:{port}");
    let mut ad = AdConn::connect(&settings(&tb, vec![first.clone(), tb.ldaps_url.clone()]))
        .await
        .context("connect through the relay")?;
    ensure!(ad.url() == first, "the preferred DC answers: {}", ad.url());
    ensure!(ad.highest_committed_usn().await? > 0);

    // The first DC dies: its connection drops and it accepts no new one.
    relay.abort();
    let _ = relay.await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ad.is_closed() {
        ensure!(Instant::now() < deadline, "the drop was not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next operation reconnects, to the next DC.
    ensure!(ad.highest_committed_usn().await? > 0);
    ensure!(ad.url() == tb.ldaps_url, "moved on: {}", ad.url());
    // Sticky: more operations stay on it.
    ensure!(ad.domain_root().await.is_ok());
    ensure!(ad.url() == tb.ldaps_url);

    // A reconnect from the second DC tries the first (dead) one and comes back.
    ad.reconnect().await?;
    ensure!(
        ad.url() == tb.ldaps_url,
        "back on the live DC: {}",
        ad.url()
    );
    ad.close().await;
    Ok(())
}

#[tokio::test]
async fn when_no_dc_answers_the_error_names_each_one() -> Result<()> {
    let tb = AdTestbed::load();
    let a = format!("ldaps://127.0.0.1:{}", dead_port());
    let b = format!("ldaps://127.0.0.1:{}", closing_port());
    let err = AdConn::connect(&settings(&tb, vec![a.clone(), b.clone()]))
        .await
        .err()
        .context("no DC answers: connect must fail")?;
    let text = err.to_string();
    ensure!(err.is_connection_error(), "{err:?}");
    ensure!(text.contains(&a) && text.contains(&b), "{text}");

    // A refused password is not tried on the next DC (that would only lock the account out).
    let mut s = settings(&tb, vec![tb.ldaps_url.clone(), a.clone()]);
    s.password = "Wrong-Passw0rd-123".into();
    let err = AdConn::connect(&s)
        .await
        .err()
        .context("a wrong password must fail")?;
    ensure!(err.rc() == Some(49), "{err:?}");
    ensure!(!err.to_string().contains(&a), "{err}");
    Ok(())
}
