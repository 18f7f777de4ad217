//! `reconciler apply`: one reconcile pass per selected pipeline.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::{ApplyArgs, OutputFormat};
use crate::drivers::Drivers;
use crate::plan::{Plan, PlannedStep, render_text};
use crate::reconcile::{
    ApplyReport, MAX_STEPS_PER_APPLY, Progress, StepOutcome, StepRecord, apply_pipeline, diff_all,
};
use crate::spec::{SpecProblem, load_specs};

use super::{
    ExitStatus, context_now, known_names, print_problems, refuse_several_hosts,
    report_unknown_names, select, status_for,
};

/// The JSON document `apply --output json` prints (kind `ApplyReport`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyDocument {
    api_version: &'static str,
    kind: &'static str,
    converged: bool,
    pipelines: Vec<ApplyReport>,
    problems: Vec<SpecProblem>,
}

/// Shows progress: a spinner on a terminal, nothing extra otherwise (the logs say it).
struct StepProgress {
    bar: Option<ProgressBar>,
}

impl StepProgress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }
}

impl Progress for StepProgress {
    fn step_started(&self, pipeline: &str, index: usize, planned: &PlannedStep) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{pipeline}: step {}: {}", index + 1, planned.step));
        }
    }

    fn step_finished(&self, pipeline: &str, record: &StepRecord) {
        if let Some(bar) = &self.bar {
            let mark = match record.outcome {
                StepOutcome::Done => "done",
                StepOutcome::Busy => "busy",
                StepOutcome::Interrupted => "interrupted",
                StepOutcome::Failed => "FAILED",
            };
            bar.println(format!(
                "{pipeline}: {} — {mark} in {:.1}s: {}",
                record.planned.step, record.seconds, record.detail
            ));
        }
    }
}

/// Runs the command.
pub async fn apply(args: &ApplyArgs, drivers: &Drivers) -> anyhow::Result<ExitStatus> {
    if args.dry_run {
        // Exactly what `diff` prints and returns, in either format.
        return super::diff::print_diff(&args.specs.specs, &args.names, None, args.output, drivers)
            .await;
    }
    let specs = load_specs(&args.specs.specs);
    if let Err(message) = refuse_several_hosts(&specs) {
        eprintln!("error: {message}");
        return Ok(ExitStatus::Error);
    }
    let known = known_names(&specs);
    let (pipelines, problems, unknown) = select(specs, &args.names);
    report_unknown_names(&unknown, &args.specs.specs, &known);
    let mut reports = Vec::new();
    let progress = StepProgress::new();
    // One look at everything at once, as `diff` takes it: a pipeline with nothing
    // to do is reported from it; the others are worked on one after another, each
    // observed afresh (uncached) under its volume's lock before every step. With a
    // single document that first look would only be taken twice: its look is
    // taken under the lock instead.
    let looks = if pipelines.len() > 1 {
        let pass = drivers.for_one_pass();
        diff_all(
            pipelines.iter().map(|l| (&l.resource, None)),
            &pass,
            &context_now(),
        )
        .await
        .into_iter()
        .map(|(_, plan)| Some(plan))
        .collect()
    } else {
        vec![None; pipelines.len()]
    };
    for (loaded, first_look) in pipelines.iter().zip(looks) {
        if let Some(plan) = first_look.filter(|plan| plan.steps.is_empty()) {
            reports.push(ApplyReport::ended(
                loaded.resource.name().to_string(),
                Vec::new(),
                plan,
            ));
            continue;
        }
        let report = apply_pipeline(
            &loaded.resource,
            drivers,
            &context_now,
            &progress,
            MAX_STEPS_PER_APPLY,
            None,
        )
        .await;
        reports.push(report);
    }
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let plans: Vec<&Plan> = reports.iter().map(|r| &r.final_plan).collect();
    let mut status = status_for(&plans, problems.len());
    if !unknown.is_empty() {
        status = ExitStatus::Error;
    }
    match args.output {
        OutputFormat::Text => {
            let now = jiff::Timestamp::now();
            for (report, loaded) in reports.iter().zip(&pipelines) {
                let noun = loaded.resource.noun();
                outln!(
                    "{noun} {}: {} step(s) executed",
                    report.pipeline,
                    report.steps.len()
                );
                for (i, step) in report.steps.iter().enumerate() {
                    outln!(
                        "  {}. {} — {:?} in {:.1}s: {}",
                        i + 1,
                        step.planned.step,
                        step.outcome,
                        step.seconds,
                        step.detail
                    );
                }
                out!("{}", render_text(noun, &report.final_plan, now));
            }
            print_problems(&problems);
        }
        OutputFormat::Json => {
            let document = ApplyDocument {
                api_version: crate::spec::API_VERSION,
                kind: "ApplyReport",
                converged: status == ExitStatus::Success,
                pipelines: reports,
                problems,
            };
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
    }
    Ok(status)
}
