//! Planning the starport copy and its mirrors: the `StarportInSync` and
//! `MirrorInSync` conditions, and the sync steps. Pure: a volume something writes
//! to is never copied, a starport another host owns never written, and a mirror
//! follows only a complete, current starport generation.

use super::{
    ConditionStatus, ConditionType, GenerationRef, PipelineStep, Planner, Reason, condition,
};
use crate::observed::{Observation, StarportState, VolumeState, WriteArea};

pub(super) fn plan_starport(p: &mut Planner<'_>, recovery_planned: bool) {
    use ConditionStatus::*;
    let Some(spec) = &p.pipeline.spec.starport else {
        p.plan.conditions.push(condition(
            ConditionType::StarportInSync,
            True,
            Reason::NotConfigured,
            "the pipeline has no starport".to_string(),
        ));
        return;
    };
    let target = format!("{}/{}", spec.root, spec.target);
    let state = match &p.observed.starport {
        Some(Observation::Observed { value }) => value,
        Some(Observation::Unavailable { reason }) => {
            p.plan.conditions.push(condition(
                ConditionType::StarportInSync,
                Unknown,
                Reason::StarportUnavailable,
                format!("the starport could not be inspected: {reason}"),
            ));
            p.wait(format!("the starport to be readable ({reason})"));
            return;
        }
        None => {
            p.plan.conditions.push(condition(
                ConditionType::StarportInSync,
                Unknown,
                Reason::NotObserved,
                "the starport was not observed".to_string(),
            ));
            return;
        }
    };
    // A volume a postgres runs on is changing under its marker: never copied.
    let volume_generation = match p.observed.volume.value() {
        Some(VolumeState::Marked {
            marker,
            in_use: false,
            ..
        }) => Some(marker.generation.clone()),
        _ => None,
    };
    let (status, reason, message) = match state {
        StarportState::NoMetadata { reason } => (
            False,
            Reason::NoMetadata,
            format!("{target} has no valid metadata ({reason})"),
        ),
        StarportState::Synced { metadata } => {
            if let Some(theirs) = &metadata.instance_guid
                && p.observed.machine_id.as_ref() != Some(theirs)
            {
                let ours = p
                    .observed
                    .machine_id
                    .as_deref()
                    .unwrap_or("unknown (no /etc/machine-id)");
                p.plan.conditions.push(condition(
                    ConditionType::StarportInSync,
                    False,
                    Reason::OwnedByAnotherHost,
                    format!("{target} was written by host {theirs}, this host is {ours}"),
                ));
                p.wait(format!(
                        "{target} to be released by host {theirs}: remove its meta/metadata.json to hand it to this host"
                    ));
                return;
            }
            match (&metadata.generation, &volume_generation) {
                (Some(theirs), Some(ours)) if theirs == ours && !recovery_planned => (
                    True,
                    Reason::InSync,
                    format!(
                        "{target} holds generation {ours} (copied {})",
                        metadata.last_backup
                    ),
                ),
                (theirs, _) => (
                    False,
                    Reason::OutOfSync,
                    format!(
                        "{target} holds generation {}, the volume {}",
                        theirs.as_deref().unwrap_or("(none)"),
                        volume_generation.as_deref().unwrap_or("has none")
                    ),
                ),
            }
        }
    };
    p.plan.conditions.push(condition(
        ConditionType::StarportInSync,
        status,
        reason,
        message.clone(),
    ));
    if status == True {
        return;
    }
    // Never sync beside a process writing into the starport, nor from a volume
    // something writes into.
    let writing = [WriteArea::Starport, WriteArea::Volume];
    if (recovery_planned || volume_generation.is_some())
        && super::orphans::writers_block(p, &writing, ConditionType::StarportInSync)
    {
        return;
    }
    if recovery_planned {
        p.step(
            PipelineStep::SyncStarport {
                generation: GenerationRef::FromRecovery,
            },
            format!("{message}; it follows the volume once recovered"),
        );
    } else if let Some(generation) = volume_generation {
        p.step(
            PipelineStep::SyncStarport {
                generation: GenerationRef::Existing(generation),
            },
            message,
        );
    } else {
        p.wait("a valid recovered volume to copy to the starport".to_string());
    }
}

/// One `MirrorInSync` condition per mirror; a sync once the starport holds a
/// complete, current generation (the next plan, after a starport sync, sees it).
pub(super) fn plan_mirrors(p: &mut Planner<'_>) {
    use ConditionStatus::*;
    let Some(starport) = &p.pipeline.spec.starport else {
        return;
    };
    let source = p
        .plan
        .condition(ConditionType::StarportInSync)
        .filter(|c| c.status == True)
        .and_then(
            |_| match p.observed.starport.as_ref().and_then(|s| s.value()) {
                Some(StarportState::Synced { metadata }) => metadata.generation.clone(),
                _ => None,
            },
        );
    for mirror in &starport.mirrors {
        let name = mirror.name.to_string();
        let observed = p
            .observed
            .mirrors
            .iter()
            .find(|m| m.name == name)
            .map(|m| &m.state);
        let (status, reason, message) = match (observed, &source) {
            (None, _) => (
                Unknown,
                Reason::NotObserved,
                "the mirror was not looked at".to_string(),
            ),
            (Some(Observation::Unavailable { reason }), _) => {
                p.wait(format!("mirror {name} to answer ({reason})"));
                (
                    Unknown,
                    Reason::MirrorUnavailable,
                    format!("the mirror could not be inspected: {reason}"),
                )
            }
            (Some(Observation::Observed { value }), source) => {
                let held = match value {
                    StarportState::Synced { metadata } => metadata.generation.clone(),
                    StarportState::NoMetadata { .. } => None,
                };
                match (held, source) {
                    (Some(held), Some(source)) if &held == source => (
                        True,
                        Reason::InSync,
                        format!("holds the starport's generation {source}"),
                    ),
                    (held, Some(source)) => {
                        let what = held.map_or("no complete copy".to_string(), |g| {
                            format!("generation {g}")
                        });
                        p.step(
                            PipelineStep::SyncMirror {
                                mirror: name.clone(),
                                generation: source.clone(),
                            },
                            format!("mirror {name} holds {what}; the starport holds {source}"),
                        );
                        (
                            False,
                            Reason::OutOfSync,
                            format!("holds {what}, the starport {source}"),
                        )
                    }
                    (_, None) => {
                        p.wait(format!(
                            "the starport to hold a complete generation before mirror {name} follows it"
                        ));
                        (
                            False,
                            Reason::WaitingForStarport,
                            "the starport does not hold a complete, current generation yet"
                                .to_string(),
                        )
                    }
                }
            }
        };
        let mut c = condition(ConditionType::MirrorInSync, status, reason, message);
        c.subject = Some(name);
        p.plan.conditions.push(c);
    }
}
