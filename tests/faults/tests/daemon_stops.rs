//! `writeback run` stopped in the middle of a cycle: SIGTERM finishes cleanly, kill -9 is
//! followed by a restart that converges without duplicates.

use std::time::Duration;
use writeback_integration::harness::{new_id, security_group, Bed};

use writeback_integration::eventually;

const DAEMON: &str =
    "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\ndebounce_ms = 200\n";

#[tokio::test]
async fn sigterm_mid_run_stops_cleanly_and_the_next_start_completes() {
    let mut bed = Bed::new("wb-daemon-term", 0).await;
    bed.create_default_containers().await;
    let ids: Vec<String> = (0..150).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Many {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);
    bed.write_config(None, "", DAEMON);
    let mut d = bed.start_daemon();
    // Stop as soon as the first groups appear: the cycle is still writing.
    eventually!(
        Duration::from_secs(30),
        "the first writes",
        !bed.groups().await.is_empty()
    );
    assert_eq!(
        d.stop(Duration::from_secs(60)),
        Some(0),
        "log:\n{}",
        d.log_text()
    );
    // The next start completes the work: every group exactly once.
    let mut d = bed.start_daemon();
    eventually!(
        Duration::from_secs(20),
        "the second start",
        d.log_text().contains("writeback is running")
    );
    eventually!(
        Duration::from_secs(60),
        "all groups",
        bed.groups().await.len() == ids.len()
    );
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    for id in &ids {
        let anchor = format!("Group_{id}");
        let n = bed
            .groups()
            .await
            .values()
            .filter(|a| {
                a.get("msds-externaldirectoryobjectid")
                    .is_some_and(|v| v.first() == Some(&anchor))
            })
            .count();
        assert_eq!(n, 1, "group {id} written {n} times");
    }
    bed.cleanup().await;
}

#[tokio::test]
async fn kill_9_mid_run_then_restart_converges_without_duplicates() {
    let mut bed = Bed::new("wb-daemon-kill", 0).await;
    bed.create_default_containers().await;
    let ids: Vec<String> = (0..150).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Killed {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);
    bed.write_config(None, "", DAEMON);
    let d = bed.start_daemon();
    eventually!(
        Duration::from_secs(30),
        "the first writes",
        !bed.groups().await.is_empty()
    );
    d.signal("KILL");
    drop(d);
    let written = bed.groups().await.len();
    let mut d = bed.start_daemon();
    eventually!(
        Duration::from_secs(60),
        "all groups",
        bed.groups().await.len() == ids.len()
    );
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0));
    let all = bed.groups().await;
    for id in &ids {
        let anchor = format!("Group_{id}");
        let n = all
            .values()
            .filter(|a| {
                a.get("msds-externaldirectoryobjectid")
                    .is_some_and(|v| v.first() == Some(&anchor))
            })
            .count();
        assert_eq!(
            n, 1,
            "group {id} written {n} times (killed after {written})"
        );
    }
    bed.cleanup().await;
}
