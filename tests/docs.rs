//! The docs keep up with the code: every flag `--help` shows, every condition
//! reason the planner can give, every shipped alert has its runbook entry, and
//! every relative link resolves.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, CONTRIBUTING.md and every file under docs/, as (path, text).
fn docs() -> Vec<(PathBuf, String)> {
    let mut files = vec![repo().join("README.md"), repo().join("CONTRIBUTING.md")];
    let mut under: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    under.sort();
    files.extend(under);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run reconciler --help");
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `reconciler --help` lists.
fn subcommands() -> Vec<String> {
    let top = help(&[]);
    let listed = top
        .split("Commands:")
        .nth(1)
        .expect("a Commands: section")
        .split("Options:")
        .next()
        .unwrap()
        .to_string();
    listed
        .lines()
        // A name is indented by two; wrapped descriptions by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help" && w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(String::from)
        .collect()
}

fn flags_in(text: &str) -> Vec<String> {
    let mut flags: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2 && w.as_bytes()[2].is_ascii_lowercase())
        .map(|w| w.trim_end_matches('-').to_string())
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

#[test]
fn every_flag_in_help_is_documented() {
    let all: String = docs().into_iter().map(|(_, t)| t).collect();
    let commands = subcommands();
    assert!(commands.len() >= 5, "{commands:?}");
    let mut missing = Vec::new();
    for command in std::iter::once(String::new()).chain(commands) {
        let args: Vec<&str> = if command.is_empty() {
            vec![]
        } else {
            vec![&command]
        };
        for flag in flags_in(&help(&args)) {
            if ["--help", "--version"].contains(&flag.as_str()) {
                continue;
            }
            if !all.contains(&flag) {
                missing.push(format!("reconciler {command} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags not in README.md or docs/: {missing:?}"
    );
}

/// Every word the planner can put in a condition's `reason`: the variants of
/// `Reason` (a reason is one word, stable for alerting).
fn reasons_in_code() -> Vec<String> {
    let mut reasons: Vec<String> = reconciler::plan::Reason::ALL
        .iter()
        .map(ToString::to_string)
        .collect();
    reasons.sort();
    reasons.dedup();
    reasons
}

#[test]
fn every_condition_reason_is_explained_in_outputs_md() {
    let outputs = std::fs::read_to_string(repo().join("docs/outputs.md")).unwrap();
    let reasons = reasons_in_code();
    assert!(reasons.len() > 30, "{reasons:?}");
    let missing: Vec<&String> = reasons
        .iter()
        .filter(|r| !outputs.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "reasons not in docs/outputs.md: {missing:?}"
    );
}

#[test]
fn every_shipped_alert_has_a_runbook_entry() {
    let rules = std::fs::read_to_string(repo().join("examples/monitoring/alerts.yaml")).unwrap();
    let runbook = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() > 10, "{alerts:?}");
    let missing: Vec<&&str> = alerts
        .iter()
        .filter(|a| !runbook.contains(&format!("\n### {a}\n")))
        .collect();
    assert!(
        missing.is_empty(),
        "alerts without a runbook entry: {missing:?}"
    );
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    for (path, text) in docs() {
        let base = path.parent().unwrap_or(Path::new("."));
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") {
                continue;
            }
            if !base.join(target).exists() {
                broken.push(format!("{}: {target}", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:?}");
}
