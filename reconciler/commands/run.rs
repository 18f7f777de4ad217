//! `reconciler run`: the long-running service.

use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::drivers::Drivers;
use crate::runtime::{RunConfig, run_in_fleet};
use crate::spec::HumanDuration;

use super::ExitStatus;

fn duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    HumanDuration::try_from(text.to_string())
        .map(|d| d.to_std())
        .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

/// Runs the command until SIGTERM or SIGINT.
pub async fn run(args: &RunArgs) -> anyhow::Result<ExitStatus> {
    super::refuse_several_hosts(&crate::spec::load_specs(&args.specs.specs))
        .map_err(anyhow::Error::msg)?;
    let config = RunConfig {
        specs: args.specs.specs.clone(),
        state_dir: args.state.state_dir.clone(),
        listen: args.listen,
        resync: duration("resync", &args.resync)?,
        max_parallel: args.max_parallel,
        shutdown_timeout: duration("shutdown-timeout", &args.shutdown_timeout)?,
        stall_after: args
            .stall_after
            .as_deref()
            .map(|d| duration("stall-after", d))
            .transpose()?,
    };
    let fleet = super::fleet::run_config(&args.fleet)?;
    let shutdown = CancellationToken::new();
    super::cancel_on_signals(shutdown.clone());
    let drivers = Drivers::local(shutdown.clone());
    run_in_fleet(config, fleet, drivers, shutdown).await?;
    Ok(ExitStatus::Success)
}
