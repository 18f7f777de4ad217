//! `reconciler completions` and `reconciler man`: generated from the same clap
//! definitions the command line is parsed with, so they never drift from it.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

use super::ExitStatus;

/// Prints the completion script for a shell.
pub fn completions(args: &CompletionsArgs) -> ExitStatus {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "reconciler", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    ExitStatus::Success
}

/// The command the manual pages describe. It names the package version only, not
/// the commit, so the checked-in pages change only when the interface does.
fn documented_command() -> clap::Command {
    Cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .long_version(None::<&'static str>)
        .disable_help_subcommand(true)
}

/// Prints `reconciler.1`, or writes every page into `--dir`.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitStatus> {
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(documented_command(), dir)?;
        }
        None => {
            let mut roff = Vec::new();
            clap_mangen::Man::new(documented_command()).render(&mut roff)?;
            out!("{}", String::from_utf8_lossy(&roff));
        }
    }
    Ok(ExitStatus::Success)
}
