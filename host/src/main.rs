//! The `writeback` binary: parses the command line, wires the connectors, runs the verb.

mod cli;

use anyhow::{Context, Result};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cli::{Cli, Command, LogFormat, StateBackend, StateCommand};
use writeback::config::Config;
use writeback::rules;
use writeback::setup::{self, StateLock};
use writeback::state::Store;
use writeback::sync::stream::{ChangeSink, JsonStream, TextStream};
use writeback::sync::{self, SyncContext, SyncOptions};

fn main() -> ExitCode {
    // Before any thread exists: arenas already made are kept.
    writeback::allocator::tune();
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    // The verbs that read secrets load the config here, before the runtime's threads exist:
    // the process environment is changed only now (the `*_env` secrets taken out of it, MIT
    // Kerberos pointed at the keytab), never while another thread could be reading it.
    let loaded = match &cli.command {
        Command::Run | Command::Plan { .. } | Command::Sync { .. } | Command::Adopt { .. } => {
            Some(prepare(&cli.config, Config::load))
        }
        // Reads AD, never Graph: the Graph credential need not be there.
        Command::Explain { .. } => Some(prepare(&cli.config, Config::load_for_ad)),
        // Contacts neither Graph nor AD: the database's password is the only secret read.
        Command::State { .. } => Some(
            Config::load_for_state(&cli.config)
                .map_err(Into::into)
                .inspect(Config::forget_secret_env),
        ),
        Command::Check { online: true, .. } => Some(prepare_for_check(&cli.config)),
        _ => None,
    };
    let online = match loaded {
        Some(Ok(c)) => Some(c),
        // `check` names what is missing itself, then skips the online part.
        Some(Err(_)) if matches!(cli.command, Command::Check { .. }) => None,
        Some(Err(e)) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::from(1);
        }
        None => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, online)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The config with its secrets read, the environment settled (see `main`).
fn prepare(
    path: &Path,
    load: fn(&Path) -> Result<Config, writeback::config::ConfigError>,
) -> Result<Config> {
    let config = load(path)?;
    config.forget_secret_env();
    finish_prepare(config)
}

/// [`prepare`] for `check --online`: the secrets stay in the environment, where the offline
/// part of the check reads them again (the process is short-lived and starts no child).
fn prepare_for_check(path: &Path) -> Result<Config> {
    finish_prepare(Config::load(path)?)
}

fn finish_prepare(config: Config) -> Result<Config> {
    for warning in config.rules.secret_looking_settings() {
        tracing::warn!("{warning}");
    }
    // One keytab for the process (the config refuses targets with different ones).
    if let Some(k) = config.targets().find_map(|t| t.ad.kerberos.as_ref()) {
        writeback::ad::kerberos::prepare_env(k)?;
    }
    Ok(config)
}

/// The combined exit status of a verb run on several targets: 1 when one could not run, else
/// 2 when something failed or was refused in one, else 3 when something was held, else 0.
fn worst(codes: &[u8]) -> ExitCode {
    let code = [1, 2, 3]
        .into_iter()
        .find(|c| codes.contains(c))
        .unwrap_or(0);
    ExitCode::from(code)
}

/// A header before a target's part of a verb's text output, in configs with several.
fn target_header(config: &Config, target: &Config) {
    if config.has_targets() {
        println!("== target {} ==", target.target);
    }
}

/// One JSON document for a verb on every target: as is with one target, an object by target
/// name with several.
fn print_json_by_target(config: &Config, docs: Vec<(String, serde_json::Value)>) -> Result<()> {
    let doc = match (config.has_targets(), docs.len()) {
        (false, 1) => docs.into_iter().next().map(|(_, d)| d).unwrap_or_default(),
        _ => serde_json::Value::Object(docs.into_iter().collect()),
    };
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// An error and its causes on one line, each cause once: most of the library's errors already
/// quote their cause in their own message, and `{:#}` would print it a second time.
/// Success, or the exit code `failure`.
fn exit(ok: bool, failure: u8) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(failure)
    }
}

fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a journal or a log file gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(cli: Cli, online: Option<Config>) -> Result<ExitCode> {
    // Loaded in `main` for exactly the verbs below that take it.
    let online = || online.ok_or_else(|| anyhow::anyhow!("the configuration was not loaded"));
    let target = cli.target.as_deref();
    match cli.command {
        Command::Check {
            rules,
            stdlib,
            online: go_online,
        } => {
            let code = check(&cli.config, rules, stdlib)?;
            if !go_online || code != ExitCode::SUCCESS {
                if go_online {
                    eprintln!("online checks skipped: fix the above first");
                }
                return Ok(code);
            }
            check_online(online()?, target).await
        }
        Command::Test { rules, stdlib } => test_rules(&cli.config, rules, stdlib),
        Command::Run => {
            if let Some(name) = target {
                anyhow::bail!("`writeback run` serves every target of the config; --target {name} is for the other verbs");
            }
            writeback::daemon::run(online()?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { full, json } => {
            sync_targets(
                online()?,
                target,
                SyncOptions {
                    reread_cloud: full,
                    compare_all: full,
                    dry_run: true,
                    allow_deletes: false,
                    adopt: false,
                },
                json,
            )
            .await
        }
        Command::Sync {
            full,
            allow_deletes,
            json,
        } => {
            sync_targets(
                online()?,
                target,
                SyncOptions {
                    reread_cloud: full,
                    compare_all: full,
                    dry_run: false,
                    allow_deletes,
                    adopt: false,
                },
                json,
            )
            .await
        }
        Command::Adopt { dry_run, json } => {
            sync_targets(
                online()?,
                target,
                SyncOptions {
                    reread_cloud: false,
                    compare_all: true,
                    dry_run,
                    allow_deletes: false,
                    adopt: true,
                },
                json,
            )
            .await
        }
        Command::Approve { id } => approve(&cli.config, target, &id),
        Command::Release {
            groups,
            dn_under,
            all,
            dry_run,
            json,
        } => release(&cli.config, target, groups, dn_under, all, dry_run, json),
        Command::Status { json } => status(&cli.config, target, json),
        Command::History {
            since,
            status,
            limit,
            json,
        } => history(&cli.config, target, since, status, limit, json),
        Command::Audit {
            group,
            dn_under,
            since,
            until,
            limit,
            json_lines,
        } => audit(
            &cli.config,
            target,
            writeback::inspect::audit::AuditOptions {
                group,
                dn_under,
                since,
                until,
                limit,
                json_lines,
            },
        ),
        Command::Explain { group, json } => explain(online()?, target, &group, json).await,
        Command::State {
            command: StateCommand::Copy { to },
        } => state_copy(online()?, target, to).await,
    }
}

/// `writeback state copy --to postgres|sqlite`: the whole state from one backend into the
/// other, while nothing writes either; with `[targets.*]`, each target's state file and schema
/// (or the one `--target` names).
async fn state_copy(config: Config, target: Option<&str>, to: StateBackend) -> Result<ExitCode> {
    let Some(pg) = config.postgres.as_ref() else {
        anyhow::bail!(
            "[state.postgres] is not configured in {}: add it (the database the state moves to or from) before copying",
            config.path.display()
        );
    };
    let s = &pg.settings;
    let database = format!("PostgreSQL {}@{}:{}/{}", s.user, s.host, s.port, s.database);
    let client = writeback::ha::pg::connect(s).await?;
    if let Some(lease) = writeback::ha::read_lease(&client)
        .await
        .with_context(|| format!("{database}: read the lease"))?
    {
        if lease.live {
            anyhow::bail!(
                "{database}: instance {} holds the lease (epoch {}): an instance is running on \
                 this database; stop every writeback daemon that uses it, then copy again",
                writeback::printable::one_line(&lease.holder),
                lease.epoch
            );
        }
    }
    drop(client);
    // Target by target: one that fails is named, and `--target` copies it again alone.
    for t in config.select_targets(target)? {
        target_header(&config, t);
        let Some(tpg) = t.postgres.as_ref() else {
            anyhow::bail!("no [state.postgres] for target {}", t.target);
        };
        let place = match &tpg.settings.schema {
            Some(schema) => format!("{database} (schema {schema})"),
            None => database.clone(),
        };
        copy_one(t, tpg, &place, to)
            .await
            .with_context(|| format!("target {}", t.target))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One target's state copied between its file and its place (`database`) in PostgreSQL.
async fn copy_one(
    config: &Config,
    pg: &writeback::config::PostgresConfig,
    database: &str,
    to: StateBackend,
) -> Result<()> {
    use writeback::state::pg::{postgres_to_sqlite, sqlite_to_postgres};
    let file = config.state_path.display().to_string();
    // No cycle, sync or plan on the file for the whole copy (none starts while it is held).
    let Some(_lock) = StateLock::try_acquire(config)? else {
        anyhow::bail!(
            "the state file {file} is in use (a sync, a plan or a daemon's cycle holds its lock): \
             stop the daemon (systemctl stop writeback) and let the run end, then copy again"
        );
    };
    let mut client = writeback::ha::pg::connect(&pg.settings).await?;
    let (from, into, copied) = match to {
        StateBackend::Postgres => {
            let store = writeback::inspect::open_existing(&config.state_path)?;
            if let Some(note) = writeback::inspect::status::running_daemon(&store)? {
                anyhow::bail!(
                    "a daemon (pid {}) runs on the state file {file}: stop it first (systemctl stop writeback)",
                    note.pid
                );
            }
            let copied = sqlite_to_postgres(&store, &mut client)
                .await
                .with_context(|| format!("copy {file} into {database}"))?;
            (file, database.to_string(), copied)
        }
        StateBackend::Sqlite => {
            let existed = config
                .state_path
                .try_exists()
                .with_context(|| format!("look up the state file {file}"))?;
            let mut store = Store::open(&config.state_path)?;
            match postgres_to_sqlite(&mut client, &mut store).await {
                Ok(copied) => (database.to_string(), file, copied),
                Err(e) => {
                    // A file made for the copy goes with it: no empty state is left behind.
                    drop(store);
                    if !existed {
                        for suffix in ["", "-wal", "-shm"] {
                            let mut p = config.state_path.clone().into_os_string();
                            p.push(suffix);
                            let _ = std::fs::remove_file(p);
                        }
                    }
                    return Err(
                        anyhow::Error::new(e).context(format!("copy {database} into {file}"))
                    );
                }
            }
        }
    };
    println!(
        "copied the state from {from} into {into}: {} rows in {:.1} s",
        copied.rows(),
        copied.elapsed.as_secs_f64()
    );
    let width = copied
        .tables
        .iter()
        .map(|(t, _)| t.len())
        .max()
        .unwrap_or(0);
    for (table, rows) in &copied.tables {
        println!("  {table:<width$}  {rows:>10}");
    }
    println!("{from} is left as it was.");
    Ok(())
}

/// The rules folder, stdlib folder and rule settings for `check` and `test`: from `--rules`
/// (config optional, its settings used when it loads) or from the config.
fn rules_source(
    config: &Path,
    rules_dir: Option<PathBuf>,
    stdlib: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf, BTreeMap<String, serde_json::Value>)> {
    Ok(match rules_dir {
        Some(dir) => {
            // `stdlib` beside the rules folder or beside one of its parents, so both
            // `--rules scripts` and `--rules examples/x/rules` find the repository's stdlib.
            let stdlib = stdlib.unwrap_or_else(|| {
                dir.ancestors()
                    .skip(1)
                    .map(|p| p.join("stdlib"))
                    .find(|p| p.is_dir())
                    .unwrap_or_else(|| {
                        dir.parent()
                            .map(|p| p.join("stdlib"))
                            .unwrap_or_else(|| PathBuf::from("stdlib"))
                    })
            });
            // Settings come from the config when there is one (a broken config is an error,
            // not silently ignored); without one, `check` does not check setting names.
            let settings = if config.exists() {
                Config::load_offline(config)?.rules.settings
            } else {
                BTreeMap::new()
            };
            (dir, stdlib, settings)
        }
        None => {
            let c = Config::load_offline(config)?;
            (c.rules.folder, c.rules.stdlib, c.rules.settings)
        }
    })
}

fn check(config: &Path, rules_dir: Option<PathBuf>, stdlib: Option<PathBuf>) -> Result<ExitCode> {
    // The configuration in full (secrets, placeholders) unless only a rules folder is checked;
    // its rules folder, settings and secret names are then the ones checked below.
    let mut config_ok = true;
    let preflighted = match rules_dir {
        Some(_) => None,
        None => Some(writeback::preflight::check(config)?),
    };
    if let Some((_, findings)) = &preflighted {
        if findings.is_empty() {
            println!(
                "ok: config {}: every key valid, every secret readable, no placeholder left",
                config.display()
            );
        } else {
            config_ok = false;
            eprintln!(
                "config {}: {} thing(s) to fix before Writeback can run:",
                config.display(),
                findings.len()
            );
            for f in findings {
                eprintln!("  {f}");
            }
        }
    }
    // `--rules DIR` without a config: there are no settings to check `setting("…")` against.
    let with_settings = rules_dir.is_none() || config.exists();
    // Secret names are checked like setting names; their values are not read here.
    let secret_names = |c: &Config| -> std::collections::BTreeSet<String> {
        c.rules.secrets.keys().cloned().collect()
    };
    // Each other target's settings (its own over the shared ones) must satisfy the rules too.
    let mut others_ok = true;
    if let Some((c, _)) = &preflighted {
        for t in &c.more_targets {
            if let Err(e) = rules::check(
                &t.rules.folder,
                &t.rules.stdlib,
                t.rules.settings.clone(),
                true,
                Some(&secret_names(t)),
            ) {
                others_ok = false;
                eprintln!("target {}: {e}", t.target);
            }
        }
    }
    let (rules_dir, stdlib, settings, secrets) = match preflighted {
        Some((c, _)) => {
            let names = secret_names(&c);
            (
                c.rules.folder,
                c.rules.stdlib,
                c.rules.settings,
                Some(names),
            )
        }
        None => {
            let (dir, stdlib, settings) = rules_source(config, rules_dir, stdlib)?;
            let secrets = match with_settings {
                true => Some(secret_names(&Config::load_offline(config)?)),
                false => None,
            };
            (dir, stdlib, settings, secrets)
        }
    };
    match rules::check(
        &rules_dir,
        &stdlib,
        settings,
        with_settings,
        secrets.as_ref(),
    ) {
        Ok(files) => {
            let rules = files
                .iter()
                .filter(|f| f.kind == rules::FileKind::Rule)
                .count();
            println!(
                "ok: {rules} rule file(s) in {} compile, with {} imported module(s){}",
                rules_dir.display(),
                files.len() - rules,
                if with_settings {
                    ""
                } else {
                    " (setting names not checked: no config)"
                }
            );
            Ok(exit(config_ok && others_ok, 2))
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `writeback check --online`: Graph and AD asked what the first sync needs, nothing written.
async fn check_online(config: Config, target: Option<&str>) -> Result<ExitCode> {
    let mut codes = Vec::new();
    for t in config.select_targets(target)? {
        target_header(&config, t);
        codes.push(check_online_one(t).await?);
    }
    Ok(worst(&codes))
}

async fn check_online_one(config: &Config) -> Result<u8> {
    let rules =
        setup::load_rules(config).map_err(|e| anyhow::anyhow!("the rules do not load:\n{e}"))?;
    let steps = writeback::preflight::online::check(config, &rules).await;
    let failed = steps.iter().filter(|s| s.problem.is_some()).count();
    for s in &steps {
        match (&s.problem, &s.warning) {
            (Some(p), _) => eprintln!("FAILED: {}: {p}", s.what),
            (None, Some(w)) => println!("WARNING: {}: {w}", s.what),
            (None, None) => println!("ok: {}", s.what),
        }
    }
    if failed == 0 {
        println!(
            "ok: online, {} check(s) passed; nothing was written",
            steps.len()
        );
        Ok(0)
    } else {
        eprintln!("{failed} of {} online check(s) failed", steps.len());
        Ok(2)
    }
}

fn test_rules(
    config: &Path,
    rules_dir: Option<PathBuf>,
    stdlib: Option<PathBuf>,
) -> Result<ExitCode> {
    // Exit 1 means "a test failed": a config that does not load is reported as 2, like rules
    // that do not load.
    let (rules_dir, stdlib, settings) = match rules_source(config, rules_dir, stdlib) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return Ok(ExitCode::from(2));
        }
    };
    match rules::testing::run(&rules_dir, &stdlib, &settings) {
        Ok(report) => {
            print!("{}", rules::testing::render(&report));
            Ok(exit(report.ok(), 1))
        }
        Err(e) => {
            eprintln!("the rules do not load:\n{e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The state file for a read-only verb: not created when it is missing.
fn open_existing(config: &Config) -> Result<Store> {
    if config.postgres.is_some() {
        return Ok(snapshot(config)?.store);
    }
    Ok(writeback::inspect::open_existing(&config.state_path)?)
}

/// `[state.postgres]` with the database's password, read here when `config` was loaded
/// without secrets.
fn shared_state(config: &Config) -> Result<writeback::config::PostgresConfig> {
    use secrecy::ExposeSecret;
    Ok(match &config.postgres {
        Some(pg) if !pg.settings.password.expose_secret().is_empty() => pg.clone(),
        _ => Config::load_for_state(&config.path)?
            .targets()
            .find(|t| t.target == config.target)
            .and_then(|t| t.postgres.clone())
            .ok_or_else(|| anyhow::anyhow!("no [state.postgres] for target {}", config.target))?,
    })
}

/// A private copy of a shared state ([state.postgres]) for a verb that reads (see
/// `ha::snapshot`).
fn snapshot(config: &Config) -> Result<writeback::ha::snapshot::Snapshot> {
    let pg = shared_state(config)?;
    let handle = tokio::runtime::Handle::current();
    Ok(tokio::task::block_in_place(|| {
        handle.block_on(writeback::ha::snapshot::take(&pg))
    })?)
}

/// A shared state ([state.postgres]) opened for `verb`, which changes it between the
/// writer's cycles (see `ha::cycles`).
fn between_cycles(config: &Config, verb: &str) -> Result<writeback::ha::cycles::Between> {
    use writeback::ha::cycles::{Between, VERB_WAIT};
    let pg = shared_state(config)?;
    let handle = tokio::runtime::Handle::current();
    Ok(tokio::task::block_in_place(|| {
        handle.block_on(Between::open(&pg, verb, VERB_WAIT))
    })?)
}

/// `writeback status`: read-only, no lock (SQLite lets it read beside a running cycle).
fn status(config_path: &Path, target: Option<&str>, json: bool) -> Result<ExitCode> {
    use writeback::inspect::status;
    let config = Config::load_offline(config_path)?;
    if config.postgres.is_some() {
        return status_shared(config_path, target, json);
    }
    let on_disk = status::rules_hash(&writeback::watch::fingerprint(&setup::rule_roots(&config)));
    let now = time::OffsetDateTime::now_utc();
    let mut docs = Vec::new();
    let mut failed = false;
    for t in config.select_targets(target)? {
        let gathered = open_existing(t).and_then(|store| {
            let busy = StateLock::is_held(t)?;
            Ok(status::gather(&store, busy, on_disk.clone(), now)?)
        });
        let s = match gathered {
            Ok(s) => s,
            // With one target its error is the answer; with several, the others still show.
            Err(e) if !config.has_targets() => return Err(e),
            Err(e) => {
                failed = true;
                let text = error_chain(&e);
                match json {
                    true => docs.push((t.target.clone(), serde_json::json!({ "error": text }))),
                    false => {
                        target_header(&config, t);
                        eprintln!("error: target {}: {text}", t.target);
                    }
                }
                continue;
            }
        };
        if json {
            docs.push((t.target.clone(), serde_json::to_value(&s)?));
        } else {
            target_header(&config, t);
            print!("{}", writeback::printable::text(&status::render(&s, now)));
        }
    }
    if json {
        print_json_by_target(&config, docs)?;
    }
    Ok(exit(!failed, 1))
}

/// `writeback status` on a shared state ([state.postgres]): the lease and the instances, then
/// each target's state.
fn status_shared(config_path: &Path, target: Option<&str>, json: bool) -> Result<ExitCode> {
    use writeback::ha::status;
    // The database's password is needed here (and no other secret): offline left it empty.
    let config = Config::load_for_state(config_path)?;
    let pg = config
        .postgres
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no [state.postgres]"))?;
    let handle = tokio::runtime::Handle::current();
    let shared = tokio::task::block_in_place(|| handle.block_on(status::gather(pg)))?;
    // The rest of the status, as on a state file, from a snapshot (none before a first sync).
    let now = time::OffsetDateTime::now_utc();
    let on_disk = writeback::inspect::status::rules_hash(&writeback::watch::fingerprint(
        &setup::rule_roots(&config),
    ));
    if !json {
        print!("{}", writeback::printable::text(&status::render(&shared)));
    }
    let mut docs = Vec::new();
    for t in config.select_targets(target)? {
        let state = match snapshot(t) {
            Ok(mut snap) => {
                // The daemon part is this host's instance: its note, its PID checked here.
                if let Some(note) = shared.instances.get(&shared.instance) {
                    snap.store.set_meta(
                        writeback::inspect::status::DAEMON_KEY,
                        &serde_json::to_string(note)?,
                    )?;
                }
                Some(writeback::inspect::status::gather(
                    &snap.store,
                    false,
                    on_disk.clone(),
                    now,
                )?)
            }
            Err(e) => match e.downcast_ref::<writeback::ha::snapshot::SnapshotError>() {
                Some(writeback::ha::snapshot::SnapshotError::Empty) => None,
                _ => return Err(e),
            },
        };
        if json {
            let mut doc = match &state {
                Some(st) => serde_json::to_value(st)?,
                None => serde_json::json!({}),
            };
            if let serde_json::Value::Object(m) = &mut doc {
                m.insert("shared".into(), serde_json::to_value(&shared)?);
            }
            docs.push((t.target.clone(), doc));
        } else {
            target_header(&config, t);
            match &state {
                Some(st) => print!(
                    "{}",
                    writeback::printable::text(&writeback::inspect::status::render(st, now))
                ),
                None => println!("no instance has synced into this database yet"),
            }
        }
    }
    if json {
        print_json_by_target(&config, docs)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `writeback history`: the runs, filtered.
fn history(
    config_path: &Path,
    target: Option<&str>,
    since: Option<String>,
    status: Option<String>,
    limit: usize,
    json: bool,
) -> Result<ExitCode> {
    use writeback::inspect::{self, history};
    let config = Config::load_offline(config_path)?;
    let now = time::OffsetDateTime::now_utc();
    let filter = history::Filter {
        since: since
            .map(|s| inspect::parse_time("--since", &s, now))
            .transpose()?,
        status,
        limit,
    };
    let mut docs = Vec::new();
    for t in config.select_targets(target)? {
        let store = open_existing(t).with_context(|| format!("target {}", t.target))?;
        let runs = history::runs(&store, &filter)?;
        if json {
            docs.push((t.target.clone(), serde_json::to_value(&runs)?));
        } else {
            target_header(&config, t);
            print!("{}", writeback::printable::text(&history::render(&runs)));
        }
    }
    if json {
        print_json_by_target(&config, docs)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `writeback audit`: the audit trail, filtered; no lock.
fn audit(
    config_path: &Path,
    target: Option<&str>,
    opts: writeback::inspect::audit::AuditOptions,
) -> Result<ExitCode> {
    let config = Config::load_offline(config_path)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    // Each target's trail is in its own state file; with several, each line names its target.
    for t in config.select_targets(target)? {
        let store = open_existing(t).with_context(|| format!("target {}", t.target))?;
        writeback::inspect::audit::run(
            &store,
            &opts,
            config.has_targets().then_some(t.target.as_str()),
            time::OffsetDateTime::now_utc(),
            &mut out,
            &mut std::io::stderr(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `writeback explain`: reads the state and AD, writes neither; no lock, no run.
async fn explain(
    config: Config,
    target: Option<&str>,
    group: &str,
    json: bool,
) -> Result<ExitCode> {
    let mut docs = Vec::new();
    let mut codes = Vec::new();
    for t in config.select_targets(target)? {
        if !json {
            target_header(&config, t);
        }
        let (code, doc) = explain_one(t, group, json).await?;
        codes.push(code);
        if let Some(d) = doc {
            docs.push((t.target.clone(), d));
        }
    }
    if json {
        print_json_by_target(&config, docs)?;
    }
    // Found in one target is found.
    Ok(ExitCode::from(codes.iter().copied().min().unwrap_or(1)))
}

/// `explain` in one target: the exit status, and the JSON document (with `json`) or the text
/// printed.
async fn explain_one(
    config: &Config,
    group: &str,
    json: bool,
) -> Result<(u8, Option<serde_json::Value>)> {
    use writeback::inspect::explain;
    let rules =
        setup::load_rules(config).map_err(|e| anyhow::anyhow!("the rules do not load:\n{e}"))?;
    // Before the first sync there is no group to explain: said plainly, with the exit status
    // of "nothing matches".
    let store = match config.postgres.is_some() {
        true => open_existing(config),
        false => writeback::inspect::open_existing(&config.state_path).map_err(Into::into),
    };
    let store = match store {
        Ok(s) => s,
        Err(e) => match e.downcast::<writeback::inspect::InspectError>() {
            Ok(e @ writeback::inspect::InspectError::NeverSynced { .. }) => {
                eprintln!("{e}");
                return Ok((1, None));
            }
            Ok(e) => return Err(e.into()),
            Err(e) => return Err(e),
        },
    };
    // AD out of reach still leaves the rules' part to explain.
    let mut conn = setup::ad_connection(config).await;
    let conn = conn.as_mut().map_err(|e| &*e);
    let x = explain::explain(config, &rules, &store, conn, group).await?;
    let code = if x.found() { 0 } else { 1 };
    if json {
        return Ok((code, Some(serde_json::to_value(&x)?)));
    }
    print!("{}", writeback::printable::text(&explain::render(&x)));
    Ok((code, None))
}

/// `writeback release`: stops managing groups while no cycle runs; AD is not touched.
fn release(
    config_path: &Path,
    target: Option<&str>,
    groups: Vec<String>,
    dn_under: Option<String>,
    all: bool,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    use writeback::sync::release::Selector;
    let sel = match (groups.is_empty(), dn_under, all) {
        (false, None, false) => Selector::Groups(groups),
        (true, Some(dn), false) => Selector::DnUnder(dn),
        (true, None, true) => Selector::All,
        _ => anyhow::bail!(
            "name the groups to release: group ids or names, --dn-under <DN>, or --all (one of them)"
        ),
    };
    let config = Config::load_offline(config_path)?;
    for t in config.select_targets(target)? {
        if !json {
            target_header(&config, t);
        }
        release_one(t, &sel, dry_run, json)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn release_one(
    config: &Config,
    sel: &writeback::sync::release::Selector,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    let picked = match config.postgres.is_some() {
        true => release_shared(config, sel, dry_run)?,
        false => release_local(config, sel, dry_run)?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "target": config.target,
                "dry_run": dry_run,
                "released": picked.iter().map(|a| serde_json::json!({ "cloud_id": a.cloud_id, "dn": a.dn })).collect::<Vec<_>>(),
            }))?
        );
    } else {
        let verb = if dry_run { "Would release" } else { "Released" };
        println!(
            "{verb} {} groups; their AD objects are left as they are:",
            picked.len()
        );
        for a in &picked {
            println!(
                "  {}  (group {})",
                writeback::printable::one_line(&a.dn),
                a.cloud_id
            );
        }
        if !dry_run && !picked.is_empty() {
            println!(
                "Writeback no longer writes or deletes them; `writeback adopt` takes them back."
            );
        }
    }
    Ok(())
}

/// `release` on a state file of one's own, under its lock: no cycle runs meanwhile.
fn release_local(
    config: &Config,
    sel: &writeback::sync::release::Selector,
    dry_run: bool,
) -> Result<Vec<writeback::state::Anchor>> {
    use writeback::sync::release;
    let _lock = StateLock::acquire(config)?;
    let mut store = Store::open(&config.state_path)?;
    let anchors = store.anchors()?;
    let picked = release::select(
        &anchors,
        |name| {
            store
                .cached_groups_named(name)
                .map(|v| v.into_iter().map(|(id, _)| id).collect())
                .unwrap_or_default()
        },
        sel,
    )?;
    if !dry_run && !picked.is_empty() {
        let run_id = store.begin_run(writeback::state::RunMode::Release)?;
        store.release(run_id, &picked)?;
        store.finish_run(
            run_id,
            writeback::state::RunStatus::Ok,
            &release_stats(&picked),
        )?;
    }
    Ok(picked)
}

/// `release` on a shared state: the groups read, chosen and released in one transaction
/// between the writer's cycles; the audit events name this instance.
fn release_shared(
    config: &Config,
    sel: &writeback::sync::release::Selector,
    dry_run: bool,
) -> Result<Vec<writeback::state::Anchor>> {
    use writeback::state::pg::tx;
    use writeback::state::{RunMode, RunStatus};
    use writeback::sync::release::{self, Selector};
    let mut between = between_cycles(config, "release")?;
    let picked = between.run(async |t, instance| {
        let anchors = tx::anchors(t).await?;
        // The names looked up first: the selection itself is pure.
        let mut named = BTreeMap::new();
        if let Selector::Groups(wanted) = sel {
            for w in wanted.iter().map(|w| w.trim()) {
                if !anchors.contains_key(w) && !named.contains_key(w) {
                    let ids: Vec<String> = tx::groups_named(t, w)
                        .await?
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect();
                    named.insert(w.to_string(), ids);
                }
            }
        }
        let picked = match release::select(
            &anchors,
            |name| named.get(name).cloned().unwrap_or_default(),
            sel,
        ) {
            Ok(p) => p,
            // Nothing written: the transaction ends with nothing in it.
            Err(e) => return Ok(Err(e)),
        };
        if !dry_run && !picked.is_empty() {
            let run_id = tx::begin_run(t, RunMode::Release).await?;
            tx::release_groups(t, run_id, &picked, Some(instance)).await?;
            tx::finish_run(t, run_id, RunStatus::Ok, &release_stats(&picked)).await?;
        }
        Ok(Ok(picked))
    })?;
    Ok(picked?)
}

/// What a release run records.
fn release_stats(picked: &[writeback::state::Anchor]) -> serde_json::Value {
    serde_json::json!({ "released": picked.len() })
}

/// Approves a held set of deletes or member removals, while no cycle runs (under the state
/// file's lock, or between the writer's cycles on a shared state).
fn approve(config_path: &Path, target: Option<&str>, id: &str) -> Result<ExitCode> {
    let config = Config::load_offline(config_path)?;
    let targets = config.select_targets(target)?;
    // A held set's id is in one target's state: the first that knows it approves it.
    let mut errors = Vec::new();
    for t in &targets {
        match approve_one(t, id) {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(e) if targets.len() == 1 => return Err(e),
            Err(e) => errors.push(format!("target {}: {}", t.target, error_chain(&e))),
        }
    }
    anyhow::bail!("{id} was not approved: {}", errors.join("; "))
}

fn approve_one(config: &Config, id: &str) -> Result<()> {
    let id = id.trim();
    let (what, n) = match config.postgres.is_some() {
        true => between_cycles(config, "approve")?
            .run(async |t, _| writeback::state::pg::tx::approve_any(t, id).await)?,
        false => {
            let _lock = StateLock::acquire(config)?;
            Store::open(&config.state_path)?.approve_any(id)?
        }
    };
    let what = match what {
        writeback::state::Approved::Deletes => format!("{n} held deletes"),
        writeback::state::Approved::MemberRemovals => {
            format!("the held member removals of {n} groups")
        }
    };
    let place = match config.has_targets() || config.target != writeback::config::DEFAULT_TARGET {
        true => format!(" in target {}", config.target),
        false => String::new(),
    };
    println!(
        "approved {what} ({id}){place}; the next sync (or the daemon's next cycle) applies them"
    );
    Ok(())
}

/// `sync`, `plan` and `adopt` on each target in turn. A target that cannot run (its DC down)
/// is reported and the others still run.
async fn sync_targets(
    config: Config,
    target: Option<&str>,
    opts: SyncOptions,
    json: bool,
) -> Result<ExitCode> {
    let targets = config.select_targets(target)?;
    if let (Some(pg), false) = (&config.postgres, opts.dry_run) {
        return sync_shared(&config, pg, targets, opts, json).await;
    }
    if targets.len() == 1 && !config.has_targets() {
        return Ok(ExitCode::from(sync_cmd(&config, None, opts, json).await?));
    }
    let mut codes = Vec::new();
    for t in targets {
        if !json {
            target_header(&config, t);
        }
        match sync_cmd(t, Some(&t.target), opts, json).await {
            Ok(code) => codes.push(code),
            Err(e) => {
                eprintln!("error: target {}: {}", t.target, error_chain(&e));
                codes.push(1);
            }
        }
    }
    Ok(worst(&codes))
}

/// One target's run; `named`: the target's name, put in the report when the config has
/// several.
async fn sync_cmd(
    config: &Config,
    named: Option<&str>,
    opts: SyncOptions,
    json: bool,
) -> Result<u8> {
    let rules =
        setup::load_rules(config).map_err(|e| anyhow::anyhow!("the rules do not load:\n{e}"))?;
    if config.postgres.is_some() {
        // A plan, on a private copy: the shared state is not written, and the writer is not
        // held up. (A sync writes through `sync_shared`.)
        let mut snap = snapshot(config)?;
        return cycle_cmd(config, named, opts, json, &mut snap.store, &rules, None).await;
    }
    // A plan holds the lock too: it reads AD, and a plan made while a sync writes would compare
    // the state before that sync with AD halfway through it.
    let _lock = StateLock::acquire(config)?;
    // A plan runs inside one transaction of the state file that is never committed: the file
    // (delta links, cache, marks, anchors, history) is left as it was, so a later sync does
    // what it would have done without the plan; nothing is copied.
    let mut store = if opts.dry_run {
        // Copies that plans of earlier versions, stopped by Ctrl-C or a kill, left beside the
        // state file: none is in use while we hold the lock.
        match writeback::state::undone::remove_old_copies(&config.state_path) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed copies left by stopped plans"),
            Err(e) => tracing::warn!("{e}"),
        }
        Store::open_undone(&config.state_path)?
    } else {
        Store::open(&config.state_path)?
    };
    if !opts.dry_run {
        // A run that never finished (killed host) is marked so in the history; its work is
        // redone by this one, since only applied changes were recorded.
        let interrupted = store.close_interrupted_runs()?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "earlier runs did not finish; this run completes them"
            );
        }
    }
    cycle_cmd(config, named, opts, json, &mut store, &rules, None).await
}

/// `sync` and `adopt` on a shared state ([state.postgres]): this process writes as the lease's
/// holder, taken once for every target (`targets`, of `config`'s).
async fn sync_shared(
    config: &Config,
    pg: &writeback::config::PostgresConfig,
    targets: Vec<&Config>,
    opts: SyncOptions,
    json: bool,
) -> Result<ExitCode> {
    let mut writer = writeback::ha::oneshot::Writer::take(config, pg).await?;
    let mut home = writer.store.take();
    let mut codes = Vec::new();
    for t in targets {
        let named = config.has_targets().then_some(t.target.as_str());
        if named.is_some() && !json {
            target_header(config, t);
        }
        let store = match (t.target == config.target, &t.postgres) {
            (true, _) => home
                .take()
                .ok_or_else(|| anyhow::anyhow!("target {} twice", t.target)),
            (false, Some(tpg)) => writer.target_store(tpg).await.map_err(Into::into),
            (false, None) => Err(anyhow::anyhow!(
                "no [state.postgres] for target {}",
                t.target
            )),
        };
        let code = match store {
            Ok(mut store) => {
                shared_cycle(t, named, opts, json, &mut store, writer.check.clone()).await
            }
            Err(e) => Err(e),
        };
        match code {
            Ok(code) => codes.push(code),
            // With one target its error is the answer; with several, the others still run.
            Err(e) if !config.has_targets() => {
                writer.done().await;
                return Err(e);
            }
            Err(e) => {
                eprintln!("error: target {}: {}", t.target, error_chain(&e));
                codes.push(1);
            }
        }
    }
    writer.done().await;
    Ok(worst(&codes))
}

/// One target's cycle on the shared state `store`, fenced by the writer's lease.
async fn shared_cycle(
    config: &Config,
    named: Option<&str>,
    opts: SyncOptions,
    json: bool,
    store: &mut writeback::state::pg::PgStore,
    guard: writeback::ad::WriteGuard,
) -> Result<u8> {
    let rules =
        setup::load_rules(config).map_err(|e| anyhow::anyhow!("the rules do not load:\n{e}"))?;
    let interrupted = store.close_interrupted_runs()?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            target = %config.target,
            "earlier runs did not finish; this run completes them"
        );
    }
    // No `approve` or `release` from any host while this run writes.
    let mut store = writeback::daemon::Cycling::lock(store)?;
    cycle_cmd(config, named, opts, json, &mut *store, &rules, Some(guard)).await
}

/// Runs one cycle on `store` and prints its plan or report; the exit code.
async fn cycle_cmd<S: writeback::sync::state::CycleState>(
    config: &Config,
    named: Option<&str>,
    opts: SyncOptions,
    json: bool,
    store: &mut S,
    rules: &writeback::rules::RuleSet,
    guard: Option<writeback::ad::WriteGuard>,
) -> Result<u8> {
    let graph = setup::graph_client(config).context("Graph client")?;
    let mut conn = setup::ad_connection(config).await?;
    conn.set_write_guard(guard);
    let mut schema = None;
    // The plan is written out batch by batch as the cycle makes it (a tenant of any size).
    let out = std::io::BufWriter::new(std::io::stdout());
    let mut text = None;
    let mut doc = None;
    let sink: &mut dyn ChangeSink = if json {
        doc.insert(JsonStream::new(out)?)
    } else {
        text.insert(TextStream::new(out))
    };
    let effects = writeback::effects::HostEffects::maker(config, &graph, conn.clone());
    let mut report = sync::run(
        SyncContext {
            config,
            graph: &graph,
            ad: &mut conn,
            effects: &effects,
            store,
            rules,
            schema: &mut schema,
            sink: Some(sink),
        },
        opts,
    )
    .await?;
    // Before the store goes (and its run with it), the run id is forgotten: it is the one the
    // next sync gets; a plan is not in the history.
    if opts.dry_run {
        report.run_id = 0;
    }
    report.target = named.map(str::to_string);
    if let Some(d) = doc {
        d.finish(&report).context("write the plan")?;
    }
    if let Some(t) = text {
        t.finish(&report, !opts.dry_run).context("write the plan")?;
    }
    Ok(
        if report.blocked.is_some() || report.held.is_some() || report.held_removals.is_some() {
            3
        } else if report.failures() > 0 || !report.plan.refused.is_empty() {
            2
        } else {
            0
        },
    )
}

#[cfg(test)]
mod chain_tests {
    use super::error_chain;

    #[test]
    fn a_cause_quoted_in_its_error_is_printed_once() {
        let io = std::io::Error::other("Read-only file system (os error 30)");
        let lock = writeback::setup::LockError {
            path: "/s/state.db.lock".into(),
            source: io,
        };
        let e = anyhow::Error::new(lock).context("run");
        let text = error_chain(&e);
        assert_eq!(text.matches("Read-only file system").count(), 1, "{text}");
        assert!(
            text.starts_with("run: state lock /s/state.db.lock"),
            "{text}"
        );
    }
}
