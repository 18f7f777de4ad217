//! `reconciler status`: print what `reconciler run` recorded.

use crate::cli::{OutputFormat, StatusArgs};
use crate::plan::ConditionStatus;
use crate::runtime::status::{read_statuses, render_table};

use super::ExitStatus;

/// Runs the command: exit 0 when every pipeline is Ready, 1 otherwise.
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitStatus> {
    let statuses = read_statuses(&args.state.state_dir)?;
    if statuses.is_empty() {
        eprintln!(
            "no status in {}: is `reconciler run` using this --state-dir?",
            args.state.state_dir.display()
        );
        return Ok(ExitStatus::Error);
    }
    match args.output {
        OutputFormat::Text => out!("{}", render_table(&statuses, jiff::Timestamp::now())),
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&statuses)?),
    }
    let ready = statuses.iter().all(|s| {
        s.conditions.iter().any(|c| {
            c.condition.kind == crate::plan::ConditionType::Ready
                && c.condition.status == ConditionStatus::True
        })
    });
    Ok(if ready {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
