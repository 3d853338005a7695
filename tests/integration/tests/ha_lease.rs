//! The writer's lease on a real PostgreSQL (the test bed's cluster, over TLS): one holder at a
//! time, takeovers only after expiry with a growing epoch, the old holder fenced, a takeover
//! held back by a fenced transaction until it ends, and racing instances settling on one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use writeback::ha::{pg, HaError, Keeper, LeaseTimes, PgLease, PgSettings, Role, Takeover};
use writeback_integration::postgres::PgTestbed;

fn settings(pg: &PgTestbed, database: &str) -> PgSettings {
    PgSettings {
        host: pg.host.clone(),
        port: pg.port,
        database: database.to_string(),
        user: pg.user.clone(),
        password: pg.password().into(),
        ca_file: pg.ca_file.clone(),
        connect_timeout: Duration::from_secs(5),
        schema: None,
    }
}

async fn instance(s: &PgSettings, name: &str, lease: Duration) -> PgLease {
    let client = pg::connect(s).await.expect("connect over TLS");
    PgLease::open(Arc::new(client), name.to_string(), LeaseTimes::new(lease))
        .await
        .expect("open the lease")
}

fn won(t: &Takeover) -> i64 {
    match t {
        Takeover::Won { epoch, .. } => *epoch,
        Takeover::Held(row) => panic!("expected to win, {} holds it", row.holder),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_at_a_time_and_a_takeover_after_expiry_fences_the_old_one() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("lease"));
    let lease = Duration::from_millis(1500);
    let a = instance(&s, "a", lease).await;
    let b = instance(&s, "b", lease).await;

    let epoch = won(&a.try_take().await.expect("a takes"));
    assert_eq!(epoch, 1);
    match b.try_take().await.expect("b tries") {
        Takeover::Held(row) => {
            assert_eq!((row.holder.as_str(), row.epoch, row.live), ("a", 1, true))
        }
        other => panic!("b took a live lease: {other:?}"),
    }
    // Renewals keep it past several lease times.
    let until = Instant::now() + lease * 3;
    while Instant::now() < until {
        let d = a.renew(epoch).await.expect("a renews");
        assert!(d.allows(Instant::now(), Duration::from_millis(500)));
        assert!(matches!(b.try_take().await, Ok(Takeover::Held(_))));
        tokio::time::sleep(lease / 4).await;
    }

    // a stops renewing (paused, or cut off): after the expiry b takes over, epoch 2.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(won(&b.try_take().await.expect("b takes over")), 2);
    // a wakes: its renewal is refused and its fence fails.
    assert!(matches!(
        a.renew(epoch).await,
        Err(HaError::Fenced { epoch: 1 })
    ));
    let mut c = pg::connect(&s).await.expect("connect");
    let tx = c.transaction().await.expect("begin");
    assert!(matches!(
        pg::fence(&tx, "a", epoch).await,
        Err(HaError::Fenced { .. })
    ));
    pg::fence(&tx, "b", 2).await.expect("b's fence holds");
    tx.rollback().await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_lets_a_standby_take_over_at_once() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("release"));
    let a = instance(&s, "a", Duration::from_secs(60)).await;
    let b = instance(&s, "b", Duration::from_secs(60)).await;
    let epoch = won(&a.try_take().await.expect("a takes"));
    assert!(matches!(b.try_take().await, Ok(Takeover::Held(_))));
    a.release(epoch).await.expect("release");
    assert_eq!(won(&b.try_take().await.expect("b takes")), epoch + 1);
}

/// What start-up asks when the lease names this instance: a live holder renews it (another
/// process under the same name), a dead one does not (this instance's killed predecessor).
#[tokio::test(flavor = "multi_thread")]
async fn a_live_holder_is_told_from_a_dead_one_by_its_renewals() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("lease"));
    let lease = Duration::from_millis(3000);
    let times = LeaseTimes::new(lease);
    let a = instance(&s, "same", lease).await;
    let newcomer = instance(&s, "same", lease).await;

    let epoch = won(&a.try_take().await.expect("a takes"));
    let renewing = tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(times.renew_every / 2).await;
            a.renew(epoch).await.expect("a renews");
        }
        a
    });
    assert!(
        newcomer
            .renewed_by_holder(times.renew_every + times.renew_every / 2)
            .await
            .expect("read"),
        "a renews: a live process holds the name"
    );
    let a = renewing.await.expect("renewals");
    // a stops renewing (killed): its lease only runs out.
    assert!(
        !newcomer
            .renewed_by_holder(times.renew_every + times.renew_every / 2)
            .await
            .expect("read"),
        "nobody renews: the holder is gone"
    );
    // No live lease at all: nothing to wait for.
    a.release(epoch).await.expect("release");
    let started = Instant::now();
    assert!(!newcomer.renewed_by_holder(lease).await.expect("read"));
    assert!(started.elapsed() < lease / 2, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_takeover_waits_for_the_old_holders_fenced_transaction_to_end() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("fence"));
    let lease = Duration::from_millis(800);
    let a = instance(&s, "a", lease).await;
    let b = Arc::new(instance(&s, "b", lease).await);
    let epoch = won(&a.try_take().await.expect("a takes"));

    let mut conn = pg::connect(&s).await.expect("connect");
    let tx = conn.transaction().await.expect("begin");
    pg::fence(&tx, "a", epoch).await.expect("fenced while live");
    // The lease expires while a's transaction is open; b's takeover must wait for it.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let racer = b.clone();
    let take = tokio::spawn(async move {
        let t = racer.try_take().await;
        (t, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !take.is_finished(),
        "the takeover did not wait for the fenced transaction"
    );
    let committed = Instant::now();
    tx.commit().await.expect("commit");
    let (t, at) = take.await.expect("join");
    assert_eq!(won(&t.expect("b takes")), epoch + 1);
    assert!(at >= committed, "the takeover finished before the commit");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_started_at_once_settle_on_exactly_one_writer_every_time() {
    let pg = PgTestbed::load();
    for round in 0..10 {
        let s = settings(&pg, &pg.fresh_database(&format!("race{round}")));
        let mut all = Vec::new();
        for i in 0..4 {
            all.push(Arc::new(
                instance(&s, &format!("i{i}"), Duration::from_secs(30)).await,
            ));
        }
        let tries: Vec<_> = all
            .iter()
            .cloned()
            .map(|l| tokio::spawn(async move { l.try_take().await }))
            .collect();
        let mut winners = 0;
        for t in tries {
            match t.await.expect("join").expect("try") {
                Takeover::Won { epoch, .. } => {
                    winners += 1;
                    assert_eq!(epoch, 1);
                }
                Takeover::Held(row) => assert!(row.live),
            }
        }
        assert_eq!(winners, 1, "round {round}: {winners} writers");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_starting_at_once_under_one_name_claim_it_once_every_time() {
    let pg = PgTestbed::load();
    let lease = Duration::from_secs(30);
    for round in 0..10 {
        let database = pg.fresh_database(&format!("claim{round}"));
        let s = settings(&pg, &database);
        let mut all = Vec::new();
        for _ in 0..4 {
            all.push(Arc::new(instance(&s, "same", lease).await));
        }
        // Half the rounds start over a stamp a killed process left.
        if round % 2 == 1 {
            all[0].stamp_presence("killed").await.expect("stamp");
        }
        let tries: Vec<_> = all
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, l)| {
                tokio::spawn(async move {
                    let token = format!("p{i}");
                    // Start-up's wait: one and a half of the keeper's turns (50 ms here).
                    let claimed = match l.other_process(&token, Duration::from_millis(75)).await? {
                        pg::OtherProcess::Running => false,
                        pg::OtherProcess::None { stale } => {
                            l.claim_presence(&token, stale.as_deref()).await?
                        }
                    };
                    if claimed {
                        // The claimant's keeper stamps the name at every turn.
                        tokio::spawn(async move {
                            for _ in 0..20 {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                let _ = l.stamp_presence(&token).await;
                            }
                        });
                    }
                    Ok::<bool, HaError>(claimed)
                })
            })
            .collect();
        let mut claimed = 0;
        for t in tries {
            if t.await.expect("join").expect("claim") {
                claimed += 1;
            }
        }
        assert_eq!(
            claimed, 1,
            "round {round}: {claimed} processes run under one name"
        );
        // The name is stamped by the process that claimed it.
        let stamped = pg.query(
            &database,
            "SELECT token FROM writeback_presence WHERE instance = 'same'",
        );
        assert!(
            ["p0", "p1", "p2", "p3"].contains(&stamped.trim()),
            "round {round}: {stamped:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pg = PgTestbed::load();
    let mut s = settings(&pg, &pg.database);
    let other = tempfile::NamedTempFile::new().expect("temp");
    // Forest-independent: a CA that did not sign the server's certificate.
    std::fs::write(other.path(), unrelated_ca_pem()).expect("write CA");
    s.ca_file = other.path().to_path_buf();
    match pg::connect(&s).await {
        Err(HaError::Certificate { message, .. }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a server certificate from another CA was accepted"),
    }
}

/// A self-signed CA certificate that signed nothing here (made once with openssl, kept inline).
fn unrelated_ca_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=Not The Test Bed CA",
            "-days",
            "1",
        ])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("PEM")
}

async fn wait_for(k: &mut Keeper, within: Duration, what: &str, ok: impl Fn(&Role) -> bool) {
    let until = Instant::now() + within;
    while !ok(&k.role()) {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: still {:?} after {within:?}",
            k.role()
        );
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), k.changed()).await;
    }
}

fn active(r: &Role) -> bool {
    matches!(r, Role::Active { .. })
}

#[tokio::test(flavor = "multi_thread")]
async fn keepers_started_at_once_give_one_writer_and_a_standby_that_takes_over_when_it_goes() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("keepers"));
    let times = LeaseTimes::new(Duration::from_secs(3));
    let poll = Duration::from_millis(300);
    let a = Keeper::start(s.clone(), "a".into(), "token-a".into(), times, poll);
    let b = Keeper::start(s.clone(), "b".into(), "token-b".into(), times, poll);
    let until = Instant::now() + Duration::from_secs(5);
    while !(active(&a.role()) || active(&b.role())) {
        assert!(
            Instant::now() < until,
            "no writer: {:?} {:?}",
            a.role(),
            b.role()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Over several lease times exactly one is the writer, always the same.
    let first_a = active(&a.role());
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(active(&a.role()), first_a, "{:?} {:?}", a.role(), b.role());
        assert_ne!(active(&a.role()), active(&b.role()), "two writers or none");
    }
    let (writer, mut standby) = if first_a { (a, b) } else { (b, a) };
    match standby.role() {
        Role::Standby { holder, .. } => {
            assert_eq!(holder.as_deref(), Some(writer.instance.as_str()))
        }
        other => panic!("{other:?}"),
    }
    // The writer's handle goes (the process stops): it gives the lease up, the standby takes
    // over within a poll or two, with the next epoch.
    let old = match writer.role() {
        Role::Active { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    drop(writer);
    wait_for(&mut standby, Duration::from_secs(3), "the takeover", active).await;
    assert!(matches!(standby.role(), Role::Active { epoch, .. } if epoch == old + 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_database_stopped_the_writer_stops_before_its_lease_can_expire_and_comes_back() {
    let pg = PgTestbed::load();
    let s = settings(&pg, &pg.fresh_database("pgdown"));
    let times = LeaseTimes::new(Duration::from_secs(4));
    let mut k = Keeper::start(
        s,
        "a".into(),
        "token-a".into(),
        times,
        Duration::from_millis(300),
    );
    wait_for(&mut k, Duration::from_secs(5), "the first takeover", active).await;
    let stopped = pg.stop();
    let down_at = Instant::now();
    wait_for(&mut k, times.lease, "standby without the database", |r| {
        !active(r)
    })
    .await;
    let after = down_at.elapsed();
    // The database's expiry is at least a lease after the last renewal, which was before the
    // stop; the writer gave up earlier than that.
    assert!(after < times.lease, "gave up after {after:?}");
    assert!(k.role().may_write(Duration::ZERO).is_none());
    let _pg = stopped.start();
    wait_for(&mut k, Duration::from_secs(15), "the writer again", active).await;
}
