//! Distinguished names, filter escaping, SIDs and GUIDs: pure functions, no I/O.
//!
//! - RDN values are escaped per RFC 4514 (and AD's habits: `\,` style for the specials,
//!   `\20` for edge spaces, hex for control characters; non-ASCII stays UTF-8).
//! - DNs are parsed into RDN components with escapes resolved, so two spellings of the same
//!   DN compare equal (`dn_eq`, `is_within`) case-insensitively, as AD compares them.
//! - Filter values are escaped per RFC 4515; binary values (objectGUID, objectSid) as `\xx`.

use std::fmt::Write as _;

use uuid::Uuid;

use super::error::DnError;

/// One `type=value` pair of an RDN, with the value unescaped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ava {
    pub attr: String,
    pub value: String,
}

/// One RDN: usually a single AVA, several for multi-valued RDNs (`CN=a+UID=b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdn {
    pub avas: Vec<Ava>,
}

/// A parsed DN: RDNs from the leaf up to the root, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDn {
    pub rdns: Vec<Rdn>,
    /// Byte offset in the source text where each RDN after the first starts
    /// (so `parent` can return the remaining text exactly as given).
    starts: Vec<usize>,
}

/// Escapes an RDN attribute value (RFC 4514 section 2.4).
pub fn escape_rdn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '=' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\20"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `attr=escaped value`, e.g. `rdn("CN", "Doe, John")` is `CN=Doe\, John`.
pub fn rdn(attr: &str, value: &str) -> String {
    format!("{attr}={}", escape_rdn_value(value))
}

fn dn_err(dn: &str, reason: impl Into<String>) -> DnError {
    DnError::Dn {
        dn: dn.to_string(),
        reason: reason.into(),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a DN (RFC 4514, leniently accepting RFC 2253 habits: spaces around separators,
/// `;` as separator, quoted values). The empty string is the root (no RDNs).
pub fn parse_dn(dn: &str) -> Result<ParsedDn, DnError> {
    let b = dn.as_bytes();
    // The byte at `i`, if any: the parser never indexes past the end.
    let at = |i: usize| b.get(i).copied();
    let mut rdns = Vec::new();
    let mut starts = Vec::new();
    let mut avas = Vec::new();
    let mut i = 0;
    if dn.trim().is_empty() {
        return Ok(ParsedDn { rdns, starts });
    }
    loop {
        // attribute type
        while at(i) == Some(b' ') {
            i += 1;
        }
        let t0 = i;
        while at(i).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.') {
            i += 1;
        }
        let attr = dn.get(t0..i).unwrap_or_default();
        if attr.is_empty() {
            return Err(dn_err(dn, format!("missing attribute type at byte {t0}")));
        }
        while at(i) == Some(b' ') {
            i += 1;
        }
        if at(i) != Some(b'=') {
            return Err(dn_err(dn, format!("expected '=' after {attr:?}")));
        }
        i += 1;
        while at(i) == Some(b' ') {
            i += 1;
        }
        // value
        let mut val: Vec<u8> = Vec::new();
        if at(i) == Some(b'#') {
            // BER-encoded value: kept as its (lowercased) hex text
            let v0 = i;
            i += 1;
            while at(i).is_some_and(|c| c.is_ascii_hexdigit()) {
                i += 1;
            }
            if (i - v0 - 1) % 2 != 0 || i - v0 == 1 {
                return Err(dn_err(dn, "malformed #hex value"));
            }
            val.extend(
                dn.get(v0..i)
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .bytes(),
            );
            while at(i) == Some(b' ') {
                i += 1;
            }
        } else if at(i) == Some(b'"') {
            i += 1;
            loop {
                match at(i) {
                    None => return Err(dn_err(dn, "unterminated quoted value")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        i = unescape_at(dn, i, &mut val)?;
                    }
                    Some(c) => {
                        val.push(c);
                        i += 1;
                    }
                }
            }
            while at(i) == Some(b' ') {
                i += 1;
            }
        } else {
            // length of `val` up to the last escaped or non-space byte
            let mut significant = 0;
            while let Some(c) = at(i) {
                match c {
                    b',' | b';' | b'+' => break,
                    b'\\' => {
                        i = unescape_at(dn, i, &mut val)?;
                        significant = val.len();
                    }
                    0 => return Err(dn_err(dn, "unescaped NUL")),
                    c => {
                        val.push(c);
                        if c != b' ' {
                            significant = val.len();
                        }
                        i += 1;
                    }
                }
            }
            val.truncate(significant);
        }
        let value = String::from_utf8(val).map_err(|_| dn_err(dn, "value is not UTF-8"))?;
        avas.push(Ava {
            attr: attr.to_string(),
            value,
        });
        let Some(sep) = at(i) else {
            rdns.push(Rdn {
                avas: std::mem::take(&mut avas),
            });
            break;
        };
        match sep {
            b'+' => i += 1,
            b',' | b';' => {
                rdns.push(Rdn {
                    avas: std::mem::take(&mut avas),
                });
                i += 1;
                starts.push(i);
            }
            c => {
                return Err(dn_err(
                    dn,
                    format!("unexpected {:?} at byte {i}", c as char),
                ))
            }
        }
    }
    Ok(ParsedDn { rdns, starts })
}

/// Resolves the escape starting at `b[i] == '\\'`, appends the byte(s), returns the next index.
fn unescape_at(dn: &str, i: usize, out: &mut Vec<u8>) -> Result<usize, DnError> {
    let b = dn.as_bytes();
    let Some(&c) = b.get(i + 1) else {
        return Err(dn_err(dn, "dangling backslash"));
    };
    if let Some(h) = hex_val(c) {
        let lo = b
            .get(i + 2)
            .and_then(|&x| hex_val(x))
            .ok_or_else(|| dn_err(dn, format!("bad hex escape at byte {i}")))?;
        out.push(h << 4 | lo);
        return Ok(i + 3);
    }
    // `\` followed by a (possibly multi-byte) character: that character
    let ch = dn[i + 1..]
        .chars()
        .next()
        .ok_or_else(|| dn_err(dn, "dangling backslash"))?;
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    Ok(i + 1 + ch.len_utf8())
}

impl ParsedDn {
    /// Canonical text: lowercase types and values, canonical escaping, AVAs of a multi-valued
    /// RDN sorted. Two DNs naming the same entry have the same canonical text.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        for (n, r) in self.rdns.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let mut avas: Vec<(String, String)> = r
                .avas
                .iter()
                .map(|a| (a.attr.to_ascii_lowercase(), a.value.to_lowercase()))
                .collect();
            avas.sort();
            for (k, (attr, value)) in avas.iter().enumerate() {
                if k > 0 {
                    out.push('+');
                }
                out.push_str(attr);
                out.push('=');
                out.push_str(&escape_rdn_value(value));
            }
        }
        out
    }

    fn norm_rdns(&self) -> Vec<String> {
        self.rdns
            .iter()
            .map(|r| {
                ParsedDn {
                    rdns: vec![r.clone()],
                    starts: vec![],
                }
                .normalized()
            })
            .collect()
    }
}

/// Canonical form of a DN (see [`ParsedDn::normalized`]).
pub fn normalize(dn: &str) -> Result<String, DnError> {
    Ok(parse_dn(dn)?.normalized())
}

/// True when both DNs parse and name the same entry.
pub fn dn_eq(a: &str, b: &str) -> bool {
    match (normalize(a), normalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A DN in the form AD compares (case-folded, escapes canonical); unparsable DNs compare as
/// lowercased text.
pub fn key(dn: &str) -> String {
    normalize(dn).unwrap_or_else(|_| dn.to_lowercase())
}

/// True when `dn` is `base` or lies below it. Unparsable input is never within anything:
/// this guards ownership, so the safe answer is no.
pub fn is_within(dn: &str, base: &str) -> bool {
    let (Ok(d), Ok(b)) = (parse_dn(dn), parse_dn(base)) else {
        return false;
    };
    if b.rdns.len() > d.rdns.len() || d.rdns.is_empty() {
        return false;
    }
    let d = d.norm_rdns();
    let b = b.norm_rdns();
    d.get(d.len() - b.len()..) == Some(&b[..])
}

/// The parent DN, as written in `dn`. None for a single RDN, the root or an unparsable DN.
pub fn parent(dn: &str) -> Option<String> {
    let p = parse_dn(dn).ok()?;
    let start = *p.starts.first()?;
    Some(dn[start..].trim_start().to_string())
}

/// The first RDN's first value, unescaped (the CN of `CN=x,OU=y`).
pub fn leaf_value(dn: &str) -> Option<String> {
    let p = parse_dn(dn).ok()?;
    Some(p.rdns.first()?.avas.first()?.value.clone())
}

/// Escapes a filter assertion value (RFC 4515): `\ * ( )` and NUL.
pub fn escape_filter_value(value: &str) -> String {
    ldap3::ldap_escape(value).into_owned()
}

/// Escapes a binary filter value byte by byte: `\xx` for every byte.
pub fn escape_filter_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for b in bytes {
        let _ = write!(out, "\\{b:02x}");
    }
    out
}

/// `(objectGUID=\xx...)` for one GUID, in AD's byte order.
pub fn guid_filter(guid: &Uuid) -> String {
    format!(
        "(objectGUID={})",
        escape_filter_bytes(&guid_to_ad_bytes(guid))
    )
}

/// `(objectSid=\xx...)` for one SID given as `S-1-...`.
pub fn sid_filter(sid: &str) -> Result<String, DnError> {
    Ok(format!(
        "(objectSid={})",
        escape_filter_bytes(&sid_from_string(sid)?)
    ))
}

/// True for an attribute description usable in a filter or attribute list
/// (`name` or `name;option`, letters, digits, hyphens; or a numeric OID).
pub fn is_attr_name(name: &str) -> bool {
    !name.is_empty()
        && name.split(';').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'=')
        })
        && name
            .split(';')
            .next()
            .is_some_and(|base| !base.contains('='))
}

/// AD's byte order of a GUID (objectGUID): the first three fields little-endian.
pub fn guid_to_ad_bytes(guid: &Uuid) -> [u8; 16] {
    guid.to_bytes_le()
}

/// Reads an objectGUID value (16 bytes in AD order).
pub fn guid_from_ad_bytes(bytes: &[u8]) -> Result<Uuid, DnError> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| DnError::Guid {
        reason: format!("expected 16 bytes, got {}", bytes.len()),
    })?;
    Ok(Uuid::from_bytes_le(arr))
}

/// Binary SID (objectSid) to its string form `S-1-5-21-...`.
pub fn sid_to_string(bytes: &[u8]) -> Result<String, DnError> {
    let err = |reason: String| DnError::Sid {
        sid: escape_filter_bytes(bytes),
        reason,
    };
    if bytes.len() < 8 {
        return Err(err(format!("{} bytes is too short", bytes.len())));
    }
    let (revision, count) = match bytes {
        [r, c, ..] => (*r, usize::from(*c)),
        _ => return Err(err(format!("{} bytes is too short", bytes.len()))),
    };
    if bytes.len() != 8 + 4 * count {
        return Err(err(format!(
            "{} sub-authorities need {} bytes, got {}",
            count,
            8 + 4 * count,
            bytes.len()
        )));
    }
    let authority = bytes
        .get(2..8)
        .unwrap_or_default()
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let mut s = format!("S-{revision}-");
    if authority < (1 << 32) {
        let _ = write!(s, "{authority}");
    } else {
        let _ = write!(s, "0x{authority:012X}");
    }
    // The length was checked above: every sub-authority is 4 whole bytes after the 8 first.
    for chunk in bytes.get(8..).unwrap_or_default().chunks_exact(4) {
        let &[b0, b1, b2, b3] = chunk else { continue };
        let sub = u32::from_le_bytes([b0, b1, b2, b3]);
        let _ = write!(s, "-{sub}");
    }
    Ok(s)
}

/// String SID `S-1-5-21-...` to its binary form.
pub fn sid_from_string(sid: &str) -> Result<Vec<u8>, DnError> {
    let err = |reason: &str| DnError::Sid {
        sid: sid.to_string(),
        reason: reason.to_string(),
    };
    let mut parts = sid.split('-');
    match parts.next() {
        Some(p) if p.eq_ignore_ascii_case("S") => {}
        _ => return Err(err("does not start with S-")),
    }
    let revision: u8 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| err("bad revision"))?;
    let auth_text = parts.next().ok_or_else(|| err("missing authority"))?;
    let authority: u64 = if let Some(h) = auth_text
        .strip_prefix("0x")
        .or_else(|| auth_text.strip_prefix("0X"))
    {
        u64::from_str_radix(h, 16).map_err(|_| err("bad hex authority"))?
    } else {
        auth_text.parse().map_err(|_| err("bad authority"))?
    };
    if authority >= 1 << 48 {
        return Err(err("authority exceeds 48 bits"));
    }
    let subs: Vec<u32> = parts
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err("bad sub-authority"));
            }
            p.parse::<u32>()
                .map_err(|_| err("sub-authority exceeds 32 bits"))
        })
        .collect::<Result<_, _>>()?;
    if subs.len() > 15 {
        return Err(err("more than 15 sub-authorities"));
    }
    let mut out = Vec::with_capacity(8 + 4 * subs.len());
    out.push(revision);
    out.push(subs.len() as u8);
    out.extend_from_slice(&authority.to_be_bytes()[2..]);
    for s in subs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECIALS: &str = ", + \" \\ < > ; = #";

    fn roundtrip(value: &str) {
        let dn = format!(
            "{},OU=Cloud Groups,DC=corp,DC=example,DC=test",
            rdn("CN", value)
        );
        let p = parse_dn(&dn).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(p.rdns.len(), 5, "{dn}");
        assert_eq!(p.rdns[0].avas[0].value, value, "{dn}");
        assert_eq!(
            parent(&dn).as_deref(),
            Some("OU=Cloud Groups,DC=corp,DC=example,DC=test")
        );
        // ldap3's escaper (hex for everything) must parse to the same value
        let dn3 = format!("CN={},DC=test", ldap3::dn_escape(value));
        assert_eq!(
            parse_dn(&dn3).unwrap().rdns[0].avas[0].value,
            value,
            "{dn3}"
        );
        // case-insensitive equality, whatever the spelling of the escapes
        let lower = format!(
            "cn={},ou=cloud groups,dc=CORP,dc=example,dc=test",
            ldap3::dn_escape(value.to_lowercase())
        );
        assert!(dn_eq(&dn, &lower), "{dn} vs {lower}");
        assert!(is_within(&dn, "ou=CLOUD GROUPS,dc=corp,dc=example,dc=test"));
    }

    #[test]
    fn escapes_specials_and_edges() {
        assert_eq!(escape_rdn_value("Doe, John"), "Doe\\, John");
        assert_eq!(escape_rdn_value(" #x "), "\\20#x\\20");
        assert_eq!(escape_rdn_value("#x#"), "\\#x#");
        assert_eq!(
            escape_rdn_value(SPECIALS),
            "\\, \\+ \\\" \\\\ \\< \\> \\; \\= #"
        );
        assert_eq!(escape_rdn_value("a\0b\nc"), "a\\00b\\0ac");
        assert_eq!(escape_rdn_value("Grüße 東京"), "Grüße 東京");
        assert_eq!(escape_rdn_value(" "), "\\20");
        assert_eq!(escape_rdn_value("   "), "\\20 \\20");
        assert_eq!(rdn("CN", "a=b"), "CN=a\\=b");
    }

    #[test]
    fn roundtrips_many_values() {
        let alphabet: Vec<char> = ", +\"\\<>;=#aZ0 é東\0\n\t🎉".chars().collect();
        let mut fixed = vec![
            SPECIALS.to_string(),
            " lead".into(),
            "trail ".into(),
            " both ".into(),
            "#hash".into(),
            "x#".into(),
            "   ".into(),
            "\\".into(),
            "ünïcødé".into(),
            "a".repeat(300),
        ];
        // deterministic pseudo-random strings over an alphabet rich in specials
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 1..40 {
            for _ in 0..25 {
                let mut s = String::new();
                for _ in 0..len {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    s.push(alphabet[(state % alphabet.len() as u64) as usize]);
                }
                fixed.push(s);
            }
        }
        for v in &fixed {
            roundtrip(v);
        }
    }

    #[test]
    fn parses_ad_and_lenient_forms() {
        let p = parse_dn("CN=Doe\\2C John,OU=x,DC=corp").unwrap();
        assert_eq!(p.rdns[0].avas[0].value, "Doe, John");
        let p = parse_dn("cn = a , ou=b ; dc=c").unwrap();
        assert_eq!(p.rdns.len(), 3);
        assert_eq!(p.rdns[0].avas[0].value, "a");
        assert_eq!(p.rdns[0].avas[0].attr, "cn");
        let p = parse_dn("CN=\"Doe, John\",DC=x").unwrap();
        assert_eq!(p.rdns[0].avas[0].value, "Doe, John");
        let p = parse_dn("CN=Gr\\c3\\bc\\c3\\9fe,DC=x").unwrap();
        assert_eq!(p.rdns[0].avas[0].value, "Grüße");
        let p = parse_dn("CN=a+UID=b,DC=x").unwrap();
        assert_eq!(p.rdns[0].avas.len(), 2);
        let p = parse_dn("CN=#04024869,DC=x").unwrap();
        assert_eq!(p.rdns[0].avas[0].value, "#04024869");
        assert_eq!(parse_dn("").unwrap().rdns.len(), 0);
        // escaped trailing space is significant, unescaped is not
        assert_eq!(
            parse_dn("CN=a\\ ,DC=x").unwrap().rdns[0].avas[0].value,
            "a "
        );
        assert_eq!(parse_dn("CN=a  ,DC=x").unwrap().rdns[0].avas[0].value, "a");
        assert_eq!(
            parse_dn("CN=\\ a,DC=x").unwrap().rdns[0].avas[0].value,
            " a"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "CN",
            "=x",
            "CN=x,",
            "CN=x,,DC=y",
            "CN=a\\",
            "CN=a\\4",
            "CN=a\\zz\\4g",
            "CN=\"open",
            "CN=#abc",
            "CN=\\ff,DC=x",
        ] {
            assert!(parse_dn(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn compares_normalised_case_insensitively() {
        assert!(dn_eq(
            "CN=Doe\\, John,OU=Cloud Groups,DC=corp",
            "cn=doe\\2c john, ou=cloud groups, dc=CORP"
        ));
        assert!(dn_eq("CN=Éa,DC=x", "cn=éA,dc=X"));
        assert!(!dn_eq("CN=a,DC=x", "CN=a ,DC=y"));
        assert!(!dn_eq("CN=a\\20,DC=x", "CN=a,DC=x"));
        assert!(dn_eq("CN=a+UID=b,DC=x", "uid=B+cn=A,dc=x"));
        assert_eq!(
            normalize("CN=Doe\\2C John,OU=X").unwrap(),
            "cn=doe\\, john,ou=x"
        );
    }

    #[test]
    fn within_and_parent() {
        let base = "OU=Cloud Groups,DC=corp,DC=example,DC=test";
        assert!(is_within(
            "CN=g,OU=Cloud Groups,DC=corp,DC=example,DC=test",
            base
        ));
        assert!(is_within(
            "cn=g,ou=cloud groups,dc=CORP,dc=example,dc=test",
            base
        ));
        assert!(is_within(base, base));
        assert!(is_within(
            "CN=g,OU=sub,OU=Cloud Groups,DC=corp,DC=example,DC=test",
            base
        ));
        assert!(!is_within("CN=g,OU=Other,DC=corp,DC=example,DC=test", base));
        // a suffix match on text is not a DN match
        assert!(!is_within(
            "CN=g,OU=xOU=Cloud Groups,DC=corp,DC=example,DC=test",
            base
        ));
        assert!(!is_within(
            "CN=Cloud Groups\\,DC=corp,DC=example,DC=test",
            base
        ));
        assert!(!is_within("DC=example,DC=test", base));
        assert!(!is_within("garbage", base));
        assert!(!is_within("", base));
        assert_eq!(parent("CN=a\\,b,OU=x,DC=y").as_deref(), Some("OU=x,DC=y"));
        assert_eq!(parent("CN=a, OU=x").as_deref(), Some("OU=x"));
        assert_eq!(parent("DC=y"), None);
        assert_eq!(leaf_value("CN=a\\,b,OU=x").as_deref(), Some("a,b"));
    }

    #[test]
    fn filter_escaping() {
        assert_eq!(
            escape_filter_value("Sales (EMEA)*\\"),
            "Sales \\28EMEA\\29\\2a\\5c"
        );
        assert_eq!(escape_filter_value("a\0b"), "a\\00b");
        assert_eq!(escape_filter_value("Grüße"), "Grüße");
        assert_eq!(escape_filter_bytes(&[0x00, 0x10, 0xff]), "\\00\\10\\ff");
        for v in ["Sales (EMEA)*\\", "x)(|(cn=*", "\0", "plain"] {
            let f = format!("(cn={})", escape_filter_value(v));
            assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
            assert_eq!(ldap3::ldap_unescape(escape_filter_value(v)).unwrap(), v);
        }
        assert!(is_attr_name("msDS-ExternalDirectoryObjectId"));
        assert!(is_attr_name("member;range=0-1499"));
        assert!(!is_attr_name("cn)(x=*"));
        assert!(!is_attr_name(""));
        assert!(!is_attr_name("a=b"));
    }

    #[test]
    fn guid_byte_order() {
        let g = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let b = guid_to_ad_bytes(&g);
        assert_eq!(
            b,
            [
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(guid_from_ad_bytes(&b).unwrap(), g);
        assert!(guid_from_ad_bytes(&b[..15]).is_err());
        assert_eq!(
            guid_filter(&g),
            "(objectGUID=\\33\\22\\11\\00\\55\\44\\77\\66\\88\\99\\aa\\bb\\cc\\dd\\ee\\ff)"
        );
    }

    #[test]
    fn sid_conversions() {
        // well-known: BUILTIN\Administrators
        let b = sid_from_string("S-1-5-32-544").unwrap();
        assert_eq!(b, [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0]);
        assert_eq!(sid_to_string(&b).unwrap(), "S-1-5-32-544");
        for s in [
            "S-1-5-21-3623811015-3361044348-30300820-1013",
            "S-1-0-0",
            "S-1-1-0",
            "S-1-5-18",
            "S-1-0x123456789ABC-1-2",
            "S-1-5-21-4294967295-0-1",
        ] {
            let b = sid_from_string(s).unwrap();
            assert_eq!(sid_to_string(&b).unwrap(), s);
        }
        assert_eq!(
            sid_to_string(&sid_from_string("s-1-5-18").unwrap()).unwrap(),
            "S-1-5-18"
        );
        for bad in [
            "",
            "S-1",
            "X-1-5-18",
            "S-1-5-4294967296",
            "S-1-5--1",
            "S-1-281474976710656-1",
            "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
        ] {
            assert!(sid_from_string(bad).is_err(), "{bad}");
        }
        assert!(sid_to_string(&[1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0]).is_err());
        assert!(sid_to_string(&[1]).is_err());
        assert_eq!(
            sid_filter("S-1-5-32-544").unwrap(),
            "(objectSid=\\01\\02\\00\\00\\00\\00\\00\\05\\20\\00\\00\\00\\20\\02\\00\\00)"
        );
    }
}
