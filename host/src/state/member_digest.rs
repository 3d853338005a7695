//! A group's member set as one fixed-size value that a member change updates in place: the sum
//! (four 64-bit lanes, wrapping) of each member id's SHA-256. The sum does not depend on the
//! order the members came in, and adding or removing one member is one hash, so the cache keeps
//! it with the group and a cycle fingerprints a big group's members without reading them.

use sha2::{Digest, Sha256};

/// The digest of a set of member ids; [`MemberDigest::default`] is the empty set's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MemberDigest([u64; 4]);

impl MemberDigest {
    /// The digest of `ids` (each id once: a set).
    pub fn of<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d = MemberDigest::default();
        for id in ids {
            d.add(id);
        }
        d
    }

    /// `id` joined the set (it was not in it).
    pub fn add(&mut self, id: &str) {
        for (lane, v) in self.0.iter_mut().zip(lanes(id)) {
            *lane = lane.wrapping_add(v);
        }
    }

    /// `id` left the set (it was in it).
    pub fn remove(&mut self, id: &str) {
        for (lane, v) in self.0.iter_mut().zip(lanes(id)) {
            *lane = lane.wrapping_sub(v);
        }
    }

    /// 64 hex digits, as stored.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|l| format!("{l:016x}")).collect()
    }

    /// The stored form back; `None` when it is not 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u64; 4];
        for (i, lane) in out.iter_mut().enumerate() {
            *lane = u64::from_str_radix(text.get(i * 16..i * 16 + 16)?, 16).ok()?;
        }
        Some(MemberDigest(out))
    }

    /// The bytes a fingerprint takes in.
    pub fn bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, lane) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&lane.to_le_bytes());
        }
        out
    }
}

fn lanes(id: &str) -> [u64; 4] {
    let h = Sha256::digest(id.as_bytes());
    let mut out = [0u64; 4];
    for (lane, chunk) in out.iter_mut().zip(h.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *lane = u64::from_le_bytes(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_sets_whatever_the_order_and_the_path_to_it() {
        let a = MemberDigest::of(["u1", "u2", "u3"]);
        assert_eq!(a, MemberDigest::of(["u3", "u1", "u2"]));
        assert_ne!(a, MemberDigest::of(["u1", "u2"]));
        assert_ne!(a, MemberDigest::of(["u1", "u2", "u4"]));
        let mut b = MemberDigest::of(["u1", "u4"]);
        b.remove("u4");
        b.add("u3");
        b.add("u2");
        assert_eq!(a, b);
        let mut empty = a;
        for id in ["u2", "u1", "u3"] {
            empty.remove(id);
        }
        assert_eq!(empty, MemberDigest::default());
    }

    #[test]
    fn the_stored_form_reads_back_and_bad_text_is_refused() {
        let a = MemberDigest::of(["3f2b0c1e-0000-4000-8000-000000000001"]);
        let text = a.to_hex();
        assert_eq!(text.len(), 64);
        assert_eq!(MemberDigest::from_hex(&text), Some(a));
        assert_eq!(MemberDigest::from_hex(&text[1..]), None);
        assert_eq!(MemberDigest::from_hex(&"g".repeat(64)), None);
        assert_eq!(MemberDigest::from_hex(&"é".repeat(32)), None);
        assert_ne!(a.bytes(), MemberDigest::default().bytes());
    }
}
