//! graph-emulator: a local Microsoft Graph v1.0 emulator for Writeback's tests.

mod auth;
mod batch;
mod cli;
mod clock;
mod control;
mod delta;
mod errors;
mod faults;
mod generate;
mod graph;
mod odata;
mod render;
mod response;
mod schema;
mod server;
mod state;
mod statetoken;
mod store;
mod tenant;
mod urlenc;

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command, GenerateArgs, ServeArgs};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Generate(args)) => generate(args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let tenant = generate::generate(&generate::GenerateOptions {
        users: args.users,
        groups: args.groups,
        seed: args.seed,
        large_groups: args.large_groups,
        large_size: args.large_size,
        domain: args.domain,
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer(&mut out, &tenant)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let tenant_path = args.tenant.context("--tenant FILE is required")?;
    let text = std::fs::read_to_string(&tenant_path)
        .with_context(|| format!("reading {}", tenant_path.display()))?;
    let tenant: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", tenant_path.display()))?;
    let clock = clock::Clock::new(args.clock_start);
    let store = tenant::load(&tenant, clock.now())?;
    let tls = args.tls_cert.zip(args.tls_key);
    let settings = state::Settings {
        page_size: args.page_size,
        delta_page_size: args.delta_page_size,
        member_page_size: args.member_page_size,
        empty_delta_page: args.empty_delta_page,
        delta_replay: args.delta_replay,
    };
    let faults = faults::Faults::new(faults::FaultConfig {
        rate429: args.fault_429_rate,
        rate5xx: args.fault_5xx_rate,
        latency_ms: args.latency_ms,
        seed: args.seed,
        retry_after: args.retry_after,
        ..Default::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = server::bind(args.listen, tls)?;
        let state = Arc::new(state::AppState::new(
            listener.base_url.clone(),
            store,
            clock,
            settings,
            faults,
            args.seed,
            args.app_roles.clone(),
        ));
        server::run(listener, state).await?;
        anyhow::Ok(())
    })
}
