//! Which live processes write into a pipeline's volume or starport, and stopping
//! one that a killed reconciler left behind.
//!
//! A reconciler's direct children die with it (see [`super::command`]), but what
//! they fork does not: barman's rsync, a wrapper's rsync, a `barman recover` run by
//! `docker exec` (the exec'd process belongs to the container, not to us). Every
//! command the reconciler runs carries [`RUN_ENV`] in its environment, naming the
//! reconciler's pid and start time; what those commands fork inherits it. The scan
//! reads `/proc/*/cmdline`, `stat` and `environ` where the processes live: on this
//! host for the volume and the starport, and inside barman's container (through
//! barman's own `python3`, paths as argv) when barman runs there, since a
//! container's pids and paths are its own. Whether the mark's reconciler still
//! runs is looked up on this host, where reconcilers run.
//!
//! This module reports and, when asked, signals; it never decides what to stop.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::command::{CommandError, CommandLine, CommandRunner};
use super::placement::{Placement, Placer};
use super::volume::STAGING_DIR;
use crate::observed::{StartedBy, WriteArea, WritingProcess};

/// The environment entry every command the reconciler runs carries:
/// `<pid>:<start ticks>` of the reconciler that started it.
pub const RUN_ENV: &str = "RECONCILER_RUN";

/// How long one scan may take (a `docker exec` of python3 included).
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// The scan, run by `python3` with `AREA PATH` pairs as arguments: one JSON list
/// of the processes whose argv names a path under one of them as where they write.
/// rsync writes to its last argument (unless it is a `--sender`), `barman recover`
/// to the destination it names, `pg_basebackup` to its `-D`. A fixed program text:
/// user data reaches it only as argv.
pub const PROBE: &str = r#"
import json, os, sys
roots = [(a, os.path.normpath(p)) for a, p in zip(sys.argv[1::2], sys.argv[2::2])]
ticks_per_second = os.sysconf("SC_CLK_TCK")
btime = 0
with open("/proc/stat") as f:
    for line in f:
        if line.startswith("btime "):
            btime = int(line.split()[1])
def area_of(path, cwd):
    if not path.startswith("/"):
        if cwd is None:
            return None
        path = os.path.join(cwd, path)
    path = os.path.normpath(path)
    for area, root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return area
    return None
found = []
me = os.getpid()
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == me:
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            args = [a.decode("utf-8", "replace") for a in f.read().split(b"\0")]
        with open("/proc/%s/stat" % pid) as f:
            stat = f.read()
    except OSError:
        continue
    if args and args[-1] == "":
        args.pop()
    fields = stat[stat.rindex(")") + 2:].split()
    if not args or fields[0] in ("Z", "X"):
        continue
    program = os.path.basename(args[0])
    if program.startswith("python") and len(args) > 1:
        args = args[1:]
        program = os.path.basename(args[0])
    if program == "rsync":
        if "--sender" in args or len(args) < 3:
            continue
        targets = [args[-1]]
    elif program == "barman":
        if "recover" not in args[1:]:
            continue
        targets = args[1:]
    elif program == "pg_basebackup":
        targets = []
        for i, a in enumerate(args):
            if a.startswith("--pgdata="):
                targets.append(a[len("--pgdata="):])
            elif a in ("-D", "--pgdata") and i + 1 < len(args):
                targets.append(args[i + 1])
            elif a.startswith("-D") and len(a) > 2:
                targets.append(a[2:])
    else:
        continue
    try:
        cwd = os.readlink("/proc/%s/cwd" % pid)
    except OSError:
        cwd = None
    hit = None
    for t in targets:
        area = area_of(t, cwd)
        if area:
            hit = (area, t)
            break
    if hit is None:
        continue
    run = None
    try:
        with open("/proc/%s/environ" % pid, "rb") as f:
            for entry in f.read().split(b"\0"):
                if entry.startswith(b"RECONCILER_RUN="):
                    run = entry[len(b"RECONCILER_RUN="):].decode("ascii", "replace")
    except OSError:
        pass
    start = int(fields[19])
    found.append({"pid": int(pid), "startTicks": start,
                  "startedAt": btime + start // ticks_per_second,
                  "program": program, "area": hit[0], "path": hit[1], "run": run})
print(json.dumps(found))
"#;

/// Stops one process where it lives, with `PID START_TICKS GRACE_SECONDS` as
/// arguments: SIGTERM, SIGKILL after the grace period, each only while the pid
/// still has that start time (a reused pid is never signalled). Prints `gone`,
/// `terminated` or `killed`; exits 1 if the process outlived SIGKILL.
pub const STOP: &str = r#"
import os, signal, sys, time
pid, ticks, grace = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
def same():
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0] not in ("Z", "X") and fields[19] == ticks
def send(sig):
    if not same():
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
if not send(signal.SIGTERM):
    print("gone")
    sys.exit(0)
deadline = time.time() + grace
while time.time() < deadline:
    if not same():
        print("terminated")
        sys.exit(0)
    time.sleep(0.1)
send(signal.SIGKILL)
for _ in range(100):
    if not same():
        print("killed")
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
"#;

/// This reconciler's mark, `<pid>:<start ticks>`, for [`RUN_ENV`].
pub fn run_mark() -> &'static str {
    static MARK: OnceLock<String> = OnceLock::new();
    MARK.get_or_init(|| {
        let pid = std::process::id();
        let ticks = start_ticks(pid as i32).unwrap_or(0);
        format!("{pid}:{ticks}")
    })
}

/// A process's start time in clock ticks after boot, from this host's `/proc`.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Who a [`RUN_ENV`] value names, and whether that reconciler still runs here.
pub fn started_by(mark: Option<&str>) -> StartedBy {
    let Some((pid, ticks)) = mark.and_then(|m| m.split_once(':')) else {
        return StartedBy::Unknown;
    };
    let (Ok(pid), Ok(ticks)) = (pid.parse::<i32>(), ticks.parse::<u64>()) else {
        return StartedBy::Unknown;
    };
    StartedBy::Reconciler {
        pid,
        alive: start_ticks(pid) == Some(ticks),
    }
}

/// Who a recovery's staging directory names: `.reconciler-staging-<attempt>-<pid>`
/// carries the pid of the reconciler that made it. For a process whose environment
/// cannot be read: barman drops root for its own account, which makes the process
/// undumpable, and a container's root lacks the capability to read it then. The
/// pid alone has no start time: it counts as alive while a process of the
/// reconciler's own name has it (a reused pid errs towards waiting, never towards
/// a stop).
pub fn started_by_staging(path: &str) -> Option<StartedBy> {
    let name = path
        .split('/')
        .find(|c| c.starts_with(&format!("{STAGING_DIR}-")))?;
    let pid: i32 = name.rsplit('-').next()?.parse().ok()?;
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let alive = comm(&pid.to_string()).is_some_and(|c| Some(c) == comm("self"));
    Some(StartedBy::Reconciler { pid, alive })
}

/// Where to look: the paths as the processes there see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPlace {
    /// The container (barman's), or `None` for this host.
    pub container: Option<String>,
    /// Each path and what it is.
    pub roots: Vec<(WriteArea, String)>,
}

/// Why processes could not be listed or stopped.
#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    /// The probe could not be run.
    #[error("cannot list processes {where_}")]
    Command {
        /// `on this host`, `in container barman`.
        where_: String,
        /// Why.
        #[source]
        source: CommandError,
    },
    /// The probe failed or said something unreadable.
    #[error("listing processes {where_} failed: {message}")]
    Probe {
        /// `on this host`, `in container barman`.
        where_: String,
        /// What it said.
        message: String,
    },
    /// The process outlived SIGKILL, or the stop could not run.
    #[error("{process} could not be stopped: {message}")]
    Stop {
        /// The process, in words.
        process: String,
        /// What the stop said.
        message: String,
    },
}

/// Lists and stops processes that write into a pipeline's places.
#[async_trait]
pub trait OrphanDriver: Send + Sync + std::fmt::Debug {
    /// The live processes that write under the places' paths.
    async fn scan(&self, places: &[ScanPlace]) -> Result<Vec<WritingProcess>, OrphanError>;
    /// SIGTERM, then SIGKILL after `grace`, to exactly that process (same pid and
    /// start time). Returns what happened, in words.
    async fn stop(&self, process: &WritingProcess, grace: Duration) -> Result<String, OrphanError>;
}

/// The scan and the stop, run by `python3` where the processes live.
#[derive(Debug, Clone)]
pub struct ProcScan {
    placer: Placer,
}

impl ProcScan {
    /// Commands placed by `placer` (this host, or `docker exec` into a container).
    pub fn new(placer: Placer) -> Self {
        Self { placer }
    }

    fn runner(&self, container: &Option<String>) -> std::sync::Arc<dyn CommandRunner> {
        self.placer.runner(&match container {
            Some(container) => Placement::Exec {
                container: container.clone(),
            },
            None => Placement::Host,
        })
    }
}

fn where_(container: &Option<String>) -> String {
    match container {
        Some(c) => format!("in container {c}"),
        None => "on this host".to_string(),
    }
}

/// One process as the probe reports it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    pid: i32,
    start_ticks: u64,
    started_at: i64,
    program: String,
    area: WriteArea,
    path: String,
    run: Option<String>,
}

/// Reads the probe's JSON list; an error says what was wrong with it.
pub fn parse_probe(
    stdout: &str,
    container: &Option<String>,
) -> Result<Vec<WritingProcess>, String> {
    let seen: Vec<Seen> = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("{e}: {}", stdout.lines().next().unwrap_or("").trim()))?;
    Ok(seen
        .into_iter()
        .map(|s| WritingProcess {
            started_by: match (s.run.as_deref(), started_by_staging(&s.path)) {
                (None, Some(by)) => by,
                (run, _) => started_by(run),
            },
            pid: s.pid,
            start_ticks: s.start_ticks,
            started_at: jiff::Timestamp::from_second(s.started_at).unwrap_or_default(),
            program: s.program,
            path: s.path,
            area: s.area,
            container: container.clone(),
        })
        .collect())
}

#[async_trait]
impl OrphanDriver for ProcScan {
    async fn scan(&self, places: &[ScanPlace]) -> Result<Vec<WritingProcess>, OrphanError> {
        let mut found = Vec::new();
        for place in places.iter().filter(|p| !p.roots.is_empty()) {
            let mut probe = CommandLine::new("python3", SCAN_TIMEOUT).args(["-c", PROBE]);
            for (area, path) in &place.roots {
                let area = match area {
                    WriteArea::Volume => "volume",
                    WriteArea::Starport => "starport",
                };
                probe = probe.arg(area).arg(path);
            }
            let out = self
                .runner(&place.container)
                .run(&probe)
                .await
                .map_err(|source| OrphanError::Command {
                    where_: where_(&place.container),
                    source,
                })?;
            if !out.success() {
                return Err(OrphanError::Probe {
                    where_: where_(&place.container),
                    message: format!("{}: {}", out.status_text(), out.last_words()),
                });
            }
            found.extend(
                parse_probe(&out.stdout, &place.container).map_err(|message| {
                    OrphanError::Probe {
                        where_: where_(&place.container),
                        message,
                    }
                })?,
            );
        }
        Ok(found)
    }

    async fn stop(&self, process: &WritingProcess, grace: Duration) -> Result<String, OrphanError> {
        let stop = CommandLine::new("python3", grace + Duration::from_secs(30))
            .args(["-c", STOP])
            .arg(process.pid.to_string())
            .arg(process.start_ticks.to_string())
            .arg(grace.as_secs_f64().to_string());
        let out = self
            .runner(&process.container)
            .run(&stop)
            .await
            .map_err(|source| OrphanError::Command {
                where_: where_(&process.container),
                source,
            })?;
        if !out.success() {
            return Err(OrphanError::Stop {
                process: process.subject(),
                message: format!("{}: {}", out.status_text(), out.last_words()),
            });
        }
        Ok(out.stdout.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe itself against real processes: a receiving rsync into the volume
    /// is seen with its mark, a sending one and one elsewhere are not; the stop
    /// ends it and never signals a pid whose start time differs.
    #[tokio::test]
    async fn the_probe_sees_a_real_rsync_writing_and_the_stop_ends_only_that_process() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        let elsewhere = dir.path().join("elsewhere");
        let source = dir.path().join("source");
        for d in [&volume, &elsewhere, &source] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(source.join("big"), vec![7u8; 8 << 20]).unwrap();
        let rsync = |to: &std::path::Path, mark: Option<&str>| {
            let mut c = std::process::Command::new("rsync");
            c.args(["-a", "--bwlimit=64"])
                .arg(format!("{}/", source.display()))
                .arg(format!("{}/", to.display()));
            if let Some(mark) = mark {
                c.env(RUN_ENV, mark);
            }
            c.spawn().unwrap()
        };
        let mut ours = rsync(&volume, Some("1:1"));
        let mut other = rsync(&elsewhere, None);
        std::thread::sleep(Duration::from_millis(500));
        let scan = ProcScan::new(Placer::new(
            std::sync::Arc::new(crate::drivers::docker::DockerEngine::default()),
            Default::default(),
        ));
        let places = [ScanPlace {
            container: None,
            roots: vec![(WriteArea::Volume, volume.display().to_string())],
        }];
        let found = scan.scan(&places).await.unwrap();
        assert!(
            !found.is_empty(),
            "the rsync writing into the volume is seen"
        );
        assert!(
            found.iter().all(|w| w.program == "rsync"
                && w.area == WriteArea::Volume
                && w.path.starts_with(&volume.display().to_string())
                && w.started_by
                    == StartedBy::Reconciler {
                        pid: 1,
                        alive: false
                    }),
            "{found:#?}"
        );
        assert!(found.iter().any(|w| w.pid == ours.id() as i32));
        assert!(!found.iter().any(|w| w.pid == other.id() as i32));

        let top = found.iter().find(|w| w.pid == ours.id() as i32).unwrap();
        let wrong = WritingProcess {
            start_ticks: top.start_ticks + 1,
            ..top.clone()
        };
        assert_eq!(
            scan.stop(&wrong, Duration::from_secs(1)).await.unwrap(),
            "gone"
        );
        assert!(
            ours.try_wait().unwrap().is_none(),
            "a pid of another start time is left alone"
        );
        let said = scan.stop(top, Duration::from_secs(5)).await;
        // The stop's own check sees the process a zombie once it exits (this test
        // is its parent and reaps it only below).
        assert!(said.is_ok(), "{said:?}");
        assert!(ours.wait().unwrap().code() != Some(0));
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn a_mark_names_a_live_reconciler_only_with_its_start_time() {
        let me = std::process::id() as i32;
        let ticks = start_ticks(me).unwrap();
        assert_eq!(
            started_by(Some(&format!("{me}:{ticks}"))),
            StartedBy::Reconciler {
                pid: me,
                alive: true
            }
        );
        assert_eq!(
            started_by(Some(&format!("{me}:{}", ticks + 1))),
            StartedBy::Reconciler {
                pid: me,
                alive: false
            }
        );
        assert_eq!(started_by(None), StartedBy::Unknown);
        assert_eq!(started_by(Some("garbage")), StartedBy::Unknown);
        assert_eq!(run_mark(), format!("{me}:{ticks}"));
        // Without an environment to read, a staging directory names its reconciler.
        assert_eq!(
            started_by_staging(&format!(
                "/nightly/.reconciler-staging-20261204T174758.002715833Z-{me}/"
            )),
            Some(StartedBy::Reconciler {
                pid: me,
                alive: true
            })
        );
        assert_eq!(
            started_by_staging("/nightly/.reconciler-staging-20261204T174758Z-999999999"),
            Some(StartedBy::Reconciler {
                pid: 999_999_999,
                alive: false
            })
        );
        assert_eq!(started_by_staging("/nightly/base"), None);
    }
}
