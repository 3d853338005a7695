//! `writeback run` under a service manager: the sd_notify protocol (READY=1 after the first
//! cycle, WATCHDOG=1 at half of WATCHDOG_USEC even while a cycle is slow, STOPPING=1 on
//! SIGTERM, STATUS=) seen on a notification socket the test binds, as systemd would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use writeback_integration::harness::{new_id, security_group, writeback_bin, Bed, CLIENT_SECRET};

/// The watchdog period the test asks for; the daemon must beat at least every half of it.
const WATCHDOG: Duration = Duration::from_secs(1);
/// Added to every Graph request, so the first cycle lasts several watchdog periods.
const GRAPH_LATENCY_MS: &str = "1500";

/// One line of a notification datagram, with the time it arrived.
#[derive(Debug, Clone)]
struct Note {
    at: Instant,
    line: String,
}

/// The daemon process, killed if the test stops early.
struct Service(Option<Child>);

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Service {
    fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Waits (at most `timeout`) for the exit and returns its code.
    async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.0.take()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("writeback run did not stop within {timeout:?} after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Receives notification lines until `until` matches one or `timeout` passes; returns every
/// line received so far (appended to `seen`).
async fn collect_until(
    rx: &mut mpsc::UnboundedReceiver<Note>,
    seen: &mut Vec<Note>,
    timeout: Duration,
    what: &str,
    until: impl Fn(&Note) -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) => {
                let done = until(&n);
                seen.push(n);
                if done {
                    return;
                }
            }
            Ok(None) => panic!("the notification socket closed while waiting for {what}"),
            Err(_) => panic!(
                "no {what} within {timeout:?}; received: {:?}",
                seen.iter().map(|n| &n.line).collect::<Vec<_>>()
            ),
        }
    }
}

/// The longest time between two consecutive WATCHDOG=1 in `notes` (and the count).
fn watchdog_gaps(notes: &[Note]) -> (usize, Duration) {
    let beats: Vec<Instant> = notes
        .iter()
        .filter(|n| n.line == "WATCHDOG=1")
        .map(|n| n.at)
        .collect();
    let gap = beats
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::ZERO);
    (beats.len(), gap)
}

#[tokio::test]
async fn notifies_ready_after_the_first_cycle_and_feeds_the_watchdog() {
    let mut bed = Bed::new("wb-service", 1).await;
    bed.create_default_containers().await;
    let users = bed.synced_users();
    let u0 = bed.users[0].cloud_id.clone();
    let g = new_id();
    bed.seed(
        users,
        vec![security_group(&g, "Service Ready", &[&u0])],
        &["--latency-ms", GRAPH_LATENCY_MS],
    );
    bed.write_config(
        None,
        "",
        "[daemon]\npoll_interval_secs = 1\nreconcile_interval_secs = 0\n",
    );

    // The service manager's end: a datagram socket, as systemd binds for NOTIFY_SOCKET.
    let socket_path = bed.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf).await {
            let at = Instant::now();
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if tx
                    .send(Note {
                        at,
                        line: line.to_string(),
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    });

    let log = bed.dir.path().join("service.log");
    let started = Instant::now();
    let mut service = Service(Some(
        Command::new(writeback_bin())
            .arg("--config")
            .arg(bed.config_path())
            .arg("-v")
            .arg("run")
            .env("WRITEBACK_TEST_AD_PASSWORD", &bed.ad.service_password)
            .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
            .env("RUST_LOG", "writeback=debug")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start writeback run"),
    ));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // 1. READY=1 only once the first cycle is done: the group is in AD by then, and the
    //    cycle's STATUS= came first.
    let mut seen = Vec::new();
    collect_until(
        &mut rx,
        &mut seen,
        Duration::from_secs(60),
        "READY=1",
        |n| n.line == "READY=1",
    )
    .await;
    let ready_at = seen.last().map(|n| n.at).unwrap_or_else(Instant::now);
    assert!(
        bed.group_by_id(&g).await.is_some(),
        "READY=1 came before the first cycle wrote the group; log:\n{}",
        log_text()
    );
    let lines: Vec<&str> = seen.iter().map(|n| n.line.as_str()).collect();
    let first_status = lines.iter().position(|l| l.starts_with("STATUS=starting"));
    let cycle_status = lines.iter().position(|l| l.starts_with("STATUS=cycle 1:"));
    assert!(
        first_status.is_some() && cycle_status.is_some() && first_status < cycle_status,
        "expected STATUS=starting…, then STATUS=cycle 1: … before READY=1, got {lines:?}"
    );

    // 2. The first cycle is slow (every Graph request waits), yet the watchdog was fed all
    //    along, and the start timeout extended until READY=1.
    let first_cycle = ready_at - started;
    assert!(
        first_cycle > WATCHDOG * 2,
        "the first cycle took {first_cycle:?}: too short to show the watchdog is fed during a cycle"
    );
    let (beats, gap) = watchdog_gaps(&seen);
    assert!(
        beats as u128 >= first_cycle.as_millis() / WATCHDOG.as_millis(),
        "{beats} WATCHDOG=1 during a first cycle of {first_cycle:?}: {lines:?}"
    );
    assert!(
        gap < WATCHDOG,
        "{gap:?} between two WATCHDOG=1 during the first cycle (watchdog {WATCHDOG:?})"
    );
    let extend = format!("EXTEND_TIMEOUT_USEC={}", WATCHDOG.as_micros());
    assert!(
        lines.contains(&extend.as_str()),
        "no {extend} before READY=1: {lines:?}"
    );

    // 3. After READY=1 the beats go on through the next (slow) cycles, without extensions.
    let mut after = Vec::new();
    let until = Instant::now() + WATCHDOG * 5;
    collect_until(
        &mut rx,
        &mut after,
        WATCHDOG * 10,
        "five watchdog periods of notifications",
        |n| n.at >= until,
    )
    .await;
    let (beats, gap) = watchdog_gaps(&after);
    assert!(
        beats >= 8,
        "{beats} WATCHDOG=1 in five periods of {WATCHDOG:?} (at least two a period expected)"
    );
    assert!(
        gap < WATCHDOG,
        "{gap:?} between two WATCHDOG=1 after READY=1"
    );
    assert!(
        !after
            .iter()
            .any(|n| n.line.starts_with("EXTEND_TIMEOUT_USEC=")),
        "the start timeout was still extended after READY=1"
    );
    assert!(
        after.iter().any(|n| n.line.starts_with("STATUS=cycle ")),
        "no STATUS= for the cycles after the first"
    );

    // 4. SIGTERM: STOPPING=1 at once, then a clean exit.
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(service.pid().to_string())
        .status()
        .expect("kill");
    assert!(st.success(), "kill -TERM {}", service.pid());
    let mut stopping = Vec::new();
    collect_until(
        &mut rx,
        &mut stopping,
        Duration::from_secs(10),
        "STOPPING=1",
        |n| n.line == "STOPPING=1",
    )
    .await;
    assert_eq!(
        service.wait(Duration::from_secs(30)).await,
        Some(0),
        "log:\n{}",
        log_text()
    );
    reader.abort();
    bed.cleanup().await;
}
