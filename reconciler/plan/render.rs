//! The text form of a plan, as `reconciler diff` prints it. No I/O.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::{ConditionStatus, Plan};

/// Renders a plan for a human, headed by `noun` and its name (`pipeline montagu`,
/// `restore target science`). Colour-free, so it reads the same in a log file.
pub fn render_text<S: std::fmt::Display>(noun: &str, plan: &Plan<S>, now: Timestamp) -> String {
    let mut out = String::new();
    // What could not be observed is not drift: say so, rather than "waiting".
    let unknown = plan
        .condition(super::ConditionType::Ready)
        .is_some_and(|c| c.status == ConditionStatus::Unknown);
    let verdict = if plan.is_converged() {
        "in sync"
    } else if unknown && plan.steps.is_empty() {
        "unknown"
    } else if unknown {
        "drifted, partly unknown"
    } else if plan.steps.is_empty() {
        "drifted, waiting"
    } else {
        "drifted"
    };
    let _ = writeln!(out, "{noun} {}: {verdict}", plan.pipeline);
    for c in &plan.conditions {
        let mark = match c.status {
            ConditionStatus::True => "ok",
            ConditionStatus::False => "NO",
            ConditionStatus::Unknown => "??",
        };
        let _ = writeln!(
            out,
            "  [{mark}] {:<18} {:<7} {}: {}",
            c.label(),
            format!("{:?}", c.status),
            c.reason,
            c.message
        );
    }
    if !plan.steps.is_empty() {
        let _ = writeln!(out, "  steps:");
        for (i, s) in plan.steps.iter().enumerate() {
            let _ = writeln!(out, "    {}. {}", i + 1, s.step);
            let _ = writeln!(out, "       because {}", s.reason);
        }
    }
    for w in &plan.waiting_on {
        let _ = writeln!(out, "  waiting for {w}");
    }
    if let Some(d) = &plan.next_deadline {
        let _ = writeln!(
            out,
            "  next: {} at {} (in {})",
            d.what,
            d.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            super::human_age(now, d.at)
        );
    }
    out
}
