//! `reconciler run` end to end, against real barman and PostgreSQL: convergence,
//! a spec edit picked up at once, status, metrics, health, the state-directory lock,
//! and SIGTERM during a replay.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestPipeline;
use serde_json::Value;

struct Running {
    child: Child,
    log: PathBuf,
    port: u16,
}

fn start_run(p: &TestPipeline, state: &Path, extra_env: &[(&str, &str)]) -> Running {
    start_run_on(&p.specs, state, extra_env, "10m")
}

fn start_run_on(specs: &Path, state: &Path, extra_env: &[(&str, &str)], resync: &str) -> Running {
    let port = common::free_port();
    let log = state.with_extension(format!("{port}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconciler"));
    cmd.arg("run")
        .arg("--specs")
        .arg(specs)
        .arg("--state-dir")
        .arg(state)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--resync",
            resync,
            "--shutdown-timeout",
            "2m",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Running {
        child: cmd.spawn().expect("start reconciler run"),
        log,
        port,
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Waits (bounded) until `ready` holds, polling.
    fn wait_for(&self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ready() {
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the run paused in its replay, with postgres up; returns its pid.
    fn wait_for_replay(&self, p: &TestPipeline) -> i32 {
        self.wait_for("the replay to start", Duration::from_secs(120), || {
            self.log().contains("paused at replay") && p.postmaster_pid().is_some()
        });
        p.postmaster_pid().expect("postgres runs on the volume")
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "run did not stop after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(state: &Path) -> Option<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["status", "--output", "json", "--state-dir"])
        .arg(state)
        .output()
        .ok()?;
    let all: Value = serde_json::from_slice(&out.stdout).ok()?;
    all.get(0).cloned()
}

fn ready(state: &Path) -> bool {
    status(state).is_some_and(|s| {
        s["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        }) && s["inProgress"].is_null()
    })
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn done_backups(p: &TestPipeline) -> usize {
    p.backups()
        .iter()
        .filter(|(_, status)| status == "DONE")
        .count()
}

#[test]
fn run_converges_reports_and_follows_spec_edits() {
    let p = TestPipeline::new("it_run", "{keep: 2}");
    let state = p.root.join("state");
    let mut run = start_run(&p, &state, &[]);
    run.wait_for("convergence", Duration::from_secs(180), || ready(&state));

    // Metrics: each age beside its maximum; health is fine.
    let (code, body) = run.get("/metrics");
    assert_eq!(code, 200);
    for name in [
        "reconciler_base_backup_age_seconds",
        "reconciler_volume_age_seconds",
        "reconciler_starport_age_seconds",
    ] {
        let age = metric(&body, name).unwrap_or_else(|| panic!("{name} missing:\n{body}"));
        let max = metric(&body, &name.replace("_age_seconds", "_max_age_seconds")).expect("max");
        assert!(age >= 0.0 && age < max, "{name}: {age} vs {max}");
    }
    assert_eq!(
        metric(&body, "reconciler_base_backup_max_age_seconds"),
        Some(30.0 * 86400.0)
    );
    assert!(
        body.contains(
            r#"reconciler_steps_total{pipeline="it-run",action="recoverVolume",outcome="done"} 1"#
        ),
        "{body}"
    );
    assert_eq!(run.get("/healthz").0, 200);

    // Converged and idle, the loop sleeps: no pass until something changes (reading
    // the specs must not count as changing them).
    let last_pass = |run: &Running| {
        metric(
            &run.get("/metrics").1,
            "reconciler_last_pass_timestamp_seconds",
        )
    };
    let before = last_pass(&run);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(last_pass(&run), before, "an idle loop keeps running passes");

    // A second instance on the same state directory refuses to start.
    let second = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .arg("run")
        .arg("--specs")
        .arg(&p.specs)
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another reconciler"),
        "{second:?}"
    );

    // Edit the spec: the base backup may now be only 3 seconds old. The loop notices
    // the file, starts a pass, takes a new backup and converges again.
    let recorded = status(&state).unwrap();
    assert_eq!(recorded["kind"], "BackupPipeline", "{recorded:#}");
    let table = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["status", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", recorded["pipeline"].as_str().unwrap())))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row.get(1..3),
        Some(&["BackupPipeline", "True"][..]),
        "status prints a row per document:\n{table}"
    );
    let generation = recorded["generation"].as_u64().unwrap();
    let backups_before = done_backups(&p);
    std::thread::sleep(Duration::from_secs(3));
    let edited = Instant::now();
    p.write_spec("{keep: 2}", "3s");
    run.wait_for(
        "the pass that reads the edit",
        Duration::from_secs(30),
        || status(&state).is_some_and(|s| s["generation"].as_u64() == Some(generation + 1)),
    );
    eprintln!("spec edit to recorded pass: {:?}", edited.elapsed());
    assert!(run.log().contains("spec changed"), "{}", run.log());
    run.wait_for("a new backup", Duration::from_secs(120), || {
        done_backups(&p) > backups_before
    });
    let (_, body) = run.get("/metrics");
    assert_eq!(
        metric(&body, "reconciler_base_backup_max_age_seconds"),
        Some(3.0)
    );
    let s = status(&state).unwrap();
    assert!(
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["observedGeneration"] == generation + 1),
        "{s:#}"
    );

    // Back to a sane spec, so that no backup runs when the loop stops.
    p.write_spec("{keep: 2}", "30d");
    run.wait_for(
        "convergence on the restored spec",
        Duration::from_secs(120),
        || {
            status(&state).is_some_and(|s| s["generation"].as_u64() == Some(generation + 2))
                && ready(&state)
        },
    );
    assert!(run.terminate().success());
}

#[test]
fn sigterm_during_replay_stops_postgres_and_leaves_the_marker_invalid() {
    let p = TestPipeline::new("it_sigterm", "{keep: 2}");
    p.take_backup();
    let state = p.root.join("state");
    let mut run = start_run(&p, &state, &[("RECONCILER_PAUSE_AT", "replay")]);
    let pid_file = p.volume.join("postmaster.pid");
    let postmaster = run.wait_for_replay(&p);

    let status = run.terminate();
    assert!(status.success(), "exit {status:?}:\n{}", run.log());
    assert!(
        run.log().contains("replay interrupted by shutdown"),
        "{}",
        run.log()
    );
    // Postgres stopped cleanly and nothing claims the volume is good.
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(postmaster), None).is_err(),
        "postgres {postmaster} still runs"
    );
    assert!(!pid_file.exists());
    assert!(
        p.marker().is_none(),
        "marker written for an interrupted replay"
    );
    assert!(!p.volume.join(".barman-last-restore").exists());
}

#[test]
fn a_replay_left_running_by_a_killed_reconciler_is_stopped_and_redone() {
    let p = TestPipeline::new("it_sigkill", "{keep: 2}");
    p.take_backup();
    let state = p.root.join("state");
    let mut run = start_run(&p, &state, &[("RECONCILER_PAUSE_AT", "replay")]);
    let pid_file = p.volume.join("postmaster.pid");
    let postmaster = run.wait_for_replay(&p);
    // SIGKILL: no chance to clean up. The replay postgres survives its parent.
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let stray = postmaster;
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(stray), None).is_ok(),
        "the replay should have outlived the reconciler"
    );
    assert!(p.marker().is_none());

    let (code, report) = p.diff_json(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        common::actions(&common::first(&report)["steps"]),
        vec!["stopStrayReplay", "recoverVolume", "syncStarport"]
    );
    let (code, report) = p.apply_json();
    assert_eq!(code, 0, "{report:#}");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(stray), None).is_err(),
        "stray replay {stray} still runs"
    );
    assert!(p.marker().is_some());
    assert!(!pid_file.exists(), "a postgres still runs on the volume");
}

#[test]
fn healthz_fails_when_the_loop_stalls() {
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs");
    std::fs::create_dir(&specs).unwrap();
    std::fs::write(
        specs.join("p.yaml"),
        "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {name: stalled}
spec:
  barman: {server: stalled}
  baseBackup: {maxAge: 30d}
  retention: {keep: 3}
  recoveredVolume: {path: /nonexistent/stalled/vol, maxAge: 24h, replay: {postgresBin: /usr/lib/postgresql/15/bin}}
",
    )
    .unwrap();
    let port = common::free_port();
    let log = dir.path().join("run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .arg("run")
        .arg("--specs")
        .arg(&specs)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--stall-after",
            "2s",
        ])
        // The loop hangs in its first observation, as it would on a barman that never answers.
        .env("RECONCILER_PAUSE_AT", "observe")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut run = Running { child, log, port };
    run.wait_for("the loop to hang", Duration::from_secs(30), || {
        run.log().contains("paused at observe")
    });
    run.wait_for("/healthz to fail", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok() && run.get("/healthz").0 == 503
    });
    assert!(run.get("/healthz").1.contains("stalled"));
    assert!(run.terminate().success());
}

/// A primary whose clock runs 40 days behind: every backup "ends" 40 days before
/// barman started it. One backup is taken, not one per pass; the condition, the
/// metric and the log say which clocks disagree.
#[test]
fn a_primary_whose_clock_lies_gets_one_backup_and_a_clock_skew_report() {
    let primary = common::faked_primary("-40d");
    let p = TestPipeline::on(primary, "it_skew", "{keep: 2}");

    let (code, report) = p.apply_json();
    assert_eq!(code, 2, "retention cannot be judged by ages: {report:#}");
    assert_eq!(done_backups(&p), 1, "{:?}", p.backups());
    let fresh = common::condition(&report["pipelines"][0]["finalPlan"], "BaseBackupFresh");
    assert_eq!(fresh["reason"], "ClockSkew", "{report:#}");
    assert!(
        fresh["message"]
            .as_str()
            .unwrap()
            .contains("the primary's clock is 40d"),
        "{fresh}"
    );

    // A second apply, with no memory of the first, takes none either.
    let (code, _) = p.apply_json();
    assert_eq!(code, 2);
    assert_eq!(done_backups(&p), 1, "{:?}", p.backups());

    // run: the condition reason is a metric an alert can fire on, and no pass
    // takes another backup.
    let state = p.root.join("state");
    let mut run = start_run(&p, &state, &[]);
    let series = r#"reconciler_condition_reason{pipeline="it-skew",type="BaseBackupFresh",subject="",reason="ClockSkew"} 1"#;
    run.wait_for("the ClockSkew series", Duration::from_secs(60), || {
        TcpStream::connect(("127.0.0.1", run.port)).is_ok()
            && run.get("/metrics").1.contains(series)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(done_backups(&p), 1, "{:?}", p.backups());
    assert!(
        run.log().contains("condition changed") && run.log().contains("ClockSkew"),
        "one line per transition:\n{}",
        run.log()
    );
    assert!(run.terminate().success());
}

/// An empty spec directory is not a quiet success: /healthz fails and says why.
#[test]
fn run_with_no_specs_fails_its_health_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::write(specs.join("pipeline.yaml.bak"), "not a spec").unwrap();
    let state = dir.path().join("state");
    let mut run = start_run_on(&specs, &state, &[], "10m");

    run.wait_for("/healthz to answer", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", run.port)).is_ok() && run.get("/healthz").0 == 503
    });
    let (_, body) = run.get("/healthz");
    assert!(body.contains("no specs found under"), "{body}");
    assert_eq!(
        metric(&run.get("/metrics").1, "reconciler_documents"),
        Some(0.0)
    );
    assert!(run.log().contains("no specs found under"), "{}", run.log());
    assert!(run.terminate().success());
}

/// A wait that outlasts `stalledAfter` makes the pipeline `Stalled`: in status,
/// in metrics, and in the log.
#[test]
fn a_wait_longer_than_stalled_after_is_reported_stalled() {
    let p = TestPipeline::new("it_stalled", "{keep: 2}");
    // barman cannot be reached: the plan waits for it, for ever.
    p.edit_spec(
        &format!("config: {}", p.barman_conf.display()),
        "config: /nonexistent/barman.conf",
    );
    let spec = p.specs.join("pipeline.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        text.replace("spec:\n", "spec:\n  stalledAfter: 2s\n"),
    )
    .unwrap();
    let state = p.root.join("state");
    let mut run = start_run_on(&p.specs, &state, &[], "1s");

    run.wait_for("Stalled in status", Duration::from_secs(60), || {
        status(&state).is_some_and(|s| {
            s["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Stalled" && c["status"] == "True")
            })
        })
    });
    let s = status(&state).unwrap();
    let stalled = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Stalled")
        .unwrap()
        .clone();
    assert_eq!(stalled["reason"], "WaitingTooLong", "{s:#}");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("barman to answer"),
        "{stalled}"
    );
    assert_eq!(
        metric(&run.get("/metrics").1, "reconciler_stalled"),
        Some(1.0)
    );
    let table = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["status", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("Stalled"), "status shows it:\n{table}");
    assert!(
        run.log().contains("condition changed") && run.log().contains("Stalled"),
        "{}",
        run.log()
    );
    assert!(run.terminate().success());
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY once serving, the
/// watchdog fed while the loop passes, STOPPING on SIGTERM. A real datagram
/// socket stands for systemd's.
#[test]
fn run_speaks_systemds_notify_protocol() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let specs = dir.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let socket_env = socket_path.display().to_string();
    let mut run = start_run_on(
        &specs,
        &dir.path().join("state"),
        &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "400000")],
        "10m",
    );
    let mut received = Vec::new();
    let next = |received: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        received.push(text.clone());
        text
    };
    let ready = loop {
        let text = next(&mut received);
        if text.contains("READY=1") {
            break text;
        }
    };
    assert!(
        TcpStream::connect(("127.0.0.1", run.port)).is_ok(),
        "READY only once /metrics answers"
    );
    assert!(ready.contains("STATUS=no specs found under"), "{ready}");
    let mut watchdogs = 0;
    while watchdogs < 2 {
        if next(&mut received).contains("WATCHDOG=1") {
            watchdogs += 1;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    while !next(&mut received).contains("STOPPING=1") {}
    assert!(run.terminate().success(), "{received:?}");
}
