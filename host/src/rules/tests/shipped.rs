//! The shipped default rules (scripts/) and stdlib (stdlib/).

use serde_json::{json, Value};

use super::support::*;
use crate::rules::{Decision, Limits, MemberPolicy, RuleSet};

/// Evaluates `expr` in a one-rule set that imports the stdlib modules, with `group` bound.
/// The value comes back as the attribute `r`.
fn stdlib_value(expr: &str, group: &Value) -> Option<Vec<String>> {
    let text = format!(
        "import \"std/naming\" as naming;\nimport \"std/exchange\" as exchange;\nimport \"std/dn\" as dn;\n\
         fn scope(group) {{ true }}\n\
         fn map(group) {{ #{{ parent: \"OU=T,DC=x\", cn: \"t\", attributes: #{{ r: {expr} }} }} }}\n"
    );
    let dir = rules_dir(&[("10-probe.rhai", &text)]);
    let set = load(dir.path()).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let g = desired(
        set.evaluate(group)
            .unwrap_or_else(|e| panic!("{expr}: {e}")),
    );
    values(&g, "r")
}

fn stdlib_text(expr: &str, group: &Value) -> String {
    match stdlib_value(expr, group).as_deref() {
        Some([one]) => one.clone(),
        other => panic!("{expr}: expected one value, got {other:?}"),
    }
}

fn none() -> Value {
    json!({"id": "00000000-0000-0000-0000-000000000000"})
}

#[test]
fn m365_group_becomes_a_universal_distribution_group() {
    let g = desired(shipped().evaluate(&m365_group()).expect("evaluates"));
    assert_eq!(g.rule, "10-microsoft-365.rhai");
    assert_eq!(g.parent, M365_OU);
    assert_eq!(g.cn, "OutlookGroup101_4244bc7e0938");
    assert_eq!(g.members, MemberPolicy::OnPremises);
    assert_eq!(value(&g, "groupType"), "8");
    assert_eq!(value(&g, "sAMAccountName"), "OutlookGrou_bc7e0938");
    // Written when the group is created only: a cloud rename leaves the account name alone.
    assert!(
        g.on_create.contains_key("sAMAccountName") && !g.attributes.contains_key("sAMAccountName")
    );
    assert_eq!(value(&g, "displayName"), "OutlookGroup101");
    assert_eq!(value(&g, "description"), "This is a group in Outlook");
    assert_eq!(value(&g, "mail"), "outlookgroup101@service.microsoft.com");
    assert_eq!(value(&g, "mailNickname"), "outlookgroup101");
    assert_eq!(
        values(&g, "proxyAddresses"),
        Some(vec![
            "SMTP:outlookgroup101@service.microsoft.com".to_string(),
            "smtp:outlookgroup101@microsoft.onmicrosoft.com".to_string(),
        ])
    );
    assert_eq!(value(&g, "msExchRecipientTypeDetails"), "8796093022208");
    assert_eq!(value(&g, "msExchRecipientDisplayType"), "1");
    assert_eq!(g.attributes.len(), 8, "{:?}", g.attributes);
}

#[test]
fn m365_without_exchange_schema_leaves_exchange_attributes_out() {
    let mut s = settings();
    s.insert("exchange_attributes".into(), json!(false));
    let set = RuleSet::load(&repo_dir("scripts"), &stdlib(), s, Limits::default()).expect("loads");
    let g = desired(set.evaluate(&m365_group()).expect("ok"));
    for a in [
        "mailNickname",
        "msExchRecipientTypeDetails",
        "msExchRecipientDisplayType",
    ] {
        assert!(!g.attributes.contains_key(a), "{a} must be left out");
    }
    assert!(g.attributes.contains_key("proxyAddresses"));
}

#[test]
fn soft_deleted_m365_group_keeps_its_ad_group() {
    let set = shipped();
    let live = set.evaluate(&m365_group()).expect("ok");
    let deleted = set
        .evaluate(&with(m365_group(), json!({"deleted": true})))
        .expect("ok");
    assert_eq!(live, deleted);
}

#[test]
fn security_group_is_mapped_as_cloud_sync_does() {
    let g = desired(shipped().evaluate(&security_group()).expect("evaluates"));
    assert_eq!(g.rule, "20-security.rhai");
    assert_eq!(g.parent, SECURITY_OU);
    // Left(Trim(displayName),51) + "_" + Mid(objectId,25,12)
    assert_eq!(g.cn, "SecurityGroup101_517f54645106");
    assert_eq!(value(&g, "groupType"), "-2147483640");
    assert_eq!(value(&g, "description"), "This group is a Security Group");
    assert_eq!(value(&g, "displayName"), "SecurityGroup101");
    assert!(!g.attributes.contains_key("sAMAccountName"));
    assert_eq!(g.attributes.len(), 3);
    assert_eq!(g.members, MemberPolicy::OnPremises);
}

#[test]
fn cloud_sync_cn_is_exact_on_a_known_id() {
    let group = with(
        security_group(),
        json!({"id": "0d4a4f1c-79a2-4c5e-8f40-2b7e5c3a9d81", "displayName": "  Finance Team  "}),
    );
    let g = desired(shipped().evaluate(&group).expect("ok"));
    assert_eq!(g.cn, "Finance Team_2b7e5c3a9d81");
    assert_eq!(
        stdlib_text("naming::mid(group.id, 25, 12)", &group),
        "2b7e5c3a9d81"
    );
    assert_eq!(stdlib_text("naming::mid(\"abcdef\", 2, 3)", &group), "bcd");
    assert_eq!(stdlib_text("naming::mid(\"abcdef\", 5, 10)", &group), "ef");
    assert_eq!(stdlib_value("naming::mid(\"abc\", 9, 1)", &group), None);
    assert_eq!(stdlib_text("naming::left(\"abcdef\", 2)", &group), "ab");
}

#[test]
fn description_is_trimmed_and_cut_to_448_for_security_groups() {
    let long = format!("  {}  ", "d".repeat(500));
    let group = with(security_group(), json!({"description": long}));
    let g = desired(shipped().evaluate(&group).expect("ok"));
    assert_eq!(value(&g, "description"), "d".repeat(448));
    let group = with(security_group(), json!({"description": null}));
    let g = desired(shipped().evaluate(&group).expect("ok"));
    assert_eq!(
        g.attributes.get("description"),
        Some(&None),
        "a null description is cleared"
    );
}

#[test]
fn other_groups_are_out_of_scope() {
    let set = shipped();
    let cases = [
        (
            "mail-enabled security group",
            with(
                security_group(),
                json!({"mailEnabled": true, "mail": "sec@x.test"}),
            ),
        ),
        (
            "distribution list",
            with(
                security_group(),
                json!({"securityEnabled": false, "mailEnabled": true}),
            ),
        ),
        (
            "security group synced from AD",
            with(security_group(), json!({"onPremisesSyncEnabled": true})),
        ),
        (
            "Microsoft 365 group synced from AD",
            with(m365_group(), json!({"onPremisesSyncEnabled": true})),
        ),
        ("group without properties", none()),
    ];
    for (what, group) in cases {
        assert_eq!(
            set.evaluate(&group).expect("ok"),
            Decision::OutOfScope,
            "{what}"
        );
    }
    // A security-enabled Microsoft 365 group is still a Microsoft 365 group.
    let m365_sec = with(m365_group(), json!({"securityEnabled": true}));
    assert_eq!(
        desired(set.evaluate(&m365_sec).expect("ok")).rule,
        "10-microsoft-365.rhai"
    );
}

#[test]
fn special_characters_stay_in_cn_and_leave_sam() {
    let set = shipped();
    let name = r#"#Sales, EMEA + "Q1" \ <a> ; b=c"#;
    let g = desired(
        set.evaluate(&with(m365_group(), json!({"displayName": name})))
            .expect("ok"),
    );
    // The cn is returned unescaped: the host escapes it.
    assert_eq!(g.cn, format!("{name}_4244bc7e0938"));
    assert_eq!(value(&g, "sAMAccountName"), "#Sales EMEA_bc7e0938");
    let sam = value(&g, "sAMAccountName");
    assert!(sam.chars().count() <= 20);
    assert!(!sam.contains(|c| "\"/\\[]:;|=,+*?<>".contains(c)), "{sam}");

    let g = desired(
        set.evaluate(&with(security_group(), json!({"displayName": name})))
            .expect("ok"),
    );
    assert_eq!(g.cn, format!("{name}_517f54645106"));
}

#[test]
fn edge_spaces_are_trimmed_and_non_ascii_is_counted_by_character() {
    let set = shipped();
    let g = desired(
        set.evaluate(&with(
            m365_group(),
            json!({"displayName": "  Ärzte Zürich 東京  "}),
        ))
        .expect("ok"),
    );
    assert_eq!(g.cn, "Ärzte Zürich 東京_4244bc7e0938");
    assert_eq!(value(&g, "sAMAccountName"), "Ärzte Züric_bc7e0938");
    assert_eq!(value(&g, "displayName"), "  Ärzte Zürich 東京  ");

    let g = desired(
        set.evaluate(&with(
            security_group(),
            json!({"displayName": " ..Ünïcødé.. "}),
        ))
        .expect("ok"),
    );
    assert_eq!(g.cn, "..Ünïcødé.._517f54645106");
}

#[test]
fn long_names_are_cut_so_cn_fits_ad() {
    let set = shipped();
    // Graph allows 256 characters; the CN keeps 51 of them.
    let long: String = "Ä".repeat(256);
    for base in [m365_group(), security_group()] {
        let g = desired(
            set.evaluate(&with(base, json!({"displayName": long})))
                .expect("ok"),
        );
        assert_eq!(g.cn.chars().count(), 64, "{}", g.rule);
        assert!(g.cn.starts_with(&"Ä".repeat(51)), "{}", g.rule);
        assert_eq!(g.cn.chars().nth(51), Some('_'));
    }
}

#[test]
fn naming_helpers() {
    let g = m365_group();
    assert_eq!(
        stdlib_text("naming::connect_cn(group)", &g),
        "Group_4c5ee71b-e6a5-4343-9e2c-4244bc7e0938"
    );
    assert_eq!(
        stdlib_text("naming::display_name_suffixed(group)", &g),
        "OutlookGroup101_4244bc7e0938"
    );
    assert_eq!(stdlib_text("naming::short_id(group, 8)", &g), "bc7e0938");
    assert_eq!(
        stdlib_text("naming::truncate(\"日本語テキスト\", 3)", &g),
        "日本語"
    );
    assert_eq!(stdlib_text("naming::truncate(\"abc\", 10)", &g), "abc");
    assert_eq!(stdlib_value("naming::truncate((), 10)", &g), None);
    assert_eq!(stdlib_text("naming::last(\"abcdef\", 2)", &g), "ef");
}

#[test]
fn sam_account_names() {
    let g = m365_group();
    for (expr, expected) in [
        ("naming::sam_from(\"Sales\", \"\")", "Sales"),
        (
            "naming::sam_from(\"A very long group name here\", \"\")",
            "A very long group na",
        ),
        (
            "naming::sam_from(\"A very long group name here\", \"1a2b3c4d\")",
            "A very long_1a2b3c4d",
        ),
        ("naming::sam_from(\"  ..Sales..  \", \"\")", "Sales"),
        ("naming::sam_from(\"a\\\"/\\\\[]:;|=,+*?<>b\", \"\")", "ab"),
        ("naming::sam_from(\"ab  .  cd\", \"x\")", "ab  .  cd_x"),
        // The cut leaves "Finance ..." which must not end in a space or period.
        (
            "naming::sam_from(\"Finance ...Team\", \"1a2b3c4d\")",
            "Finance_1a2b3c4d",
        ),
        ("naming::sam_from(\"?*?\", \"1a2b3c4d\")", "1a2b3c4d"),
        (
            "naming::sam_from(\"x\", \"0123456789abcdefghijklmnop\")",
            "0123456789abcdefghij",
        ),
        ("naming::sam(group)", "OutlookGrou_bc7e0938"),
    ] {
        assert_eq!(stdlib_text(expr, &g), expected, "{expr}");
    }
    let tab = with(g, json!({"displayName": "tab\there\u{7f}"}));
    assert_eq!(
        stdlib_text("naming::sam_from(group.displayName, \"\")", &tab),
        "tabhere"
    );
}

#[test]
fn exchange_helpers() {
    let g = m365_group();
    assert_eq!(
        stdlib_text("exchange::primary_smtp(group)", &g),
        "outlookgroup101@service.microsoft.com"
    );
    let mixed = with(
        g.clone(),
        json!({
            "mail": "team@contoso.test",
            "mailNickname": "",
            "proxyAddresses": ["SPO:SPO_1234", "smtp:team@contoso.onmicrosoft.com",
                               "X500:/o=ExchangeLabs/cn=x", "SMTP:team@contoso.test", "smtp:Team.Alias@contoso.test"]
        }),
    );
    assert_eq!(
        stdlib_value("exchange::smtp_addresses(group)", &mixed),
        Some(vec![
            "SMTP:team@contoso.test".to_string(),
            "smtp:team@contoso.onmicrosoft.com".to_string(),
            "smtp:Team.Alias@contoso.test".to_string(),
        ])
    );
    assert_eq!(
        stdlib_text("exchange::mail_nickname(group)", &mixed),
        "team"
    );

    // No SMTP: entry: mail becomes the primary, and its lower-case twin is not repeated.
    let only_mail = with(
        g.clone(),
        json!({"mail": "Ops@contoso.test", "proxyAddresses": ["smtp:ops@contoso.test", "smtp:ops@contoso.onmicrosoft.com"]}),
    );
    assert_eq!(
        stdlib_value("exchange::smtp_addresses(group)", &only_mail),
        Some(vec![
            "SMTP:Ops@contoso.test".to_string(),
            "smtp:ops@contoso.onmicrosoft.com".to_string(),
        ])
    );
    assert_eq!(
        stdlib_text("exchange::primary_smtp(group)", &only_mail),
        "Ops@contoso.test"
    );

    let no_mail = security_group();
    assert_eq!(
        stdlib_value("exchange::primary_smtp(group)", &no_mail),
        None
    );
    assert_eq!(
        stdlib_value("exchange::smtp_addresses(group)", &no_mail),
        None
    );
    assert_eq!(
        stdlib_value("exchange::mail_nickname(group)", &no_mail),
        None
    );
}

#[test]
fn dn_helpers_escape_every_value() {
    let g = none();
    let base = "DC=corp,DC=example,DC=test";
    assert_eq!(
        stdlib_text(
            &format!("dn::ou_path([\"Cloud\", \"Groups\"], \"{base}\")"),
            &g
        ),
        format!("OU=Groups,OU=Cloud,{base}")
    );
    assert_eq!(
        stdlib_text(
            &format!("dn::ou_path([\"Sales, EMEA\", \"#1 + <2>\", \" edge \"], \"{base}\")"),
            &g
        ),
        format!("OU=\\20edge\\20,OU=\\#1 \\+ \\<2\\>,OU=Sales\\, EMEA,{base}")
    );
    assert_eq!(
        stdlib_text("dn::rdn(\"CN\", \"a=b;c\")", &g),
        "CN=a\\=b\\;c"
    );
    assert_eq!(stdlib_text("dn::escape(\"x\\\\y\\\"\")", &g), "x\\\\y\\\"");
    assert_eq!(stdlib_text("dn::ou(\"Top\", \"\")", &g), "OU=Top");
    assert_eq!(
        stdlib_text(&format!("dn::ou_path([], \"{base}\")"), &g),
        base
    );
}
