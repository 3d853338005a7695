//! What a sync cycle asks of Active Directory, as a trait: the cycle's only way to AD.
//!
//! Shaped from what the cycle does (find its objects by anchor, scan the managed OUs, match
//! members, write), not from LDAP's API, so a whole cycle runs against an in-memory directory
//! in unit tests (`sync/testing`) and against a DC through [`AdConn`] everywhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use crate::ad::join::JoinKey;
use crate::ad::schema::Schema;
use crate::ad::{self, AdConn, AdEntry, AdError, AttrChange, JoinAttribute, MemberChangeOutcome};

use super::types::anchor_filter;

/// One domain's directory, as a cycle uses it. A clone shares the connection (creates run a
/// few at a time on clones).
pub trait Directory: Clone + Send + Sync + 'static {
    /// Where it is, for messages (a DC's URL).
    fn url(&self) -> &str;

    /// The groups under `base` (subtree) whose anchor attributes hold `Group_<id>` for one of
    /// `ids`, with `want`. Every such object, also several per anchor: ownership is decided
    /// by the caller.
    fn find_by_anchor(
        &mut self,
        base: &str,
        ids: &[&String],
        by: &[&str],
        want: &[&str],
    ) -> impl Future<Output = Result<Vec<AdEntry>, AdError>> + Send;

    /// Every object under `bases` whose `anchor_attr` starts with `prefix`, handed to `f` as
    /// it arrives (single-valued `attrs` only); under overlapping bases, once. (`f` may hold
    /// the state store, which is not `Sync`: this one future is not `Send`.)
    fn for_each_owned_group<F: FnMut(AdEntry)>(
        &mut self,
        bases: &[String],
        anchor_attr: &str,
        prefix: &str,
        attrs: &[&str],
        f: F,
    ) -> impl Future<Output = Result<(), AdError>>;

    /// Join values → the DNs of the objects of `class` under `bases` that carry them (see
    /// [`AdConn::resolve_join`]).
    fn resolve_join(
        &mut self,
        key: &JoinKey,
        class: Option<&str>,
        values: &[String],
        bases: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, Vec<String>>, AdError>> + Send;

    /// The schema's definition of a join attribute (`None`: no such attribute).
    fn join_attribute(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Result<Option<JoinAttribute>, AdError>> + Send;

    /// The target schema.
    fn load_schema(&mut self) -> impl Future<Output = Result<Schema, AdError>> + Send;

    /// A directory for member lookups at `url` (a Global Catalog), with this one's account
    /// and trust.
    fn global_catalog(&self, url: &str) -> impl Future<Output = Result<Self, AdError>> + Send;

    fn add(
        &mut self,
        dn: &str,
        attrs: &BTreeMap<String, Vec<String>>,
    ) -> impl Future<Output = Result<(), AdError>> + Send;

    fn modify(
        &mut self,
        dn: &str,
        changes: &[AttrChange],
    ) -> impl Future<Output = Result<(), AdError>> + Send;

    /// Renames and/or moves; returns the new DN.
    fn rename(
        &mut self,
        dn: &str,
        new_rdn: &str,
        new_parent: Option<&str>,
    ) -> impl Future<Output = Result<String, AdError>> + Send;

    fn delete(&mut self, dn: &str) -> impl Future<Output = Result<(), AdError>> + Send;

    /// Whether an object is at `dn` (a dry run tells a create that would collide).
    fn exists(&mut self, dn: &str) -> impl Future<Output = Result<bool, AdError>> + Send;

    /// The DNs among `dns` that are computer objects (as given; an object not found is not
    /// one): what a group keeps while its device members cannot be resolved.
    fn computers(
        &mut self,
        dns: &[String],
    ) -> impl Future<Output = Result<BTreeSet<String>, AdError>> + Send;

    fn add_members(
        &mut self,
        group_dn: &str,
        members: &[String],
    ) -> impl Future<Output = Result<MemberChangeOutcome, AdError>> + Send;

    fn remove_members(
        &mut self,
        group_dn: &str,
        members: &[String],
    ) -> impl Future<Output = Result<MemberChangeOutcome, AdError>> + Send;
}

impl Directory for AdConn {
    fn url(&self) -> &str {
        AdConn::url(self)
    }

    async fn find_by_anchor(
        &mut self,
        base: &str,
        ids: &[&String],
        by: &[&str],
        want: &[&str],
    ) -> Result<Vec<AdEntry>, AdError> {
        self.search(base, ad::Scope::Subtree, &anchor_filter(ids, by), want)
            .await
    }

    async fn for_each_owned_group<F: FnMut(AdEntry)>(
        &mut self,
        bases: &[String],
        anchor_attr: &str,
        prefix: &str,
        attrs: &[&str],
        f: F,
    ) -> Result<(), AdError> {
        AdConn::for_each_owned_group(self, bases, anchor_attr, prefix, attrs, f).await
    }

    async fn resolve_join(
        &mut self,
        key: &JoinKey,
        class: Option<&str>,
        values: &[String],
        bases: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, AdError> {
        AdConn::resolve_join(self, key, class, values, bases).await
    }

    async fn join_attribute(&mut self, name: &str) -> Result<Option<JoinAttribute>, AdError> {
        AdConn::join_attribute(self, name).await
    }

    async fn load_schema(&mut self) -> Result<Schema, AdError> {
        AdConn::load_schema(self).await
    }

    async fn global_catalog(&self, url: &str) -> Result<Self, AdError> {
        // Only where to connect differs: an `ldap://` URL is upgraded with StartTLS unless
        // plain LDAP is allowed (and `starttls` off).
        let mut settings = self.settings().clone();
        let plain = url.to_ascii_lowercase().starts_with("ldap://");
        settings.urls = vec![url.to_string()];
        settings.discover = None;
        settings.starttls = plain && (settings.starttls || !settings.allow_plain);
        AdConn::connect(&settings).await
    }

    async fn add(
        &mut self,
        dn: &str,
        attrs: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), AdError> {
        AdConn::add(self, dn, attrs).await
    }

    async fn modify(&mut self, dn: &str, changes: &[AttrChange]) -> Result<(), AdError> {
        AdConn::modify(self, dn, changes).await
    }

    async fn rename(
        &mut self,
        dn: &str,
        new_rdn: &str,
        new_parent: Option<&str>,
    ) -> Result<String, AdError> {
        AdConn::rename(self, dn, new_rdn, new_parent).await
    }

    async fn delete(&mut self, dn: &str) -> Result<(), AdError> {
        AdConn::delete(self, dn).await
    }

    async fn exists(&mut self, dn: &str) -> Result<bool, AdError> {
        Ok(self.read_entry(dn, &["1.1"]).await?.is_some())
    }

    async fn computers(&mut self, dns: &[String]) -> Result<BTreeSet<String>, AdError> {
        // One base read per DN: only the members a plan would remove are asked, and a DN
        // filter would need a search base holding them all.
        let mut out = BTreeSet::new();
        for dn in dns {
            let is_computer = self
                .read_entry(dn, &["objectClass"])
                .await?
                .is_some_and(|e| {
                    e.values("objectClass")
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case("computer"))
                });
            if is_computer {
                out.insert(dn.clone());
            }
        }
        Ok(out)
    }

    async fn add_members(
        &mut self,
        group_dn: &str,
        members: &[String],
    ) -> Result<MemberChangeOutcome, AdError> {
        AdConn::add_members(self, group_dn, members).await
    }

    async fn remove_members(
        &mut self,
        group_dn: &str,
        members: &[String],
    ) -> Result<MemberChangeOutcome, AdError> {
        AdConn::remove_members(self, group_dn, members).await
    }
}
