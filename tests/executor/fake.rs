//! A world in memory for the executor: every driver of a [`Drivers`] set is one
//! [`FakeWorld`], which keeps barman's catalogue, the recovered volume (its marker
//! and which recovery its data comes from), the starport and its mirrors, a
//! restore target's volume and its consumers, and writes every call into one
//! ordered journal.
//!
//! A run can be cut at any pause point of production code: [`FakeWorld::crash_at`]
//! names the point, and the fake call standing where that point is (inside the
//! call for a point inside a command; at the start of the call that follows a
//! point between two calls, or of a step's first call for `step:*`, so that
//! anything moved before the point is caught there) never returns. The test then drops
//! the `apply` future: nothing after that moment runs, as after a SIGKILL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use reconciler::drivers::barman::{BarmanDriver, BarmanError};
use reconciler::drivers::command::RunAs;
use reconciler::drivers::docker::DockerError;
use reconciler::drivers::mirror::MirrorDriver;
use reconciler::drivers::orphans::{Candidate, OrphanDriver, OrphanError};
use reconciler::drivers::replay::{ReplayDriver, ReplayError, ReplayOutcome};
use reconciler::drivers::restore::{ConsumerDriver, RestoreSourceDriver, RestoreVolumeDriver};
use reconciler::drivers::starport::{CopyStats, StarportDriver, StarportError};
use reconciler::drivers::volume::{LocalVolume, VolumeDriver, VolumeError, VolumeLock};
use reconciler::drivers::wal_segment::Segment;
use reconciler::drivers::{Drivers, HostDriver};
use reconciler::observed::{
    Backup, BackupActivity, BackupStatus, CheckItem, RestoreMarker, RestoreVolumeState,
    StarportMetadata, StarportState, StrayReplay, VolumeMarker, VolumeState, WalHealth,
};
use reconciler::plan::PlanContext;
use reconciler::spec::{
    BarmanSpec, MirrorSpec, RecoveredVolumeSpec, RestoreSourceSpec, RestoreVolumeSpec, StarportSpec,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// This host's machine id.
pub const MACHINE: &str = "machine-a";

/// Every pause point the fake can cut a run at, and where it stands in the fake.
pub const CRASH_POINTS: &[(&str, &str)] = &[
    ("observe", "start of barman.list_backups"),
    ("step:takeBaseBackup", "start of barman.take_backup"),
    (
        "backup:running",
        "inside barman.take_backup, the entry STARTED",
    ),
    ("step:deleteBackup", "start of barman.delete_backup"),
    ("delete:running", "inside barman.delete_backup"),
    ("step:recoverVolume", "start of barman.account"),
    (
        "recover:running",
        "inside barman.recover, half the files staged",
    ),
    ("recover:staged", "start of volume.promote_staging"),
    ("replay", "inside replay.replay, postgres replaying"),
    (
        "replay:finished",
        "inside replay.replay, recovery ended, postgres not stopped",
    ),
    (
        "recover:stopped",
        "start of volume.set_standby_signal(false), postgres stopped",
    ),
    ("step:catchUpVolume", "start of barman.account"),
    (
        "recover:fetching",
        "end of volume.install_segment after barman.recover, one segment from streaming in pg_wal",
    ),
    (
        "catchup:invalidated",
        "start of barman.list_wal for the next timeline's history",
    ),
    (
        "catchup:fetching",
        "end of volume.install_segment in a catch-up, one segment in pg_wal",
    ),
    (
        "catchup:stopped",
        "start of volume.set_standby_signal(false), postgres stopped",
    ),
    ("step:stopStrayReplay", "start of replay.stop_stray"),
    ("step:syncStarport", "start of volume.locate"),
    ("sync:invalidated", "start of starport.copy"),
    ("sync:running", "inside starport.copy, half copied"),
    ("sync:copied", "end of starport.copy"),
    ("step:syncMirror", "start of mirror.invalidate_metadata"),
    ("mirror:invalidated", "start of mirror.copy"),
    ("mirror:running", "inside mirror.copy, half copied"),
    ("step:runBarmanCron", "start of barman.cron"),
    ("step:resetReplicationSlot", "start of barman.reset_slot"),
    ("step:restoreVolume", "start of restore_volume.prepare"),
    (
        "restore:consumersStopped",
        "start of restore_volume.ensure_unused",
    ),
    ("restore:running", "inside restore_source.copy, half copied"),
    ("restore:copied", "start of restore_volume.used_since"),
    ("step:startConsumers", "start of consumers.start"),
];

/// One call to a driver, in the order made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `driver.method`, e.g. `volume.write_marker`.
    pub op: &'static str,
    /// Its arguments, or what it saw, in words.
    pub detail: String,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.op, self.detail)
    }
}

impl Call {
    /// True for calls that only look (observation, the executor's checks).
    pub fn is_read(&self) -> bool {
        matches!(
            self.op,
            "barman.list_backups"
                | "barman.list_backups_uncached"
                | "barman.backup_activity"
                | "barman.wal_health"
                | "barman.account"
                | "volume.locate"
                | "volume.inspect"
                | "volume.lock"
                | "starport.inspect"
                | "mirror.inspect"
                | "restore_source.inspect"
                | "restore_source.differences"
                | "restore_volume.inspect"
                | "restore_volume.locate"
                | "restore_volume.lock"
                | "restore_volume.ensure_unused"
                | "restore_volume.used_since"
                | "consumers.state"
                | "host.machine_id"
        )
    }
}

/// What a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Nothing.
    Empty,
    /// Exactly the data of recovery number `n`.
    Of(u64),
    /// A copy cut short: a mix of old and new files.
    Partial,
}

/// The files of one recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Which recovery wrote them (each gets its own number).
    pub serial: u64,
    /// The backup recovered.
    pub backup_id: String,
    /// The WAL was replayed to the end and postgres stopped cleanly.
    pub replayed: bool,
}

/// The recovered volume.
#[derive(Debug, Clone, Default)]
pub struct Volume {
    /// Its data directory exists.
    pub exists: bool,
    /// Its marker.
    pub marker: Option<VolumeMarker>,
    /// What its data directory holds.
    pub data: Option<Data>,
    /// What the staging directory holds (a recovery under way or orphaned).
    pub staging: Option<Data>,
    /// A replay postgres runs on it.
    pub postgres_running: bool,
}

/// A starport target or a mirror of it.
#[derive(Debug, Clone)]
pub struct Copy {
    /// `meta/metadata.json`.
    pub metadata: Option<StarportMetadata>,
    /// `data/<volume>`.
    pub data: Content,
}

/// A restore target's volume.
#[derive(Debug, Clone)]
pub struct RestoreVol {
    /// It exists.
    pub exists: bool,
    /// Its marker.
    pub marker: Option<RestoreMarker>,
    /// What it holds.
    pub data: Content,
}

type Hook = Box<dyn FnOnce(&mut State) + Send>;

/// The whole world.
pub struct State {
    /// The clock: one second passes with every call.
    pub now: Timestamp,
    /// barman's catalogue.
    pub backups: Vec<Backup>,
    /// `barman backup` fails.
    pub backup_fails: bool,
    /// The recovered volume.
    pub volume: Volume,
    /// Which recovery's data each generation name was given to.
    pub generations: BTreeMap<String, u64>,
    /// The last recovery number handed out.
    pub last_serial: u64,
    /// The local starport target.
    pub starport: Copy,
    /// The mirrors, by name.
    pub mirrors: BTreeMap<String, Copy>,
    /// The restore target's volume.
    pub restore_volume: RestoreVol,
    /// Consumer containers: running or not.
    pub consumers: BTreeMap<String, bool>,
    /// The journal.
    pub journal: Vec<Call>,
    /// Run by the call of that name, at its middle (a copy half done).
    pub hooks: BTreeMap<&'static str, Hook>,
    /// The pause point to cut the run at.
    pub crash_at: Option<String>,
    /// Fired when this call is made.
    pub cancel_on: Option<&'static str>,
    /// The newest WAL segment barman holds, on timeline 1 (a recovery copies
    /// through 3, the rest `get-wal` serves).
    pub wal_end: u64,
    /// The primary wrote since its last switch: `switch-wal` closes a segment,
    /// which barman then holds.
    pub primary_writes: bool,
    /// A segment barman lacks.
    pub wal_missing: Option<u64>,
    /// Streaming lag: the newest segment (`wal_end`) reaches barman only after
    /// this many more listings (`u32::MAX`: never).
    pub wal_late: u32,
    /// The pause point the next fetched segment cuts at: the refresh under way.
    pub fetch_point: &'static str,
    /// `switch-wal` answers only once a call of this name was made: it
    /// finishes only if the step does not wait for it before that call.
    pub switch_after: Option<&'static str>,
}

impl State {
    /// The data a generation name was given to.
    pub fn content_of(&self, generation: &str) -> Option<Content> {
        self.generations.get(generation).map(|s| Content::Of(*s))
    }

    /// The volume's data as a copy would find it.
    pub fn volume_content(&self) -> Content {
        match &self.volume.data {
            Some(d) => Content::Of(d.serial),
            None => Content::Empty,
        }
    }

    /// The generation the starport's metadata names.
    pub fn starport_generation(&self) -> Option<String> {
        self.starport
            .metadata
            .as_ref()
            .and_then(|m| m.generation.clone())
    }

    /// Lets every running base backup finish (barman is left to finish one a
    /// crash left behind).
    pub fn finish_running_backups(&mut self) {
        let now = self.now;
        for b in self
            .backups
            .iter_mut()
            .filter(|b| b.status == BackupStatus::Started)
        {
            b.status = BackupStatus::Done;
            b.end_time = Some(now);
            b.size_bytes = Some(1);
        }
    }
}

/// Every driver at once.
pub struct FakeWorld {
    state: Mutex<State>,
    crashed: Notify,
    /// The drivers' cancellation token.
    pub cancel: CancellationToken,
    root: PathBuf,
}

impl std::fmt::Debug for FakeWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeWorld")
            .field("root", &self.root)
            .finish()
    }
}

/// A backup id of barman's for `t`.
pub fn backup_id(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%S").to_string()
}

fn volume_in_use(path: &Path) -> VolumeError {
    VolumeError::InUse {
        path: path.to_path_buf(),
    }
}

impl FakeWorld {
    /// An empty world at `now`, with its lock files under `root`.
    pub fn new(now: Timestamp, root: &Path) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                now,
                backups: Vec::new(),
                backup_fails: false,
                volume: Volume::default(),
                generations: BTreeMap::new(),
                last_serial: 0,
                starport: Copy {
                    metadata: None,
                    data: Content::Empty,
                },
                mirrors: BTreeMap::new(),
                restore_volume: RestoreVol {
                    exists: false,
                    marker: None,
                    data: Content::Empty,
                },
                consumers: BTreeMap::new(),
                journal: Vec::new(),
                hooks: BTreeMap::new(),
                crash_at: None,
                cancel_on: None,
                wal_end: 4,
                primary_writes: true,
                wal_missing: None,
                wal_late: 0,
                fetch_point: "catchup:fetching",
                switch_after: None,
            }),
            crashed: Notify::new(),
            cancel: CancellationToken::new(),
            root: root.to_path_buf(),
        })
    }

    /// The world, to read or change.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A `Drivers` set whose every driver is this world.
    pub fn drivers(self: &Arc<Self>) -> Drivers {
        Drivers {
            barman: self.clone(),
            volume: self.clone(),
            replay: self.clone(),
            starport: self.clone(),
            mirror: self.clone(),
            restore_source: self.clone(),
            restore_volume: self.clone(),
            consumers: self.clone(),
            host: self.clone(),
            orphans: self.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// The planner's context: the world's clock, in UTC.
    pub fn context(&self) -> PlanContext {
        PlanContext {
            now: self.state().now,
            local_time_zone: jiff::tz::TimeZone::UTC,
        }
    }

    /// The journal so far.
    pub fn journal(&self) -> Vec<Call> {
        self.state().journal.clone()
    }

    /// Cuts the next run at `point` (once).
    pub fn crash_at(&self, point: &str) {
        assert!(
            CRASH_POINTS.iter().any(|(p, _)| *p == point),
            "the fake has no pause point {point}"
        );
        self.state().crash_at = Some(point.to_string());
    }

    /// Returns once a run was cut at its crash point.
    pub async fn crashed(&self) {
        self.crashed.notified().await;
    }

    /// Runs `hook` in the middle of the call `op` (once).
    pub fn during(&self, op: &'static str, hook: impl FnOnce(&mut State) + Send + 'static) {
        self.state().hooks.insert(op, Box::new(hook));
    }

    /// Writes the call into the journal (and lets a second pass).
    fn record(&self, op: &'static str, detail: impl Into<String>) {
        let mut s = self.state();
        s.now += jiff::SignedDuration::from_secs(1);
        s.journal.push(Call {
            op,
            detail: detail.into(),
        });
        if s.cancel_on == Some(op) {
            s.cancel_on = None;
            self.cancel.cancel();
        }
    }

    /// The middle of `op`: its hook runs.
    fn middle(&self, op: &'static str) {
        let hook = self.state().hooks.remove(op);
        if let Some(hook) = hook {
            hook(&mut self.state());
        }
    }

    /// Never returns when the run is to be cut at `point`.
    async fn cut(&self, point: &str) {
        let crash = {
            let mut s = self.state();
            if s.crash_at.as_deref() == Some(point) {
                s.crash_at = None;
                s.journal.push(Call {
                    op: "crash",
                    detail: point.to_string(),
                });
                true
            } else {
                false
            }
        };
        if crash {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
    }

    fn volume_path(&self) -> PathBuf {
        self.root.join("volume")
    }

    fn restore_path(&self) -> PathBuf {
        self.root.join("restored")
    }
}

/// No process ever writes into the fake world's places but its own steps.
#[async_trait]
impl OrphanDriver for FakeWorld {
    async fn candidates(&self, _container: &Option<String>) -> Result<Vec<Candidate>, OrphanError> {
        Ok(Vec::new())
    }

    async fn stop(
        &self,
        _process: &reconciler::observed::WritingProcess,
        _grace: Duration,
    ) -> Result<String, OrphanError> {
        Ok("gone".to_string())
    }

    fn for_one_pass(self: Arc<Self>) -> Arc<dyn OrphanDriver> {
        self
    }
}

#[async_trait]
impl BarmanDriver for FakeWorld {
    async fn list_backups(&self, _: &BarmanSpec) -> Result<Vec<Backup>, BarmanError> {
        self.cut("observe").await;
        self.record("barman.list_backups", "");
        Ok(self.state().backups.clone())
    }

    async fn list_backups_uncached(&self, _: &BarmanSpec) -> Result<Vec<Backup>, BarmanError> {
        self.record("barman.list_backups_uncached", "");
        Ok(self.state().backups.clone())
    }

    async fn backup_activity(&self, _: &BarmanSpec) -> Result<BackupActivity, BarmanError> {
        self.record("barman.backup_activity", "");
        let lock_held = self
            .state()
            .backups
            .iter()
            .any(|b| b.status == BackupStatus::Started);
        Ok(BackupActivity {
            lock_held,
            ..Default::default()
        })
    }

    async fn take_backup(&self, _: &BarmanSpec, _: Duration) -> Result<String, BarmanError> {
        self.cut("step:takeBaseBackup").await;
        self.record("barman.take_backup", "");
        if self.state().backup_fails {
            return Err(BarmanError::Failed {
                action: "backup",
                message: "the primary cannot be reached".to_string(),
            });
        }
        let id = backup_id(self.state().now);
        self.state().backups.push(Backup {
            id: id.clone(),
            status: BackupStatus::Started,
            end_time: None,
            size_bytes: None,
        });
        self.cut("backup:running").await;
        self.state().finish_running_backups();
        Ok(id)
    }

    async fn delete_backup(&self, _: &BarmanSpec, id: &str) -> Result<(), BarmanError> {
        self.cut("step:deleteBackup").await;
        self.record("barman.delete_backup", id);
        self.cut("delete:running").await;
        self.state().backups.retain(|b| b.id != id);
        Ok(())
    }

    /// A primary that wrote closes a new segment, which barman holds at once.
    async fn switch_wal(&self, _: &BarmanSpec) -> Result<Option<String>, BarmanError> {
        loop {
            let done = {
                let s = self.state();
                s.switch_after
                    .is_none_or(|op| s.journal.iter().any(|c| c.op == op))
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let closed = {
            let mut s = self.state();
            s.primary_writes.then(|| {
                s.wal_end += 1;
                Segment {
                    timeline: 1,
                    number: s.wal_end,
                }
                .to_string()
            })
        };
        self.record("barman.switch_wal", closed.clone().unwrap_or_default());
        Ok(closed)
    }

    /// Consecutive segments of timeline 1 from `first` through `wal_end` (the
    /// one before while it is late), up to a missing one; no history file.
    async fn list_wal(
        &self,
        _: &BarmanSpec,
        first: &str,
        _: u32,
    ) -> Result<Vec<String>, BarmanError> {
        if first.ends_with(".history") {
            self.state().fetch_point = "catchup:fetching";
            self.cut("catchup:invalidated").await;
        }
        self.record("barman.list_wal", first);
        let (end, missing) = {
            let mut s = self.state();
            let late = s.wal_late > 0 && !first.ends_with(".history");
            if late && s.wal_late != u32::MAX {
                s.wal_late -= 1;
            }
            (s.wal_end - u64::from(late), s.wal_missing)
        };
        Ok(Segment::parse(first)
            .filter(|s| s.timeline == 1)
            .map(|s| {
                (s.number..=end)
                    .take_while(|n| Some(*n) != missing)
                    .map(|n| Segment { number: n, ..s }.to_string())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn fetch_wal(&self, _: &BarmanSpec, name: &str, _: &Path) -> Result<(), BarmanError> {
        self.record("barman.fetch_wal", name);
        self.middle("barman.fetch_wal");
        Ok(())
    }

    async fn wal_health(&self, _: &BarmanSpec) -> Result<WalHealth, BarmanError> {
        self.record("barman.wal_health", "");
        let ok = || {
            Some(CheckItem {
                ok: true,
                hint: String::new(),
            })
        };
        Ok(WalHealth {
            receive_wal_running: ok(),
            replication_slot: ok(),
            postgresql: ok(),
            postgresql_streaming: ok(),
            archiver_errors: ok(),
            wal_maximum_age: ok(),
        })
    }

    async fn cron(&self, _: &BarmanSpec, _: Duration) -> Result<(), BarmanError> {
        self.cut("step:runBarmanCron").await;
        self.record("barman.cron", "");
        Ok(())
    }

    async fn reset_slot(&self, _: &BarmanSpec) -> Result<(), BarmanError> {
        self.cut("step:resetReplicationSlot").await;
        self.record("barman.reset_slot", "");
        Ok(())
    }

    async fn account(&self, _: &BarmanSpec, name: &str) -> Result<RunAs, BarmanError> {
        self.cut("step:recoverVolume").await;
        self.cut("step:catchUpVolume").await;
        self.record("barman.account", name);
        Ok(RunAs { uid: 0, gid: 0 })
    }

    async fn recover(
        &self,
        _: &BarmanSpec,
        backup_id: &str,
        destination: &Path,
        _: Duration,
    ) -> Result<(), BarmanError> {
        self.record("barman.recover", backup_id);
        self.state().fetch_point = "recover:fetching";
        let known = self
            .state()
            .backups
            .iter()
            .any(|b| b.id == backup_id && b.status == BackupStatus::Done);
        if !known || !destination.starts_with(self.volume_path()) {
            return Err(BarmanError::Failed {
                action: "recover",
                message: format!("no DONE backup {backup_id} to recover there"),
            });
        }
        {
            let mut s = self.state();
            s.last_serial += 1;
            s.volume.staging = Some(Data {
                serial: s.last_serial,
                backup_id: backup_id.to_string(),
                replayed: false,
            });
        }
        self.cut("recover:running").await;
        self.middle("barman.recover");
        Ok(())
    }
}

#[async_trait]
impl VolumeDriver for FakeWorld {
    async fn locate(&self, _: &RecoveredVolumeSpec) -> Result<Option<PathBuf>, VolumeError> {
        self.cut("step:syncStarport").await;
        self.record("volume.locate", "");
        Ok(Some(self.volume_path()))
    }

    async fn create(&self, _: &RecoveredVolumeSpec, _: &str) -> Result<PathBuf, VolumeError> {
        self.record("volume.create", "");
        self.state().volume.exists = true;
        Ok(self.volume_path())
    }

    async fn inspect(
        &self,
        _: &RecoveredVolumeSpec,
        _: &[String],
    ) -> Result<VolumeState, VolumeError> {
        let s = self.state().volume.clone();
        let state = if !s.exists {
            VolumeState::Missing
        } else if let (Some(marker), None) = (&s.marker, &s.staging) {
            VolumeState::Marked {
                marker: marker.clone(),
                in_use: s.postgres_running,
                users: Vec::new(),
            }
        } else {
            VolumeState::Unmarked {
                reason: if s.staging.is_some() {
                    "an interrupted recovery left its staging directory".to_string()
                } else {
                    "no marker".to_string()
                },
                in_use: s.postgres_running,
                foreign: false,
                stray_replay: s
                    .postgres_running
                    .then_some(StrayReplay::Process { pid: 4242 }),
                users: Vec::new(),
            }
        };
        let seen = match &state {
            VolumeState::Marked { marker, .. } => format!("marked {}", marker.generation),
            VolumeState::Unmarked { .. } => "unmarked".to_string(),
            VolumeState::Missing => "missing".to_string(),
        };
        self.record("volume.inspect", seen);
        Ok(state)
    }

    async fn invalidate_marker(&self, _: &Path) -> Result<(), VolumeError> {
        self.record("volume.invalidate_marker", "");
        self.state().volume.marker = None;
        Ok(())
    }

    async fn prepare_for_recovery(
        &self,
        _: &RecoveredVolumeSpec,
        _: &[String],
        path: &Path,
        _: RunAs,
    ) -> Result<PathBuf, VolumeError> {
        self.record("volume.prepare_for_recovery", "");
        let mut s = self.state();
        if s.volume.postgres_running {
            return Err(volume_in_use(path));
        }
        s.volume.exists = true;
        s.volume.data = None;
        s.volume.staging = None;
        Ok(path.join(".reconciler-staging-fake"))
    }

    async fn promote_staging(&self, _: &Path, _: &Path) -> Result<(), VolumeError> {
        self.cut("recover:staged").await;
        self.record("volume.promote_staging", "");
        let mut s = self.state();
        s.volume.data = s.volume.staging.take();
        Ok(())
    }

    async fn write_marker(
        &self,
        _: &Path,
        marker: &VolumeMarker,
        _: RunAs,
    ) -> Result<(), VolumeError> {
        self.record("volume.write_marker", marker.generation.clone());
        let mut s = self.state();
        let serial = s.volume.data.as_ref().map_or(0, |d| d.serial);
        s.generations.insert(marker.generation.clone(), serial);
        s.volume.marker = Some(marker.clone());
        Ok(())
    }

    async fn lock(&self, volume: &RecoveredVolumeSpec) -> Result<VolumeLock, VolumeError> {
        self.record("volume.lock", "");
        LocalVolume::default().lock_at(volume.location())
    }

    async fn set_standby_signal(
        &self,
        _: &Path,
        present: bool,
        _: RunAs,
    ) -> Result<(), VolumeError> {
        if !present {
            self.cut("recover:stopped").await;
            self.cut("catchup:stopped").await;
        }
        self.record("volume.set_standby_signal", present.to_string());
        Ok(())
    }

    async fn newest_segment(&self, _: &Path) -> Result<Option<Segment>, VolumeError> {
        self.record("volume.newest_segment", "");
        Ok(Segment::parse("000000010000000000000003"))
    }

    async fn prepare_wal_fetch(&self, path: &Path, _: RunAs) -> Result<PathBuf, VolumeError> {
        self.record("volume.prepare_wal_fetch", "");
        Ok(path.join(".reconciler-staging-wal"))
    }

    async fn install_segment(&self, _: &Path, name: &str, _: RunAs) -> Result<(), VolumeError> {
        self.record("volume.install_segment", name);
        let point = self.state().fetch_point;
        self.cut(point).await;
        Ok(())
    }

    async fn finish_wal_fetch(&self, _: &Path) -> Result<(), VolumeError> {
        self.record("volume.finish_wal_fetch", "");
        Ok(())
    }
}

#[async_trait]
impl ReplayDriver for FakeWorld {
    async fn replay(
        &self,
        _: &str,
        _: &RecoveredVolumeSpec,
        data_dir: &Path,
        _: RunAs,
        through: Segment,
    ) -> Result<ReplayOutcome, ReplayError> {
        self.record("replay.replay", format!("through {through}"));
        if self.state().volume.data.is_none() {
            return Err(ReplayError::Exited {
                status: "exit status: 1".to_string(),
                log_tail: format!("{} is not a data directory", data_dir.display()),
            });
        }
        self.state().volume.postgres_running = true;
        self.cut("replay").await;
        self.middle("replay.replay");
        if let Some(d) = self.state().volume.data.as_mut() {
            d.replayed = true;
        }
        self.cut("replay:finished").await;
        self.state().volume.postgres_running = false;
        Ok(ReplayOutcome {
            replayed_to_lsn: "0/3000000".to_string(),
            checkpoint_time: None,
            timeline: Some(1),
        })
    }

    async fn stop_stray(
        &self,
        stray: &StrayReplay,
        _: &Path,
        _: Duration,
    ) -> Result<(), ReplayError> {
        self.cut("step:stopStrayReplay").await;
        self.record("replay.stop_stray", stray.to_string());
        self.state().volume.postgres_running = false;
        Ok(())
    }
}

fn state_of(copy: &Copy) -> StarportState {
    match &copy.metadata {
        Some(metadata) => StarportState::Synced {
            metadata: metadata.clone(),
        },
        None => StarportState::NoMetadata {
            reason: "no metadata.json".to_string(),
        },
    }
}

fn generation_of(state: &StarportState) -> String {
    match state {
        StarportState::Synced { metadata } => metadata.generation_key(),
        StarportState::NoMetadata { .. } => "no metadata".to_string(),
    }
}

#[async_trait]
impl StarportDriver for FakeWorld {
    async fn inspect(&self, _: &StarportSpec, _: &str) -> Result<StarportState, StarportError> {
        let state = state_of(&self.state().starport);
        self.record("starport.inspect", generation_of(&state));
        Ok(state)
    }

    async fn invalidate_metadata(&self, _: &StarportSpec, _: &str) -> Result<(), StarportError> {
        self.record("starport.invalidate_metadata", "");
        self.state().starport.metadata = None;
        Ok(())
    }

    async fn copy(
        &self,
        source: &Path,
        _: &StarportSpec,
        _: &str,
        _: Duration,
    ) -> Result<CopyStats, StarportError> {
        self.cut("sync:invalidated").await;
        self.record("starport.copy", source.display().to_string());
        let before = {
            let mut s = self.state();
            s.starport.data = Content::Partial;
            s.volume_content()
        };
        self.cut("sync:running").await;
        self.middle("starport.copy");
        {
            // A volume that changed under rsync leaves a mix.
            let mut s = self.state();
            s.starport.data = if s.volume_content() == before {
                before
            } else {
                Content::Partial
            };
        }
        self.cut("sync:copied").await;
        Ok(CopyStats::default())
    }

    async fn write_metadata(
        &self,
        _: &StarportSpec,
        _: &str,
        metadata: &StarportMetadata,
    ) -> Result<(), StarportError> {
        self.record(
            "starport.write_metadata",
            metadata.generation.clone().unwrap_or_default(),
        );
        self.state().starport.metadata = Some(metadata.clone());
        Ok(())
    }
}

fn empty_copy() -> Copy {
    Copy {
        metadata: None,
        data: Content::Empty,
    }
}

#[async_trait]
impl MirrorDriver for FakeWorld {
    async fn inspect(
        &self,
        mirror: &MirrorSpec,
        _: &StarportSpec,
        _: &str,
    ) -> Result<StarportState, StarportError> {
        let state = state_of(
            self.state()
                .mirrors
                .entry(mirror.name.to_string())
                .or_insert_with(empty_copy),
        );
        self.record(
            "mirror.inspect",
            format!("{}: {}", mirror.name, generation_of(&state)),
        );
        Ok(state)
    }

    async fn invalidate_metadata(
        &self,
        mirror: &MirrorSpec,
        _: &StarportSpec,
    ) -> Result<(), StarportError> {
        self.cut("step:syncMirror").await;
        self.record("mirror.invalidate_metadata", mirror.name.to_string());
        self.state()
            .mirrors
            .entry(mirror.name.to_string())
            .or_insert_with(empty_copy)
            .metadata = None;
        Ok(())
    }

    async fn copy(
        &self,
        mirror: &MirrorSpec,
        _: &StarportSpec,
        _: &str,
    ) -> Result<CopyStats, StarportError> {
        let name = mirror.name.to_string();
        self.cut("mirror:invalidated").await;
        self.record("mirror.copy", name.clone());
        let before = {
            let mut s = self.state();
            s.mirrors
                .entry(name.clone())
                .or_insert_with(empty_copy)
                .data = Content::Partial;
            s.starport.data
        };
        self.cut("mirror:running").await;
        self.middle("mirror.copy");
        {
            // A starport that changed under rsync leaves a mix.
            let mut s = self.state();
            let data = if s.starport.data == before {
                before
            } else {
                Content::Partial
            };
            s.mirrors.entry(name).or_insert_with(empty_copy).data = data;
        }
        Ok(CopyStats::default())
    }

    async fn write_metadata(
        &self,
        mirror: &MirrorSpec,
        _: &StarportSpec,
        metadata: &StarportMetadata,
    ) -> Result<(), StarportError> {
        self.record(
            "mirror.write_metadata",
            format!("{}: {}", mirror.name, metadata.generation_key()),
        );
        self.state()
            .mirrors
            .entry(mirror.name.to_string())
            .or_insert_with(empty_copy)
            .metadata = Some(metadata.clone());
        Ok(())
    }
}

/// The restore target reads the same starport the pipeline writes.
#[async_trait]
impl RestoreSourceDriver for FakeWorld {
    async fn inspect(&self, _: &RestoreSourceSpec) -> Result<StarportState, StarportError> {
        let state = state_of(&self.state().starport);
        self.record("restore_source.inspect", generation_of(&state));
        Ok(state)
    }

    async fn copy(&self, _: &RestoreSourceSpec, _: &Path) -> Result<CopyStats, StarportError> {
        self.record("restore_source.copy", "");
        let before = {
            let mut s = self.state();
            s.restore_volume.data = Content::Partial;
            s.starport.data
        };
        self.cut("restore:running").await;
        self.middle("restore_source.copy");
        {
            let mut s = self.state();
            s.restore_volume.data = if s.starport.data == before {
                before
            } else {
                Content::Partial
            };
        }
        Ok(CopyStats::default())
    }

    async fn differences(
        &self,
        _: &RestoreSourceSpec,
        _: &Path,
    ) -> Result<Vec<String>, StarportError> {
        let s = self.state();
        let differences = if s.restore_volume.data == s.starport.data {
            Vec::new()
        } else {
            vec![format!(
                "the volume holds {:?}, the starport {:?}",
                s.restore_volume.data, s.starport.data
            )]
        };
        drop(s);
        self.record("restore_source.differences", differences.len().to_string());
        Ok(differences)
    }
}

fn restore_marker_words(marker: &RestoreMarker) -> String {
    let state = format!("{:?}", marker.state).to_lowercase();
    format!("{state} {}", marker.generation)
}

#[async_trait]
impl RestoreVolumeDriver for FakeWorld {
    async fn inspect(&self, _: &RestoreVolumeSpec) -> Result<RestoreVolumeState, VolumeError> {
        let s = self.state();
        let state = if s.restore_volume.exists {
            RestoreVolumeState::Present {
                marker: s.restore_volume.marker.clone(),
                no_marker_reason: s
                    .restore_volume
                    .marker
                    .is_none()
                    .then(|| "no marker".to_string()),
                foreign: false,
                used_by: s
                    .consumers
                    .iter()
                    .filter(|(_, running)| **running)
                    .map(|(name, _)| name.clone())
                    .collect(),
                postmaster_running: false,
            }
        } else {
            RestoreVolumeState::Missing
        };
        let seen = s
            .restore_volume
            .marker
            .as_ref()
            .map_or("no marker".to_string(), restore_marker_words);
        drop(s);
        self.record("restore_volume.inspect", seen);
        Ok(state)
    }

    async fn locate(&self, _: &RestoreVolumeSpec) -> Result<Option<PathBuf>, VolumeError> {
        self.record("restore_volume.locate", "");
        Ok(Some(self.restore_path()))
    }

    async fn prepare(&self, _: &RestoreVolumeSpec, _: &str) -> Result<PathBuf, VolumeError> {
        self.cut("step:restoreVolume").await;
        self.record("restore_volume.prepare", "");
        self.state().restore_volume.exists = true;
        Ok(self.restore_path())
    }

    async fn ensure_unused(&self, _: &RestoreVolumeSpec, path: &Path) -> Result<(), VolumeError> {
        self.cut("restore:consumersStopped").await;
        self.record("restore_volume.ensure_unused", "");
        let running = self
            .state()
            .consumers
            .iter()
            .find(|(_, running)| **running)
            .map(|(name, _)| name.clone());
        match running {
            Some(container) => Err(VolumeError::InUseByContainer {
                name: path.display().to_string(),
                container,
            }),
            None => Ok(()),
        }
    }

    async fn used_since(
        &self,
        _: &RestoreVolumeSpec,
        _: &Path,
        _: Timestamp,
    ) -> Result<Option<String>, VolumeError> {
        self.cut("restore:copied").await;
        self.record("restore_volume.used_since", "");
        Ok(None)
    }

    async fn write_marker(&self, _: &Path, marker: &RestoreMarker) -> Result<(), VolumeError> {
        self.record("restore_volume.write_marker", restore_marker_words(marker));
        self.state().restore_volume.marker = Some(marker.clone());
        Ok(())
    }

    async fn lock(&self, volume: &RestoreVolumeSpec) -> Result<VolumeLock, VolumeError> {
        self.record("restore_volume.lock", "");
        LocalVolume::default().lock_at(volume.location())
    }
}

#[async_trait]
impl ConsumerDriver for FakeWorld {
    async fn state(&self, container: &str) -> Result<Option<String>, DockerError> {
        let state = self
            .state()
            .consumers
            .get(container)
            .map(|running| if *running { "running" } else { "exited" }.to_string());
        self.record(
            "consumers.state",
            format!("{container}: {}", state.as_deref().unwrap_or("absent")),
        );
        Ok(state)
    }

    async fn stop(&self, container: &str, _: Duration) -> Result<(), DockerError> {
        self.record("consumers.stop", container);
        match self.state().consumers.get_mut(container) {
            Some(running) => *running = false,
            None => {
                return Err(DockerError::NoSuchContainer {
                    name: container.to_string(),
                });
            }
        }
        Ok(())
    }

    async fn start(&self, container: &str) -> Result<(), DockerError> {
        self.cut("step:startConsumers").await;
        self.record("consumers.start", container);
        match self.state().consumers.get_mut(container) {
            Some(running) => *running = true,
            None => {
                return Err(DockerError::NoSuchContainer {
                    name: container.to_string(),
                });
            }
        }
        Ok(())
    }
}

impl HostDriver for FakeWorld {
    fn machine_id(&self) -> Option<String> {
        self.record("host.machine_id", "");
        Some(MACHINE.to_string())
    }
}
