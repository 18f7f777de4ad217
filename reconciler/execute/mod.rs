//! The executor: carries out one planned step through the drivers (a restore
//! target's steps in [`restore`]).
//!
//! It decides nothing. Each step is a fixed sequence whose order is the safety
//! argument: a recovery invalidates the volume's marker before touching the data and
//! writes it last; a sync invalidates the starport metadata before rsync and writes
//! it last, after checking that the volume still holds the generation it copied.
//! One step per call: callers re-observe and re-plan between steps.

mod catch_up;
mod rest_as_standby;
mod restore;
mod wal_target;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::drivers::Drivers;
use crate::drivers::barman::BarmanError;
use crate::drivers::pause::pause_point;
use crate::drivers::placement::Placement;
use crate::drivers::replay::ReplayError;
use crate::drivers::starport::StarportError;
use crate::drivers::volume::VolumeError;
use crate::observed::{BackupStatus, Observed, StarportMetadata, VolumeMarker, VolumeState};
use crate::plan::{BackupRef, GenerationRef, PipelineStep};
use crate::spec::{BackupPipeline, RecoveredVolumeSpec};

pub use restore::execute_restore_step;

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// barman failed or refused.
    #[error("barman step failed")]
    Barman(#[from] BarmanError),
    /// The volume could not be prepared or marked.
    #[error("volume step failed")]
    Volume(#[from] VolumeError),
    /// WAL replay failed.
    #[error("WAL replay failed")]
    Replay(#[from] ReplayError),
    /// The starport could not be written.
    #[error("starport step failed")]
    Starport(#[from] StarportError),
    /// A process left writing could not be stopped.
    #[error("stopping a process left writing failed")]
    Orphan(#[from] crate::drivers::orphans::OrphanError),
    /// The step refers to the result of an earlier step that has not run.
    #[error("step `{step}` depends on an earlier step; re-plan before running it")]
    Unresolved {
        /// The step.
        step: String,
    },
    /// A recovery left no WAL segment in the volume's `pg_wal` to replay through.
    #[error("barman recovered backup {backup_id} with no WAL segment in pg_wal")]
    NoWal {
        /// The backup.
        backup_id: String,
    },
    /// The primary switched timelines since the volume's last replay: it cannot
    /// follow, and is left unmarked for a full recovery.
    #[error(
        "barman archived the history of timeline {next}: the volume replayed timeline {timeline} and must be recovered in full"
    )]
    TimelineChanged {
        /// The volume's timeline.
        timeline: u32,
        /// The new one.
        next: u32,
    },
    /// barman lacks a WAL segment before the one the primary's switch closed: the
    /// volume would miss writes, so it stays unmarked.
    #[error(
        "barman cannot serve WAL segment {missing}, which comes before {closed} (the segment the switch closed); check `barman check` and `barman list-wals`"
    )]
    WalGap {
        /// The first segment barman lacks.
        missing: String,
        /// The segment the switch closed.
        closed: String,
    },
    /// The world changed between planning and acting.
    #[error("the world changed since the plan was made: {0}")]
    Changed(String),
    /// A consumer container could not be stopped or started.
    #[error("consumer container {container} could not be stopped or started")]
    Consumer {
        /// The container.
        container: String,
        /// The engine's error.
        #[source]
        source: crate::drivers::docker::DockerError,
    },
    /// Something used a volume while it was being restored: the copy may be mixed
    /// with what that user wrote, so it stays marked `restoring`.
    #[error(
        "{volume} was used while it was being restored ({user}); it stays marked restoring and is restored again once nothing uses it"
    )]
    UsedDuringRestore {
        /// The volume.
        volume: String,
        /// What used it, in words.
        user: String,
    },
    /// Whether anything used a volume during its restore could not be told.
    #[error(
        "cannot tell whether anything used {volume} while it was being restored; it stays marked restoring"
    )]
    UseUnknown {
        /// The volume.
        volume: String,
        /// Why.
        #[source]
        source: Box<VolumeError>,
    },
    /// The reconciler is shutting down; the step stopped where it was.
    #[error(transparent)]
    #[cfg(feature = "failpoints")]
    Interrupted(#[from] crate::drivers::pause::Interrupted),
}

impl ExecuteError {
    /// True when the step could not start because something else is busy (a backup
    /// barman already runs): wait and look again, not a failure.
    pub fn is_busy(&self) -> bool {
        matches!(self, ExecuteError::Barman(e) if e.is_busy())
    }
}

/// What a completed step did, for the operator.
pub type StepDetail = String;

const TAKEN_PREFIX: &str = "backup ";
const TAKEN_SUFFIX: &str = " is DONE";

/// The id in a completed `TakeBaseBackup`'s detail.
pub fn backup_taken(detail: &str) -> Option<&str> {
    detail
        .strip_prefix(TAKEN_PREFIX)?
        .strip_suffix(TAKEN_SUFFIX)
        .filter(|id| !id.is_empty() && !id.contains(' '))
}

/// Carries out `step` of `pipeline`. `observed` is the snapshot the step was planned
/// from; `clock` gives the current time for the records the step writes.
pub async fn execute_step(
    pipeline: &BackupPipeline,
    step: &PipelineStep,
    observed: &Observed,
    drivers: &Drivers,
    clock: &(dyn Fn() -> Timestamp + Send + Sync),
) -> Result<StepDetail, ExecuteError> {
    let spec = &pipeline.spec;
    #[cfg(feature = "failpoints")]
    let action = serde_json::to_value(step)
        .ok()
        .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(String::from))
        .unwrap_or_default();
    pause_point!(&format!("step:{action}"), &drivers.cancel);
    match step {
        PipelineStep::TakeBaseBackup => {
            let id = drivers
                .barman
                .take_backup(&spec.barman, spec.base_backup.timeout.to_std())
                .await?;
            Ok(format!("{TAKEN_PREFIX}{id}{TAKEN_SUFFIX}"))
        }
        PipelineStep::DeleteBackup { backup_id } => {
            let planned_as_dead = observed.barman.value().is_some_and(|b| {
                b.backups
                    .iter()
                    .any(|e| &e.id == backup_id && e.status == BackupStatus::Started)
            });
            if planned_as_dead {
                // barman refuses to delete a running backup only when it is the
                // oldest: look again, just before. The lock first, the entry
                // after: STARTED after a moment with no lock holder is dead (a live
                // backup holds the lock until its final status is written), while
                // one that finished meanwhile reads DONE and is kept.
                let now = drivers.barman.backup_activity(&spec.barman).await?;
                if now.lock_held || now.copying.iter().any(|id| id == backup_id) {
                    return Err(ExecuteError::Changed(format!(
                        "a barman backup runs on {} now; STARTED backup {backup_id} is left alone",
                        spec.barman.server
                    )));
                }
                let status = drivers
                    .barman
                    .list_backups_uncached(&spec.barman)
                    .await?
                    .into_iter()
                    .find(|b| &b.id == backup_id)
                    .map(|b| b.status);
                if status != Some(BackupStatus::Started) {
                    return Err(ExecuteError::Changed(format!(
                        "backup {backup_id} is no longer STARTED ({}); it is left alone",
                        status.map_or("gone".to_string(), |s| format!("{s:?}"))
                    )));
                }
            }
            drivers
                .barman
                .delete_backup(&spec.barman, backup_id)
                .await?;
            Ok(format!("backup {backup_id} deleted"))
        }
        PipelineStep::RecoverVolume { backup } => {
            let BackupRef::Existing(backup_id) = backup else {
                return Err(ExecuteError::Unresolved {
                    step: step.to_string(),
                });
            };
            recover_volume(pipeline, backup_id, observed, drivers, clock).await
        }
        PipelineStep::CatchUpVolume {
            backup_id,
            after_segment,
            timeline,
        } => {
            catch_up::catch_up_volume(
                pipeline,
                backup_id,
                after_segment,
                *timeline,
                observed,
                drivers,
                clock,
            )
            .await
        }
        PipelineStep::StopStrayReplay { replay } => {
            let path = drivers
                .volume
                .locate(&spec.recovered_volume)
                .await?
                .ok_or_else(|| ExecuteError::Changed("the volume is gone".into()))?;
            drivers
                .replay
                .stop_stray(
                    replay,
                    &path,
                    spec.recovered_volume.replay.stop_timeout.to_std(),
                )
                .await?;
            Ok(format!("stray replay postgres ({replay}) stopped"))
        }
        PipelineStep::StopOrphan { process } => {
            let how = drivers
                .orphans
                .stop(process, crate::drivers::command::TERMINATE_GRACE)
                .await?;
            tracing::info!(process = %process, outcome = %how, "stopped a process left by a killed reconciler");
            Ok(format!("{process}: {how}"))
        }
        PipelineStep::SyncMirror { mirror, generation } => {
            sync_mirror(pipeline, mirror, generation, drivers).await
        }
        PipelineStep::RunBarmanCron => {
            let timeout = spec
                .wal_streaming
                .as_ref()
                .map_or(std::time::Duration::from_secs(300), |w| {
                    w.cron_timeout.to_std()
                });
            drivers.barman.cron(&spec.barman, timeout).await?;
            Ok("barman cron ran; receive-wal is running".to_string())
        }
        PipelineStep::ResetReplicationSlot => {
            drivers.barman.reset_slot(&spec.barman).await?;
            Ok("replication slot dropped and created again".to_string())
        }
        PipelineStep::SyncStarport { generation } => {
            let GenerationRef::Existing(generation) = generation else {
                return Err(ExecuteError::Unresolved {
                    step: step.to_string(),
                });
            };
            sync_starport(pipeline, generation, observed, drivers, clock).await
        }
    }
}

/// Where barman must recover to: the staging directory as barman sees it (through
/// `barmanPath` when barman's view of the volume differs from this host's).
fn barman_view(volume: &RecoveredVolumeSpec, path: &Path, staging: &Path) -> PathBuf {
    match (&volume.barman_path, staging.strip_prefix(path)) {
        (Some(seen_as), Ok(inside)) => seen_as.as_path().join(inside),
        _ => staging.to_path_buf(),
    }
}

/// A generation names one recovery: the backup and the second it finished.
pub fn generation_id(backup_id: &str, recovered_at: Timestamp) -> String {
    format!("{backup_id}-{}", recovered_at.strftime("%Y%m%dT%H%M%SZ"))
}

async fn recover_volume(
    pipeline: &BackupPipeline,
    backup_id: &str,
    observed: &Observed,
    drivers: &Drivers,
    clock: &(dyn Fn() -> Timestamp + Send + Sync),
) -> Result<StepDetail, ExecuteError> {
    let volume = &pipeline.spec.recovered_volume;
    // The account that owns what barman recovers, looked up where barman runs.
    let owner = drivers
        .barman
        .account(&pipeline.spec.barman, volume.owner.as_str())
        .await?;
    // The current WAL segment is closed beside the recovery, not before it: the
    // segment it names is needed only when fetching, after `barman recover`, so
    // the switch's barman start-up costs no time of its own. Nothing here waits
    // for barman to receive it; fetching does, only if it must.
    let (target, recovered) = tokio::join!(
        wal_target::close_current_segment(pipeline, drivers),
        async {
            let path = drivers
                .volume
                .create(volume, pipeline.name().as_str())
                .await?;
            // The marker goes first: from here until the end the data is not to be used.
            drivers.volume.invalidate_marker(&path).await?;
            let staging = drivers
                .volume
                .prepare_for_recovery(
                    volume,
                    &Placement::of_barman(&pipeline.spec.barman).containers(),
                    &path,
                    owner,
                )
                .await?;
            let destination = barman_view(volume, &path, &staging);
            tracing::info!(backup = backup_id, destination = %destination.display(), "barman recover");
            drivers
                .barman
                .recover(
                    &pipeline.spec.barman,
                    backup_id,
                    &destination,
                    volume.recover_timeout.to_std(),
                )
                .await?;
            pause_point!("recover:staged", &drivers.cancel);
            drivers.volume.promote_staging(&path, &staging).await?;
            Ok::<_, ExecuteError>(path)
        }
    );
    let path = recovered?;
    let path = path.as_path();
    let recovered_bytes = {
        let path = path.to_path_buf();
        crate::drivers::fsutil::blocking(move || crate::drivers::fsutil::dir_size(&path))
            .await
            .unwrap_or(0)
    };
    // Read before postgres first runs: a restartpoint recycles old segments under
    // future names.
    let recovered_through =
        drivers
            .volume
            .newest_segment(path)
            .await?
            .ok_or_else(|| ExecuteError::NoWal {
                backup_id: backup_id.to_string(),
            })?;
    // `barman recover` archives what streaming delivered, then copies its
    // archive; but the streaming archiver keeps the newest complete segment back
    // until WAL of the next one arrives (barman-facts P1), so on an idle primary
    // the segment the switch closed is still in `streaming/`, where `get-wal`
    // serves it. On a busy one this fetches nothing, or what arrived meanwhile.
    let rested = rest_as_standby::replay_and_mark(
        pipeline,
        backup_id,
        path,
        recovered_through,
        target,
        owner,
        observed,
        drivers,
        clock,
        rest_as_standby::Pauses {
            fetching: "recover:fetching",
            stopped: "recover:stopped",
        },
    )
    .await?;
    Ok(format!(
        "backup {backup_id} recovered ({recovered_bytes} bytes), replayed to {}, generation {}",
        rested.replayed_to_lsn, rested.generation
    ))
}

async fn current_generation(
    pipeline: &BackupPipeline,
    drivers: &Drivers,
) -> Result<Option<VolumeMarker>, ExecuteError> {
    let state = drivers
        .volume
        .inspect(
            &pipeline.spec.recovered_volume,
            &Placement::of_barman(&pipeline.spec.barman).containers(),
        )
        .await?;
    // A volume a postgres runs on does not hold what its marker says.
    Ok(match state {
        VolumeState::Marked {
            marker,
            in_use: false,
            ..
        } => Some(marker),
        _ => None,
    })
}

/// The local starport's metadata, if it holds `generation` completely.
async fn starport_holding(
    pipeline: &BackupPipeline,
    generation: &str,
    drivers: &Drivers,
) -> Result<StarportMetadata, ExecuteError> {
    let Some(starport) = &pipeline.spec.starport else {
        return Err(ExecuteError::Changed("the pipeline has no starport".into()));
    };
    let volume_name = pipeline.starport_volume_name().unwrap_or_default();
    match drivers.starport.inspect(starport, &volume_name).await? {
        crate::observed::StarportState::Synced { metadata }
            if metadata.generation.as_deref() == Some(generation) =>
        {
            Ok(metadata)
        }
        _ => Err(ExecuteError::Changed(format!(
            "the starport no longer holds generation {generation}"
        ))),
    }
}

/// Same order as the starport: the mirror's metadata goes first, is written last,
/// and only after checking the local copy still holds the generation it sent.
async fn sync_mirror(
    pipeline: &BackupPipeline,
    name: &str,
    generation: &str,
    drivers: &Drivers,
) -> Result<StepDetail, ExecuteError> {
    let starport = pipeline
        .spec
        .starport
        .as_ref()
        .ok_or_else(|| ExecuteError::Changed("the pipeline has no starport".into()))?;
    let mirror = starport
        .mirrors
        .iter()
        .find(|m| m.name.as_str() == name)
        .ok_or_else(|| ExecuteError::Changed(format!("mirror {name} is no longer in the spec")))?;
    let volume_name = pipeline.starport_volume_name().unwrap_or_default();
    starport_holding(pipeline, generation, drivers).await?;
    drivers.mirror.invalidate_metadata(mirror, starport).await?;
    pause_point!("mirror:invalidated", &drivers.cancel);
    let copied = drivers.mirror.copy(mirror, starport, &volume_name).await?;
    // The starport must not have changed under rsync, or the mirror holds a mix.
    let metadata = starport_holding(pipeline, generation, drivers).await?;
    drivers
        .mirror
        .write_metadata(mirror, starport, &metadata)
        .await?;
    Ok(format!(
        "mirror {name} holds generation {generation}; rsync sent {} of {} bytes",
        copied.bytes_sent, copied.total_bytes
    ))
}

async fn sync_starport(
    pipeline: &BackupPipeline,
    generation: &str,
    _observed: &Observed,
    drivers: &Drivers,
    clock: &(dyn Fn() -> Timestamp + Send + Sync),
) -> Result<StepDetail, ExecuteError> {
    let Some(starport) = &pipeline.spec.starport else {
        return Err(ExecuteError::Changed("the pipeline has no starport".into()));
    };
    let volume_name = pipeline.starport_volume_name().unwrap_or_default();
    let check = |marker: Option<VolumeMarker>| match marker {
        Some(m) if m.generation == generation => Ok(m),
        Some(m) => Err(ExecuteError::Changed(format!(
            "the volume now holds generation {}, not {generation}",
            m.generation
        ))),
        None => Err(ExecuteError::Changed("the volume lost its marker".into())),
    };
    check(current_generation(pipeline, drivers).await?)?;
    let source = drivers
        .volume
        .locate(&pipeline.spec.recovered_volume)
        .await?
        .ok_or_else(|| ExecuteError::Changed("the volume is gone".into()))?;
    // Metadata goes first: a copy without it is never trusted.
    drivers
        .starport
        .invalidate_metadata(starport, &volume_name)
        .await?;
    pause_point!("sync:invalidated", &drivers.cancel);
    let copied = drivers
        .starport
        .copy(&source, starport, &volume_name, starport.timeout.to_std())
        .await?;
    pause_point!("sync:copied", &drivers.cancel);
    // The volume must not have changed under rsync, or the copy is a mix.
    let marker = check(current_generation(pipeline, drivers).await?)?;
    let now = clock();
    let metadata = StarportMetadata {
        last_backup: now
            .to_zoned_datetime(TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S%.6f%:z")
            .to_string(),
        instance_guid: drivers.host.machine_id(),
        generation: Some(marker.generation.clone()),
        backup_id: Some(marker.backup_id.clone()),
        recovered_at: Some(marker.recovered_at),
    };
    drivers
        .starport
        .write_metadata(starport, &volume_name, &metadata)
        .await?;
    Ok(format!(
        "starport holds generation {}; rsync sent {} of {} bytes",
        marker.generation, copied.bytes_sent, copied.total_bytes
    ))
}
