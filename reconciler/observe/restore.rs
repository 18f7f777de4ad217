//! Observation of a restore target: its starport source, its volume and the
//! containers that use it, through the drivers.

use crate::drivers::Drivers;
use crate::observed::{ConsumerState, Observation, RestoreObserved, RestoreVolumeState};
use crate::spec::RestoreTarget;

/// Observes one restore target. Never fails: what can't be seen is recorded as
/// unavailable.
pub async fn observe_restore(target: &RestoreTarget, drivers: &Drivers) -> RestoreObserved {
    crate::drivers::pause::pause_point!("observe", &drivers.cancel, else {});
    let spec = &target.spec;
    let source = match drivers.restore_source.inspect(&spec.source).await {
        Ok(state) => Observation::observed(state),
        Err(e) => Observation::unavailable(&e),
    };
    let volume = match drivers.restore_volume.inspect(&spec.volume).await {
        Ok(state) => Observation::observed(state),
        Err(e) => Observation::unavailable(&e),
    };
    // The listed containers, and any a restore stopped and still owes a start even
    // if the spec no longer lists it: that debt outlives an edit of the spec.
    let mut names: Vec<String> = spec
        .consumers
        .containers
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Observation::Observed {
        value:
            RestoreVolumeState::Present {
                marker: Some(marker),
                ..
            },
    } = &volume
    {
        for owed in &marker.consumers_to_start {
            if !names.contains(owed) {
                names.push(owed.clone());
            }
        }
    }
    let consumers = if names.is_empty() {
        Observation::observed(Vec::new())
    } else {
        let mut states = Vec::new();
        let mut failure = None;
        for container in &names {
            match drivers.consumers.state(container.as_str()).await {
                Ok(state) => states.push(ConsumerState {
                    container: container.to_string(),
                    state,
                }),
                Err(e) => {
                    failure = Some(Observation::unavailable(&e));
                    break;
                }
            }
        }
        failure.unwrap_or(Observation::observed(states))
    };
    RestoreObserved {
        source,
        volume,
        consumers,
    }
}
