//! The command line: exit codes, where output goes, errors for people.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn reconciler(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(args)
        .output()
        .expect("run");
    eprintln!(
        "$ reconciler {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn spec(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

const BROKEN: &str = "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {name: broken}
spec:
  barman: {server: montagu}
  baseBackup: {maxAge: 30 parsecs}
  retention: {keep: 3}
  recoveredVolume: {path: /srv/v, maxAge: 24h, replay: {postgresBin: /usr/lib/postgresql/15/bin}}
";

#[test]
fn validate_accepts_the_checked_in_specs() {
    // One set per host: the specs of annex, of science, and the quickstart's.
    for (args, name) in [
        (&["specs/annex"][..], "valid: montagu ("),
        (&["specs/science"][..], "valid: montagu-science ("),
        (
            &[
                "examples/local-pipeline.yaml",
                "examples/local-restore-target.yaml",
            ][..],
            "valid: quickstart-consumer (",
        ),
    ] {
        let mut argv = vec!["validate"];
        for path in args {
            argv.extend(["--specs", path]);
        }
        let out = reconciler(&argv);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains(name), "{args:?}");
    }
}

#[test]
fn validate_reports_file_line_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = spec(dir.path(), "broken.yaml", BROKEN);
    let out = reconciler(&["validate", "--specs", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{file}:6:24: `30 parsecs` is not a duration")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "problems go to stderr, not stdout");
}

#[test]
fn diff_with_a_broken_spec_is_an_error_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let file = spec(dir.path(), "broken.yaml", BROKEN);
    let out = reconciler(&["diff", "--specs", &file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&format!("{file}:6:24:")));
}

#[test]
fn diff_of_an_unknown_pipeline_name_is_an_error() {
    let out = reconciler(&["diff", "--specs", "specs/annex", "no-such-pipeline"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no pipeline named `no-such-pipeline`"));
}

#[test]
fn barman_that_cannot_answer_makes_conditions_unknown_and_exits_2() {
    common::ensure_installed();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("barman.conf");
    std::fs::write(
        &conf,
        format!(
            "[barman]\nbarman_user = barman\nbarman_home = {}\nlog_level = INFO\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let body = format!(
        "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: lost}}
spec:
  barman: {{server: nowhere, config: {}}}
  baseBackup: {{maxAge: 30d}}
  retention: {{keep: 3}}
  recoveredVolume: {{path: {}/vol, maxAge: 24h, replay: {{postgresBin: /usr/lib/postgresql/15/bin}}}}
",
        conf.display(),
        dir.path().display()
    );
    let file = spec(dir.path(), "lost.yaml", &body);
    let out = reconciler(&["diff", "--output", "json", "--specs", &file]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pipeline = &report["pipelines"][0];
    assert_eq!(
        common::condition(pipeline, "BaseBackupFresh")["status"],
        "Unknown"
    );
    assert_eq!(
        common::condition(pipeline, "BaseBackupFresh")["reason"],
        "BarmanUnavailable"
    );
    assert!(
        common::condition(pipeline, "BaseBackupFresh")["message"]
            .as_str()
            .unwrap()
            .contains("nowhere")
    );
    assert_eq!(
        pipeline["steps"],
        serde_json::json!([]),
        "nothing is done blind"
    );
    // The same in text, for people.
    let out = reconciler(&["diff", "--specs", &file]);
    assert!(
        text(&out.stdout).contains("[??] BaseBackupFresh"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn schema_prints_the_checked_in_schema() {
    for (args, file) in [
        (&["schema"][..], "schemas/backup-pipeline.schema.json"),
        (
            &["schema", "--kind", "RestoreTarget"][..],
            "schemas/restore-target.schema.json",
        ),
    ] {
        let out = reconciler(args);
        assert_eq!(out.status.code(), Some(0));
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let checked_in: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert_eq!(printed, checked_in, "{file}");
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let out = reconciler(&["diff", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("Exit 0 no drift, 1 drift, 2"), "{help}");
    assert!(help.contains("--at <RFC3339>"));
}
