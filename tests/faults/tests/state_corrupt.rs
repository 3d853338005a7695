//! A corrupted state file (garbage bytes, a truncated file): the run is refused with an error
//! that names the file and says how to recover, and the documented recovery works: move the
//! file aside, `writeback adopt --dry-run` (shows what would be taken back, writes nothing),
//! `writeback adopt`; then a `writeback sync` changes nothing and AD is what an undisturbed run
//! leaves.

use std::collections::BTreeMap;
use std::path::Path;

use ldap3::{Scope, SearchEntry};
use writeback_faults::scene::{assert_same_ad, changes, with_scene, Scene, Target};
use writeback_faults::seed::Rng;

/// Each group's uSNChanged: unchanged values mean nothing was written.
async fn usns(scene: &mut Scene, t: &Target) -> BTreeMap<String, String> {
    let (rs, _) = scene
        .bed
        .ldap
        .search(
            &t.managed,
            Scope::Subtree,
            "(objectClass=group)",
            vec!["uSNChanged"],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("cannot read uSNChanged below {}: {e}", t.managed));
    rs.into_iter()
        .map(SearchEntry::construct)
        .map(|e| {
            let usn = e
                .attrs
                .get("uSNChanged")
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default();
            (e.dn, usn)
        })
        .collect()
}

/// The state file and the SQLite files beside it.
fn state_files(state: &Path) -> Vec<std::path::PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut p = state.as_os_str().to_owned();
            p.push(s);
            p.into()
        })
        .collect()
}

async fn corrupt_then_recover(test: &'static str, prefix: &str, damage: fn(&Path, &mut Rng)) {
    let mut rng = Rng::for_test(test);
    with_scene(prefix, 4, move |mut scene| async move {
        scene.seed(10, 3, &[]);
        let want = scene.reference("Ref", None).await;
        let t = scene.target("Corrupt", None, None, "").await;
        t.run_json(&["sync"], 0);
        assert_same_ad("before the damage", &scene.groups(&t).await, &want.groups);
        // Everything into the main file first, so the damage hits all there is.
        let out = std::process::Command::new("sqlite3")
            .arg(&t.state)
            .arg("PRAGMA wal_checkpoint(TRUNCATE);")
            .output()
            .unwrap_or_else(|e| panic!("cannot run sqlite3: {e}"));
        assert!(
            out.status.success(),
            "checkpoint of {}: {}",
            t.state.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        for extra in &state_files(&t.state)[1..] {
            let _ = std::fs::remove_file(extra);
        }
        damage(&t.state, &mut rng);
        let usn_before = usns(&mut scene, &t).await;

        let out = t.run(&["sync", "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{test}: {stderr}");
        assert_eq!(
            out.status.code(),
            Some(1),
            "a damaged state file was used\nstdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains(&t.state.display().to_string()),
            "the error does not name {}:\n{stderr}",
            t.state.display()
        );
        assert!(
            stderr.contains("writeback adopt"),
            "the error does not say how to recover:\n{stderr}"
        );
        assert_eq!(usns(&mut scene, &t).await, usn_before, "AD written");

        // The documented recovery (README, "Recovering the state file").
        for f in state_files(&t.state) {
            if f.exists() {
                let mut aside = f.as_os_str().to_owned();
                aside.push(".corrupt");
                std::fs::rename(&f, &aside)
                    .unwrap_or_else(|e| panic!("cannot move {} aside: {e}", f.display()));
            }
        }
        let dry = t.run(&["adopt", "--dry-run"]);
        let dry_out = String::from_utf8_lossy(&dry.stdout);
        assert_eq!(
            dry.status.code(),
            Some(0),
            "adopt --dry-run\nstdout:\n{dry_out}\nstderr:\n{}",
            String::from_utf8_lossy(&dry.stderr)
        );
        for id in &scene.group_ids {
            assert!(
                dry_out.contains(id.as_str()),
                "adopt --dry-run does not show group {id}:\n{dry_out}"
            );
        }
        assert_eq!(
            usns(&mut scene, &t).await,
            usn_before,
            "adopt --dry-run wrote to AD"
        );
        let adopted = t.run(&["adopt"]);
        assert_eq!(
            adopted.status.code(),
            Some(0),
            "adopt\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&adopted.stdout),
            String::from_utf8_lossy(&adopted.stderr)
        );
        let r = t.run_json(&["sync"], 0);
        assert!(
            changes(&r).is_empty(),
            "the sync after adopt changes AD: {r:#}"
        );
        assert_same_ad("after adopt", &scene.groups(&t).await, &want.groups);
        scene.check_anchors(&t).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_garbage_is_refused_with_the_recovery_and_adopt_recovers() {
    corrupt_then_recover(
        "a_state_file_of_garbage",
        "wb-faults-garbage",
        |state, rng| {
            let len = std::fs::metadata(state)
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", state.display()))
                .len();
            let garbage: Vec<u8> = (0..len.max(4096)).map(|_| rng.next_u64() as u8).collect();
            std::fs::write(state, garbage)
                .unwrap_or_else(|e| panic!("cannot overwrite {}: {e}", state.display()));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_state_file_is_refused_with_the_recovery_and_adopt_recovers() {
    corrupt_then_recover(
        "a_truncated_state_file",
        "wb-faults-truncated",
        |state, rng| {
            let len = std::fs::metadata(state)
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", state.display()))
                .len();
            // Past the header (so it still looks like a database), short of the end.
            let keep = rng.range(len / 4, len * 3 / 4).max(512);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(state)
                .unwrap_or_else(|e| panic!("cannot open {}: {e}", state.display()));
            f.set_len(keep)
                .unwrap_or_else(|e| panic!("cannot truncate {}: {e}", state.display()));
            eprintln!("truncated {} from {len} to {keep} bytes", state.display());
        },
    )
    .await;
}
