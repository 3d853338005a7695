//! The test bed's second forest (forest B, `FABRIKAM.EXAMPLE.TEST`): it serves next to forest A,
//! is a domain of its own (realm, base DN, SID, CA), holds what is created in it and nothing of
//! forest A's, and a test can stop and start its DC while forest A serves on.
//!
//! Needs both forests: `tests/testbed/samba-ad.sh up` and `tests/testbed/samba-ad.sh --forest b
//! up`, with `WRITEBACK_TESTBED_B_ENV` naming forest B's settings (`make test` does all three).

use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly};
use ldap3::{Ldap, LdapConnAsync, Scope, SearchEntry};
use writeback_integration::harness::{create_onprem_user, ForestBed, OnPremUser};
use writeback_integration::testbed::AdTestbed;

const FOREST_B_BASE_DN: &str = "DC=fabrikam,DC=example,DC=test";
const ANSWER: Duration = Duration::from_secs(5);

/// The rootDSE's value of `attr`.
async fn root_dse(ldap: &mut Ldap, attr: &str) -> String {
    let (rs, _) = ldap
        .search("", Scope::Base, "(objectClass=*)", vec![attr])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("rootDSE {attr}: {e}"));
    let mut entry = SearchEntry::construct(rs.into_iter().next().expect("rootDSE entry"));
    entry
        .attrs
        .remove(attr)
        .and_then(|v| v.into_iter().next())
        .unwrap_or_else(|| panic!("the rootDSE has no {attr}"))
}

/// The DN of the object whose SID is `sid`, when the domain `ldap` is bound to holds it.
async fn dn_of_sid(ldap: &mut Ldap, sid: &str) -> Option<String> {
    let res = ldap
        .search(
            &format!("<SID={sid}>"),
            Scope::Base,
            "(objectClass=*)",
            vec!["1.1"],
        )
        .await
        .unwrap_or_else(|e| panic!("search <SID={sid}>: {e}"));
    match res.1.rc {
        0 => res
            .0
            .into_iter()
            .next()
            .map(|e| SearchEntry::construct(e).dn),
        32 => None,
        rc => panic!("search <SID={sid}> returned {rc}: {}", res.1),
    }
}

/// DNs of the entries with `sAMAccountName=<sam>` anywhere below `base`.
async fn dns_with_sam(ldap: &mut Ldap, base: &str, sam: &str) -> Vec<String> {
    let adapters: Vec<Box<dyn Adapter<&str, Vec<&str>>>> = vec![Box::new(EntriesOnly::new())];
    let filter = format!("(sAMAccountName={})", ldap3::ldap_escape(sam));
    let mut stream = ldap
        .streaming_search_with(adapters, base, Scope::Subtree, &filter, vec!["1.1"])
        .await
        .unwrap_or_else(|e| panic!("search {base} for {sam}: {e}"));
    let mut dns = Vec::new();
    while let Some(entry) = stream
        .next()
        .await
        .unwrap_or_else(|e| panic!("search {base} for {sam}: {e}"))
    {
        dns.push(SearchEntry::construct(entry).dn);
    }
    stream
        .finish()
        .await
        .success()
        .unwrap_or_else(|e| panic!("search {base} for {sam}: {e}"));
    dns
}

/// `CN=User 0 u1a2b3c4d0,OU=...` -> `u1a2b3c4d0`.
fn sam_of(user: &OnPremUser) -> String {
    let cn = user.dn.split(',').next().expect("the user's RDN");
    cn.rsplit(' ')
        .next()
        .expect("sAMAccountName in the CN")
        .to_string()
}

#[tokio::test]
async fn both_forests_answer_at_once_each_a_domain_of_its_own() {
    let a = AdTestbed::load();
    let b = AdTestbed::forest_b();
    assert_eq!(a.forest, "a");
    assert_eq!(b.forest, "b");
    assert_ne!(a.ip, b.ip, "the forests must listen on different addresses");
    assert_eq!(b.base_dn, FOREST_B_BASE_DN);
    assert_eq!(b.realm, "FABRIKAM.EXAMPLE.TEST");
    assert_eq!(a.realm, "CORP.EXAMPLE.TEST");

    // Both connected and bound at the same time.
    let (mut la, mut lb) = tokio::join!(a.connect_ldaps(), b.connect_ldaps());
    for (tb, ldap) in [(&a, &mut la), (&b, &mut lb)] {
        let naming = root_dse(ldap, "defaultNamingContext").await;
        assert!(
            naming.eq_ignore_ascii_case(&tb.base_dn),
            "{} serves {naming}, not {}",
            tb.ldaps_url,
            tb.base_dn
        );
        // A forest of its own: its domain is the forest root, not a child of the other.
        let root = root_dse(ldap, "rootDomainNamingContext").await;
        assert!(root.eq_ignore_ascii_case(&tb.base_dn), "forest root {root}");
        let service = root_dse(ldap, "ldapServiceName").await;
        assert!(
            service.ends_with(&format!("@{}", tb.realm)),
            "{} names the realm {service}, not {}",
            tb.ldaps_url,
            tb.realm
        );
    }
    let _ = la.unbind().await;
    let _ = lb.unbind().await;

    let (sid_a, sid_b) = tokio::join!(a.domain_sid(), b.domain_sid());
    assert_ne!(sid_a, sid_b, "two forests, two domain SIDs");

    // Each forest has its own CA: forest B's does not vouch for forest A's DC.
    let crossed = LdapConnAsync::with_settings(b.conn_settings(), &a.ldaps_url).await;
    assert!(
        crossed.is_err(),
        "forest A's certificate verified against forest B's CA ({})",
        b.ca_file.display()
    );
}

#[tokio::test]
async fn a_user_made_in_forest_b_is_found_in_b_and_not_in_a() {
    let mut fb = ForestBed::new("wb-forest-b-user", 0).await;
    let user = fb.add_user().await;
    let a = AdTestbed::load();

    let sid_b = fb.ad.domain_sid().await;
    let sid_a = a.domain_sid().await;
    assert!(
        user.sid.starts_with(&format!("{sid_b}-")),
        "{} is not a SID of forest B's domain {sid_b}",
        user.sid
    );
    assert!(!user.sid.starts_with(&format!("{sid_a}-")));

    let sam = sam_of(&user);
    assert_eq!(
        dn_of_sid(&mut fb.ldap, &user.sid).await.as_deref(),
        Some(user.dn.as_str())
    );
    assert_eq!(
        dns_with_sam(&mut fb.ldap, &fb.ad.base_dn, &sam).await,
        vec![user.dn.clone()]
    );

    let mut la = a.connect_ldaps().await;
    assert_eq!(dn_of_sid(&mut la, &user.sid).await, None);
    assert!(dns_with_sam(&mut la, &a.base_dn, &sam).await.is_empty());
    let _ = la.unbind().await;
    fb.cleanup().await;
}

#[tokio::test]
async fn forest_b_stops_and_starts_again_while_forest_a_serves_on() {
    let mut fb = ForestBed::new("wb-forest-b-restart", 1).await;
    let user = fb.users[0].clone();
    let a = AdTestbed::load();
    assert!(fb.ad.answers(ANSWER).await, "forest B does not answer");
    assert!(a.answers(ANSWER).await, "forest A does not answer");
    let pid_before = fb.ad.pid;

    let stopped = fb.stop_dc();
    assert!(
        !fb.ad.answers(Duration::from_secs(2)).await,
        "forest B still answers after its DC was stopped"
    );
    // Forest A reads and writes as before.
    assert!(a.answers(ANSWER).await, "forest A stopped answering with B");
    let in_a = a
        .with_scratch_ou("wb-forest-b-a", |mut ldap, ou| async move {
            let made = create_onprem_user(&mut ldap, &ou, 0).await;
            dn_of_sid(&mut ldap, &made.sid).await
        })
        .await;
    assert!(in_a.is_some(), "a user written to forest A is not there");

    fb.start_dc(stopped).await;
    assert!(fb.ad.answers(ANSWER).await, "forest B did not come back");
    assert_ne!(fb.ad.pid, pid_before, "a new samba process serves forest B");
    // Same instance: what was there before the stop still is.
    assert_eq!(
        dn_of_sid(&mut fb.ldap, &user.sid).await.as_deref(),
        Some(user.dn.as_str()),
        "forest B lost its data over the restart"
    );
    let more = fb.add_user().await;
    assert!(more
        .sid
        .starts_with(&format!("{}-", fb.ad.domain_sid().await)));
    assert!(a.answers(ANSWER).await);
    fb.cleanup().await;
}
