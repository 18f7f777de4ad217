//! Planner scale: plan 1, 100 and 10,000 pipelines held in memory. The planner is
//! pure, so this measures only deciding, not observing.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jiff::{Timestamp, tz::TimeZone};
use reconciler::observed::{
    Backup, BackupStatus, BarmanState, Observation, Observed, StarportMetadata, StarportState,
    VolumeMarker, VolumeState,
};
use reconciler::plan::{PlanContext, plan};
use reconciler::spec::BackupPipeline;

fn pipeline(i: usize) -> BackupPipeline {
    let yaml = format!(
        "apiVersion: reconciler.montagu/v1alpha1
kind: BackupPipeline
metadata: {{name: p{i}}}
spec:
  barman: {{server: s{i}}}
  baseBackup: {{maxAge: 30d, startWindow: {{start: \"00:00\", end: \"06:00\", timeZone: Europe/London}}}}
  retention: {{recoveryWindow: 3 months, minimumRedundancy: 1}}
  recoveredVolume: {{path: /srv/nightly/v{i}, maxAge: 24h, replay: {{postgresBin: /usr/lib/postgresql/15/bin}}}}
  starport: {{root: /srv/starport, target: t{i}}}
"
    );
    serde_saphyr::from_str(&yaml).expect("bench spec")
}

/// A realistic catalogue: monthly backups over a year, one FAILED; volume and
/// starport fresh, so the planner walks every section.
fn observed(now: Timestamp) -> Observed {
    let mut backups: Vec<Backup> = (0..12)
        .map(|m| {
            let end = now - jiff::SignedDuration::from_hours(24 * 30 * m + 2);
            Backup {
                id: end.strftime("%Y%m%dT%H%M%S").to_string(),
                status: BackupStatus::Done,
                end_time: Some(end),
                size_bytes: Some(300 << 30),
            }
        })
        .collect();
    backups.push(Backup {
        id: "20200101T000000".into(),
        status: BackupStatus::Failed,
        end_time: None,
        size_bytes: None,
    });
    Observed {
        barman: Observation::observed(BarmanState::new(backups)),
        volume: Observation::observed(VolumeState::Marked {
            marker: VolumeMarker {
                generation: "g".into(),
                backup_id: "b".into(),
                backup_end_time: None,
                recovered_at: now - jiff::SignedDuration::from_hours(3),
                replayed_to_lsn: "0/1".into(),
                checkpoint_time: None,
                pipeline: "p".into(),
                standby: None,
            },
            in_use: false,
            users: vec![],
        }),
        starport: Some(Observation::observed(StarportState::Synced {
            metadata: StarportMetadata {
                last_backup: "2026-11-23T06:00:00+00:00".into(),
                instance_guid: Some("m".into()),
                generation: Some("g".into()),
                backup_id: None,
                recovered_at: None,
            },
        })),
        machine_id: Some("m".into()),

        wal: None,
        mirrors: Vec::new(),
        last_backup_taken: None,
        writers: None,
    }
}

fn planner_scale(c: &mut Criterion) {
    let now: Timestamp = "2026-11-23T12:00:00Z".parse().expect("now");
    let cx = PlanContext {
        now,
        local_time_zone: TimeZone::UTC,
    };
    let observed = observed(now);
    let mut group = c.benchmark_group("plan");
    for n in [1usize, 100, 10_000] {
        let pipelines: Vec<BackupPipeline> = (0..n).map(pipeline).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(n),
            &pipelines,
            |b, pipelines| {
                b.iter(|| {
                    pipelines
                        .iter()
                        .map(|p| plan(p, &observed, &cx).steps.len())
                        .sum::<usize>()
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, planner_scale);
criterion_main!(benches);
