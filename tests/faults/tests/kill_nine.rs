//! kill -9 at seeded random points of a first sync: after a restart every run ends with the AD
//! an undisturbed run of the same tenant leaves, without duplicate anchors.
//!
//! `FAULTS_POINTS` kill points (default 3), `FAULTS_SEED` replays a run; `randomised.sh` runs
//! many.

use std::process::Stdio;
use std::time::{Duration, Instant};

use writeback_faults::scene::{assert_same_ad, changes, with_scene};
use writeback_faults::seed::{points, Rng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_of_a_first_sync_then_a_restart_converges() {
    let mut rng = Rng::for_test("kill_9_at_random_points_of_a_first_sync");
    let kills = points(3);
    with_scene("wb-faults-kill", 8, move |mut scene| async move {
        scene.seed(24, 6, &[]);
        let want = scene.reference("Ref", None).await;
        // From the start of the process to a little past the end of the undisturbed run, so
        // start-up, the delta rounds, the applies and the bookkeeping are all hit.
        let span = want.first_sync.as_millis() as u64 * 11 / 10;
        let n = scene.group_ids.len();
        for k in 0..kills {
            // Half the points by time (start-up, delta rounds, bookkeeping are hit), half by the
            // number of groups AD already holds (the writes are a small part of the time).
            let by_count = rng.range(0, 2) == 1;
            // A share of the run, not a time: a seed replays the same place on a slower machine.
            let delay = span * rng.range(0, 1000) / 1000;
            let after_groups = rng.range(1, n as u64) as usize;
            let t = scene.target(&format!("Kill{k}"), None, None, "").await;
            let log = std::fs::File::create(t.dir.join("killed.log"))
                .unwrap_or_else(|e| panic!("cannot create the log of the killed run: {e}"));
            let mut child = t
                .command(&["sync", "--json"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start writeback sync: {e}"));
            let started = Instant::now();
            let aim = if by_count {
                loop {
                    let exited = child
                        .try_wait()
                        .unwrap_or_else(|e| panic!("cannot check on writeback sync: {e}"));
                    if exited.is_some()
                        || scene.count_groups(&t).await >= after_groups
                        || started.elapsed() > Duration::from_secs(120)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                format!("once {after_groups} groups were in AD")
            } else {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                format!("at {delay} ms of {span} ms")
            };
            let done_before = child
                .try_wait()
                .unwrap_or_else(|e| panic!("cannot check on writeback sync: {e}"));
            let _ = child.kill();
            let _ = child.wait();
            let written = scene.groups(&t).await.len();
            let point = format!(
                "kill point {k} {aim}, after {} ms ({written} of {n} groups in AD{})",
                started.elapsed().as_millis(),
                if done_before.is_some() {
                    ", the run had already finished"
                } else {
                    ""
                }
            );
            eprintln!("{point}");
            scene.check_recorded_exist(&t).await;

            let restart = t.run(&["sync", "--json"]);
            let stdout = String::from_utf8_lossy(&restart.stdout);
            let stderr = String::from_utf8_lossy(&restart.stderr);
            assert_eq!(
                restart.status.code(),
                Some(0),
                "{point}: the restarted sync exited {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                restart.status.code()
            );
            let again = t.run_json(&["sync"], 0);
            assert!(
                changes(&again).is_empty(),
                "{point}: the sync after the restart still changes AD: {again:#}"
            );
            let got = scene.groups(&t).await;
            assert_same_ad(&point, &got, &want.groups);
            scene.check_anchors(&t).await;
            scene.drop_target(&t).await;
        }
    })
    .await;
}
