//! `reconciler status`: print what `reconciler run` recorded.

use crate::cli::{OutputFormat, StatusArgs};
use crate::fleet::read::FleetRecord;
use crate::plan::ConditionStatus;
use crate::runtime::status::{PipelineStatus, read_statuses, render_table};

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

/// `status --fleet`: every pipeline etcd knows, its owner, its conditions and
/// when each last changed, as its owner last published them. Exit 0 when every
/// pipeline has an owner and is Ready, 1 otherwise.
pub async fn fleet_status(args: &StatusArgs) -> anyhow::Result<ExitStatus> {
    let Some(config) = super::fleet::connect_config(&args.fleet)? else {
        return Ok(ExitStatus::Error);
    };
    let client = crate::fleet::connect(&config).await?;
    let records = crate::fleet::read::read_fleet(&client).await?;
    if records.is_empty() {
        eprintln!("etcd holds no pipeline: is `reconciler run --fleet` using these endpoints?");
        return Ok(ExitStatus::Error);
    }
    let parsed: Vec<(FleetRecord, Option<PipelineStatus>)> = records
        .into_iter()
        .map(|r| {
            let status = r
                .status
                .clone()
                .and_then(|s| serde_json::from_value::<PipelineStatus>(s).ok());
            (r, status)
        })
        .collect();
    let is_ready = |s: &Option<PipelineStatus>| {
        s.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.condition.kind == crate::plan::ConditionType::Ready
                    && c.condition.status == ConditionStatus::True
            })
        })
    };
    match args.output {
        OutputFormat::Json => {
            let all: Vec<&FleetRecord> = parsed.iter().map(|(r, _)| r).collect();
            outln!("{}", serde_json::to_string_pretty(&all)?);
        }
        OutputFormat::Text => out!("{}", render_fleet(&parsed)),
    }
    let healthy = parsed.iter().all(|(r, s)| r.owner.is_some() && is_ready(s));
    Ok(if healthy {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn render_fleet(records: &[(FleetRecord, Option<PipelineStatus>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<16} {:<26} CONDITIONS",
        "NAME", "OWNER", "LAST TRANSITION"
    );
    for (record, status) in records {
        let owner = record.owner.as_deref().unwrap_or("(none)");
        let (conditions, last) = match status {
            Some(s) => (
                s.conditions
                    .iter()
                    .map(|c| format!("{}={:?}", c.condition.label(), c.condition.status))
                    .collect::<Vec<_>>()
                    .join(","),
                s.conditions
                    .iter()
                    .map(|c| c.last_transition_time)
                    .max()
                    .map_or("-".to_string(), |t| t.to_string()),
            ),
            None => ("(no status published)".to_string(), "-".to_string()),
        };
        let _ = writeln!(
            out,
            "{:<24} {owner:<16} {last:<26} {conditions}",
            record.pipeline
        );
    }
    out
}
