//! Failover with the default settings (`lease_secs = 10`, `standby_poll_secs = 2`): two
//! instances on one PostgreSQL state; the writer is killed with SIGKILL and a cloud change is
//! made at once; the time is from the kill until the change is in AD, written by the standby.
//!
//! Baseline, same run, same groups: one instance on a SQLite state, killed the same way and
//! started again at once (what a service manager restarting it does at best), until the same
//! kind of change is in AD.
//!
//! Run with `bench/failover.sh` (release binaries, the Samba and PostgreSQL test beds up).
//! Loopback only.

use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use writeback_integration::harness::{free_port, new_id, security_group, Bed, Daemon};
use writeback_integration::postgres::PgTestbed;

const SAMPLES: usize = 5;
const PG_PASSWORD_ENV: &str = "WRITEBACK_BENCH_PG_PASSWORD";

async fn wait_description(bed: &mut Bed, id: &str, want: &str, since: Instant) -> Duration {
    try_wait(bed, id, want, since)
        .await
        .unwrap_or_else(|| panic!("the change never reached AD"))
}

/// The time until the group's description is `want`, or `None` after two minutes.
async fn try_wait(bed: &mut Bed, id: &str, want: &str, since: Instant) -> Option<Duration> {
    loop {
        let got = bed
            .group_by_id(id)
            .await
            .and_then(|(_, a)| a.get("description").and_then(|v| v.first().cloned()));
        if got.as_deref() == Some(want) {
            return Some(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(120) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// An instance's config: the bed's, with `[state.postgres]` (default lease and poll) and its
/// own local state path and name.
fn instance(bed: &Bed, pg: &PgTestbed, database: &str, name: &str) -> PathBuf {
    let extra = format!(
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\nlisten = \"127.0.0.1:{port}\"\n\n{state}",
        port = free_port(),
        state = pg.state_section(database, name, PG_PASSWORD_ENV, ""),
    );
    let base = bed.write_config(None, "", &extra);
    let text = std::fs::read_to_string(&base).expect("config");
    let text = text.replace(
        "path = \"state.db\"",
        &format!("path = \"state-{name}.db\""),
    );
    let path = bed.dir.path().join(format!("writeback-{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn holder(pg: &PgTestbed, database: &str) -> Option<String> {
    pg.try_query(
        database,
        "SELECT holder FROM writeback_lease WHERE expires_at > now()",
    )
    .ok()
    .filter(|h| !h.is_empty())
}

#[tokio::main]
async fn main() {
    let pg = PgTestbed::load();
    let mut bed = Bed::new("wb-bench-failover", 0).await;
    bed.create_default_containers().await;
    let ids: Vec<String> = (0..50).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Failover {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);

    // Baseline: one instance on SQLite, killed and started again at once.
    bed.write_config(
        None,
        "",
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\n",
    );
    let mut d = bed.start_daemon();
    let first = ids[0].clone();
    bed.graph(
        "PATCH",
        &format!("/groups/{first}"),
        Some(json!({ "description": "warm" })),
    )
    .await;
    wait_description(&mut bed, &first, "warm", Instant::now()).await;
    let mut baseline = Vec::new();
    for n in 0..SAMPLES {
        let id = &ids[n % ids.len()];
        let want = format!("restart {n}");
        d.signal("KILL");
        drop(d);
        let killed = Instant::now();
        bed.graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(json!({ "description": want })),
        )
        .await;
        d = bed.start_daemon();
        let took = wait_description(&mut bed, id, &want, killed).await;
        eprintln!("baseline {n}: {:.1} s", took.as_secs_f64());
        baseline.push(took);
    }
    assert_eq!(d.stop(Duration::from_secs(20)), Some(0), "a clean stop");

    // Two instances on PostgreSQL, the defaults: the writer killed, the standby takes over.
    // The state moves there first, as an installation moving to HA does.
    let database = pg.fresh_database("bench_failover");
    let password = pg.password();
    let env = [(PG_PASSWORD_ENV, password.as_str())];
    let configs = [
        instance(&bed, &pg, &database, "a"),
        instance(&bed, &pg, &database, "b"),
    ];
    std::fs::copy(
        bed.dir.path().join("state.db"),
        bed.dir.path().join("state-a.db"),
    )
    .expect("the state file");
    let out = bed.run_with(&configs[0], &["state", "copy", "--to", "postgres"], &env);
    assert!(
        out.status.success(),
        "state copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(bed.dir.path().join("state-a.db")).expect("remove the copy");
    let start = |bed: &Bed, name: &str| -> Daemon {
        let i = usize::from(name == "b");
        bed.start_daemon_with(&configs[i], &env)
    };
    let mut running: Vec<(String, Daemon)> = vec![("a".into(), start(&bed, "a"))];
    let t = Instant::now();
    while holder(&pg, &database).as_deref() != Some("a") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "a never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.push(("b".into(), start(&bed, "b")));
    // a writes from the moved state.
    bed.graph(
        "PATCH",
        &format!("/groups/{first}"),
        Some(json!({ "description": "warm on PostgreSQL" })),
    )
    .await;
    wait_description(&mut bed, &first, "warm on PostgreSQL", Instant::now()).await;
    let mut failover = Vec::new();
    for n in 0..SAMPLES {
        let id = &ids[(n + 7) % ids.len()];
        let want = format!("failover {n}");
        // Let the standby settle (it has tried the lease at least once).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let writer = holder(&pg, &database).expect("a writer");
        let at = running
            .iter()
            .position(|(name, _)| *name == writer)
            .expect("the writer is running");
        let (name, dead) = running.remove(at);
        dead.signal("KILL");
        drop(dead);
        let killed = Instant::now();
        bed.graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(json!({ "description": want })),
        )
        .await;
        eprintln!("failover {n}: killed {writer}");
        let Some(took) = try_wait(&mut bed, id, &want, killed).await else {
            for (name, d) in &running {
                eprintln!("--- {name} ---\n{}", d.log_text());
            }
            panic!("failover {n}: the change never reached AD");
        };
        eprintln!("failover {n}: {:.1} s", took.as_secs_f64());
        failover.push(took);
        // The killed one comes back as the next standby.
        running.push((name.clone(), start(&bed, &name)));
    }
    drop(running);
    pg.drop_database(&database);

    let (bmin, bmed, bmax) = median(baseline);
    let (fmin, fmed, fmax) = median(failover);
    println!("samples: {SAMPLES} each; lease_secs 10, standby_poll_secs 2, poll 1 s");
    println!(
        "baseline, one instance on SQLite killed and restarted at once: min {:.1} s, median {:.1} s, max {:.1} s",
        bmin.as_secs_f64(),
        bmed.as_secs_f64(),
        bmax.as_secs_f64()
    );
    println!(
        "failover, writer killed, standby on PostgreSQL: min {:.1} s, median {:.1} s, max {:.1} s",
        fmin.as_secs_f64(),
        fmed.as_secs_f64(),
        fmax.as_secs_f64()
    );
    println!(
        "ratio failover/baseline (median): {:.2}",
        fmed.as_secs_f64() / bmed.as_secs_f64()
    );
    bed.cleanup().await;
}
