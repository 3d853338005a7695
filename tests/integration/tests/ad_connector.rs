//! The AD connector (`writeback::ad`) against the real Samba AD DC: TLS and binds, writes of
//! groups with awkward names, incremental membership with ranged read-back, schema checks,
//! batched SID/GUID resolution and highestCommittedUSN.
//!
//! Needs the test bed: `tests/testbed/samba-ad.sh up`. Each test works in its own OU, deleted
//! at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use writeback::ad::dn::{self, rdn};
use writeback::ad::{
    AdConn, AdError, AdSettings, AttrChange, SchemaViolation, Scope, Transport, Uuid,
};
use writeback_integration::testbed::AdTestbed;

/// Universal security group.
const UNIVERSAL_SECURITY: &str = "-2147483640";

fn settings(tb: &AdTestbed, url: &str, starttls: bool, allow_plain: bool) -> AdSettings {
    AdSettings {
        urls: vec![url.to_string()],
        discover: None,
        bind_dn: tb.bind_dn.clone(),
        password: tb.bind_password.clone().into(),
        kerberos: None,
        ca_file: Some(tb.ca_file.clone()),
        starttls,
        allow_plain,
        timeout: Duration::from_secs(30),
    }
}

async fn connect(tb: &AdTestbed) -> Result<AdConn> {
    AdConn::connect(&settings(tb, &tb.ldaps_url, false, false))
        .await
        .context("LDAPS connect with the test bed CA")
}

fn attrs(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// A group with a short unique sAMAccountName.
async fn add_group(ad: &mut AdConn, dn: &str, sam: &str) -> Result<()> {
    ad.add(
        dn,
        &attrs(&[
            ("objectClass", &["top", "group"]),
            ("groupType", &[UNIVERSAL_SECURITY]),
            ("sAMAccountName", &[sam]),
        ]),
    )
    .await
    .with_context(|| format!("add group {dn}"))
}

/// `count` contacts `CN=<prefix>NNNN,<ou>`, added over 4 clones of the connection.
async fn add_contacts(ad: &AdConn, ou: &str, prefix: &str, count: usize) -> Result<Vec<String>> {
    let dns: Vec<String> = (0..count)
        .map(|i| format!("CN={prefix}{i:04},{ou}"))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in dns.chunks(count.div_ceil(4).max(1)) {
        let mut ad = ad.clone();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for dn in chunk {
                ad.add(&dn, &attrs(&[("objectClass", &["top", "contact"])]))
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(dns)
}

fn norm_set(dns: &[String]) -> BTreeSet<String> {
    dns.iter()
        .map(|d| dn::normalize(d).unwrap_or_else(|e| panic!("{d}: {e}")))
        .collect()
}

#[tokio::test]
async fn connects_over_ldaps_with_the_ca_file() -> Result<()> {
    let tb = AdTestbed::load();
    let mut ad = connect(&tb).await?;
    ensure!(ad.transport() == Transport::Ldaps);
    let root = ad.domain_root().await?;
    ensure!(dn::dn_eq(&root, &tb.base_dn), "{root} vs {}", tb.base_dn);
    ensure!(!ad.is_closed());
    ad.ensure_connected().await?;
    ad.reconnect().await?;
    ensure!(ad.highest_committed_usn().await? > 0);

    // a clone shares the connection: closing it breaks the original, which then reconnects
    ad.clone().close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ad.is_closed() {
        ensure!(Instant::now() < deadline, "connection not seen as closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the next operation reconnects by itself
    ensure!(ad.highest_committed_usn().await? > 0);
    ensure!(!ad.is_closed());
    ad.close().await;
    Ok(())
}

#[tokio::test]
async fn connects_with_starttls() -> Result<()> {
    let tb = AdTestbed::load();
    let mut ad = AdConn::connect(&settings(&tb, &tb.ldap_url, true, false))
        .await
        .context("StartTLS connect")?;
    ensure!(ad.transport() == Transport::StartTls);
    ensure!(ad.highest_committed_usn().await? > 0);
    Ok(())
}

#[tokio::test]
async fn plain_ldap_needs_allow_plain() -> Result<()> {
    let tb = AdTestbed::load();
    let err = AdConn::connect(&settings(&tb, &tb.ldap_url, false, false))
        .await
        .err()
        .context("plain ldap:// without allow_plain must be refused")?;
    ensure!(matches!(err, AdError::Settings(_)), "{err:?}");
    ensure!(err.to_string().contains("allow_plain"), "{err}");
    // explicitly allowed: the test bed permits simple binds over plain LDAP
    let mut ad = AdConn::connect(&settings(&tb, &tb.ldap_url, false, true)).await?;
    ensure!(ad.transport() == Transport::Plain);
    ensure!(ad.highest_committed_usn().await? > 0);
    Ok(())
}

#[tokio::test]
async fn tls_is_verified_without_a_ca_file_too() -> Result<()> {
    let tb = AdTestbed::load();
    let mut s = settings(&tb, &tb.ldaps_url, false, false);
    s.ca_file = None;
    // the test bed's CA is not a system root: verification must fail
    let err = AdConn::connect(&s)
        .await
        .err()
        .context("a DC certificate from an unknown CA must be refused")?;
    ensure!(matches!(err, AdError::Connect { .. }), "{err:?}");
    ensure!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_password_names_the_bind_dn_not_the_password() -> Result<()> {
    let tb = AdTestbed::load();
    let mut s = settings(&tb, &tb.ldaps_url, false, false);
    s.password = "Wrong-Passw0rd-123".into();
    let err = AdConn::connect(&s)
        .await
        .err()
        .context("a wrong password must fail")?;
    let text = err.to_string();
    ensure!(err.rc() == Some(49), "{err:?}");
    ensure!(text.contains(&tb.bind_dn), "{text}");
    ensure!(
        text.contains("52e"),
        "AD's message (data 52e) expected: {text}"
    );
    ensure!(!text.contains("Wrong-Passw0rd-123"), "{text}");
    ensure!(!format!("{err:?}").contains("Wrong-Passw0rd-123"));
    Ok(())
}

/// Names that need every kind of escaping, plus non-ASCII.
const AWKWARD: &[&str] = &[
    "Sales, EMEA",
    "a+b",
    "quote \" here",
    "back\\slash",
    "<angle>",
    "semi;colon",
    "equals=sign",
    "#hash first",
    " leading space",
    "trailing space ",
    "Grüße 東京 ünïcødé",
    "all , + \" \\ < > ; = # together",
];

#[tokio::test]
async fn group_lifecycle_with_awkward_names() -> Result<()> {
    let tb = AdTestbed::load();
    let tb2 = tb.clone();
    tb.with_scratch_ou("adc-names", |_ldap, ou| async move {
        let mut ad = connect(&tb2).await?;
        let schema = ad.load_schema().await?;
        let target = format!("OU=Target,{ou}");
        ad.add(
            &target,
            &attrs(&[("objectClass", &["top", "organizationalUnit"])]),
        )
        .await?;
        let mut names: Vec<String> = AWKWARD.iter().map(|s| s.to_string()).collect();
        names.push("L".repeat(64)); // the longest CN AD allows
        names.push("é".repeat(64)); // 64 characters, 128 bytes
        for (i, name) in names.iter().enumerate() {
            schema
                .check("cn", std::slice::from_ref(name))
                .with_context(|| format!("schema refused {name:?}"))?;
            let dn = format!("{},{ou}", rdn("CN", name));
            add_group(
                &mut ad,
                &dn,
                &format!("wbadc{i}-{}", std::process::id() % 100_000),
            )
            .await?;
            let e = ad
                .read_entry(&dn, &["cn", "objectGUID", "objectSid"])
                .await?
                .with_context(|| format!("{dn} not found after add"))?;
            ensure!(
                e.first("cn") == Some(name.as_str()),
                "cn of {dn}: {:?}",
                e.first("cn")
            );
            ensure!(dn::dn_eq(&e.dn, &dn), "AD spells {dn} as {}", e.dn);
            ensure!(
                e.guid.is_some() && e.sid.is_some(),
                "no GUID/SID on {}",
                e.dn
            );
            ensure!(
                dn::leaf_value(&e.dn).as_deref() == Some(name.as_str()),
                "{}",
                e.dn
            );

            ad.modify(
                &dn,
                &[
                    AttrChange::Replace("description".into(), vec![format!("d {name}")]),
                    AttrChange::Add("mail".into(), vec![format!("g{i}@corp.example.test")]),
                    AttrChange::Add(
                        "proxyAddresses".into(),
                        vec![
                            format!("SMTP:g{i}@corp.example.test"),
                            format!("smtp:x{i}@corp.example.test"),
                        ],
                    ),
                ],
            )
            .await?;
            ad.modify(
                &dn,
                &[
                    AttrChange::Delete(
                        "proxyAddresses".into(),
                        vec![format!("smtp:x{i}@corp.example.test")],
                    ),
                    AttrChange::Delete("mail".into(), vec![]),
                ],
            )
            .await?;
            let e = ad
                .read_entry(&dn, &["description", "mail", "proxyAddresses"])
                .await?
                .context("gone after modify")?;
            ensure!(e.first("description") == Some(format!("d {name}").as_str()));
            ensure!(e.values("mail").is_empty());
            ensure!(e.values("proxyaddresses") == [format!("SMTP:g{i}@corp.example.test")]);

            // rename in place, then move to another OU under a new name
            // (kept within the 64-character CN limit)
            let renamed = format!("{} (r)", name.chars().take(60).collect::<String>());
            let new_dn = ad.rename(&dn, &rdn("CN", &renamed), None).await?;
            ensure!(dn::dn_eq(&new_dn, &format!("{},{ou}", rdn("CN", &renamed))));
            ensure!(
                ad.read_entry(&dn, &["cn"]).await?.is_none(),
                "old DN still there"
            );
            let e = ad
                .read_entry(&new_dn, &["cn"])
                .await?
                .context("renamed entry")?;
            ensure!(e.first("cn") == Some(renamed.as_str()));
            let moved = ad.rename(&new_dn, &rdn("CN", name), Some(&target)).await?;
            ensure!(dn::is_within(&moved, &target), "{moved}");
            ensure!(dn::dn_eq(&dn::parent(&moved).unwrap_or_default(), &target));
            let e = ad
                .read_entry(&moved, &["cn"])
                .await?
                .context("moved entry")?;
            ensure!(e.first("cn") == Some(name.as_str()));

            ad.delete(&moved).await?;
            ensure!(
                ad.read_entry(&moved, &["cn"]).await?.is_none(),
                "still there after delete"
            );
        }

        // too long: refused by the schema check before AD is asked
        let long = "L".repeat(65);
        match schema.check("cn", std::slice::from_ref(&long)) {
            Err(SchemaViolation::TooLong {
                max: 64, len: 65, ..
            }) => {}
            other => bail!("65-character CN: {other:?}"),
        }
        let long_uni = "東".repeat(65);
        ensure!(schema.check("cn", &[long_uni]).is_err());
        // Samba 4.17 does not enforce rangeUpper on the RDN (Windows AD does), so the schema
        // check is what stops an over-long CN; on other attributes Samba agrees with the check
        let long_dn = format!("{},{ou}", rdn("CN", &long));
        if add_group(&mut ad, &long_dn, "wbadc-long").await.is_ok() {
            ad.delete(&long_dn).await?;
        }
        let g = format!("CN=mail limit,{ou}");
        add_group(
            &mut ad,
            &g,
            &format!("wbadc-ml{}", std::process::id() % 100_000),
        )
        .await?;
        let long_mail = format!("{}@x.test", "m".repeat(250));
        ensure!(schema
            .check("mail", std::slice::from_ref(&long_mail))
            .is_err());
        let err = ad
            .modify(&g, &[AttrChange::Replace("mail".into(), vec![long_mail])])
            .await
            .err()
            .context("AD accepted a 257-character mail")?;
        ensure!(err.rc() == Some(21), "{err:?}");
        ensure!(err.to_string().contains("CN=mail limit"), "{err}");

        // errors carry the DN, AD's code and message
        let missing = format!("CN=does not exist,{ou}");
        let err = ad
            .delete(&missing)
            .await
            .err()
            .context("delete of a missing DN")?;
        ensure!(err.rc() == Some(32), "{err:?}");
        ensure!(err.to_string().contains("does not exist"), "{err}");
        let dup = format!("CN=dup,{ou}");
        add_group(&mut ad, &dup, "wbadc-dup1").await?;
        let err = ad
            .add(&dup, &attrs(&[("objectClass", &["top", "group"])]))
            .await
            .err()
            .context("duplicate add")?;
        ensure!(err.rc() == Some(68), "{err:?}");
        ensure!(err.to_string().contains("CN=dup"), "{err}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn thousands_of_members_incrementally_with_ranged_reads() -> Result<()> {
    let tb = AdTestbed::load();
    let tb2 = tb.clone();
    tb.with_scratch_ou("adc-members", |mut ldap, ou| async move {
        let mut ad = connect(&tb2).await?;
        let started = Instant::now();
        let contacts = add_contacts(&ad, &ou, "m", 3000).await?;
        eprintln!("3000 contacts in {:?}", started.elapsed());
        let group = format!("CN=Big Group,{ou}");
        add_group(
            &mut ad,
            &group,
            &format!("wbadc-big{}", std::process::id() % 100_000),
        )
        .await?;

        let started = Instant::now();
        let o = ad.add_members(&group, &contacts[..1000]).await?;
        ensure!(
            o.applied == 1000 && o.already == 0 && o.missing.is_empty(),
            "{o:?}"
        );
        let o = ad.add_members(&group, &contacts[1000..]).await?;
        ensure!(
            o.applied == 2000 && o.already == 0 && o.missing.is_empty(),
            "{o:?}"
        );
        eprintln!("3000 member adds in {:?}", started.elapsed());

        let started = Instant::now();
        let members = ad.read_members(&group).await?;
        eprintln!("read 3000 members in {:?}", started.elapsed());
        ensure!(members.len() == 3000, "read {} members", members.len());
        ensure!(norm_set(&members) == norm_set(&contacts));
        // the server honours explicit ranges (Samba does not force them), so the reads above
        // and below really went through several ranges
        let raw = ldap
            .search(
                &group,
                ldap3::Scope::Base,
                "(objectClass=*)",
                vec!["member;range=0-699"],
            )
            .await?
            .success()?;
        let names: Vec<String> = raw
            .0
            .into_iter()
            .flat_map(|e| ldap3::SearchEntry::construct(e).attrs.into_keys())
            .collect();
        ensure!(names == ["member;range=0-699"], "{names:?}");
        // smaller ranges: many round trips, same set
        let small = ad.read_ranged_with_step(&group, "member", 700).await?;
        ensure!(small.len() == 3000 && norm_set(&small) == norm_set(&contacts));
        // exactly on a range boundary
        let exact = ad.read_ranged_with_step(&group, "member", 1000).await?;
        ensure!(exact.len() == 3000, "step 1000 read {}", exact.len());
        // a search asking for member continues the ranges too
        let found = ad
            .search(
                &ou,
                Scope::OneLevel,
                "(objectClass=group)",
                &["cn", "member"],
            )
            .await?;
        ensure!(found.len() == 1, "{} groups", found.len());
        ensure!(
            found[0].values("member").len() == 3000,
            "search read {}",
            found[0].values("member").len()
        );

        let started = Instant::now();
        let o = ad.remove_members(&group, &contacts[..1500]).await?;
        ensure!(o.applied == 1500 && o.already == 0, "{o:?}");
        eprintln!("1500 member removes in {:?}", started.elapsed());
        let left = ad.read_members(&group).await?;
        ensure!(
            norm_set(&left) == norm_set(&contacts[1500..]),
            "{} left",
            left.len()
        );

        // an empty group reads as empty
        let empty = format!("CN=Empty,{ou}");
        add_group(
            &mut ad,
            &empty,
            &format!("wbadc-emp{}", std::process::id() % 100_000),
        )
        .await?;
        ensure!(ad.read_members(&empty).await?.is_empty());
        // a missing group is an error, not an empty list
        let err = ad
            .read_members(&format!("CN=nope,{ou}"))
            .await
            .err()
            .context("missing group")?;
        ensure!(err.rc() == Some(32), "{err:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn members_already_present_absent_or_missing() -> Result<()> {
    let tb = AdTestbed::load();
    let tb2 = tb.clone();
    tb.with_scratch_ou("adc-already", |_ldap, ou| async move {
        let mut ad = connect(&tb2).await?;
        let contacts = add_contacts(&ad, &ou, "a", 40).await?;
        let group = format!("CN=G,{ou}");
        add_group(
            &mut ad,
            &group,
            &format!("wbadc-g{}", std::process::id() % 100_000),
        )
        .await?;
        ad.add_members(&group, &contacts[..10]).await?;

        // 10 present, 30 new, 2 that do not exist, one duplicate in the input
        let ghost1 = format!("CN=ghost one,{ou}");
        let ghost2 = format!("CN=ghost two,{ou}");
        let mut input = contacts.clone();
        input.insert(17, ghost1.clone());
        input.push(ghost2.clone());
        input.push(contacts[20].clone());
        let o = ad.add_members(&group, &input).await?;
        ensure!(o.applied == 30, "{o:?}");
        ensure!(o.already == 11, "{o:?}");
        let missing: BTreeSet<&str> = o.missing.iter().map(|(d, _)| d.as_str()).collect();
        ensure!(
            missing == BTreeSet::from([ghost1.as_str(), ghost2.as_str()]),
            "{o:?}"
        );
        ensure!(o.missing.iter().all(|(_, m)| m.contains("rc=32")), "{o:?}");
        ensure!(ad.read_members(&group).await?.len() == 40);

        // remove 20 members, 5 of them already gone, plus a ghost
        ad.remove_members(&group, &contacts[..5]).await?;
        let mut input = contacts[..20].to_vec();
        input.push(ghost1.clone());
        let o = ad.remove_members(&group, &input).await?;
        ensure!(
            o.applied == 15 && o.already == 6 && o.missing.is_empty(),
            "{o:?}"
        );
        let left = ad.read_members(&group).await?;
        ensure!(
            norm_set(&left) == norm_set(&contacts[20..]),
            "{} left",
            left.len()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn schema_is_read_and_checks_values() -> Result<()> {
    let tb = AdTestbed::load();
    let mut ad = connect(&tb).await?;
    let started = Instant::now();
    let schema = ad.load_schema().await?;
    eprintln!(
        "schema: {} attributes in {:?}",
        schema.attr_count(),
        started.elapsed()
    );
    ensure!(
        schema.attr_count() > 1000,
        "{} attributes",
        schema.attr_count()
    );

    let ext = schema
        .attr("msds-externaldirectoryobjectid")
        .context("msDS-ExternalDirectoryObjectId missing: the test bed extends the schema")?;
    ensure!(ext.name == "msDS-ExternalDirectoryObjectId");
    ensure!(ext.single_valued && ext.syntax == "2.5.5.12" && ext.range_upper == Some(256));
    let mail = schema.attr("mail").context("mail")?;
    ensure!(
        mail.range_upper == Some(256) && mail.single_valued,
        "{mail:?}"
    );
    let cn = schema.attr("cn").context("cn")?;
    ensure!(cn.range_upper == Some(64), "{cn:?}");
    let member = schema.attr("member").context("member")?;
    ensure!(member.linked && !member.single_valued, "{member:?}");
    ensure!(schema.attr("objectGUID").context("objectGUID")?.system_only);
    let proxy = schema.attr("proxyAddresses").context("proxyAddresses")?;
    ensure!(
        !proxy.single_valued && proxy.range_upper == Some(1123),
        "{proxy:?}"
    );

    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // what a group may hold, including through mailRecipient
    for ok in [
        ("msDS-ExternalDirectoryObjectId", v(&["Group_0b1e2c3d"])),
        ("mail", v(&["a@corp.example.test"])),
        ("mailNickname", v(&["a"])),
        ("proxyAddresses", v(&["SMTP:a@x", "smtp:b@x"])),
        ("groupType", v(&[UNIVERSAL_SECURITY])),
        ("msExchRecipientTypeDetails", v(&["2147483648"])),
        ("description", v(&["d"])),
        ("info", v(&["i"])),
        ("managedBy", v(&["CN=x,DC=corp,DC=example,DC=test"])),
        ("member", v(&["CN=a,DC=x", "CN=b,DC=x"])),
    ] {
        schema
            .check(ok.0, &ok.1)
            .with_context(|| format!("{} refused", ok.0))?;
    }
    match schema.check("noSuchAttributeAnywhere", &v(&["x"])) {
        Err(SchemaViolation::UnknownAttribute { .. }) => {}
        other => bail!("unknown attribute: {other:?}"),
    }
    match schema.check("mail", &v(&["a@x", "b@x"])) {
        Err(SchemaViolation::SingleValued { count: 2, .. }) => {}
        other => bail!("two mails: {other:?}"),
    }
    let long_mail = format!("{}@x.test", "a".repeat(250));
    match schema.check("mail", &[long_mail]) {
        Err(SchemaViolation::TooLong { max: 256, .. }) => {}
        other => bail!("long mail: {other:?}"),
    }
    match schema.check("groupType", &v(&["universal"])) {
        Err(SchemaViolation::BadValue { .. }) => {}
        other => bail!("non-integer groupType: {other:?}"),
    }
    match schema.check("msExchRecipientDisplayType", &v(&["1.5"])) {
        Err(SchemaViolation::BadValue { .. }) => {}
        other => bail!("non-integer msExchRecipientDisplayType: {other:?}"),
    }
    // a user attribute a group cannot hold
    match schema.check("userAccountControl", &v(&["514"])) {
        Err(SchemaViolation::NotAllowed { .. }) => {}
        other => bail!("userAccountControl on a group: {other:?}"),
    }
    ensure!(schema
        .check_for_class("user", "userAccountControl", &v(&["514"]))
        .is_ok());
    Ok(())
}

#[tokio::test]
async fn resolves_sids_and_guids_in_batches() -> Result<()> {
    let tb = AdTestbed::load();
    let tb2 = tb.clone();
    tb.with_scratch_ou("adc-resolve", |_ldap, ou| async move {
        let mut ad = connect(&tb2).await?;
        let contacts = add_contacts(&ad, &ou, "r", 150).await?;
        let pid = std::process::id() % 100_000;
        let mut groups = Vec::new();
        for i in 0..5 {
            let g = format!("{},{ou}", rdn("CN", &format!("R group {i}, special")));
            add_group(&mut ad, &g, &format!("wbadc-r{i}-{pid}")).await?;
            groups.push(g);
        }
        let entries = ad
            .search(
                &ou,
                Scope::OneLevel,
                "(|(objectClass=contact)(objectClass=group))",
                &["objectGUID", "objectSid"],
            )
            .await?;
        ensure!(entries.len() == 155, "{} entries", entries.len());
        let by_guid: BTreeMap<Uuid, String> = entries
            .iter()
            .map(|e| Ok((e.guid.context("no GUID")?, dn::normalize(&e.dn)?)))
            .collect::<Result<_>>()?;
        let by_sid: BTreeMap<String, String> = entries
            .iter()
            .filter_map(|e| Some((e.sid.clone()?, dn::normalize(&e.dn).ok()?)))
            .collect();
        ensure!(
            by_sid.len() == 5,
            "{} SIDs (only the groups have one)",
            by_sid.len()
        );

        // 155 known GUIDs (two OR batches) plus an unknown one
        let mut guids: Vec<Uuid> = by_guid.keys().copied().collect();
        let unknown = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        guids.push(unknown);
        let started = Instant::now();
        let resolved = ad.resolve_guids(&guids, std::slice::from_ref(&ou)).await?;
        eprintln!(
            "resolved {} GUIDs in {:?}",
            resolved.len(),
            started.elapsed()
        );
        ensure!(resolved.len() == 155, "{} resolved", resolved.len());
        ensure!(!resolved.contains_key(&unknown));
        for (g, d) in &resolved {
            ensure!(by_guid.get(g) == Some(&dn::normalize(d)?), "{g} -> {d}");
        }
        // default base: the domain root
        let some: Vec<Uuid> = guids.iter().take(3).copied().collect();
        ensure!(ad.resolve_guids(&some, &[]).await?.len() == 3);

        let mut sids: Vec<String> = by_sid.keys().cloned().collect();
        sids.push("S-1-5-21-1-2-3-999999".into());
        sids.push("not a sid".into());
        let resolved = ad.resolve_sids(&sids, &[]).await?;
        ensure!(resolved.len() == 5, "{resolved:?}");
        for (s, d) in &resolved {
            ensure!(by_sid.get(s) == Some(&dn::normalize(d)?), "{s} -> {d}");
        }
        // well-known domain objects resolve from the domain root too
        let root = ad.domain_root().await?;
        let admins = ad
            .search(
                &format!("CN=Domain Admins,CN=Users,{root}"),
                Scope::Base,
                "(objectClass=*)",
                &["objectSid"],
            )
            .await?;
        let admins_sid = admins
            .first()
            .and_then(|e| e.sid.clone())
            .context("Domain Admins SID")?;
        ensure!(
            admins_sid.starts_with("S-1-5-21-") && admins_sid.ends_with("-512"),
            "{admins_sid}"
        );
        let r = ad
            .resolve_sids(std::slice::from_ref(&admins_sid), &[])
            .await?;
        ensure!(r.len() == 1, "{r:?}");
        ensure!(contacts.len() == 150);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn finds_owned_groups_by_anchor_prefix() -> Result<()> {
    let tb = AdTestbed::load();
    let tb2 = tb.clone();
    tb.with_scratch_ou("adc-owned", |_ldap, ou| async move {
        let mut ad = connect(&tb2).await?;
        let contacts = add_contacts(&ad, &ou, "o", 1600).await?;
        let pid = std::process::id() % 100_000;
        let sub = format!("OU=Sub,{ou}");
        ad.add(
            &sub,
            &attrs(&[("objectClass", &["top", "organizationalUnit"])]),
        )
        .await?;
        let owned_big = format!("CN=Owned Big,{ou}");
        let owned_sub = format!("CN=Owned\\, Sub,{sub}");
        let foreign = format!("CN=Foreign,{ou}");
        let plain = format!("CN=Plain,{ou}");
        for (dn, sam, anchor) in [
            (
                &owned_big,
                "o1",
                Some("Group_11111111-2222-3333-4444-555555555555"),
            ),
            (
                &owned_sub,
                "o2",
                Some("Group_aaaaaaaa-2222-3333-4444-555555555555"),
            ),
            (
                &foreign,
                "o3",
                Some("User_11111111-2222-3333-4444-555555555555"),
            ),
            (&plain, "o4", None),
        ] {
            add_group(&mut ad, dn, &format!("wbadc-{sam}-{pid}")).await?;
            if let Some(a) = anchor {
                ad.modify(
                    dn,
                    &[
                        AttrChange::Replace(
                            "msDS-ExternalDirectoryObjectId".into(),
                            vec![a.into()],
                        ),
                        AttrChange::Replace("adminDescription".into(), vec![a.into()]),
                    ],
                )
                .await?;
            }
        }
        let o = ad.add_members(&owned_big, &contacts).await?;
        ensure!(o.applied == 1600, "{o:?}");

        let found = ad
            .find_owned_groups(
                std::slice::from_ref(&ou),
                "msDS-ExternalDirectoryObjectId",
                "Group_",
                &["cn", "description", "member"],
            )
            .await?;
        let dns: Vec<String> = found
            .iter()
            .map(|e| dn::normalize(&e.dn))
            .collect::<Result<_, _>>()?;
        ensure!(
            dns == vec![dn::normalize(&owned_big)?, dn::normalize(&owned_sub)?],
            "{dns:?}"
        );
        ensure!(found[0].guid.is_some());
        ensure!(
            found[0].first("msds-externaldirectoryobjectid")
                == Some("Group_11111111-2222-3333-4444-555555555555")
        );
        ensure!(
            found[0].values("member").len() == 1600,
            "{} members",
            found[0].values("member").len()
        );
        ensure!(found[1].first("cn") == Some("Owned, Sub"));
        // the Connect-style anchor works the same
        let by_admin = ad
            .find_owned_groups(
                std::slice::from_ref(&sub),
                "adminDescription",
                "Group_",
                &["cn"],
            )
            .await?;
        ensure!(by_admin.len() == 1 && dn::dn_eq(&by_admin[0].dn, &owned_sub));
        // bad anchor attribute names never reach a filter
        ensure!(matches!(
            ad.find_owned_groups(&[], "cn)(cn=*", "Group_", &[]).await,
            Err(AdError::Invalid(_))
        ));
        // The streamed scan (a reconciliation's) hands over the same groups, each once even
        // under overlapping bases (the OU and its sub-OU).
        let mut streamed = Vec::new();
        ad.for_each_owned_group(
            &[ou.clone(), sub.clone()],
            "msDS-ExternalDirectoryObjectId",
            "Group_",
            &["msDS-ExternalDirectoryObjectId", "objectGUID"],
            |e| streamed.push(e),
        )
        .await?;
        let mut streamed_dns: Vec<String> = streamed
            .iter()
            .map(|e| dn::normalize(&e.dn))
            .collect::<Result<_, _>>()?;
        streamed_dns.sort();
        let mut want = dns.clone();
        want.sort();
        ensure!(streamed_dns == want, "{streamed_dns:?}");
        ensure!(streamed.iter().all(|e| e.guid.is_some()));
        ensure!(matches!(
            ad.for_each_owned_group(&[], "msDS-ExternalDirectoryObjectId", "", &[], |_| {})
                .await,
            Err(AdError::Invalid(_))
        ));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn highest_committed_usn_moves_only_on_writes() -> Result<()> {
    let tb = AdTestbed::load();
    let tb2 = tb.clone();
    tb.with_scratch_ou("adc-usn", |_ldap, ou| async move {
        let mut ad = connect(&tb2).await?;
        let before = ad.highest_committed_usn().await?;
        ad.search(&ou, Scope::Subtree, "(objectClass=*)", &["cn"])
            .await?;
        let same = ad.highest_committed_usn().await?;
        // other tests may write concurrently, so only "not smaller" holds for reads
        ensure!(same >= before);
        let g = format!("CN=usn,{ou}");
        add_group(
            &mut ad,
            &g,
            &format!("wbadc-usn{}", std::process::id() % 100_000),
        )
        .await?;
        let after = ad.highest_committed_usn().await?;
        ensure!(after > same, "{after} <= {same}");
        Ok(())
    })
    .await
}
