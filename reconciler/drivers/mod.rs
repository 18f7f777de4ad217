//! The only code that touches the world: barman, the recovered volume, WAL replay,
//! the starport and its mirrors, restore targets and their consumers, and facts
//! about this host.
//!
//! Each sits behind a small trait; where its commands run (a local process, an exec
//! in a container, a short-lived container) is a [`placement::Placement`] resolved
//! from the spec in [`placement`], never decided inside a driver.
//! Drivers carry out what they are asked and decide nothing; "absent" comes back
//! as data, failures as typed errors.

pub mod backup_activity;
pub mod barman;
pub mod command;
pub mod docker;
pub mod fsutil;
pub mod mirror;
pub mod orphans;
pub mod pause;
pub mod placement;
pub mod postgres_process;
pub mod proc_list;
pub mod replay;
pub mod restore;
pub mod standby_files;
pub mod starport;
pub mod volume;
pub mod wal_segment;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self::barman::{BarmanCli, BarmanDriver};
use self::docker::DockerEngine;
use self::mirror::{MirrorDriver, RsyncOverSsh};
use self::orphans::{OrphanDriver, ProcScan};
use self::placement::{Placement, Placer};
use self::replay::{LocalReplay, ReplayDriver};
use self::restore::{
    ConsumerDriver, DockerConsumers, LocalRestoreVolume, RestoreSourceDriver, RestoreVolumeDriver,
    RsyncSource,
};
use self::starport::{LocalStarport, StarportDriver};
use self::volume::{LocalVolume, VolumeDriver};

/// Facts about the host the reconciler runs on.
pub trait HostDriver: Send + Sync + std::fmt::Debug {
    /// `/etc/machine-id`, the identity bb8 records in starport metadata.
    fn machine_id(&self) -> Option<String>;
}

/// This host.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalHost;

impl HostDriver for LocalHost {
    fn machine_id(&self) -> Option<String> {
        std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }
}

/// Every driver a pass uses.
#[derive(Debug, Clone)]
pub struct Drivers {
    /// barman.
    pub barman: Arc<dyn BarmanDriver>,
    /// The recovered volume.
    pub volume: Arc<dyn VolumeDriver>,
    /// WAL replay.
    pub replay: Arc<dyn ReplayDriver>,
    /// The starport.
    pub starport: Arc<dyn StarportDriver>,
    /// Off-site mirrors of the starport.
    pub mirror: Arc<dyn MirrorDriver>,
    /// The starport copy a restore target reads.
    pub restore_source: Arc<dyn RestoreSourceDriver>,
    /// The volume a restore target writes.
    pub restore_volume: Arc<dyn RestoreVolumeDriver>,
    /// The containers that use a restored volume.
    pub consumers: Arc<dyn ConsumerDriver>,
    /// This host.
    pub host: Arc<dyn HostDriver>,
    /// The processes that write into a pipeline's volume or starport.
    pub orphans: Arc<dyn OrphanDriver>,
    /// Fires when the reconciler is asked to stop: running commands stop (or are
    /// left running, for a barman backup) and no new step starts.
    pub cancel: CancellationToken,
}

impl Drivers {
    /// The same drivers, with barman's catalogue read once per server and the
    /// processes once per place for the whole pass: for observing many pipelines at
    /// once (`diff`, a pass of `run`), never for executing steps, which must see the
    /// world as it is after each step.
    pub fn for_one_pass(&self) -> Self {
        Self {
            barman: Arc::new(self::barman::PassCache::new(self.barman.clone())),
            orphans: self.orphans.clone().for_one_pass(),
            ..self.clone()
        }
    }

    /// Everything on this host, commands run as local processes, stopped by `cancel`.
    pub fn local(cancel: CancellationToken) -> Self {
        let docker = Arc::new(DockerEngine::default());
        let placer = Placer::new(docker.clone(), cancel.clone());
        // rsync and ssh always run on this host.
        let runner = placer.runner(&Placement::Host);
        Self {
            barman: Arc::new(BarmanCli::new(placer.clone())),
            volume: Arc::new(LocalVolume::new(docker.clone())),
            replay: Arc::new(LocalReplay::new(placer.clone())),
            orphans: Arc::new(ProcScan::new(placer)),
            starport: Arc::new(LocalStarport::new(runner.clone())),
            mirror: Arc::new(RsyncOverSsh::new(runner.clone())),
            restore_source: Arc::new(RsyncSource::new(runner)),
            restore_volume: Arc::new(LocalRestoreVolume::new(docker.clone())),
            consumers: Arc::new(DockerConsumers::new(docker)),
            host: Arc::new(LocalHost),
            cancel,
        }
    }
}
