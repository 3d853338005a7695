//! Which groups `writeback release` stops managing. Pure: the anchors and the cached names in,
//! the anchors to release out, or an error naming what matched nothing.

use std::collections::BTreeMap;

use crate::ad::dn::is_within;
use crate::state::Anchor;

/// What the operator named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Groups by cloud id or displayName.
    Groups(Vec<String>),
    /// Every group whose AD object is at or below this DN.
    DnUnder(String),
    All,
}

/// A release named a group Writeback does not manage.
#[derive(Debug, thiserror::Error)]
#[error("{name:?} is not a group Writeback manages (by cloud id or displayName); `writeback status` and `writeback explain` show what it manages")]
pub struct NotManaged {
    pub name: String,
}

/// The anchors `sel` names. `named(name)` gives the cloud ids of the cached groups with that
/// displayName. A name or id that matches no group Writeback manages is an error: a release
/// that silently did less than asked would leave a group managed by surprise.
pub fn select(
    anchors: &BTreeMap<String, Anchor>,
    named: impl Fn(&str) -> Vec<String>,
    sel: &Selector,
) -> Result<Vec<Anchor>, NotManaged> {
    let mut out: BTreeMap<String, Anchor> = BTreeMap::new();
    match sel {
        Selector::All => out.extend(anchors.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Selector::DnUnder(base) => out.extend(
            anchors
                .iter()
                .filter(|(_, a)| is_within(&a.dn, base))
                .map(|(k, v)| (k.clone(), v.clone())),
        ),
        Selector::Groups(wanted) => {
            for w in wanted {
                let w = w.trim();
                let ids: Vec<String> = match anchors.get(w) {
                    Some(_) => vec![w.to_string()],
                    None => named(w)
                        .into_iter()
                        .filter(|id| anchors.contains_key(id))
                        .collect(),
                };
                if ids.is_empty() {
                    return Err(NotManaged {
                        name: w.to_string(),
                    });
                }
                for id in ids {
                    if let Some(a) = anchors.get(&id) {
                        out.insert(id, a.clone());
                    }
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(id: &str, dn: &str) -> (String, Anchor) {
        (
            id.to_string(),
            Anchor {
                cloud_id: id.into(),
                object_guid: format!("guid-{id}"),
                dn: dn.into(),
                rule: "r".into(),
                updated_at: String::new(),
            },
        )
    }

    fn anchors() -> BTreeMap<String, Anchor> {
        [
            anchor("a", "CN=A,OU=Sales,OU=W,DC=x"),
            anchor("b", "CN=B,OU=IT,OU=W,DC=x"),
            anchor("c", "CN=C,OU=Sales,OU=W,DC=x"),
        ]
        .into_iter()
        .collect()
    }

    fn ids(v: &[Anchor]) -> Vec<&str> {
        v.iter().map(|a| a.cloud_id.as_str()).collect()
    }

    #[test]
    fn groups_by_id_name_dn_or_all() {
        let named = |n: &str| match n {
            "Team B" => vec!["b".to_string(), "not-managed".to_string()],
            _ => vec![],
        };
        let got = select(
            &anchors(),
            named,
            &Selector::Groups(vec!["a".into(), "Team B".into()]),
        );
        assert_eq!(ids(&got.unwrap()), ["a", "b"]);
        let got = select(
            &anchors(),
            named,
            &Selector::DnUnder("ou=sales,OU=W,DC=x".into()),
        );
        assert_eq!(ids(&got.unwrap()), ["a", "c"]);
        assert_eq!(
            ids(&select(&anchors(), named, &Selector::All).unwrap()),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn a_name_that_matches_nothing_managed_is_an_error() {
        let e = select(
            &anchors(),
            |_| vec!["zz".into()],
            &Selector::Groups(vec!["Nobody".into()]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"Nobody\""), "{e}");
    }
}
