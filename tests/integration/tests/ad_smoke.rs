//! Smoke tests of the Samba AD test bed: what the AD connector relies on works there.
//! TLS with CA verification, a mail-enabled universal security group with the extended-schema
//! attributes, objectGUID read-back, paged search and ranged `member` retrieval.
//!
//! Needs the test bed: `tests/testbed/samba-ad.sh up`.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::{self, ControlType};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use writeback_integration::testbed::AdTestbed;

/// Universal security group (ADS_GROUP_TYPE_UNIVERSAL_GROUP | ADS_GROUP_TYPE_SECURITY_ENABLED).
const UNIVERSAL_SECURITY: &str = "-2147483640";
/// AD's MaxValRange: the size of one `member;range=` slice.
const RANGE_SIZE: usize = 1500;
/// Members of the large group: more than one range.
const LARGE_GROUP_MEMBERS: usize = 1600;
const PAGE_SIZE: i32 = 250;

/// One base-scope read of `dn`; `None` when it does not exist.
async fn read_entry(ldap: &mut Ldap, dn: &str, attrs: Vec<&str>) -> Result<Option<SearchEntry>> {
    let res = ldap
        .search(dn, Scope::Base, "(objectClass=*)", attrs)
        .await
        .with_context(|| format!("search {dn}"))?;
    if res.1.rc == 32 {
        return Ok(None);
    }
    let (entries, _) = res.success().with_context(|| format!("search {dn}"))?;
    Ok(entries.into_iter().next().map(SearchEntry::construct))
}

/// The string form of an objectGUID as AD prints it (first three fields little-endian).
fn guid_string(b: &[u8]) -> Result<String> {
    ensure!(
        b.len() == 16,
        "objectGUID has {} bytes, expected 16",
        b.len()
    );
    let hex = |range: &[u8]| range.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let rev = |range: &[u8]| hex(&range.iter().rev().copied().collect::<Vec<_>>());
    Ok(format!(
        "{}-{}-{}-{}-{}",
        rev(&b[0..4]),
        rev(&b[4..6]),
        rev(&b[6..8]),
        hex(&b[8..10]),
        hex(&b[10..16])
    ))
}

/// `(objectGUID=\xx\xx...)` filter value for raw bytes.
fn escaped_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

async fn base_dn_answers(ldap: &mut Ldap, tb: &AdTestbed) -> Result<()> {
    let entry = read_entry(ldap, &tb.base_dn, vec!["objectGUID"])
        .await?
        .context("base DN not found")?;
    ensure!(
        entry.dn.eq_ignore_ascii_case(&tb.base_dn),
        "got {}",
        entry.dn
    );
    Ok(())
}

#[tokio::test]
async fn ldaps_verifies_the_dc_certificate_against_the_testbed_ca() -> Result<()> {
    let tb = AdTestbed::load();
    let mut ldap = tb.connect_ldaps().await;
    base_dn_answers(&mut ldap, &tb).await?;
    ldap.unbind().await?;

    // Without the test bed's CA (system roots only) the handshake must fail verification.
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(10));
    match LdapConnAsync::with_settings(settings, &tb.ldaps_url).await {
        Ok(_) => bail!("LDAPS without the test bed CA was accepted"),
        Err(e) => {
            let msg = e.to_string();
            ensure!(
                msg.contains("certificate") || msg.contains("UnknownIssuer"),
                "expected a certificate verification error, got: {msg}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn starttls_verifies_the_dc_certificate_against_the_testbed_ca() -> Result<()> {
    let tb = AdTestbed::load();
    let mut ldap = tb.connect_starttls().await;
    base_dn_answers(&mut ldap, &tb).await?;
    ldap.unbind().await?;

    let settings = LdapConnSettings::new()
        .set_conn_timeout(Duration::from_secs(10))
        .set_starttls(true);
    ensure!(
        LdapConnAsync::with_settings(settings, &tb.ldap_url)
            .await
            .is_err(),
        "StartTLS without the test bed CA was accepted"
    );
    Ok(())
}

#[tokio::test]
async fn universal_security_group_round_trip() -> Result<()> {
    let tb = AdTestbed::load();
    tb.with_scratch_ou("ad-smoke-group", |mut ldap, ou| async move {
        let anchor = "Group_0b1e5c2a-7d3f-4a8e-9c61-2f4d8e7a1b90";
        let dn = format!("CN=Smoke Security,{ou}");
        let proxies = HashSet::from([
            "SMTP:smoke-security@corp.example.test",
            "smtp:smoke-security@corp.mail.onmicrosoft.com",
        ]);
        let attrs = vec![
            ("objectClass", HashSet::from(["top", "group"])),
            ("cn", HashSet::from(["Smoke Security"])),
            ("sAMAccountName", HashSet::from(["wb-smoke-sec-1"])),
            ("groupType", HashSet::from([UNIVERSAL_SECURITY])),
            ("mail", HashSet::from(["smoke-security@corp.example.test"])),
            ("proxyAddresses", proxies.clone()),
            ("adminDescription", HashSet::from([anchor])),
            ("msDS-ExternalDirectoryObjectId", HashSet::from([anchor])),
            ("mailNickname", HashSet::from(["smoke-security"])),
            // MailUniversalSecurityGroup
            ("msExchRecipientDisplayType", HashSet::from(["1073741833"])),
            ("msExchRecipientTypeDetails", HashSet::from(["262144"])),
        ];
        ldap.add(&dn, attrs).await?.success().context("add group")?;

        let read = vec![
            "groupType",
            "mail",
            "proxyAddresses",
            "adminDescription",
            "msDS-ExternalDirectoryObjectId",
            "mailNickname",
            "msExchRecipientDisplayType",
            "msExchRecipientTypeDetails",
            "sAMAccountName",
            "objectGUID",
        ];
        let entry = read_entry(&mut ldap, &dn, read.clone())
            .await?
            .context("group not found after add")?;
        let one = |name: &str| -> Result<String> {
            match entry.attrs.get(name).map(Vec::as_slice) {
                Some([v]) => Ok(v.clone()),
                other => bail!("{name}: expected one value, got {other:?}"),
            }
        };
        ensure!(one("groupType")? == UNIVERSAL_SECURITY);
        ensure!(one("mail")? == "smoke-security@corp.example.test");
        ensure!(one("adminDescription")? == anchor);
        ensure!(one("msDS-ExternalDirectoryObjectId")? == anchor);
        ensure!(one("mailNickname")? == "smoke-security");
        ensure!(one("msExchRecipientDisplayType")? == "1073741833");
        ensure!(one("msExchRecipientTypeDetails")? == "262144");
        ensure!(one("sAMAccountName")? == "wb-smoke-sec-1");
        let got: BTreeSet<&str> = entry.attrs["proxyAddresses"]
            .iter()
            .map(String::as_str)
            .collect();
        ensure!(
            got == proxies.into_iter().collect(),
            "proxyAddresses {got:?}"
        );

        // objectGUID: 16 raw bytes; both the <GUID=...> base and an escaped filter find the group.
        let guid = entry
            .bin_attrs
            .get("objectGUID")
            .and_then(|v| v.first())
            .context("objectGUID not returned")?
            .clone();
        let by_guid = read_entry(&mut ldap, &format!("<GUID={}>", guid_string(&guid)?), read)
            .await?
            .context("<GUID=...> base search found nothing")?;
        ensure!(
            by_guid.dn.eq_ignore_ascii_case(&dn),
            "GUID search: {}",
            by_guid.dn
        );
        let filter = format!("(objectGUID={})", escaped_bytes(&guid));
        let (hits, _) = ldap
            .search(&ou, Scope::Subtree, &filter, vec!["1.1"])
            .await?
            .success()?;
        ensure!(hits.len() == 1, "objectGUID filter: {} hits", hits.len());
        let anchored = format!("(msDS-ExternalDirectoryObjectId={anchor})");
        let (hits, _) = ldap
            .search(&ou, Scope::Subtree, &anchored, vec!["1.1"])
            .await?
            .success()?;
        ensure!(hits.len() == 1, "anchor filter: {} hits", hits.len());

        ldap.delete(&dn).await?.success().context("delete group")?;
        ensure!(
            read_entry(&mut ldap, &dn, vec!["1.1"]).await?.is_none(),
            "group still there after delete"
        );
        Ok(())
    })
    .await
}

/// Adds `count` contacts `CN=c0000..` under `ou` over a few concurrent operations.
async fn add_contacts(ldap: &Ldap, ou: &str, count: usize) -> Result<Vec<String>> {
    let dns: Vec<String> = (0..count).map(|i| format!("CN=c{i:04},{ou}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in dns.chunks(count.div_ceil(4)) {
        let mut ldap = ldap.clone();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for dn in chunk {
                let attrs = vec![("objectClass", HashSet::from(["top", "contact"]))];
                ldap.add(&dn, attrs)
                    .await?
                    .success()
                    .with_context(|| format!("add {dn}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(dns)
}

/// All values of a multi-valued attribute, read in explicit ranges (`attr;range=lo-hi`) until
/// the server marks the last slice with `;range=lo-*`. Returns the values and the attribute
/// names of the slices as the server sent them.
async fn ranged_values(
    ldap: &mut Ldap,
    dn: &str,
    attr: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut values = Vec::new();
    let mut slices = Vec::new();
    let mut low = 0;
    loop {
        let wanted = format!("{attr};range={low}-{}", low + RANGE_SIZE - 1);
        let entry = read_entry(ldap, dn, vec![wanted.as_str()])
            .await?
            .with_context(|| format!("{dn} not found"))?;
        let prefix = format!("{}{}", attr.to_ascii_lowercase(), ";range=");
        let (name, slice) = entry
            .attrs
            .into_iter()
            .find(|(k, _)| k.to_ascii_lowercase().starts_with(&prefix))
            .with_context(|| format!("no {attr};range=... in the answer to {wanted}"))?;
        let bounds = &name[prefix.len()..];
        let (start, end) = bounds
            .split_once('-')
            .with_context(|| format!("bad range {name}"))?;
        ensure!(start.parse::<usize>()? == low, "asked {wanted}, got {name}");
        values.extend(slice);
        slices.push(name.clone());
        if end == "*" {
            return Ok((values, slices));
        }
        low = end.parse::<usize>()? + 1;
        ensure!(slices.len() < 100, "range retrieval does not end");
    }
}

#[tokio::test]
async fn paged_search_and_ranged_member_retrieval() -> Result<()> {
    let tb = AdTestbed::load();
    tb.with_scratch_ou("ad-smoke-large", |mut ldap, ou| async move {
        let started = Instant::now();
        let contacts = add_contacts(&ldap, &ou, LARGE_GROUP_MEMBERS).await?;
        eprintln!(
            "added {} contacts in {:?}",
            contacts.len(),
            started.elapsed()
        );

        let group = format!("CN=Smoke Large,{ou}");
        let attrs = vec![
            ("objectClass", HashSet::from(["top", "group"])),
            ("groupType", HashSet::from([UNIVERSAL_SECURITY])),
        ];
        ldap.add(&group, attrs)
            .await?
            .success()
            .context("add group")?;
        let started = Instant::now();
        for batch in contacts.chunks(400) {
            let members: HashSet<&str> = batch.iter().map(String::as_str).collect();
            ldap.modify(&group, vec![Mod::Add("member", members)])
                .await?
                .success()
                .context("add members")?;
        }
        eprintln!(
            "added {} members in {:?}",
            contacts.len(),
            started.elapsed()
        );

        // Paged search through the adapter: every contact, over several pages.
        let adapters: Vec<Box<dyn Adapter<&str, Vec<&str>>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        let mut stream = ldap
            .streaming_search_with(
                adapters,
                &ou,
                Scope::Subtree,
                "(objectClass=contact)",
                vec!["cn"],
            )
            .await?;
        let mut found = 0usize;
        while let Some(entry) = stream.next().await? {
            ensure!(!entry.is_ref(), "referral passed EntriesOnly");
            found += 1;
        }
        stream.finish().await.success()?;
        ensure!(found == LARGE_GROUP_MEMBERS, "paged search found {found}");
        ensure!(found > PAGE_SIZE as usize);

        // One page by hand: the server honours the page size and hands back a cookie.
        let (page, result) = ldap
            .with_controls(controls::PagedResults {
                size: PAGE_SIZE,
                cookie: Vec::new(),
            })
            .search(&ou, Scope::Subtree, "(objectClass=contact)", vec!["1.1"])
            .await?
            .success()?;
        ensure!(
            page.len() == PAGE_SIZE as usize,
            "first page has {} entries",
            page.len()
        );
        let cookie = result
            .ctrls
            .iter()
            .find(|c| matches!(c.0, Some(ControlType::PagedResults)))
            .map(|c| c.1.parse::<controls::PagedResults>().cookie)
            .context("no paged results control in the response")?;
        ensure!(!cookie.is_empty(), "first page came without a cookie");

        // Ranged member retrieval: 0-1499, then 1500-2999 answered as 1500-*.
        let started = Instant::now();
        let (members, slices) = ranged_values(&mut ldap, &group, "member").await?;
        eprintln!(
            "read {} members in {slices:?} in {:?}",
            members.len(),
            started.elapsed()
        );
        ensure!(
            slices == ["member;range=0-1499", "member;range=1500-*"],
            "slices {slices:?}"
        );
        let got: BTreeSet<String> = members.iter().map(|m| m.to_ascii_lowercase()).collect();
        let want: BTreeSet<String> = contacts.iter().map(|m| m.to_ascii_lowercase()).collect();
        ensure!(
            members.len() == LARGE_GROUP_MEMBERS,
            "{} member values",
            members.len()
        );
        ensure!(got == want, "member values differ from the contacts added");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn scratch_ou_is_deleted_even_when_the_test_body_panics() -> Result<()> {
    let tb = AdTestbed::load();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let helper = tb.clone();
    let run = tokio::spawn(async move {
        helper
            .with_scratch_ou("ad-smoke-panic", |mut ldap, ou| async move {
                // Nested entries, so the tree delete has to go deepest first.
                let sub = format!("OU=nested,{ou}");
                writeback_integration::testbed::create_ou(&mut ldap, &sub).await;
                let group = vec![("objectClass", HashSet::from(["top", "group"]))];
                let added = ldap.add(&format!("CN=inner,{sub}"), group).await;
                let _ = tx.send((ou, added.map(|r| r.rc)));
                panic!("deliberate panic inside the scratch OU");
            })
            .await
    });
    let joined = run.await;
    ensure!(
        matches!(&joined, Err(e) if e.is_panic()),
        "the body's panic was not propagated"
    );
    let (ou, added) = rx.await?;
    ensure!(matches!(added, Ok(0)), "adding the nested group: {added:?}");
    let mut ldap = tb.connect_ldaps().await;
    ensure!(
        read_entry(&mut ldap, &ou, vec!["1.1"]).await?.is_none(),
        "{ou} survived the panic"
    );
    Ok(())
}
