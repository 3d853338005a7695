//! The shipped default rules (scripts/) and stdlib (stdlib/).

use super::support::*;
use crate::rules::{Decision, MemberPolicy};

#[test]
fn m365_group_becomes_universal_distribution_group() {
    let set = shipped();
    let g = desired(set.evaluate(&m365_group()).expect("evaluates"));
    eprintln!("{g:#?}");
    assert_eq!(g.rule, "10-microsoft-365.rhai");
    assert_eq!(g.parent, M365_OU);
    assert_eq!(g.cn, "OutlookGroup101_4244bc7e0938");
    assert_eq!(g.members, MemberPolicy::OnPremises);
}

#[test]
fn security_group_smoke() {
    let set = shipped();
    let d = set.evaluate(&security_group());
    eprintln!("{d:#?}");
    assert!(matches!(d, Ok(Decision::Desired(_))));
}
