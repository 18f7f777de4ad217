//! Processes that can write into the volume or the starport while the reconciler
//! looks: an rsync, a `barman recover` or a `pg_basebackup` whose argv names one of
//! them as what it writes. Plain data, from one `/proc` scan per pass (where barman
//! runs, too, when that is a container); no I/O here, and nothing decided: whether
//! such a process is stopped or waited for is the planner's.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Where a process writes, of the two places a pipeline writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WriteArea {
    /// The recovered volume (its staging directories included).
    Volume,
    /// The starport target.
    Starport,
}

/// Who started a process, from the `RECONCILER_RUN` entry of its environment
/// (set on every command a reconciler runs, inherited by what those fork).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum StartedBy {
    /// A reconciler: its pid on this host, and whether that very process (same pid,
    /// same start time) still runs.
    Reconciler {
        /// The reconciler's pid.
        pid: i32,
        /// It still runs: the process is its work in progress, not an orphan.
        alive: bool,
    },
    /// No reconciler's mark: an operator's, or another tool's.
    Unknown,
}

/// A live process that writes into the volume or the starport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WritingProcess {
    /// Its pid, in the namespace it was seen in.
    pub pid: i32,
    /// Its start time in clock ticks after boot: with the pid, its identity (a
    /// reused pid has another), checked again before any signal.
    pub start_ticks: u64,
    /// When it started.
    pub started_at: Timestamp,
    /// `rsync`, `barman`, `pg_basebackup`.
    pub program: String,
    /// The path its argv names as where it writes, as it sees it.
    pub path: String,
    /// What that path is.
    pub area: WriteArea,
    /// The container it runs in (barman's), or `None` for this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Who started it.
    pub started_by: StartedBy,
}

impl WritingProcess {
    /// Left behind by a reconciler that no longer runs: safe to stop, since only
    /// the reconciler would use what it writes, and it starts over.
    pub fn is_orphan(&self) -> bool {
        matches!(self.started_by, StartedBy::Reconciler { alive: false, .. })
    }

    /// `rsync (pid 42)`, `barman (pid 7 in container barman)`.
    pub fn subject(&self) -> String {
        match &self.container {
            Some(container) => format!(
                "{} (pid {} in container {container})",
                self.program, self.pid
            ),
            None => format!("{} (pid {})", self.program, self.pid),
        }
    }
}

impl std::fmt::Display for WritingProcess {
    /// `rsync (pid 42) writing into /srv/starport/x`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} writing into {}", self.subject(), self.path)
    }
}
