//! Exchange hybrid attributes with the default rules, against the Samba AD DC (whose schema the
//! test bed extends with Exchange's attributes) and the Graph emulator: the X500 addresses
//! Exchange Online holds for a group reach AD's proxyAddresses, other non-SMTP prefixes do not.

use serde_json::json;
use writeback_integration::harness::{m365_group, new_id, Bed};

#[tokio::test]
async fn x500_addresses_reach_proxy_addresses_and_spo_ones_do_not() {
    let mut bed = Bed::new("wb-exch-x500", 0).await;
    bed.create_default_containers().await;
    let id = new_id();
    let nick = format!("x5{}", &id[..6]);
    let x500 = format!(
        "X500:/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn={nick}"
    );
    let mut g = m365_group(&id, "Moved Team", &nick, &[]);
    g["proxyAddresses"] = json!([
        format!("SPO:SPO_{nick}@SPO_tenant"),
        x500,
        format!("SMTP:{nick}@contoso.example"),
        format!("smtp:{nick}@contoso.onmicrosoft.com"),
    ]);
    bed.seed(vec![], vec![g], &[]);
    bed.write_config(None, "", "");
    bed.run_json(&["sync"], 0);
    let (_, attrs) = bed.group_by_id(&id).await.expect("the group is in AD");
    let mut got = attrs.get("proxyaddresses").cloned().unwrap_or_default();
    got.sort();
    let mut want = vec![
        format!("SMTP:{nick}@contoso.example"),
        format!("smtp:{nick}@contoso.onmicrosoft.com"),
        x500,
    ];
    want.sort();
    assert_eq!(got, want);
    // In step: the next sync writes nothing.
    let r = bed.run_json(&["sync"], 0);
    assert!(
        r["plan"]["changes"].as_array().is_none_or(Vec::is_empty),
        "{r:#}"
    );
    bed.cleanup().await;
}
