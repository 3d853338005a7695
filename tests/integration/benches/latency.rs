//! Cloud change -> AD latency with `writeback run` polling Graph every second.
//!
//! Each sample PATCHes a group's description through Graph and polls AD (every 20 ms) until the
//! new value is there. Baseline, measured in the same run on the same groups: the same change
//! applied by a one-shot `writeback sync` started right after the PATCH (no poll wait), so the
//! ratio shows what the poll interval adds to one cycle's cost.
//!
//! Run with `bench/latency.sh` (release binaries, the test bed up). Loopback only.

use serde_json::json;
use std::time::{Duration, Instant};
use writeback_integration::harness::{new_id, security_group, Bed};

const SAMPLES: usize = 21;

async fn wait_description(bed: &mut Bed, id: &str, want: &str) -> Duration {
    let start = Instant::now();
    loop {
        let got = bed
            .group_by_id(id)
            .await
            .and_then(|(_, a)| a.get("description").and_then(|v| v.first().cloned()));
        if got.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "change never reached AD"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.9), v[v.len() - 1])
}

#[tokio::main]
async fn main() {
    let mut bed = Bed::new("wb-bench-latency", 0).await;
    bed.create_default_containers().await;
    let ids: Vec<String> = (0..50).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("Latency {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);
    bed.write_config(
        None,
        "",
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\n",
    );

    // Baseline: one-shot sync right after each change.
    let out = bed.run(&["sync"]);
    assert!(out.status.success(), "initial sync failed");
    let mut baseline = Vec::new();
    for n in 0..SAMPLES {
        let id = &ids[n % ids.len()];
        let want = format!("baseline {n}");
        bed.graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(json!({ "description": want })),
        )
        .await;
        let start = Instant::now();
        let out = bed.run(&["sync"]);
        assert!(out.status.success(), "sync failed");
        wait_description(&mut bed, id, &want).await;
        baseline.push(start.elapsed());
    }

    // The daemon with a 1 s poll; changes at irregular moments within the poll period.
    let mut daemon = bed.start_daemon();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut latency = Vec::new();
    for n in 0..SAMPLES {
        let id = &ids[n % ids.len()];
        let want = format!("daemon {n}");
        // Spread the change instants over the poll period (deterministic, 37 ms steps).
        tokio::time::sleep(Duration::from_millis(300 + (n as u64 * 37) % 1000)).await;
        let start = Instant::now();
        bed.graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(json!({ "description": want })),
        )
        .await;
        wait_description(&mut bed, id, &want).await;
        latency.push(start.elapsed());
    }
    assert_eq!(daemon.stop(Duration::from_secs(20)), Some(0));

    let (b50, b90, bmax) = stats(baseline);
    let (d50, d90, dmax) = stats(latency);
    println!("samples: {SAMPLES} per series");
    println!("baseline (one-shot sync right after the change): median {b50:?}, p90 {b90:?}, max {bmax:?}");
    println!("daemon, 1 s poll (change -> visible in AD):      median {d50:?}, p90 {d90:?}, max {dmax:?}");
    println!(
        "ratio daemon/baseline: median {:.2}, p90 {:.2}",
        d50.as_secs_f64() / b50.as_secs_f64(),
        d90.as_secs_f64() / b90.as_secs_f64()
    );
    bed.cleanup().await;
}
