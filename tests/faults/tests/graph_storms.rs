//! Graph answering 429 (with Retry-After) and 503/504 to a share of the requests of a sync, and
//! to every request of one: the sync completes, or fails with Graph's error and writes nothing,
//! and the next run ends with the AD an undisturbed run leaves.

use serde_json::{json, Value};
use writeback_faults::scene::{assert_intact, assert_same_ad, changes, with_scene, Scene, Target};
use writeback_faults::seed::Rng;

/// Small delta pages: a round is many requests, so a storm hits many of them.
const PAGING: &[&str] = &["--delta-page-size", "2", "--member-page-size", "2"];

async fn faults(scene: &Scene, body: Value) -> Value {
    scene.bed.emulator.control("faults", Some(body)).await
}

async fn injected(scene: &Scene) -> u64 {
    scene.bed.emulator.control("state", None).await["_emulator"]["faultsInjected"]
        .as_u64()
        .unwrap_or_else(|| panic!("the emulator does not count injected faults"))
}

/// After a storm: the state file is intact, the next run succeeds, the one after it changes
/// nothing, AD is the reference's and the anchors are unique.
async fn converges(scene: &mut Scene, t: &Target, want: &writeback_faults::scene::AdGroups) {
    assert_intact(&t.state);
    t.run_json(&["sync"], 0);
    let again = t.run_json(&["sync"], 0);
    assert!(changes(&again).is_empty(), "not settled: {again:#}");
    assert_same_ad("after the storm", &scene.groups(t).await, want);
    scene.check_anchors(t).await;
}

/// A storm of `kind` faults at a seeded rate; Retry-After is short so retries fit in the test.
async fn storm(test: &'static str, prefix: &str, kind: &'static str) {
    let mut rng = Rng::for_test(test);
    let seed = rng.next_u64() % 1_000_000;
    let rate = rng.range(20, 45) as f64 / 100.0;
    let first = rng.range(1, 4);
    with_scene(prefix, 4, move |mut scene| async move {
        scene.seed(8, 2, PAGING);
        let want = scene.reference("Ref", None).await;
        let t = scene.target("Storm", None, None, "").await;
        let before = injected(&scene).await;
        // The first few requests are always hit, then the seeded share of the rest.
        let forced = if kind == "rate429" { "next429" } else { "next503" };
        faults(
            &scene,
            json!({kind: rate, forced: first, "retryAfter": 0.2, "seed": seed}),
        )
        .await;
        let out = t.run(&["sync", "--json"]);
        faults(&scene, json!({kind: 0.0, forced: 0})).await;
        let hit = injected(&scene).await - before;
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "{test}: {kind} {rate} after {first} forced, seed {seed}: {hit} faults injected, exit {:?}",
            out.status.code()
        );
        assert!(hit > 0, "the storm did not hit the sync");
        match out.status.code() {
            Some(0) => {}
            // Out of retries: Graph's error is named.
            Some(1) => assert!(
                [
                    "TooManyRequests",
                    "429",
                    "503",
                    "504",
                    "serviceNotAvailable",
                    "gatewayTimeout"
                ]
                .iter()
                .any(|s| stderr.contains(s)),
                "the error does not name Graph's answer:\n{stderr}"
            ),
            other => panic!("exited {other:?}:\n{stderr}"),
        }
        converges(&mut scene, &t, &want.groups).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_is_waited_out_or_fails_clearly_and_the_next_run_converges() {
    storm("a_429_storm", "wb-faults-429", "rate429").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_is_retried_or_fails_clearly_and_the_next_run_converges() {
    storm("a_503_storm", "wb-faults-503", "rate5xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_throttling_every_request_fails_the_run_clearly_and_writes_nothing() {
    with_scene("wb-faults-429all", 2, |mut scene| async move {
        scene.seed(6, 2, PAGING);
        let want = scene.reference("Ref", None).await;
        let t = scene.target("Storm", None, None, "").await;
        let text = std::fs::read_to_string(&t.config)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", t.config.display()));
        // Few retries, so the run gives up within the test.
        let limited = text.replacen("[graph]\n", "[graph]\nmax_retries = 2\n", 1);
        assert_ne!(limited, text, "config layout changed:\n{text}");
        std::fs::write(&t.config, &limited)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", t.config.display()));
        faults(&scene, json!({"next429": 1_000_000, "retryAfter": 0.1})).await;
        let out = t.run(&["sync", "--json"]);
        faults(&scene, json!({"next429": 0})).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("TooManyRequests") || stderr.contains("429"),
            "the error does not say Graph throttled:\n{stderr}"
        );
        assert!(
            scene.groups(&t).await.is_empty(),
            "a run that could not read the cloud wrote to AD"
        );
        converges(&mut scene, &t, &want.groups).await;
    })
    .await;
}
