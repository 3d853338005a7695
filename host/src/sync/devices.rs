//! Devices Graph will not let the app read: an installation without the application
//! permission `Device.Read.All` gets 403 on `/devices/delta`. That is not a failed cycle:
//! users and groups sync as before, device members are reported with the permission named,
//! and nothing already written for devices is taken out of AD because of it.
//!
//! Whether the last devices round could be read is kept in `meta` ([`READABLE_KEY`]), so
//! `explain` (which reads no delta) says the same as the cycle, and a cycle that reads devices
//! again after a refusal compares every group once (see [`Readable::regained`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ad::AdError;
use crate::graph::model::CloudObject;
use crate::graph::GraphError;
use crate::state::StateError;

use super::directory::Directory;
use super::state::CycleState;
use super::types::{dn_key, ActualObject, DesiredObject, Unresolved};

/// `meta` key: `yes` when the last devices round was read, `no` when Graph refused it (403).
pub const READABLE_KEY: &str = "devices_readable";

/// The application permission device members need.
pub const PERMISSION: &str = "Device.Read.All";

/// What a device member's reason ends with while devices cannot be read.
pub const UNREADABLE: &str = "devices cannot be read (grant the app Device.Read.All)";

/// What the cycle logs (once, see [`warn_once`]) when Graph refuses the devices.
pub const WARNING: &str = "devices not read: the app lacks Device.Read.All (Graph answered 403); device members are reported, not written";

/// Whether the devices could be read, as the store last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// Never recorded (a new state file, or one from before devices were read).
    Unknown,
    Yes,
    No,
}

impl Readable {
    pub fn load<S: CycleState + ?Sized>(store: &S) -> Result<Readable, StateError> {
        Ok(match store.meta(READABLE_KEY)?.as_deref() {
            Some("yes") => Readable::Yes,
            Some("no") => Readable::No,
            _ => Readable::Unknown,
        })
    }

    /// Records `now` when it differs from `self` (a write only on a change: a daemon polling
    /// every second writes nothing for it while it stays the same).
    pub fn record<S: CycleState + ?Sized>(
        self,
        store: &mut S,
        now: Readable,
    ) -> Result<(), StateError> {
        let value = match now {
            Readable::Yes => "yes",
            Readable::No => "no",
            Readable::Unknown => return Ok(()),
        };
        if self != now {
            store.set_meta(READABLE_KEY, value)?;
        }
        Ok(())
    }

    /// Read again after a refusal: what was kept for devices meanwhile (computers held in
    /// their groups, device members reported) is compared anew.
    pub fn regained(self, now: Readable) -> bool {
        self == Readable::No && now == Readable::Yes
    }
}

/// Graph refused the devices for want of a permission (only 403: a 5xx, a throttle or a
/// broken connection still fails the cycle).
pub fn denied(e: &GraphError) -> bool {
    e.status() == Some(403)
}

/// Set once the warning was logged in this process; a devices round read re-arms it.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Logs [`WARNING`] once per process while the refusal lasts: once per `sync`, once per
/// daemon run (not once per poll), and again after devices were read in between.
pub fn warn_once(e: &GraphError) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(error = %e, "{WARNING}");
    } else {
        tracing::debug!(error = %e, "devices still not readable (Device.Read.All)");
    }
}

/// Devices were read: a later refusal is logged again.
pub fn rearm() {
    WARNED.store(false, Ordering::Relaxed);
}

/// Why a device member is not written while devices cannot be read; `cached` is the device
/// as an earlier round left it, when one did (its name), else the member's id is named.
pub fn unreadable_reason(id: &str, cached: Option<&CloudObject>) -> String {
    let name = match cached.and_then(|d| d.str_prop("displayName")) {
        Some(n) if !n.is_empty() => format!("{n:?}"),
        _ => id.to_string(),
    };
    format!("device {name} not resolved: {UNREADABLE}")
}

/// The groups among `unresolved` holding a device member that was not resolved because
/// devices cannot be read.
pub fn holding_unreadable(unresolved: &[Unresolved]) -> BTreeSet<String> {
    unresolved
        .iter()
        .filter(|u| u.member_type == "device" && u.reason.ends_with(UNREADABLE))
        .map(|u| u.group_id.clone())
        .collect()
}

/// Keeps the computers `actual` has in `desired`'s members: a group whose device members
/// cannot be resolved (devices unreadable) must not lose the computers written for them
/// earlier. Only the members the plan would remove are asked about (are they computer
/// objects?); users and groups that left are still removed. Returns how many were kept.
pub async fn keep_computers<D: Directory>(
    conn: &mut D,
    desired: &mut DesiredObject,
    actual: &ActualObject,
) -> Result<usize, AdError> {
    let Some(members) = desired.members.as_mut() else {
        return Ok(0);
    };
    let wanted: BTreeSet<String> = members.iter().map(|m| dn_key(m)).collect();
    let leaving: Vec<String> = actual
        .members
        .iter()
        .filter(|m| !wanted.contains(&dn_key(m)))
        .cloned()
        .collect();
    if leaving.is_empty() {
        return Ok(0);
    }
    let kept = conn.computers(&leaving).await?;
    let n = kept.len();
    members.extend(kept);
    members.sort();
    members.dedup();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_only_on_a_change_and_regained_only_after_a_refusal() {
        assert!(Readable::No.regained(Readable::Yes));
        assert!(!Readable::Unknown.regained(Readable::Yes));
        assert!(!Readable::Yes.regained(Readable::Yes));
        assert!(!Readable::No.regained(Readable::No));
    }

    #[test]
    fn the_reason_names_the_permission_and_the_device() {
        let d = CloudObject {
            id: "d1".into(),
            props: serde_json::json!({"displayName": "PC-01"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            ..Default::default()
        };
        assert_eq!(
            unreadable_reason("d1", Some(&d)),
            "device \"PC-01\" not resolved: devices cannot be read (grant the app Device.Read.All)"
        );
        assert_eq!(
            unreadable_reason("d2", None),
            "device d2 not resolved: devices cannot be read (grant the app Device.Read.All)"
        );
        let u = |g: &str, t: &str, r: &str| Unresolved {
            group_id: g.into(),
            member_id: "m".into(),
            member_type: t.into(),
            reason: r.into(),
        };
        let held = holding_unreadable(&[
            u("g1", "device", &unreadable_reason("d1", None)),
            u("g2", "device", "device \"X\" is not hybrid-joined"),
            u("g3", "user", "user has no matching AD account"),
        ]);
        assert_eq!(held, BTreeSet::from(["g1".to_string()]));
    }
}
