//! The `reconciler` binary: parse the command line, set up logging on stderr,
//! dispatch, and map the outcome to an exit code. Data goes to stdout.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use reconciler::cli::{Cli, Command, LogFormat};
use reconciler::commands::{self, ExitStatus};
use reconciler::drivers::Drivers;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn init_tracing(cli: &Cli) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(cli.log_level.as_str()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let status = match run(cli) {
        Ok(status) => status,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitStatus::Error
        }
    };
    status.into()
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match &cli.command {
        Command::Validate(args) => Ok(commands::validate::validate(args)),
        Command::Schema(args) => commands::schema::schema(args),
        Command::Crd(args) => commands::crd::crd(args),
        Command::Completions(args) => Ok(commands::completions::completions(args)),
        Command::Man(args) => commands::completions::man(args),
        Command::Status(args) if !args.fleet.endpoints.is_empty() => {
            runtime()?.block_on(commands::status::fleet_status(args))
        }
        Command::Status(args) => commands::status::status(args),
        Command::Diff(args) => runtime()?.block_on(async {
            commands::diff::diff(args, &Drivers::local(CancellationToken::new())).await
        }),
        Command::Apply(args) => runtime()?.block_on(async {
            // Ctrl-C or SIGTERM during apply: the running step stops cleanly.
            let cancel = CancellationToken::new();
            commands::cancel_on_signals(cancel.clone());
            commands::apply::apply(args, &Drivers::local(cancel)).await
        }),
        Command::Run(args) => runtime()?.block_on(commands::run::run(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
