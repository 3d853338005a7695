//! LDAP broken between Writeback and the DC, through the fault proxy (the shared DC itself is
//! never stopped): the "DC" stopped and started again mid-apply, and the connection cut by the
//! server side mid-batch. The run fails clearly or retries, the state file is intact, and the
//! next run ends with the AD an undisturbed run leaves.
//!
//! Fault points are drawn (seeded) in the bytes an undisturbed run sends to the DC, so they fall
//! in the same place of the conversation; `FAULTS_POINTS` points per test (default 2).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use writeback_faults::proxy::{Fault, FaultProxy};
use writeback_faults::scene::{assert_intact, assert_same_ad, changes, report, with_scene};
use writeback_faults::seed::{points, Rng};
use writeback_integration::testbed::AdTestbed;

/// The DC's LDAPS address, from the test bed's URL.
fn dc_addr(ad: &AdTestbed) -> SocketAddr {
    let hostport = ad
        .ldaps_url
        .strip_prefix("ldaps://")
        .unwrap_or_else(|| panic!("the test bed's LDAPS URL is {}", ad.ldaps_url));
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve the DC address {hostport}"))
}

fn start_proxy(ad: &AdTestbed) -> FaultProxy {
    FaultProxy::start(dc_addr(ad)).unwrap_or_else(|e| panic!("cannot start the fault proxy: {e}"))
}

/// Waits until the proxy accepts connections again (after an outage).
fn wait_until_listening(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the proxy on port {port} did not listen again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_through_the_proxy_is_still_verified() {
    with_scene("wb-faults-tls", 0, |mut scene| async move {
        scene.seed(2, 0, &[]);
        let proxy = start_proxy(scene.ad());
        let url = format!("ldaps://127.0.0.1:{}", proxy.port());
        let t = scene.target("Tls", Some(&url), None, "").await;
        // A CA that did not sign the DC's certificate: the handshake through the proxy fails.
        let other = t.dir.join("other-ca");
        std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("cannot create {other:?}: {e}"));
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=Not the test bed CA", "-keyout"])
            .arg(other.join("ca.key"))
            .arg("-out")
            .arg(other.join("ca.pem"))
            .output()
            .unwrap_or_else(|e| panic!("the openssl CLI is needed for this test: {e}"));
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&t.config)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", t.config.display()));
        let ca_line = format!("ca_file = \"{}\"", scene.ad().ca_file.display());
        assert!(text.contains(&ca_line), "config layout changed:\n{text}");
        let wrong = text.replace(
            &ca_line,
            &format!("ca_file = \"{}\"", other.join("ca.pem").display()),
        );
        std::fs::write(&t.config, &wrong)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", t.config.display()));
        let out = t.run(&["sync"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.to_lowercase().contains("certificate"),
            "no certificate error: {stderr}"
        );
        assert!(
            proxy.connections_accepted() > 0,
            "the run did not go through the proxy"
        );
        assert!(
            scene.groups(&t).await.is_empty(),
            "written without a verified DC"
        );
        // The test bed's CA verifies the DC through the proxy's port.
        std::fs::write(&t.config, &text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", t.config.display()));
        let r = t.run_json(&["sync"], 0);
        assert_eq!(changes(&r).len(), 2, "{r:#}");
    })
    .await;
}

/// A first sync through the proxy with `fault` fired at seeded points of the bytes an
/// undisturbed run sends; then the next run must converge.
async fn fault_mid_apply(test: &'static str, prefix: &str, fault: fn(&mut Rng) -> Fault) {
    let mut rng = Rng::for_test(test);
    let n = points(2);
    with_scene(prefix, 6, move |mut scene| async move {
        scene.seed(20, 6, &[]);
        let proxy = start_proxy(scene.ad());
        let url = format!("ldaps://127.0.0.1:{}", proxy.port());
        let want = scene.reference("Ref", Some(&proxy)).await;
        let measured = want.first_sync_bytes;
        assert!(measured > 0, "nothing went through the proxy");
        for k in 0..n {
            let f = fault(&mut rng);
            // Past the bind and the first reads, before the last writes.
            let at = measured * rng.range(200, 900) / 1000;
            let point = format!("{test}: point {k}: {f:?} after {at} of {measured} bytes");
            eprintln!("{point}");
            let t = scene.target(&format!("Fault{k}"), Some(&url), None, "").await;
            let fired_before = proxy.faults_fired();
            proxy.arm(at, f);
            let out = t.run(&["sync", "--json"]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                proxy.faults_fired(),
                fired_before + 1,
                "{point}: the run ended before the fault point (it sent {} bytes); exit {:?}, stderr:\n{stderr}",
                proxy.bytes_sent(),
                out.status.code()
            );
            let written = scene.groups(&t).await.len();
            eprintln!(
                "{point}: the run exited {:?} with {written} of {} groups in AD; stderr:\n{stderr}",
                out.status.code(),
                scene.group_ids.len()
            );
            match out.status.code() {
                // Retried and finished.
                Some(0) => {}
                // Some groups failed: the report lists each with AD's error.
                Some(2) => {
                    let report = report(&["sync", "--json"], &out, 2);
                    let errors: Vec<&str> = report["outcomes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|o| o["error"].as_str())
                        .collect();
                    eprintln!("{point}: failed outcomes: {errors:#?}");
                    assert!(
                        !errors.is_empty() && errors.iter().all(|e| !e.trim().is_empty()),
                        "{point}: exit 2 without a failed outcome that says why: {report:#}"
                    );
                }
                // The run stopped: the error names the DC it lost.
                Some(1) => assert!(
                    stderr.contains(&url) || stderr.contains("127.0.0.1"),
                    "{point}: the error does not name the DC:\n{stderr}"
                ),
                other => panic!("{point}: exited {other:?}:\n{stderr}"),
            }
            assert_intact(&t.state);
            wait_until_listening(proxy.port());
            scene.check_recorded_exist(&t).await;
            let next = t.run(&["sync", "--json"]);
            let next_err = String::from_utf8_lossy(&next.stderr);
            assert_eq!(
                next.status.code(),
                Some(0),
                "{point}: the next sync exited {:?}\nstdout:\n{}\nstderr:\n{next_err}",
                next.status.code(),
                String::from_utf8_lossy(&next.stdout)
            );
            let again = t.run_json(&["sync"], 0);
            assert!(
                changes(&again).is_empty(),
                "{point}: not settled: {again:#}"
            );
            // Groups held back after the fault (quarantine) are named, so a difference below
            // is explained.
            let total = &again["quarantine_total"];
            let point = format!("{point} (after the next runs: {total} groups in quarantine)");
            assert_same_ad(&point, &scene.groups(&t).await, &want.groups);
            scene.check_anchors(&t).await;
            scene.drop_target(&t).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dc_stopped_and_started_mid_apply_then_the_next_run_converges() {
    fault_mid_apply(
        "the_dc_stopped_and_started_mid_apply",
        "wb-faults-dcstop",
        |rng| Fault::Outage(Duration::from_millis(rng.range(500, 3000))),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_dropped_mid_batch_then_the_next_run_converges() {
    fault_mid_apply("the_connection_dropped_mid_batch", "wb-faults-cut", |_| {
        Fault::Cut
    })
    .await;
}
