//! Observing the processes that write into a pipeline's volume or starport: one
//! scan per pass, shared by the volume's and the starport's sections of the plan.
//! It asks the driver where the processes live (this host; barman's container,
//! with the volume as barman sees it) and decides nothing about them.

use crate::drivers::Drivers;
use crate::drivers::orphans::ScanPlace;
use crate::drivers::placement::Placement;
use crate::drivers::starport::StarportPaths;
use crate::observed::{Observation, WriteArea, WritingProcess};
use crate::spec::BackupPipeline;

/// The writers of `pipeline`'s volume and starport, or why they could not be listed.
pub async fn observe_writers(
    pipeline: &BackupPipeline,
    drivers: &Drivers,
) -> Observation<Vec<WritingProcess>> {
    let spec = &pipeline.spec;
    let volume = match drivers.volume.locate(&spec.recovered_volume).await {
        Ok(path) => path,
        Err(e) => return Observation::unavailable(&e),
    };
    let mut host = Vec::new();
    if let Some(path) = &volume {
        host.push((WriteArea::Volume, path.display().to_string()));
    }
    if let (Some(starport), Some(name)) = (&spec.starport, pipeline.starport_volume_name()) {
        let target = StarportPaths::new(starport, &name).target;
        host.push((WriteArea::Starport, target.display().to_string()));
    }
    let mut places = vec![ScanPlace {
        container: None,
        roots: host,
    }];
    // barman recovers from inside its container, where the volume has barman's path.
    if let Placement::Exec { container } = Placement::of_barman(&spec.barman) {
        let seen_as = spec
            .recovered_volume
            .barman_path
            .as_ref()
            .map(|p| p.as_path().display().to_string())
            .or_else(|| volume.as_ref().map(|p| p.display().to_string()));
        if let Some(path) = seen_as {
            places.push(ScanPlace {
                container: Some(container),
                roots: vec![(WriteArea::Volume, path)],
            });
        }
    }
    match drivers.orphans.scan(&places).await {
        Ok(found) => Observation::observed(found),
        Err(e) => Observation::unavailable(&e),
    }
}
