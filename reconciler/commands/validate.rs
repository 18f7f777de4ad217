//! `reconciler validate`: load the specs and report every problem.

use crate::cli::SpecsArgs;
use crate::spec::load_specs;

use super::{ExitStatus, print_problems};

/// Runs the command.
pub fn validate(args: &SpecsArgs) -> ExitStatus {
    let specs = load_specs(&args.specs);
    for loaded in &specs.resources {
        outln!(
            "valid: {} ({}:{})",
            loaded.resource.name(),
            loaded.file.display(),
            loaded.line
        );
    }
    print_problems(&specs.problems);
    if specs.nothing_found {
        // Nothing to validate is not valid: the job could not be done.
        return ExitStatus::Error;
    }
    if specs.problems.is_empty() {
        ExitStatus::Success
    } else {
        eprintln!(
            "{} problem{} found",
            specs.problems.len(),
            if specs.problems.len() == 1 { "" } else { "s" }
        );
        ExitStatus::Failure
    }
}
