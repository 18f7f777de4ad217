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
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error: no pipeline named `no-such-pipeline` under specs/annex (known: montagu)\n"
        ),
        "{stderr}"
    );
    // The same for apply, which then does nothing at all.
    let out = reconciler(&["apply", "--specs", "specs/annex", "no-such-pipeline"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("no pipeline named `no-such-pipeline` under specs/annex (known: montagu)"),
        "{}",
        text(&out.stderr)
    );
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
fn apply_dry_run_prints_what_diff_prints_in_json_too_and_changes_nothing() {
    common::ensure_installed();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: lost}}
spec:
  barman: {{server: nowhere, config: {}/no-such-barman.conf}}
  baseBackup: {{maxAge: 30d}}
  retention: {{keep: 3}}
  recoveredVolume: {{path: {}/vol, maxAge: 24h, replay: {{postgresBin: /usr/lib/postgresql/15/bin}}}}
",
        dir.path().display(),
        dir.path().display()
    );
    let file = spec(dir.path(), "lost.yaml", &body);
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();

    let out = reconciler(&["apply", "--dry-run", "--output", "json", "--specs", &file]);

    assert_eq!(out.status.code(), Some(2));
    let mut report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kind"], "DiffReport");
    let pipeline = &report["pipelines"][0];
    for kind in ["BaseBackupFresh", "RetentionSatisfied", "Ready"] {
        assert_eq!(
            common::condition(pipeline, kind)["status"],
            "Unknown",
            "{kind}"
        );
    }
    assert_eq!(pipeline["steps"], serde_json::json!([]));
    assert_eq!(listing(), before, "a dry run creates nothing");

    // The very report `diff` gives, but for the instant it was made.
    let diff = reconciler(&["diff", "--output", "json", "--specs", &file]);
    assert_eq!(diff.status.code(), out.status.code());
    let mut expected: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    report["at"] = serde_json::Value::Null;
    expected["at"] = serde_json::Value::Null;
    assert_eq!(report, expected);
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

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_reconciler()"),
        ("zsh", "#compdef reconciler"),
        ("fish", "complete -c reconciler"),
    ] {
        let out = reconciler(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["validate", "max-parallel", "log-level"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let out = reconciler(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is refused");
}

/// `docs/man` holds the pages `reconciler man --dir` writes; they must match the
/// command line. `UPDATE_MAN=1 cargo test --test cli man_pages` rewrites them.
#[test]
fn man_pages_are_current() {
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let dir = tempfile::tempdir().unwrap();
    let out = reconciler(&["man", "--dir", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(0));
    let pages = |dir: &Path| -> Vec<(String, String)> {
        let mut pages: Vec<_> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "1"))
                    .map(|p| {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        (name, std::fs::read_to_string(&p).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        pages.sort();
        pages
    };
    let generated = pages(dir.path());
    assert!(
        generated
            .iter()
            .any(|(name, _)| name == "reconciler-diff.1"),
        "{generated:?}"
    );
    if std::env::var_os("UPDATE_MAN").is_some() {
        let _ = std::fs::remove_dir_all(&checked_in);
        std::fs::create_dir_all(&checked_in).unwrap();
        for (name, page) in &generated {
            std::fs::write(checked_in.join(name), page).unwrap();
        }
    }
    assert!(
        pages(&checked_in) == generated,
        "docs/man is stale: run `UPDATE_MAN=1 cargo test --test cli man_pages` and commit it"
    );
    // Without --dir, the main page goes to stdout.
    let out = reconciler(&["man"]);
    let main = &generated
        .iter()
        .find(|(n, _)| n == "reconciler.1")
        .unwrap()
        .1;
    assert_eq!(&text(&out.stdout), main);
    assert!(main.contains(".SH SUBCOMMANDS") && main.contains("completions"));
}

#[test]
fn version_names_the_commit() {
    let out = reconciler(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let version = text(&out.stdout);
    let commit = version
        .trim()
        .strip_prefix(concat!(
            "reconciler ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version}"
    );
    // In a git checkout, it is the checkout's commit.
    if let Ok(head) = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        && head.status.success()
    {
        assert_eq!(commit, text(&head.stdout).trim(), "{version}");
    }
}

#[test]
fn log_level_accepts_only_real_levels() {
    let out = reconciler(&[
        "--log-level",
        "verbose",
        "validate",
        "--specs",
        "specs/annex",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid value 'verbose' for '--log-level <LEVEL>'")
            && stderr.contains("error, warn, info, debug, trace"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["validate", "--specs", "specs/annex"])
        .env("RECONCILER_LOG", "loud")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the variable is checked too");
    for level in ["error", "warn", "info", "debug", "trace"] {
        let out = reconciler(&["--log-level", level, "validate", "--specs", "specs/annex"]);
        assert_eq!(out.status.code(), Some(0), "{level}");
    }
}

fn parse(args: &[&str]) -> Result<reconciler::cli::Cli, String> {
    use clap::Parser;
    reconciler::cli::Cli::try_parse_from(std::iter::once("reconciler").chain(args.iter().copied()))
        .map_err(|e| e.to_string())
}

fn run_args(args: &[&str]) -> Result<reconciler::cli::RunArgs, String> {
    let mut argv = vec!["run"];
    argv.extend(args);
    match parse(&argv)?.command {
        reconciler::cli::Command::Run(run) => Ok(run),
        other => panic!("{other:?}"),
    }
}

#[test]
fn max_parallel_must_be_at_least_one() {
    let error = run_args(&["--max-parallel", "0"]).unwrap_err();
    assert!(
        error.contains("'--max-parallel <N>': must be at least 1"),
        "{error}"
    );
    let error = run_args(&["--max-parallel=-1"]).unwrap_err();
    assert!(error.contains("--max-parallel"), "{error}");
    assert_eq!(run_args(&["--max-parallel", "3"]).unwrap().max_parallel, 3);
    // And the binary exits 2 at once, without starting.
    let out = reconciler(&["run", "--max-parallel", "0", "--specs", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn listen_takes_host_names_and_addresses() {
    let listen = run_args(&["--listen", "localhost:9000"]).unwrap().listen;
    assert!(listen.ip().is_loopback(), "{listen}");
    assert_eq!(listen.port(), 9000);
    let listen = run_args(&["--listen", "0.0.0.0:9187"]).unwrap().listen;
    assert_eq!(listen.to_string(), "0.0.0.0:9187");
    let listen = run_args(&["--listen", "[::1]:9187"]).unwrap().listen;
    assert_eq!(listen.to_string(), "[::1]:9187");
    for (bad, says) in [
        ("localhost", "has no port"),
        ("localhost:http", "not HOST:PORT"),
        ("localhost:70000", "not HOST:PORT"),
        (
            "no-such-host.invalid:9000",
            "cannot resolve host `no-such-host.invalid`",
        ),
    ] {
        let error = run_args(&["--listen", bad]).unwrap_err();
        assert!(error.contains(says), "{bad}: {error}");
    }
}

#[test]
fn at_takes_a_date_alone_as_its_midnight_utc() {
    let at = |value: &str| match parse(&["diff", "--at", value]).map(|cli| cli.command) {
        Ok(reconciler::cli::Command::Diff(diff)) => Ok(diff.at.unwrap().to_string()),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    assert_eq!(at("2026-12-05").unwrap(), "2026-12-05T00:00:00Z");
    assert_eq!(at("2026-11-27T17:00:00Z").unwrap(), "2026-11-27T17:00:00Z");
    assert_eq!(
        at("2026-11-27T17:00:00+01:00").unwrap(),
        "2026-11-27T16:00:00Z"
    );
    for bad in ["2026-13-01", "2026-11-27T17:00:00", "friday"] {
        let error = at(bad).unwrap_err();
        assert!(error.contains("nor a date"), "{bad}: {error}");
    }
}

#[test]
fn validate_from_the_repository_root_checks_each_host_on_its_own() {
    // The default --specs is ./specs: one directory per host.
    for argv in [&["validate"][..], &["validate", "--specs", "specs"][..]] {
        let out = reconciler(argv);
        assert_eq!(out.status.code(), Some(0), "{argv:?}");
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("valid: montagu (") && stdout.contains("valid: montagu-science ("),
            "{stdout}"
        );
    }
    // diff, apply and run act on one host: they refuse to mix hosts.
    for argv in [
        &["diff", "--specs", "specs"][..],
        &["apply", "--specs", "specs"][..],
        &["run", "--specs", "specs", "--state-dir", "Cargo.toml/state"][..],
    ] {
        let out = reconciler(argv);
        assert_eq!(out.status.code(), Some(2), "{argv:?}");
        assert!(
            text(&out.stderr).contains(
                "one directory per host (specs/annex, specs/science); pass this host's with --specs, e.g. --specs specs/annex"
            ),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn validate_shows_the_yaml_around_a_problem_but_json_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = spec(
        dir.path(),
        "typo.yaml",
        &BROKEN
            .replace("30 parsecs", "30d")
            .replace("{keep: 3}", "{keep: 3, minimumRedundancy: -1}"),
    );
    let out = reconciler(&["validate", "--specs", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{file}:7:43: retention.minimumRedundancy must be a whole number from 1 to 4294967295 (got -1)\n  hint: "
        )),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("--> {file}:7:43")), "{stderr}");
    assert!(
        stderr.contains("7 |   retention: {keep: 3, minimumRedundancy: -1}"),
        "{stderr}"
    );
    assert!(stderr.contains("^"), "{stderr}");
    // JSON output carries the problem, without the snippet.
    let out = reconciler(&["diff", "--output", "json", "--specs", &file]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problem = &report["problems"][0];
    assert_eq!(problem["line"], 7);
    assert!(problem.get("snippet").is_none(), "{problem}");
    assert!(!text(&out.stdout).contains(" | "), "{}", text(&out.stdout));
}
