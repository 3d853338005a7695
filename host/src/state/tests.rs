//! Store tests: persistence, migrations, every delta case, atomicity, records.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::*;
use crate::graph::model::{DeltaItem, MemberRef, RemovedReason};

const USER: &str = "#microsoft.graph.user";
const GROUP: &str = "#microsoft.graph.group";

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("test props must be an object, got {other}"),
    }
}

fn member(id: &str, t: &str) -> (String, MemberRef) {
    (
        id.to_string(),
        MemberRef {
            odata_type: t.to_string(),
            id: id.to_string(),
        },
    )
}

fn item(id: &str, p: Value, members: &[(&str, &str)]) -> DeltaItem {
    DeltaItem {
        id: id.to_string(),
        props: props(p),
        members_added: members.iter().map(|(m, t)| member(m, t)).collect(),
        ..Default::default()
    }
}

fn removed(id: &str, reason: RemovedReason) -> DeltaItem {
    DeltaItem {
        id: id.to_string(),
        removed: Some(reason),
        ..Default::default()
    }
}

fn round(full: bool, link: &str, items: Vec<DeltaItem>) -> DeltaRound {
    DeltaRound {
        items: items.into_iter().map(|i| (i.id.clone(), i)).collect(),
        delta_link: link.to_string(),
        full,
    }
}

fn ids(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn member_ids(o: &CloudObject) -> Vec<&str> {
    o.members.keys().map(String::as_str).collect()
}

fn mem() -> Store {
    match Store::open_in_memory() {
        Ok(s) => s,
        Err(e) => panic!("in-memory store: {e}"),
    }
}

/// A store holding g1 {u1,u2}, g2 {u3} and g3 {} from a full round with link "L1".
fn seeded() -> anyhow::Result<Store> {
    let mut s = mem();
    s.apply_delta(
        ObjectKind::Group,
        &round(
            true,
            "L1",
            vec![
                item(
                    "g1",
                    json!({"displayName": "One", "mail": "one@x"}),
                    &[("u1", USER), ("u2", USER)],
                ),
                item("g2", json!({"displayName": "Two"}), &[("u3", USER)]),
                item("g3", json!({"displayName": "Three"}), &[]),
            ],
        ),
    )?;
    Ok(s)
}

fn table_count(s: &Store, table: &str) -> i64 {
    s.conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap_or(-1)
}

#[test]
fn store_is_send() {
    fn send<T: Send>() {}
    send::<Store>();
}

#[test]
fn open_reopen_persists_with_pragmas() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path)?;
        s.apply_delta(
            ObjectKind::Group,
            &round(
                true,
                "L1",
                vec![item("g1", json!({"displayName": "One"}), &[("u1", USER)])],
            ),
        )?;
        s.put_anchor(&Anchor {
            cloud_id: "g1".into(),
            object_guid: "guid-1".into(),
            dn: "CN=One,OU=X".into(),
            rule: "default".into(),
            updated_at: String::new(),
        })?;
        s.put_applied("g1", "h1")?;
        let run = s.begin_run(crate::state::RunMode::Sync)?;
        s.finish_run(run, crate::state::RunStatus::Ok, &json!({"written": 1}))?;
    }
    let s = Store::open(&path)?;
    assert_eq!(s.delta_link(ObjectKind::Group)?.as_deref(), Some("L1"));
    let g1 = s.load_object(ObjectKind::Group, "g1")?;
    assert_eq!(g1.as_ref().map(member_ids), Some(vec!["u1"]));
    assert_eq!(
        s.anchors()?.get("g1").map(|a| a.dn.as_str()),
        Some("CN=One,OU=X")
    );
    assert_eq!(
        s.applied_hashes()?.get("g1").map(String::as_str),
        Some("h1")
    );
    assert_eq!(s.recent_runs(5)?.len(), 1);

    let journal: String = s
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    let sync: i64 = s
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))?;
    let fk: i64 = s
        .conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    assert_eq!((journal.as_str(), sync, fk), ("wal", 2, 1));
    assert!(s.path().ends_with("state.db"), "{}", s.path());
    Ok(())
}

#[test]
fn open_without_parent_directory_is_a_clear_error() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let path = dir.path().join("missing").join("state.db");
    let err = Store::open(&path).err().map(|e| e.to_string());
    let want = format!(
        "state file {}: directory {} does not exist (create it before starting)",
        path.display(),
        dir.path().join("missing").display()
    );
    assert_eq!(err, Some(want));
}

#[test]
fn open_non_database_file_names_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![b'x'; 4096])?;
    let err = Store::open(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with(&format!("state file {}", path.display())),
        "{err}"
    );
    assert!(err.contains("not a database"), "{err}");
    Ok(())
}

#[test]
fn migrations_are_idempotent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    let schema_of = |s: &Store| -> anyhow::Result<Vec<String>> {
        let mut st = s
            .conn
            .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")?;
        let rows = st
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    };
    let first = {
        let mut s = Store::open(&path)?;
        assert_eq!(s.schema_version()?, SCHEMA_VERSION);
        schema::migrate(&mut s.conn)?; // again on the same connection
        schema_of(&s)?
    };
    let s = Store::open(&path)?;
    assert_eq!(s.schema_version()?, SCHEMA_VERSION);
    assert_eq!(schema_of(&s)?, first);
    for table in [
        "delta_link",
        "cloud_object",
        "cloud_member",
        "anchor",
        "applied",
        "run",
        "run_event",
    ] {
        assert!(
            first
                .iter()
                .any(|sql| sql.starts_with(&format!("CREATE TABLE {table} "))),
            "{table}"
        );
    }
    Ok(())
}

#[test]
fn newer_schema_version_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    drop(Store::open(&path)?);
    {
        let c = rusqlite::Connection::open(&path)?;
        c.pragma_update(None, "user_version", 99)?;
    }
    let err = Store::open(&path).err().map(|e| e.to_string());
    assert_eq!(
        err,
        Some(format!(
            "state file {}: schema version 99 is newer than this build supports ({SCHEMA_VERSION})",
            path.display()
        ))
    );
    // Refusing must not have touched the file.
    let c = rusqlite::Connection::open(&path)?;
    let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(v, 99);
    Ok(())
}

#[test]
fn full_round_stores_objects_members_and_link() -> anyhow::Result<()> {
    let s = seeded()?;
    assert_eq!(s.delta_link(ObjectKind::Group)?.as_deref(), Some("L1"));
    assert_eq!(s.delta_link(ObjectKind::User)?, None);
    let all = s.load_objects(ObjectKind::Group)?;
    assert_eq!(
        all.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&["g1", "g2", "g3"])
    );
    let g1 = &all["g1"];
    assert_eq!(member_ids(g1), vec!["u1", "u2"]);
    assert_eq!(g1.members["u1"].odata_type, USER);
    assert_eq!(g1.str_prop("mail"), Some("one@x"));
    assert!(!g1.soft_deleted);
    assert!(all["g3"].members.is_empty());
    assert_eq!(s.load_object(ObjectKind::Group, "g1")?.as_ref(), Some(g1));
    assert_eq!(s.load_object(ObjectKind::Group, "nope")?, None);
    assert_eq!(s.load_object(ObjectKind::User, "g1")?, None);
    Ok(())
}

#[test]
fn full_round_reports_every_item_as_changed() -> anyhow::Result<()> {
    let mut s = mem();
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            true,
            "L1",
            vec![item("a", json!({}), &[]), item("b", json!({}), &[])],
        ),
    )?;
    assert_eq!(
        ch,
        CacheChanges {
            changed: ids(&["a", "b"]),
            deleted: BTreeSet::new()
        }
    );
    Ok(())
}

#[test]
fn incremental_round_overlays_properties() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            false,
            "L2",
            vec![item(
                "g1",
                json!({"displayName": "Uno", "mail": null, "description": "d"}),
                &[],
            )],
        ),
    )?;
    assert_eq!(
        ch,
        CacheChanges {
            changed: ids(&["g1"]),
            deleted: BTreeSet::new()
        }
    );
    let g1 = s.load_object(ObjectKind::Group, "g1")?.unwrap_or_default();
    assert_eq!(
        Value::Object(g1.props.clone()),
        json!({"displayName": "Uno", "mail": null, "description": "d"})
    );
    // Members untouched by a property-only change; other groups untouched.
    assert_eq!(member_ids(&g1), vec!["u1", "u2"]);
    assert_eq!(s.load_objects(ObjectKind::Group)?.len(), 3);
    assert_eq!(s.delta_link(ObjectKind::Group)?.as_deref(), Some("L2"));
    Ok(())
}

#[test]
fn incremental_round_inserts_new_object() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            false,
            "L2",
            vec![item("g4", json!({"displayName": "Four"}), &[("g1", GROUP)])],
        ),
    )?;
    assert_eq!(ch.changed, ids(&["g4"]));
    let g4 = s.load_object(ObjectKind::Group, "g4")?.unwrap_or_default();
    assert_eq!(g4.str_prop("displayName"), Some("Four"));
    assert_eq!(g4.members["g1"].odata_type, GROUP);
    assert_eq!(s.load_objects(ObjectKind::Group)?.len(), 4);
    Ok(())
}

#[test]
fn incremental_members_added_and_removed() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let mut it = item("g1", json!({}), &[("u9", USER), ("g2", GROUP)]);
    it.members_removed = ids(&["u1", "not-a-member"]);
    let ch = s.apply_delta(ObjectKind::Group, &round(false, "L2", vec![it]))?;
    assert_eq!(ch.changed, ids(&["g1"]));
    let g1 = s.load_object(ObjectKind::Group, "g1")?.unwrap_or_default();
    assert_eq!(member_ids(&g1), vec!["g2", "u2", "u9"]);
    assert_eq!(
        g1.str_prop("displayName"),
        Some("One"),
        "empty props keep the cache"
    );
    // Other groups' members untouched.
    let g2 = s.load_object(ObjectKind::Group, "g2")?.unwrap_or_default();
    assert_eq!(member_ids(&g2), vec!["u3"]);
    Ok(())
}

#[test]
fn soft_delete_keeps_props_and_members() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            false,
            "L2",
            vec![
                removed("g1", RemovedReason::Changed),
                removed("ghost", RemovedReason::Changed),
            ],
        ),
    )?;
    // An object never cached has nothing to soft delete.
    assert_eq!(
        ch,
        CacheChanges {
            changed: ids(&["g1"]),
            deleted: BTreeSet::new()
        }
    );
    let g1 = s.load_object(ObjectKind::Group, "g1")?.unwrap_or_default();
    assert!(g1.soft_deleted);
    assert_eq!(g1.str_prop("displayName"), Some("One"));
    // Delta's bare `@removed` carries no time: the cache records when the delete was seen.
    let seen = g1.str_prop("deletedDateTime").unwrap_or_default();
    assert!(seen.len() >= 20 && seen.ends_with('Z'), "{seen:?}");
    assert_eq!(member_ids(&g1), vec!["u1", "u2"]);
    assert_eq!(s.load_object(ObjectKind::Group, "ghost")?, None);
    Ok(())
}

#[test]
fn restore_clears_soft_delete_and_reports_changed() -> anyhow::Result<()> {
    let mut s = seeded()?;
    s.apply_delta(
        ObjectKind::Group,
        &round(false, "L2", vec![removed("g1", RemovedReason::Changed)]),
    )?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            false,
            "L3",
            vec![item("g1", json!({"displayName": "One again"}), &[])],
        ),
    )?;
    assert_eq!(ch.changed, ids(&["g1"]));
    let g1 = s.load_object(ObjectKind::Group, "g1")?.unwrap_or_default();
    assert!(!g1.soft_deleted);
    assert_eq!(g1.str_prop("deletedDateTime"), None);
    assert_eq!(g1.str_prop("displayName"), Some("One again"));
    assert_eq!(g1.str_prop("mail"), Some("one@x"));
    assert_eq!(member_ids(&g1), vec!["u1", "u2"]);
    Ok(())
}

#[test]
fn hard_delete_removes_row_and_members() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            false,
            "L2",
            vec![
                removed("g1", RemovedReason::Deleted),
                removed("ghost", RemovedReason::Deleted),
            ],
        ),
    )?;
    assert_eq!(
        ch,
        CacheChanges {
            changed: BTreeSet::new(),
            deleted: ids(&["g1"])
        }
    );
    assert_eq!(s.load_object(ObjectKind::Group, "g1")?, None);
    let n: i64 = s.conn.query_row(
        "SELECT count(*) FROM cloud_member WHERE group_id = 'g1'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(n, 0);
    assert_eq!(s.load_objects(ObjectKind::Group)?.len(), 2);
    Ok(())
}

#[test]
fn hard_delete_of_soft_deleted_object() -> anyhow::Result<()> {
    let mut s = seeded()?;
    s.apply_delta(
        ObjectKind::Group,
        &round(false, "L2", vec![removed("g2", RemovedReason::Changed)]),
    )?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(false, "L3", vec![removed("g2", RemovedReason::Deleted)]),
    )?;
    assert_eq!(ch.deleted, ids(&["g2"]));
    assert_eq!(s.load_object(ObjectKind::Group, "g2")?, None);
    Ok(())
}

#[test]
fn full_round_replaces_cache() -> anyhow::Result<()> {
    let mut s = seeded()?;
    // g2 soft deleted before the reset: a full round that omits it removes it.
    s.apply_delta(
        ObjectKind::Group,
        &round(false, "L2", vec![removed("g2", RemovedReason::Changed)]),
    )?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            true,
            "L3",
            vec![
                item(
                    "g1",
                    json!({"displayName": "One"}),
                    &[("u2", USER), ("u7", USER)],
                ),
                item("g3", json!({"displayName": "Three"}), &[("u1", USER)]),
                item("g5", json!({"displayName": "Five"}), &[]),
            ],
        ),
    )?;
    assert_eq!(
        ch,
        CacheChanges {
            changed: ids(&["g1", "g3", "g5"]),
            deleted: ids(&["g2"])
        }
    );
    let all = s.load_objects(ObjectKind::Group)?;
    assert_eq!(
        all.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&["g1", "g3", "g5"])
    );
    assert_eq!(
        member_ids(&all["g1"]),
        vec!["u2", "u7"],
        "member set replaced, u1 gone"
    );
    assert_eq!(member_ids(&all["g3"]), vec!["u1"]);
    // A full round carries every property: ones it lacks are gone.
    assert_eq!(all["g1"].str_prop("mail"), None);
    let orphans: i64 = s.conn.query_row(
        "SELECT count(*) FROM cloud_member WHERE group_id = 'g2'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(orphans, 0);
    assert_eq!(s.delta_link(ObjectKind::Group)?.as_deref(), Some("L3"));
    Ok(())
}

#[test]
fn full_round_with_soft_deleted_item_keeps_it() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let ch = s.apply_delta(
        ObjectKind::Group,
        &round(
            true,
            "L2",
            vec![
                item("g1", json!({"displayName": "One"}), &[("u1", USER)]),
                removed("g2", RemovedReason::Changed),
            ],
        ),
    )?;
    assert_eq!(
        ch,
        CacheChanges {
            changed: ids(&["g1", "g2"]),
            deleted: ids(&["g3"])
        }
    );
    let g2 = s.load_object(ObjectKind::Group, "g2")?.unwrap_or_default();
    assert!(g2.soft_deleted);
    assert_eq!(member_ids(&g2), vec!["u3"]);
    Ok(())
}

#[test]
fn empty_full_round_empties_the_kind_only() -> anyhow::Result<()> {
    let mut s = seeded()?;
    s.apply_delta(
        ObjectKind::User,
        &round(
            true,
            "U1",
            vec![item("u1", json!({"userPrincipalName": "a@x"}), &[])],
        ),
    )?;
    let ch = s.apply_delta(ObjectKind::User, &round(true, "U2", vec![]))?;
    assert_eq!(ch.deleted, ids(&["u1"]));
    assert!(s.load_objects(ObjectKind::User)?.is_empty());
    assert_eq!(
        s.load_objects(ObjectKind::Group)?.len(),
        3,
        "groups untouched"
    );
    assert_eq!(s.delta_link(ObjectKind::Group)?.as_deref(), Some("L1"));
    assert_eq!(s.delta_link(ObjectKind::User)?.as_deref(), Some("U2"));
    Ok(())
}

#[test]
fn users_have_no_member_rows() -> anyhow::Result<()> {
    let mut s = mem();
    s.apply_delta(
        ObjectKind::User,
        &round(true, "U1", vec![item("u1", json!({}), &[("x", USER)])]),
    )?;
    assert_eq!(table_count(&s, "cloud_member"), 0);
    assert!(s
        .load_object(ObjectKind::User, "u1")?
        .is_some_and(|u| u.members.is_empty()));
    Ok(())
}

#[test]
fn clear_delta_link_forgets_only_that_kind() -> anyhow::Result<()> {
    let mut s = seeded()?;
    s.apply_delta(ObjectKind::User, &round(true, "U1", vec![]))?;
    s.clear_delta_link(ObjectKind::Group)?;
    assert_eq!(s.delta_link(ObjectKind::Group)?, None);
    assert_eq!(s.delta_link(ObjectKind::User)?.as_deref(), Some("U1"));
    assert_eq!(
        s.load_objects(ObjectKind::Group)?.len(),
        3,
        "cache kept until the full round"
    );
    Ok(())
}

#[test]
fn a_link_is_stored_with_the_select_of_its_query() -> anyhow::Result<()> {
    let mut s = mem();
    assert_eq!(s.stored_link(ObjectKind::Group)?, None);
    let ext = "extension_0123456789abcdef0123456789abcdef_costCenter";
    let items: BTreeMap<String, DeltaItem> = [item(
        "g1",
        json!({"displayName": "One", ext: "CC-1", "onPremisesExtensionAttributes": {"extensionAttribute1": "a"}}),
        &[],
    )]
    .into_iter()
    .map(|i| (i.id.clone(), i))
    .collect();
    let mut progress = RoundProgress::new(true);
    s.apply_round_chunk(ObjectKind::Group, &items, &mut progress)?;
    s.finish_round(ObjectKind::Group, "L1", &format!("id,{ext}"), &mut progress)?;
    assert_eq!(
        s.stored_link(ObjectKind::Group)?,
        Some(StoredLink {
            link: "L1".into(),
            select: Some(format!("id,{ext}")),
        })
    );
    // Properties the host does not know are kept as Graph sent them, nested ones included.
    let g = s.load_object(ObjectKind::Group, "g1")?.expect("cached");
    assert_eq!(g.props.get(ext), Some(&json!("CC-1")));
    assert_eq!(
        g.props.get("onPremisesExtensionAttributes"),
        Some(&json!({"extensionAttribute1": "a"}))
    );
    // A round applied without a known select forgets the old one rather than keep a wrong one.
    s.apply_delta(ObjectKind::Group, &round(false, "L2", vec![]))?;
    assert_eq!(
        s.stored_link(ObjectKind::Group)?,
        Some(StoredLink {
            link: "L2".into(),
            select: None,
        })
    );
    Ok(())
}

/// Everything the cache and link tables hold, for before/after comparisons.
type Snapshot = (
    Vec<(String, String, String, i64)>,
    Vec<(String, String, String)>,
    Vec<(String, String)>,
);

fn snapshot(s: &Store) -> anyhow::Result<Snapshot> {
    let mut o = s
        .conn
        .prepare("SELECT kind, id, props_json, soft_deleted FROM cloud_object ORDER BY kind, id")?;
    let objects = o
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut m = s
        .conn
        .prepare("SELECT group_id, member_id, member_type FROM cloud_member ORDER BY 1, 2")?;
    let members = m
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut l = s
        .conn
        .prepare("SELECT kind, link FROM delta_link ORDER BY kind")?;
    let links = l
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok((objects, members, links))
}

#[test]
fn failure_mid_round_changes_nothing() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let before = snapshot(&s)?;
    // Fail on the last group's members, after earlier items were written in the transaction.
    s.conn.execute_batch(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON cloud_member WHEN NEW.member_id = 'boom'
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )?;
    let err = s.apply_delta(
        ObjectKind::Group,
        &round(
            true,
            "L2",
            vec![
                item("g1", json!({"displayName": "changed"}), &[("u5", USER)]),
                item("g4", json!({"displayName": "new"}), &[]),
                item("g9", json!({}), &[("boom", USER)]),
            ],
        ),
    );
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("apply group delta round") && msg.contains("injected failure"),
        "{msg}"
    );
    assert_eq!(snapshot(&s)?, before);
    Ok(())
}

#[test]
fn bad_link_rolls_back_the_cache() -> anyhow::Result<()> {
    let mut s = seeded()?;
    let before = snapshot(&s)?;
    // The link is written last; its CHECK constraint fails after all items were applied.
    let err = s.apply_delta(
        ObjectKind::Group,
        &round(
            false,
            "",
            vec![
                item("g1", json!({"displayName": "x"}), &[]),
                removed("g2", RemovedReason::Deleted),
            ],
        ),
    );
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("store group delta link") && msg.contains("CHECK constraint failed"),
        "{msg}"
    );
    assert_eq!(snapshot(&s)?, before);
    // And the store is still usable afterwards.
    s.apply_delta(ObjectKind::Group, &round(false, "L2", vec![]))?;
    assert_eq!(s.delta_link(ObjectKind::Group)?.as_deref(), Some("L2"));
    Ok(())
}

#[test]
fn corrupt_props_name_table_and_id() -> anyhow::Result<()> {
    let s = seeded()?;
    // json_valid accepts this JSON array, but a cached object must be a JSON object.
    s.conn.execute(
        "UPDATE cloud_object SET props_json = '[1]' WHERE id = 'g2'",
        [],
    )?;
    let msg = s
        .load_objects(ObjectKind::Group)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.starts_with("state file (in memory): table cloud_object, id g2: unreadable props_json"),
        "{msg}"
    );
    let msg = s
        .load_object(ObjectKind::Group, "g2")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("table cloud_object, id g2"), "{msg}");
    Ok(())
}

#[test]
fn schema_rejects_invalid_json() -> anyhow::Result<()> {
    let s = seeded()?;
    let res = s.conn.execute(
        "UPDATE cloud_object SET props_json = '{oops' WHERE id = 'g2'",
        [],
    );
    assert!(res.is_err());
    Ok(())
}

#[test]
fn streaming_merge_skips_orphan_members() -> anyhow::Result<()> {
    let s = seeded()?;
    // Member rows whose group is not cached (sorting before, between and after real groups).
    s.conn.execute_batch(
        "INSERT INTO cloud_member VALUES ('a-orphan', 'x', 't'), ('g15', 'y', 't'), ('zz', 'z', 't');",
    )?;
    let mut seen = Vec::new();
    s.for_each_object(ObjectKind::Group, |o| {
        seen.push((o.id.clone(), o.members.keys().cloned().collect::<Vec<_>>()));
        Ok(())
    })?;
    let want: Vec<(String, Vec<String>)> = vec![
        ("g1".into(), vec!["u1".into(), "u2".into()]),
        ("g2".into(), vec!["u3".into()]),
        ("g3".into(), vec![]),
    ];
    assert_eq!(seen, want);
    Ok(())
}

#[test]
fn anchors_round_trip() -> anyhow::Result<()> {
    let mut s = mem();
    let a = Anchor {
        cloud_id: "g1".into(),
        object_guid: "0b7c3a52-0000-4000-8000-000000000001".into(),
        dn: "CN=One,OU=Cloud,DC=x".into(),
        rule: "scripts/default.rhai".into(),
        updated_at: "2024-01-02T03:04:05.000Z".into(),
    };
    s.put_anchor(&a)?;
    assert_eq!(
        s.anchors()?,
        BTreeMap::from([("g1".to_string(), a.clone())])
    );

    // Update in place (rename); an empty timestamp is stamped now.
    let moved = Anchor {
        dn: "CN=Uno,OU=Cloud,DC=x".into(),
        updated_at: String::new(),
        ..a.clone()
    };
    s.put_anchor(&moved)?;
    let got = s.anchors()?;
    assert_eq!(got.len(), 1);
    assert_eq!(got["g1"].dn, "CN=Uno,OU=Cloud,DC=x");
    assert!(
        got["g1"].updated_at.ends_with('Z') && got["g1"].updated_at.len() == 24,
        "{}",
        got["g1"].updated_at
    );

    // One AD object cannot belong to two cloud ids.
    let thief = Anchor {
        cloud_id: "g2".into(),
        ..a.clone()
    };
    let msg = s
        .put_anchor(&thief)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("put anchor g2") && msg.contains("UNIQUE"),
        "{msg}"
    );

    // An unknown (empty) GUID may repeat.
    for id in ["g7", "g8"] {
        s.put_anchor(&Anchor {
            cloud_id: id.into(),
            object_guid: String::new(),
            ..a.clone()
        })?;
    }
    assert_eq!(s.anchors()?.len(), 3);

    for id in ["g1", "g7", "g8", "never-there"] {
        s.remove_anchor(id)?;
    }
    assert!(s.anchors()?.is_empty());
    Ok(())
}

#[test]
fn applied_hashes_round_trip() -> anyhow::Result<()> {
    let mut s = mem();
    s.put_applied("g1", "h1")?;
    s.put_applied("g2", "h2")?;
    s.put_applied("g1", "h1b")?;
    assert_eq!(
        s.applied_hashes()?,
        BTreeMap::from([
            ("g1".to_string(), "h1b".to_string()),
            ("g2".to_string(), "h2".to_string())
        ])
    );
    s.remove_applied("g1")?;
    assert_eq!(s.applied_hashes()?.len(), 1);
    Ok(())
}

#[test]
fn runs_and_events_round_trip() -> anyhow::Result<()> {
    let mut s = mem();
    let r1 = s.begin_run(crate::state::RunMode::SyncFull)?;
    let ev = AuditEvent {
        cloud_id: "g1".into(),
        action: "create".into(),
        dn: "CN=One,OU=X".into(),
        detail: json!({"attributes": ["cn", "mail"]}),
        outcome: "ok".into(),
    };
    s.record_event(r1, &ev)?;
    s.record_event(
        r1,
        &AuditEvent {
            outcome: "failed".into(),
            ..ev.clone()
        },
    )?;
    s.finish_run(r1, crate::state::RunStatus::Ok, &json!({"created": 1}))?;
    let r2 = s.begin_run(crate::state::RunMode::Plan)?;
    assert!(r2 > r1);

    let runs = s.recent_runs(10)?;
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![r2, r1],
        "newest first"
    );
    assert_eq!(runs[1].mode, "sync-full");
    assert_eq!(runs[1].status.as_deref(), Some("ok"));
    assert_eq!(runs[1].stats, Some(json!({"created": 1})));
    assert!(runs[1].finished_at.as_deref() >= Some(runs[1].started_at.as_str()));
    assert_eq!(
        (
            runs[0].finished_at.clone(),
            runs[0].status.clone(),
            runs[0].stats.clone()
        ),
        (None, None, None)
    );
    assert_eq!(s.recent_runs(1)?.len(), 1);
    assert_eq!(s.run(r1)?.as_ref(), Some(&runs[1]));
    assert_eq!(s.run(999)?, None);

    let evs = s.run_events(r1)?;
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].event, ev);
    assert_eq!(evs[1].event.outcome, "failed");
    assert!(s.run_events(r2)?.is_empty());
    Ok(())
}

#[test]
fn unknown_run_is_refused() -> anyhow::Result<()> {
    let mut s = mem();
    let ev = AuditEvent {
        cloud_id: "g1".into(),
        action: "create".into(),
        dn: String::new(),
        detail: Value::Null,
        outcome: "ok".into(),
    };
    let msg = s.record_event(42, &ev).err().map(|e| e.to_string());
    assert_eq!(
        msg.as_deref(),
        Some("state file (in memory): record event: run 42 does not exist")
    );
    let msg = s
        .finish_run(42, crate::state::RunStatus::Ok, &Value::Null)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        msg.as_deref(),
        Some("state file (in memory): finish run: run 42 does not exist")
    );
    Ok(())
}

#[test]
fn interrupted_runs_closed_and_history_pruned() -> anyhow::Result<()> {
    let mut s = mem();
    let ev = AuditEvent {
        cloud_id: "g".into(),
        action: "a".into(),
        dn: String::new(),
        detail: json!({}),
        outcome: "ok".into(),
    };
    let mut ids_ = Vec::new();
    for _ in 0..5 {
        let r = s.begin_run(crate::state::RunMode::Sync)?;
        s.record_event(r, &ev)?;
        ids_.push(r);
    }
    s.finish_run(ids_[4], crate::state::RunStatus::Ok, &json!({}))?;
    assert_eq!(s.close_interrupted_runs()?, 4);
    assert_eq!(
        s.run(ids_[0])?.and_then(|r| r.status).as_deref(),
        Some(INTERRUPTED)
    );
    assert_eq!(
        s.run(ids_[4])?.and_then(|r| r.status).as_deref(),
        Some("ok")
    );

    assert_eq!(s.prune_runs(2)?, 3);
    assert_eq!(
        s.recent_runs(10)?.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids_[4], ids_[3]]
    );
    assert_eq!(
        table_count(&s, "run_event"),
        2,
        "events of pruned runs go with them"
    );
    Ok(())
}

#[test]
fn with_transaction_commits_or_rolls_back() -> anyhow::Result<()> {
    let mut s = mem();
    let a = |id: &str| Anchor {
        cloud_id: id.into(),
        object_guid: format!("guid-{id}"),
        dn: format!("CN={id}"),
        rule: "r".into(),
        updated_at: String::new(),
    };
    let n = s.with_transaction(|tx| {
        tx::put_anchor(tx, &a("g1"))?;
        tx::put_applied(tx, "g1", "h")?;
        Ok(2)
    })?;
    assert_eq!(n, 2);
    assert_eq!(s.anchors()?.len(), 1);

    let res: Result<(), StateError> = s.with_transaction(|tx| {
        tx::put_anchor(tx, &a("g2"))?;
        tx::remove_applied(tx, "g1")?;
        tx::put_anchor(
            tx,
            &Anchor {
                cloud_id: "g3".into(),
                ..a("g1")
            },
        )?; // GUID clash
        Ok(())
    });
    assert!(res.is_err());
    assert_eq!(s.anchors()?.keys().cloned().collect::<Vec<_>>(), vec!["g1"]);
    assert_eq!(s.applied_hashes()?.len(), 1);
    Ok(())
}

/// 10k groups x 20 members through a file-backed store (WAL, synchronous=FULL), then one
/// incremental round and a reload. Prints the timings; asserts the counts.
#[test]
fn bulk_full_round_10k_groups_200k_members() -> anyhow::Result<()> {
    use std::time::Instant;
    let dir = tempfile::tempdir()?;
    let mut s = Store::open(&dir.path().join("state.db"))?;
    let mut items = Vec::with_capacity(10_000);
    for g in 0..10_000 {
        let id = format!("{g:08x}-0000-4000-8000-000000000000");
        let members: Vec<(String, &str)> = (0..20)
            .map(|m| {
                (
                    format!("{:08x}-1111-4000-8000-{m:012x}", (g * 7 + m) % 50_000),
                    USER,
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = members.iter().map(|(m, t)| (m.as_str(), *t)).collect();
        items.push(item(
            &id,
            json!({
                "displayName": format!("Group {g}"),
                "mail": format!("group{g}@corp.example"),
                "mailNickname": format!("group{g}"),
                "groupTypes": ["Unified"],
                "securityEnabled": false,
                "mailEnabled": true,
                "proxyAddresses": [format!("SMTP:group{g}@corp.example")],
                "description": "A group used to measure the state store",
            }),
            &refs,
        ));
    }
    let full = round(true, "L1", items);

    let t = Instant::now();
    let ch = s.apply_delta(ObjectKind::Group, &full)?;
    let apply = t.elapsed();
    assert_eq!(ch.changed.len(), 10_000);

    let t = Instant::now();
    let all = s.load_objects(ObjectKind::Group)?;
    let load = t.elapsed();
    assert_eq!(all.len(), 10_000);
    assert_eq!(
        all.values().map(|o| o.members.len()).sum::<usize>(),
        200_000
    );

    // Same tenant again as a full round (410 reset): replaces everything in place.
    let t = Instant::now();
    s.apply_delta(ObjectKind::Group, &full)?;
    let again = t.elapsed();
    assert_eq!(table_count(&s, "cloud_member"), 200_000);

    let t = Instant::now();
    let first = full.items.keys().next().cloned().unwrap_or_default();
    s.apply_delta(
        ObjectKind::Group,
        &round(
            false,
            "L2",
            vec![item(&first, json!({"displayName": "x"}), &[])],
        ),
    )?;
    let incr = t.elapsed();

    println!(
        "state store: full round 10k groups/200k members {apply:?}, repeated full round {again:?}, load_objects {load:?}, one-item incremental round {incr:?}"
    );
    Ok(())
}

/// Set in the child process of the kill -9 test: the state file it writes to.
const KILL_CHILD_ENV: &str = "WRITEBACK_STATE_KILL_CHILD";
const KILL_TEST: &str = "state::tests::kill_9_mid_write_keeps_cache_and_link_in_step";

/// Round n: a full round holding `g` (props n, members m{n}, m{n+1}) and `h{n % 5}`, link "L{n}".
fn kill_round(n: u64) -> DeltaRound {
    let (a, b) = (format!("m{n}"), format!("m{}", n + 1));
    round(
        true,
        &format!("L{n}"),
        vec![
            item(
                "g",
                json!({ "n": n }),
                &[(a.as_str(), USER), (b.as_str(), USER)],
            ),
            item(&format!("h{}", n % 5), json!({}), &[]),
        ],
    )
}

/// The brief's bar: kill -9 at any point, restart where it was. A child process applies full
/// rounds as fast as it can; the parent SIGKILLs it mid-stream, reopens the file and checks that
/// the cache is exactly the round its link names.
#[test]
fn kill_9_mid_write_keeps_cache_and_link_in_step() -> anyhow::Result<()> {
    if let Some(path) = std::env::var_os(KILL_CHILD_ENV) {
        let mut s = Store::open(std::path::Path::new(&path))?;
        for n in 1.. {
            s.apply_delta(ObjectKind::Group, &kill_round(n))?;
        }
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    drop(Store::open(&path)?);
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", KILL_TEST, "--nocapture", "--test-threads=1"])
        .env(KILL_CHILD_ENV, &path)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    // Kill once the child is well into its stream of commits.
    let watcher = Store::open(&path)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let link_no = |s: &Store| -> anyhow::Result<u64> {
        Ok(s.delta_link(ObjectKind::Group)?
            .and_then(|l| l.trim_start_matches('L').parse().ok())
            .unwrap_or(0))
    };
    while link_no(&watcher)? < 50 {
        if let Some(status) = child.try_wait()? {
            panic!("writer child exited early ({status})");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writer child made no progress in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(watcher);
    child.kill()?; // SIGKILL
    child.wait()?;

    let s = Store::open(&path)?;
    let ok: String = s
        .conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(ok, "ok");
    let n = link_no(&s)?;
    assert!(n >= 50, "link went back to L{n}");
    let all = s.load_objects(ObjectKind::Group)?;
    assert_eq!(
        all.keys().cloned().collect::<BTreeSet<_>>(),
        ids(&["g", &format!("h{}", n % 5)]),
        "objects after kill at L{n}"
    );
    assert_eq!(all["g"].props.get("n"), Some(&json!(n)));
    let want = [format!("m{n}"), format!("m{}", n + 1)];
    let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(member_ids(&all["g"]), want);
    Ok(())
}

#[test]
fn negative_schema_version_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    drop(Store::open(&path)?);
    rusqlite::Connection::open(&path)?.pragma_update(None, "user_version", -3)?;
    let err = Store::open(&path).err().map(|e| e.to_string());
    assert_eq!(
        err,
        Some(format!(
            "state file {}: schema version -3 is not valid (set by hand?)",
            path.display()
        ))
    );
    Ok(())
}

fn has_member_index(s: &Store) -> anyhow::Result<bool> {
    Ok(s.conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = 'cloud_member_by_member'",
        [],
        |r| r.get(0),
    )?)
}

/// A full round builds the member index at its end; a round cut short after its first chunk
/// leaves the file without it, and the next open builds it again.
#[test]
fn a_full_round_rebuilds_the_member_index_even_when_cut_short() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    {
        let mut s = Store::open(&path)?;
        assert!(has_member_index(&s)?);
        s.apply_delta(
            ObjectKind::Group,
            &round(
                true,
                "L1",
                vec![item("g1", json!({"displayName": "G1"}), &[("u1", USER)])],
            ),
        )?;
        assert!(has_member_index(&s)?, "index after a full round");
        assert_eq!(s.groups_containing(&ids(&["u1"]))?, ids(&["g1"]));

        // Cut short: one chunk of a full round, no finish.
        let mut progress = RoundProgress::new(true);
        let chunk = round(
            true,
            "L2",
            vec![item("g2", json!({"displayName": "G2"}), &[("u1", USER)])],
        );
        s.apply_round_chunk(ObjectKind::Group, &chunk.items, &mut progress)?;
        assert!(!has_member_index(&s)?, "the round writes without it");
    }
    let s = Store::open(&path)?;
    assert!(has_member_index(&s)?, "rebuilt at open");
    assert_eq!(s.groups_containing(&ids(&["u1"]))?, ids(&["g1", "g2"]));
    assert_eq!(s.delta_link(ObjectKind::Group)?.as_deref(), Some("L1"));
    Ok(())
}

#[test]
fn quarantine_backs_off_per_group_and_releases() -> anyhow::Result<()> {
    let mut s = mem();
    let (seen, q) =
        s.with_transaction(|t| tx::record_failure(t, "g1", "AD said no", 1_000, 3600))?;
    assert_eq!((seen, q.failures, q.retry_at), (Seen::New, 1, 1_060));
    let (seen, q) =
        s.with_transaction(|t| tx::record_failure(t, "g1", "AD said no", 1_100, 3600))?;
    assert_eq!((seen, q.failures, q.retry_at), (Seen::Repeated, 2, 1_220));
    let (seen, q) = s.with_transaction(|t| tx::record_failure(t, "g1", "other", 1_300, 3600))?;
    assert_eq!((seen, q.failures), (Seen::Changed, 1));
    s.with_transaction(|t| tx::record_failure(t, "g2", "x", 1_000, 3600).map(|_| ()))?;
    assert_eq!(s.quarantine_due(1_059)?, BTreeSet::new());
    assert_eq!(s.quarantine_due(1_060)?, ids(&["g2"]));
    assert_eq!(s.quarantine_due(1_360)?, ids(&["g1", "g2"]));
    s.with_transaction(|t| tx::release(t, "g2"))?;
    assert_eq!(s.quarantine_count()?, 1);
    assert_eq!(
        s.quarantined()?.keys().cloned().collect::<Vec<_>>(),
        vec!["g1".to_string()]
    );
    Ok(())
}

#[test]
fn a_held_set_is_approved_by_its_id_once() -> anyhow::Result<()> {
    let mut s = mem();
    let row = |id: &str, approved: bool| HeldDelete {
        cloud_id: id.into(),
        dn: format!("CN={id},OU=W"),
        approved,
        held_at: String::new(),
    };
    assert!(s.held_waiting()?.is_none());
    s.with_transaction(|t| tx::replace_held(t, &[row("a", false), row("b", false)]))?;
    let (id, n) = s
        .held_waiting()?
        .ok_or_else(|| anyhow::anyhow!("nothing waiting"))?;
    assert_eq!((id.as_str(), n), (held_set_id(["a", "b"]).as_str(), 2));
    let wrong = s.approve_held("000000000000").unwrap_err().to_string();
    assert!(
        wrong.contains(&id) && wrong.contains("2 deletes"),
        "{wrong}"
    );
    assert_eq!(s.approve_held(&id)?, 2);
    assert!(s.held_deletes()?.values().all(|h| h.approved));
    // Approved once: nothing waits any more, a second approval is refused.
    assert!(s.held_waiting()?.is_none());
    let again = s.approve_held(&id).unwrap_err().to_string();
    assert!(again.contains("no delete is waiting"), "{again}");
    Ok(())
}

#[test]
fn intents_are_kept_until_settled() -> anyhow::Result<()> {
    let mut s = mem();
    s.with_transaction(|t| tx::put_intent(t, "g1", "CN=g1,OU=W", 7))?;
    assert_eq!(s.intent("g1")?.as_deref(), Some("CN=g1,OU=W"));
    s.with_transaction(|t| tx::remove_intent(t, "g1"))?;
    assert_eq!(s.intent("g1")?, None);
    Ok(())
}

// --- the audit trail and the history's compaction -------------------------------------------

fn event_at(s: &mut Store, run: i64, cloud_id: &str, dn: &str, at: &str) -> anyhow::Result<()> {
    s.record_event(
        run,
        &AuditEvent {
            cloud_id: cloud_id.into(),
            action: "create".into(),
            dn: dn.into(),
            detail: json!({}),
            outcome: "ok".into(),
        },
    )?;
    // Recorded "now"; moved to the time the test needs.
    s.conn.execute(
        "UPDATE run_event SET at = ?1 WHERE id = last_insert_rowid()",
        [at],
    )?;
    Ok(())
}

fn visit(s: &Store, q: &EventQuery) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    s.for_each_event(q, |e| {
        out.push((e.event.cloud_id, e.at));
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}

#[test]
fn audit_events_are_found_by_time_object_and_dn() -> anyhow::Result<()> {
    let mut s = mem();
    let r = s.begin_run(crate::state::RunMode::Sync)?;
    event_at(&mut s, r, "g1", "CN=One,OU=W", "2026-01-01T00:00:00.000Z")?;
    event_at(&mut s, r, "g2", "CN=Two,OU=W", "2026-01-02T00:00:00.000Z")?;
    event_at(&mut s, r, "g1", "CN=One,OU=W", "2026-01-03T00:00:00.000Z")?;
    event_at(&mut s, r, "", "", "2026-01-04T00:00:00.000Z")?;
    let all = visit(&s, &EventQuery::default())?;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].1, "2026-01-01T00:00:00.000Z", "oldest first");

    let window = EventQuery {
        since: Some("2026-01-02T00:00:00.000Z".into()),
        until: Some("2026-01-03T00:00:00.000Z".into()),
        ..Default::default()
    };
    let got: Vec<String> = visit(&s, &window)?.into_iter().map(|e| e.0).collect();
    assert_eq!(got, vec!["g2", "g1"], "both ends inclusive");

    let by_id = EventQuery {
        subjects: Some(EventSubjects {
            cloud_ids: ids(&["g1"]),
            dns: BTreeSet::new(),
        }),
        newest_first: true,
        ..Default::default()
    };
    let got: Vec<String> = visit(&s, &by_id)?.into_iter().map(|e| e.1).collect();
    assert_eq!(
        got,
        vec!["2026-01-03T00:00:00.000Z", "2026-01-01T00:00:00.000Z"]
    );

    // A DN matches whatever its case; an empty subject list matches nothing, not everything.
    let by_dn = EventQuery {
        subjects: Some(EventSubjects {
            cloud_ids: BTreeSet::new(),
            dns: ids(&["cn=two,ou=w"]),
        }),
        ..Default::default()
    };
    assert_eq!(visit(&s, &by_dn)?.len(), 1);
    let nothing = EventQuery {
        subjects: Some(EventSubjects::default()),
        ..Default::default()
    };
    assert!(visit(&s, &nothing)?.is_empty());
    assert_eq!(s.event_cloud_ids_at("CN=ONE,ou=w")?, ids(&["g1"]));

    // The visitor stops when asked to.
    let mut seen = 0;
    s.for_each_event(&EventQuery::default(), |_| {
        seen += 1;
        std::ops::ControlFlow::Break(())
    })?;
    assert_eq!(seen, 1);
    Ok(())
}

#[test]
fn cached_groups_are_found_by_display_name_exact_spelling_first() -> anyhow::Result<()> {
    let mut s = mem();
    s.apply_delta(
        ObjectKind::Group,
        &round(
            true,
            "L1",
            vec![
                item("g2", json!({"displayName": "Sales"}), &[]),
                item("g1", json!({"displayName": "Sales"}), &[]),
                item("g3", json!({"displayName": "SALES"}), &[]),
                item("g4", json!({"displayName": "Other"}), &[]),
                item("g5", json!({"displayName": " Lab, \"Zürich\" "}), &[]),
                item("g6", json!({"displayName": "Lab, \"Zürich\""}), &[]),
            ],
        ),
    )?;
    let names = |v: Vec<(String, String)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(names(s.cached_groups_named("Sales")?), vec!["g1", "g2"]);
    assert_eq!(
        names(s.cached_groups_named("sales")?),
        vec!["g1", "g2", "g3"]
    );
    assert!(s.cached_groups_named("Nobody")?.is_empty());
    // Spaces and all, as Graph holds the name; trimmed only when nothing matches exactly.
    assert_eq!(
        names(s.cached_groups_named(" Lab, \"Zürich\" ")?),
        vec!["g5"]
    );
    assert_eq!(names(s.cached_groups_named("Lab, \"Zürich\"")?), vec!["g6"]);
    assert_eq!(
        names(s.cached_groups_named("  lab, \"zürich\"")?),
        vec!["g5", "g6"]
    );
    assert_eq!(names(s.cached_groups_named("  Other")?), vec!["g4"]);
    Ok(())
}

/// A finished run with `events` audit events, started and finished at `at`.
fn run_at(
    s: &mut Store,
    status: RunStatus,
    stats: Value,
    events: usize,
    at: &str,
) -> anyhow::Result<i64> {
    let r = s.begin_run(crate::state::RunMode::Sync)?;
    for _ in 0..events {
        event_at(s, r, "g", "CN=G,OU=W", at)?;
    }
    s.finish_run(r, status, &stats)?;
    s.conn.execute(
        "UPDATE run SET started_at = ?2, finished_at = ?2 WHERE id = ?1",
        rusqlite::params![r, at],
    )?;
    Ok(r)
}

fn quiet() -> Value {
    json!({"sweep": "idle", "changes": 0, "failures": 0, "refused": 0})
}

#[test]
fn given_up_trigger_calls_age_out_with_the_history_pending_ones_never() -> anyhow::Result<()> {
    let mut s = mem();
    for key in ["old-given-up", "new-given-up", "old-pending"] {
        s.with_transaction(|t| {
            tx::put_call(
                t,
                &NewCall {
                    key: key.into(),
                    rule: "10-r.rhai".into(),
                    hook: "on_created".into(),
                    cloud_id: "g".into(),
                    event_json: "{}".into(),
                },
                0,
            )
        })?;
    }
    s.conn.execute(
        "UPDATE outbox SET state = 'given_up' WHERE key LIKE '%given-up'",
        [],
    )?;
    s.conn.execute(
        "UPDATE outbox SET created_at = '2025-01-01T00:00:00.000Z' WHERE key LIKE 'old-%'",
        [],
    )?;
    s.compact_history_before(time::macros::datetime!(2026-01-01 00:00:00 UTC), 10)?;
    let c = s.call_counts()?;
    assert_eq!((c.given_up, c.pending), (1, 1), "{c:?}");
    Ok(())
}

#[test]
fn events_age_out_by_time_and_the_runs_that_hold_them_stay() -> anyhow::Result<()> {
    let mut s = mem();
    let old = run_at(
        &mut s,
        RunStatus::Ok,
        json!({"changes": 1}),
        2,
        "2025-01-01T00:00:00.000Z",
    )?;
    let old_failed = run_at(
        &mut s,
        RunStatus::Failed,
        json!({"error": "x"}),
        0,
        "2025-01-02T00:00:00.000Z",
    )?;
    let kept = run_at(
        &mut s,
        RunStatus::Ok,
        json!({"changes": 1}),
        1,
        "2026-06-01T00:00:00.000Z",
    )?;
    let failed = run_at(
        &mut s,
        RunStatus::Failed,
        json!({"error": "x"}),
        0,
        "2026-06-02T00:00:00.000Z",
    )?;
    // Thousands of newer runs would have pushed these out of a count-based history.
    let cutoff = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    let done = s.compact_history_before(cutoff, 10)?;
    assert_eq!(done.events_deleted, 2);
    assert_eq!(done.runs_deleted, 2);
    assert!(s.run(old)?.is_none() && s.run(old_failed)?.is_none());
    assert_eq!(
        s.run_events(kept)?.len(),
        1,
        "events inside the retention stay"
    );
    assert!(
        s.run(failed)?.is_some(),
        "a failure is kept as long as events are"
    );
    Ok(())
}

#[test]
fn quiet_runs_fold_into_one_row_per_streak_and_runs_with_events_stay() -> anyhow::Result<()> {
    let mut s = mem();
    let t = |m: u32| format!("2026-06-01T00:{m:02}:00.000Z");
    let first = run_at(&mut s, RunStatus::Ok, quiet(), 0, &t(0))?;
    for m in 1..5 {
        run_at(&mut s, RunStatus::Ok, quiet(), 0, &t(m))?;
    }
    let change = run_at(
        &mut s,
        RunStatus::Ok,
        json!({"changes": 1, "failures": 0}),
        1,
        &t(5),
    )?;
    let second = run_at(&mut s, RunStatus::Ok, quiet(), 0, &t(6))?;
    run_at(&mut s, RunStatus::Ok, quiet(), 0, &t(7))?;
    let held = run_at(&mut s, RunStatus::Held, quiet(), 0, &t(8))?;
    let refused = run_at(
        &mut s,
        RunStatus::Ok,
        json!({"changes": 0, "refused": 1}),
        0,
        &t(9),
    )?;
    let recent: Vec<i64> = (10..13)
        .map(|m| run_at(&mut s, RunStatus::Ok, quiet(), 0, &t(m)))
        .collect::<anyhow::Result<_>>()?;
    let cutoff = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    let done = s.compact_history_before(cutoff, 3)?;
    assert_eq!(done.runs_folded, 5, "{done:?}");
    let rows: Vec<(i64, Option<u64>, Option<String>)> = s
        .recent_runs(100)?
        .into_iter()
        .rev()
        .map(|r| {
            let n = r.stats.as_ref().and_then(|v| v[FOLDED_RUNS].as_u64());
            (r.id, n, r.finished_at)
        })
        .collect();
    let mut want = vec![
        (first, Some(5), Some(t(4))),
        (change, None, Some(t(5))),
        (second, Some(2), Some(t(7))),
        (held, None, Some(t(8))),
        (refused, None, Some(t(9))),
    ];
    want.extend(recent.iter().map(|id| (*id, None, None)));
    let got: Vec<(i64, Option<u64>, Option<String>)> = rows
        .iter()
        .map(|(id, n, f)| (*id, *n, if recent.contains(id) { None } else { f.clone() }))
        .collect();
    assert_eq!(got, want);
    assert_eq!(s.run_events(change)?.len(), 1);

    // The next compaction takes the streak up where it stopped: quiet runs after a quiet run
    // join it, with the count carried on.
    for m in 13..16 {
        run_at(&mut s, RunStatus::Ok, quiet(), 0, &t(m))?;
    }
    let done = s.compact_history_before(cutoff, 1)?;
    assert_eq!(done.runs_folded, 4, "{done:?}");
    let last = s
        .recent_runs(2)?
        .into_iter()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no folded run"))?;
    assert_eq!(last.id, recent[0]);
    assert_eq!(
        last.stats.as_ref().and_then(|v| v[FOLDED_RUNS].as_u64()),
        Some(5)
    );
    assert_eq!(last.finished_at, Some(t(14)));
    Ok(())
}

#[test]
fn the_state_file_is_the_services_alone_and_never_opened_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    drop(Store::open(&path).expect("open"));
    assert_eq!(mode(&path), 0o600);

    // A file a root run left readable by everyone is tightened, with its companions.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let wal = dir.path().join("state.db-wal");
    std::fs::write(&wal, b"").expect("wal");
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    drop(Store::open(&path).expect("open again"));
    assert_eq!(mode(&path), 0o600);
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }

    // A link planted where the state file should be is refused, and its target untouched.
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"not yours").expect("target");
    let link = dir.path().join("linked.db");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let e = Store::open(&link)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("linked.db"), "{e}");
    assert_eq!(std::fs::read(&target).expect("read"), b"not yours");
}

#[test]
fn unresolved_members_add_up_over_managed_groups_as_last_compared() -> anyhow::Result<()> {
    use crate::sync::record::Write;
    use crate::sync::state::CycleState;
    let mut s = mem();
    assert_eq!(s.unresolved_total()?, UnresolvedTotal::default());
    for (id, guid) in [("g1", "1"), ("g2", "2")] {
        s.put_anchor(&Anchor {
            cloud_id: id.into(),
            object_guid: guid.into(),
            dn: format!("CN={id},OU=Cloud,DC=x"),
            rule: "r.rhai".into(),
            updated_at: String::new(),
        })?;
    }
    let ids = |n: usize| (0..n).map(|i| format!("m{i}")).collect::<Vec<_>>();
    s.record(
        0,
        &[
            Write::Unresolved("g1".into(), ids(3)),
            Write::Unresolved("g2".into(), ids(2)),
            // Not (or no longer) managed: not counted.
            Write::Unresolved("gone".into(), ids(5)),
        ],
    )?;
    assert_eq!(
        s.unresolved_total()?,
        UnresolvedTotal {
            members: 5,
            groups: 2
        }
    );
    // Member changes written alone: one more not found, one not found removed, one removed
    // that was found all along.
    s.record(
        0,
        &[Write::UnresolvedEdit {
            group: "g1".into(),
            add: vec!["new".into()],
            remove: vec!["m0".into(), "found".into()],
        }],
    )?;
    assert_eq!(s.unresolved_total()?.members, 5);
    // Compared again: the new list replaces the old one; none forgets the group.
    s.record(
        0,
        &[
            Write::Unresolved("g1".into(), ids(1)),
            Write::Unresolved("g2".into(), Vec::new()),
        ],
    )?;
    assert_eq!(
        s.unresolved_total()?,
        UnresolvedTotal {
            members: 1,
            groups: 1
        }
    );
    Ok(())
}

#[test]
fn member_changes_are_the_net_change_since_the_last_apply() -> anyhow::Result<()> {
    use crate::sync::state::CycleState;
    let mut s = Store::open_in_memory()?;
    let g = |add: &[(&str, &str)], remove: &[&str]| {
        let mut i = item("g", json!({"displayName": "G"}), add);
        i.members_removed = remove.iter().map(|m| m.to_string()).collect();
        i
    };
    // The full round is the baseline: no change noted.
    s.apply_delta(
        ObjectKind::Group,
        &round(true, "l1", vec![g(&[("a", USER), ("b", USER)], &[])]),
    )?;
    assert!(s.member_changes([&"g".to_string()])?.is_empty());
    // A replayed add of a member it has, a removal of one it never had: no change either.
    s.apply_delta(
        ObjectKind::Group,
        &round(false, "l2", vec![g(&[("a", USER)], &["zz"])]),
    )?;
    assert!(s.member_changes([&"g".to_string()])?.is_empty());
    // c in, b out; then c out again: only b's removal is left.
    s.apply_delta(
        ObjectKind::Group,
        &round(false, "l3", vec![g(&[("c", USER)], &["b"])]),
    )?;
    s.apply_delta(ObjectKind::Group, &round(false, "l4", vec![g(&[], &["c"])]))?;
    let c = s.member_changes([&"g".to_string()])?;
    let changes = c.get("g").expect("changes of g");
    assert!(changes.added.is_empty());
    assert_eq!(changes.removed.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(changes.removed["b"].odata_type, USER);
    // Kept while the group is pending, forgotten once it is settled.
    s.settle_pending(&ids(&["g"]))?;
    assert!(!s.member_changes([&"g".to_string()])?.is_empty());
    s.settle_pending(&BTreeSet::new())?;
    assert!(s.member_changes([&"g".to_string()])?.is_empty());
    // A full round forgets whatever was noted.
    s.apply_delta(
        ObjectKind::Group,
        &round(false, "l5", vec![g(&[("d", USER)], &[])]),
    )?;
    s.apply_delta(
        ObjectKind::Group,
        &round(true, "l6", vec![g(&[("a", USER)], &[])]),
    )?;
    assert!(s.member_changes([&"g".to_string()])?.is_empty());
    Ok(())
}
