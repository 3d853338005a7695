//! Full sync, second sync, reconciliation and rule-edit re-evaluation at scale, against one
//! `ldapadd` of the same groups as LDIF (the baseline, measured in the same run).
//!
//! Scale from the environment: WB_BENCH_GROUPS (default 2000), WB_BENCH_USERS (default 2000),
//! WB_BENCH_MEMBERSHIPS (default 20000; a few groups are large, most small).
//! State: WB_BENCH_STATE = `sqlite` (default), `postgres` (the state on the PostgreSQL test
//! bed, one fresh database), or `both`: a whole pass each, one after the other, each on its
//! own OU with its own users and its own `ldapadd` baseline measured just before it.
//! WB_BENCH_FRESH_DC=1 resets the DC from its template (`samba-ad.sh reset`, as root) before
//! each side: the `ldapadd` and the first sync each write into a DC holding only the users.
//! Run with `bench/full-sync.sh` (release binaries, the test beds up). Loopback only.

use ldap3::{Scope, SearchEntry};
use serde_json::{json, Value};
use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};
use writeback_integration::harness::{
    cloud_user, new_id, workspace_root, writeback_bin, Bed, CLIENT_SECRET,
};
use writeback_integration::postgres::PgTestbed;

const PG_PASSWORD_ENV: &str = "WRITEBACK_BENCH_PG_PASSWORD";

/// Where a pass keeps its state: SQLite beside the config, or a PostgreSQL database
/// (`[state.postgres]` and the role's password).
enum State {
    Sqlite,
    Postgres { section: String, password: String },
}

impl State {
    fn label(&self) -> &'static str {
        match self {
            State::Sqlite => "SQLite",
            State::Postgres { .. } => "PostgreSQL",
        }
    }

    fn config_extra(&self) -> &str {
        match self {
            State::Sqlite => "",
            State::Postgres { section, .. } => section,
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `writeback <args>` under /usr/bin/time; returns (wall time, max RSS in KiB, stdout).
fn timed_run(bed: &Bed, state: &State, args: &[&str]) -> (Duration, u64, String) {
    let rss_file = bed.dir.path().join("rss.txt");
    let mut cmd = Command::new("/usr/bin/time");
    if let State::Postgres { password, .. } = state {
        cmd.env(PG_PASSWORD_ENV, password);
    }
    let start = Instant::now();
    let out = cmd
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(writeback_bin())
        .arg("--config")
        .arg(bed.config_path())
        .args(args)
        .env("WRITEBACK_TEST_AD_PASSWORD", &bed.ad.service_password)
        .env("WRITEBACK_TEST_GRAPH_SECRET", CLIENT_SECRET)
        .env("RUST_LOG", "writeback::sync=debug")
        .output()
        .expect("run writeback under /usr/bin/time");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "writeback {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Where the time went, from the host's own phase log.
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if line.contains("sync phase done") {
            println!(
                "  writeback {args:?}: {}",
                line.split("DEBUG").last().unwrap_or(line).trim()
            );
        }
    }
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    (took, rss, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ldapadd(bed: &Bed, ldif: &str) -> Duration {
    let file = bed.dir.path().join(format!("{}.ldif", new_id()));
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(ldif.as_bytes()))
        .expect("write ldif");
    let start = Instant::now();
    let out = Command::new("ldapadd")
        .args([
            "-x",
            "-H",
            &bed.ad.ldaps_url,
            "-D",
            &bed.ad.bind_dn,
            "-w",
            &bed.ad.bind_password,
            "-f",
        ])
        .arg(&file)
        .env("LDAPTLS_CACERT", &bed.ad.ca_file)
        .output()
        .expect("ldapadd");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "ldapadd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

#[tokio::main]
async fn main() {
    let which = std::env::var("WB_BENCH_STATE").unwrap_or_else(|_| "sqlite".into());
    let postgres = || {
        let pg = PgTestbed::load();
        let database = pg.fresh_database("bench_full");
        State::Postgres {
            section: pg.state_section(&database, "bench", PG_PASSWORD_ENV, ""),
            password: pg.password(),
        }
    };
    let states = match which.as_str() {
        "sqlite" => vec![State::Sqlite],
        "postgres" => vec![postgres()],
        "both" => vec![State::Sqlite, postgres()],
        other => panic!("WB_BENCH_STATE={other}: expected sqlite, postgres or both"),
    };
    for state in &states {
        pass(state).await;
    }
}

/// Puts the DC back to its template (no object of any earlier run) when `WB_BENCH_FRESH_DC=1`,
/// so each side of the comparison writes into the same DC: the users it links to carry no
/// back-links of the other side's groups, and no tombstones of earlier runs sit in its indexes.
fn fresh_dc() -> bool {
    let fresh = std::env::var("WB_BENCH_FRESH_DC").is_ok_and(|v| v == "1");
    if fresh {
        let script = workspace_root().join("tests/testbed/samba-ad.sh");
        let out = Command::new(&script)
            .arg("reset")
            .output()
            .expect("run the test bed's reset");
        assert!(
            out.status.success(),
            "{} reset: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fresh
}

/// A bed with `n_users` on-prem users (set-up, not measured): their DNs and SIDs, sorted by DN.
async fn bed_with_users(n_users: usize) -> (Bed, Vec<(String, String)>) {
    let mut bed = Bed::new("wb-bench-full", 0).await;
    bed.create_default_containers().await;
    let users_ou = format!("OU=Users,{}", bed.root);
    let mut ldif = String::new();
    for i in 0..n_users {
        ldif.push_str(&format!(
            "dn: CN=bench{i},{users_ou}\nobjectClass: user\nsAMAccountName: b{}{i}\nuserAccountControl: 514\n\n",
            &new_id()[..6]
        ));
    }
    ldapadd(&bed, &ldif);
    let (rs, _) = bed
        .ldap
        .search(
            &users_ou,
            Scope::OneLevel,
            "(objectClass=user)",
            vec!["objectSid"],
        )
        .await
        .expect("search users")
        .success()
        .expect("users");
    let mut users: Vec<(String, String)> = rs
        .into_iter()
        .map(SearchEntry::construct)
        .map(|e| {
            let sid = writeback::ad::dn::sid_to_string(&e.bin_attrs["objectSid"][0]).expect("sid");
            (e.dn, sid)
        })
        .collect();
    users.sort();
    (bed, users)
}

/// The cloud users matching `users` by SID, their ids fixed by position.
fn cloud_users_of(users: &[(String, String)]) -> Vec<Value> {
    users
        .iter()
        .enumerate()
        .map(|(i, (_, sid))| {
            cloud_user(
                &format!("00000000-0000-4000-8000-{i:012}"),
                &format!("Bench {i}"),
                Some(sid),
            )
        })
        .collect()
}

/// One whole pass: users, the `ldapadd` baseline, first sync, second sync, reconciliation, rule
/// edit.
async fn pass(state: &State) {
    let n_groups = env_usize("WB_BENCH_GROUPS", 2000);
    let n_users = env_usize("WB_BENCH_USERS", 2000);
    let n_members = env_usize("WB_BENCH_MEMBERSHIPS", 20000);
    let fresh = fresh_dc();
    let (mut bed, users) = bed_with_users(n_users).await;
    let cloud_users = cloud_users_of(&users);

    // Membership: 1% of the groups take a third of the memberships, the rest share the others.
    let big = (n_groups / 100).max(1);
    let big_total = n_members / 3;
    let small_each = (n_members - big_total) / (n_groups - big).max(1);
    let mut groups = Vec::new();
    let mut ldif = String::new();
    let ldif_ou = format!("OU=LDIF,{}", bed.root);
    ldif.push_str(&format!(
        "dn: {ldif_ou}\nobjectClass: organizationalUnit\n\n"
    ));
    let mut memberships = 0;
    for g in 0..n_groups {
        let id = format!("10000000-0000-4000-8000-{g:012}");
        let count = if g < big { big_total / big } else { small_each };
        let members: Vec<usize> = (0..count.min(n_users))
            .map(|k| (g * 7919 + k * 13) % n_users)
            .collect();
        let mut uniq = members.clone();
        uniq.sort();
        uniq.dedup();
        memberships += uniq.len();
        let name = format!("Bench Group {g}");
        groups.push(json!({
            "id": id, "displayName": name, "description": format!("benchmark group {g}"),
            "groupTypes": [], "mailEnabled": false, "securityEnabled": true, "mailNickname": format!("bg{g}"),
            "members": uniq.iter().map(|u| cloud_users[*u]["id"].clone()).collect::<Vec<_>>(),
        }));
        // The baseline writes the same attributes the security rule writes.
        ldif.push_str(&format!(
            "dn: CN={name}_{},{ldif_ou}\nobjectClass: group\ngroupType: -2147483640\ndescription: benchmark group {g}\ndisplayName: {name}\nmsDS-ExternalDirectoryObjectId: Group_L{id}\nadminDescription: Group_L{id}\n",
            &id[24..]
        ));
        for u in &uniq {
            ldif.push_str(&format!("member: {}\n", users[*u].0));
        }
        ldif.push('\n');
    }
    let t_ldif = ldapadd(&bed, &ldif);
    // The same users again on a DC put back to its template: the cloud users point at their SIDs.
    let cloud_users = if fresh && fresh_dc() {
        let (b, users) = bed_with_users(n_users).await;
        bed = b;
        cloud_users_of(&users)
    } else {
        cloud_users
    };

    bed.seed(cloud_users, groups, &[]);
    bed.write_config(None, "", state.config_extra());
    let (t_full, rss_full, out) = timed_run(&bed, state, &["sync"]);
    assert!(out.contains(&format!("{n_groups} to create")), "{out}");

    let usn = bed.highest_usn().await;
    let (t_second, rss_second, out) = timed_run(&bed, state, &["sync"]);
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(bed.highest_usn().await, usn, "the second sync wrote to AD");

    // A reconciliation: the tenant read again, every group compared with AD, nothing to change.
    let (t_reconcile, rss_reconcile, out) = timed_run(&bed, state, &["sync", "--full"]);
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(
        bed.highest_usn().await,
        usn,
        "the reconciliation wrote to AD"
    );

    // A rule edit touching 1% of the groups: only they are written.
    let rules = bed.dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules");
    for f in ["10-microsoft-365.rhai", "20-security.rhai"] {
        std::fs::copy(workspace_root().join("scripts").join(f), rules.join(f)).expect("copy");
    }
    let sec = rules.join("20-security.rhai");
    let text = std::fs::read_to_string(&sec).expect("read");
    let edited = text.replace(
        "description: naming::left(description, global::MAX_DESCRIPTION),",
        "description: if group.displayName.ends_with(\"00\") { \"edited\" } else { naming::left(description, global::MAX_DESCRIPTION) },",
    );
    assert_ne!(text, edited);
    std::fs::write(&sec, edited).expect("edit");
    bed.write_config(Some(&rules), "", state.config_extra());
    let (t_edit, _, out) = timed_run(&bed, state, &["sync"]);
    let expect = (0..n_groups)
        .filter(|g| g.to_string().ends_with("00"))
        .count();
    assert!(out.contains(&format!("{expect} to update")), "{out}");

    println!(
        "state: {}; scale: {n_groups} groups, {n_users} users, {memberships} memberships",
        state.label()
    );
    println!(
        "baseline: one ldapadd of the same groups as LDIF: {:.2} s",
        t_ldif.as_secs_f64()
    );
    println!(
        "full sync (first run, creates everything): {:.2} s = {:.2}x the LDIF import; max RSS {} MiB",
        t_full.as_secs_f64(),
        t_full.as_secs_f64() / t_ldif.as_secs_f64(),
        rss_full / 1024
    );
    println!(
        "second sync, no cloud change: {:.2} s, highestCommittedUSN unchanged; max RSS {} MiB",
        t_second.as_secs_f64(),
        rss_second / 1024
    );
    println!(
        "reconciliation (`sync --full`), nothing to change: {:.2} s; max RSS {} MiB",
        t_reconcile.as_secs_f64(),
        rss_reconcile / 1024
    );
    println!(
        "rule edit touching {expect} groups: {:.2} s (only those written)",
        t_edit.as_secs_f64()
    );
    bed.cleanup().await;
}
