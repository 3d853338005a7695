//! Command line: `serve` (the default) and `generate`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(
    name = "graph-emulator",
    version,
    about = "A local Microsoft Graph v1.0 emulator: users, groups, members, delta, $batch, app-only tokens",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand the emulator serves.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Graph, the token endpoint and the control endpoint (the default).
    Serve(ServeArgs),
    /// Print a deterministic synthetic tenant file on stdout.
    Generate(GenerateArgs),
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    crate::clock::parse_rfc3339(s).map_err(|e| format!("not an RFC 3339 date-time: {e}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("a rate between 0 and 1".into()),
    }
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the URL is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The application permissions granted to the app (its tokens' `roles`), comma-separated.
    /// Writes need theirs: PATCH, POST and DELETE of groups need Group.ReadWrite.All or
    /// Directory.ReadWrite.All, as Microsoft documents for "Update group".
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Group.ReadWrite.All,User.ReadWrite.All,GroupMember.ReadWrite.All,Directory.ReadWrite.All"
    )]
    pub app_roles: Vec<String>,
    /// Tenant file (JSON, see README).
    #[arg(long, required = true)]
    pub tenant: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Default page size of user/group/member lists ($top overrides, max 999).
    #[arg(long, default_value_t = 100)]
    pub page_size: usize,
    /// Objects per delta page.
    #[arg(long, default_value_t = 100)]
    pub delta_page_size: usize,
    /// Max members@delta entries per group per page; a larger group is split and repeated.
    #[arg(long, default_value_t = 1000)]
    pub member_page_size: usize,
    /// Put an empty page (value: [] with a nextLink) into every delta round (page 2).
    #[arg(long)]
    pub empty_delta_page: bool,
    /// Replay every object of an incremental delta round once more, after all the others
    /// (Graph: the same entity may come several times in one round, in no order).
    #[arg(long)]
    pub delta_replay: bool,
    /// Probability of a 429 per Graph request.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_429_rate: f64,
    /// Probability of a 503/504 per Graph request.
    #[arg(long = "fault-5xx-rate", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_5xx_rate: f64,
    /// Milliseconds added to every Graph request.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed of fault injection and of ids of created objects.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Retry-After seconds on 429/503.
    #[arg(long, default_value_t = 1.0)]
    pub retry_after: f64,
    /// Start the emulator clock here (RFC 3339) instead of now.
    #[arg(long, value_parser = parse_time)]
    pub clock_start: Option<OffsetDateTime>,
}

#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    #[arg(long)]
    pub users: usize,
    #[arg(long)]
    pub groups: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of extra-large groups (the first ones).
    #[arg(long, default_value_t = 0)]
    pub large_groups: usize,
    /// Size of each extra-large group (capped at --users).
    #[arg(long, default_value_t = 5000)]
    pub large_size: usize,
    /// Tenant domain (default contoso.onmicrosoft.com).
    #[arg(long)]
    pub domain: Option<String>,
}
