//! Planning WAL streaming: the `WalStreaming` condition, `barman cron` when
//! receive-wal is down, and a replication slot reset only when the spec opts in.
//! Pure: it never resets a slot on its own initiative.

use super::{Condition, ConditionStatus, ConditionType, PipelineStep, Planner, Reason, condition};
use crate::observed::{CheckItem, Observation};

/// The `WalStreaming` condition, and the repair it needs: `barman cron` when
/// receive-wal is down (it starts it), a slot reset only when the spec opts in.
pub(super) fn plan_wal_streaming(p: &mut Planner<'_>) -> Option<Condition> {
    use ConditionStatus::*;
    let spec = p.pipeline.spec.wal_streaming.as_ref()?;
    let health = match p.observed.wal.as_ref() {
        None => {
            return Some(condition(
                ConditionType::WalStreaming,
                Unknown,
                Reason::NotObserved,
                "barman check was not run".to_string(),
            ));
        }
        Some(Observation::Unavailable { reason }) => {
            p.wait(format!("barman check to answer ({reason})"));
            return Some(condition(
                ConditionType::WalStreaming,
                Unknown,
                Reason::BarmanUnavailable,
                format!("barman check could not be observed: {reason}"),
            ));
        }
        Some(Observation::Observed { value }) => value,
    };
    let failed = |item: &Option<CheckItem>| item.as_ref().is_some_and(|c| !c.ok);
    let hint = |item: &Option<CheckItem>| {
        item.as_ref()
            .map(|c| c.hint.clone())
            .filter(|h| !h.is_empty())
            .map_or(String::new(), |h| format!(" ({h})"))
    };
    let server = p.pipeline.spec.barman.server.to_string();
    // A slot that is merely inactive comes back with receive-wal; one that is missing
    // or broken keeps receive-wal from running at all, so it is looked at first.
    let slot_broken = failed(&health.replication_slot)
        && !health
            .replication_slot
            .as_ref()
            .is_some_and(|c| c.hint.contains("not active"));
    let (reason, message) = if failed(&health.postgresql) || failed(&health.postgresql_streaming) {
        // Nothing on barman's side can fix the primary or the network.
        let message = format!(
            "barman cannot stream from the primary{}{}",
            hint(&health.postgresql),
            hint(&health.postgresql_streaming)
        );
        p.wait(format!("the primary to accept streaming again: {message}"));
        (Reason::PrimaryNotStreaming, message)
    } else if failed(&health.receive_wal_running) && !slot_broken {
        p.step(
            PipelineStep::RunBarmanCron,
            format!("receive-wal is not running for {server}; barman cron starts it"),
        );
        (
            Reason::ReceiveWalStopped,
            format!(
                "receive-wal is not running{}",
                hint(&health.receive_wal_running)
            ),
        )
    } else if failed(&health.replication_slot) {
        let message = format!(
            "the replication slot is broken{}",
            hint(&health.replication_slot)
        );
        if spec.reset_broken_slot {
            p.step(
                PipelineStep::ResetReplicationSlot,
                format!("{message}; walStreaming.resetBrokenSlot allows a reset"),
            );
            p.step(
                PipelineStep::RunBarmanCron,
                "receive-wal was stopped for the slot reset; barman cron starts it".to_string(),
            );
        } else {
            p.wait(format!(
                "an operator to repair the replication slot of {server} (or walStreaming.resetBrokenSlot: true): {message}"
            ));
        }
        (Reason::SlotBroken, message)
    } else if failed(&health.archiver_errors) {
        let message = format!(
            "barman reports archiver errors{}",
            hint(&health.archiver_errors)
        );
        p.wait(format!(
            "an operator to clear the archiver errors: {message}"
        ));
        (Reason::ArchiverErrors, message)
    } else if failed(&health.wal_maximum_age) {
        let message = format!("no WAL received recently{}", hint(&health.wal_maximum_age));
        p.wait(format!("WAL to arrive: {message}"));
        (Reason::WalTooOld, message)
    } else if health.receive_wal_running.is_none() {
        return Some(condition(
            ConditionType::WalStreaming,
            Unknown,
            Reason::NotReported,
            "barman check did not report receive_wal_running (streaming_archiver off?)".to_string(),
        ));
    } else {
        return Some(condition(
            ConditionType::WalStreaming,
            True,
            Reason::Streaming,
            "receive-wal runs, its replication slot is active".to_string(),
        ));
    };
    Some(condition(
        ConditionType::WalStreaming,
        False,
        reason,
        message,
    ))
}
