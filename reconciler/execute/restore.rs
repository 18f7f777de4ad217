//! Carries out a restore target's steps. Decides nothing: the order is the safety
//! argument. A restore marks the volume `restoring` before anything touches it
//! (recording the consumers it will stop, so they are started again even after an
//! interruption), stops those consumers, copies, checks that nothing used the
//! volume meanwhile and that it holds exactly the copy, then that the starport
//! still holds the generation it copied, and only then marks the volume
//! `restored`. A restore that fails before copying anything undoes itself: the
//! consumers it stopped are started again and the volume gets its previous marker
//! back.

use jiff::Timestamp;

use super::{ExecuteError, StepDetail};
use crate::drivers::Drivers;
use crate::drivers::pause::pause_point;
use crate::observed::{
    RestoreMarker, RestoreObserved, RestoreState, RestoreVolumeState, StarportMetadata,
    StarportState,
};
use crate::plan::RestoreStep;
use crate::spec::RestoreTarget;

/// Carries out `step` of `target`, planned from `observed`.
pub async fn execute_restore_step(
    target: &RestoreTarget,
    step: &RestoreStep,
    observed: &RestoreObserved,
    drivers: &Drivers,
    clock: &(dyn Fn() -> Timestamp + Send + Sync),
) -> Result<StepDetail, ExecuteError> {
    match step {
        RestoreStep::RestoreVolume {
            generation,
            stop_consumers,
        } => {
            pause_point!("step:restoreVolume", &drivers.cancel);
            restore_volume(target, generation, stop_consumers, observed, drivers, clock).await
        }
        RestoreStep::StartConsumers { containers } => {
            pause_point!("step:startConsumers", &drivers.cancel);
            start_consumers(target, containers, drivers).await
        }
    }
}

/// The source's metadata, if it holds `generation` completely.
async fn source_holding(
    target: &RestoreTarget,
    generation: &str,
    drivers: &Drivers,
) -> Result<StarportMetadata, ExecuteError> {
    match drivers.restore_source.inspect(&target.spec.source).await? {
        StarportState::Synced { metadata } if metadata.generation_key() == generation => {
            Ok(metadata)
        }
        StarportState::Synced { metadata } => Err(ExecuteError::Changed(format!(
            "the starport now holds generation {}, not {generation}",
            metadata.generation_key()
        ))),
        StarportState::NoMetadata { reason } => Err(ExecuteError::Changed(format!(
            "the starport no longer holds a complete copy of generation {generation} ({reason})"
        ))),
    }
}

fn marker_of(observed: &RestoreObserved) -> Option<&RestoreMarker> {
    match observed.volume.value() {
        Some(RestoreVolumeState::Present { marker, .. }) => marker.as_ref(),
        _ => None,
    }
}

async fn restore_volume(
    target: &RestoreTarget,
    generation: &str,
    stop_consumers: &[String],
    observed: &RestoreObserved,
    drivers: &Drivers,
    clock: &(dyn Fn() -> Timestamp + Send + Sync),
) -> Result<StepDetail, ExecuteError> {
    let spec = &target.spec;
    let metadata = source_holding(target, generation, drivers).await?;
    let path = drivers
        .restore_volume
        .prepare(&spec.volume, target.name().as_str())
        .await?;
    // Consumers an earlier, interrupted restore stopped are still owed a start.
    let mut consumers_to_start: Vec<String> = marker_of(observed)
        .map(|m| m.consumers_to_start.clone())
        .unwrap_or_default();
    for name in stop_consumers {
        if !consumers_to_start.contains(name) {
            consumers_to_start.push(name.clone());
        }
    }
    let mut marker = RestoreMarker {
        state: RestoreState::Restoring,
        generation: generation.to_string(),
        recovered_at: metadata.data_time(),
        restored_at: None,
        consumers_to_start,
        target: target.name().to_string(),
    };
    // First: from here on nothing may trust the data.
    drivers.restore_volume.write_marker(&path, &marker).await?;
    // Whatever starts on the volume after this may write into what is copied.
    let unused_since = clock();
    if let Err(e) = stop_and_check(target, stop_consumers, &path, drivers).await {
        // Nothing was copied: the data is what it was, so its consumers get it back.
        undo_before_copy(
            target,
            marker_of(observed),
            stop_consumers,
            &marker,
            &path,
            drivers,
        )
        .await;
        return Err(e);
    }
    let copied = drivers.restore_source.copy(&spec.source, &path).await?;
    pause_point!("restore:copied", &drivers.cancel);
    // Nothing may have used the volume meanwhile (a consumer started by hand, even
    // one that stopped again): what it wrote is mixed with the copy.
    let volume = spec.volume.location().to_string();
    let used = drivers
        .restore_volume
        .used_since(&spec.volume, &path, unused_since)
        .await
        .map_err(|source| ExecuteError::UseUnknown {
            volume: volume.clone(),
            source: Box::new(source),
        })?;
    if let Some(user) = used {
        return Err(ExecuteError::UsedDuringRestore { volume, user });
    }
    // Whatever wrote into it, it must now hold exactly the copy.
    let differences = drivers
        .restore_source
        .differences(&spec.source, &path)
        .await;
    // Then the starport must still hold the generation copied, checked before the
    // comparison is judged: a starport that changed under the copy shows as
    // differences too, and is said as such, so no one looks for a writer that does
    // not exist. Checked last of all: the backup host removes the metadata before
    // it touches the data, so a copy compared equal and still published now was
    // not changing.
    source_holding(target, generation, drivers).await?;
    let differences = differences?;
    if let Some(first) = differences.first() {
        return Err(ExecuteError::UsedDuringRestore {
            volume,
            user: format!(
                "it differs from the starport copy in {} place(s), such as: {first}",
                differences.len()
            ),
        });
    }
    marker.state = RestoreState::Restored;
    marker.restored_at = Some(clock());
    drivers.restore_volume.write_marker(&path, &marker).await?;
    Ok(format!(
        "restored generation {generation} into {}; rsync moved {} of {} bytes",
        spec.volume.location(),
        copied.literal_bytes,
        copied.total_bytes
    ))
}

/// Stops the consumers to stop and checks that nothing else uses the volume.
async fn stop_and_check(
    target: &RestoreTarget,
    stop_consumers: &[String],
    path: &std::path::Path,
    drivers: &Drivers,
) -> Result<(), ExecuteError> {
    let spec = &target.spec;
    for name in stop_consumers {
        drivers
            .consumers
            .stop(name, spec.consumers.stop_timeout.to_std())
            .await
            .map_err(|source| ExecuteError::Consumer {
                container: name.clone(),
                source,
            })?;
    }
    pause_point!("restore:consumersStopped", &drivers.cancel);
    // Checked again here, not only at observation: something may have started since.
    drivers
        .restore_volume
        .ensure_unused(&spec.volume, path)
        .await?;
    Ok(())
}

/// After a restore failed before copying anything: starts again the consumers it
/// stopped and puts back the marker the volume had. A consumer that does not start
/// stays on the record, to be started by a later pass. Best effort: the restore's
/// own error is what gets reported, and a marker left `restoring` only costs a
/// restore.
async fn undo_before_copy(
    target: &RestoreTarget,
    before: Option<&RestoreMarker>,
    stopped: &[String],
    restoring: &RestoreMarker,
    path: &std::path::Path,
    drivers: &Drivers,
) {
    let mut still_owed: Vec<String> = before
        .map(|m| m.consumers_to_start.clone())
        .unwrap_or_default();
    for name in stopped {
        if let Err(e) = drivers.consumers.start(name).await {
            tracing::warn!(
                restore_target = %target.name(),
                container = %name,
                error = %crate::errors::error_chain(&e),
                "a consumer stopped for a failed restore did not start again"
            );
            if !still_owed.contains(name) {
                still_owed.push(name.clone());
            }
        }
    }
    let mut marker = match before {
        Some(m) => m.clone(),
        None => restoring.clone(),
    };
    marker.consumers_to_start = still_owed;
    if let Err(e) = drivers.restore_volume.write_marker(path, &marker).await {
        tracing::warn!(
            restore_target = %target.name(),
            error = %crate::errors::error_chain(&e),
            "the marker of a restore that copied nothing could not be put back"
        );
    }
}

async fn start_consumers(
    target: &RestoreTarget,
    containers: &[String],
    drivers: &Drivers,
) -> Result<StepDetail, ExecuteError> {
    let spec = &target.spec;
    for name in containers {
        drivers
            .consumers
            .start(name)
            .await
            .map_err(|source| ExecuteError::Consumer {
                container: name.clone(),
                source,
            })?;
    }
    // The record is cleared only once every start succeeded.
    let path = drivers
        .restore_volume
        .locate(&spec.volume)
        .await?
        .ok_or_else(|| ExecuteError::Changed("the volume is gone".into()))?;
    let RestoreVolumeState::Present {
        marker: Some(mut marker),
        ..
    } = drivers.restore_volume.inspect(&spec.volume).await?
    else {
        return Err(ExecuteError::Changed("the volume lost its marker".into()));
    };
    marker.consumers_to_start.clear();
    drivers.restore_volume.write_marker(&path, &marker).await?;
    Ok(if containers.is_empty() {
        "no stopped consumer left to start; record cleared".to_string()
    } else {
        format!("started {}", containers.join(", "))
    })
}
