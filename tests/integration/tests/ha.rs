//! Several instances on one state in PostgreSQL, against the real Samba DC, the Graph emulator
//! and the test bed's PostgreSQL: exactly one writes, a standby takes over when the writer dies,
//! a paused writer that wakes writes nothing, and a writer cut off from the database stops
//! writing and resumes when it is back, and an operator on another host approves held deletes
//! and releases groups while the writer runs. Lease 3 s, standby poll 1 s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use writeback_integration::harness::{free_port, new_id, security_group, Bed, Daemon};
use writeback_integration::postgres::PgTestbed;
use writeback_integration::{eventually, eventually_or_logs};

const PG_PASSWORD_ENV: &str = "WRITEBACK_TEST_PG_PASSWORD";

/// One instance: its config (own local state path, own name, own listen port).
struct Instance {
    name: &'static str,
    config: PathBuf,
    port: u16,
}

/// Writes the bed's config for instance `name` on `database`.
fn instance(bed: &Bed, pg: &PgTestbed, database: &str, name: &'static str) -> Instance {
    instance_with(bed, pg, database, name, "")
}

/// [`instance`] with `more` appended to the config.
fn instance_with(
    bed: &Bed,
    pg: &PgTestbed,
    database: &str,
    name: &'static str,
    more: &str,
) -> Instance {
    let port = free_port();
    let extra = format!(
        r#"
[daemon]
poll_interval_secs = 1
reconcile_interval_secs = 0
debounce_ms = 200
listen = "127.0.0.1:{port}"

[state.postgres]
url = "postgresql://{user}@{host}:{pgport}/{database}"
password_env = "{PG_PASSWORD_ENV}"
ca_file = "{ca}"
instance = "{name}"
lease_secs = 3
standby_poll_secs = 1

{more}
"#,
        user = pg.user,
        host = pg.host,
        pgport = pg.port,
        ca = pg.ca_file.display(),
    );
    let base = bed.write_config(None, "", &extra);
    let text = std::fs::read_to_string(&base).expect("config");
    let text = text.replace(
        "path = \"state.db\"",
        &format!("path = \"state-{name}.db\""),
    );
    let config = bed.dir.path().join(format!("writeback-{name}.toml"));
    std::fs::write(&config, text).expect("write config");
    Instance { name, config, port }
}

fn start(bed: &Bed, pg: &PgTestbed, i: &Instance) -> Daemon {
    bed.start_daemon_with(&i.config, &[(PG_PASSWORD_ENV, &pg.password())])
}

/// `/readyz`: the status and the body (`None` when nothing answers).
async fn readyz(port: u16) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

async fn metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The lease's holder and epoch, when any instance took it.
fn lease(pg: &PgTestbed, database: &str) -> Option<(String, i64, bool)> {
    let out = pg
        .try_query(
            database,
            "SELECT holder, epoch, expires_at > now() FROM writeback_lease",
        )
        .ok()?;
    let mut parts = out.split('|');
    let holder = parts.next()?.to_string();
    let epoch = parts.next()?.parse().ok()?;
    let live = parts.next()? == "t";
    (!holder.is_empty()).then_some((holder, epoch, live))
}

/// A second host configured as `i` (its config cloned, with a port and a state file of its
/// own) is refused at start, naming the setting and `i`'s name.
fn clone_is_refused(bed: &Bed, pg: &PgTestbed, i: &Instance) {
    let text = std::fs::read_to_string(&i.config).expect("config");
    let clone = bed.dir.path().join(format!("clone-{}.toml", i.name));
    std::fs::write(
        &clone,
        text.replace(
            &format!("127.0.0.1:{}", i.port),
            &format!("127.0.0.1:{}", free_port()),
        )
        .replace(
            &format!("state-{}.db", i.name),
            &format!("state-clone-{}.db", i.name),
        ),
    )
    .expect("write");
    let out = run_once(bed, &clone, &["run"], &pg.password());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("state.postgres.instance") && err.contains(&format!("\"{}\"", i.name)),
        "{}'s name not refused:\n{err}",
        i.name
    );
}

/// Whether a process runs under instance `name`, as its presence stamp says.
fn presence(pg: &PgTestbed, database: &str, name: &str) -> bool {
    pg.try_query(
        database,
        &format!("SELECT count(*) FROM writeback_presence WHERE instance = '{name}'"),
    )
    .is_ok_and(|n| n.trim() == "1")
}

/// Groups in AD per anchor, each anchor expected once.
async fn assert_each_written_once(bed: &mut Bed, ids: &[String], what: &str) {
    let all = bed.groups().await;
    for id in ids {
        let anchor = format!("Group_{id}");
        let n = all
            .values()
            .filter(|a| {
                a.get("msds-externaldirectoryobjectid")
                    .is_some_and(|v| v.first() == Some(&anchor))
            })
            .count();
        assert_eq!(n, 1, "{what}: group {id} written {n} times");
    }
}

fn seed_groups(bed: &mut Bed, n: usize, prefix: &str) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| new_id()).collect();
    let groups = ids
        .iter()
        .enumerate()
        .map(|(i, id)| security_group(id, &format!("{prefix} {i}"), &[]))
        .collect();
    bed.seed(vec![], groups, &[]);
    ids
}

fn other<'a>(a: &'a Instance, b: &'a Instance, name: &str) -> &'a Instance {
    if a.name == name {
        b
    } else {
        a
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_started_together_make_one_writer_every_time() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("ha_two");
    let mut bed = Bed::new("wb-ha-two", 0).await;
    bed.create_default_containers().await;
    let ids = seed_groups(&mut bed, 3, "Both");
    let a = instance(&bed, &pg, &database, "a");
    let b = instance(&bed, &pg, &database, "b");
    let mut epochs = Vec::new();
    for round in 0..3 {
        let mut da = start(&bed, &pg, &a);
        let mut db = start(&bed, &pg, &b);
        eventually_or_logs!(
            Duration::from_secs(30),
            format!("round {round}: one instance ready and one standby"),
            [da, db],
            {
                let ra = readyz(a.port).await;
                let rb = readyz(b.port).await;
                let ready = [&ra, &rb]
                    .iter()
                    .filter(|r| matches!(r, Some((200, _))))
                    .count();
                let standby = [&ra, &rb]
                    .iter()
                    .filter(|r| matches!(r, Some((503, t)) if t.contains("standby")))
                    .count();
                ready == 1 && standby == 1
            }
        );
        let (holder, epoch, live) = lease(&pg, &database).expect("a lease row");
        assert!(live, "round {round}: the lease is live");
        let writer = if holder == "a" { &a } else { &b };
        let standby = other(&a, &b, &holder);
        assert_eq!(
            readyz(writer.port).await.map(|r| r.0),
            Some(200),
            "round {round}: the holder {holder} is the ready one"
        );
        assert_eq!(metric(writer.port, "writeback_ha_active").await, Some(1.0));
        assert_eq!(metric(standby.port, "writeback_ha_active").await, Some(0.0));
        // `status` on either host says who writes.
        let out = bed.run_with(
            &standby.config,
            &["status"],
            &[(PG_PASSWORD_ENV, &pg.password())],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            text.contains(&format!("held by {holder}")) && text.contains("standby"),
            "round {round}: status on {}:\n{text}\n{}",
            standby.name,
            String::from_utf8_lossy(&out.stderr)
        );
        epochs.push(epoch);
        // Both stop cleanly; the writer hands the lease back.
        assert_eq!(da.stop(Duration::from_secs(20)), Some(0), "a stops");
        assert_eq!(db.stop(Duration::from_secs(20)), Some(0), "b stops");
    }
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "the epoch grows at every takeover: {epochs:?}"
    );
    assert_each_written_once(&mut bed, &ids, "after three rounds").await;
    bed.cleanup().await;
    pg.drop_database(&database);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_writer_mid_apply_the_standby_takes_over_without_duplicates() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("ha_kill");
    let mut bed = Bed::new("wb-ha-kill", 0).await;
    bed.create_default_containers().await;
    let ids = seed_groups(&mut bed, 150, "Killed");
    let a = instance(&bed, &pg, &database, "a");
    let b = instance(&bed, &pg, &database, "b");
    let da = start(&bed, &pg, &a);
    eventually!(
        Duration::from_secs(30),
        "a holds the lease",
        lease(&pg, &database).is_some_and(|(h, _, _)| h == "a")
    );
    let mut db = start(&bed, &pg, &b);
    eventually!(
        Duration::from_secs(60),
        "a's first writes",
        !bed.groups().await.is_empty()
    );
    da.signal("KILL");
    let killed = Instant::now();
    drop(da);
    let written = bed.groups().await.len();
    assert!(
        written < ids.len(),
        "killed after every group was written ({written}): not mid-apply"
    );
    eventually!(
        Duration::from_secs(30),
        "b takes over",
        lease(&pg, &database).is_some_and(|(h, _, live)| h == "b" && live)
    );
    let took_over = killed.elapsed();
    eventually!(
        Duration::from_secs(90),
        "every group in AD",
        bed.groups().await.len() == ids.len()
    );
    eprintln!(
        "killed after {written} groups; b took over {:.1} s after the kill, all written {:.1} s after it",
        took_over.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    assert!(
        took_over < Duration::from_secs(3 + 1 + 2),
        "the takeover took {took_over:?} (lease 3 s + poll 1 s)"
    );
    assert_each_written_once(&mut bed, &ids, "after the takeover").await;
    // The shared state records each object once (recorded when AD has answered the batch),
    // and the audit trail names both writers.
    let want = format!("{}|{}", ids.len(), ids.len());
    eventually!(
        Duration::from_secs(30),
        "every anchor recorded once",
        pg.query(
            &database,
            "SELECT count(*), count(DISTINCT object_guid) FROM anchor",
        ) == want
    );
    // a's batch under way when it died was never recorded (b found and claimed what it had
    // written): the events are b's, and every event names its writer.
    let by = pg.query(
        &database,
        "SELECT coalesce(detail_json::json->>'instance', '-'), count(*) FROM run_event \
         GROUP BY 1 ORDER BY 1",
    );
    assert!(
        by.lines()
            .all(|l| l.starts_with("a|") || l.starts_with("b|"))
            && by.contains("b|"),
        "audit events by instance:\n{by}"
    );
    // Nothing left to do: b's next cycles write nothing more.
    let usn = bed.highest_usn().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bed.highest_usn().await,
        usn,
        "b keeps writing after converging"
    );
    // The verbs on the shared state, b still writing: a one-shot sync is a second writer
    // and refused; the verbs that read work on a snapshot and write nothing.
    let password = pg.password();
    let env = [(PG_PASSWORD_ENV, password.as_str())];
    let out = bed.run_with(&a.config, &["sync"], &env);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("instance b holds the lease"), "{err}");
    let plan = bed.run_with(&a.config, &["plan", "--json"], &env);
    let text = String::from_utf8_lossy(&plan.stdout).to_string();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&text).expect("plan JSON");
    assert_eq!(
        doc["plan"]["changes"].as_array().map(Vec::len),
        Some(0),
        "a plan after convergence: {text}"
    );
    let audit = bed.run_with(&a.config, &["audit", "--json-lines"], &env);
    let lines = String::from_utf8_lossy(&audit.stdout).to_string();
    assert_eq!(audit.status.code(), Some(0), "{lines}");
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line"))
        .collect();
    assert!(
        !events.is_empty()
            && events
                .iter()
                .all(|e| e["instance"] == "a" || e["instance"] == "b"),
        "every audit event names its writer:\n{lines}"
    );
    let status = bed.run_with(&a.config, &["status", "--json"], &env);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!(
            "status JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        )
    });
    assert_eq!(doc["shared"]["lease"]["holder"], "b", "{doc}");
    assert_eq!(doc["shared"]["role"], "standby", "{doc}");
    assert!(
        doc["last_runs"].as_array().is_some_and(|r| !r.is_empty()),
        "{doc}"
    );
    assert_eq!(bed.highest_usn().await, usn, "a verb wrote to AD");
    assert_eq!(db.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
    pg.drop_database(&database);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_writer_resumed_after_a_takeover_writes_nothing() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("ha_pause");
    let mut bed = Bed::new("wb-ha-pause", 0).await;
    bed.create_default_containers().await;
    let ids = seed_groups(&mut bed, 2, "Paused");
    let a = instance(&bed, &pg, &database, "a");
    let b = instance(&bed, &pg, &database, "b");
    let mut da = start(&bed, &pg, &a);
    eventually!(
        Duration::from_secs(30),
        "a writes the groups",
        bed.groups().await.len() == ids.len()
    );
    assert_eq!(lease(&pg, &database).map(|l| l.0).as_deref(), Some("a"));
    let mut db = start(&bed, &pg, &b);
    eventually!(
        Duration::from_secs(30),
        "b is a standby",
        matches!(readyz(b.port).await, Some((503, t)) if t.contains("standby"))
    );
    da.signal("STOP");
    eventually!(
        Duration::from_secs(30),
        "b takes over from the paused a",
        lease(&pg, &database).is_some_and(|(h, _, live)| h == "b" && live)
    );
    // A change while a sleeps: b writes it.
    let renamed = format!("Renamed {}", &new_id()[..6]);
    bed.graph(
        "PATCH",
        &format!("/groups/{}", ids[0]),
        Some(serde_json::json!({ "description": renamed })),
    )
    .await;
    eventually!(
        Duration::from_secs(30),
        "b writes the change",
        description(&mut bed, &ids[0]).await == Some(renamed.clone())
    );
    let events_before: usize = pg
        .query(
            &database,
            "SELECT count(*) FROM run_event WHERE detail_json::json->>'instance' = 'a'",
        )
        .parse()
        .expect("count");
    da.signal("CONT");
    // a wakes past its deadline: it says it stopped writing, and writes nothing.
    eventually!(
        Duration::from_secs(15),
        "a says it stopped writing",
        da.log_text().contains("stopped writing")
            || da.log_text().contains("could not be renewed in time")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events_after: usize = pg
        .query(
            &database,
            "SELECT count(*) FROM run_event WHERE detail_json::json->>'instance' = 'a'",
        )
        .parse()
        .expect("count");
    assert_eq!(events_after, events_before, "a wrote after it woke");
    assert!(
        matches!(readyz(a.port).await, Some((503, t)) if t.contains("standby")),
        "a is a standby now"
    );
    assert_eq!(lease(&pg, &database).map(|l| l.0).as_deref(), Some("b"));
    assert_each_written_once(&mut bed, &ids, "after the pause").await;
    assert_eq!(da.stop(Duration::from_secs(20)), Some(0));
    assert_eq!(db.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
    pg.drop_database(&database);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgresql_stopped_the_writer_stops_writing_and_resumes_when_it_is_back() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("ha_pgdown");
    let mut bed = Bed::new("wb-ha-pgdown", 0).await;
    bed.create_default_containers().await;
    let ids = seed_groups(&mut bed, 2, "Outage");
    let a = instance(&bed, &pg, &database, "a");
    let mut da = start(&bed, &pg, &a);
    eventually!(
        Duration::from_secs(30),
        "a writes the groups",
        bed.groups().await.len() == ids.len()
    );
    let (_, epoch, _) = lease(&pg, &database).expect("lease");
    let stopped = pg.stop();
    let _ = &mut da;
    let renamed = format!("During the outage {}", &new_id()[..6]);
    bed.graph(
        "PATCH",
        &format!("/groups/{}", ids[0]),
        Some(serde_json::json!({ "description": renamed })),
    )
    .await;
    eventually!(
        Duration::from_secs(15),
        "a says it stops writing",
        da.log_text().contains("could not be renewed in time")
    );
    assert!(
        matches!(readyz(a.port).await, Some((503, _))),
        "a is not ready without its database"
    );
    assert_ne!(
        description(&mut bed, &ids[0]).await,
        Some(renamed.clone()),
        "written without the lease"
    );
    stopped.start();
    eventually!(
        Duration::from_secs(60),
        "a writes the change once the database is back",
        description(&mut bed, &ids[0]).await == Some(renamed.clone())
    );
    let (holder, after, _) = lease(&pg, &database).expect("lease");
    assert_eq!(holder, "a");
    assert!(after > epoch, "a took the lease again ({epoch} -> {after})");
    assert_each_written_once(&mut bed, &ids, "after the outage").await;
    assert_eq!(da.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
    pg.drop_database(&database);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_are_refused_at_start_naming_them_and_nothing_is_written() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("ha_bad");
    let mut bed = Bed::new("wb-ha-bad", 0).await;
    bed.create_default_containers().await;
    let _ids = seed_groups(&mut bed, 1, "Bad");
    let a = instance(&bed, &pg, &database, "a");
    let text = std::fs::read_to_string(&a.config).expect("config");
    let dir = bed.dir.path().to_path_buf();
    let variant = |name: &str, from: &str, to: &str| -> PathBuf {
        assert!(text.contains(from), "{from} not in the config");
        let p = dir.join(format!("bad-{name}.toml"));
        std::fs::write(&p, text.replace(from, to)).expect("write");
        p
    };
    let usn = bed.highest_usn().await;
    let wrong_ca = bed.ad.ca_file.display().to_string();
    for (config, env, words) in [
        (
            variant(
                "port",
                &format!(":{}/", pg.port),
                &format!(":{}/", free_port()),
            ),
            pg.password(),
            "state.postgres.url",
        ),
        (
            variant("ca", &pg.ca_file.display().to_string(), &wrong_ca),
            pg.password(),
            "state.postgres.ca_file",
        ),
        (
            a.config.clone(),
            "not-the-password".to_string(),
            "state.postgres.password",
        ),
    ] {
        let out = run_once(&bed, &config, &["run"], &env);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{words}: {err}");
        assert!(err.contains(words), "{words} not named:\n{err}");
        assert!(
            !err.contains(&pg.password()),
            "the password is printed:\n{err}"
        );
    }
    // A newer schema in the database.
    let newer = pg.fresh_database("ha_newer");
    pg.query(
        &newer,
        "CREATE TABLE writeback_schema (version bigint NOT NULL)",
    );
    pg.query(&newer, "INSERT INTO writeback_schema VALUES (99)");
    let config = variant("newer", &format!("/{database}"), &format!("/{newer}"));
    let out = run_once(&bed, &config, &["run"], &pg.password());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("state.postgres") && err.contains("99"),
        "newer schema not named:\n{err}"
    );
    pg.drop_database(&newer);
    // Two instances with different rules: the second is refused while the first writes.
    let mut da = start(&bed, &pg, &a);
    eventually!(
        Duration::from_secs(30),
        "a holds the lease",
        lease(&pg, &database).is_some_and(|(h, _, _)| h == "a")
    );
    eventually!(
        Duration::from_secs(30),
        "a has written and is ready",
        matches!(readyz(a.port).await, Some((200, _)))
    );
    let usn_a = bed.highest_usn().await;
    let b = instance(&bed, &pg, &database, "b");
    let b_text = std::fs::read_to_string(&b.config).expect("config");
    std::fs::write(
        &b.config,
        b_text.replace(
            "m365_container = \"OU=M365,",
            "m365_container = \"OU=Other,",
        ),
    )
    .expect("write");
    let out = run_once(&bed, &b.config, &["run"], &pg.password());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("other rules") && err.contains("instance a"),
        "different rules not refused:\n{err}"
    );
    // A second host configured with a's name (a cloned config): refused, a's renewals seen.
    clone_is_refused(&bed, &pg, &a);
    assert!(lease(&pg, &database).is_some_and(|(h, _, live)| h == "a" && live));
    // The same for a standby's name: it holds no lease, its presence stamps are seen going on.
    let c = instance(&bed, &pg, &database, "c");
    let mut dc = start(&bed, &pg, &c);
    eventually!(
        Duration::from_secs(30),
        "c stamps its presence",
        presence(&pg, &database, "c")
    );
    clone_is_refused(&bed, &pg, &c);
    // Stopped cleanly, c takes its stamp away: its next start waits for nothing.
    assert_eq!(dc.stop(Duration::from_secs(20)), Some(0));
    assert!(!presence(&pg, &database, "c"), "c's stamp is left");
    // a writes nothing more once converged; the refused b and clones wrote nothing at all.
    assert_eq!(bed.highest_usn().await, usn_a, "AD changed");
    assert!(usn <= usn_a);
    assert_eq!(da.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
    pg.drop_database(&database);
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_and_release_from_another_host_while_the_writer_runs() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("ha_approve");
    let mut bed = Bed::new("wb-ha-approve", 0).await;
    bed.create_default_containers().await;
    let ids = seed_groups(&mut bed, 6, "Held");
    let safety = "[safety]\ndelete_threshold = 2\n";
    let a = instance_with(&bed, &pg, &database, "a", safety);
    // The operator's host: another instance's config, no daemon running there.
    let b = instance_with(&bed, &pg, &database, "b", safety);
    let password = pg.password();
    let env = [(PG_PASSWORD_ENV, password.as_str())];
    let mut da = start(&bed, &pg, &a);
    eventually_or_logs!(
        Duration::from_secs(60),
        "a writes every group",
        [da],
        bed.groups().await.len() == ids.len()
    );
    let (_, epoch, _) = lease(&pg, &database).expect("a holds the lease");

    // Four groups leave the scope: more deletes than the threshold, held by a.
    for id in &ids[..4] {
        bed.graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(serde_json::json!({ "securityEnabled": false })),
        )
        .await;
    }
    eventually_or_logs!(
        Duration::from_secs(30),
        "a holds the four deletes",
        [da],
        pg.query(
            &database,
            "SELECT count(*) FROM held_delete WHERE NOT approved"
        ) == "4"
    );
    let status = bed.run_with(&b.config, &["status", "--json"], &env);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!(
            "status JSON ({e}): {}",
            String::from_utf8_lossy(&status.stderr)
        )
    });
    let set = doc["held_set"].as_str().expect("a held set").to_string();

    // From b's host: a wrong id approves nothing and names the set; the shown one approves.
    let wrong = bed.run_with(&b.config, &["approve", "0123456789ab"], &env);
    let err = String::from_utf8_lossy(&wrong.stderr).to_string();
    assert_eq!(wrong.status.code(), Some(1), "{err}");
    assert!(err.contains(&set) && err.contains("4 deletes"), "{err}");
    let ok = bed.run_with(&b.config, &["approve", &set], &env);
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains(&format!("approved 4 held deletes ({set})")),
        "{out}"
    );
    // a applies the approval at its next cycle.
    eventually_or_logs!(
        Duration::from_secs(30),
        "a deletes the approved groups",
        [da],
        bed.groups().await.len() == 2
    );
    for id in &ids[..4] {
        assert!(bed.group_by_id(id).await.is_none(), "{id} not deleted");
    }
    eventually!(
        Duration::from_secs(10),
        "the held set is used up",
        pg.query(&database, "SELECT count(*) FROM held_delete") == "0"
    );
    let again = bed.run_with(&b.config, &["approve", &set], &env);
    assert_eq!(again.status.code(), Some(1), "approved twice");

    // From b's host: release one of the two groups left; a no longer writes it.
    let (released, managed) = (&ids[4], &ids[5]);
    let out = bed.run_with(&b.config, &["release", "--json", released], &env);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&text).expect("release JSON");
    assert_eq!(
        doc["released"][0]["cloud_id"],
        serde_json::json!(released),
        "{doc}"
    );
    assert_eq!(doc["released"].as_array().map(Vec::len), Some(1), "{doc}");
    assert_eq!(
        pg.query(
            &database,
            &format!("SELECT count(*) FROM anchor WHERE cloud_id = '{released}'")
        ),
        "0"
    );
    assert_eq!(
        pg.query(
            &database,
            "SELECT cloud_id || '|' || (detail_json::json->>'instance') FROM run_event \
             WHERE action = 'release'"
        ),
        format!("{released}|b"),
        "the release names the instance that made it"
    );
    for id in [released, managed] {
        bed.graph(
            "PATCH",
            &format!("/groups/{id}"),
            Some(serde_json::json!({ "description": "changed after the release" })),
        )
        .await;
    }
    eventually_or_logs!(
        Duration::from_secs(30),
        "a writes the managed group's change",
        [da],
        description(&mut bed, managed).await.as_deref() == Some("changed after the release")
    );
    // A few more cycles: the released group keeps its AD object as it was.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        description(&mut bed, released).await.as_deref(),
        Some("Held 4 (security)"),
        "a wrote to a released group"
    );
    // Neither verb took the lease: a wrote throughout, under the same epoch, and no cycle
    // was skipped for them.
    assert_eq!(
        lease(&pg, &database),
        Some(("a".to_string(), epoch, true)),
        "the lease moved"
    );
    let log = da.log_text();
    assert!(!log.contains("cycle skipped"), "{log}");
    assert_eq!(da.stop(Duration::from_secs(20)), Some(0));
    bed.cleanup().await;
    pg.drop_database(&database);
}

/// Runs `writeback <args>` with `config` and the database password `password`; a run still
/// going after 30 s (a start that should have been refused) is killed and fails the test.
fn run_once(bed: &Bed, config: &Path, args: &[&str], password: &str) -> std::process::Output {
    let mut child = std::process::Command::new(writeback_integration::harness::writeback_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("WRITEBACK_TEST_AD_PASSWORD", &bed.ad.service_password)
        .env(
            "WRITEBACK_TEST_GRAPH_SECRET",
            writeback_integration::harness::CLIENT_SECRET,
        )
        .env(PG_PASSWORD_ENV, password)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start writeback");
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "writeback {args:?} still ran after 30 s: not refused\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The description of the group written for cloud group `id`.
async fn description(bed: &mut Bed, id: &str) -> Option<String> {
    bed.group_by_id(id)
        .await
        .and_then(|(_, g)| g.get("description").and_then(|d| d.first().cloned()))
}
