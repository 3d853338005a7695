//! `writeback-docs <dir>`: writes the man pages (`writeback.1` and one page per verb, e.g.
//! `writeback-sync.1`) and the bash, zsh and fish completions of `writeback` into `<dir>`.
//!
//! It compiles the same `cli.rs` as the `writeback` binary, so the pages and completions always
//! match the verbs and flags of the binary built from the same tree.

// The CLI is parsed only by `writeback`; here it is only described, so its fields are never read.
#[allow(dead_code)]
#[path = "../cli.rs"]
mod cli;

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: writeback-docs <output directory>");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes every page and completion file; returns their paths.
fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let cmd = cli::Cli::command();
    write_man(cmd, dir, &mut written)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cli::Cli::command();
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            "writeback",
            dir,
        )?);
    }
    Ok(written)
}

/// Writes the page of `cmd` and of each of its verbs. Once built, clap names a verb's page after
/// its full command (`writeback-sync`) and its synopsis after its invocation (`writeback sync`).
fn write_man(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let source = format!("writeback {}", env!("CARGO_PKG_VERSION"));
    let mut pages = vec![cmd];
    while let Some(page) = pages.pop() {
        pages.extend(page.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let man = clap_mangen::Man::new(page)
            .manual("Writeback Manual")
            .source(source.clone());
        written.push(man.generate_to(dir)?);
    }
    Ok(())
}
