//! The command line: the verbs an administrator uses.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Writeback keeps on-premises Active Directory in step with Microsoft Entra ID groups.
///
/// Cloud groups are read from Microsoft Graph (delta queries), turned into AD groups by the Rhai
/// rules in the rules folder, compared with the AD objects Writeback owns, and only the
/// difference is written over LDAP.
///
/// Start with `writeback check` (config and rules, nothing contacted), then `writeback plan` (what a sync
/// would change, nothing is written), then `writeback sync`.
/// The version, and whether this binary can bind with Kerberos (`ad.auth = "kerberos"` needs
/// a build with the `kerberos` feature): `writeback --version` is where an operator looks.
#[cfg(feature = "kerberos")]
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (kerberos)");
#[cfg(not(feature = "kerberos"))]
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Parser)]
#[command(name = "writeback", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// The configuration file (TOML).
    #[arg(
        short,
        long,
        global = true,
        env = "WRITEBACK_CONFIG",
        default_value = "/etc/writeback/writeback.toml"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Only this AD target (`[ad] name` or a `[targets.<name>]` key); every target when not
    /// given.
    #[arg(long, global = true, value_name = "NAME")]
    pub target: Option<String>,

    /// More log detail (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one sync cycle: read the cloud changes, apply the plan to AD.
    ///
    /// By default only what changed since the last run is read (Graph delta). Exit status: 0 all
    /// applied; 2 something was refused or failed (see the report; a failing group is retried
    /// with a growing wait, or as soon as it changes); 3 deletes or member removals were held
    /// back for approval (`writeback approve`), or the rules put nothing in scope and nothing
    /// was applied; 1 the run could not start or finish.
    Sync {
        /// Re-read the whole tenant and compare every owned AD object (finds drift and orphans).
        #[arg(long)]
        full: bool,
        /// Apply every delete, even more than `safety.delete_threshold` (nothing is held back).
        #[arg(long)]
        allow_deletes: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show what a sync would change, without writing anything to AD.
    ///
    /// Graph and AD are read; the state is left as it was (the plan runs in a transaction of
    /// the state file that is rolled back, so the next sync reads the same cloud changes). The plan also lists the rules' triggers the
    /// changes would fire (none is called) and the rules' schedules with their next due time.
    /// Exit status: 0 everything would be applied; 2 something would be refused; 3 deletes or
    /// member removals would be held back, or the rules put nothing in scope; 1 the plan could
    /// not be made.
    Plan {
        /// Compare every owned AD object, not only the groups that changed.
        #[arg(long)]
        full: bool,
        /// Print the plan as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// What Writeback is doing: the daemon running or not and its rules, the last runs, how
    /// fresh the cloud cache is, deletes held back, groups failing, the next reconciliation.
    ///
    /// Read-only: safe beside a running daemon.
    Status {
        /// Print it as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The runs, newest first.
    History {
        /// Runs started at or after this time: RFC 3339, or an age such as 30m, 12h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only runs with this status.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
            writeback::state::RunStatus::ALL.map(writeback::state::RunStatus::as_str)
        ))]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// What Writeback wrote to AD and which triggers ran: one line per audit event (time, run,
    /// action, outcome, DN, cloud id, values before and after), oldest first.
    ///
    /// Read-only: safe beside a running daemon. Events are kept for `[state]
    /// audit_retention_days` (default 365).
    Audit {
        /// Only this group's events: its cloud id, its displayName (looked up in the cloud
        /// cache; every group with that name) or its DN (the object Writeback owns there, and
        /// the events written at that DN).
        #[arg(long)]
        group: Option<String>,
        /// Only events whose DN is this one or below it (compared as AD does, ignoring case).
        #[arg(long, value_name = "DN")]
        dn_under: Option<String>,
        /// Events at or after this time: RFC 3339, or an age such as 30m, 12h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Events at or before this time: RFC 3339, or an age such as 30m, 12h, 7d.
        #[arg(long)]
        until: Option<String>,
        /// Only the newest N matching events (still printed oldest first).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// One JSON object per line, with the same keys for every event (for a SIEM).
        #[arg(long)]
        json_lines: bool,
    },
    /// What the rules make of one group and what a sync would do about it, without doing it.
    ///
    /// The group is read from the cloud cache (by cloud id, displayName or the DN of its AD
    /// object); shows whether it is in scope and which rule decided (or the rule's error), the
    /// AD object the rules ask for with its members, the members that do not resolve and why,
    /// the AD object Writeback owns for it and the diff a sync would apply, and whether the
    /// group is in quarantine or held for a delete. Reads AD; writes nothing to AD or to the
    /// state. The cloud side is the cache as of the last sync (its age is shown), AD is read
    /// now. Exit status 1 when no group, or more than one, matches, or when no sync has run yet.
    Explain {
        /// A cloud id, a displayName or a DN.
        group: String,
        /// Print it as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Approve the deletes a sync held back, by the id it showed.
    ///
    /// When a cycle would delete more groups than `safety.delete_threshold` (or
    /// `safety.delete_threshold_percent` of the groups Writeback owns), the deletes are held back
    /// and everything else is applied. The report (and `writeback plan`) lists the held set and
    /// its id. Approving that id lets exactly those deletes through on the next sync or daemon
    /// cycle, once; a delete that was not in the set needs its own approval.
    Approve {
        /// The held set's id, as the report showed it.
        id: String,
    },
    /// Take over the AD groups that carry this tenant's anchors but that Writeback has no record
    /// of: groups written back by Azure AD Connect or Cloud Sync, or after the state file was
    /// lost.
    ///
    /// Writeback only modifies or deletes objects it recorded as its own. `adopt` runs a
    /// reconciliation that also records, for every group the rules put in scope, the object in
    /// the managed OUs carrying its anchor, then brings it in step like any sync. Objects of
    /// groups not in scope, or of another tenant, are left alone. Run it with --dry-run first:
    /// the plan lists what would be adopted and changed.
    Adopt {
        /// Show what would be adopted and changed; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Stop managing groups without touching AD: for decommissioning, or to hand groups to
    /// another tool. Their AD objects stay exactly as they are; Writeback no longer writes or
    /// deletes them, and `writeback adopt` takes them back.
    Release {
        /// Groups by cloud id or displayName.
        groups: Vec<String>,
        /// Every managed group whose AD object is at or below this DN.
        #[arg(long, value_name = "DN")]
        dn_under: Option<String>,
        /// Every group Writeback manages.
        #[arg(long)]
        all: bool,
        /// Show what would be released; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the released groups as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The state itself: move it between its SQLite file and PostgreSQL.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Run as a service: poll Graph for changes and apply them, reload the rules when they are
    /// edited, reconcile drift on a schedule.
    ///
    /// Settings are in the config's [daemon] section (poll_interval_secs, reconcile_interval_secs,
    /// watch = "auto" | "poll" | "off"). A rules edit that does not compile is refused with its
    /// file:line:column and the last good rules keep running. Rules with a SCHEDULE have their
    /// on_schedule run between cycles when due. SIGHUP reloads the rules; SIGTERM/SIGINT finish
    /// the cycle in flight and exit 0.
    Run,
    /// Check the configuration and the rules without contacting Graph or AD.
    ///
    /// The configuration: every key, the secrets it names (each one that cannot be read is
    /// named), and values left from the packaged template (all-zero ids, example.com). The
    /// rules: they compile, with file:line:column positions. Exit status 2 when anything is to
    /// fix. With --rules, only that folder is checked (fit for a rules repository's CI).
    Check {
        /// Check this rules folder instead of the one in the config (the config is then optional,
        /// its secrets are not read).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The stdlib folder to use with --rules (default: `stdlib` beside the rules folder or
        /// beside one of its parent folders).
        #[arg(long)]
        stdlib: Option<PathBuf>,
        /// Also ask Graph and AD, writing nothing: a token and the first page of each delta
        /// query, a bind to each DC, the managed OUs and the account's rights there (AD's
        /// allowedChildClassesEffective and allowedAttributesEffective), the link targets.
        #[arg(long, conflicts_with = "rules")]
        online: bool,
    },
    /// Run the rules' unit tests offline: every `<rules>/tests/*.toml` (see "Testing rules" in
    /// SCRIPTING.md: /usr/share/doc/writeback/ when installed from the package, docs/ in the
    /// source).
    ///
    /// Prints one line per case and what differs for each failure, then `N passed, M failed`.
    /// Exit status: 0 all passed; 1 a case failed or a test file is malformed; 2 the rules (or
    /// the config) do not load.
    Test {
        /// Test this rules folder instead of the one in the config (the config is then optional;
        /// its rule settings are used when it loads).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The stdlib folder to use with --rules (default: `stdlib` beside the rules folder or
        /// beside one of its parent folders).
        #[arg(long)]
        stdlib: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy the whole state (delta links, cloud cache, anchors, pending marks, quarantine, held
    /// sets, run history and audit, trigger outbox, ...) from one backend into the other, so an
    /// installation moves without re-reading the tenant or re-adopting its groups.
    ///
    /// `--to postgres` copies the SQLite file (`[state] path`) into the database of
    /// `[state.postgres]`; `--to sqlite` copies that database into `[state] path`. The source
    /// is read from one consistent snapshot and left as it was; the destination is written in
    /// one transaction and must hold no state (an existing file or database with any row is
    /// refused: a copy never merges). Both must be at this build's schema version. Stop every
    /// instance first: the copy is refused while an instance holds the lease on the database,
    /// or while a daemon or a sync uses the state file. Contacts neither Graph nor AD; reads
    /// only the database's password. Exit status 1 when anything is refused or fails.
    Copy {
        /// Where the state goes.
        #[arg(long, value_enum)]
        to: StateBackend,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateBackend {
    /// From the SQLite file into `[state.postgres]`.
    Postgres,
    /// From `[state.postgres]` into the SQLite file.
    Sqlite,
}
