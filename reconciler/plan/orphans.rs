//! Processes that write where a step is about to write: a step never starts into
//! the volume or the starport while one runs there. Pure.
//!
//! What runs there decides the answer an operator expects at 3 am:
//! - left by a reconciler that no longer runs (its mark names a dead reconciler):
//!   nothing but the reconciler uses what it writes, and the step starts over, so
//!   it is stopped (`stopOrphan`: SIGTERM, SIGKILL after a grace period), condition
//!   reason `OrphanedProcess`;
//! - started by a reconciler that still runs (another instance, or `run` busy
//!   while `diff` looks): waited for, reason `ProcessWriting`;
//! - without a reconciler's mark (an operator's rsync, another tool): never
//!   signalled; waited for by name, reason `ProcessWriting`, and `Stalled` once
//!   the wait outlasts `stalledAfter`;
//! - when the processes could not be listed: waited for, reason
//!   `ProcessesUnknown`, rather than writing blind.

use super::{ConditionStatus, ConditionType, PipelineStep, Planner, Reason};
use crate::observed::{Observation, StartedBy, WriteArea, WritingProcess};

/// Whether a step that writes into any of `areas` must not start now. When it
/// must, the stops and waits are planned here and the `kind` condition (already
/// `False`: something is to be written) says why.
pub(super) fn writers_block(p: &mut Planner<'_>, areas: &[WriteArea], kind: ConditionType) -> bool {
    let writers = match &p.observed.writers {
        None => return false,
        Some(Observation::Unavailable { reason }) => {
            let what = format!(
                "the processes writing into the pipeline's volume and starport to be listable ({reason})"
            );
            if !p.plan.waiting_on.contains(&what) {
                p.wait(what);
            }
            explain(
                p,
                kind,
                Reason::ProcessesUnknown,
                format!("whether a process writes there could not be told ({reason})"),
            );
            return true;
        }
        Some(Observation::Observed { value }) => value,
    };
    let here: Vec<&WritingProcess> = writers.iter().filter(|w| areas.contains(&w.area)).collect();
    if here.is_empty() {
        return false;
    }
    let mut orphaned = Vec::new();
    let mut others = Vec::new();
    for writer in here {
        if writer.is_orphan() {
            orphaned.push(writer.to_string());
            let step = PipelineStep::StopOrphan {
                process: writer.clone(),
            };
            if !p.plan.steps.iter().any(|s| s.step == step) {
                let StartedBy::Reconciler { pid, .. } = writer.started_by else {
                    continue;
                };
                p.step(
                    step,
                    format!(
                        "{writer}, started {} by reconciler pid {pid}, which no longer runs: nothing will use what it writes, and a new step must not write beside it",
                        writer.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
                    ),
                );
            }
        } else {
            let who = match writer.started_by {
                StartedBy::Reconciler { pid, .. } => {
                    format!("started by reconciler pid {pid}, which still runs")
                }
                StartedBy::Unknown => "not started by a reconciler".to_string(),
            };
            others.push(writer.to_string());
            let what = format!(
                "{writer} ({who}) to finish; the reconciler never writes where another process writes"
            );
            if !p.plan.waiting_on.contains(&what) {
                p.wait(what);
            }
        }
    }
    let (reason, message) = if others.is_empty() {
        (
            Reason::OrphanedProcess,
            format!("left by a killed reconciler: {}", orphaned.join("; ")),
        )
    } else {
        (Reason::ProcessWriting, others.join("; "))
    };
    explain(p, kind, reason, message);
    true
}

/// Gives the `kind` condition (the last one pushed) the blocking reason, keeping
/// what it said before.
fn explain(p: &mut Planner<'_>, kind: ConditionType, reason: Reason, message: String) {
    if let Some(c) = p
        .plan
        .conditions
        .iter_mut()
        .rev()
        .find(|c| c.kind == kind && c.status != ConditionStatus::True)
    {
        c.reason = reason;
        c.message = format!("{}; {message}", c.message);
    }
}
