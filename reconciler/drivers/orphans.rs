//! Which live processes write into a pipeline's volume or starport, and stopping
//! one that a killed reconciler left behind.
//!
//! A reconciler's direct children die with it (see [`super::command`]), but what
//! they fork does not: barman's rsync, a wrapper's rsync, a `barman recover` run by
//! `docker exec` (the exec'd process belongs to the container, not to us). Every
//! command the reconciler runs carries [`RUN_ENV`] in its environment, naming the
//! reconciler's pid and start time; what those commands fork inherits it. The scan
//! reads `/proc/*/cmdline`, `stat` and `environ` where the processes live: on this
//! host for the volume and the starport (in-process, [`super::proc_list`]), and
//! inside barman's container (through barman's own `python3`, paths as argv) when
//! barman runs there, since a
//! container's pids and paths are its own. Whether the mark's reconciler still
//! runs is looked up on this host, where reconcilers run.
//!
//! This module reports and, when asked, signals; it never decides what to stop.
//! It is over 600 lines as one concept (the probe's program text, its reading, the
//! stop, the pass's shared list); nearly a third is its tests, one against real rsync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
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

/// The scan, run by `python3` with no arguments: one JSON list of every live
/// process that writes somewhere, with where (absolute, normalised against the
/// process's working directory). rsync writes to its last argument (unless it is a
/// `--sender`), `barman recover` to the destination it names (every argument is
/// offered, the caller keeps those under its roots), `pg_basebackup` to its `-D`.
/// It takes no paths, so one run serves every pipeline of a pass (see
/// [`PassScans`]). A fixed program text: nothing reaches it from a spec.
pub const PROBE: &str = r#"
import json, os
ticks_per_second = os.sysconf("SC_CLK_TCK")
btime = 0
with open("/proc/stat") as f:
    for line in f:
        if line.startswith("btime "):
            btime = int(line.split()[1])
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
    absolute = []
    for t in targets:
        if not t.startswith("/"):
            if cwd is None:
                continue
            t = os.path.join(cwd, t)
        absolute.append(os.path.normpath(t))
    if not absolute:
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
                  "program": program, "targets": absolute, "run": run})
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
    /// This host's `/proc` could not be read.
    #[error("cannot read the processes {where_}")]
    Read {
        /// `on this host`.
        where_: String,
        /// Why.
        #[source]
        source: std::io::Error,
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
    /// Every live process that writes somewhere, where `container` lives (`None`:
    /// this host).
    async fn candidates(&self, container: &Option<String>) -> Result<Vec<Candidate>, OrphanError>;

    /// The live processes that write under the places' paths.
    async fn scan(&self, places: &[ScanPlace]) -> Result<Vec<WritingProcess>, OrphanError> {
        let mut found = Vec::new();
        for place in places.iter().filter(|p| !p.roots.is_empty()) {
            let candidates = self.candidates(&place.container).await?;
            found.extend(writers_under(&candidates, &place.roots, &place.container));
        }
        Ok(found)
    }

    /// SIGTERM, then SIGKILL after `grace`, to exactly that process (same pid and
    /// start time). Returns what happened, in words.
    async fn stop(&self, process: &WritingProcess, grace: Duration) -> Result<String, OrphanError>;

    /// The same driver with each place's process list read once for a whole pass
    /// of observations (many pipelines share a host and barman's container), never
    /// for the executor, which must see the processes as they are before each step.
    fn for_one_pass(self: Arc<Self>) -> Arc<dyn OrphanDriver>;
}

/// The scan (read in-process on this host, by `python3` in a container) and the
/// stop (by `python3` where the process lives).
#[derive(Debug, Clone)]
pub struct ProcScan {
    placer: Placer,
}

impl ProcScan {
    /// Commands placed by `placer` (this host, or `docker exec` into a container).
    pub fn new(placer: Placer) -> Self {
        Self { placer }
    }

    fn runner(&self, container: &Option<String>) -> Arc<dyn CommandRunner> {
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

/// One process that writes somewhere, as the probe reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Its pid where it lives.
    pub pid: i32,
    /// Its start time in clock ticks after that place's boot.
    pub start_ticks: u64,
    /// When it started, in seconds since the epoch.
    pub started_at: i64,
    /// `rsync`, `barman`, `pg_basebackup`.
    pub program: String,
    /// Where it may write: absolute, normalised paths.
    pub targets: Vec<String>,
    /// Its [`RUN_ENV`] mark, if its environment could be read and had one.
    pub run: Option<String>,
}

/// Reads the probe's JSON list; an error says what was wrong with it.
pub fn parse_probe(stdout: &str) -> Result<Vec<Candidate>, String> {
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("{e}: {}", stdout.lines().next().unwrap_or("").trim()))
}

/// `path` with `.`, `..` and repeated or trailing slashes resolved by its text, as
/// the probe's `os.path.normpath` does.
pub(super) fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `path` is `root` or lies under it (both absolute and normalised).
fn is_under(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root.trim_end_matches('/'))
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The candidates that write under one of `roots`, each with the first of its
/// targets found there.
pub fn writers_under(
    candidates: &[Candidate],
    roots: &[(WriteArea, String)],
    container: &Option<String>,
) -> Vec<WritingProcess> {
    let roots: Vec<(WriteArea, String)> = roots
        .iter()
        .map(|(area, root)| (*area, normalise(root)))
        .collect();
    candidates
        .iter()
        .filter_map(|c| {
            let (area, path) = c.targets.iter().find_map(|t| {
                roots
                    .iter()
                    .find(|(_, root)| is_under(t, root))
                    .map(|(area, _)| (*area, t.clone()))
            })?;
            Some(WritingProcess {
                started_by: match (c.run.as_deref(), started_by_staging(&path)) {
                    (None, Some(by)) => by,
                    (run, _) => started_by(run),
                },
                pid: c.pid,
                start_ticks: c.start_ticks,
                started_at: jiff::Timestamp::from_second(c.started_at).unwrap_or_default(),
                program: c.program.clone(),
                path,
                area,
                container: container.clone(),
            })
        })
        .collect()
}

#[async_trait]
impl OrphanDriver for ProcScan {
    async fn candidates(&self, container: &Option<String>) -> Result<Vec<Candidate>, OrphanError> {
        if container.is_none() {
            // This host's /proc is ours to read: no interpreter to start.
            return tokio::task::spawn_blocking(super::proc_list::writing_processes)
                .await
                .map_err(std::io::Error::other)
                .and_then(|listed| listed)
                .map_err(|source| OrphanError::Read {
                    where_: where_(container),
                    source,
                });
        }
        let probe = CommandLine::new("python3", SCAN_TIMEOUT).args(["-c", PROBE]);
        let out =
            self.runner(container)
                .run(&probe)
                .await
                .map_err(|source| OrphanError::Command {
                    where_: where_(container),
                    source,
                })?;
        if !out.success() {
            return Err(OrphanError::Probe {
                where_: where_(container),
                message: format!("{}: {}", out.status_text(), out.last_words()),
            });
        }
        parse_probe(&out.stdout).map_err(|message| OrphanError::Probe {
            where_: where_(container),
            message,
        })
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

    fn for_one_pass(self: Arc<Self>) -> Arc<dyn OrphanDriver> {
        Arc::new(PassScans::over(self))
    }
}

/// One place's process list for the pass, read once by whichever pipeline asks
/// first while the others wait for it.
type ListCell = Arc<tokio::sync::OnceCell<Vec<Candidate>>>;

/// [`OrphanDriver::for_one_pass`]: each place's list read once, stops passed on.
#[derive(Debug)]
pub struct PassScans {
    inner: Arc<dyn OrphanDriver>,
    lists: Mutex<HashMap<Option<String>, ListCell>>,
}

impl PassScans {
    /// A fresh pass in front of `inner`.
    pub fn over(inner: Arc<dyn OrphanDriver>) -> Self {
        Self {
            inner,
            lists: Mutex::default(),
        }
    }
}

#[async_trait]
impl OrphanDriver for PassScans {
    async fn candidates(&self, container: &Option<String>) -> Result<Vec<Candidate>, OrphanError> {
        // The lock is held only to find the cell, never across the probe.
        let cell = self
            .lists
            .lock()
            .ok()
            .map(|mut lists| lists.entry(container.clone()).or_default().clone());
        let Some(cell) = cell else {
            return self.inner.candidates(container).await;
        };
        cell.get_or_try_init(|| self.inner.candidates(container))
            .await
            .cloned()
    }

    async fn stop(&self, process: &WritingProcess, grace: Duration) -> Result<String, OrphanError> {
        self.inner.stop(process, grace).await
    }

    fn for_one_pass(self: Arc<Self>) -> Arc<dyn OrphanDriver> {
        self
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
            Arc::new(crate::drivers::docker::DockerEngine::default()),
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

    fn candidate(pid: i32, program: &str, targets: &[&str]) -> Candidate {
        Candidate {
            pid,
            start_ticks: 7,
            started_at: 0,
            program: program.to_string(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            run: None,
        }
    }

    /// One list serves every pipeline: each keeps only what writes under its own
    /// paths, a sibling directory sharing a name's prefix included.
    #[test]
    fn each_pipeline_keeps_only_the_writers_under_its_own_paths() {
        let list = [
            candidate(1, "rsync", &["/srv/nightly/montagu_db_volume/base"]),
            candidate(2, "rsync", &["/srv/nightly/montagu_db_volume_old"]),
            candidate(
                3,
                "barman",
                &["recover", "montagu", "/srv/starport/barman_to_starport"],
            ),
            candidate(4, "pg_basebackup", &["/elsewhere"]),
        ];
        let roots = [
            (
                WriteArea::Volume,
                "/srv/nightly/montagu_db_volume/".to_string(),
            ),
            (
                WriteArea::Starport,
                "/srv//starport/./barman_to_starport".to_string(),
            ),
        ];
        let found = writers_under(&list, &roots, &None);
        let seen: Vec<(i32, WriteArea, &str)> = found
            .iter()
            .map(|w| (w.pid, w.area, w.path.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, WriteArea::Volume, "/srv/nightly/montagu_db_volume/base"),
                (3, WriteArea::Starport, "/srv/starport/barman_to_starport"),
            ]
        );
        assert_eq!(normalise("/a/b/../c/"), "/a/c");
    }

    /// Counts the lists it is asked for.
    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl OrphanDriver for Counting {
        async fn candidates(&self, _: &Option<String>) -> Result<Vec<Candidate>, OrphanError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(vec![candidate(9, "rsync", &["/v/x"])])
        }
        async fn stop(&self, _: &WritingProcess, _: Duration) -> Result<String, OrphanError> {
            Ok("gone".into())
        }
        fn for_one_pass(self: Arc<Self>) -> Arc<dyn OrphanDriver> {
            self
        }
    }

    /// A pass over many pipelines lists each place's processes once, however many
    /// pipelines ask at the same time; the next pass lists them again.
    #[tokio::test]
    async fn a_pass_lists_each_place_once() {
        let inner = Arc::new(Counting::default());
        let pass = PassScans::over(inner.clone());
        let places = [
            ScanPlace {
                container: None,
                roots: vec![(WriteArea::Volume, "/v".to_string())],
            },
            ScanPlace {
                container: Some("barman".to_string()),
                roots: vec![(WriteArea::Volume, "/v".to_string())],
            },
        ];
        let scans = (0..10).map(|_| pass.scan(&places));
        for found in futures_util::future::join_all(scans).await {
            assert_eq!(found.unwrap().len(), 2);
        }
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        let next = PassScans::over(inner.clone());
        next.scan(&places[..1]).await.unwrap();
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 3);
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
