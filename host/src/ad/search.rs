//! Reads: paged searches that return [`AdEntry`] values, and ranged retrieval of large
//! multi-valued attributes (`member;range=0-1499`, ...) so no value list is ever truncated.

use std::collections::BTreeMap;

use base64::Engine as _;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::asn1::{StructureTag, PL};
use uuid::Uuid;

use super::conn::AdConn;
use super::dn;
pub use super::error::EntryError;
use super::error::{AdError, AdOp};

/// Entries per page of a paged search (AD's MaxPageSize is 1000).
pub const PAGE_SIZE: i32 = 500;

/// Values per ranged read (AD's default MaxValRange is 1500).
pub const RANGE_STEP: usize = 1500;

/// Attributes always read with explicit ranges: AD returns at most MaxValRange values of
/// them per request. Samba does not force ranges, so asking for them explicitly is also what
/// keeps the range loop exercised.
const RANGED_ATTRS: &[&str] = &["member"];

/// Search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Base,
    OneLevel,
    Subtree,
}

impl From<Scope> for ldap3::Scope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Base => ldap3::Scope::Base,
            Scope::OneLevel => ldap3::Scope::OneLevel,
            Scope::Subtree => ldap3::Scope::Subtree,
        }
    }
}

/// One entry as read from AD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdEntry {
    pub dn: String,
    /// Attribute values by lowercased attribute name (range options stripped, all ranges
    /// merged). objectGUID and objectSid appear in their text forms; other values that are
    /// not UTF-8 appear base64-encoded.
    pub attrs: BTreeMap<String, Vec<String>>,
    pub guid: Option<Uuid>,
    /// objectSid as `S-1-5-21-...`.
    pub sid: Option<String>,
}

impl AdEntry {
    /// All values of an attribute (any case), empty when absent.
    pub fn values(&self, attr: &str) -> &[String] {
        self.attrs
            .get(&attr.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The first value of an attribute (any case).
    pub fn first(&self, attr: &str) -> Option<&str> {
        self.values(attr).first().map(String::as_str)
    }
}

/// An attribute description split into its name and an optional `range=lo-hi` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttrDesc {
    /// Lowercased name without options.
    pub name: String,
    pub range: Option<(usize, Option<usize>)>,
}

/// Parses `member;range=0-1499` / `member;range=1500-*` / `cn`.
pub(crate) fn parse_attr_desc(desc: &str) -> Result<AttrDesc, EntryError> {
    let desc_of = || desc.to_string();
    let mut parts = desc.split(';');
    let name = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut range = None;
    for opt in parts {
        let lower = opt.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("range=") {
            let (lo, hi) = r
                .split_once('-')
                .ok_or_else(|| EntryError::RangeOption { desc: desc_of() })?;
            let lo: usize = lo
                .parse()
                .map_err(|_| EntryError::RangeStart { desc: desc_of() })?;
            let hi = if hi == "*" {
                None
            } else {
                Some(
                    hi.parse::<usize>()
                        .map_err(|_| EntryError::RangeEnd { desc: desc_of() })?,
                )
            };
            if hi.is_some_and(|h| h < lo) {
                return Err(EntryError::RangeOrder { desc: desc_of() });
            }
            range = Some((lo, hi));
        }
    }
    Ok(AttrDesc { name, range })
}

/// A search result entry decoded without panicking (ldap3's `SearchEntry::construct` panics
/// on malformed input and reorders mixed binary values).
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

pub(crate) fn decode_entry(tag: StructureTag) -> Result<RawEntry, EntryError> {
    let bad = EntryError::Malformed;
    let mut parts = tag
        .match_id(4)
        .and_then(StructureTag::expect_constructed)
        .ok_or_else(|| bad("not an entry"))?
        .into_iter();
    let dn = parts
        .next()
        .and_then(StructureTag::expect_primitive)
        .ok_or_else(|| bad("no DN"))?;
    let dn = String::from_utf8(dn).map_err(|_| bad("DN is not UTF-8"))?;
    let list = match parts.next() {
        Some(StructureTag {
            payload: PL::C(list),
            ..
        }) => list,
        Some(_) => return Err(bad("attribute list is primitive")),
        None => Vec::new(),
    };
    let mut attrs = Vec::with_capacity(list.len());
    for pa in list {
        let mut pa = pa
            .expect_constructed()
            .ok_or_else(|| bad("partial attribute"))?
            .into_iter();
        let name = pa
            .next()
            .and_then(StructureTag::expect_primitive)
            .ok_or_else(|| bad("attribute type"))?;
        let name = String::from_utf8(name).map_err(|_| bad("attribute type is not UTF-8"))?;
        let vals = pa
            .next()
            .and_then(StructureTag::expect_constructed)
            .ok_or_else(|| bad("attribute values"))?
            .into_iter()
            .map(|v| v.expect_primitive().ok_or_else(|| bad("attribute value")))
            .collect::<Result<Vec<_>, _>>()?;
        attrs.push((name, vals));
    }
    Ok(RawEntry { dn, attrs })
}

fn text_value(attr: &str, v: Vec<u8>) -> String {
    match String::from_utf8(v) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(attr, "non-UTF-8 value kept as base64");
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes())
        }
    }
}

/// Values still to fetch for one attribute of one entry: the next range starts at `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingRange {
    pub attr: String,
    pub next: usize,
}

/// Builds an [`AdEntry`], merging ranged attributes; returns the ranges still to fetch.
pub(crate) fn build_entry(raw: RawEntry) -> Result<(AdEntry, Vec<PendingRange>), EntryError> {
    let mut entry = AdEntry {
        dn: raw.dn,
        ..AdEntry::default()
    };
    let mut pending = Vec::new();
    for (desc, vals) in raw.attrs {
        let d = parse_attr_desc(&desc)?;
        match d.name.as_str() {
            "objectguid" => {
                let Some(v) = vals.first() else { continue };
                let g = dn::guid_from_ad_bytes(v)?;
                entry.guid = Some(g);
                entry.attrs.insert(d.name, vec![g.to_string()]);
                continue;
            }
            "objectsid" => {
                let Some(v) = vals.first() else { continue };
                let s = dn::sid_to_string(v)?;
                entry.sid = Some(s.clone());
                entry.attrs.insert(d.name, vec![s]);
                continue;
            }
            _ => {}
        }
        if let Some((lo, hi)) = d.range {
            if lo != 0 {
                return Err(EntryError::FirstRange { desc });
            }
            if let Some(hi) = hi {
                if vals.len() != hi - lo + 1 {
                    return Err(EntryError::RangeCount {
                        desc,
                        got: vals.len(),
                        expected: hi - lo + 1,
                    });
                }
                pending.push(PendingRange {
                    attr: d.name.clone(),
                    next: hi + 1,
                });
            }
        }
        let slot = entry.attrs.entry(d.name.clone()).or_default();
        slot.extend(vals.into_iter().map(|v| text_value(&d.name, v)));
    }
    Ok((entry, pending))
}

/// The attribute list to send: ranged attributes get an explicit first range.
pub(crate) fn request_attrs(attrs: &[&str]) -> Vec<String> {
    attrs
        .iter()
        .map(|a| {
            if RANGED_ATTRS.iter().any(|r| r.eq_ignore_ascii_case(a)) {
                format!("{a};range=0-{}", RANGE_STEP - 1)
            } else {
                (*a).to_string()
            }
        })
        .collect()
}

/// An entry of a search under `dn` that could not be decoded.
pub(crate) fn bad_entry(dn: &str, cause: EntryError) -> AdError {
    AdError::Entry {
        op: AdOp::Search,
        dn: dn.to_string(),
        cause,
    }
}

pub(crate) fn protocol(dn: &str, reason: impl Into<String>) -> AdError {
    AdError::Protocol {
        op: AdOp::Search,
        dn: dn.to_string(),
        reason: reason.into(),
    }
}

impl AdConn {
    /// Searches `base` and returns every matching entry (paged for one-level and subtree
    /// scopes; referrals dropped). Ranged attributes (`member`) are read completely.
    pub async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<AdEntry>, AdError> {
        if ldap3::parse_filter(filter).is_err() {
            return Err(AdError::Invalid(format!(
                "malformed LDAP filter {filter:?}"
            )));
        }
        if let Some(a) = attrs
            .iter()
            .find(|a| !dn::is_attr_name(a) && **a != "*" && **a != "+")
        {
            return Err(AdError::Invalid(format!("malformed attribute name {a:?}")));
        }
        let raws = self
            .raw_search(base, scope, filter, request_attrs(attrs))
            .await?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let (mut entry, pending) = build_entry(raw).map_err(|e| bad_entry(base, e))?;
            for p in pending {
                let rest = self.read_range_from(&entry.dn, &p.attr, p.next).await?;
                entry.attrs.entry(p.attr).or_default().extend(rest);
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// The first entry a search finds, `None` when it finds none: the search stops there, so
    /// asking "is there any group below this OU" costs at most one page, not the OU's size.
    pub async fn first_entry(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Option<AdEntry>, AdError> {
        let mut found = None;
        let searched = self
            .raw_search_each(base, scope, filter, request_attrs(attrs), |e| {
                found = Some(e);
                // Stops the stream; the search is abandoned.
                Err(AdError::Invalid(String::new()))
            })
            .await;
        match (found, searched) {
            (Some(raw), _) => build_entry(raw)
                .map(|(e, _)| Some(e))
                .map_err(|e| bad_entry(base, e)),
            (None, Ok(())) => Ok(None),
            (None, Err(e)) => Err(e),
        }
    }

    /// Reads one entry; `None` when it does not exist.
    pub async fn read_entry(
        &mut self,
        dn: &str,
        attrs: &[&str],
    ) -> Result<Option<AdEntry>, AdError> {
        match self.search(dn, Scope::Base, "(objectClass=*)", attrs).await {
            Ok(mut v) => Ok(v.pop()),
            Err(e) if e.rc() == Some(32) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The rootDSE with the given attributes.
    pub async fn root_dse(&mut self, attrs: &[&str]) -> Result<AdEntry, AdError> {
        self.read_entry("", attrs)
            .await?
            .ok_or_else(|| protocol("", "no rootDSE"))
    }

    /// The domain's root DN (`defaultNamingContext`), read once per connection.
    pub async fn domain_root(&mut self) -> Result<String, AdError> {
        if let Some(r) = &self.domain_root {
            return Ok(r.clone());
        }
        let dse = self.root_dse(&["defaultNamingContext"]).await?;
        let root = dse
            .first("defaultNamingContext")
            .ok_or_else(|| protocol("", "rootDSE has no defaultNamingContext"))?
            .to_string();
        self.domain_root = Some(root.clone());
        Ok(root)
    }

    /// All `member` values of a group, read in ranges of [`RANGE_STEP`].
    pub async fn read_members(&mut self, group_dn: &str) -> Result<Vec<String>, AdError> {
        self.read_ranged(group_dn, "member").await
    }

    /// All values of a multi-valued attribute of one entry, read in explicit ranges until AD
    /// marks the last one (`;range=N-*`). Fails when the entry does not exist.
    pub async fn read_ranged(&mut self, dn: &str, attr: &str) -> Result<Vec<String>, AdError> {
        self.read_ranged_with_step(dn, attr, RANGE_STEP).await
    }

    /// As [`read_ranged`](Self::read_ranged) with a chosen range size.
    pub async fn read_ranged_with_step(
        &mut self,
        dn: &str,
        attr: &str,
        step: usize,
    ) -> Result<Vec<String>, AdError> {
        self.read_ranges(dn, attr, 0, step.max(1)).await
    }

    async fn read_range_from(
        &mut self,
        dn: &str,
        attr: &str,
        start: usize,
    ) -> Result<Vec<String>, AdError> {
        self.read_ranges(dn, attr, start, RANGE_STEP).await
    }

    async fn read_ranges(
        &mut self,
        dn: &str,
        attr: &str,
        mut start: usize,
        step: usize,
    ) -> Result<Vec<String>, AdError> {
        if !dn::is_attr_name(attr) || attr.contains(';') {
            return Err(AdError::Invalid(format!(
                "malformed attribute name {attr:?}"
            )));
        }
        let want = attr.to_ascii_lowercase();
        let mut out = Vec::new();
        loop {
            let req = format!("{attr};range={start}-{}", start + step - 1);
            let mut raws = self
                .raw_search(dn, Scope::Base, "(objectClass=*)", vec![req.clone()])
                .await?;
            let raw = raws
                .pop()
                .ok_or_else(|| protocol(dn, "entry vanished during a ranged read"))?;
            let hit = raw.attrs.into_iter().find_map(|(desc, vals)| {
                let d = parse_attr_desc(&desc).ok()?;
                (d.name == want).then_some((desc, d, vals))
            });
            let Some((desc, d, vals)) = hit else {
                // nothing at or after `start`: the previous range was the last one
                return Ok(out);
            };
            let n = vals.len();
            out.extend(vals.into_iter().map(|v| text_value(&want, v)));
            match d.range {
                None if start == 0 => return Ok(out),
                None => {
                    return Err(protocol(
                        dn,
                        format!("asked for {req:?}, got {desc:?} without a range"),
                    ))
                }
                Some((lo, _)) if lo != start => {
                    return Err(protocol(dn, format!("asked for {req:?}, got {desc:?}")))
                }
                Some((_, None)) => return Ok(out),
                Some((lo, Some(hi))) => {
                    if n != hi - lo + 1 {
                        return Err(protocol(
                            dn,
                            format!("{desc:?} carries {n} values, expected {}", hi - lo + 1),
                        ));
                    }
                    start = hi + 1;
                }
            }
        }
    }

    /// Runs a search and decodes the entries; checks the final result code.
    pub(crate) async fn raw_search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<String>,
    ) -> Result<Vec<RawEntry>, AdError> {
        let mut out = Vec::new();
        self.raw_search_each(base, scope, filter, attrs, |e| {
            out.push(e);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Like [`AdConn::raw_search`], handing each entry to `f` as its page arrives instead of
    /// collecting them: a scan of every owned object holds one page.
    pub(crate) async fn raw_search_each(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<String>,
        mut f: impl FnMut(RawEntry) -> Result<(), AdError>,
    ) -> Result<(), AdError> {
        let map_err = |e| AdError::from_ldap(AdOp::Search, base, e);
        let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = if scope == Scope::Base {
            vec![Box::new(EntriesOnly::new())]
        } else {
            vec![
                Box::new(EntriesOnly::new()),
                Box::new(PagedResults::new(PAGE_SIZE)),
            ]
        };
        let mut stream = self
            .ldap()
            .await?
            .streaming_search_with(adapters, base, scope.into(), filter, attrs)
            .await
            .map_err(map_err)?;
        loop {
            let handed = match stream.next().await {
                Ok(Some(re)) => decode_entry(re.0)
                    .map_err(|e| bad_entry(base, e))
                    .and_then(&mut f),
                Ok(None) => break,
                Err(e) => Err(map_err(e)),
            };
            if let Err(e) = handed {
                let _ = stream.finish().await;
                return Err(e);
            }
        }
        let res = stream.finish().await;
        AdError::check(AdOp::Search, base, &res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::TagClass;

    fn prim(id: u64, v: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(v.to_vec()),
        }
    }

    fn cons(id: u64, class: TagClass, v: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(v),
        }
    }

    fn entry_tag(dn: &str, attrs: &[(&str, Vec<&[u8]>)]) -> StructureTag {
        let list = attrs
            .iter()
            .map(|(n, vs)| {
                cons(
                    16,
                    TagClass::Universal,
                    vec![
                        prim(4, n.as_bytes()),
                        cons(
                            17,
                            TagClass::Universal,
                            vs.iter().map(|v| prim(4, v)).collect(),
                        ),
                    ],
                )
            })
            .collect();
        cons(
            4,
            TagClass::Application,
            vec![prim(4, dn.as_bytes()), cons(16, TagClass::Universal, list)],
        )
    }

    #[test]
    fn attr_descriptions() {
        assert_eq!(
            parse_attr_desc("member;range=0-1499").unwrap(),
            AttrDesc {
                name: "member".into(),
                range: Some((0, Some(1499)))
            }
        );
        assert_eq!(
            parse_attr_desc("Member;Range=1500-*").unwrap().range,
            Some((1500, None))
        );
        assert_eq!(parse_attr_desc("cn").unwrap().range, None);
        assert!(parse_attr_desc("member;range=x-1").is_err());
        assert!(parse_attr_desc("member;range=10-1").is_err());
        assert!(parse_attr_desc("member;range=10").is_err());
    }

    #[test]
    fn request_attrs_asks_member_ranges() {
        assert_eq!(
            request_attrs(&["cn", "Member", "mail"]),
            vec!["cn", "Member;range=0-1499", "mail"]
        );
    }

    #[test]
    fn decodes_guid_sid_and_binary() {
        let guid = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let gb = dn::guid_to_ad_bytes(&guid);
        let sid = dn::sid_from_string("S-1-5-21-1-2-3-1105").unwrap();
        // a GUID whose bytes happen to be valid UTF-8 still decodes (ldap3 would put it in attrs)
        let ascii_guid = *b"0123456789abcdef";
        let tag = entry_tag(
            "CN=g,DC=x",
            &[
                ("objectGUID", vec![&gb]),
                ("objectSid", vec![&sid]),
                ("CN", vec![b"g"]),
                ("thumbnailPhoto", vec![&[0xff, 0xfe]]),
            ],
        );
        let (e, pending) = build_entry(decode_entry(tag).unwrap()).unwrap();
        assert!(pending.is_empty());
        assert_eq!(e.dn, "CN=g,DC=x");
        assert_eq!(e.guid, Some(guid));
        assert_eq!(e.sid.as_deref(), Some("S-1-5-21-1-2-3-1105"));
        assert_eq!(e.first("objectguid"), Some(guid.to_string().as_str()));
        assert_eq!(e.first("cn"), Some("g"));
        assert_eq!(e.first("thumbnailphoto"), Some("//4="));
        let tag = entry_tag("CN=h", &[("objectGUID", vec![&ascii_guid])]);
        let (e, _) = build_entry(decode_entry(tag).unwrap()).unwrap();
        assert_eq!(e.guid, Some(Uuid::from_bytes_le(ascii_guid)));
    }

    #[test]
    fn ranged_entry_reports_pending() {
        let vals: Vec<Vec<u8>> = (0..3).map(|i| format!("CN=u{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = vals.iter().map(Vec::as_slice).collect();
        let tag = entry_tag(
            "CN=g",
            &[("member;range=0-2", refs.clone()), ("member", vec![])],
        );
        let (e, pending) = build_entry(decode_entry(tag).unwrap()).unwrap();
        assert_eq!(e.values("member").len(), 3);
        assert_eq!(
            pending,
            vec![PendingRange {
                attr: "member".into(),
                next: 3
            }]
        );
        // final range: nothing pending
        let tag = entry_tag("CN=g", &[("member;range=0-*", refs.clone())]);
        let (_, pending) = build_entry(decode_entry(tag).unwrap()).unwrap();
        assert!(pending.is_empty());
        // a range that does not hold what it claims is refused, never truncated
        let tag = entry_tag("CN=g", &[("member;range=0-5", refs)]);
        assert!(build_entry(decode_entry(tag).unwrap()).is_err());
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        assert!(decode_entry(prim(4, b"x")).is_err());
        let t = cons(4, TagClass::Application, vec![]);
        assert!(decode_entry(t).is_err());
        let t = cons(
            4,
            TagClass::Application,
            vec![
                prim(4, b"CN=x"),
                cons(16, TagClass::Universal, vec![prim(4, b"a")]),
            ],
        );
        assert!(decode_entry(t).is_err());
        let tag = entry_tag("CN=h", &[("objectGUID", vec![b"short"])]);
        assert!(build_entry(decode_entry(tag).unwrap()).is_err());
    }
}
