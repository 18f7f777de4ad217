//! The fleet flags, turned into a [`FleetConfig`]: the password from the
//! environment or a file (never argv), the instance name defaulting to the host
//! name. Nothing here talks to etcd.

use std::time::Duration;

use anyhow::Context;

use crate::cli::{FleetConnectArgs, FleetRunArgs};
use crate::fleet::{FleetConfig, TlsFiles};
use crate::spec::HumanDuration;

/// Where the password may come from besides `--fleet-password-file`.
pub const PASSWORD_ENV: &str = "RECONCILER_FLEET_PASSWORD";

/// The shortest TTL accepted: renewals go out every third of it, and etcd's
/// own leases are counted in whole seconds.
const MIN_TTL: Duration = Duration::from_secs(2);

/// The connection part of the configuration (`status --fleet` needs no name
/// or TTL); `None` without `--fleet`.
pub fn connect_config(args: &FleetConnectArgs) -> anyhow::Result<Option<FleetConfig>> {
    if args.endpoints.is_empty() {
        return Ok(None);
    }
    let user = match &args.fleet_user {
        None => None,
        Some(user) => {
            let password = match &args.fleet_password_file {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("--fleet-password-file {}", file.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                None => std::env::var(PASSWORD_ENV).with_context(|| {
                    format!("--fleet-user needs {PASSWORD_ENV} or --fleet-password-file")
                })?,
            };
            Some((user.clone(), password))
        }
    };
    Ok(Some(FleetConfig {
        endpoints: args.endpoints.clone(),
        name: String::new(),
        ttl: Duration::from_secs(10),
        tls: TlsFiles {
            ca: args.fleet_cacert.clone(),
            cert: args.fleet_cert.clone(),
            key: args.fleet_key.clone(),
        },
        user,
    }))
}

/// The whole configuration of `run --fleet`; `None` without `--fleet`.
pub fn run_config(args: &FleetRunArgs) -> anyhow::Result<Option<FleetConfig>> {
    let Some(mut config) = connect_config(&args.etcd)? else {
        return Ok(None);
    };
    let ttl = HumanDuration::try_from(args.fleet_ttl.clone())
        .map(|d| d.to_std())
        .map_err(|e| anyhow::anyhow!("--fleet-ttl: {e}"))?;
    anyhow::ensure!(
        ttl >= MIN_TTL,
        "--fleet-ttl: at least {}s, so renewals have time to arrive",
        MIN_TTL.as_secs()
    );
    config.ttl = ttl;
    config.name = match &args.fleet_name {
        Some(name) => name.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("cannot read the host name: pass --fleet-name")?
            .trim()
            .to_string(),
    };
    anyhow::ensure!(!config.name.is_empty(), "--fleet-name: empty");
    Ok(Some(config))
}
