//! One module per subcommand. Commands load specs, call [`crate::reconcile`] and
//! print; they return an [`ExitStatus`]. anyhow is allowed here, at the edge.

/// Writes to stdout like `print!`, but a closed stdout (`reconciler diff | head`)
/// is not an error: there is just no one left to read.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` that tolerates a closed stdout; see [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod apply;
pub mod completions;
pub mod crd;
pub mod diff;
pub mod fleet;
pub mod run;
pub mod schema;
pub mod status;
pub mod validate;

use std::process::ExitCode;

use crate::plan::{ConditionStatus, Plan};
use crate::spec::{LoadedResource, LoadedSpecs, SpecProblem};

/// How a command ended, mapped onto the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// 0: converged, valid, no drift.
    Success,
    /// 1: drift, not converged, invalid specs.
    Failure,
    /// 2: could not do the job.
    Error,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(match status {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Error => 2,
        })
    }
}

pub use crate::clock::context_now;

/// Keeps the pipelines (and the problems) the user named; all when none named.
/// Names that match nothing are returned as problems of their own.
pub fn select(
    specs: LoadedSpecs,
    names: &[String],
) -> (Vec<LoadedResource>, Vec<SpecProblem>, Vec<String>) {
    if names.is_empty() {
        return (specs.resources, specs.problems, Vec::new());
    }
    let unknown = names
        .iter()
        .filter(|n| {
            !specs
                .resources
                .iter()
                .any(|p| p.resource.name().as_str() == n.as_str())
                && !specs
                    .problems
                    .iter()
                    .any(|p| p.pipeline.as_deref() == Some(n.as_str()))
        })
        .cloned()
        .collect();
    let pipelines = specs
        .resources
        .into_iter()
        .filter(|p| names.iter().any(|n| n == p.resource.name().as_str()))
        .collect();
    // A problem whose pipeline can't be named might be any of them: keep it.
    let problems = specs
        .problems
        .into_iter()
        .filter(|p| p.pipeline.as_ref().is_none_or(|name| names.contains(name)))
        .collect();
    (pipelines, problems, unknown)
}

/// `diff`, `apply` and `run` act on this host's documents only: a `--specs`
/// directory holding one directory per host is refused with the hosts it holds,
/// rather than reconciling another host's volumes here. `validate` checks them all.
pub fn refuse_several_hosts(specs: &LoadedSpecs) -> Result<(), String> {
    if specs.hosts.len() < 2 {
        return Ok(());
    }
    let hosts: Vec<String> = specs
        .hosts
        .iter()
        .map(|h| h.display().to_string())
        .collect();
    Err(format!(
        "the specs hold one directory per host ({}); pass this host's with --specs, e.g. --specs {}",
        hosts.join(", "),
        hosts[0]
    ))
}

/// The names `diff` and `apply` accept: every document's, loaded or not.
pub fn known_names(specs: &LoadedSpecs) -> Vec<String> {
    let mut names: Vec<String> = specs
        .resources
        .iter()
        .map(|r| r.resource.name().to_string())
        .chain(specs.problems.iter().filter_map(|p| p.pipeline.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Says on stderr that a name matched nothing, where it was looked for, and which
/// names there are: `error: no pipeline named `x` under specs/annex (known: montagu)`.
pub fn report_unknown_names(unknown: &[String], paths: &[std::path::PathBuf], known: &[String]) {
    let under = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    for name in unknown {
        eprintln!("error: no pipeline named `{name}` under {under} (known: {known})");
    }
}

/// The exit status for a set of plans: error when anything is unknown or a spec is
/// broken, failure on drift, success otherwise.
pub fn status_for(plans: &[&Plan], problems: usize) -> ExitStatus {
    let unknown = plans.iter().any(|p| {
        p.conditions
            .iter()
            .any(|c| c.status == ConditionStatus::Unknown)
    });
    if problems > 0 || unknown {
        ExitStatus::Error
    } else if plans.iter().all(|p| p.is_converged()) {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

/// Prints spec problems on stderr, one `file:line:col: message` each with its hint,
/// then the YAML around it with a caret under the spot when the parser showed it.
pub fn print_problems(problems: &[SpecProblem]) {
    for problem in problems {
        eprintln!("{problem}");
        if let Some(snippet) = &problem.snippet {
            eprintln!("{snippet}");
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT: running steps stop cleanly, no new one starts.
pub fn cancel_on_signals(token: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        token.cancel();
    });
}
