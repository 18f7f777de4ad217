//! The executor's ordering promises and its crash points, against a world in
//! memory (`executor/fake.rs`): milliseconds per test, beside the real-world
//! suites (`tests/crash.rs`, `tests/pipeline.rs`) that prove the same with barman,
//! postgres and rsync.

#[path = "executor/fake.rs"]
mod fake;

#[path = "executor/crash.rs"]
mod crash;
#[path = "executor/order.rs"]
mod order;

use std::sync::Arc;

use fake::{Content, FakeWorld, State};
use reconciler::observed::{BackupStatus, RestoreState};
use reconciler::plan::PlannedStep;
use reconciler::reconcile::{ApplyReport, Progress, StepOutcome, StepRecord, apply_pipeline};
use reconciler::spec::{BackupPipeline, Resource, RestoreTarget};

/// A pipeline and a restore target of it, over one fake world.
pub struct Test {
    _dir: tempfile::TempDir,
    /// The world.
    pub world: Arc<FakeWorld>,
    /// Keeps 2 backups, with a starport and a mirror `offsite`.
    pub pipeline: Resource,
    /// Restores the starport copy, stopping `montagu-db` for it.
    pub target: Resource,
}

struct Silent;

impl Progress for Silent {
    fn step_started(&self, _: &str, _: usize, _: &PlannedStep) {}
    fn step_finished(&self, _: &str, _: &StepRecord) {}
}

impl Test {
    /// An empty world: no backup, no volume, an empty starport, a running consumer.
    pub fn empty() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path();
        let pipeline: BackupPipeline = serde_saphyr::from_str(&format!(
            r#"apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: montagu}}
spec:
  barman: {{server: montagu}}
  baseBackup: {{maxAge: 30d}}
  retention: {{keep: 2, minimumRedundancy: 1}}
  recoveredVolume:
    path: {root}/volume
    maxAge: 24h
    owner: root
    replay: {{postgresBin: /usr/lib/postgresql/15/bin}}
  starport:
    root: {root}/starport
    target: barman_to_starport
    mirrors:
      - {{name: offsite, ssh: {{host: backup.example.org, user: montagu, identityFile: /root/.ssh/id_mirror}}, root: /srv/starport}}
"#,
            root = root.display()
        ))
        .expect("test pipeline parses");
        let target: RestoreTarget = serde_saphyr::from_str(&format!(
            r#"apiVersion: reconciler.montagu/v1alpha1
kind: RestoreTarget
metadata: {{name: science}}
spec:
  source: {{root: {root}/starport, target: barman_to_starport, volumeName: volume}}
  volume: {{path: {root}/restored}}
  maxAge: 48h
  consumers: {{containers: [montagu-db], stopForRestore: true}}
"#,
            root = root.display()
        ))
        .expect("test restore target parses");
        let world = FakeWorld::new("2026-11-24T12:00:00Z".parse().expect("timestamp"), root);
        world
            .state()
            .consumers
            .insert("montagu-db".to_string(), true);
        Self {
            world,
            pipeline: Resource::BackupPipeline(pipeline),
            target: Resource::RestoreTarget(target),
            _dir: dir,
        }
    }

    /// Everything converged: a backup, the volume recovered from it, the starport and
    /// the mirror holding its generation, the consumer's volume restored from it.
    pub async fn converged() -> Self {
        let test = Self::empty();
        test.converge().await;
        test.world.state().journal.clear();
        test
    }

    /// Applies one document as `reconciler apply` does.
    pub async fn apply(&self, resource: &Resource) -> ApplyReport {
        let world = self.world.clone();
        let context = move || world.context();
        apply_pipeline(resource, &self.world.drivers(), &context, &Silent, 32, None).await
    }

    /// Applies the pipeline, then the restore target: both converge.
    pub async fn converge(&self) {
        for resource in [&self.pipeline, &self.target] {
            let report = self.apply(resource).await;
            assert!(
                report.converged,
                "{} did not converge: {:#?}\njournal: {}",
                resource.name(),
                report,
                self.journal_text()
            );
            assert!(
                report.steps.iter().all(|s| s.outcome == StepOutcome::Done),
                "{:#?}",
                report.steps
            );
        }
    }

    /// The journal, one call a line.
    pub fn journal_text(&self) -> String {
        self.world
            .journal()
            .iter()
            .map(|c| format!("\n  {c}"))
            .collect()
    }

    /// Where in the journal the first call `op` (whose detail contains `detail`) is.
    pub fn position(&self, op: &str, detail: &str) -> usize {
        self.world
            .journal()
            .iter()
            .position(|c| c.op == op && c.detail.contains(detail))
            .unwrap_or_else(|| panic!("no call {op}({detail}) in {}", self.journal_text()))
    }

    /// Whether a call `op` was made at all.
    pub fn called(&self, op: &str) -> bool {
        self.world.journal().iter().any(|c| c.op == op)
    }
}

/// The newest DONE backup's id.
pub fn newest_done(s: &State) -> Option<String> {
    s.backups
        .iter()
        .filter(|b| b.status == BackupStatus::Done)
        .map(|b| b.id.clone())
        .max()
}

/// The promises that hold at any moment, crash or not: the ones `tests/crash.rs`
/// checks in the real world, and a restore target's.
pub fn check_invariants(s: &State, newest_before: &Option<String>, when: &str) {
    // A marker is only ever on a complete, replayed, cleanly stopped cluster, and
    // its generation names that data.
    if let Some(marker) = &s.volume.marker {
        assert!(
            s.volume.staging.is_none(),
            "{when}: marker beside a staging directory"
        );
        assert!(
            !s.volume.postgres_running,
            "{when}: marker while a replay postgres runs"
        );
        let data = s
            .volume
            .data
            .as_ref()
            .unwrap_or_else(|| panic!("{when}: marker on an empty volume"));
        assert!(data.replayed, "{when}: marker on an unreplayed volume");
        assert_eq!(data.backup_id, marker.backup_id, "{when}: marker's backup");
        assert_eq!(
            s.content_of(&marker.generation),
            Some(Content::Of(data.serial)),
            "{when}: marker names other data"
        );
    }
    // Metadata (starport, mirrors) names exactly the data it describes.
    if let Some(generation) = s.starport_generation() {
        assert_eq!(
            Some(s.starport.data),
            s.content_of(&generation),
            "{when}: starport metadata claims generation {generation} but the copy differs"
        );
    }
    for (name, mirror) in &s.mirrors {
        if let Some(generation) = mirror.metadata.as_ref().and_then(|m| m.generation.clone()) {
            assert_eq!(
                Some(mirror.data),
                s.content_of(&generation),
                "{when}: mirror {name}'s metadata claims generation {generation} but its copy differs"
            );
        }
    }
    // A restored marker names what the volume holds; no consumer runs on a half copy.
    if let Some(marker) = &s.restore_volume.marker
        && marker.state == RestoreState::Restored
    {
        assert_eq!(
            Some(s.restore_volume.data),
            s.content_of(&marker.generation),
            "{when}: restored marker names other data"
        );
    }
    if s.consumers.values().any(|running| *running) {
        assert_ne!(
            s.restore_volume.data,
            Content::Partial,
            "{when}: a consumer runs on a half-copied volume"
        );
    }
    // No backup lost: the newest DONE backup of before stays unless retention
    // (keep: 2) let it go for two newer DONE ones; never fewer than one DONE.
    if let Some(id) = newest_before {
        let kept = s
            .backups
            .iter()
            .any(|b| &b.id == id && b.status == BackupStatus::Done);
        let newer_done = s
            .backups
            .iter()
            .filter(|b| b.id.as_str() > id.as_str() && b.status == BackupStatus::Done)
            .count();
        assert!(
            kept || newer_done >= 2,
            "{when}: backup {id} lost: {:?}",
            s.backups
        );
    }
    assert!(
        s.backups.iter().any(|b| b.status == BackupStatus::Done),
        "{when}: no DONE backup left"
    );
}

/// Everything converged holds the same generation: volume, starport, mirror and
/// the restored volume, with the consumer running on it.
pub fn check_converged(s: &State, when: &str) {
    let marker = s
        .volume
        .marker
        .as_ref()
        .unwrap_or_else(|| panic!("{when}: converged volume is marked"));
    assert_eq!(
        s.starport_generation().as_deref(),
        Some(marker.generation.as_str()),
        "{when}"
    );
    assert_eq!(s.starport.data, s.volume_content(), "{when}");
    for (name, mirror) in &s.mirrors {
        assert_eq!(
            mirror
                .metadata
                .as_ref()
                .and_then(|m| m.generation.as_deref()),
            Some(marker.generation.as_str()),
            "{when}: mirror {name}"
        );
        assert_eq!(mirror.data, s.starport.data, "{when}: mirror {name}");
    }
    let restored = s
        .restore_volume
        .marker
        .as_ref()
        .unwrap_or_else(|| panic!("{when}: restored volume is marked"));
    assert_eq!(restored.state, RestoreState::Restored, "{when}");
    assert_eq!(restored.generation, marker.generation, "{when}");
    assert!(restored.consumers_to_start.is_empty(), "{when}");
    assert_eq!(s.restore_volume.data, s.starport.data, "{when}");
    assert!(
        s.consumers.values().all(|running| *running),
        "{when}: consumers {:?}",
        s.consumers
    );
}

/// Ways the world drifts from converged, each making the plan run certain steps.
#[derive(Clone, Copy, Debug)]
pub enum Drift {
    /// The base backup is older than `maxAge`: takeBaseBackup, then the rest.
    StaleBackup,
    /// Two newer backups beyond keep: deleteBackup, recoverVolume, syncs.
    ExtraBackups,
    /// The volume is older than its `maxAge` (its marker stands, a standby at
    /// rest): catchUpVolume.
    StaleVolume,
    /// The volume is older than its `maxAge` and its marker predates catch-up (no
    /// standby point): recoverVolume.
    StaleOldVolume,
    /// The marker is gone: recoverVolume, then the syncs and a restore.
    LostMarker,
    /// A replay postgres left running on an unmarked volume: stopStrayReplay first.
    StrayReplay,
    /// The starport holds an older copy, of another generation and with other
    /// data: syncStarport.
    StaleStarport,
    /// The mirror holds an older copy: syncMirror.
    StaleMirror,
    /// A consumer a restore stopped is owed a start: startConsumers.
    ConsumerOwed,
}

impl Drift {
    /// Makes the world drift so.
    pub fn apply(self, s: &mut State) {
        match self {
            Drift::StaleBackup => s.now += jiff::SignedDuration::from_hours(24 * 31),
            Drift::ExtraBackups => {
                for _ in 0..2 {
                    s.now += jiff::SignedDuration::from_secs(60);
                    let id = fake::backup_id(s.now);
                    s.backups.push(reconciler::observed::Backup {
                        id,
                        status: BackupStatus::Done,
                        end_time: Some(s.now),
                        size_bytes: Some(1),
                    });
                }
            }
            Drift::StaleVolume => s.now += jiff::SignedDuration::from_hours(25),
            Drift::StaleOldVolume => {
                s.now += jiff::SignedDuration::from_hours(25);
                if let Some(m) = s.volume.marker.as_mut() {
                    m.standby = None;
                }
            }
            Drift::LostMarker => s.volume.marker = None,
            Drift::StrayReplay => {
                s.volume.marker = None;
                s.volume.postgres_running = true;
            }
            Drift::StaleStarport => {
                let older = "an-older-generation".to_string();
                s.generations.insert(older.clone(), 999);
                s.starport.data = Content::Of(999);
                if let Some(m) = s.starport.metadata.as_mut() {
                    m.generation = Some(older);
                }
            }
            Drift::StaleMirror => {
                let older = "an-older-generation".to_string();
                s.generations.insert(older.clone(), 999);
                for mirror in s.mirrors.values_mut() {
                    mirror.data = Content::Of(999);
                    if let Some(m) = mirror.metadata.as_mut() {
                        m.generation = Some(older.clone());
                    }
                }
            }
            Drift::ConsumerOwed => {
                for running in s.consumers.values_mut() {
                    *running = false;
                }
                let owed = s.consumers.keys().cloned().collect();
                if let Some(m) = s.restore_volume.marker.as_mut() {
                    m.consumers_to_start = owed;
                }
            }
        }
    }
}
