//! The shipped alert rules against a real Prometheus (Debian's `prometheus`, run on
//! loopback with its own config and storage in a temporary directory) scraping a
//! real `reconciler run` over a real barman pipeline: silent while the pipeline is
//! converged, `BaseBackupStale` firing once its newest backup is older than
//! `baseBackup.maxAge` and a closed start window keeps a new one from being taken.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestPipeline;
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A process this test started, stopped by its PID when the guard drops (also when
/// an assertion failed): SIGTERM, then SIGKILL if it has not exited within 30 s.
struct Guard {
    child: Child,
    what: &'static str,
    log: std::path::PathBuf,
}

impl Guard {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop after SIGTERM; killing it", self.what);
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` over HTTP/1.0 (no chunked encoding): status code and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `probe` every 250 ms until it returns `Some`, at most `limit`.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    context: impl Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_run(p: &TestPipeline, state: &Path) -> (Guard, u16) {
    let port = common::free_port();
    let log = p.root.join("monitoring-run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .arg("run")
        .arg("--specs")
        .arg(&p.specs)
        .arg("--state-dir")
        .arg(state)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--resync",
            "10m",
            "--shutdown-timeout",
            "2m",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start reconciler run");
    (
        Guard {
            child,
            what: "reconciler run",
            log,
        },
        port,
    )
}

/// The shipped rules with every `for:` set to 0s: the rules' own durations are
/// minutes to hours, too long for a test; `promtool test rules` covers them
/// (examples/monitoring/alerts.test.yaml). Expressions, labels and annotations
/// stay as shipped.
fn rules_without_for() -> String {
    let shipped =
        std::fs::read_to_string(common::repo().join("examples/monitoring/alerts.yaml")).unwrap();
    let mut rewritten = 0;
    let text: Vec<String> = shipped
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for:") {
            Some(_) => {
                rewritten += 1;
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}for: 0s")
            }
            None => line.to_string(),
        })
        .collect();
    assert!(rewritten > 10, "the shipped rules have `for:` durations");
    text.join("\n") + "\n"
}

fn start_prometheus(dir: &Path, target_port: u16) -> (Guard, u16) {
    std::fs::write(dir.join("alerts.yaml"), rules_without_for()).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: reconciler
    static_configs:
      - targets: ['127.0.0.1:{target_port}']
"
        ),
    )
    .unwrap();
    let port = common::free_port();
    let log = dir.join("prometheus.log");
    let child = Command::new(PROMETHEUS)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start prometheus (scripts/testenv install puts it in)");
    (
        Guard {
            child,
            what: "prometheus",
            log,
        },
        port,
    )
}

/// Prometheus' current alerts (pending or firing).
fn alerts(prometheus: u16) -> Option<Vec<Value>> {
    let (code, body) = get(prometheus, "/api/v1/alerts")?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["alerts"].as_array().cloned()
}

/// The samples of an instant query.
fn query(prometheus: u16, promql: &str) -> Option<Vec<Value>> {
    let (code, body) = get(
        prometheus,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    )?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].as_array().cloned()
}

fn ready(p: &TestPipeline, state: &Path) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(["status", "--output", "json", "--state-dir"])
        .arg(state)
        .output();
    let Ok(out) = out else { return false };
    let Ok(all) = serde_json::from_slice::<Value>(&out.stdout) else {
        return false;
    };
    let name = p.name.replace('_', "-");
    all.as_array().into_iter().flatten().any(|s| {
        s["pipeline"] == name.as_str()
            && s["inProgress"].is_null()
            && s["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
}

#[test]
fn a_real_prometheus_fires_base_backup_stale_and_nothing_while_converged() {
    let p = TestPipeline::new("it_monitoring", "{keep: 2}");
    let pipeline = p.name.replace('_', "-");
    let state = p.root.join("state");
    // Dropped last: after both processes below are stopped.
    let prom_dir = tempfile::Builder::new()
        .prefix("it-prometheus-")
        .tempdir()
        .unwrap();

    let (mut run, run_port) = start_run(&p, &state);
    wait_for(
        "the pipeline to converge",
        Duration::from_secs(240),
        || run.log(),
        || ready(&p, &state).then_some(()),
    );

    let (mut prometheus, prom_port) = start_prometheus(prom_dir.path(), run_port);
    let context = || format!("prometheus log:\n{}", prometheus.log());
    wait_for(
        "prometheus to be ready",
        Duration::from_secs(60),
        context,
        || get(prom_port, "/-/ready").filter(|(code, _)| *code == 200),
    );
    // Converged: once Prometheus holds the pipeline's timestamps, the shipped rules
    // (with `for: 0s`, so anything true would fire at once) stay silent.
    let promql = format!(
        r#"reconciler_last_backup_end_timestamp_seconds{{job="reconciler",pipeline="{pipeline}"}}"#
    );
    wait_for(
        "the reconciler's timestamps in Prometheus",
        Duration::from_secs(60),
        context,
        || query(prom_port, &promql).filter(|r| !r.is_empty()),
    );
    let quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(6) {
        let current = wait_for("the alerts API", Duration::from_secs(30), context, || {
            alerts(prom_port)
        });
        assert!(
            current.is_empty(),
            "alerts on a converged pipeline: {current:#?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let rules = get(prom_port, "/api/v1/rules").expect("rules API").1;
    assert!(
        rules.contains("BaseBackupStale") && rules.contains(r#""health":"ok""#),
        "the rules are loaded and evaluate: {rules}"
    );

    // Stale: the backup may now be 3 s old, and the start window (12 hours from
    // now, UTC) keeps a new one from being taken for the rest of the test.
    let hour = (jiff::Timestamp::now().as_second().rem_euclid(86_400) / 3600 + 12) % 24;
    p.edit_spec(
        "    maxAge: 30d\n",
        &format!(
            "    maxAge: 3s\n    startWindow: {{start: \"{hour:02}:00\", end: \"{hour:02}:30\", timeZone: UTC}}\n"
        ),
    );
    let fired = wait_for(
        "BaseBackupStale to fire",
        Duration::from_secs(90),
        || format!("{}\nreconciler log:\n{}", context(), run.log()),
        || {
            alerts(prom_port)?.into_iter().find(|a| {
                a["labels"]["alertname"] == "BaseBackupStale"
                    && a["labels"]["pipeline"] == pipeline.as_str()
                    && a["state"] == "firing"
            })
        },
    );
    assert_eq!(fired["labels"]["severity"], "critical", "{fired:#}");
    assert_eq!(
        fired["annotations"]["first_command"],
        format!("reconciler diff {pipeline}").as_str(),
        "{fired:#}"
    );
    assert_eq!(p.backups().len(), 1, "no new backup was taken");

    // Stopped by PID; the guards would do it too on a failed assertion.
    let status = prometheus.stop();
    assert!(status.is_some(), "prometheus stopped");
    let status = run.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "reconciler run exited: {status:?}\n{}",
        run.log()
    );
}
