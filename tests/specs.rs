//! Spec loading: the checked-in specs and schema, and clear `file:line:col` errors
//! for broken ones.

use std::path::{Path, PathBuf};

use reconciler::spec::{backup_pipeline_schema, load_specs, restore_target_schema};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_schemas_match_the_types() {
    for (file, kind, schema) in [
        (
            "backup-pipeline.schema.json",
            "BackupPipeline",
            backup_pipeline_schema(),
        ),
        (
            "restore-target.schema.json",
            "RestoreTarget",
            restore_target_schema(),
        ),
    ] {
        let path = root().join("schemas").join(file);
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{} is stale: run `UPDATE_SCHEMAS=1 cargo test --test specs` (or `reconciler schema --kind {kind} > {}`) and commit it",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn every_checked_in_spec_and_example_is_valid() {
    // Every file on its own, then each set that one host loads together: a
    // host's specs directory, and the quickstart's two local examples. The Docker
    // examples mirror production, so with it they rightly clash on the volume.
    let mut files = Vec::new();
    for dir in ["specs/annex", "specs/science", "examples"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    for file in &files {
        let loaded = load_specs(std::slice::from_ref(file));
        assert!(
            loaded.problems.is_empty(),
            "{}: {:#?}",
            file.display(),
            loaded.problems
        );
        assert_eq!(loaded.resources.len(), 1, "{}", file.display());
    }
    for (set, expected) in [
        // The whole specs directory: one directory per host, each checked alone.
        (
            vec![root().join("specs")],
            vec!["montagu", "montagu-science"],
        ),
        (vec![root().join("specs/annex")], vec!["montagu"]),
        (vec![root().join("specs/science")], vec!["montagu-science"]),
        (
            vec![
                root().join("examples/local-pipeline.yaml"),
                root().join("examples/local-restore-target.yaml"),
            ],
            vec!["quickstart", "quickstart-consumer"],
        ),
    ] {
        let loaded = load_specs(&set);
        assert!(
            loaded.problems.is_empty(),
            "{set:?}: {:#?}",
            loaded.problems
        );
        let names: Vec<&str> = loaded
            .resources
            .iter()
            .map(|r| r.resource.name().as_str())
            .collect();
        assert_eq!(names, expected, "{set:?}");
    }
}

const VALID: &str = "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata:
  name: montagu
spec:
  barman:
    server: montagu
  baseBackup:
    maxAge: 30d
  retention:
    keep: 3
  recoveredVolume:
    path: /srv/nightly/montagu_db_volume
    maxAge: 24h
    replay:
      postgresBin: /usr/lib/postgresql/15/bin
";

const RESTORE: &str = "apiVersion: reconciler.montagu/v1alpha1
kind: RestoreTarget
metadata:
  name: science
spec:
  source:
    root: /srv/starport
    target: barman_to_starport
    volumeName: montagu_db_volume
  volume:
    dockerVolume: montagu_db_volume
  maxAge: 48h
  consumers:
    containers: [montagu-db]
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Loads `text` as a lone spec file and returns its single problem as `line:col: message`.
fn problem_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "p.yaml", text);
    let loaded = load_specs(std::slice::from_ref(&file));
    assert!(loaded.resources.is_empty(), "loaded: {text}");
    assert_eq!(loaded.problems.len(), 1, "{:#?}", loaded.problems);
    let shown = loaded.problems[0].to_string();
    let prefix = format!("{}:", file.display());
    assert!(shown.starts_with(&prefix), "{shown}");
    shown[prefix.len()..].to_string()
}

#[test]
fn valid_spec_loads() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_specs(&[write(dir.path(), "ok.yaml", VALID)]);
    assert!(loaded.problems.is_empty(), "{:#?}", loaded.problems);
    assert_eq!(loaded.resources.len(), 1);
}

#[test]
fn broken_specs_are_located_and_explained() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad yaml", VALID.replace("    keep: 3", "    keep: [3"), "12:"),
        ("unknown field", VALID.replace("    keep: 3", "    keep: 3\n    keepp: 4"), "12:5: unknown field `keepp`, expected one of keep, recoveryWindow, minimumRedundancy; did you mean `keep`?"),
        ("misspelt field", VALID.replace("maxAge: 30d", "maxAgee: 30d"), "9:5: unknown field `maxAgee`, expected one of maxAge, startWindow, timeout; did you mean `maxAge`?"),
        ("field in the wrong case", VALID.replace("postgresBin:", "postgresbin:"), "did you mean `postgresBin`?"),
        ("wrong type", VALID.replace("keep: 3", "keep: three"), "11:11: retention.keep must be a whole number from 1 to 4294967295 (got \"three\")"),
        ("negative keep", VALID.replace("keep: 3", "keep: -2"), "11:11: retention.keep must be a whole number from 1 to 4294967295 (got -2)"),
        ("fractional keep", VALID.replace("keep: 3", "keep: 2.5"), "11:11: retention.keep must be a whole number from 1 to 4294967295 (got 2.5)"),
        ("zero floor", VALID.replace("    keep: 3", "    keep: 3\n    minimumRedundancy: 0"), "12:24: retention.minimumRedundancy must be a whole number from 1 to 4294967295 (got 0)"),
        ("huge floor", VALID.replace("    keep: 3", "    keep: 3\n    minimumRedundancy: 99999999999"), "retention.minimumRedundancy must be a whole number from 1 to 4294967295 (got 99999999999)"),
        ("mirror port out of range", format!("{VALID}  starport:\n    root: /srv/starport\n    target: t\n    mirrors:\n    - {{name: off, ssh: {{host: a, user: u, identityFile: /k, port: 70000}}, root: /srv/m}}\n"), "21:67: ssh.port must be a whole number from 1 to 65535 (got 70000)"),
        ("bad duration", VALID.replace("maxAge: 30d", "maxAge: thirty days"), "9:13: `thirty days` is not a duration"),
        ("negative duration", VALID.replace("maxAge: 30d", "maxAge: -30d"), "9:13: duration `-30d` is negative"),
        ("absurd duration", VALID.replace("maxAge: 30d", "maxAge: 500y"), "longer than 10 years"),
        ("keep and window", VALID.replace("    keep: 3", "    keep: 3\n    recoveryWindow: 3 months"), "both `keep` and `recoveryWindow`"),
        ("neither keep nor window", VALID.replace("    keep: 3", "    minimumRedundancy: 1"), "needs `keep: N` or `recoveryWindow"),
        ("keep below floor", VALID.replace("    keep: 3", "    keep: 1\n    minimumRedundancy: 2"), "keep (1) is below minimumRedundancy (2)"),
        ("relative path", VALID.replace("path: /srv/nightly/montagu_db_volume", "path: nightly/vol"), "13:11: path `nightly/vol` is relative"),
        ("dotdot path", VALID.replace("path: /srv/nightly/montagu_db_volume", "path: /srv/../etc"), "contains `.` or `..`"),
        ("shell in name", VALID.replace("name: montagu", "name: \"x; rm -rf /\""), "4:9: pipeline name"),
        ("slash in server", VALID.replace("server: montagu", "server: a/b"), "7:13: name `a/b` may contain only"),
        ("option-like server", VALID.replace("server: montagu", "server: \"-rf\""), "7:13:"),
        ("missing field", VALID.replace("    maxAge: 24h\n", ""), "missing field `maxAge`"),
        ("wrong apiVersion", VALID.replace("reconciler.montagu/v1alpha1", "v1"), "1:13: unsupported apiVersion `v1`"),
        ("unknown kind", VALID.replace("kind: BackupPipeline", "kind: Backup"), "2:7: unknown kind `Backup`"),
        ("missing kind", VALID.replace("kind: BackupPipeline\n", ""), "1:1: document has no kind"),
        ("bad time of day", VALID.replace("maxAge: 30d", "maxAge: 30d\n    startWindow: {start: \"25:00\", end: \"06:00\"}"), "`25:00` is not a time of day"),
        ("bad time zone", VALID.replace("maxAge: 30d", "maxAge: 30d\n    startWindow: {start: \"00:00\", end: \"06:00\", timeZone: Mars/Base}"), "`Mars/Base` is not a known time zone"),
        ("zero keep", VALID.replace("keep: 3", "keep: 0"), "11:11: retention.keep must be a whole number from 1 to 4294967295 (got 0)"),
        ("alias bomb", format!("{VALID}x: &a [1,1,1,1,1,1,1,1,1,1]\ny: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nz: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nw: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\nv: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"), "expands too many aliases"),
        ("reserved replay setting", VALID.replace("postgresBin: /usr/lib/postgresql/15/bin", "postgresBin: /usr/lib/postgresql/15/bin\n      settings: {listen_addresses: '*'}"), "`listen_addresses` is set by the reconciler"),
        ("volume inside starport", format!("{VALID}  starport: {{root: /srv/nightly, target: t}}\n").replace("path: /srv/nightly/montagu_db_volume", "path: /srv/nightly/t/vol"), "overlap"),
        ("volume in /etc", VALID.replace("path: /srv/nightly/montagu_db_volume", "path: /etc/postgresql/data"), "inside the system directory /etc"),
        ("top-level volume", VALID.replace("path: /srv/nightly/montagu_db_volume", "path: /srv"), "`/srv` is a top-level directory"),
        ("starport in /proc", format!("{VALID}  starport: {{root: /proc/self, target: t}}\n"), "inside the system directory /proc"),
        ("space in target", format!("{VALID}  starport: {{root: /srv/starport, target: \"a b\"}}\n"), "name `a b` may contain only"),
        ("dotdot target", format!("{VALID}  starport: {{root: /srv/starport, target: \"..\"}}\n"), "name `..`"),
        ("shell metacharacter in path", VALID.replace("path: /srv/nightly/montagu_db_volume", "path: \"/srv/$(reboot)/v\""), "contains the character '$'"),
        ("unknown top-level field", format!("{VALID}status: {{}}\n"), "unknown field `status`"),
        ("spec is a list", VALID.replace("spec:\n  barman", "spec:\n- barman"), "6:3: expected mapping"),
        ("empty name", VALID.replace("name: montagu", "name: \"\""), "must not be empty"),
        ("name too long", VALID.replace("name: montagu", &format!("name: {}", "a".repeat(64))), "longer than 63"),
        ("duplicate key", VALID.replace("    keep: 3", "    keep: 3\n    keep: 4"), "duplicate"),
        ("path and docker volume", VALID.replace("    maxAge: 24h\n", "    maxAge: 24h\n    dockerVolume: montagu_db_volume\n"), "13:5: recoveredVolume sets both `path` and `dockerVolume`"),
        ("no volume at all", VALID.replace("    path: /srv/nightly/montagu_db_volume\n", ""), "13:5: recoveredVolume needs `path: /a/directory` or `dockerVolume: NAME`"),
        ("docker volume without barmanPath", VALID.replace("    server: montagu", "    server: montagu\n    container: barman-montagu").replace("    path: /srv/nightly/montagu_db_volume", "    dockerVolume: montagu_db_volume"), "barmanPath is required"),
        ("shell in container name", VALID.replace("    server: montagu", "    server: montagu\n    container: \"barman;reboot\""), "name `barman;reboot` may contain only"),
        ("bad image", VALID.replace("postgresBin: /usr/lib/postgresql/15/bin", "postgresBin: /usr/lib/postgresql/15/bin\n      container: {image: \"--privileged\"}"), "not a Docker image reference"),
        ("two mirrors, one name", format!("{VALID}  starport:\n    root: /srv/starport\n    target: t\n    mirrors:\n    - {{name: off, ssh: {{host: a, user: u, identityFile: /k}}, root: /srv/m}}\n    - {{name: off, ssh: {{host: b, user: u, identityFile: /k}}, root: /srv/m}}\n"), "18:5: two mirrors are named `off`"),
        ("mirror key with a space", format!("{VALID}  starport:\n    root: /srv/starport\n    target: t\n    mirrors:\n    - {{name: off, ssh: {{host: a, user: u, identityFile: /root/my key}}, root: /srv/m}}\n"), "contains whitespace"),
        ("mirror host with shell", format!("{VALID}  starport:\n    root: /srv/starport\n    target: t\n    mirrors:\n    - {{name: off, ssh: {{host: \"a;reboot\", user: u, identityFile: /k}}, root: /srv/m}}\n"), "name `a;reboot` may contain only"),
        ("bad env name", VALID.replace("postgresBin: /usr/lib/postgresql/15/bin", "postgresBin: /usr/lib/postgresql/15/bin\n      container: {image: vimc/montagu-db, env: {\"A=B\": c}}"), "not an environment variable name"),
    ];
    let mut failures = Vec::new();
    for (name, text, expected) in &cases {
        let got = problem_of(text);
        if !got.contains("\n  hint: ") {
            failures.push(format!("{name}: no hint in `{got}`"));
        }
        if std::env::var_os("SHOW_PROBLEMS").is_some() {
            eprintln!("{name}: {got}");
        }
        if !got.contains(expected) {
            failures.push(format!("{name}: expected `{expected}` in `{got}`"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn restore_targets_load_and_their_mistakes_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_specs(&[write(dir.path(), "ok.yaml", RESTORE)]);
    assert!(loaded.problems.is_empty(), "{:#?}", loaded.problems);
    assert_eq!(loaded.resources[0].resource.kind(), "RestoreTarget");

    let cases: Vec<(&str, String, &str)> = vec![
        ("both volumes", RESTORE.replace("    dockerVolume: montagu_db_volume", "    dockerVolume: montagu_db_volume\n    path: /srv/restore/db"), "11:5: volume sets both `path` and `dockerVolume`"),
        ("no volume", RESTORE.replace("    dockerVolume: montagu_db_volume\n", "    {}\n").replace("  volume:\n    {}", "  volume: {}"), "needs `path: /a/directory` or `dockerVolume: NAME`"),
        ("volume inside the local starport", RESTORE.replace("    dockerVolume: montagu_db_volume", "    path: /srv/starport/barman_to_starport/data/x"), "overlap"),
        ("consumer twice", RESTORE.replace("[montagu-db]", "[montagu-db, montagu-db]"), "14:5: container `montagu-db` is listed twice"),
        ("shell in consumer", RESTORE.replace("[montagu-db]", "[\"db;reboot\"]"), "name `db;reboot` may contain only"),
        ("ssh key with a space", RESTORE.replace("    volumeName: montagu_db_volume", "    volumeName: montagu_db_volume\n    ssh: {host: annex, user: u, identityFile: /root/my key}"), "7:5: `/root/my key` contains whitespace"),
        ("unknown field", RESTORE.replace("  maxAge: 48h", "  maxAge: 48h\n  stopForRestore: true"), "13:3: unknown field `stopForRestore`"),
        ("missing maxAge", RESTORE.replace("  maxAge: 48h\n", ""), "missing field `maxAge`"),
        ("relative source", RESTORE.replace("root: /srv/starport", "root: starport"), "7:11: path `starport` is relative"),
        ("negative ssh port", RESTORE.replace("    volumeName: montagu_db_volume", "    volumeName: montagu_db_volume\n    ssh: {host: annex, user: u, identityFile: /k, port: -1}"), "ssh.port must be a whole number from 1 to 65535 (got -1)"),
        ("misspelt consumers field", RESTORE.replace("containers:", "containrs:"), "14:5: unknown field `containrs`"),
    ];
    let mut failures = Vec::new();
    for (name, text, expected) in &cases {
        let got = problem_of(text);
        if !got.contains("\n  hint: ") {
            failures.push(format!("{name}: no hint in `{got}`"));
        }
        if !got.contains(expected) {
            failures.push(format!("{name}: expected `{expected}` in `{got}`"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_restore_target_and_a_pipeline_on_one_volume_are_both_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pipeline.yaml",
        &VALID.replace(
            "path: /srv/nightly/montagu_db_volume",
            "dockerVolume: montagu_db_volume",
        ),
    );
    write(dir.path(), "restore.yaml", RESTORE);
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    assert!(loaded.resources.is_empty(), "{:#?}", loaded.resources);
    assert_eq!(loaded.problems.len(), 1, "{:#?}", loaded.problems);
    assert!(
        loaded.problems[0]
            .message
            .contains("writes its volume.dockerVolume"),
        "{}",
        loaded.problems[0]
    );
}

#[test]
fn a_broken_document_stops_only_its_own_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let second = VALID
        .replace("name: montagu", "name: annex")
        .replace("keep: 3", "keep: nope");
    let third = VALID
        .replace("name: montagu", "name: science")
        .replace("montagu_db_volume", "science_db_volume");
    write(
        dir.path(),
        "a.yaml",
        &format!("{VALID}---\n{second}---\n{third}"),
    );
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    let names: Vec<&str> = loaded
        .resources
        .iter()
        .map(|p| p.resource.name().as_str())
        .collect();
    assert_eq!(names, vec!["montagu", "science"]);
    assert_eq!(loaded.problems.len(), 1);
    let problem = &loaded.problems[0];
    assert_eq!(problem.pipeline.as_deref(), Some("annex"));
    // Line numbers count from the top of the file, across documents.
    assert_eq!(problem.line, 17 + 11);
}

#[test]
fn pipelines_sharing_a_volume_are_both_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", VALID);
    write(
        dir.path(),
        "b.yaml",
        &VALID.replace("name: montagu", "name: annex"),
    );
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    assert!(loaded.resources.is_empty());
    assert!(
        loaded.problems[0]
            .message
            .contains("where pipeline `montagu`"),
        "{}",
        loaded.problems[0]
    );
}

#[test]
fn duplicate_names_across_files_are_both_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", VALID);
    write(dir.path(), "b.yml", VALID);
    write(dir.path(), "notes.txt", "not a spec");
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    assert!(loaded.resources.is_empty());
    assert_eq!(loaded.problems.len(), 1);
    assert!(
        loaded.problems[0]
            .message
            .contains("pipeline `montagu` has the name of the pipeline defined at"),
        "{}",
        loaded.problems[0]
    );

    // Names are unique across kinds too, and the message says which kind is which.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", VALID);
    write(
        dir.path(),
        "b.yaml",
        &RESTORE.replace("name: science", "name: montagu"),
    );
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    assert!(loaded.resources.is_empty());
    let problem = &loaded.problems[0];
    assert!(
        problem
            .message
            .starts_with("restore target `montagu` has the name of the pipeline defined at")
            && problem.message.contains("a.yaml:1"),
        "{problem}"
    );
}

#[test]
fn huge_and_missing_files_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let huge = write(dir.path(), "huge.yaml", &"# padding\n".repeat(200_000));
    let loaded = load_specs(&[huge, dir.path().join("absent.yaml")]);
    assert_eq!(loaded.problems.len(), 2);
    let messages: Vec<&str> = loaded.problems.iter().map(|p| p.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("more than the")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("cannot read spec path")),
        "{messages:?}"
    );
}

#[test]
fn a_directory_of_hosts_is_checked_host_by_host() {
    let dir = tempfile::tempdir().unwrap();
    let (h1, h2) = (dir.path().join("h1"), dir.path().join("h2"));
    std::fs::create_dir_all(&h1).unwrap();
    std::fs::create_dir_all(h2.join("nested")).unwrap();
    // Two documents for one volume on ONE host: both rejected.
    write(&h1, "a.yaml", VALID);
    write(
        &h1,
        "b.yaml",
        &VALID.replace("name: montagu", "name: annex"),
    );
    // Another host may use the same volume and name; its own set is fine, and
    // files below its directory belong to it.
    write(&h2.join("nested"), "c.yaml", VALID);
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    let names: Vec<&str> = loaded
        .resources
        .iter()
        .map(|r| r.resource.name().as_str())
        .collect();
    assert_eq!(names, vec!["montagu"], "{:#?}", loaded.problems);
    assert!(loaded.resources[0].file.starts_with(&h2));
    assert_eq!(loaded.problems.len(), 1, "{:#?}", loaded.problems);
    assert!(
        loaded.problems[0]
            .message
            .contains("where pipeline `montagu`")
            && loaded.problems[0].file.starts_with(&h1),
        "{}",
        loaded.problems[0]
    );
    assert_eq!(loaded.hosts, vec![h1.clone(), h2]);

    // A spec file beside the subdirectories makes it one host's directory again:
    // everything in it is one set, and the clash across subdirectories is caught.
    write(dir.path(), "top.yaml", RESTORE);
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    assert!(loaded.hosts.is_empty());
    assert!(
        loaded
            .problems
            .iter()
            .any(|p| p.message.contains("has the name of the pipeline")),
        "{:#?}",
        loaded.problems
    );
}

#[test]
fn a_symlink_loop_is_one_problem() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", VALID);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("sub/loop")).unwrap();
    let loaded = load_specs(&[dir.path().to_path_buf()]);
    assert_eq!(loaded.problems.len(), 1, "{:#?}", loaded.problems);
    let problem = &loaded.problems[0];
    assert!(
        problem.message.contains("symbolic link loop")
            && problem.file == dir.path().join("sub/loop"),
        "{problem}"
    );
    // The spec itself is read once, so it loads.
    assert_eq!(loaded.resources.len(), 1, "{:#?}", loaded.resources);
}

#[test]
fn no_suggestion_for_a_field_like_none_allowed() {
    let got = problem_of(&format!("{VALID}status: {{}}\n"));
    assert!(got.contains("unknown field `status`"), "{got}");
    assert!(!got.contains("did you mean"), "{got}");
    let got = problem_of(&RESTORE.replace("containers:", "containrs:"));
    assert!(got.contains("did you mean `containers`?"), "{got}");
}

#[test]
fn parser_problems_carry_a_snippet_with_file_lines() {
    // The second document of a file: the snippet counts lines from the top.
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "two.yaml",
        &format!("{RESTORE}---\n{}", VALID.replace("keep: 3", "keep: -2")),
    );
    let loaded = load_specs(std::slice::from_ref(&file));
    assert_eq!(loaded.problems.len(), 1, "{:#?}", loaded.problems);
    let problem = &loaded.problems[0];
    assert_eq!((problem.line, problem.column), (26, 11));
    let snippet = problem.snippet.as_deref().expect("a snippet");
    assert!(
        snippet
            .trim_start()
            .starts_with(&format!("--> {}:26:11", file.display())),
        "{snippet}"
    );
    assert!(snippet.contains("26 |     keep: -2"), "{snippet}");
    let caret = snippet
        .lines()
        .find(|l| l.contains('^'))
        .unwrap_or_else(|| panic!("{snippet}"));
    let keep_line = snippet.lines().find(|l| l.contains("keep: -2")).unwrap();
    assert_eq!(
        caret.find('^'),
        keep_line.find("-2"),
        "the caret is under the value:\n{snippet}"
    );
    // Not in JSON.
    let json = serde_json::to_value(problem).unwrap();
    assert!(json.get("snippet").is_none(), "{json}");
    // Problems found after parsing have none.
    let loaded = load_specs(&[write(
        dir.path(),
        "one.yaml",
        &VALID.replace(
            "    maxAge: 24h\n",
            "    maxAge: 24h\n    dockerVolume: montagu_db_volume\n",
        ),
    )]);
    assert_eq!(loaded.problems[0].snippet, None);
}
