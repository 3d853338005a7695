//! The state file on a broken disk: read-only, full, and full in the middle of a first sync (a
//! file-size limit). The run fails with an error that names the state file, the file is intact
//! (SQLite transactions: nothing half-written), and the next run on a healthy disk ends with the
//! AD an undisturbed run leaves.
//!
//! The tests run as root (so do CI's): a read-only disk is a tmpfs remounted read-only, a full
//! disk a small tmpfs filled up. A fault that cannot be set up fails the test with the reason.

use serde_json::json;
use std::process::Output;
use writeback_faults::disk::{limit_file_size, Tmpfs};
use writeback_faults::scene::{
    assert_intact, assert_same_ad, changes, with_scene, AdGroups, Scene, Target,
};
use writeback_faults::seed::Rng;

/// The first sync on a healthy disk, then cloud changes a second sync will want to record:
/// a description, a new group.
async fn synced_then_changed(scene: &mut Scene, t: &Target) {
    let r = t.run_json(&["sync"], 0);
    assert_eq!(changes(&r).len(), scene.group_ids.len(), "{r:#}");
    let id = scene.group_ids[0].clone();
    scene
        .bed
        .graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(json!({"description": "changed while the disk was broken"})),
        )
        .await;
    scene
        .bed
        .graph(
            "POST",
            "/groups",
            Some(json!({
                "displayName": "Born On A Broken Disk", "mailEnabled": false,
                "securityEnabled": true, "mailNickname": "born-broken", "groupTypes": [],
            })),
        )
        .await;
    // The emulator picks the new group's id; the scene only counts the groups.
    scene.group_ids.push(String::new());
}

/// The failed run's stderr names the state file.
fn names_the_state_file(what: &str, out: &Output, t: &Target) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: expected a failed run\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&t.state.display().to_string()),
        "{what}: the error does not name the state file {}:\n{stderr}",
        t.state.display()
    );
    eprintln!("{what}: {stderr}");
    stderr
}

/// On a healthy disk again: the next run succeeds, the one after changes nothing, AD is the
/// reference's.
async fn converges(scene: &mut Scene, t: &Target, want: &AdGroups) {
    t.run_json(&["sync"], 0);
    let again = t.run_json(&["sync"], 0);
    assert!(changes(&again).is_empty(), "not settled: {again:#}");
    assert_same_ad("on a healthy disk again", &scene.groups(t).await, want);
    scene.check_anchors(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_state_disk_fails_naming_the_file_and_the_next_run_converges() {
    with_scene("wb-faults-rodisk", 3, |mut scene| async move {
        // Security groups only: the reference is taken while this target's groups exist, and
        // an M365 group's account name is unique in the domain.
        scene.seed(8, 0, &[]);
        let disk = Tmpfs::new(16 * 1024);
        let t = scene.target("Ro", None, Some(disk.path()), "").await;
        synced_then_changed(&mut scene, &t).await;
        let before = scene.groups(&t).await;
        disk.remount(true);
        let out = t.run(&["sync", "--json"]);
        disk.remount(false);
        let stderr = names_the_state_file("read-only disk", &out, &t);
        assert!(
            stderr.to_lowercase().contains("read-only") || stderr.contains("readonly"),
            "the error does not say the disk is read-only:\n{stderr}"
        );
        assert_eq!(
            scene.groups(&t).await,
            before,
            "a run that could not record wrote to AD"
        );
        assert_intact(&t.state);
        let want = scene.reference("Ref", None).await;
        converges(&mut scene, &t, &want.groups).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_fails_naming_the_file_and_the_next_run_converges() {
    with_scene("wb-faults-fulldisk", 3, |mut scene| async move {
        // Security groups only, as above.
        scene.seed(8, 0, &[]);
        let disk = Tmpfs::new(16 * 1024);
        let t = scene.target("Full", None, Some(disk.path()), "").await;
        synced_then_changed(&mut scene, &t).await;
        let before = scene.groups(&t).await;
        let filler = disk.fill();
        let out = t.run(&["sync", "--json"]);
        std::fs::remove_file(&filler)
            .unwrap_or_else(|e| panic!("cannot free the disk ({}): {e}", filler.display()));
        let stderr = names_the_state_file("full disk", &out, &t);
        assert!(
            stderr.contains("full"),
            "the error does not say the disk is full:\n{stderr}"
        );
        assert_eq!(
            scene.groups(&t).await,
            before,
            "a run that could not record wrote to AD"
        );
        assert_intact(&t.state);
        let want = scene.reference("Ref", None).await;
        converges(&mut scene, &t, &want.groups).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_grow_mid_sync_fails_naming_the_file_and_the_next_run_converges() {
    let mut rng = Rng::for_test("a_state_file_that_cannot_grow_mid_sync");
    with_scene("wb-faults-fsize", 4, move |mut scene| async move {
        scene.seed(12, 4, &[]);
        let want = scene.reference("Ref", None).await;
        // The migration alone fills most of a WAL of the final file's size: the limit is drawn
        // between that and the largest file the first sync makes, so it is hit mid-sync.
        let lo = want.state_bytes.min(want.largest_file);
        let limit = rng.range(
            lo + (want.largest_file - lo) / 4,
            want.largest_file * 19 / 20,
        );
        eprintln!(
            "file size limit {limit} bytes; the first sync's largest file {} bytes, final {}",
            want.largest_file, want.state_bytes
        );
        let t = scene.target("Fsize", None, None, "").await;
        let mut cmd = t.command(&["sync", "--json"]);
        limit_file_size(&mut cmd, limit);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run writeback with a file size limit: {e}"));
        names_the_state_file("file size limit", &out, &t);
        eprintln!(
            "{} of {} groups in AD after the failed run",
            scene.groups(&t).await.len(),
            scene.group_ids.len()
        );
        assert_intact(&t.state);
        scene.check_recorded_exist(&t).await;
        converges(&mut scene, &t, &want.groups).await;
    })
    .await;
}
