//! Batched lookups: join values (SIDs, GUIDs, any attribute) to DNs with OR filters (one
//! search per ~100 values and base, never one per member), and the groups the host owns
//! (anchor attribute `Group_...`).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::conn::AdConn;
use super::dn;
use super::error::AdError;
use super::join::{Compare, JoinKey};
use super::search::{bad_entry, build_entry, protocol, AdEntry, Scope};

/// Values per OR filter.
pub const RESOLVE_BATCH: usize = 100;

/// `(|(a)(b)...)`, or the single term itself.
fn or_filter(terms: &[String]) -> String {
    match terms {
        [one] => one.clone(),
        _ => format!("(|{})", terms.concat()),
    }
}

impl AdConn {
    /// The bases to search: the given ones, or the domain root when none are given.
    async fn bases_or_root(&mut self, bases: &[String]) -> Result<Vec<String>, AdError> {
        if bases.is_empty() {
            Ok(vec![self.domain_root().await?])
        } else {
            Ok(bases.to_vec())
        }
    }

    /// Maps normalised join values (see [`JoinKey::value_of`]) to the DNs of the objects of
    /// `class` (any class when `None`) under `bases` that carry them in the key's AD attribute:
    /// every DN found, sorted, so the caller sees a value two objects share. `bases` empty:
    /// the domain root; on a Global Catalog, `[""]` is the whole forest. Values not found are
    /// absent from the map.
    pub async fn resolve_join(
        &mut self,
        key: &JoinKey,
        class: Option<&str>,
        values: &[String],
        bases: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AdError> {
        let unique: BTreeSet<&String> = values.iter().collect();
        let mut terms = Vec::with_capacity(unique.len());
        for v in &unique {
            match key.term(v) {
                Some(t) => terms.push(t),
                // a malformed SID or GUID resolves to nothing, like an unknown one
                None => {
                    tracing::warn!(value = %v, key = %key.describe(), "skipping malformed join value")
                }
            }
        }
        let wanted: BTreeSet<&str> = unique.iter().map(|v| v.as_str()).collect();
        let attr = match key.compare() {
            Compare::Sid => "objectSid",
            Compare::Guid => "objectGUID",
            Compare::GuidBytes | Compare::Text => key.ad(),
        };
        // by value: normalised DN -> DN as AD spells it (overlapping bases find one object twice)
        let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for base in self.bases_or_root(bases).await? {
            for chunk in terms.chunks(RESOLVE_BATCH) {
                let filter = match class {
                    Some(c) => format!(
                        "(&(objectClass={}){})",
                        dn::escape_filter_value(c),
                        or_filter(chunk)
                    ),
                    None => or_filter(chunk),
                };
                for e in self.search(&base, Scope::Subtree, &filter, &[attr]).await? {
                    for k in key.keys_in(&e) {
                        if wanted.contains(k.as_str()) {
                            let norm = dn::normalize(&e.dn).unwrap_or_else(|_| e.dn.to_lowercase());
                            found.entry(k).or_default().insert(norm, e.dn.clone());
                        }
                    }
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|(k, dns)| {
                let mut dns: Vec<String> = dns.into_values().collect();
                dns.sort();
                (k, dns)
            })
            .collect())
    }

    /// Maps SIDs (`S-1-5-21-...`) to the DNs of the objects under `bases` (empty: the domain
    /// root) that carry them. SIDs not found are absent from the map.
    pub async fn resolve_sids(
        &mut self,
        sids: &[String],
        bases: &[String],
    ) -> Result<BTreeMap<String, String>, AdError> {
        let key = JoinKey::sid();
        // answers come back in the canonical form; the map is keyed by the SIDs as given
        let mut by_norm: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in sids {
            match dn::sid_from_string(s).and_then(|b| dn::sid_to_string(&b)) {
                Ok(n) => by_norm.entry(n).or_default().push(s.clone()),
                Err(e) => tracing::warn!(error = %e, "skipping malformed SID"),
            }
        }
        let norm: Vec<String> = by_norm.keys().cloned().collect();
        let found = self.resolve_join(&key, None, &norm, bases).await?;
        Ok(first_dns(found, |n| {
            by_norm.get(n).cloned().unwrap_or_default()
        }))
    }

    /// Maps objectGUIDs to the DNs of the objects under `bases` (empty: the domain root).
    /// GUIDs not found are absent from the map.
    pub async fn resolve_guids(
        &mut self,
        guids: &[Uuid],
        bases: &[String],
    ) -> Result<BTreeMap<Uuid, String>, AdError> {
        let values: Vec<String> = guids.iter().map(Uuid::to_string).collect();
        let found = self
            .resolve_join(&JoinKey::immutable_id(), None, &values, bases)
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(k, dns)| Some((Uuid::parse_str(&k).ok()?, dns.into_iter().next()?)))
            .collect())
    }

    /// What the schema says of a join's AD attribute: `None` when the schema has no such
    /// attribute.
    pub async fn join_attribute(&mut self, name: &str) -> Result<Option<JoinAttribute>, AdError> {
        let dse = self.root_dse(&["schemaNamingContext"]).await?;
        let schema = dse
            .first("schemaNamingContext")
            .ok_or_else(|| protocol("", "rootDSE has no schemaNamingContext"))?
            .to_string();
        let filter = format!(
            "(&(objectClass=attributeSchema)(lDAPDisplayName={}))",
            dn::escape_filter_value(name)
        );
        let found = self
            .search(
                &schema,
                Scope::OneLevel,
                &filter,
                &[
                    "lDAPDisplayName",
                    "attributeSyntax",
                    "isMemberOfPartialAttributeSet",
                ],
            )
            .await?;
        Ok(found.into_iter().next().map(|e| JoinAttribute {
            name: e.first("lDAPDisplayName").unwrap_or(name).to_string(),
            syntax: e.first("attributeSyntax").unwrap_or_default().to_string(),
            in_global_catalog: e
                .first("isMemberOfPartialAttributeSet")
                .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
        }))
    }

    /// The groups under `bases` (empty: the domain root) whose `anchor_attr` starts with
    /// `prefix` (e.g. `msDS-ExternalDirectoryObjectId` and `Group_`), sorted by DN, each
    /// with `attrs` plus the anchor, objectGUID and (when asked for) all `member` values.
    pub async fn find_owned_groups(
        &mut self,
        bases: &[String],
        anchor_attr: &str,
        prefix: &str,
        attrs: &[&str],
    ) -> Result<Vec<AdEntry>, AdError> {
        let (filter, want) = owned_query(anchor_attr, prefix, attrs)?;
        let mut by_dn: BTreeMap<String, AdEntry> = BTreeMap::new();
        let anchor_key = anchor_attr.to_ascii_lowercase();
        let prefix_lower = prefix.to_lowercase();
        for base in self.bases_or_root(bases).await? {
            for e in self.search(&base, Scope::Subtree, &filter, &want).await? {
                if is_owned(&e, &anchor_key, &prefix_lower) {
                    let key = dn::normalize(&e.dn).unwrap_or_else(|_| e.dn.clone());
                    by_dn.entry(key).or_insert(e);
                }
            }
        }
        Ok(by_dn.into_values().collect())
    }

    /// Like [`AdConn::find_owned_groups`] for single-valued `attrs`, handing each owned group
    /// to `f` as its page arrives instead of holding them all (a reconciliation's scan). Under
    /// overlapping bases an object is handed over once, under the first base that holds it.
    pub async fn for_each_owned_group(
        &mut self,
        bases: &[String],
        anchor_attr: &str,
        prefix: &str,
        attrs: &[&str],
        mut f: impl FnMut(AdEntry),
    ) -> Result<(), AdError> {
        let (filter, want) = owned_query(anchor_attr, prefix, attrs)?;
        let anchor_key = anchor_attr.to_ascii_lowercase();
        let prefix_lower = prefix.to_lowercase();
        let bases = self.bases_or_root(bases).await?;
        for (i, base) in bases.iter().enumerate() {
            let earlier = bases.get(..i).unwrap_or_default();
            let request = want.iter().map(|a| a.to_string()).collect();
            self.raw_search_each(base, Scope::Subtree, &filter, request, |raw| {
                let (e, ranged) = build_entry(raw).map_err(|e| bad_entry(base, e))?;
                if !ranged.is_empty() {
                    // Only single-valued attributes are asked for; a range means a bad answer.
                    return Err(protocol(
                        &e.dn,
                        "a ranged value in a scan of single-valued attributes",
                    ));
                }
                if is_owned(&e, &anchor_key, &prefix_lower)
                    && !earlier.iter().any(|b| dn::is_within(&e.dn, b))
                {
                    f(e);
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

/// A join attribute's schema definition, as far as a lookup cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAttribute {
    /// lDAPDisplayName as the schema spells it.
    pub name: String,
    /// attributeSyntax OID (`2.5.5.12` Unicode string, `2.5.5.10` octet string, ...).
    pub syntax: String,
    /// In the partial attribute set: the Global Catalog holds it.
    pub in_global_catalog: bool,
}

/// The first DN found for each value, keyed back by `original` (the forms the caller gave).
fn first_dns<K: Ord + Clone>(
    found: BTreeMap<String, Vec<String>>,
    original: impl Fn(&str) -> Vec<K>,
) -> BTreeMap<K, String> {
    let mut out = BTreeMap::new();
    for (norm, dns) in found {
        if let Some(dn) = dns.into_iter().next() {
            for k in original(&norm) {
                out.insert(k, dn.clone());
            }
        }
    }
    out
}

/// The filter and attributes of a search for owned groups; refuses an anchor attribute that
/// is not a plain name and an empty prefix.
fn owned_query<'a>(
    anchor_attr: &'a str,
    prefix: &str,
    attrs: &[&'a str],
) -> Result<(String, Vec<&'a str>), AdError> {
    if !dn::is_attr_name(anchor_attr) || anchor_attr.contains(';') {
        return Err(AdError::Invalid(format!(
            "malformed anchor attribute {anchor_attr:?}"
        )));
    }
    if prefix.is_empty() {
        // an empty prefix would claim every group that has the attribute at all
        return Err(AdError::Invalid("empty anchor prefix".into()));
    }
    let filter = format!(
        "(&(objectClass=group)({anchor_attr}={}*))",
        dn::escape_filter_value(prefix)
    );
    let mut want: Vec<&str> = attrs.to_vec();
    for extra in [anchor_attr, "objectGUID"] {
        if !want.iter().any(|a| a.eq_ignore_ascii_case(extra)) {
            want.push(extra);
        }
    }
    Ok((filter, want))
}

/// AD matches case-insensitively; ownership needs the prefix as such.
fn is_owned(e: &AdEntry, anchor_key: &str, prefix_lower: &str) -> bool {
    e.values(anchor_key)
        .iter()
        .any(|v| v.to_lowercase().starts_with(prefix_lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_filters() {
        let one = vec!["(a=1)".to_string()];
        assert_eq!(or_filter(&one), "(a=1)");
        let two = vec!["(a=1)".to_string(), "(a=2)".to_string()];
        assert_eq!(or_filter(&two), "(|(a=1)(a=2))");
        assert!(ldap3::parse_filter(or_filter(&two)).is_ok());
        let many: Vec<String> = (0..RESOLVE_BATCH)
            .map(|i| dn::guid_filter(&Uuid::from_u128(i as u128)))
            .collect();
        assert!(ldap3::parse_filter(or_filter(&many)).is_ok());
        let sids: Vec<String> = (0..3)
            .map(|i| dn::sid_filter(&format!("S-1-5-21-1-2-3-{i}")).unwrap())
            .collect();
        assert!(ldap3::parse_filter(or_filter(&sids)).is_ok());
    }
}
