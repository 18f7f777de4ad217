//! `reconciler diff`: observe and plan every selected pipeline, print the drift.

use std::path::PathBuf;

use serde::Serialize;

use crate::cli::{DiffArgs, OutputFormat};
use crate::drivers::Drivers;
use crate::plan::{Plan, PlanContext, render_text};
use crate::reconcile::{Observations, diff_all};
use crate::spec::{SpecProblem, load_specs};

use super::{
    ExitStatus, context_now, known_names, print_problems, refuse_several_hosts,
    report_unknown_names, select, status_for,
};

/// The JSON document `diff --output json` prints (kind `DiffReport`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    /// Always `reconciler.montagu/v1alpha1`.
    pub api_version: &'static str,
    /// Always `DiffReport`.
    pub kind: &'static str,
    /// The instant evaluated.
    pub at: jiff::Timestamp,
    /// True when any pipeline drifted (exit code 1 or 2).
    pub drift: bool,
    /// One entry per pipeline.
    pub pipelines: Vec<PipelineDiff>,
    /// Spec problems; their pipelines are not evaluated.
    pub problems: Vec<SpecProblem>,
}

/// One pipeline in a [`DiffReport`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineDiff {
    /// The spec file.
    pub source: String,
    /// Not every condition holds.
    pub drift: bool,
    /// Conditions, steps, waits and the next deadline.
    #[serde(flatten)]
    pub plan: Plan,
    /// The document's kind.
    pub kind: &'static str,
    /// What was observed.
    pub observed: Observations,
}

/// Runs the command.
pub async fn diff(args: &DiffArgs, drivers: &Drivers) -> anyhow::Result<ExitStatus> {
    print_diff(
        &args.specs.specs,
        &args.names,
        args.at,
        args.output,
        drivers,
    )
    .await
}

/// Observes and plans the documents of `specs` named in `names` (all when empty)
/// as of `at` (now when `None`), prints the drift in `output`'s format and returns
/// the exit status: `diff`, and `apply --dry-run`. Changes nothing.
pub(super) async fn print_diff(
    spec_paths: &[PathBuf],
    names: &[String],
    at: Option<jiff::Timestamp>,
    output: OutputFormat,
    drivers: &Drivers,
) -> anyhow::Result<ExitStatus> {
    let specs = load_specs(spec_paths);
    if let Err(message) = refuse_several_hosts(&specs) {
        eprintln!("error: {message}");
        return Ok(ExitStatus::Error);
    }
    let known = known_names(&specs);
    let (pipelines, problems, unknown) = select(specs, names);
    report_unknown_names(&unknown, spec_paths, &known);
    let mut cx = context_now();
    if let Some(at) = at {
        cx = PlanContext { now: at, ..cx };
    }
    let pass = drivers.for_one_pass();
    let looks = diff_all(pipelines.iter().map(|l| (&l.resource, None)), &pass, &cx).await;
    let mut entries = Vec::new();
    for (loaded, (observed, plan)) in pipelines.iter().zip(looks) {
        entries.push(PipelineDiff {
            source: format!("{}:{}", loaded.file.display(), loaded.line),
            drift: !plan.is_converged(),
            kind: loaded.resource.kind(),
            plan,
            observed,
        });
    }
    let plans: Vec<&Plan> = entries.iter().map(|e| &e.plan).collect();
    let mut status = status_for(&plans, problems.len());
    if !unknown.is_empty() {
        status = ExitStatus::Error;
    }
    match output {
        OutputFormat::Text => {
            for (entry, loaded) in entries.iter().zip(&pipelines) {
                out!(
                    "{}",
                    render_text(loaded.resource.noun(), &entry.plan, cx.now)
                );
            }
            print_problems(&problems);
        }
        OutputFormat::Json => {
            let report = DiffReport {
                api_version: crate::spec::API_VERSION,
                kind: "DiffReport",
                at: cx.now,
                drift: status != ExitStatus::Success,
                pipelines: entries,
                problems,
            };
            outln!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(status)
}
