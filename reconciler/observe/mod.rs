//! Observation: asks the drivers what exists and assembles the plain-data
//! snapshot ([`crate::observed`]) the planner reads. Never fails: what can't be
//! seen is recorded as unavailable, with the reason.
//!
//! It decides nothing (which step, which wait): that is the planner's.

use crate::drivers::Drivers;
use crate::drivers::placement::Placement;
use crate::observed::{
    Backup, BackupActivity, BackupStatus, BarmanState, MirrorObservation, Observation, Observed,
};
use crate::spec::BackupPipeline;

mod orphans;
mod restore;

pub use orphans::observe_writers;

pub use restore::observe_restore;

/// A catalogue with STARTED entries: is anything running them? Only a STARTED
/// entry needs the question, so a converged pass never pays for it.
///
/// The look is a sandwich: the catalogue before, barman's lock and copies, the
/// catalogue after. An entry STARTED in both lists while nothing held the lock in
/// between cannot be a live backup's: a live backup holds the lock from before its
/// entry exists until after its final status is written. An entry that appeared
/// meanwhile is left out of `started_before`, and so never judged dead.
async fn look_for_running_backups(
    drivers: &Drivers,
    barman: &crate::spec::BarmanSpec,
    before: Vec<Backup>,
) -> Observation<BarmanState> {
    let activity = match drivers.barman.backup_activity(barman).await {
        Ok(activity) => activity,
        Err(e) => {
            return Observation::observed(BarmanState {
                backups: before,
                activity: Some(Observation::unavailable(&e)),
            });
        }
    };
    let after = match drivers.barman.list_backups_uncached(barman).await {
        Ok(after) => after,
        Err(e) => return Observation::unavailable(&e),
    };
    let started_before = before
        .iter()
        .filter(|b| b.status == BackupStatus::Started)
        .map(|b| b.id.clone())
        .collect();
    Observation::observed(BarmanState {
        backups: after,
        activity: Some(Observation::observed(BackupActivity {
            started_before,
            ..activity
        })),
    })
}

/// Observes one pipeline. Never fails: what can't be seen is recorded as unavailable.
pub async fn observe(pipeline: &BackupPipeline, drivers: &Drivers) -> Observed {
    // After a shutdown the caller starts nothing new, whatever is observed.
    crate::drivers::pause::pause_point!("observe", &drivers.cancel, else {});
    let spec = &pipeline.spec;
    let volume_name = pipeline.starport_volume_name().unwrap_or_default();
    // The looks are independent reads of different things: taken at once, a pass
    // costs its slowest look (one barman call), not their sum.
    let barman = async {
        match drivers.barman.list_backups(&spec.barman).await {
            Ok(backups) if backups.iter().any(|b| b.status == BackupStatus::Started) => {
                look_for_running_backups(drivers, &spec.barman, backups).await
            }
            Ok(backups) => Observation::observed(BarmanState::new(backups)),
            Err(e) => Observation::unavailable(&e),
        }
    };
    let volume = async {
        let ignore = Placement::of_barman(&spec.barman).containers();
        match drivers
            .volume
            .inspect(&spec.recovered_volume, &ignore)
            .await
        {
            Ok(state) => Observation::observed(state),
            Err(e) => Observation::unavailable(&e),
        }
    };
    let starport = async {
        let starport = spec.starport.as_ref()?;
        Some(
            match drivers.starport.inspect(starport, &volume_name).await {
                Ok(state) => Observation::observed(state),
                Err(e) => Observation::unavailable(&e),
            },
        )
    };
    let wal = async {
        spec.wal_streaming.as_ref()?;
        Some(match drivers.barman.wal_health(&spec.barman).await {
            Ok(health) => Observation::observed(health),
            Err(e) => Observation::unavailable(&e),
        })
    };
    let mirrors = futures_util::future::join_all(
        spec.starport
            .iter()
            .flat_map(|starport| starport.mirrors.iter().map(move |m| (starport, m)))
            .map(|(starport, mirror)| {
                let volume_name = &volume_name;
                async move {
                    let state = match drivers.mirror.inspect(mirror, starport, volume_name).await {
                        Ok(state) => Observation::observed(state),
                        Err(e) => Observation::unavailable(&e),
                    };
                    MirrorObservation {
                        name: mirror.name.to_string(),
                        state,
                    }
                }
            }),
    );
    let writers = observe_writers(pipeline, drivers);
    let (barman, volume, starport, wal, mirrors, writers) =
        tokio::join!(barman, volume, starport, wal, mirrors, writers);
    Observed {
        barman,
        volume,
        starport,
        machine_id: drivers.host.machine_id(),
        wal,
        mirrors,
        last_backup_taken: None,
        writers: Some(writers),
    }
}
