//! Several AD targets on one shared state in PostgreSQL: forest A (`[ad]`, named `corp`) and
//! forest B (`[targets.fabrikam]`), two instances, one lease. Each target's state is in a
//! schema of its own (`corp`'s in the database's own, beside the lease); the writer writes both
//! forests, and the standby that takes over when it dies carries both on. Lease 3 s, standby
//! poll 1 s.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use writeback_integration::harness::{
    cloud_user, free_port, new_id, security_group, Bed, ForestBed, OnPremUser,
};
use writeback_integration::postgres::PgTestbed;
use writeback_integration::testbed::create_ou;
use writeback_integration::{eventually, eventually_or_logs};

const PG_PASSWORD_ENV: &str = "WRITEBACK_TEST_PG_PASSWORD";

/// One instance's config: its own name, port and local state files.
struct Instance {
    name: &'static str,
    config: PathBuf,
}

/// The two-target config on `database`, for instance `name`.
fn instance(
    a: &Bed,
    b: &ForestBed,
    pg: &PgTestbed,
    database: &str,
    name: &'static str,
) -> Instance {
    let extra = format!(
        r#"
[daemon]
poll_interval_secs = 1
reconcile_interval_secs = 0
listen = "127.0.0.1:{port}"

[state.postgres]
url = "postgresql://{user}@{host}:{pgport}/{database}"
password_env = "{PG_PASSWORD_ENV}"
ca_file = "{pgca}"
instance = "{name}"
lease_secs = 3
standby_poll_secs = 1
{target}"#,
        port = free_port(),
        user = pg.user,
        host = pg.host,
        pgport = pg.port,
        pgca = pg.ca_file.display(),
        target = b.target_toml(a.dir.path(), "fabrikam", &format!("fabrikam-{name}.db")),
    );
    let base = a.write_config(None, "", &extra);
    let text = std::fs::read_to_string(&base)
        .expect("config")
        .replacen("[ad]\n", "[ad]\nname = \"corp\"\n", 1)
        .replace("path = \"state.db\"", &format!("path = \"corp-{name}.db\""));
    let config = a.dir.path().join(format!("writeback-{name}.toml"));
    std::fs::write(&config, text).expect("write config");
    Instance { name, config }
}

/// The members (lowercased DNs) of the group anchored to cloud group `id` below `managed`, and
/// how many groups carry that anchor there.
async fn copies(ldap: &mut ldap3::Ldap, managed: &str, id: &str) -> (usize, BTreeSet<String>) {
    let Ok(Ok((rs, _))) = ldap
        .search(
            managed,
            ldap3::Scope::Subtree,
            &format!("(msDS-ExternalDirectoryObjectId=Group_{id})"),
            vec!["member"],
        )
        .await
        .map(|r| r.success())
    else {
        return (0, BTreeSet::new());
    };
    let n = rs.len();
    let members = rs
        .into_iter()
        .next()
        .map(|e| ldap3::SearchEntry::construct(e).attrs)
        .and_then(|mut a| a.remove("member"))
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.to_lowercase())
        .collect();
    (n, members)
}

fn dns(users: &[&OnPremUser]) -> BTreeSet<String> {
    users.iter().map(|u| u.dn.to_lowercase()).collect()
}

fn member_ref(id: &str) -> Value {
    json!({ "@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}") })
}

/// The lease's holder, when it is live.
fn writer(pg: &PgTestbed, database: &str) -> Option<String> {
    let out = pg
        .try_query(
            database,
            "SELECT holder FROM writeback_lease WHERE expires_at > now()",
        )
        .ok()?;
    (!out.trim().is_empty()).then(|| out.trim().to_string())
}

/// The anchors of a schema's state: (count, distinct GUIDs, how many DNs end with `under`).
fn anchors(pg: &PgTestbed, database: &str, schema: &str, under: &str) -> String {
    pg.query(
        database,
        &format!(
            "SELECT count(*), count(DISTINCT object_guid), \
             count(*) FILTER (WHERE lower(dn) LIKE '%' || lower('{}')) FROM {schema}.anchor",
            under.replace('\'', "''")
        ),
    )
}

fn run(bed: &Bed, pg: &PgTestbed, config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = bed.run_with(config, args, &[(PG_PASSWORD_ENV, &pg.password())]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_forests_on_one_shared_state_each_in_its_schema_carried_on_by_the_standby() {
    let pg = PgTestbed::load();
    let database = pg.fresh_database("ha_targets");
    let mut a = Bed::new("wb-ha-targets", 2).await;
    a.create_default_containers().await;
    let mut b = ForestBed::new("wb-ha-targets", 2).await;
    create_ou(&mut b.ldap, &format!("OU=M365,{}", b.managed)).await;
    create_ou(&mut b.ldap, &format!("OU=Security,{}", b.managed)).await;
    let (a0, a1) = (a.users[0].clone(), a.users[1].clone());
    let (b0, b1) = (b.users[0].clone(), b.users[1].clone());
    let users = vec![
        cloud_user(&a0.cloud_id, "Alice Corp", Some(&a0.sid)),
        cloud_user(&a1.cloud_id, "Arno Corp", Some(&a1.sid)),
        cloud_user(&b0.cloud_id, "Bea Fabrikam", Some(&b0.sid)),
        cloud_user(&b1.cloud_id, "Bo Fabrikam", Some(&b1.sid)),
    ];
    let g = new_id();
    let mut groups = vec![security_group(
        &g,
        "Both Forests",
        &[&a0.cloud_id, &b0.cloud_id],
    )];
    let others: Vec<String> = (0..20).map(|_| new_id()).collect();
    for (i, id) in others.iter().enumerate() {
        groups.push(security_group(id, &format!("Shared {i}"), &[]));
    }
    a.seed(users, groups, &[]);
    let one = instance(&a, &b, &pg, &database, "one");
    let two = instance(&a, &b, &pg, &database, "two");

    // 1. A one-shot sync takes the lease once and writes both forests, each target's state in
    // its own schema: corp's in the database's own, fabrikam's in writeback_fabrikam.
    let (code, out, err) = run(&a, &pg, &one.config, &["sync"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("== target corp ==") && out.contains("== target fabrikam =="),
        "{out}"
    );
    assert_eq!(copies(&mut a.ldap, &a.managed, &g).await, (1, dns(&[&a0])));
    assert_eq!(copies(&mut b.ldap, &b.managed, &g).await, (1, dns(&[&b0])));
    let n = others.len() + 1;
    assert_eq!(
        anchors(&pg, &database, "public", &a.managed),
        format!("{n}|{n}|{n}"),
        "corp's anchors, all in forest A"
    );
    assert_eq!(
        anchors(&pg, &database, "writeback_fabrikam", &b.managed),
        format!("{n}|{n}|{n}"),
        "fabrikam's anchors, all in forest B"
    );
    // One lease for both, in the database's own schema only.
    assert_eq!(
        pg.query(
            &database,
            "SELECT string_agg(table_schema || '.' || table_name, ',' ORDER BY table_schema) \
             FROM information_schema.tables WHERE table_name = 'writeback_lease'"
        ),
        "public.writeback_lease"
    );
    // A plan of one target reads its own schema: nothing to do there.
    let (code, out, err) = run(
        &a,
        &pg,
        &one.config,
        &["--target", "fabrikam", "plan", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).expect("plan JSON");
    assert_eq!(plan["target"], "fabrikam", "{plan:#}");
    assert_eq!(
        plan["plan"]["changes"].as_array().map(Vec::len),
        Some(0),
        "{plan:#}"
    );

    // 2. Two daemons: one writes both forests, the other stands by.
    let env = [(PG_PASSWORD_ENV, pg.password())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let d1 = a.start_daemon_with(&one.config, &env);
    let d2 = a.start_daemon_with(&two.config, &env);
    eventually!(
        Duration::from_secs(30),
        "a writer",
        writer(&pg, &database).is_some()
    );
    for m in [&a1.cloud_id, &b1.cloud_id] {
        let st = a
            .graph(
                "POST",
                &format!("/groups/{g}/members/$ref"),
                Some(member_ref(m)),
            )
            .await;
        assert!(st.is_success(), "add member: {st}");
    }
    eventually_or_logs!(
        Duration::from_secs(30),
        "the new members in both forests",
        [d1, d2],
        copies(&mut a.ldap, &a.managed, &g).await.1 == dns(&[&a0, &a1])
            && copies(&mut b.ldap, &b.managed, &g).await.1 == dns(&[&b0, &b1])
    );

    // 3. The writer is killed: the standby takes the lease over and carries both forests on.
    let first = writer(&pg, &database).expect("a writer");
    let (killed, mut survivor, survivor_name) = match first.as_str() {
        "one" => (d1, d2, two.name),
        _ => (d2, d1, one.name),
    };
    killed.signal("KILL");
    let at = Instant::now();
    drop(killed);
    for m in [&a0.cloud_id, &b0.cloud_id] {
        let st = a
            .graph("DELETE", &format!("/groups/{g}/members/{m}/$ref"), None)
            .await;
        assert!(st.is_success(), "remove member: {st}");
    }
    eventually_or_logs!(
        Duration::from_secs(30),
        "the standby to write both forests",
        [survivor],
        copies(&mut a.ldap, &a.managed, &g).await == (1, dns(&[&a1]))
            && copies(&mut b.ldap, &b.managed, &g).await == (1, dns(&[&b1]))
    );
    eprintln!(
        "{survivor_name} carried both forests on {:.1} s after the kill",
        at.elapsed().as_secs_f64()
    );
    assert_eq!(writer(&pg, &database).as_deref(), Some(survivor_name));
    assert_eq!(
        anchors(&pg, &database, "writeback_fabrikam", &b.managed),
        format!("{n}|{n}|{n}"),
        "fabrikam's anchors after the takeover"
    );
    // Each target's audit trail, in its own schema, names the writers.
    let by = pg.query(
        &database,
        "SELECT string_agg(DISTINCT detail_json::json->>'instance', ',') \
         FROM writeback_fabrikam.run_event",
    );
    assert!(by.contains(survivor_name), "fabrikam's writers: {by}");

    // The status shows the lease once and each target's own state.
    let (code, out, err) = run(&a, &pg, &one.config, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).expect("status JSON");
    for t in ["corp", "fabrikam"] {
        assert_eq!(
            doc[t]["shared"]["lease"]["holder"], survivor_name,
            "{t}: {doc:#}"
        );
        assert!(
            doc[t]["last_runs"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{t}: {doc:#}"
        );
    }
    assert_eq!(
        survivor.stop(Duration::from_secs(20)),
        Some(0),
        "{}",
        survivor.log_text()
    );

    // 4. The whole shared state copied back into one state file per target.
    let (code, out, err) = run(&a, &pg, &one.config, &["state", "copy", "--to", "sqlite"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("schema writeback_fabrikam"), "{out}");
    for (file, managed) in [("corp-one.db", &a.managed), ("fabrikam-one.db", &b.managed)] {
        let db = rusqlite::Connection::open(a.dir.path().join(file)).expect("open the copy");
        let (count, inside): (i64, i64) = db
            .query_row(
                "SELECT count(*), sum(lower(dn) LIKE '%' || lower(?1)) FROM anchor",
                [managed],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("anchors");
        assert_eq!((count, inside), (n as i64, n as i64), "{file}");
    }

    b.cleanup().await;
    a.cleanup().await;
    pg.drop_database(&database);
}
